import pytest
import torch
from datasets import Dataset

from shrinklib import zoo
from shrinklib.train import StepState, TrainConfig, epoch_steps, evaluate, fit, linear_warmup_decay, make_optimizer


def _toy_task(n: int, seed: int) -> Dataset:
    """Learnable at a glance: the label says whether token 7 occurs in the sequence."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 100, (n, 8), generator=g)
    labels = torch.randint(0, 2, (n,), generator=g)
    ids[labels == 1, torch.randint(0, 8, (int(labels.sum()),), generator=g)] = 7
    return Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist(),
                              "label": labels.tolist()})


class _Tok:
    """Just enough of a tokenizer for already tokenized data: padding."""

    def pad(self, examples, return_tensors="pt"):
        return {k: torch.tensor([e[k] for e in examples]) for k in examples[0]}


CFG = TrainConfig(max_steps=60, batch_size=16, lr=3e-3, eval_every=20, progress=False)


def test_fit_learns_a_learnable_task_and_logs_history():
    model = zoo.tiny_bert(vocab_size=100)
    result = fit(model, _toy_task(320, 0), CFG, tokenizer=_Tok(), eval_data=_toy_task(200, 1))
    assert result.steps == 60 and result.best_accuracy >= 0.9
    assert evaluate(model, _toy_task(200, 1), tokenizer=_Tok())["accuracy"] == pytest.approx(result.best_accuracy)
    assert [h["step"] for h in result.history if "eval_accuracy" in h] == [20, 40, 60]
    assert all("loss_task" in h for h in result.history if "loss" in h)


def test_fit_is_deterministic_for_a_seed():
    runs = []
    for _ in range(2):
        model = zoo.tiny_bert(vocab_size=100, seed=3)
        runs.append([h["loss"] for h in fit(model, _toy_task(64, 0), TrainConfig(max_steps=20, batch_size=8, progress=False),
                                             tokenizer=_Tok()).history])
    assert runs[0] == runs[1]


def test_extra_losses_and_callbacks_plug_in():
    model = zoo.tiny_bert(vocab_size=100)
    seen: list[StepState] = []
    l2 = lambda m, batch, outputs: 1e-3 * sum(p.pow(2).sum() for p in m.classifier.parameters())
    result = fit(model, _toy_task(64, 0), TrainConfig(max_steps=10, batch_size=8, progress=False, warmup_ratio=0.2),
                 tokenizer=_Tok(), extra_losses={"l2": l2}, callbacks=[seen.append])
    assert [s.step for s in seen] == list(range(1, 11)) and seen[-1].total_steps == 10
    assert set(seen[0].terms) == {"task", "l2"} and seen[0].loss == pytest.approx(sum(seen[0].terms.values()))
    assert seen[0].lr < seen[1].lr and seen[-1].lr < seen[2].lr  # warm-up, then decay
    assert "loss_l2" in result.history[-1]


class _ProjectedLogits(torch.nn.Module):
    """A loss term with a parameter of its own, a frozen 'teacher' and a reference to the model."""

    def __init__(self, model):
        super().__init__()
        self.model = model  # the model's parameters must not be counted twice
        self.teacher = zoo.tiny_bert(vocab_size=100, seed=5).requires_grad_(False)
        self.projection = torch.nn.Linear(2, 2)

    def forward(self, model, batch, outputs):
        return (self.projection(outputs.logits) - 1.0).pow(2).mean()


def test_a_loss_term_module_trains_its_own_parameters_with_the_model():
    model = zoo.tiny_bert(vocab_size=100)
    term = _ProjectedLogits(model)
    before = {n: p.detach().clone() for n, p in term.named_parameters() if not n.startswith("model.")}
    fit(model, _toy_task(64, 0), TrainConfig(max_steps=5, batch_size=8, progress=False), tokenizer=_Tok(),
        extra_losses={"projected": term})
    after = dict(term.named_parameters())
    assert not torch.equal(before["projection.weight"], after["projection.weight"])
    assert all(torch.equal(before[n], after[n]) for n in before if n.startswith("teacher."))


def test_a_callback_can_hold_weights_at_zero():
    """What a pruning schedule does: re-apply a mask after each step."""
    model = zoo.tiny_bert(vocab_size=100)
    w = model.bert.encoder.layer[0].intermediate.dense.weight
    mask = torch.rand_like(w) > 0.5

    def reapply(state):
        with torch.no_grad():
            w.mul_(mask)

    fit(model, _toy_task(64, 0), TrainConfig(max_steps=5, batch_size=8, progress=False), tokenizer=_Tok(),
        callbacks=[reapply])
    assert torch.all(w[~mask] == 0) and torch.any(w[mask] != 0)


def test_select_best_restores_the_best_checkpoint():
    model = zoo.tiny_bert(vocab_size=100)
    # a learning rate that first learns, then wrecks the model
    cfg = TrainConfig(max_steps=60, batch_size=16, lr=0.5, eval_every=5, progress=False, warmup_ratio=0.0, grad_clip=None)
    result = fit(model, _toy_task(320, 0), cfg, tokenizer=_Tok(), eval_data=_toy_task(200, 1))
    final = evaluate(model, _toy_task(200, 1), tokenizer=_Tok())["accuracy"]
    assert final == pytest.approx(result.best_accuracy)


def test_linear_warmup_decay():
    assert [round(linear_warmup_decay(s, 10, 4), 3) for s in range(11)] == [
        0.25, 0.5, 0.75, 1.0, 1.0, 0.833, 0.667, 0.5, 0.333, 0.167, 0.0]


@pytest.mark.parametrize("kwargs, message", [
    ({"max_steps": 0}, "max_steps must be a positive int, got 0"),
    ({"batch_size": 2.5}, "batch_size must be a positive int"),
    ({"lr": -1}, "lr must be > 0"),
    ({"warmup_ratio": 1.0}, r"warmup_ratio must be in \[0, 1\)"),
    ({"grad_clip": 0}, "grad_clip must be > 0 or None"),
    ({"mixed_precision": "fp8"}, "mixed_precision must be"),
    ({"epochs": 0}, "epochs must be > 0"),
    ({"param_lrs": {"scores": 0}}, "param_lrs maps name suffixes to rates > 0"),
    ({"param_lrs": {"": 1e-2}}, "param_lrs maps name suffixes to rates > 0"),
    ({"param_lrs": {"scores": float("inf")}}, "param_lrs maps name suffixes to rates > 0, got 'scores': inf"),
    ({"param_lrs": {"scores": True}}, "param_lrs maps name suffixes to rates > 0"),
    ({"lr": float("nan")}, "lr must be > 0, got nan"),
    ({"epochs": float("inf")}, "epochs must be > 0, got inf"),
    ({"warmup_ratio": float("nan")}, r"warmup_ratio must be in \[0, 1\), got nan"),
    ({"weight_decay": float("inf")}, "weight_decay must be >= 0, got inf"),
    ({"grad_clip": float("nan")}, "grad_clip must be > 0 or None, got nan"),
    ({"task_loss_weight": float("nan")}, "task_loss_weight must be >= 0, got nan"),
    ({"seed": -1}, "seed must be a non-negative int, got -1"),
])
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"select_best": 1}, TypeError, "select_best must be True or False, got 1"),
    ({"progress": "no"}, TypeError, "progress must be True or False, got 'no'"),
    ({"param_lrs": [("scores", 1e-2)]}, TypeError, r"param_lrs must be a mapping \(a dict\), got list"),
])
def test_bad_config_types(kwargs, error, message):
    with pytest.raises(error, match=message):
        TrainConfig(**kwargs)


def test_bad_fit_arguments(unchanged):
    model = zoo.tiny_bert(vocab_size=100)
    with unchanged(model), pytest.raises(TypeError, match="config must be a TrainConfig"):
        fit(model, _toy_task(8, 0), {"lr": 1})
    with unchanged(model), pytest.raises(ValueError, match="pass tokenizer="):
        fit(model, Dataset.from_dict({"text": ["a"], "label": [0]}), CFG)
    with unchanged(model), pytest.raises(TypeError, match=r"extra_losses\['x'\] must be callable"):
        fit(model, _toy_task(8, 0), CFG, tokenizer=_Tok(), extra_losses={"x": 3})
    for p in model.parameters():
        p.requires_grad_(False)
    with unchanged(model), pytest.raises(ValueError, match="no trainable parameter"):
        fit(model, _toy_task(8, 0), CFG, tokenizer=_Tok())


def _unlabelled(n: int) -> Dataset:
    return _toy_task(n, 0).remove_columns("label")


@pytest.mark.parametrize("call, error, message", [
    (lambda m: fit("bert", _toy_task(8, 0), CFG, tokenizer=_Tok()), TypeError, "model must be a torch.nn.Module, got str"),
    (lambda m: fit(m, [{"input_ids": [1]}], CFG, tokenizer=_Tok()), TypeError,
     "train_data must be a datasets.Dataset or a torch DataLoader of dict batches, got list"),
    (lambda m: fit(m, "reviews.csv", CFG), TypeError, "train_data must be a datasets.Dataset .*, got str"),
    (lambda m: fit(m, _unlabelled(8), CFG, tokenizer=_Tok()), ValueError, "train_data must have a 'label' column"),
    (lambda m: fit(m, _toy_task(8, 0), CFG, tokenizer=_Tok(), eval_data=3), TypeError, "eval_data must be a datasets.Dataset"),
    (lambda m: fit(m, _toy_task(8, 0), CFG, tokenizer=_Tok(), eval_data=_unlabelled(8)), ValueError,
     "eval_data must have a 'label' column"),
    (lambda m: fit(m, _toy_task(8, 0), CFG, tokenizer=_Tok(), extra_losses=[len]), TypeError,
     r"extra_losses must be a mapping \(a dict\), got list"),
    (lambda m: fit(m, _toy_task(8, 0), CFG, tokenizer=_Tok(), callbacks=print), TypeError,
     "callbacks must be an iterable of callables taking a StepState, got builtin_function_or_method"),
    (lambda m: fit(m, _toy_task(8, 0), CFG, tokenizer=_Tok(), callbacks=[3]), TypeError, "callbacks must be callables"),
    # found at the first batch, before any optimizer step: the model must still be as it was (in eval mode)
    (lambda m: fit(m, _loader_without_labels(), CFG), ValueError, "the model returned no loss: batches must hold 'labels'"),
    (lambda m: fit(m, _unlabelled(8), TrainConfig(max_steps=2, task_loss_weight=0.0, progress=False), tokenizer=_Tok()),
     ValueError, "nothing to minimize"),
])
def test_fit_refuses_bad_input_and_leaves_the_model_as_it_was(call, error, message, unchanged):
    model = zoo.tiny_bert(vocab_size=100)
    with unchanged(model), pytest.raises(error, match=message):
        call(model)


def _loader_without_labels():
    from torch.utils.data import DataLoader

    return DataLoader([{"input_ids": torch.randint(10, 100, (8,))} for _ in range(4)], batch_size=2)


@pytest.mark.parametrize("call, error, message", [
    (lambda m: evaluate("bert", _toy_task(8, 0), tokenizer=_Tok()), TypeError, "model must be a torch.nn.Module, got str"),
    (lambda m: evaluate(m, {"input_ids": [[1]]}, tokenizer=_Tok()), TypeError, "data must be a datasets.Dataset"),
    (lambda m: evaluate(m, _unlabelled(4), tokenizer=_Tok()), ValueError, "data must have a 'label' column"),
    (lambda m: evaluate(m, _toy_task(8, 0), tokenizer=_Tok(), batch_size=0), ValueError, "batch_size must be an int >= 1, got 0"),
    (lambda m: make_optimizer("bert", CFG), TypeError, "model must be a torch.nn.Module, got str"),
    (lambda m: make_optimizer(m, {"lr": 1e-3}), TypeError, "config must be a shrinklib.train.TrainConfig, got dict"),
    (lambda m: make_optimizer(m, CFG, extra=3), TypeError, "extra must be an iterable of"),
    (lambda m: linear_warmup_decay(-1, 10, 2), ValueError, "step must be an int >= 0, got -1"),
    (lambda m: linear_warmup_decay(0, 0, 0), ValueError, "total must be an int >= 1, got 0"),
])
def test_evaluate_and_the_optimizer_refuse_wrong_types(call, error, message, unchanged):
    model = zoo.tiny_bert(vocab_size=100)
    with unchanged(model), pytest.raises(error, match=message):
        call(model)


def test_param_lrs_give_matching_parameters_their_own_rate():
    from shrinklib.train import make_optimizer

    model = zoo.tiny_bert(vocab_size=100)
    optimizer = make_optimizer(model, TrainConfig(lr=1e-4, param_lrs={"classifier.weight": 1e-2}))
    own = optimizer.param_groups[0]
    assert own["lr"] == 1e-2 and own["weight_decay"] == 0.0
    assert [id(p) for p in own["params"]] == [id(model.classifier.weight)]
    rest = [id(p) for g in optimizer.param_groups[1:] for p in g["params"]]
    assert id(model.classifier.weight) not in rest
    assert len(rest) + 1 == len(list(model.parameters()))
    assert all(g["lr"] == 1e-4 for g in optimizer.param_groups[1:])
    with pytest.raises(ValueError, match="no trainable parameter name ends in 'scores'"):
        make_optimizer(model, TrainConfig(param_lrs={"scores": 1e-2}))


def test_epoch_steps_counts_batches_of_whole_passes():
    import math

    assert epoch_steps(1.0, 10_252, 32) == math.ceil(10_252 / 32) == 321  # the last batch is a short one
    assert epoch_steps(6, 10_252, 32) == 6 * 321
    assert epoch_steps(0.5, 10, 4) == round(0.5 * 3) == 2
    assert epoch_steps(0.01, 10, 4) == 1  # never zero steps
    with pytest.raises(ValueError, match=r"epochs must be a number in \(0, inf\], got 0"):
        epoch_steps(0, 10, 4)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got True"):
        epoch_steps(1.0, 10, True)
    with pytest.raises(ValueError, match="examples must be an int >= 1, got 0"):
        epoch_steps(1.0, 0, 4)
