"""Calibration: which range ``[lo, hi]`` a quantizer should cover.

Min-max covers every value, so one outlier stretches the step for all the others.
Clipping the range trades a large error on a few values for a smaller step everywhere.
Four ways to choose it, all per tensor (Nagel et al., 2021, "A White Paper on Neural
Network Quantization", section 3.4; Wu et al., 2020, "Integer Quantization for Deep
Learning Inference"):

* ``"minmax"``: the smallest and largest value;
* ``"percentile"``: the ``p``-th and ``(100 - p)``-th percentiles (``p = 99.99`` by default);
* ``"mse"``: the clipping of the min-max range, searched on a grid, that minimizes the
  squared error of the fake-quantized tensor;
* ``"entropy"``: the symmetric threshold that minimizes the KL divergence between the
  histogram of ``|x|`` and its quantized version (Migacz, 2017, "8-bit Inference with
  TensorRT"): the choice of TensorRT's calibrator.

Each returns ``(lo, hi)`` as 0-d tensors; :func:`~shrinklib.quant.primitives.qparams_from_range`
turns them into ``(scale, zero_point)``.
"""
from __future__ import annotations

import torch

from shrinklib._checks import check_choice, check_int, check_number, check_tensor
from shrinklib.quant.primitives import fake_quantize, qparams_from_range, qrange

RANGE_METHODS = ("minmax", "percentile", "mse", "entropy")
MAX_SAMPLES = 1 << 22  # torch.quantile refuses larger inputs; a random sample estimates the tails well


def _flat(x: torch.Tensor) -> torch.Tensor:
    flat = x.detach().float().flatten()
    if flat.numel() > MAX_SAMPLES:  # a seeded random sample: a stride could fall on some columns only
        picked = torch.randint(flat.numel(), (MAX_SAMPLES,), generator=torch.Generator().manual_seed(0))
        flat = flat[picked.to(flat.device)]
    return flat


def check_percentile(percentile) -> float:
    """``percentile`` if it is a number in ``(50, 100]`` (100 keeps the whole range), else ``ValueError``."""
    return check_number("percentile", percentile, low=50, low_open=True, high=100, what="in (50, 100]")


def minmax_range(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    check_tensor(x)
    return x.detach().float().min(), x.detach().float().max()


def percentile_range(x: torch.Tensor, percentile: float = 99.99) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``100 - percentile`` and ``percentile`` percentiles of ``x`` (``percentile`` a number in ``(50, 100]``)."""
    check_tensor(x)
    check_percentile(percentile)
    flat = _flat(x)
    q = torch.tensor([1 - percentile / 100, percentile / 100])
    lo, hi = torch.quantile(flat, q)
    return lo, hi


def mse_range(x: torch.Tensor, bits: int = 8, symmetric: bool = True,
              grid: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max scaled by the factor in ``(0, 1]`` (``grid`` steps, an int >= 1) with the least squared error."""
    check_tensor(x)
    check_int("grid", grid, minimum=1, what=">= 1")
    qrange(bits, symmetric)
    lo, hi = minmax_range(x)
    flat = _flat(x)
    best, best_err = (lo, hi), float("inf")
    for i in range(grid, 0, -1):
        ratio = i / grid
        scale, zero_point = qparams_from_range(lo * ratio, hi * ratio, bits, symmetric)
        err = (fake_quantize(flat, scale, zero_point, bits, symmetric) - flat).pow(2).sum().item()
        if err < best_err:
            best, best_err = (lo * ratio, hi * ratio), err
    return best


def _kl(p: torch.Tensor, q: torch.Tensor) -> float:
    p, q = p / p.sum(), q / q.sum()
    keep = p > 0
    return float((p[keep] * (p[keep] / q[keep]).log()).sum())


def entropy_range(x: torch.Tensor, bits: int = 8, bins: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """The symmetric range ``[-t, t]`` whose clipped, quantized histogram of ``|x|`` is closest in KL.

    For each candidate threshold (a bin edge ``i``, from the number of levels up to
    ``bins``): the reference ``P`` is the histogram's first ``i`` bins with everything
    beyond folded into the last one; ``Q`` merges those ``i`` bins into as many groups as
    the grid has positive levels and spreads each group's mass evenly over its non-empty
    bins. The threshold with the smallest ``KL(P || Q)`` wins.
    """
    check_tensor(x)
    levels = qrange(bits, True)[1] + 1  # bins of |x| the grid can tell apart: 128 at 8 bits
    check_int("bins", bins, minimum=levels, what=f">= {levels} (the levels of a {bits}-bit grid)")
    magnitudes = _flat(x).abs()
    top = magnitudes.max()
    if top == 0:
        return top.clone(), top.clone()
    hist = torch.histc(magnitudes, bins=bins, min=0.0, max=float(top)).double()
    best_i, best_kl = bins, float("inf")
    for i in range(levels, bins + 1):
        reference = hist[:i].clone()
        reference[-1] += hist[i:].sum()
        # merge the i bins into `levels` groups, then spread each group's mass over its non-empty bins
        group_of = torch.div(torch.arange(i) * levels, i, rounding_mode="floor")
        nonzero = (hist[:i] > 0).double()
        mass = torch.zeros(levels, dtype=torch.float64).index_add_(0, group_of, hist[:i])
        count = torch.zeros(levels, dtype=torch.float64).index_add_(0, group_of, nonzero)
        candidate = nonzero * (mass / count.clamp_min(1))[group_of]
        if (candidate[reference > 0] == 0).any():  # Q must cover P's support; smooth the empty bins
            candidate = candidate + 1e-12 * (reference > 0)
        kl = _kl(reference, candidate)
        if kl < best_kl:
            best_i, best_kl = i, kl
    threshold = top * best_i / bins
    return -threshold, threshold


def calibrate_range(x: torch.Tensor, method: str = "minmax", *, bits: int = 8, symmetric: bool = True,
                    percentile: float = 99.99) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lo, hi)`` of ``x`` by one of :data:`RANGE_METHODS`.

    ``x`` is a non-empty, finite float tensor; ``bits`` an int from 2 to 8, ``symmetric`` a
    bool, ``percentile`` a number in ``(50, 100]`` (read by ``"percentile"`` only, checked always).
    """
    check_choice("method", method, RANGE_METHODS)
    qrange(bits, symmetric)
    check_percentile(percentile)
    if method == "minmax":
        return minmax_range(x)
    if method == "percentile":
        return percentile_range(x, percentile)
    if method == "mse":
        return mse_range(x, bits, symmetric)
    if not symmetric:  # "entropy"
        raise ValueError("entropy calibration chooses a symmetric range [-t, t]; use symmetric=True")
    return entropy_range(x, bits)
