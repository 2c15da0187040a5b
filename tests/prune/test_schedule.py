import pytest
import torch
from datasets import Dataset

from shrinklib import prune, zoo
from shrinklib.measure import sparsity
from shrinklib.train import TrainConfig, fit


def test_cubic_schedule_of_zhu_and_gupta():
    s = lambda t: prune.cubic_sparsity(t, final=0.8, initial=0.2, start=10, end=110)  # noqa: E731
    assert s(0) == s(10) == 0.2 and s(110) == s(500) == 0.8
    assert s(60) == pytest.approx(0.8 + (0.2 - 0.8) * 0.5 ** 3)
    values = [s(t) for t in range(0, 120)]
    assert values == sorted(values)  # never decreases
    assert s(20) - s(10) > s(110) - s(100)  # fast first, slow at the end


@pytest.mark.parametrize("kwargs, message", [
    ({"final": 1.0, "end": 10}, r"sparsity must be a number in \[0, 1\)"),
    ({"final": 0.5, "start": 10, "end": 10}, "0 <= start < end"),
])
def test_bad_schedules(kwargs, message):
    with pytest.raises(ValueError, match=message):
        prune.cubic_sparsity(0, **kwargs)


def _toy(n: int) -> Dataset:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 100, (n, 8), generator=g)
    return Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist(),
                              "label": (ids[:, 0] > 55).long().tolist()})


class _Tok:
    def pad(self, examples, return_tensors="pt"):
        return {k: torch.tensor([e[k] for e in examples]) for k in examples[0]}


def test_gradual_pruning_in_the_training_loop_reaches_the_target_and_keeps_zeros():
    model = zoo.tiny_bert(vocab_size=100)
    schedule = prune.GradualMagnitude(model, 0.8, start_step=5, end_step=25, every=5)
    fit(model, _toy(256), TrainConfig(max_steps=30, batch_size=8, lr=1e-3, progress=False), tokenizer=_Tok(),
        callbacks=[schedule])
    assert [step for step, _ in schedule.history] == [5, 10, 15, 20, 25]
    assert [round(s, 4) for _, s in schedule.history] == [round(schedule.target(t), 4) for t in (5, 10, 15, 20, 25)]
    assert sparsity(model) == pytest.approx(0.8, abs=1e-3)  # five more steps of training did not revive any weight


def test_without_keep_masks_training_revives_pruned_weights_and_with_it_does_not():
    for callbacks, revived in (([], True), (None, False)):
        model = prune.magnitude_(zoo.tiny_bert(vocab_size=100), 0.5)
        cbs = callbacks if callbacks is not None else [prune.keep_masks(model)]
        fit(model, _toy(64), TrainConfig(max_steps=5, batch_size=8, lr=1e-3, progress=False, weight_decay=0.0),
            tokenizer=_Tok(), callbacks=cbs)
        dense = any(torch.any(model.get_submodule(f).weight[~m] != 0) for f, m in prune.masks(model).items())
        assert dense is revived


def test_gradual_refuses_bad_arguments_up_front():
    model = zoo.tiny_bert()
    with pytest.raises(ValueError, match="every must be a positive int"):
        prune.GradualMagnitude(model, 0.5, start_step=0, end_step=10, every=0)
    with pytest.raises(ValueError, match="no prunable layer"):
        prune.GradualMagnitude(model, 0.5, start_step=0, end_step=10, filter_fn=lambda m, fqn: False)
