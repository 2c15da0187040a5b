"""Quantized linear layers: integer weights stored, and three ways to compute with them.

:func:`quantize_` swaps the picked ``nn.Linear`` layers of a model for :class:`QuantLinear`
layers configured by one of (the configs live in :mod:`shrinklib.quant.configs`):

* :class:`WeightOnly` (``bits`` 2-8, per channel or per group): the weights are stored as
  integers and dequantized to the activations' dtype for the matmul. Only memory and
  disk shrink on the CPU; on a GPU the Triton W8A16 / W4A16 kernels read the integers
  directly. 2-4-bit levels are stored two to a byte.
* :class:`Int8Dynamic`: int8 weights per output channel and int8 activations per token,
  quantized at run time from each row's absolute maximum; ``int8 x int8 -> int32`` on
  :func:`~shrinklib.quant.int_mm.int8_matmul` (CPU: ``torch._int_mm`` where VNNI makes
  it fast, exact fp32 matmuls elsewhere) or the W8A8 Triton kernel (GPU). The dynamic quantization of
  Q8BERT's inference and of ``torch.ao.quantization.quantize_dynamic`` (Zafrir et al.,
  2019, "Q8BERT: Quantized 8Bit BERT").
* :class:`LLMInt8`: dynamic int8 except the few input features with outliers, which are
  multiplied in floating point (Dettmers et al., 2022).
* :class:`Int8Static`: the same int8 matmul, but each layer's activations share one scale
  fixed beforehand by :func:`~shrinklib.quant.static.calibrate_` on calibration batches
  (range by min-max, percentile, MSE or entropy; see :mod:`shrinklib.quant.ranges`).
  Static W8A8 as in Jacob et al. (2018), "Quantization and Training of Neural Networks
  for Efficient Integer-Arithmetic-Only Inference".

A layer keeps its config (``layer.config``); :data:`SCHEMES`, one table keyed by the
config's class, says what the config means: the weight grid and how the activations
are quantized. Every layer stores integers plus fp32 scales in buffers, and its rebuild
arguments are its shape and its config, so :func:`shrinklib.save` / :func:`shrinklib.load`
round-trip it bit-exact, and :func:`shrinklib.measure.size_on_disk` sees the smaller
weights.
"""
from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from shrinklib._checks import check_bool, check_instance, check_module, check_positive_int, check_tensor
from shrinklib.kernels.int4_weight import pack_int4, unpack_int4, w4a16_matmul
from shrinklib.kernels.int8_int8 import quantize_per_token, w8a8_matmul
from shrinklib.kernels.int8_weight import w8a16_matmul
from shrinklib.quant.configs import Int8Dynamic, Int8Static, LLMInt8, QuantConfig, WeightOnly
from shrinklib.quant.int_mm import int8_matmul
from shrinklib.quant.primitives import (
    choose_qparams,
    dequantize,
    num_groups,
    qrange,
    quantize,
    storage_dtype,
)
from shrinklib.rebuild import register_module
from shrinklib.utils import FilterFn, matching_modules, replace_modules_


class SharedInputQuantization:
    """The per-token int8 quantization of the last input, reused while that same tensor comes back.

    Q, K and V (and a gated MLP's gate and up projections) read one hidden-state tensor;
    quantizing it once instead of three times removes two of the elementwise passes that,
    next to ``torch._int_mm``, take most of the CPU time of the dynamic int8 path. The
    dynamic int8 layers that hold one such object as ``input_cache`` share it (see
    :func:`share_input_quantization_`). It keeps only a weak reference to the input, so a
    freed tensor never matches, and a tensor changed in place is caught by its version
    counter. Inference tensors have no version counter: under ``torch.inference_mode`` an
    input overwritten in place between two layers that read it would be missed (no
    transformer block does that). The last entry is replaced whole, so threads sharing
    the object at worst quantize again. A copy (``copy.deepcopy``, pickling) starts empty.
    """

    def __init__(self):
        self.last = None  # (weak reference to the input, its version, (x_q, x_scale))

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        version = None if x.is_inference() else x._version
        last = self.last
        if last is not None and last[0]() is x and last[1] == version:
            return last[2]
        result = quantize_per_token(x.reshape(-1, x.shape[-1]))
        self.last = (weakref.ref(x), version, result)
        return result

    def __reduce__(self):
        return type(self), ()


InputQuantizer = Callable[["QuantLinear", torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]


def per_token_input(layer: "QuantLinear", x: torch.Tensor):
    """:class:`Int8Dynamic`: each token on its own int8 grid, through the layer's ``input_cache`` if it has one."""
    if layer.input_cache is not None:
        return (*layer.input_cache(x), None)
    return (*quantize_per_token(x.reshape(-1, layer.in_features)), None)


def static_input(layer: "QuantLinear", x: torch.Tensor):
    """:class:`Int8Static`: every token on the one grid of the calibrated ``input_scale``."""
    x2 = x.reshape(-1, layer.in_features)
    zero_point = torch.zeros_like(layer.input_scale, dtype=torch.int32)
    x_q = quantize(x2, layer.input_scale, zero_point, 8, symmetric=True)
    return x_q, layer.input_scale.expand(x2.shape[0]).contiguous(), None


def outlier_split_input(layer: "QuantLinear", x: torch.Tensor):
    """:class:`LLMInt8`: per token, with the feature columns where some token reaches the threshold set to 0."""
    x2 = x.reshape(-1, layer.in_features)
    outliers = (x2.abs() >= layer.config.threshold).any(dim=0)  # feature columns with an outlier in some token
    return (*quantize_per_token(x2.masked_fill(outliers[None, :], 0)), outliers)


@dataclass(frozen=True)
class Scheme:
    """What one config class means to :class:`QuantLinear`."""

    weight_grid: Callable[[QuantConfig], tuple[int, int | None, bool]]  # (bits, group_size, symmetric)
    quantize_input: InputQuantizer | None  # (x_q, x_scale, outlier columns or None); None: float activations
    w8a8_kernel: bool = False  # whether the Triton W8A8 kernel computes it on a GPU
    input_scale: bool = False  # whether the layer holds one input scale fixed by calibration


def _int8_grid(config) -> tuple[int, None, bool]:
    return 8, None, True


#: The one dispatch table: config class -> what a :class:`QuantLinear` with that config does.
SCHEMES: dict[type, Scheme] = {
    WeightOnly: Scheme(lambda c: (c.bits, c.group_size, c.symmetric), None),
    Int8Dynamic: Scheme(_int8_grid, per_token_input, w8a8_kernel=True),
    Int8Static: Scheme(_int8_grid, static_input, w8a8_kernel=True, input_scale=True),
    LLMInt8: Scheme(_int8_grid, outlier_split_input),
}
CONFIGS = tuple(SCHEMES)


def check_config(config) -> QuantConfig:
    """``config`` if it is one of :data:`CONFIGS`, else ``TypeError``."""
    if type(config) not in SCHEMES:
        raise TypeError(f"config must be one of {[c.__name__ for c in CONFIGS]}, got {type(config).__name__}")
    return config


def config_to_json(config: QuantConfig) -> dict:
    """``{"kind": "WeightOnly", "bits": 4, ...}``: a config as :func:`shrinklib.save` writes it."""
    return {"kind": type(check_config(config)).__name__, **dataclasses.asdict(config)}


def config_from_json(spec: dict) -> QuantConfig:
    """The config that :func:`config_to_json` wrote (``ValueError`` for a kind or field it does not know)."""
    kinds = {cls.__name__: cls for cls in CONFIGS}
    fields = dict(spec)
    kind = fields.pop("kind", None)
    if kind not in kinds:
        raise ValueError(f"config kind must be one of {list(kinds)}, got {kind!r}")
    unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(kinds[kind])})
    if unknown:
        raise ValueError(f"config {kind} has no field {', '.join(unknown)}")
    return kinds[kind](**fields)


def _packed(bits: int) -> bool:
    return bits <= 4


@register_module
class QuantLinear(nn.Module):
    """A Linear layer whose weight is stored as integers, computing as its ``config`` says.

    ``config`` is a :data:`QuantConfig` (or the dict :func:`config_to_json` writes, the form
    :func:`shrinklib.load` passes); ``bits``, ``group_size`` and ``symmetric`` are the
    weight grid it implies. ``smoothed`` layers store ``W diag(s)`` and multiply their
    input by ``1/s`` (``input_multiplier``). Three attributes are not saved:

    * ``input_cache``: a :class:`SharedInputQuantization` that the dynamic int8 layers
      reading one tensor share, so that they quantize it once (``None``: every call
      quantizes its input). :func:`quantize_` sets it; after :func:`shrinklib.load`, call
      :func:`share_input_quantization_` to set it again (the outputs are the same without).
    * ``use_kernel``: ``None`` runs the Triton kernels on a GPU and torch on the CPU;
      ``True``/``False`` force one (on a CPU the kernels run under the Triton interpreter).
    * ``observing``: while :func:`~shrinklib.quant.static.calibrate_` reads the inputs'
      ranges, the layer computes with float activations (and its integer weights).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 config: QuantConfig | dict = WeightOnly(), smoothed: bool = False):
        super().__init__()
        check_positive_int("in_features", in_features)
        check_positive_int("out_features", out_features)
        check_bool("bias", bias)
        check_bool("smoothed", smoothed)
        config = check_config(config_from_json(config) if isinstance(config, dict) else config)
        bits, group_size, symmetric = SCHEMES[type(config)].weight_grid(config)
        if _packed(bits) and in_features % 2:
            raise ValueError(f"{bits}-bit levels are stored two to a byte: in_features must be even, got {in_features}")
        self.in_features, self.out_features, self.config, self.smoothed = in_features, out_features, config, smoothed
        self.bits, self.group_size, self.symmetric = bits, group_size, symmetric
        stored = (out_features, in_features // 2) if _packed(bits) else (out_features, in_features)
        dtype = torch.uint8 if _packed(bits) else storage_dtype(bits, symmetric)
        params = (out_features, num_groups(in_features, group_size)) if group_size else (out_features, 1)
        self.register_buffer("qweight", torch.zeros(stored, dtype=dtype))
        self.register_buffer("scale", torch.ones(params))
        self.register_buffer("zero_point", torch.zeros(params, dtype=torch.int32))
        if SCHEMES[type(config)].input_scale:
            self.register_buffer("input_scale", torch.ones(()))
        if smoothed:  # y = (W diag(s)) (x / s): the weight is stored scaled, the input multiplied by 1/s
            self.register_buffer("input_multiplier", torch.ones(in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.input_cache: SharedInputQuantization | None = None
        self.use_kernel: bool | None = None
        self.observing = False

    @classmethod
    def from_linear(cls, linear: nn.Linear, config: QuantConfig = WeightOnly(),
                    smoothing: torch.Tensor | None = None) -> "QuantLinear":
        """Quantize ``linear`` by ``config``; with ``smoothing`` ``s`` (in_features,), store ``W diag(s)`` and divide inputs by ``s``.

        Per-input-channel smoothing moves quantization difficulty between activations and
        weights (SmoothQuant, AWQ). The papers fold ``1/s`` into the preceding normalization
        or layer; here the layer keeps it as one elementwise multiply, which works for any
        model and gives the same outputs. ``smoothing`` must be a tensor of finite positive numbers.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear needs an nn.Linear, got {type(linear).__name__}")
        if smoothing is not None:
            check_instance("smoothing", smoothing, torch.Tensor)
            if (smoothing.shape != (linear.in_features,) or not torch.all(smoothing > 0)
                    or not torch.isfinite(smoothing).all()):
                raise ValueError(f"smoothing must be positive and finite, of shape ({linear.in_features},), "
                                 f"got shape {tuple(smoothing.shape)}")
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, check_config(config),
                     smoothed=smoothing is not None)
        module.to(linear.weight.device)
        weight = linear.weight.detach().float()
        if smoothing is not None:
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
        """Quantize a float ``weight`` (out, in), finite, into this layer's buffers."""
        check_tensor(weight, "weight")
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
        for name, t in (("levels", levels), ("scale", scale), ("zero_point", zero_point)):
            check_instance(name, t, torch.Tensor)
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
                "config": config_to_json(self.config), "smoothed": self.smoothed}

    def _kernel_fits(self, x: torch.Tensor) -> bool:
        """Whether a Triton kernel computes this layer: W8A16 (8-bit per channel), W4A16 (4-bit groups), W8A8."""
        wanted = x.is_cuda if self.use_kernel is None else self.use_kernel
        if not wanted or self.observing or x.dtype not in (torch.float16, torch.float32):
            return False
        scheme = SCHEMES[type(self.config)]
        if scheme.quantize_input is not None:
            return scheme.w8a8_kernel
        if self.bits == 8:
            return self.symmetric and self.group_size is None
        return self.bits == 4 and self.group_size is not None and self.group_size % 2 == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prepared_input(x)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        kernel = self._kernel_fits(x)
        quantize_input = SCHEMES[type(self.config)].quantize_input
        if quantize_input is None or self.observing:
            if not kernel:
                return F.linear(x, self.dequantized_weight(x.dtype), bias)
            if self.bits == 8:
                y = w8a16_matmul(x, self.qweight, self.scale.reshape(-1))
            else:
                y = w4a16_matmul(x, self.qweight, self.scale, self.zero_point, self.group_size)
            return y if bias is None else y + bias
        x_q, x_scale, outliers = quantize_input(self, x)
        if kernel:
            y = w8a8_matmul(x_q, x_scale, self.qweight, self.scale.reshape(-1))
            if self.bias is not None:
                y = y + self.bias
        else:  # one new float tensor, rescaled in place: fresh (M, N) buffers cost more than the arithmetic
            y = int8_matmul(x_q, self.qweight).float().mul_(x_scale[:, None])
            w_scale = self.scale.reshape(-1)
            y = y.mul_(w_scale) if self.bias is None else y.mul_(w_scale).add_(self.bias)
        if outliers is not None and outliers.any():  # the outlier columns in floating point
            x2 = x.reshape(-1, self.in_features)
            w_out = self.qweight[:, outliers].float() * self.scale.reshape(-1, 1)
            y = y + x2[:, outliers].float() @ w_out.T
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, {self.config}"
                + (", smoothed" if self.smoothed else ""))


def check_layers_fit(modules: dict[str, nn.Linear], config: QuantConfig) -> None:
    """Refuse, before any layer changes, a config that one of the ``modules`` cannot take, or a weight
    holding inf or nan (no grid covers it)."""
    bits = SCHEMES[type(check_config(config))].weight_grid(config)[0]
    for fqn, m in modules.items():
        if _packed(bits) and m.in_features % 2:
            raise ValueError(f"{bits}-bit levels are stored two to a byte; {fqn} has odd in_features")
        check_tensor(m.weight, f"{fqn}.weight")


def quant_layers(model: nn.Module) -> list[QuantLinear]:
    """Every :class:`QuantLinear` of ``model`` (a ``torch.nn.Module``), in module order."""
    check_module(model)
    return [m for m in model.modules() if isinstance(m, QuantLinear)]


def share_input_quantization_(model: nn.Module) -> nn.Module:
    """Give the dynamic int8 :class:`QuantLinear` layers of ``model`` one :class:`SharedInputQuantization`.

    Layers that read one tensor (Q, K and V) then quantize it once; the outputs do not
    change. :func:`quantize_` does this itself; a model from :func:`shrinklib.load` needs
    it again, since the cache is not saved. ``model`` must be a ``torch.nn.Module``.
    """
    check_module(model)
    cache = SharedInputQuantization()
    for layer in quant_layers(model):
        if isinstance(layer.config, Int8Dynamic):
            layer.input_cache = cache
    return model


def quantize_(model: nn.Module, config: QuantConfig = WeightOnly(), *, filter_fn: FilterFn | None = None) -> nn.Module:
    """Swap the picked ``nn.Linear`` layers (default: the body's, not the head) for :class:`QuantLinear`.

    Every picked layer is checked against ``config`` before any is changed, so a layer
    that cannot take it (an odd width for levels packed two to a byte, say) leaves the
    model untouched. With :class:`Int8Static`, call
    :func:`~shrinklib.quant.static.calibrate_` next to fix the input scales. ``model`` must
    be a ``torch.nn.Module`` and ``config`` one of the four configs (``TypeError`` otherwise).
    """
    check_module(model)
    check_config(config)
    picked = [(fqn, m) for fqn, m in matching_modules(model, filter_fn) if isinstance(m, nn.Linear)]
    if not picked:
        raise ValueError("the model has no nn.Linear layer that filter_fn picks: nothing to quantize")
    check_layers_fit(dict(picked), config)
    names = {fqn for fqn, _ in picked}
    replace_modules_(model, lambda m, fqn: QuantLinear.from_linear(m, config), filter_fn=lambda m, fqn: fqn in names)
    return share_input_quantization_(model) if isinstance(config, Int8Dynamic) else model
