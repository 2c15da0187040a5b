import copy

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

from shrinklib import prune, zoo
from shrinklib.utils import all_linears


def _awkward_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(37, 53), nn.ReLU(), nn.Linear(53, 11), nn.ReLU(), nn.Linear(11, 3))


MODELS = {"mlp": lambda: (_awkward_mlp(), all_linears), "bert": lambda: (zoo.tiny_bert(hidden_size=30, num_heads=3, intermediate_size=47), None)}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
def test_layer_scope_masks_are_torchs(name, sparsity):
    model, filter_fn = MODELS[name]()
    reference = copy.deepcopy(model)
    prune.magnitude_(model, sparsity, scope="layer", filter_fn=filter_fn)
    for fqn, mask in prune.masks(model).items():
        module = reference.get_submodule(fqn)
        torch_prune.l1_unstructured(module, "weight", amount=sparsity)
        assert torch.equal(mask, module.weight_mask.bool()), fqn
        assert int((~mask).sum()) == round(sparsity * mask.numel())  # exactly the requested share


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
def test_global_scope_masks_are_torchs(name, sparsity):
    model, filter_fn = MODELS[name]()
    reference = copy.deepcopy(model)
    prune.magnitude_(model, sparsity, scope="global", filter_fn=filter_fn)
    ours = prune.masks(model)
    torch_prune.global_unstructured([(reference.get_submodule(f), "weight") for f in ours],
                                    pruning_method=torch_prune.L1Unstructured, amount=sparsity)
    for fqn, mask in ours.items():
        assert torch.equal(mask, reference.get_submodule(fqn).weight_mask.bool()), fqn
    total = sum(m.numel() for m in ours.values())
    assert sum(int((~m).sum()) for m in ours.values()) == round(sparsity * total)


def test_weights_are_zeroed_and_the_head_is_left_alone():
    model = zoo.tiny_bert()
    head = model.classifier.weight.clone()
    prune.magnitude_(model, 0.6)
    for fqn, mask in prune.masks(model).items():
        assert torch.all(model.get_submodule(fqn).weight[~mask] == 0)
    assert "classifier" not in prune.masks(model) and torch.equal(model.classifier.weight, head)


def test_pruning_again_only_adds_zeros():
    model = zoo.tiny_bert()
    first = prune.masks(prune.magnitude_(model, 0.4))
    first = {k: v.clone() for k, v in first.items()}
    second = prune.masks(prune.magnitude_(model, 0.7))
    for fqn in first:
        assert not torch.any(second[fqn] & ~first[fqn])  # nothing pruned comes back


@pytest.mark.parametrize("kwargs, message", [
    ({"sparsity": 1.0}, r"sparsity must be a number in \[0, 1\), got 1.0"),
    ({"sparsity": -0.1}, r"sparsity must be a number in \[0, 1\)"),
    ({"sparsity": True}, r"sparsity must be a number in \[0, 1\)"),
    ({"sparsity": 0.5, "scope": "row"}, r"scope must be one of \('layer', 'global'\), got 'row'"),
    ({"sparsity": 0.5, "filter_fn": lambda m, fqn: False}, "no prunable layer"),
    ({"sparsity": float("nan")}, r"sparsity must be a number in \[0, 1\), got nan"),
    ({"sparsity": "0.5"}, r"sparsity must be a number in \[0, 1\), got '0.5'"),
])
def test_bad_input_is_refused_and_nothing_is_half_pruned(kwargs, message, unchanged):
    model = zoo.tiny_bert()
    before = copy.deepcopy(model.state_dict())
    with unchanged(model), pytest.raises(ValueError, match=message):
        prune.magnitude_(model, **kwargs)
    assert prune.masks(model) == {}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_ties_at_the_threshold_still_prune_exactly_the_requested_count():
    scores = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0], [0.0, 2.0, 0.0, 3.0, 0.0]])
    for sparsity in (0.1, 0.3, 0.5, 0.7, 0.9):
        keep = prune.select_smallest({"scores": scores}, sparsity, "layer")["scores"]
        assert int((~keep).sum()) == round(sparsity * scores.numel())
        if sparsity <= 0.7:  # seven zeros: the nonzero entries are the last to go
            assert keep[scores > 0].all()
