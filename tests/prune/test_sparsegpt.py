import pytest
import torch

from shrinklib import prune

from .conftest import layer_problem, reconstruction_error, row_magnitude_mask


def test_sparsegpt_beats_wanda_which_beats_magnitude_on_reconstruction():
    X, W = layer_problem()
    magnitude = W * row_magnitude_mask(W, 24)
    wanda = W * prune.wanda_mask(W, X.pow(2).sum(0), 0.5)
    sparse, keep = prune.sparsegpt_prune(W, X.T @ X, 0.5, blocksize=16)
    assert int((~keep).sum()) == round(0.5 * W.numel()) and torch.all(sparse[~keep] == 0)
    assert reconstruction_error(X, W, sparse) < reconstruction_error(X, W, wanda) < reconstruction_error(X, W, magnitude)


def test_sparsegpt_compensation_is_the_least_squares_refit():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(100, 4, generator=g, dtype=torch.float64)
    w = torch.tensor([[0.01, 1.0, -2.0, 0.5]], dtype=torch.float64)  # the first weight is the cheapest to remove
    pruned, keep = prune.sparsegpt_prune(w, X.T @ X, 0.25, blocksize=4, percdamp=0.0)
    assert keep.tolist() == [[False, True, True, True]]
    rest = X[:, 1:]
    refit = w[0, 1:] + torch.linalg.solve(rest.T @ rest, rest.T @ X[:, :1] * w[0, 0]).flatten()
    assert torch.allclose(pruned[0, 1:], refit, atol=1e-10)


def test_nothing_to_prune_changes_nothing_and_blocks_are_exact():
    X, W = layer_problem(2)
    same, keep = prune.sparsegpt_prune(W, X.T @ X, 0.0)
    assert keep.all() and torch.allclose(same, W, atol=1e-12)
    _, keep = prune.sparsegpt_prune(W, X.T @ X, 0.3, blocksize=16)
    for start in range(0, 48, 16):
        assert int((~keep[:, start:start + 16]).sum()) == round(0.3 * 20 * 16)


def test_two_four_masks():
    X, W = layer_problem(4)
    scores = prune.wanda_scores(W, X.pow(2).sum(0))
    wanda = prune.wanda_mask(W, X.pow(2).sum(0), 0.5, nm=(2, 4))
    assert torch.equal(wanda, prune.nm_mask(scores, 2, 4))
    sparse, keep = prune.sparsegpt_prune(W, X.T @ X, 0.5, blocksize=16, nm=(2, 4))
    assert prune.is_nm_sparse(sparse, 2, 4) and int(keep.sum()) == W.numel() // 2
    assert torch.all(sparse[~keep] == 0)
    assert reconstruction_error(X, W, sparse) < reconstruction_error(X, W, W * wanda) < reconstruction_error(X, W, W * prune.nm_mask(W, 2, 4))
    with pytest.raises(ValueError, match="multiples of m=4"):
        prune.sparsegpt_prune(W, X.T @ X, 0.5, blocksize=18, nm=(2, 4))
