import pytest
import torch
from torch import nn

from shrinklib import prune, zoo


def _reference_scores(weight, rows, cols, criterion):
    out = torch.empty(weight.shape[0] // rows, weight.shape[1] // cols)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            tile = weight[i * rows:(i + 1) * rows, j * cols:(j + 1) * cols].abs()
            out[i, j] = tile.max() if criterion == "max" else tile.pow(2).sum().sqrt()
    return out


@pytest.mark.parametrize("criterion", prune.CRITERIA)
def test_block_scores_match_a_loop_on_an_awkward_shape(criterion):
    weight = torch.randn(6, 9, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(prune.block_scores(weight, (2, 3), criterion), _reference_scores(weight, 2, 3, criterion))


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 18), nn.ReLU(), nn.Linear(18, 6))




@pytest.mark.parametrize("scope", prune.SCOPES)
def test_block_pruning_removes_whole_lowest_blocks(scope):
    model = _mlp()
    scores = {f: prune.block_scores(model.get_submodule(f).weight, (3, 6)) for f in ("0", "2")}
    prune.block_(model, 0.5, block=(3, 6), scope=scope, filter_fn=lambda m, fqn: isinstance(m, nn.Linear))
    pruned_scores, kept_scores = [], []
    for fqn, mask in prune.masks(model).items():
        per_block = mask.reshape(mask.shape[0] // 3, 3, mask.shape[1] // 6, 6)
        assert torch.all(per_block.all(dim=(1, 3)) == per_block.any(dim=(1, 3))), "a block is pruned whole or not at all"
        kept = per_block.all(dim=(1, 3))
        if scope == "layer":
            assert int((~kept).sum()) == round(0.5 * kept.numel())
            assert scores[fqn][~kept].max() <= scores[fqn][kept].min()
        pruned_scores.append(scores[fqn][~kept])
        kept_scores.append(scores[fqn][kept])
    if scope == "global":
        assert torch.cat(pruned_scores).max() <= torch.cat(kept_scores).min()
        assert sum(map(len, pruned_scores)) == round(0.5 * sum(map(len, pruned_scores + kept_scores)))


def test_a_block_that_does_not_divide_is_refused_and_nothing_changes(unchanged):
    model = zoo.tiny_bert()  # weights 32 x 32, 64 x 32, 32 x 64
    with unchanged(model), pytest.raises(ValueError, match=r"block \(5, 8\) does not divide the weight of shape \(32, 32\)"):
        prune.block_(model, 0.5, block=(5, 8))
    assert prune.masks(model) == {}


@pytest.mark.parametrize("kwargs, message", [
    ({"block": (0, 4)}, r"block must be a \(rows, cols\) pair of positive ints"),
    ({"block": 4}, r"block must be a \(rows, cols\) pair"),
    ({"criterion": "mean"}, r"criterion must be one of \('max', 'l2'\)"),
    ({"sparsity": 1.5}, r"sparsity must be a number in \[0, 1\)"),
    ({"sparsity": float("inf")}, r"sparsity must be a number in \[0, 1\), got inf"),
    ({"scope": "row"}, "scope must be one of"),
])
def test_bad_block_input(kwargs, message, unchanged):
    model = prune.block_(zoo.tiny_bert(), 0.25, block=(8, 8), scope="layer")  # already masked: masks must stay
    with unchanged(model), pytest.raises(ValueError, match=message):
        prune.block_(model, **{"sparsity": 0.5, "block": (8, 8), **kwargs})
