import torch

from shrinklib import prune

from .conftest import layer_problem, row_magnitude_mask


def test_wanda_prunes_each_row_exactly_and_equals_magnitude_for_equal_inputs():
    X, W = layer_problem(3)
    keep = prune.wanda_mask(W, X.pow(2).sum(0), 0.5)
    assert torch.all((~keep).sum(1) == 24)
    uniform = prune.wanda_mask(W, torch.ones(48), 0.5)
    assert torch.equal(uniform, row_magnitude_mask(W, 24))
