"""Clipping search for weight grids: shrink each row's or group's range when that lowers the error.

Min-max ranges waste levels on the few largest weights: at 3 or 4 bits, clipping them
and spending the levels on the many small weights lowers the error. For every row (or
group of ``group_size`` inputs) :func:`search_clip` tries the min-max range shrunk by
the factors ``1, 1 - max_shrink / grid, ..., 1 - max_shrink (grid - 1) / grid`` and keeps
the factor with the least error, which is either

* the weight error ``sum |w - q(w)|^norm`` (GPTQ's code, Frantar et al. 2023, searches
  with ``norm = 2.4``, ``max_shrink = 0.8``, ``grid = 100``), or
* with ``gram = X^T X``, the error on the layer's output for the calibration inputs,
  ``(w - q(w)) H_g (w - q(w))^T`` with ``H_g`` the group's diagonal block of ``H`` (AWQ's
  clipping search, Lin et al. 2024, with ``max_shrink = 0.5``, ``grid = 20``).

A factor of 1 is min-max itself, so the search never ends worse than min-max on its
objective.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from shrinklib._checks import check_instance, check_int, check_number, check_tensor
from shrinklib.quant.primitives import check_bits, check_group_size, group_view, qparams_from_range, qrange


def _fake_quantize_rows(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int,
                        qmax: int) -> torch.Tensor:
    return (torch.round(x / scale) + zero_point).clamp(qmin, qmax).sub(zero_point).mul(scale)


@torch.no_grad()
def search_clip(weight: torch.Tensor, bits: int, symmetric: bool = False, *, group_size: int | None = None,
                gram: torch.Tensor | None = None, grid: int = 100, max_shrink: float = 0.8,
                norm: float = 2.4) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, zero_point)`` of ``weight (out, in)`` with each row's (or group's) range clipped for least error.

    Shaped as :func:`~shrinklib.quant.primitives.choose_qparams` gives them: ``(out, 1)``
    per channel, ``(out, ceil(in / group_size))`` per group (the last group may be
    shorter). With ``gram`` (``(in, in)``), the error is measured on the layer's output.

    ``weight`` is a finite float tensor, ``grid`` an int >= 1, ``max_shrink`` a number in
    ``[0, 1)`` and ``norm`` a finite number > 0.
    """
    check_bits(bits)
    qrange(bits, symmetric)
    check_tensor(weight, "weight")
    if weight.ndim != 2:
        raise ValueError(f"weight must be (out, in), got shape {tuple(weight.shape)}")
    check_int("grid", grid, minimum=1, what="a positive integer")
    check_number("max_shrink", max_shrink, low=0, high=1, high_open=True, what="in [0, 1)")
    check_number("norm", norm, low=0, low_open=True, what="> 0")
    rows, cols = weight.shape
    if gram is not None and check_instance("gram", gram, torch.Tensor).shape != (cols, cols):
        raise ValueError(f"gram must be ({cols}, {cols}) for a weight of shape {tuple(weight.shape)}, "
                         f"got {tuple(gram.shape)}")
    size = check_group_size(group_size) if group_size is not None else cols
    w = group_view(weight.detach().float(), size)  # (out, groups, size), the last group padded with zeros
    groups = w.shape[1]
    blocks = None
    if gram is not None:  # the diagonal blocks H_g, padded like the weights (zeros add no error)
        padded = F.pad(gram.detach().to(w.device, torch.float64), (0, groups * size - cols, 0, groups * size - cols))
        blocks = torch.stack([padded[g * size:(g + 1) * size, g * size:(g + 1) * size] for g in range(groups)])
    qmin, qmax = qrange(bits, symmetric)
    lo, hi = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    best_err = torch.full((rows, groups, 1), float("inf"), dtype=torch.float64, device=w.device)
    best_scale = best_zero = None
    for i in range(grid):
        ratio = 1 - max_shrink * i / grid
        scale, zero_point = qparams_from_range(lo * ratio, hi * ratio, bits, symmetric)
        delta = _fake_quantize_rows(w, scale, zero_point, qmin, qmax) - w
        if blocks is None:
            err = delta.abs().pow(norm).sum(-1, keepdim=True).double()
        else:
            d = delta.double()
            err = torch.einsum("rgi,gij,rgj->rg", d, blocks, d).unsqueeze(-1)
        if best_scale is None:
            best_err, best_scale, best_zero = err, scale, zero_point
            continue
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better, scale, best_scale)
        best_zero = torch.where(better, zero_point, best_zero)
    return best_scale.squeeze(-1), best_zero.squeeze(-1)
