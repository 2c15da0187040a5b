import pytest
import torch
from datasets import Dataset
from torch import nn
from torch.nn import functional as F

import shrinklib
from shrinklib import prune, zoo
from shrinklib.train import TrainConfig, fit


@pytest.mark.parametrize("method, kwargs", [("hard", {}), ("soft", {"threshold": -1.0})])
def test_score_gradient_is_the_straight_through_movement(method, kwargs):
    torch.manual_seed(0)
    linear = nn.Linear(13, 7)
    layer = prune.MovementLinear.from_linear(linear, method, **kwargs)
    x = torch.randn(5, 13)
    (layer(x) ** 2).sum().backward()
    effective = (layer.weight.detach() * layer.mask()).requires_grad_(True)
    (F.linear(x, effective, linear.bias.detach()) ** 2).sum().backward()
    assert torch.allclose(layer.scores.grad, effective.grad * linear.weight.detach(), atol=1e-6)


def test_hard_mask_keeps_the_top_scores_exactly():
    layer = prune.MovementLinear.from_linear(nn.Linear(20, 9))
    layer.scores.data = torch.randn(9, 20, generator=torch.Generator().manual_seed(1))
    layer.sparsity = 0.7
    mask = layer.mask()
    assert int((~mask).sum()) == round(0.7 * 180)
    assert layer.scores[~mask].max() <= layer.scores[mask].min()


def _toy(n=128):
    ids = torch.randint(10, 100, (n, 8), generator=torch.Generator().manual_seed(0))
    return Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist(),
                              "label": (ids[:, 0] > 55).long().tolist()})


class _Pad:
    def pad(self, examples, return_tensors="pt"):
        return {k: torch.tensor([e[k] for e in examples]) for k in examples[0]}


def test_scheduled_hard_movement_trains_finalizes_and_reloads(tmp_path):
    model = prune.movement_(zoo.tiny_bert(vocab_size=100))
    layers = prune.movement_layers(model)
    assert len(layers) == 12
    fit(model, _toy(), TrainConfig(max_steps=20, batch_size=8, lr=1e-2, progress=False), tokenizer=_Pad(),
        callbacks=[prune.MovementSchedule(model, 0.8, start_step=2, end_step=15)])
    assert all(layer.sparsity == pytest.approx(0.8) for layer in layers)
    assert any(layer.scores.abs().sum() > 0 for layer in layers)  # the scores learned
    x = torch.randint(10, 100, (2, 8))
    mid = shrinklib.load(shrinklib.save(model.eval(), tmp_path / "mid"))  # mid-training state reloads
    assert torch.equal(mid(x).logits, model(x).logits)
    expected = model(x).logits
    prune.finalize_movement_(model)
    assert not any(isinstance(m, prune.MovementLinear) for m in model.modules())
    assert all(int((~m).sum()) == round(0.8 * m.numel()) for m in prune.masks(model).values())
    assert torch.allclose(model(x).logits, expected, atol=1e-6)


def test_soft_movement_penalty_pushes_scores_down():
    model = prune.movement_(zoo.tiny_bert(vocab_size=100), method="soft", threshold=0.0)
    penalty = prune.soft_movement_penalty(model, 10.0)
    assert penalty(model, None, None).item() == pytest.approx(10.0 * 0.5)  # sigmoid(0) = 0.5
    fit(model, _toy(), TrainConfig(max_steps=10, batch_size=8, lr=1e-2, progress=False), tokenizer=_Pad(),
        extra_losses={"movement": penalty})
    assert penalty(model, None, None).item() < 5.0
    assert 0 < sum(int((~l.mask()).sum()) for l in prune.movement_layers(model))  # some weights fell below tau


def test_bad_input(unchanged):
    model = zoo.tiny_bert()
    with unchanged(model), pytest.raises(ValueError, match="method must be one of"):
        prune.movement_(model, method="medium")
    with unchanged(model), pytest.raises(ValueError, match="no MovementLinear layer"):
        prune.finalize_movement_(model)
    for threshold in (float("nan"), float("inf"), "0.1"):
        with unchanged(model), pytest.raises(ValueError, match=f"threshold must be a finite number, got {threshold!r}"):
            prune.movement_(model, method="soft", threshold=threshold)
    with unchanged(model), pytest.raises(TypeError, match="filter_fn must be callable"):
        prune.movement_(model, filter_fn="query")
    soft = prune.movement_(zoo.tiny_bert(), method="soft")
    with unchanged(soft), pytest.raises(ValueError, match="drives hard movement"):
        prune.MovementSchedule(soft, 0.5, start_step=0, end_step=10)
    with pytest.raises(ValueError, match="weight must be a number >= 0, got nan"):
        prune.soft_movement_penalty(soft, float("nan"))
    with pytest.raises(ValueError, match="in_features must be an int >= 1, got 0"):
        prune.MovementLinear(0, 4)


def test_summed_scores_add_minus_weight_times_gradient_each_backward():
    linear = nn.Linear(12, 5)
    layer = prune.MovementLinear.from_linear(linear, score_update="sum")
    assert "scores" in dict(layer.named_buffers()) and "scores" not in dict(layer.named_parameters())
    layer.sparsity = 0.4
    g = torch.Generator().manual_seed(0)
    expected = torch.zeros(5, 12)
    for _ in range(2):
        x = torch.randn(7, 12, generator=g)
        mask = layer.mask()  # the mask this step uses (the backward pass then moves the scores)
        effective = (layer.weight.detach() * mask).requires_grad_(True)
        (torch.nn.functional.linear(x, effective, layer.bias.detach()) ** 2).sum().backward()
        expected -= effective.grad * layer.weight.detach()
        layer.weight.grad = None
        (layer(x) ** 2).sum().backward()
        assert torch.allclose(layer.weight.grad, effective.grad * mask, atol=1e-5)  # the weights still learn
    assert torch.allclose(layer.scores, expected, atol=1e-5)
    with torch.no_grad():
        layer(torch.randn(3, 12))  # no gradient: the scores stay put
    assert torch.allclose(layer.scores, expected, atol=1e-5)
    with pytest.raises(ValueError, match="score_update must be one of"):
        prune.MovementLinear(4, 4, score_update="adam")
    with pytest.raises(ValueError, match="soft movement learns its scores with the optimizer"):
        prune.movement_(zoo.tiny_bert(), method="soft", score_update="sum")
