import random

import numpy as np
import pytest
import torch
from torch import nn

from shrinklib import zoo
from shrinklib.utils import (
    Rollback,
    comma_list,
    encoder_linears,
    glue,
    is_head,
    matching_modules,
    replace_modules_,
    seed_everything,
)


def test_seed_everything_makes_every_generator_repeat():
    def draw():
        seed_everything(7)
        return random.random(), np.random.rand(), torch.rand(3)

    a, b = draw(), draw()
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True])
def test_seed_everything_rejects_bad_seeds(bad):
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        seed_everything(bad)


def test_default_filter_picks_body_linears_not_the_head():
    model = zoo.tiny_bert(num_layers=2)
    names = [fqn for fqn, _ in matching_modules(model)]
    assert len(names) == 2 * 6  # q, k, v, attention out, ffn in, ffn out per layer
    assert not any(is_head(n) for n in names)
    assert encoder_linears(model.classifier, "classifier") is False


def test_replace_modules_swaps_exactly_the_matches_and_passes_fqn():
    model = zoo.tiny_bert(num_layers=2)
    seen = []

    def factory(module, fqn):
        seen.append(fqn)
        return nn.Identity() if "intermediate" in fqn else module

    replace_modules_(model, factory, filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and "intermediate" in fqn)
    assert seen == ["bert.encoder.layer.0.intermediate.dense", "bert.encoder.layer.1.intermediate.dense"]
    assert isinstance(model.bert.encoder.layer[1].intermediate.dense, nn.Identity)
    assert isinstance(model.bert.encoder.layer[1].output.dense, nn.Linear)


def test_replace_modules_refuses_when_nothing_matches_and_leaves_model_whole():
    model = zoo.tiny_bert()
    with pytest.raises(ValueError, match="picked no module"):
        replace_modules_(model, lambda m, fqn: m, filter_fn=lambda m, fqn: False)
    replace_modules_(model, lambda m, fqn: m, filter_fn=lambda m, fqn: False, strict=False)


def test_replace_modules_changes_nothing_if_one_factory_call_fails(unchanged):
    model = zoo.tiny_bert()
    before = [type(m) for m in model.modules()]
    calls = []

    def factory(module, fqn):
        calls.append(fqn)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return nn.Identity()

    with unchanged(model), pytest.raises(RuntimeError, match="boom"):
        replace_modules_(model, factory, filter_fn=None)
    assert [type(m) for m in model.modules()] == before


def test_replace_modules_type_errors(unchanged):
    model = zoo.tiny_bert()
    with unchanged(model), pytest.raises(TypeError, match="factory returned int"):
        replace_modules_(model, lambda m, fqn: 3, filter_fn=None)
    with unchanged(model), pytest.raises(TypeError, match="factory returned int"):  # the last call fails
        replace_modules_(model, lambda m, fqn: 3 if fqn.endswith("1.output.dense") else nn.Identity(), filter_fn=None)
    with unchanged(model), pytest.raises(TypeError, match="factory must be callable"):
        replace_modules_(model, "identity", filter_fn=None)
    with unchanged(model), pytest.raises(TypeError, match="strict must be True or False, got 0"):
        replace_modules_(model, lambda m, fqn: m, strict=0)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        replace_modules_("bert", lambda m, fqn: m, filter_fn=None)
    with pytest.raises(TypeError, match="filter_fn must be callable"):
        replace_modules_(model, lambda m, fqn: m, filter_fn="linear")


def test_comma_list_keeps_the_stripped_items_in_order():
    assert comma_list("3L,3L half-FFN, 2L ,,BiLSTM,") == ["3L", "3L half-FFN", "2L", "BiLSTM"]
    assert comma_list("KD + augmentation") == ["KD + augmentation"] and comma_list(" , ") == []
    assert comma_list("a,b") == [s.strip() for s in "a,b".split(",")]  # str.split's items, nothing more
    with pytest.raises(TypeError, match="text must be a comma-separated str, got list"):
        comma_list(["a", "b"])


def test_matching_modules_and_is_head_refuse_wrong_types_when_called():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got str"):
        matching_modules("bert")  # not only once iterated
    with pytest.raises(TypeError, match="filter_fn must be callable"):
        matching_modules(nn.Linear(2, 2), filter_fn=3)
    with pytest.raises(TypeError, match="fqn must be a str, got int"):
        is_head(3)
    with pytest.raises(TypeError, match="name must be a str, got int"):
        glue(3, 0.5)


def test_rollback_puts_back_every_tensor_a_change_touched(unchanged):
    model = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.Linear(3, 2))
    model[1].register_buffer("scratch", torch.ones(3), persistent=False)
    original_bias = model[0].bias
    with unchanged(model):
        rollback = Rollback()
        rollback.save([model[0], model[1]])
        rollback.save([model[0]])  # saved once: the first copy counts
        with torch.no_grad():
            model[0].weight.mul_(0)  # in place
            model[0].bias = nn.Parameter(torch.zeros(3))  # replaced
            model[0].register_buffer("weight_mask", torch.zeros(4, 3, dtype=torch.bool))  # added
            model[0].register_parameter("scores", nn.Parameter(torch.ones(3, 4)))
            model[1].weight.requires_grad_(False)
            model[1].scratch = torch.zeros(5)  # a buffer of another shape
        rollback.restore()
    assert model[0].bias is original_bias and "scratch" in model[1]._non_persistent_buffers_set
    with pytest.raises(TypeError, match="module must be a torch.nn.Module, got str"):
        Rollback().save(["layer"])


def test_replace_modules_keeps_each_replaced_modules_mode():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)).eval()
    model[1].train()
    replace_modules_(model, lambda module, fqn: torch.nn.Linear(2, 2), filter_fn=lambda m, fqn: fqn != "")
    assert [m.training for m in model] == [False, True]
