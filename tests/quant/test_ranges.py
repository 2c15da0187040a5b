import numpy as np
import pytest
import torch

from shrinklib.quant import (
    calibrate_range,
    entropy_range,
    fake_quantize,
    minmax_range,
    mse_range,
    percentile_range,
    qparams_from_range,
    sqnr,
)


def with_outliers(n=20000, seed=0):
    """Gaussian values plus a handful of large outliers: the case clipping is for."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g)
    x[:5] = torch.tensor([40.0, -35.0, 30.0, 25.0, -45.0])
    return x


def error_db(x, lo, hi, bits=8):
    scale, zero_point = qparams_from_range(lo, hi, bits, symmetric=True)
    return sqnr(x, fake_quantize(x, scale, zero_point, bits, True))


def entropy_reference(x, bits, bins):
    """The threshold search written out bin by bin, as in TensorRT's description."""
    levels = 2 ** (bits - 1)
    mags = x.abs().double().numpy()
    hist, edges = np.histogram(mags, bins=bins, range=(0, mags.max()))
    best, best_kl = bins, np.inf
    for i in range(levels, bins + 1):
        p = hist[:i].astype(float)
        p[-1] += hist[i:].sum()
        q = np.zeros(i)
        groups = (np.arange(i) * levels) // i
        for j in range(levels):
            members = np.where(groups == j)[0]
            nonzero = [m for m in members if hist[m] > 0]
            for m in nonzero:
                q[m] = hist[members].sum() / len(nonzero)
        q[(p > 0) & (q == 0)] += 1e-12
        p, q = p / p.sum(), q / q.sum()
        kl = sum(pi * np.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)
        if kl < best_kl:
            best, best_kl = i, kl
    return mags.max() * best / bins


def test_minmax_and_percentile_match_numpy():
    x = with_outliers()
    lo, hi = minmax_range(x)
    assert float(lo) == -45.0 and float(hi) == 40.0
    lo, hi = percentile_range(x, 99.9)
    expected = np.percentile(x.numpy(), [0.1, 99.9])
    assert np.allclose([float(lo), float(hi)], expected, rtol=1e-4)


def test_percentile_and_entropy_clip_outliers_to_keep_the_bulk():
    x = with_outliers()
    bulk = x[5:]
    minmax = error_db(bulk, *minmax_range(x))
    for method in ("percentile", "entropy"):
        lo, hi = calibrate_range(x, method, percentile=99.9)  # 5 outliers in 20,000 sit above 99.99%
        assert float(hi) < 40.0, method
        assert error_db(bulk, lo, hi) > minmax + 10, method  # the bulk of the values is far better kept


def test_mse_clips_heavy_tails_and_never_loses_to_minmax():
    torch.manual_seed(0)
    x = torch.distributions.Laplace(0.0, 1.0).sample((20000,))
    lo, hi = mse_range(x, bits=4)
    assert float(hi) < 0.7 * float(x.abs().max())
    assert error_db(x, lo, hi, 4) > error_db(x, *minmax_range(x), 4) + 3  # at 4 bits clipping pays
    spiky = with_outliers()  # outliers dominate the squared error: MSE keeps most of the range
    assert error_db(spiky, *mse_range(spiky)) >= error_db(spiky, *minmax_range(spiky)) - 1e-9


def test_clipping_methods_keep_the_range_of_uniform_data():
    x = torch.rand(20000, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for method in ("mse", "entropy"):
        lo, hi = calibrate_range(x, method)
        assert float(hi) > 0.9 * float(x.max()), method


def test_entropy_matches_the_written_out_search():
    x = with_outliers(4000, seed=3)
    lo, hi = entropy_range(x, bits=4, bins=96)
    assert float(hi) == pytest.approx(entropy_reference(x, 4, 96), rel=1e-6)
    assert float(lo) == -float(hi)


def test_bad_input():
    x = torch.randn(100)
    with pytest.raises(ValueError, match="method must be one of"):
        calibrate_range(x, "max")
    with pytest.raises(ValueError, match="percentile must be in \\(50, 100\\]"):
        percentile_range(x, 30)
    with pytest.raises(ValueError, match="bins must be >= 128"):
        entropy_range(x, bits=8, bins=64)
    with pytest.raises(ValueError, match="x is empty"):
        calibrate_range(torch.empty(0), "entropy")
    with pytest.raises(ValueError, match="entropy calibration chooses a symmetric range"):
        calibrate_range(x, "entropy", symmetric=False)
    with pytest.raises(ValueError, match="grid must be >= 1"):
        mse_range(x, grid=0)
