import pytest
import torch
from torch import nn

import shrinklib
from shrinklib import prune, zoo
from shrinklib.measure import size_on_disk


def test_sparse_linear_computes_what_the_pruned_linear_computed():
    torch.manual_seed(0)
    linear = nn.Linear(76, 45)
    prune.set_mask_(linear, prune.nm_mask(linear.weight))
    sparse = prune.SparseLinear.from_linear(linear)
    x = torch.randn(3, 5, 76)
    assert torch.equal(sparse(x), linear(x))  # CPU path: exact
    assert torch.equal(sparse.dense_weight(), linear.weight.detach())


def test_a_2_4_model_swaps_saves_reloads_and_shrinks(tmp_path):
    model = prune.nm_(zoo.tiny_bert(), 2, 4)
    x = torch.randint(0, 1000, (2, 9))
    expected = model(x).logits
    dense_bytes = sum(m.weight.numel() * 4 for _, m in prune.prunable_weights(model).items())
    prune.sparsify_24_(model)
    layers = [m for m in model.modules() if isinstance(m, prune.SparseLinear)]
    assert len(layers) == 12 and torch.allclose(model(x).logits, expected, atol=1e-6)
    assert sum(m.values.nbytes + m.meta.nbytes for m in layers) == dense_bytes * 9 // 16
    loaded = shrinklib.load(shrinklib.save(model, tmp_path / "m"))
    assert torch.equal(loaded(x).logits, model(x).logits)
    assert size_on_disk(loaded) < size_on_disk(zoo.tiny_bert())


def test_a_layer_that_is_not_2_4_refuses_and_nothing_is_swapped(unchanged):
    model = zoo.tiny_bert()
    prune.nm_(model, 2, 4, filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and "layer.0." in fqn)
    with unchanged(model), pytest.raises(ValueError, match=r"bert\.encoder\.layer\.1\..*not 2:4 sparse"):
        prune.sparsify_24_(model)
    assert not any(isinstance(m, prune.SparseLinear) for m in model.modules())


def test_bad_construction():
    with pytest.raises(ValueError, match=r"in_features \(6\) must be a multiple of 4"):
        prune.SparseLinear(6, 3)
    with pytest.raises(TypeError, match="from_linear needs an nn.Linear"):
        prune.SparseLinear.from_linear(nn.ReLU())
    with pytest.raises(ValueError, match="in_features must be an int >= 1, got '8'"):
        prune.SparseLinear("8", 3)
    with pytest.raises(TypeError, match="bias must be True or False, got 'yes'"):
        prune.SparseLinear(8, 3, bias="yes")
