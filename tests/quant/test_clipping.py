import pytest
import torch

from shrinklib.quant import choose_qparams, fake_quantize
from shrinklib.quant.clipping import search_clip


def heavy_tailed(rows=12, cols=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=g) * torch.rand(rows, cols, generator=g).pow(-0.5)  # heavy tails


def weight_error(w, scale, zero_point, bits, symmetric, group_size, norm=2.4):
    w_hat = fake_quantize(w, scale, zero_point, bits, symmetric, group_size=group_size)
    delta = (w_hat - w).abs().pow(norm)
    if group_size is None:
        return delta.sum(1)
    pad = -w.shape[1] % group_size
    return torch.nn.functional.pad(delta, (0, pad)).reshape(w.shape[0], -1, group_size).sum(-1)


@pytest.mark.parametrize("bits, symmetric, group_size", [(3, False, None), (4, True, 16), (4, False, 16), (2, False, 12)])
def test_no_row_or_group_ends_worse_than_min_max_and_most_end_better(bits, symmetric, group_size):
    w = heavy_tailed()  # 40 = 16 + 16 + 8 and 12 + 12 + 12 + 4: ragged last groups
    kwargs = {"group_size": group_size} if group_size else {"axis": 0}
    minmax = weight_error(w, *choose_qparams(w, bits, symmetric, **kwargs), bits, symmetric, group_size)
    scale, zero_point = search_clip(w, bits, symmetric, group_size=group_size)
    assert scale.shape == choose_qparams(w, bits, symmetric, **kwargs)[0].shape
    clipped = weight_error(w, scale, zero_point, bits, symmetric, group_size)
    assert torch.all(clipped <= minmax * (1 + 1e-6))
    assert (clipped < minmax).float().mean() > 0.5 and (clipped / minmax).mean() < 0.95


def test_without_shrinking_it_is_min_max():
    w = heavy_tailed()
    for got, expected in zip(search_clip(w, 4, False, group_size=16, max_shrink=0.0),
                             choose_qparams(w, 4, False, group_size=16)):
        assert torch.equal(got, expected)


def test_the_output_objective_uses_the_gram_matrix():
    """With H weighting one input far above the rest, the search protects that input's weight."""
    g = torch.Generator().manual_seed(3)
    w = heavy_tailed(rows=8, cols=16, seed=3)
    loud = torch.ones(16, dtype=torch.float64)
    loud[int(w[0].abs().argmax())] = 1e6  # the largest weight of row 0 meets a huge input
    scale, zero_point = search_clip(w, 3, False, gram=torch.diag(loud))
    w_hat = fake_quantize(w, scale, zero_point, 3, False)
    minmax = fake_quantize(w, *choose_qparams(w, 3, False, axis=0), 3, False)
    j = int(w[0].abs().argmax())
    assert abs(w_hat[0, j] - w[0, j]) <= abs(minmax[0, j] - w[0, j]) + 1e-6
    gram = torch.randn(16, 16, generator=g, dtype=torch.float64)
    gram = gram @ gram.T
    scale, zero_point = search_clip(w, 3, False, gram=gram, grid=20, max_shrink=0.5)
    def output_error(scale, zero_point):
        delta = (fake_quantize(w, scale, zero_point, 3, False) - w).double()
        return float((delta @ gram * delta).sum())

    assert output_error(scale, zero_point) <= output_error(*choose_qparams(w, 3, False, axis=0)) * (1 + 1e-9)


@pytest.mark.parametrize("call, message", [
    (lambda w: search_clip(w, 9), "bits"),
    (lambda w: search_clip(w[0], 4), "weight must be"),
    (lambda w: search_clip(w, 4, grid=0), "grid"),
    (lambda w: search_clip(w, 4, max_shrink=1.0), "max_shrink"),
    (lambda w: search_clip(w, 4, norm=0), "norm"),
    (lambda w: search_clip(w, 4, group_size=0), "group_size"),
    (lambda w: search_clip(w, 4, gram=torch.eye(3)), "gram must be"),
])
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call(heavy_tailed())
