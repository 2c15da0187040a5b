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

from shrinklib._checks import check_iterable, check_module, check_positive_int
from shrinklib.calibration import run_batches
from shrinklib.data import model_inputs
from shrinklib.quant.configs import Int8Static
from shrinklib.quant.linear import QuantLinear
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

    ``model`` must be a ``torch.nn.Module``, ``batches`` an iterable of dicts of model
    inputs, ``config`` an :class:`Int8Static` or ``None`` and ``max_batches`` an int >= 1 or
    ``None``. The scales (and configs) are set only once every layer's range is known: a
    layer that saw no input, or inputs holding inf or nan, raises ``ValueError`` and leaves
    the model as it was.
    """
    check_module(model)
    check_iterable("batches", batches)
    if config is not None and not isinstance(config, Int8Static):
        raise TypeError(f"config must be an Int8Static or None, got {type(config).__name__}")
    if max_batches is not None:
        check_positive_int("max_batches", max_batches)
    layers = {fqn: m for fqn, m in model.named_modules()
              if isinstance(m, QuantLinear) and isinstance(m.config, Int8Static)}
    if not layers:
        raise ValueError("the model has no static QuantLinear layer; call quantize_(model, Int8Static()) first")
    configs = {m: m.config if config is None else config for m in layers.values()}  # set on the layers at the end
    seen: dict[QuantLinear, list[torch.Tensor]] = {m: [] for m in layers.values()}
    extremes: dict[QuantLinear, torch.Tensor] = {}

    def hook(module, args):
        tokens = module.prepared_input(args[0].detach()).float().reshape(-1, module.in_features)
        x = tokens.flatten()
        low_high = torch.stack([x.min(), x.max()])
        old = extremes.get(module)
        extremes[module] = low_high if old is None else torch.stack([old[0].minimum(low_high[0]),
                                                                     old[1].maximum(low_high[1])])
        if configs[module].method != "minmax":  # whole tokens, every feature of each: a stride over the flat values
            wanted = max(1, (CALIBRATION_SAMPLES // 8) // module.in_features)  # could skip features entirely
            seen[module].append(tokens[:: -(-tokens.shape[0] // wanted)].flatten())

    handles = [m.register_forward_pre_hook(hook) for m in layers.values()]
    for module in layers.values():
        module.observing = True
    try:
        run_batches(model, batches, lambda batch: model(**model_inputs(batch)), handles=handles,
                    max_batches=max_batches, what="calibration")
    finally:
        for module in layers.values():
            module.observing = False
    for fqn, module in layers.items():
        if module not in extremes:
            raise ValueError(f"{fqn} saw no input on the calibration batches: its range cannot be calibrated")
        if not torch.isfinite(extremes[module]).all():
            raise ValueError(f"the inputs of {fqn} hold inf or nan on the calibration batches: "
                             "no int8 range covers them")
    scales = {}
    for module in layers.values():
        lo, hi = extremes[module]
        method = configs[module].method
        if method != "minmax":
            sample = torch.cat(seen[module])[:CALIBRATION_SAMPLES]
            lo, hi = calibrate_range(sample, method, bits=8, symmetric=True, percentile=configs[module].percentile)
        scales[module] = qparams_from_range(lo, hi, 8, symmetric=True)[0]  # symmetric: the largest magnitude -> 127
    for module, scale in scales.items():  # every range found: now change the layers
        module.config = configs[module]
        module.input_scale.copy_(scale)
    return model
