"""SmoothQuant: W8A8 for language models by moving activation outliers into the weights
(Xiao et al., 2023, "SmoothQuant: Accurate and Efficient Post-Training Quantization for
Large Language Models").

Large models have a few input channels whose activations are tens of times larger than
the rest, in every token, so an int8 grid per token wastes its levels on them. Weights
are easy to quantize. Since ``y = W x = (W diag(s)) (x / s)`` for any positive ``s``, a
per-channel ``s_j = max|x_j|^alpha / max|W_:j|^(1 - alpha)`` divides the outlier channels
down and multiplies the matching weight columns up; ``alpha = 0.5`` splits the difficulty
evenly. Then both are quantized to int8 (:class:`~shrinklib.quant.configs.Int8Dynamic`,
per-token activations, or :class:`~shrinklib.quant.configs.Int8Static`).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from shrinklib._checks import check_instance, check_iterable, check_module, check_number, check_positive_int
from shrinklib.calibration import input_statistics
from shrinklib.quant.configs import Int8Dynamic, Int8Static
from shrinklib.quant.linear import QuantLinear, check_layers_fit
from shrinklib.quant.static import calibrate_
from shrinklib.utils import FilterFn, replace_modules_, weighted_modules


def check_alpha(alpha) -> float:
    """SmoothQuant's migration strength: a number in ``[0, 1]``, else ``ValueError``."""
    return check_number("alpha", alpha, low=0, high=1, what="in [0, 1]")


def smoothing_factors(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """``s_j = max|x_j|^alpha / max_i |W_ij|^(1 - alpha)``; 1 where a channel never fired or has no weight.

    ``act_absmax`` and ``weight`` are tensors; ``alpha`` is a number in ``[0, 1]``.
    """
    check_alpha(alpha)
    check_instance("act_absmax", act_absmax, torch.Tensor)
    check_instance("weight", weight, torch.Tensor)
    if weight.ndim != 2:
        raise ValueError(f"weight must be (out, in), got shape {tuple(weight.shape)}")
    if act_absmax.shape != (weight.shape[1],):
        raise ValueError(f"act_absmax must have shape ({weight.shape[1]},), got {tuple(act_absmax.shape)}")
    a = act_absmax.double()
    w = weight.detach().abs().amax(dim=0).double().to(a.device)
    s = a.pow(alpha) / w.pow(1 - alpha)
    return torch.where((a > 0) & (w > 0) & torch.isfinite(s), s, torch.ones_like(s)).clamp_min(1e-5).float()


def smoothquant_(model: nn.Module, batches: Iterable[dict], config: Int8Dynamic | Int8Static = Int8Dynamic(), *,
                 alpha: float = 0.5, filter_fn: FilterFn | None = None, max_batches: int | None = None) -> nn.Module:
    """Smooth and quantize every picked Linear (default: the body's, not the head) to W8A8.

    The activations' per-channel maxima come from the float model on ``batches``. With
    :class:`Int8Static` the batches are read a second time to calibrate the smoothed
    inputs' ranges, so pass a list, not an iterator.

    ``model`` must be a ``torch.nn.Module``, ``batches`` an iterable of dicts of model
    inputs, ``alpha`` a number in ``[0, 1]``, ``max_batches`` an int >= 1 or ``None``. Every
    layer is built before any is swapped, and if the calibration of the static scales
    fails (inputs holding inf or nan, say), the float layers are put back: a failed call
    leaves the model as it was.
    """
    check_module(model)
    check_iterable("batches", batches)
    if not isinstance(config, (Int8Dynamic, Int8Static)):
        raise TypeError(f"SmoothQuant computes in int8: config must be Int8Dynamic or Int8Static, "
                        f"got {type(config).__name__}")
    check_alpha(alpha)
    if max_batches is not None:
        check_positive_int("max_batches", max_batches)
    batches = list(batches) if isinstance(config, Int8Static) else batches
    modules = weighted_modules(model, filter_fn, what="quantizable layer")
    check_layers_fit(modules, config)
    stats = input_statistics(model, batches, modules, max_batches=max_batches)
    factors = {fqn: smoothing_factors(stats[fqn].abs_max, m.weight, alpha) for fqn, m in modules.items()}
    replace_modules_(model, lambda m, fqn: QuantLinear.from_linear(m, config, smoothing=factors[fqn]),
                     filter_fn=lambda m, fqn: fqn in factors)
    if isinstance(config, Int8Static):
        try:
            calibrate_(model, batches, config, max_batches=max_batches)
        except BaseException:  # the float layers back, untouched: they were only unhooked from the model
            for fqn, module in modules.items():
                model.set_submodule(fqn, module)
            raise
    return model
