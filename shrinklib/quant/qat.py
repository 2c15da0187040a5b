"""Quantization-aware training: train with the rounding in the forward pass.

:func:`qat_` swaps the picked ``nn.Linear`` layers for :class:`QATLinear`, which computes
with fake-quantized weights (and, optionally, activations) while keeping float weights
that the optimizer updates. Rounding has a zero gradient almost everywhere, so the
backward pass treats it as the identity inside the grid (the straight-through
estimator, Bengio et al., 2013). Weight quantizers (``QATConfig.weights``):

* ``"minmax"``: symmetric per output channel, the scale recomputed from ``max|w|`` at every
  step, as Q8BERT does at 8 bits (Zafrir et al., 2019, "Q8BERT: Quantized 8Bit BERT");
* ``"lsq"``: learned step size, a trained scale per output channel whose gradient is
  scaled by ``1 / sqrt(n * qmax)`` (Esser et al., 2020, "Learned Step Size
  Quantization"); the method for 4 and 2 bits;
* ``"ternary"``: ``{-a, 0, +a}`` per output channel with the threshold ``0.7 mean|w|``
  and ``a`` the mean of the weights beyond it (TWN, Li et al., 2016, as in TernaryBERT,
  Zhang et al., 2020);
* ``"binary"``: ``a * sign(w)``, ``a = mean|w|`` per output channel (BWN, Rastegari et
  al., 2016; the baseline of BinaryBERT, Bai et al., 2021).

Activations (``QATConfig.activation_bits``) are quantized per token, symmetric, from
each row's absolute maximum, as the dynamic int8 path does at inference. TernaryBERT and
BinaryBERT train with distillation from the full-precision teacher: add
:func:`shrinklib.distill.logit_distillation` to ``fit``'s ``extra_losses``.

:func:`convert_qat_` turns a trained model into :class:`~shrinklib.quant.linear.QuantLinear`
layers that store the integers: ``bits`` levels per channel, and ternary and binary
weights as 2-bit levels ``{-1, 0, 1}`` times the channel's ``a``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from shrinklib._checks import check_bool, check_instance, check_module, check_positive_int, check_tensor
from shrinklib.quant.configs import Int8Dynamic, WeightOnly
from shrinklib.quant.linear import QuantLinear, share_input_quantization_
from shrinklib.quant.primitives import check_bits, qrange
from shrinklib.rebuild import register_module
from shrinklib.utils import FilterFn, matching_modules, replace_modules_

WEIGHT_QUANTIZERS = ("minmax", "lsq", "ternary", "binary")


@dataclass(frozen=True)
class QATConfig:
    """How :class:`QATLinear` rounds its weights (and activations) while it trains."""

    weights: str = "minmax"
    bits: int = 8  # for "minmax" and "lsq"; ternary and binary weights have their own grid
    activation_bits: int | None = 8  # None: activations stay in floating point

    def __post_init__(self):
        if self.weights not in WEIGHT_QUANTIZERS:
            raise ValueError(f"weights must be one of {WEIGHT_QUANTIZERS}, got {self.weights!r}")
        check_bits(self.bits)
        if self.activation_bits is not None:
            check_bits(self.activation_bits)


def check_qat_config(config) -> QATConfig:
    """``config`` if it is a :class:`QATConfig`, else ``TypeError``."""
    return check_instance("config", config, QATConfig, what="a QATConfig")


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` forward, identity backward."""
    return x + (torch.round(x) - x).detach()


def ternarize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(levels in {-1, 0, 1}, a (out, 1))`` of TWN: threshold ``0.7 mean|w|`` per row."""
    magnitude = weight.abs()
    delta = 0.7 * magnitude.mean(dim=1, keepdim=True)
    keep = magnitude > delta
    alpha = (magnitude * keep).sum(dim=1, keepdim=True) / keep.sum(dim=1, keepdim=True).clamp_min(1)
    return torch.sign(weight) * keep, alpha


def binarize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(levels in {-1, 1}, a (out, 1))`` of BWN: ``a = mean|w|`` per row (a zero weight counts as +1)."""
    levels = torch.where(weight >= 0, torch.ones_like(weight), -torch.ones_like(weight))
    return levels, weight.abs().mean(dim=1, keepdim=True)


def fake_quantize_activations(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-token fake quantization with the straight-through estimator."""
    qmax = qrange(bits, True)[1]
    scale = (x.detach().abs().amax(dim=-1, keepdim=True) / qmax).clamp_min(1e-8)
    return _round_ste(x / scale).clamp(-qmax - 1, qmax) * scale


@register_module
class QATLinear(nn.Module):
    """A Linear layer that trains float weights through a weight (and activation) quantizer."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, weights: str = "minmax",
                 bits: int = 8, activation_bits: int | None = 8):
        super().__init__()
        check_positive_int("in_features", in_features)
        check_positive_int("out_features", out_features)
        check_bool("bias", bias)
        self.config = QATConfig(weights, bits, activation_bits)
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        if weights == "lsq":
            self.step = nn.Parameter(torch.ones(out_features, 1))

    @classmethod
    def from_linear(cls, linear: nn.Linear, config: QATConfig) -> "QATLinear":
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear needs an nn.Linear, got {type(linear).__name__}")
        check_qat_config(config)
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, config.weights, config.bits,
                     config.activation_bits).to(linear.weight.device)
        module.weight.data.copy_(linear.weight.detach())
        if linear.bias is not None:
            module.bias.data.copy_(linear.bias.detach())
        if config.weights == "lsq":  # LSQ's initial step: 2 mean|w| / sqrt(qmax), per output channel
            qmax = qrange(config.bits, True)[1]
            module.step.data.copy_(2 * linear.weight.detach().abs().mean(dim=1, keepdim=True) / math.sqrt(qmax))
        return module

    def rebuild_kwargs(self) -> dict:
        c = self.config
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.bias is not None,
                "weights": c.weights, "bits": c.bits, "activation_bits": c.activation_bits}

    def quantized_weight(self) -> torch.Tensor:
        """The weight the forward pass uses (differentiable through the straight-through estimator)."""
        w, kind = self.weight, self.config.weights
        if kind in ("ternary", "binary"):
            levels, alpha = (ternarize if kind == "ternary" else binarize)(w.detach())
            return w + (levels * alpha - w).detach()
        qmin, qmax = qrange(self.config.bits, True)
        if kind == "minmax":
            scale = (w.detach().abs().amax(dim=1, keepdim=True) / qmax).clamp_min(1e-8)
            return _round_ste(w / scale).clamp(qmin, qmax) * scale
        # LSQ: the step's gradient is scaled down by g = 1 / sqrt(n * qmax)
        g = 1.0 / math.sqrt(self.in_features * qmax)
        step = self.step.abs().clamp_min(1e-8)
        step = step * g + (step - step * g).detach()
        return _round_ste((w / step).clamp(qmin, qmax)) * step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.activation_bits is not None:
            x = fake_quantize_activations(x, self.config.activation_bits)
        return F.linear(x, self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        c = self.config
        grid = f"{c.bits}-bit {c.weights}" if c.weights in ("minmax", "lsq") else c.weights
        acts = f"{c.activation_bits}-bit per token" if c.activation_bits else "float"
        return f"in_features={self.in_features}, out_features={self.out_features}, weights={grid}, activations={acts}"


def qat_(model: nn.Module, config: QATConfig = QATConfig(), *, filter_fn: FilterFn | None = None) -> nn.Module:
    """Swap the picked ``nn.Linear`` layers (default: the body's, not the head) for :class:`QATLinear`.

    ``model`` must be a ``torch.nn.Module`` and ``config`` a :class:`QATConfig`; every layer
    is built before any is swapped.
    """
    check_module(model)
    check_qat_config(config)
    picked = {fqn for fqn, m in matching_modules(model, filter_fn) if isinstance(m, nn.Linear)}
    if not picked:
        raise ValueError("the model has no nn.Linear layer that filter_fn picks: nothing to train quantized")
    return replace_modules_(model, lambda m, fqn: QATLinear.from_linear(m, config),
                            filter_fn=lambda m, fqn: fqn in picked)


def qat_layers(model: nn.Module) -> list[QATLinear]:
    """Every :class:`QATLinear` of ``model`` (a ``torch.nn.Module``), in module order."""
    check_module(model)
    return [m for m in model.modules() if isinstance(m, QATLinear)]


@torch.no_grad()
def convert_qat_(model: nn.Module) -> nn.Module:
    """Replace every :class:`QATLinear` by a weight-only :class:`QuantLinear` with the same weights.

    The integers stored are exactly the levels the layer trained with. A layer trained
    with 8-bit weights and 8-bit activations becomes a dynamic int8 layer, which rounds
    the activations the same way, so it computes what it trained to; the others keep their
    activations in floating point. ``model`` must be a ``torch.nn.Module``; every layer is
    built before any is swapped.
    """
    layers = qat_layers(model)
    if not layers:
        raise ValueError("the model has no QATLinear layer; call qat_ first")

    def convert(module: QATLinear, fqn: str) -> QuantLinear:
        c = module.config
        w = check_tensor(module.weight, f"{fqn}.weight").detach().float()
        linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
        linear.to(w.device)
        if module.bias is not None:
            linear.bias.data.copy_(module.bias.detach())
        if c.weights in ("ternary", "binary"):
            levels, scale = (ternarize if c.weights == "ternary" else binarize)(w)
            bits = 2
        else:
            qmin, qmax = qrange(c.bits, True)
            scale = (w.abs().amax(dim=1, keepdim=True) / qmax).clamp_min(1e-8) if c.weights == "minmax" \
                else module.step.detach().abs().clamp_min(1e-8).float()
            levels, bits = torch.round(w / scale).clamp(qmin, qmax), c.bits
        # W8A8 as trained: the dynamic int8 layer rounds activations per token exactly as the QAT layer did
        w8a8 = bits == 8 and c.activation_bits == 8
        layer = QuantLinear.from_linear(linear.requires_grad_(False), Int8Dynamic() if w8a8 else WeightOnly(bits))
        layer.set_quantized(levels, scale, torch.zeros_like(scale, dtype=torch.int32))
        return layer

    replace_modules_(model, convert, filter_fn=lambda m, fqn: isinstance(m, QATLinear))
    return share_input_quantization_(model)
