"""Uniform quantization: the pure functions every other quantization method is built on.

A real number ``x`` is stored as an integer ``q`` on a grid of step ``scale``:

* **affine** (asymmetric): ``q = clamp(round(x / scale) + zero_point, 0, 2^b - 1)`` with
  ``scale = (max - min) / (2^b - 1)`` and ``zero_point = round(-min / scale)``, so that the
  range ``[min, max]`` (stretched to contain 0) fills all ``2^b`` levels and 0 is exact;
* **symmetric**: ``zero_point = 0``, ``q = clamp(round(x / scale), -2^(b-1), 2^(b-1) - 1)``
  with ``scale = max|x| / (2^(b-1) - 1)`` (the "absmax" rule of LLM.int8(); torch's
  observers divide by ``(2^b - 1) / 2`` instead, which leaves ``max|x|`` half a step
  outside the grid).

``x_hat = (q - zero_point) * scale`` is the dequantized value, and ``fake_quantize`` does both
in one step (in floating point) as quantization-aware training does. A **granularity**
says which elements share one scale: the whole tensor (``axis=None``), each slice along
``axis`` (per-channel for weights with ``axis=0``, per-token for activations), or groups of
``group_size`` consecutive elements of each row (per-group, as GPTQ and AWQ store 4-bit
weights). Rounding is to the nearest level (ties to even, as torch) or stochastic
(Gupta et al., 2015, "Deep Learning with Limited Numerical Precision"): up with
probability equal to the fractional part, so that the rounding is unbiased on average.

Error is measured as the signal-to-quantization-noise ratio,
``SQNR = 10 log10(||x||^2 / ||x - x_hat||^2)`` dB; each bit adds about 6 dB.
See Jacob et al. (2018), "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference", and Nagel et al. (2021), "A White Paper on Neural
Network Quantization".
"""
from __future__ import annotations

import math

import torch

from shrinklib._checks import check_bool, check_choice, check_instance, check_int, check_tensor, is_int

MIN_BITS, MAX_BITS = 2, 8
ROUNDINGS = ("nearest", "stochastic")


def check_bits(bits: int) -> int:
    """``bits`` if it is an int from 2 to 8 (a uniform integer grid), else ``ValueError``."""
    if not is_int(bits) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be an integer from {MIN_BITS} to {MAX_BITS}, got {bits!r} "
                         "(ternary and binary weights are not uniform integer grids)")
    return bits


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """``(qmin, qmax)``: the integer levels of a ``bits``-bit grid (``bits`` from 2 to 8; ``symmetric``, a bool)."""
    check_bits(bits)
    check_bool("symmetric", symmetric)
    if symmetric:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


def storage_dtype(bits: int, symmetric: bool) -> torch.dtype:
    """The integer dtype that holds the levels: int8 (symmetric) or uint8 (affine)."""
    qrange(bits, symmetric)
    return torch.int8 if symmetric else torch.uint8


def check_group_size(group_size: int) -> int:
    """``group_size`` if it is an int >= 1, else ``ValueError``."""
    return check_int("group_size", group_size, minimum=1, what="a positive integer")


def num_groups(width: int, group_size: int) -> int:
    """Groups of ``group_size`` in a row of ``width`` (an int >= 0): the last one may be shorter."""
    check_int("width", width, minimum=0)
    return -(-width // check_group_size(group_size))


def group_view(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """``x (..., K)`` seen as ``(..., ceil(K / group_size), group_size)``: the groups of each row.

    When ``group_size`` does not divide ``K``, the last group is shorter and the view pads
    it with zeros. A zero never moves a min-max range (which always holds 0), and
    :func:`ungroup` drops the padding again.
    """
    check_instance("x", x, torch.Tensor)
    check_group_size(group_size)
    if x.ndim == 0:
        raise ValueError("a group view needs at least one dimension")
    pad = num_groups(x.shape[-1], group_size) * group_size - x.shape[-1]
    if pad:
        x = torch.nn.functional.pad(x, (0, pad))
    return x.reshape(*x.shape[:-1], x.shape[-1] // group_size, group_size)


def ungroup(view: torch.Tensor, width: int) -> torch.Tensor:
    """The inverse of :func:`group_view`: rows of ``width`` again, padding dropped."""
    return view.flatten(-2)[..., :width]


def _reduce_dims(x: torch.Tensor, axis: int | None) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(x.ndim))
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis={axis} is out of range for a tensor of shape {tuple(x.shape)}")
    axis %= x.ndim
    return tuple(d for d in range(x.ndim) if d != axis)


def qparams_from_range(lo: torch.Tensor, hi: torch.Tensor, bits: int = 8,
                       symmetric: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, zero_point)`` that map the finite range ``[lo, hi]`` (elementwise tensors or numbers) onto the grid."""
    qmin, qmax = qrange(bits, symmetric)
    lo, hi = torch.as_tensor(lo, dtype=torch.float32), torch.as_tensor(hi, dtype=torch.float32)
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
        raise ValueError("a quantization range needs finite lo and hi, got inf or nan")
    if (lo > hi).any():
        raise ValueError("a quantization range needs lo <= hi")
    lo, hi = torch.minimum(lo, torch.zeros_like(lo)), torch.maximum(hi, torch.zeros_like(hi))  # 0 stays exact
    tiny = torch.finfo(torch.float32).tiny
    if symmetric:
        scale = (torch.maximum(-lo, hi) / qmax).clamp_min(tiny)
        return scale, torch.zeros_like(scale, dtype=torch.int32)
    scale = ((hi - lo) / (qmax - qmin)).clamp_min(tiny)
    zero_point = (qmin - torch.round(lo / scale)).clamp(qmin, qmax).to(torch.int32)
    return scale, zero_point


def choose_qparams(x: torch.Tensor, bits: int = 8, symmetric: bool = True, *, axis: int | None = None,
                   group_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, zero_point)`` from the min and max of ``x`` at the given granularity.

    * ``axis=None, group_size=None``: one scale for the tensor (0-d results);
    * ``axis=k``: one per slice along dimension ``k``, shaped to broadcast against ``x``
      (``(out, 1)`` for a weight with ``axis=0``);
    * ``group_size=g``: one per ``g`` consecutive elements of the last dimension, shaped
      ``(..., ceil(K / g))`` (the last group is shorter when ``g`` does not divide ``K``);
      pass the same ``group_size`` to :func:`quantize`.

    Other ranges than min-max come from :mod:`shrinklib.quant.ranges` and
    :func:`qparams_from_range`. ``x`` must be a non-empty, finite float tensor.
    """
    check_tensor(x)
    qrange(bits, symmetric)
    if axis is not None:
        check_int("axis", axis)
    if group_size is not None:
        if axis is not None:
            raise ValueError("give axis or group_size, not both (groups already split every row)")
        grouped = group_view(x.detach().float(), group_size)
        return qparams_from_range(grouped.amin(-1), grouped.amax(-1), bits, symmetric)
    dims = _reduce_dims(x, axis)
    xf = x.detach().float()
    return qparams_from_range(xf.amin(dim=dims, keepdim=axis is not None),
                              xf.amax(dim=dims, keepdim=axis is not None), bits, symmetric)


def _expand(param: torch.Tensor, group_size: int | None) -> torch.Tensor:
    return param if group_size is None else param.unsqueeze(-1)


def _round(v: torch.Tensor, rounding: str, generator: torch.Generator | None) -> torch.Tensor:
    if rounding == "nearest":
        return torch.round(v)  # half to even, as torch.quantize_per_tensor
    noise = torch.rand(v.shape, generator=generator, device=v.device, dtype=v.dtype)  # "stochastic"
    return torch.floor(v + noise)


def _check_qparams(scale, zero_point) -> None:
    check_instance("scale", scale, torch.Tensor)
    check_instance("zero_point", zero_point, torch.Tensor)


def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bits: int = 8, symmetric: bool = True,
             *, group_size: int | None = None, rounding: str = "nearest",
             generator: torch.Generator | None = None) -> torch.Tensor:
    """The integer levels of ``x`` (int8 when symmetric, uint8 when affine), same shape as ``x``.

    ``x`` is a non-empty, finite float tensor, ``scale`` and ``zero_point`` tensors,
    ``rounding`` one of :data:`ROUNDINGS`, ``generator`` a ``torch.Generator`` or ``None``.
    """
    check_tensor(x)
    qmin, qmax = qrange(bits, symmetric)
    _check_qparams(scale, zero_point)
    check_choice("rounding", rounding, ROUNDINGS)
    if generator is not None:
        check_instance("generator", generator, torch.Generator, what="a torch.Generator")
    view = x.float() if group_size is None else group_view(x.float(), group_size)
    scale, zero_point = _expand(scale.float(), group_size), _expand(zero_point, group_size)
    q = (_round(view / scale, rounding, generator) + zero_point).clamp(qmin, qmax)
    q = q if group_size is None else ungroup(q, x.shape[-1])
    return q.reshape(x.shape).to(storage_dtype(bits, symmetric))


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, *, group_size: int | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(q - zero_point) * scale``, in ``dtype`` (all three tensors)."""
    check_instance("q", q, torch.Tensor)
    _check_qparams(scale, zero_point)
    view = q.to(torch.float32) if group_size is None else group_view(q.to(torch.float32), group_size)
    out = (view - _expand(zero_point, group_size).float()) * _expand(scale.float(), group_size)
    out = out if group_size is None else ungroup(out, q.shape[-1])
    return out.reshape(q.shape).to(dtype)


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bits: int = 8,
                  symmetric: bool = True, *, group_size: int | None = None, rounding: str = "nearest",
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """``dequantize(quantize(x))`` in ``x``'s dtype: the values a quantized model computes with.

    Differentiable with the straight-through estimator of quantization-aware training
    (Bengio et al., 2013; Jacob et al., 2018): the gradient passes unchanged where ``x``
    falls inside the grid and is zero where it was clamped, as in
    ``torch.fake_quantize_per_tensor_affine``. ``scale`` gets no gradient here (a learned
    step size, LSQ of Esser et al. 2020, is a quantization-aware-training module's job).
    """
    with torch.no_grad():
        q = quantize(x, scale, zero_point, bits, symmetric, group_size=group_size, rounding=rounding,
                     generator=generator)
        out = dequantize(q, scale, zero_point, group_size=group_size, dtype=x.dtype)
    if not x.requires_grad:
        return out
    qmin, qmax = qrange(bits, symmetric)
    with torch.no_grad():
        view = x.float() if group_size is None else group_view(x.float(), group_size)
        unclamped = torch.round(view / _expand(scale.float(), group_size)) + _expand(zero_point, group_size)
        inside = (unclamped >= qmin) & (unclamped <= qmax)
        inside = (inside if group_size is None else ungroup(inside, x.shape[-1])).reshape(x.shape).to(x.dtype)
    return out + (x - x.detach()) * inside


def fake_quantize_weight(weight: torch.Tensor, bits: int = 8, symmetric: bool = True, *,
                         group_size: int | None = None) -> torch.Tensor:
    """Round-to-nearest of a weight ``(out, in)``: one grid per output channel, or per group of inputs."""
    kwargs = {"group_size": group_size} if group_size else {"axis": 0}
    scale, zero_point = choose_qparams(weight, bits, symmetric, **kwargs)
    return fake_quantize(weight, scale, zero_point, bits, symmetric, group_size=group_size)


def sqnr(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: ``10 log10(||x||^2 / ||x - x_hat||^2)`` (inf if exact)."""
    check_instance("x", x, torch.Tensor)
    check_instance("x_hat", x_hat, torch.Tensor)
    if x.shape != x_hat.shape:
        raise ValueError(f"x and x_hat must have one shape, got {tuple(x.shape)} and {tuple(x_hat.shape)}")
    signal = x.double().pow(2).sum().item()
    noise = (x.double() - x_hat.double()).pow(2).sum().item()
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal / noise)
