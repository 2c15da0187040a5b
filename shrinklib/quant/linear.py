"""Quantized linear layers: integer weights stored, and three ways to compute with them.

:func:`quantize_` swaps the picked ``nn.Linear`` layers of a model for :class:`QuantLinear`
layers configured by one of:

* :class:`WeightOnly` (``bits`` 2-8, per channel or per group): the weights are stored as
  integers and dequantized to the activations' dtype for the matmul. Only memory and
  disk shrink on the CPU; on a GPU the Triton W8A16 / W4A16 kernels read the integers
  directly. 2-4-bit levels are stored two to a byte.
* :class:`Int8Dynamic`: int8 weights per output channel and int8 activations per token,
  quantized at run time from each row's absolute maximum; ``int8 x int8 -> int32`` on
  ``torch._int_mm`` (CPU; :func:`int8_matmul` keeps it exact on CPUs without VNNI) or the
  W8A8 Triton kernel (GPU). The dynamic quantization of Q8BERT's inference and of
  ``torch.ao.quantization.quantize_dynamic`` (Zafrir et al., 2019, "Q8BERT: Quantized 8Bit
  BERT").
* :class:`LLMInt8`: dynamic int8 except the few input features with outliers, which are
  multiplied in floating point (Dettmers et al., 2022).
* :class:`Int8Static`: the same int8 matmul, but each layer's activations share one scale
  fixed beforehand by :func:`calibrate_` on calibration batches (range by min-max,
  percentile, MSE or entropy; see :mod:`shrinklib.quant.ranges`). Static W8A8 as in Jacob
  et al. (2018), "Quantization and Training of Neural Networks for Efficient
  Integer-Arithmetic-Only Inference".

Every layer stores integers plus fp32 scales in buffers, so :func:`shrinklib.save` /
:func:`shrinklib.load` round-trip it bit-exact, and :func:`shrinklib.measure.size_on_disk`
sees the smaller weights.
"""
from __future__ import annotations

import functools
import threading
import weakref
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn
from torch.nn import functional as F

from shrinklib.kernels.int4_weight import pack_int4, unpack_int4, w4a16_matmul
from shrinklib.kernels.int8_int8 import quantize_per_token, w8a8_matmul
from shrinklib.kernels.int8_weight import w8a16_matmul
from shrinklib.quant.primitives import (
    check_bits,
    check_group_size,
    num_groups,
    choose_qparams,
    dequantize,
    qparams_from_range,
    qrange,
    quantize,
    storage_dtype,
)
from shrinklib.quant.ranges import RANGE_METHODS, calibrate_range
from shrinklib.utils import FilterFn, matching_modules, replace_modules_

MODES = ("weight_only", "dynamic", "static", "llm_int8")
CALIBRATION_SAMPLES = 1 << 20  # values of each layer's input kept for the range search (min and max are exact)


@dataclass(frozen=True)
class WeightOnly:
    """Integer weights (``bits``), one scale per output channel or per ``group_size`` inputs."""

    bits: int = 8
    group_size: int | None = None
    symmetric: bool = True

    def __post_init__(self):
        check_bits(self.bits)
        if self.group_size is not None:
            check_group_size(self.group_size)


@dataclass(frozen=True)
class Int8Dynamic:
    """int8 weights per output channel; int8 activations per token, scaled at run time."""


@dataclass(frozen=True)
class Int8Static:
    """int8 weights per output channel; int8 activations with one calibrated scale per layer."""

    method: str = "minmax"
    percentile: float = 99.99

    def __post_init__(self):
        if self.method not in RANGE_METHODS:
            raise ValueError(f"method must be one of {RANGE_METHODS}, got {self.method!r}")


@dataclass(frozen=True)
class LLMInt8:
    """LLM.int8(): dynamic int8, except the input features where some token reaches ``threshold``.

    Dettmers et al. (2022), "LLM.int8(): 8-bit Matrix Multiplication for Transformers at
    Scale": a few feature dimensions carry outliers of magnitude 6 and more; those columns
    of the activations are multiplied in floating point (with the int8 weights dequantized),
    the rest in int8 with per-token and per-channel scales (vector-wise quantization).
    """

    threshold: float = 6.0

    def __post_init__(self):
        if not self.threshold > 0:
            raise ValueError(f"threshold must be > 0, got {self.threshold!r}")


QuantConfig = WeightOnly | Int8Dynamic | Int8Static | LLMInt8
CONFIGS = (WeightOnly, Int8Dynamic, Int8Static, LLMInt8)


def _packed(bits: int) -> bool:
    return bits <= 4


@functools.cache
def cpu_int_mm_is_exact() -> bool:
    """Whether ``torch._int_mm`` computes int8 products exactly on this CPU (checked once, on a probe).

    oneDNN's int8 kernel for x86 CPUs without VNNI (AVX2, and AVX-512 before Cascade Lake:
    AMD Zen 2 and 3, Skylake and older Intel) multiplies unsigned by signed bytes and adds
    adjacent pairs into 16-bit integers with saturation (``vpmaddubsw``). With weights
    beyond +-64 the pair sums overflow and most entries of the product come back wrong,
    silently. CPUs with VNNI (AVX512-VNNI, AVX-VNNI) accumulate in 32 bits and are exact.
    """
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (32, 64), generator=g, dtype=torch.int8)
    b = torch.randint(-128, 128, (48, 64), generator=g, dtype=torch.int8)
    return torch.equal(torch._int_mm(a, b.t()), a.int() @ b.int().t())


def int8_matmul(x_q: torch.Tensor, w_q: torch.Tensor) -> torch.Tensor:
    """Exact ``int32`` product ``x_q @ w_q.T`` of 2-D int8 matrices (``torch._int_mm`` on the CPU).

    Where :func:`cpu_int_mm_is_exact` is false, each weight is split into two halves of at
    most 64 in magnitude, ``w = floor(w / 2) + (w - floor(w / 2))``, whose products cannot
    saturate, and the two are added: exact, at twice the multiply-adds. (The same
    saturation is why FBGEMM's x86 dynamic quantization keeps activations to 7 bits,
    ``reduce_range=True``.)
    """
    if x_q.device.type == "cpu" and not cpu_int_mm_is_exact():
        high = w_q >> 1  # floor(w / 2): an arithmetic shift
        return torch._int_mm(x_q, high.t()) + torch._int_mm(x_q, (w_q - high).t())
    return torch._int_mm(x_q, w_q.t())


class _LastTokenQuantization(threading.local):
    """The per-token int8 quantization of the last input, reused while that same tensor comes back.

    Q, K and V (and a gated MLP's gate and up projections) read one hidden-state tensor;
    quantizing it once instead of three times removes two of the elementwise passes that,
    next to ``torch._int_mm``, take most of the CPU time of the dynamic int8 path. The
    cache holds only a weak reference, so a freed tensor never matches, and a tensor
    changed in place is caught by its version counter. Inference tensors have no version
    counter: under ``torch.inference_mode`` an input overwritten in place between two
    layers that read it would be missed (no transformer block does that).
    """

    def __init__(self):
        self.source, self.version, self.result = None, None, None

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        version = None if x.is_inference() else x._version
        if self.source is not None and self.source() is x and self.version == version:
            return self.result
        self.result = quantize_per_token(x.reshape(-1, x.shape[-1]))
        self.source, self.version = weakref.ref(x), version
        return self.result


_last_token_quantization = _LastTokenQuantization()


class QuantLinear(nn.Module):
    """A Linear layer whose weight is stored as integers (see the module docstring for the modes)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, mode: str = "weight_only",
                 bits: int = 8, group_size: int | None = None, symmetric: bool = True, smoothed: bool = False,
                 threshold: float = 6.0):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        check_bits(bits)
        if mode != "weight_only" and (bits != 8 or group_size is not None or not symmetric):
            raise ValueError(f"mode {mode!r} computes int8 x int8: it needs bits=8, symmetric, per channel")
        if group_size is not None:
            check_group_size(group_size)
        if _packed(bits) and in_features % 2:
            raise ValueError(f"{bits}-bit levels are stored two to a byte: in_features must be even, got {in_features}")
        self.in_features, self.out_features = in_features, out_features
        self.mode, self.bits, self.group_size, self.symmetric = mode, bits, group_size, symmetric
        self.smoothed, self.threshold = smoothed, float(threshold)
        stored = (out_features, in_features // 2) if _packed(bits) else (out_features, in_features)
        dtype = torch.uint8 if _packed(bits) else storage_dtype(bits, symmetric)
        params = (out_features, num_groups(in_features, group_size)) if group_size else (out_features, 1)
        self.register_buffer("qweight", torch.zeros(stored, dtype=dtype))
        self.register_buffer("scale", torch.ones(params))
        self.register_buffer("zero_point", torch.zeros(params, dtype=torch.int32))
        if mode == "static":
            self.register_buffer("input_scale", torch.ones(()))
        if smoothed:  # y = (W diag(s)) (x / s): the weight is stored scaled, the input multiplied by 1/s
            self.register_buffer("input_multiplier", torch.ones(in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.observing = False  # set by calibrate_: compute with float activations while their range is read
        self.use_kernel: bool | None = None  # None: the Triton kernels on a GPU, torch on the CPU

    @classmethod
    def from_float(cls, linear: nn.Linear, config: QuantConfig, smoothing: torch.Tensor | None = None) -> "QuantLinear":
        """Quantize ``linear`` by ``config``; with ``smoothing`` ``s`` (in_features,), store ``W diag(s)`` and divide inputs by ``s``.

        Per-input-channel smoothing moves quantization difficulty between activations and
        weights (SmoothQuant, AWQ). The papers fold ``1/s`` into the preceding normalization
        or layer; here the layer keeps it as one elementwise multiply, which works for any
        model and gives the same outputs.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_float needs an nn.Linear, got {type(linear).__name__}")
        if smoothing is not None and (smoothing.shape != (linear.in_features,) or not torch.all(smoothing > 0)):
            raise ValueError(f"smoothing must be positive, of shape ({linear.in_features},), "
                             f"got shape {tuple(smoothing.shape)}")
        args = (linear.in_features, linear.out_features, linear.bias is not None)
        smoothed = smoothing is not None
        if isinstance(config, WeightOnly):
            module = cls(*args, "weight_only", config.bits, config.group_size, config.symmetric, smoothed)
        elif isinstance(config, (Int8Dynamic, Int8Static)):
            mode = "dynamic" if isinstance(config, Int8Dynamic) else "static"
            module = cls(*args, mode, smoothed=smoothed)
        elif isinstance(config, LLMInt8):
            module = cls(*args, "llm_int8", smoothed=smoothed, threshold=config.threshold)
        else:
            raise TypeError(f"config must be one of {[c.__name__ for c in CONFIGS]}, got {type(config).__name__}")
        module.to(linear.weight.device)
        weight = linear.weight.detach().float()
        if smoothed:
            s = smoothing.to(weight.device).float()
            weight = weight * s[None, :]
            module.input_multiplier.copy_(1 / s)
        module.set_weight(weight)
        if linear.bias is not None:
            module.bias.data.copy_(linear.bias.detach().float())
        return module

    def prepared_input(self, x: torch.Tensor) -> torch.Tensor:
        """The input as the integer matmul sees it: divided by the smoothing factors, if any."""
        return x * self.input_multiplier.to(x.dtype) if self.smoothed else x

    def set_weight(self, weight: torch.Tensor) -> None:
        """Quantize a float ``weight`` (out, in) into this layer's buffers."""
        if weight.shape != (self.out_features, self.in_features):
            raise ValueError(f"weight must have shape {(self.out_features, self.in_features)}, got {tuple(weight.shape)}")
        w = weight.detach().float()
        if self.group_size:
            scale, zero_point = choose_qparams(w, self.bits, self.symmetric, group_size=self.group_size)
        else:
            scale, zero_point = choose_qparams(w, self.bits, self.symmetric, axis=0)
        q = quantize(w, scale, zero_point, self.bits, self.symmetric, group_size=self.group_size)
        self.set_quantized(q, scale, zero_point)

    def set_quantized(self, levels: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> None:
        """Store integer ``levels`` (out, in) with their ``scale`` and ``zero_point`` (per channel or group).

        For methods that choose the levels themselves (GPTQ) rather than by rounding the
        final weight. ``levels`` lie on this layer's grid (``qrange(bits, symmetric)``).
        """
        qmin, qmax = qrange(self.bits, self.symmetric)
        if levels.shape != (self.out_features, self.in_features):
            raise ValueError(f"levels must have shape {(self.out_features, self.in_features)}, got {tuple(levels.shape)}")
        if levels.numel() and (int(levels.min()) < qmin or int(levels.max()) > qmax):
            raise ValueError(f"levels must lie in {qmin}..{qmax} for {self.bits} bits")
        q, zero_point = levels.to(torch.int16), zero_point.to(torch.int32)
        if _packed(self.bits):  # unsigned levels 0..15, two to a byte; a symmetric grid is shifted by its offset
            offset = -qmin
            q, zero_point = q + offset, zero_point + offset
            self.qweight.copy_(pack_int4(q))
        else:
            self.qweight.copy_(q.to(self.qweight.dtype))
        self.scale.copy_(scale.reshape(self.scale.shape))
        self.zero_point.copy_(zero_point.reshape(self.zero_point.shape))

    def levels(self) -> torch.Tensor:
        """The stored integer levels, unpacked (0..15 as uint8 when they were packed, with a shifted zero point)."""
        return unpack_int4(self.qweight) if _packed(self.bits) else self.qweight

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The float weight the integers stand for (``W diag(s)`` for a smoothed layer)."""
        scale = self.scale if self.group_size else self.scale.reshape(-1, 1)
        zero_point = self.zero_point if self.group_size else self.zero_point.reshape(-1, 1)
        return dequantize(self.levels(), scale, zero_point, group_size=self.group_size, dtype=dtype)

    def rebuild_kwargs(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.bias is not None,
                "mode": self.mode, "bits": self.bits, "group_size": self.group_size, "symmetric": self.symmetric,
                "smoothed": self.smoothed, "threshold": self.threshold}

    def _kernel_fits(self, x: torch.Tensor) -> bool:
        """Whether a Triton kernel computes this layer: W8A16 (8-bit per channel), W4A16 (4-bit groups), W8A8."""
        wanted = x.is_cuda if self.use_kernel is None else self.use_kernel
        if not wanted or self.observing or x.dtype not in (torch.float16, torch.float32) or self.mode == "llm_int8":
            return False
        if self.mode != "weight_only":
            return True
        if self.bits == 8:
            return self.symmetric and self.group_size is None
        return self.bits == 4 and self.group_size is not None and self.group_size % 2 == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prepared_input(x)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        kernel = self._kernel_fits(x)
        if self.mode == "weight_only" or self.observing:
            if not kernel:
                return F.linear(x, self.dequantized_weight(x.dtype), bias)
            if self.bits == 8:
                y = w8a16_matmul(x, self.qweight, self.scale.reshape(-1))
            else:
                y = w4a16_matmul(x, self.qweight, self.scale, self.zero_point, self.group_size)
            return y if bias is None else y + bias
        x2 = x.reshape(-1, self.in_features)
        outliers = None
        if self.mode == "llm_int8":
            outliers = (x2.abs() >= self.threshold).any(dim=0)  # feature columns with an outlier in some token
            x_q, x_scale = quantize_per_token(x2.masked_fill(outliers[None, :], 0))
        elif self.mode == "dynamic":
            x_q, x_scale = _last_token_quantization(x)
        else:
            x_scale = self.input_scale.expand(x2.shape[0]).contiguous()
            x_q = torch.round(x2.float() / self.input_scale).clamp(-128, 127).to(torch.int8)
        if kernel:
            y = w8a8_matmul(x_q, x_scale, self.qweight, self.scale.reshape(-1))
            if self.bias is not None:
                y = y + self.bias
        else:  # one new float tensor, rescaled in place: fresh (M, N) buffers cost more than the arithmetic
            y = int8_matmul(x_q, self.qweight).float().mul_(x_scale[:, None])
            w_scale = self.scale.reshape(-1)
            y = y.mul_(w_scale) if self.bias is None else y.mul_(w_scale).add_(self.bias)
        if outliers is not None and outliers.any():  # the outlier columns in floating point
            w_out = self.qweight[:, outliers].float() * self.scale.reshape(-1, 1)
            y = y + x2[:, outliers].float() @ w_out.T
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        grouping = f"group_size={self.group_size}" if self.group_size else "per channel"
        return (f"in_features={self.in_features}, out_features={self.out_features}, mode={self.mode}, "
                f"bits={self.bits}, {grouping}, {'symmetric' if self.symmetric else 'affine'}"
                + (", smoothed" if self.smoothed else ""))


def check_layers_fit(modules: dict[str, nn.Linear], config: QuantConfig) -> None:
    """Refuse, before any layer changes, a config that one of the ``modules`` cannot take."""
    if not isinstance(config, WeightOnly):
        return
    for fqn, m in modules.items():
        if _packed(config.bits) and m.in_features % 2:
            raise ValueError(f"{config.bits}-bit levels are stored two to a byte; {fqn} has odd in_features")


def quantize_(model: nn.Module, config: QuantConfig, filter_fn: FilterFn | None = None) -> nn.Module:
    """Swap the picked ``nn.Linear`` layers (default: the body's, not the head) for :class:`QuantLinear`.

    Every picked layer is checked against ``config`` before any is changed, so a layer
    that cannot take it (an odd width for levels packed two to a byte, say) leaves the
    model untouched.
    """
    if not isinstance(config, CONFIGS):
        raise TypeError(f"config must be one of {[c.__name__ for c in CONFIGS]}, got {type(config).__name__}")
    picked = [(fqn, m) for fqn, m in matching_modules(model, filter_fn) if isinstance(m, nn.Linear)]
    if not picked:
        raise ValueError("the model has no nn.Linear layer that filter_fn picks: nothing to quantize")
    check_layers_fit(dict(picked), config)
    names = {fqn for fqn, _ in picked}
    replace_modules_(model, lambda m, fqn: fqn in names, lambda m, fqn: QuantLinear.from_float(m, config))
    if isinstance(config, Int8Static):
        model.__dict__["_shrinklib_static_config"] = config
    return model


def quant_layers(model: nn.Module) -> list[QuantLinear]:
    return [m for m in model.modules() if isinstance(m, QuantLinear)]


@torch.no_grad()
def calibrate_(model: nn.Module, batches: Iterable[dict], config: Int8Static | None = None,
               max_batches: int | None = None) -> nn.Module:
    """Fix the input scale of every static :class:`QuantLinear` from the activations on ``batches``.

    The range of each layer's inputs comes from ``config.method`` (default: the config
    :func:`quantize_` was called with); min and max are tracked exactly, the other
    methods see up to a million values of each layer's input, whole tokens sampled evenly
    (so that every feature, outlier features included, is in the sample). While they
    are read, the layers compute with float activations (and their integer weights), so no
    layer's range is distorted by the not yet calibrated layers before it.
    """
    from shrinklib.calibration import run_batches  # the shared hook-and-batches loop

    config = config or model.__dict__.get("_shrinklib_static_config") or Int8Static()
    layers = [m for m in quant_layers(model) if m.mode == "static"]
    if not layers:
        raise ValueError("the model has no static QuantLinear layer; call quantize_(model, Int8Static()) first")
    seen: dict[QuantLinear, list[torch.Tensor]] = {m: [] for m in layers}
    extremes: dict[QuantLinear, torch.Tensor] = {}

    def hook(module, args):
        tokens = module.prepared_input(args[0].detach()).float().reshape(-1, module.in_features)
        x = tokens.flatten()
        low_high = torch.stack([x.min(), x.max()])
        old = extremes.get(module)
        extremes[module] = low_high if old is None else torch.stack([old[0].minimum(low_high[0]),
                                                                     old[1].maximum(low_high[1])])
        if config.method != "minmax":  # whole tokens, every feature of each: a stride over the flat values
            wanted = max(1, (CALIBRATION_SAMPLES // 8) // module.in_features)  # could skip features entirely
            seen[module].append(tokens[:: -(-tokens.shape[0] // wanted)].flatten())

    handles = [m.register_forward_pre_hook(hook) for m in layers]
    for module in layers:
        module.observing = True
    try:
        run_batches(model, batches, lambda batch: model(**{k: v for k, v in batch.items() if k != "labels"}),
                    handles=handles, max_batches=max_batches, what="calibration")
    finally:
        for module in layers:
            module.observing = False
    for module in layers:
        lo, hi = extremes[module]
        if config.method != "minmax":
            sample = torch.cat(seen[module])[:CALIBRATION_SAMPLES]
            lo, hi = calibrate_range(sample, config.method, bits=8, symmetric=True, percentile=config.percentile)
        scale, _ = qparams_from_range(lo, hi, 8, symmetric=True)
        module.input_scale.copy_(scale)  # symmetric: the largest magnitude maps to level 127
    return model
