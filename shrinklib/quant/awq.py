"""AWQ: activation-aware weight quantization (Lin et al., 2024, "AWQ: Activation-aware
Weight Quantization for LLM Compression and Acceleration").

Not all weights matter equally: those that meet large activations carry most of the
output. AWQ protects them without mixed precision by scaling: ``W x = (W diag(s)) (x / s)``,
and a weight column multiplied by ``s_j > 1`` before rounding has a relative rounding
error ``s_j`` times smaller (the group's scale barely changes when one column grows a
little). The factors are ``s = mean|x|^alpha`` per input channel, normalized so that
``sqrt(max(s) min(s)) = 1``, with ``alpha`` searched on a grid in ``[0, 1]`` for the least
error on the layer's output over the calibration inputs. ``alpha = 0`` is plain
round-to-nearest, so AWQ never does worse on that objective.

The output error ``||(W_hat - W) X^T||^2 = tr((W_hat - W) H (W_hat - W)^T)`` is computed
exactly from the Gram matrix ``H = X^T X``, without keeping ``X``. Differences from the
paper's code: the search is per layer (the paper shares one ``s`` between the layers that
read the same input, since it folds ``1/s`` into the norm before them), the ``1/s`` stays
in the layer as a multiply. ``clip=True`` adds the paper's second step: with ``s`` fixed,
each group's range of ``W diag(s)`` is shrunk where that lowers the output error
(:func:`~shrinklib.quant.clipping.search_clip` with the Gram matrix of the scaled inputs,
``H / (s s^T)``).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from shrinklib._checks import (
    check_bool,
    check_instance,
    check_int,
    check_iterable,
    check_module,
    check_positive_int,
    check_tensor,
)
from shrinklib.calibration import InputStats, input_statistics
from shrinklib.quant.clipping import search_clip
from shrinklib.quant.configs import WeightOnly, check_weight_only
from shrinklib.quant.linear import QuantLinear, check_layers_fit
from shrinklib.quant.primitives import fake_quantize_weight, quantize
from shrinklib.utils import FilterFn, replace_modules_, weighted_modules


def output_error(weight: torch.Tensor, approx: torch.Tensor, gram: torch.Tensor) -> float:
    """``||(approx - W) X^T||^2`` from ``gram = X^T X``."""
    delta = (approx.detach().double() - weight.detach().double()).to(gram.device)
    return float(((delta @ gram.double()) * delta).sum())


@torch.no_grad()
def awq_search(weight: torch.Tensor, stats: InputStats, config: WeightOnly,
               grid: int = 20) -> tuple[torch.Tensor, float, dict[float, float]]:
    """``(s, alpha, errors)``: the best smoothing factors, their ``alpha`` and the error for every ``alpha`` tried.

    ``weight`` is a finite float tensor, ``stats`` the :class:`~shrinklib.calibration.InputStats`
    of its inputs (with the Gram matrix), ``config`` a :class:`WeightOnly`, ``grid`` an int >= 1.
    """
    check_tensor(weight, "weight")
    check_instance("stats", stats, InputStats)
    check_weight_only(config, "AWQ")
    check_int("grid", grid, minimum=1, what=">= 1")
    if stats.gram is None or stats.abs_sum is None or not stats.tokens:
        raise ValueError("AWQ needs input statistics with the Gram matrix (input_statistics(..., gram=True))")
    mean_abs = (stats.abs_sum / stats.tokens).float().to(weight.device)
    w = weight.detach().float()
    best, errors = None, {}
    for i in range(grid + 1):
        alpha = i / grid
        s = mean_abs.pow(alpha).clamp_min(1e-4)
        s = s / (s.max() * s.min()).sqrt()
        approx = fake_quantize_weight(w * s[None, :], config.bits, config.symmetric,
                                      group_size=config.group_size) / s[None, :]
        errors[alpha] = output_error(w, approx, stats.gram)
        if best is None or errors[alpha] < errors[best[1]]:
            best = (s, alpha)
    return best[0], best[1], errors


@torch.no_grad()
def awq_clip(weight: torch.Tensor, s: torch.Tensor, gram: torch.Tensor, config: WeightOnly, *, grid: int = 20,
             max_shrink: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(levels, scale, zero_point)`` of ``W diag(s)`` with every group's range searched for the least output error.

    The inputs the scaled weight meets are ``x / s``, so their Gram matrix is ``H / (s s^T)``.
    ``weight``, ``s`` and ``gram`` are tensors, ``config`` a :class:`WeightOnly`; ``grid`` and
    ``max_shrink`` are :func:`~shrinklib.quant.clipping.search_clip`'s.
    """
    check_tensor(weight, "weight")
    check_instance("s", s, torch.Tensor)
    check_instance("gram", gram, torch.Tensor)
    check_weight_only(config, "AWQ")
    s64 = s.detach().double().to(gram.device)
    scaled = weight.detach().float() * s.detach().float()[None, :]
    scale, zero_point = search_clip(scaled, config.bits, config.symmetric, group_size=config.group_size,
                                    gram=gram.double() / (s64[:, None] * s64[None, :]), grid=grid, max_shrink=max_shrink)
    return quantize(scaled, scale, zero_point, config.bits, config.symmetric, group_size=config.group_size), scale, zero_point


def awq_(model: nn.Module, batches: Iterable[dict], config: WeightOnly = WeightOnly(4, 128, symmetric=False), *,
         grid: int = 20, clip: bool = False, filter_fn: FilterFn | None = None,
         max_batches: int | None = None) -> nn.Module:
    """Quantize every picked Linear (default: the body's, not the head) weight-only with AWQ's scaling.

    ``clip=True`` also searches each group's clipping range (see the module's text).
    ``model`` must be a ``torch.nn.Module``, ``batches`` an iterable of dicts of model inputs,
    ``config`` a :class:`WeightOnly`, ``grid`` an int >= 1, ``clip`` a bool and
    ``max_batches`` an int >= 1 or ``None``. Every picked layer is checked against ``config``
    and built before any is changed.
    """
    check_module(model)
    check_iterable("batches", batches)
    check_weight_only(config, "AWQ")
    check_int("grid", grid, minimum=1, what=">= 1")
    check_bool("clip", clip)
    if max_batches is not None:
        check_positive_int("max_batches", max_batches)
    modules = weighted_modules(model, filter_fn, what="quantizable layer")
    check_layers_fit(modules, config)
    stats = input_statistics(model, batches, modules, gram=True, max_batches=max_batches)
    for fqn, s in stats.items():  # before any search: a layer whose inputs are not finite has no best scale
        if not torch.isfinite(s.gram).all():
            raise ValueError(f"the inputs of {fqn} hold inf or nan on the calibration batches: AWQ cannot scale it")
    factors = {fqn: awq_search(m.weight, stats[fqn], config, grid)[0] for fqn, m in modules.items()}

    def to_quant_linear(module: nn.Linear, fqn: str) -> QuantLinear:
        layer = QuantLinear.from_linear(module, config, smoothing=factors[fqn])
        if clip:
            layer.set_quantized(*awq_clip(module.weight, factors[fqn], stats[fqn].gram, config))
        return layer

    return replace_modules_(model, to_quant_linear, filter_fn=lambda m, fqn: fqn in factors)
