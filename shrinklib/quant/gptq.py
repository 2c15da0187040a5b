"""GPTQ: one-shot weight quantization with second-order error compensation (Frantar et al.,
2023, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers").

Round-to-nearest (RTN) quantizes every weight on its own. GPTQ quantizes the columns of
a layer's weight one at a time, and after each it moves the columns not yet quantized
to cancel the error just made on the layer's output ``W X^T`` for the calibration
inputs ``X``: with ``H = X^T X`` and the upper Cholesky factor ``U`` of ``H^-1``, the error
``(w - q) / U_ii`` of column ``i`` is spread over the later columns along row ``i`` of ``U``
(Optimal Brain Quantization; the same update as SparseGPT's, with a rounded weight in
place of a pruned one). Columns are handled in blocks whose updates to the rest are
applied lazily, and per-group scales are chosen from the weights as updated when the
group is reached.

:func:`gptq_quantize` is the algorithm on one matrix; :func:`gptq_` quantizes a model's
layers into :class:`~shrinklib.quant.linear.QuantLinear` with statistics from
:mod:`shrinklib.calibration` (one pass, or layer by layer as the paper's code).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize

from shrinklib._checks import (
    check_bool,
    check_instance,
    check_int,
    check_iterable,
    check_module,
    check_number,
    check_positive_int,
    check_tensor,
)
from shrinklib.calibration import input_statistics, inverse_hessian_cholesky, sequential_statistics
from shrinklib.quant.clipping import search_clip
from shrinklib.quant.configs import WeightOnly, check_weight_only
from shrinklib.quant.linear import QuantLinear, check_layers_fit
from shrinklib.quant.primitives import check_group_size, choose_qparams, dequantize, qrange
from shrinklib.utils import FilterFn, replace_modules_, weighted_modules


@torch.no_grad()
def gptq_quantize(weight: torch.Tensor, gram: torch.Tensor, bits: int = 4, *, group_size: int | None = None,
                  symmetric: bool = False, blocksize: int = 128, percdamp: float = 0.01,
                  act_order: bool = False, clip: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(levels, scale, zero_point)`` of ``weight (out, in)`` quantized by GPTQ given ``gram = X^T X``.

    ``levels`` (int16, on the grid of ``bits``/``symmetric``) with ``scale``/``zero_point``
    of shape ``(out, 1)`` (per channel) or ``(out, ceil(in / group_size))``, as
    :func:`~shrinklib.quant.primitives.choose_qparams` gives them. With groups, the block
    size is rounded to a multiple of ``group_size`` so that no group straddles two blocks.

    Two options of the paper's code: ``act_order`` quantizes the columns in order of
    decreasing ``H_ii`` (the inputs with the most energy first, while the most columns are
    left to absorb their error); with groups, every group's grid is then fixed from the
    weights before the first update (its "static groups"), since a group's columns are
    no longer reached together. ``clip`` picks each grid by
    :func:`~shrinklib.quant.clipping.search_clip` (least ``|w - q|^2.4``) instead of min-max.

    ``weight`` and ``gram`` must be finite float tensors, ``blocksize`` an int >= 1,
    ``percdamp`` a finite number >= 0, ``act_order`` and ``clip`` bools. A ``gram`` that is
    not positive definite even once damped (``percdamp=0`` and too few distinct inputs,
    say) raises ``ValueError``.
    """
    qrange(bits, symmetric)
    check_tensor(weight, "weight")
    if weight.ndim != 2:
        raise ValueError(f"weight must be (out, in), got shape {tuple(weight.shape)}")
    rows, cols = weight.shape
    if check_instance("gram", gram, torch.Tensor).shape != (cols, cols):
        raise ValueError(f"gram must be ({cols}, {cols}) for a weight of shape {tuple(weight.shape)}, "
                         f"got {tuple(gram.shape)}")
    if not torch.isfinite(gram).all():
        raise ValueError("gram holds inf or nan: the calibration inputs were not finite")
    check_int("blocksize", blocksize, minimum=1, what=">= 1")
    check_number("percdamp", percdamp, low=0, what=">= 0")
    check_bool("act_order", act_order)
    check_bool("clip", clip)
    if group_size is not None:
        check_group_size(group_size)
        blocksize = group_size * max(1, blocksize // group_size)
    W = weight.detach().to(torch.float64).clone()
    H = gram.to(W.device)
    order = torch.argsort(torch.diag(H), descending=True, stable=True) if act_order \
        else torch.arange(cols, device=W.device)
    if act_order:
        W, H = W[:, order], H[order][:, order]
    try:
        Hinv, dead = inverse_hessian_cholesky(H, percdamp)
    except torch.linalg.LinAlgError as error:
        raise ValueError(f"gram is not positive definite with percdamp={percdamp}, so GPTQ cannot invert it "
                         "(a larger percdamp damps it more)") from error
    W[:, dead] = 0
    levels = torch.zeros(rows, cols, dtype=torch.int16, device=W.device)
    qmin, qmax = qrange(bits, symmetric)

    def grid_of(w: torch.Tensor, groups: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if clip:
            return search_clip(w.float(), bits, symmetric, group_size=groups)
        return choose_qparams(w.float(), bits, symmetric, **({"group_size": groups} if groups else {"axis": 0}))

    static = group_size is None or act_order  # every grid known before the first column
    if static:  # per channel, or act_order's static groups: from the weights in their own column order
        unpermuted = torch.empty_like(W)
        unpermuted[:, order] = W
        scale, zero_point = grid_of(unpermuted, group_size)
        group_of = order // group_size if group_size is not None else torch.zeros_like(order)
    scales, zero_points = [], []
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            if static:
                g = int(group_of[i1 + i])
                s, z = scale[:, g], zero_point[:, g].float()
            else:
                if (i1 + i) % group_size == 0:  # a group's grid from its weights as updated so far
                    scales_g, zeros_g = grid_of(W1[:, i:i + group_size])
                    scales.append(scales_g)
                    zero_points.append(zeros_g)
                s, z = scales[-1][:, 0], zero_points[-1][:, 0].float()
            # quantize() of one column, inlined: this loop runs once per input feature of every layer
            q = (torch.round(W1[:, i].float() / s) + z).clamp(qmin, qmax)
            levels[:, int(order[i1 + i])] = q.to(torch.int16)
            err = (W1[:, i] - ((q - z) * s).double()) / Hinv1[i, i]
            W1[:, i:] -= err[:, None] @ Hinv1[i, i:][None, :]
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    if not static:
        scale, zero_point = torch.cat(scales, dim=1), torch.cat(zero_points, dim=1)
    return levels, scale, zero_point


class _Dequantized(nn.Module):
    """A parametrization of a Linear's weight: GPTQ's levels, dequantized, in place of the float weight it keeps."""

    def __init__(self, levels: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, group_size: int | None):
        super().__init__()
        self.levels, self.scale, self.zero_point, self.group_size = levels, scale, zero_point, group_size

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        weight = dequantize(self.levels, self.scale, self.zero_point, group_size=self.group_size)
        return weight.to(original.dtype)


def gptq_(model: nn.Module, batches: Iterable[dict], config: WeightOnly = WeightOnly(4, 128, symmetric=False), *,
          blocksize: int = 128, percdamp: float = 0.01, filter_fn: FilterFn | None = None,
          max_batches: int | None = None, sequential: bool = False, act_order: bool = False,
          clip: bool = False) -> nn.Module:
    """Quantize every picked Linear of ``model`` (default: the body's, not the head) with GPTQ.

    ``config`` gives the bits, groups and grid; the layers become
    :class:`~shrinklib.quant.linear.QuantLinear` holding GPTQ's levels. ``sequential=True``
    calibrates one transformer layer at a time on the outputs of the layers already
    quantized, as the paper's code does; ``False`` reads every layer's Gram matrix from
    the float model in one pass. ``act_order`` and ``clip`` are :func:`gptq_quantize`'s.

    ``model`` must be a ``torch.nn.Module``, ``batches`` an iterable of dicts of model
    inputs, ``config`` a :class:`WeightOnly`, ``blocksize`` an int >= 1, ``percdamp`` a
    finite number >= 0, ``max_batches`` an int >= 1 or ``None``, the flags bools. Every
    picked layer is checked before any is changed, and the model changes only once every
    layer is quantized: a layer whose Gram matrix GPTQ cannot invert raises ``ValueError``
    naming it and leaves the model as it was. (While ``sequential`` runs, the layers already
    quantized compute with their new weights through a parametrization that keeps the float
    weight, which is put back if a later layer fails.)
    """
    check_module(model)
    check_iterable("batches", batches)
    check_weight_only(config, "GPTQ")
    check_int("blocksize", blocksize, minimum=1, what=">= 1")
    check_number("percdamp", percdamp, low=0, what=">= 0")
    for name, flag in (("sequential", sequential), ("act_order", act_order), ("clip", clip)):
        check_bool(name, flag)
    if max_batches is not None:
        check_positive_int("max_batches", max_batches)
    modules = weighted_modules(model, filter_fn, what="quantizable layer")
    check_layers_fit(modules, config)
    quantized: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    provisional: list[nn.Module] = []  # layers computing with their quantized weight until the swap

    def quantize_layers(stats):
        for fqn, s in stats.items():
            try:
                quantized[fqn] = gptq_quantize(modules[fqn].weight, s.gram, config.bits, group_size=config.group_size,
                                               symmetric=config.symmetric, blocksize=blocksize, percdamp=percdamp,
                                               act_order=act_order, clip=clip)
            except ValueError as error:
                raise ValueError(f"GPTQ cannot quantize {fqn}: {error}") from error
            if sequential:  # the layers after it see the quantized weight
                parametrize.register_parametrization(modules[fqn], "weight",
                                                     _Dequantized(*quantized[fqn], config.group_size))
                provisional.append(modules[fqn])

    def to_quant_linear(module: nn.Linear, fqn: str) -> QuantLinear:
        layer = QuantLinear.from_linear(module, config)
        layer.set_quantized(*quantized[fqn])
        return layer

    try:
        if sequential:
            sequential_statistics(model, batches, modules, quantize_layers, gram=True, max_batches=max_batches)
        else:
            quantize_layers(input_statistics(model, batches, modules, gram=True, max_batches=max_batches))
        return replace_modules_(model, to_quant_linear, filter_fn=lambda m, fqn: fqn in quantized)
    finally:  # the float layers get their own weights back: swapped out on success, left as they were on failure
        for module in provisional:
            if len(module.parametrizations["weight"]) > 1:  # the layer's own parametrizations stay
                del module.parametrizations["weight"][-1]
            else:
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
