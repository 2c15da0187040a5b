import pytest
import torch
from torch import nn

from shrinklib import prune, zoo
from shrinklib.measure import sparsity


def _reference_nm(weight, n, m):
    """Loop over every group: keep the n largest magnitudes."""
    keep = torch.zeros_like(weight, dtype=torch.bool)
    for r in range(weight.shape[0]):
        for g in range(0, weight.shape[1], m):
            order = weight[r, g:g + m].abs().argsort(descending=True)
            keep[r, g + order[:n]] = True
    return keep


@pytest.mark.parametrize("shape, n, m", [((7, 12), 2, 4), ((5, 16), 1, 4), ((3, 24), 4, 8), ((9, 20), 2, 4)])
def test_nm_mask_keeps_the_n_largest_of_every_m(shape, n, m):
    weight = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    mask = prune.nm_mask(weight, n, m)
    assert torch.equal(mask, _reference_nm(weight, n, m))
    assert torch.all(mask.reshape(shape[0], -1, m).sum(-1) == n)
    assert prune.is_nm_sparse(weight * mask, n, m) and not prune.is_nm_sparse(weight, n, m)


def test_nm_prunes_a_model_to_exactly_half():
    model = zoo.tiny_bert()
    prune.nm_(model, 2, 4)
    for fqn, mask in prune.masks(model).items():
        assert prune.is_nm_sparse(model.get_submodule(fqn).weight, 2, 4), fqn
    assert sparsity(model) == pytest.approx(0.5)


@pytest.mark.parametrize("call, message", [
    (lambda: prune.nm_mask(torch.randn(4, 8), 3, 2), "n <= m, got n=3, m=2"),
    (lambda: prune.nm_mask(torch.randn(4, 10), 2, 4), r"input dimension \(10\) must be a multiple of m=4"),
    (lambda: prune.nm_mask(torch.randn(4, 8), 0, 4), "n must be a positive int"),
    (lambda: prune.nm_mask(torch.randn(2, 4, 8), 2, 4), "2-D weights"),
    (lambda: prune.is_nm_sparse(torch.randn(2, 4, 8), 2, 4), "2-D weights"),
    (lambda: prune.check_nm_pair(4), r"nm must be an \(n, m\) pair of ints such as \(2, 4\), or None, got 4"),
    (lambda: prune.check_nm_pair((2, 4, 8)), r"nm must be an \(n, m\) pair"),
    (lambda: prune.check_nm_pair((4, 2)), "n <= m, got n=4, m=2"),
])
def test_bad_nm_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_a_layer_that_does_not_divide_leaves_the_model_untouched(unchanged):
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4))
    with unchanged(model), pytest.raises(ValueError, match=r"^2: the input dimension \(6\) must be a multiple of m=4"):
        prune.nm_(model, 2, 4, filter_fn=lambda mod, fqn: isinstance(mod, nn.Linear))
    assert prune.masks(model) == {} and torch.all(model[0].weight != 0)


def test_check_nm_returns_the_pair_and_names_what_is_wrong():
    assert prune.check_nm(2, 4) == (2, 4) and prune.check_nm(4, 4) == (4, 4)
    assert prune.check_nm_pair([2, 4]) == (2, 4) and prune.check_nm_pair(None) is None
    with pytest.raises(ValueError, match="n must be a positive int, got True"):
        prune.check_nm(True, 4)
    with pytest.raises(ValueError, match="m must be a positive int, got 4.0"):
        prune.check_nm(2, 4.0)
    with pytest.raises(ValueError, match="N:M sparsity needs n <= m, got n=5, m=4"):
        prune.check_nm(5, 4)
