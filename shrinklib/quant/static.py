"""Static int8 activations: one input scale per layer, fixed beforehand on calibration batches.

A :class:`~shrinklib.quant.linear.QuantLinear` with an :class:`~shrinklib.quant.configs.Int8Static`
config quantizes every token of its input on one grid, ``input_scale``. :func:`calibrate_`
chooses it: it reads the range of each layer's inputs on a few batches, by the range
method of :mod:`shrinklib.quant.ranges` (min-max, percentile, MSE or entropy), and turns it
into a symmetric int8 scale with :func:`~shrinklib.quant.primitives.qparams_from_range`.
Static W8A8 as in Jacob et al. (2018), "Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference"; the range methods as in Nagel et al. (2021),
"A White Paper on Neural Network Quantization", and Wu et al. (2020), "Integer
Quantization for Deep Learning Inference".
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from shrinklib.calibration import run_batches
from shrinklib.data import model_inputs
from shrinklib.quant.configs import Int8Static
from shrinklib.quant.linear import QuantLinear, quant_layers
from shrinklib.quant.primitives import qparams_from_range
from shrinklib.quant.ranges import calibrate_range

CALIBRATION_SAMPLES = 1 << 20  # values of each layer's input kept for the range search (min and max are exact)


@torch.no_grad()
def calibrate_(model: nn.Module, batches: Iterable[dict], config: Int8Static | None = None, *,
               max_batches: int | None = None) -> nn.Module:
    """Fix the input scale of every static :class:`QuantLinear` from the activations on ``batches``.

    The range of each layer's inputs comes from its config's ``method`` (the
    :class:`Int8Static` that :func:`~shrinklib.quant.linear.quantize_` was called with);
    a ``config`` given here replaces the layers' configs. Min and max are tracked exactly,
    the other methods see up to a million values of each layer's input, whole tokens
    sampled evenly (so that every feature, outlier features included, is in the sample).
    While they are read, the layers compute with float activations (and their integer
    weights), so no layer's range is distorted by the not yet calibrated layers before it.
    """
    if config is not None and not isinstance(config, Int8Static):
        raise TypeError(f"config must be an Int8Static or None, got {type(config).__name__}")
    layers = [m for m in quant_layers(model) if isinstance(m.config, Int8Static)]
    if not layers:
        raise ValueError("the model has no static QuantLinear layer; call quantize_(model, Int8Static()) first")
    if config is not None:
        for module in layers:
            module.config = config
    seen: dict[QuantLinear, list[torch.Tensor]] = {m: [] for m in layers}
    extremes: dict[QuantLinear, torch.Tensor] = {}

    def hook(module, args):
        tokens = module.prepared_input(args[0].detach()).float().reshape(-1, module.in_features)
        x = tokens.flatten()
        low_high = torch.stack([x.min(), x.max()])
        old = extremes.get(module)
        extremes[module] = low_high if old is None else torch.stack([old[0].minimum(low_high[0]),
                                                                     old[1].maximum(low_high[1])])
        if module.config.method != "minmax":  # whole tokens, every feature of each: a stride over the flat values
            wanted = max(1, (CALIBRATION_SAMPLES // 8) // module.in_features)  # could skip features entirely
            seen[module].append(tokens[:: -(-tokens.shape[0] // wanted)].flatten())

    handles = [m.register_forward_pre_hook(hook) for m in layers]
    for module in layers:
        module.observing = True
    try:
        run_batches(model, batches, lambda batch: model(**model_inputs(batch)), handles=handles,
                    max_batches=max_batches, what="calibration")
    finally:
        for module in layers:
            module.observing = False
    for module in layers:
        lo, hi = extremes[module]
        method = module.config.method
        if method != "minmax":
            sample = torch.cat(seen[module])[:CALIBRATION_SAMPLES]
            lo, hi = calibrate_range(sample, method, bits=8, symmetric=True, percentile=module.config.percentile)
        scale, _ = qparams_from_range(lo, hi, 8, symmetric=True)
        module.input_scale.copy_(scale)  # symmetric: the largest magnitude maps to level 127
    return model
