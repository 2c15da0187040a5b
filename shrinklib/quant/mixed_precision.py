"""Mixed precision: more bits where the loss is sensitive, fewer where it is flat.

Q-BERT (Shen et al., 2020, "Q-BERT: Hessian Based Ultra Low Precision Quantization of
BERT") ranks layers by the curvature of the loss in their weights: where the Hessian is
large, a small perturbation (the rounding error) raises the loss a lot. For a layer with
weights ``W`` rounded to ``W + dW``, the second-order increase of the loss is about
``1/2 dW^T H dW``; with the Hessian's average diagonal ``Tr(H) / n`` in place of ``H``,
the cost of ``b`` bits is ``Omega_l(b) = Tr(H_l) / n_l * ||Q_b(W_l) - W_l||^2`` (the
HAWQ-v2 criterion, Dong et al., 2020; Q-BERT uses the top eigenvalue where this uses
the trace).

The trace comes from Hutchinson's estimator: for random ``v`` with entries ``+-1``,
``E[v^T H v] = Tr(H)``, and ``H v`` is one more backward pass through the gradient
(:func:`hessian_traces`). :func:`allocate_bits` then picks a bit width per layer that
minimizes the total cost under an average-bits budget, by a greedy walk that always
takes the cheapest step down in bits, and :func:`quantize_mixed_` applies it (a
:class:`MixedPrecision` config: the bits per layer, and one grid for all).
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Iterable, Mapping

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from shrinklib._checks import (
    check_bool,
    check_int,
    check_iterable,
    check_mapping,
    check_module,
    check_number,
    check_tensor,
)
from shrinklib.quant.configs import WeightOnly
from shrinklib.quant.linear import QuantLinear, check_layers_fit
from shrinklib.quant.primitives import check_bits, check_group_size, fake_quantize_weight
from shrinklib.utils import FilterFn, check_seed, matching_modules, replace_modules_


def _loss(model: nn.Module, batch: dict) -> torch.Tensor:
    out = model(**check_mapping("batch", batch))
    if getattr(out, "loss", None) is None:
        raise ValueError("the model returned no loss: the batches need labels")
    return out.loss


def hessian_traces(model: nn.Module, batches: Iterable[dict], *, filter_fn: FilterFn | None = None, samples: int = 8,
                   seed: int = 0, loss_fn: Callable[[nn.Module, dict], torch.Tensor] = _loss) -> dict[str, float]:
    """Hutchinson estimates of ``Tr(H)`` of the loss in each picked Linear's weight, averaged over batches.

    ``samples`` random ``+-1`` vectors per batch; ``loss_fn(model, batch)`` defaults to the
    model's own loss (batches with labels). The model runs in eval mode (no dropout).
    ``model`` must be a ``torch.nn.Module``, ``batches`` an iterable (of dicts, for the
    default loss), ``samples`` an int >= 1, ``seed`` an int >= 0, ``loss_fn`` callable.
    """
    check_module(model)
    check_iterable("batches", batches)
    check_int("samples", samples, minimum=1, what=">= 1")
    check_seed(seed)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(model, batch), got {loss_fn!r}")
    layers = {fqn: m for fqn, m in matching_modules(model, filter_fn) if isinstance(m, nn.Linear)}
    if not layers:
        raise ValueError("the model has no nn.Linear layer that filter_fn picks")
    params = [m.weight for m in layers.values()]
    totals = {fqn: 0.0 for fqn in layers}
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    seen = 0
    try:
        for batch in batches:
            with sdpa_kernel(SDPBackend.MATH):  # the fused attention kernels have no second derivative
                grads = torch.autograd.grad(loss_fn(model, batch), params, create_graph=True)
            for _ in range(samples):
                vs = [(torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p) for p in params]
                hvs = torch.autograd.grad(grads, params, grad_outputs=vs, retain_graph=True)
                for fqn, v, hv in zip(layers, vs, hvs):
                    totals[fqn] += float((v * hv).sum()) / samples
            seen += 1
    finally:
        model.train(was_training)
    if not seen:
        raise ValueError("no calibration batch: the batches were empty")
    return {fqn: total / seen for fqn, total in totals.items()}


def allocate_bits(traces: dict[str, float], weights: dict[str, torch.Tensor], average_bits: float,
                  choices: tuple[int, ...] = (2, 3, 4, 8), group_size: int | None = 128) -> dict[str, int]:
    """Bits per layer with a parameter-weighted average of at most ``average_bits``.

    Every layer starts at the largest choice; while the average is above the budget, the
    layer whose next step down adds the least cost ``Omega`` per bit saved steps down.

    ``traces`` maps layer names to finite numbers (a negative trace counts as 0) and
    ``weights`` the same names to non-empty, finite float tensors; neither may be empty.
    ``average_bits`` is a finite number, ``choices`` a non-empty iterable of bit widths
    (ints from 2 to 8), ``group_size`` an int >= 1 or ``None``.
    """
    check_mapping("traces", traces)
    check_mapping("weights", weights)
    if set(traces) != set(weights):
        raise ValueError("traces and weights must name the same layers")
    if not traces:
        raise ValueError("traces and weights name no layer: there is nothing to allocate bits to")
    for fqn in traces:
        check_number(f"traces[{fqn!r}]", traces[fqn], what="a finite number")
        check_tensor(weights[fqn], f"weights[{fqn!r}]")
    check_number("average_bits", average_bits, what="a finite number")
    choices = tuple(sorted(set(check_iterable("choices", choices, what="an iterable of bit widths"))))
    if not choices:
        raise ValueError("choices must name at least one bit width, got none")
    for b in choices:
        check_bits(b)
    if group_size is not None:
        check_group_size(group_size)
    if not choices[0] <= average_bits:
        raise ValueError(f"average_bits={average_bits} is below the smallest choice {choices[0]}")
    sizes = {fqn: w.numel() for fqn, w in weights.items()}
    total = sum(sizes.values())

    def cost(fqn: str, bits: int) -> float:
        w = weights[fqn].detach().float()
        error = (fake_quantize_weight(w, bits, False, group_size=group_size) - w).pow(2).sum()
        return max(traces[fqn], 0.0) / w.numel() * float(error)

    costs = {(fqn, b): cost(fqn, b) for fqn in weights for b in choices}
    level = {fqn: len(choices) - 1 for fqn in weights}

    def average() -> float:
        return sum(choices[level[f]] * sizes[f] for f in weights) / total

    while average() > average_bits + 1e-9:
        steps = [((costs[(f, choices[level[f] - 1])] - costs[(f, choices[level[f]])])
                  / ((choices[level[f]] - choices[level[f] - 1]) * sizes[f]), f) for f in weights if level[f] > 0]
        _, fqn = min(steps)
        level[fqn] -= 1
    return {fqn: choices[level[fqn]] for fqn in weights}


@dataclass(frozen=True)
class MixedPrecision:
    """Weight-only quantization at a bit width per layer: ``bits`` maps layer names to widths.

    Every layer gets the same grid otherwise: ``group_size`` inputs per scale (``None``:
    one per output channel), affine unless ``symmetric``. ``bits`` is kept as a read-only
    copy, so the config cannot change after it is checked.
    """

    bits: Mapping[str, int]
    group_size: int | None = 128
    symmetric: bool = False

    def __post_init__(self):
        if not isinstance(self.bits, Mapping) or not self.bits:
            raise TypeError(f"bits must be a nonempty mapping of layer names to bit widths, got {self.bits!r}")
        for fqn, b in self.bits.items():
            if not isinstance(fqn, str):
                raise TypeError(f"bits must map layer names (str) to bit widths, got the key {fqn!r}")
            check_bits(b)
        object.__setattr__(self, "bits", MappingProxyType(dict(self.bits)))
        if self.group_size is not None:
            check_group_size(self.group_size)
        check_bool("symmetric", self.symmetric)

    def layer_config(self, fqn: str) -> WeightOnly:
        """The :class:`~shrinklib.quant.configs.WeightOnly` config of the layer named ``fqn``."""
        return WeightOnly(self.bits[fqn], self.group_size, self.symmetric)


def quantize_mixed_(model: nn.Module, config: MixedPrecision, *, filter_fn: FilterFn | None = None) -> nn.Module:
    """Quantize each Linear that ``config.bits`` names weight-only at its own bit width (from :func:`allocate_bits`).

    ``filter_fn`` (default: every named layer) keeps, of the named layers, those it picks;
    the others stay in floating point. ``model`` must be a ``torch.nn.Module`` and ``config``
    a :class:`MixedPrecision`. Every layer is checked and built before any is changed.
    """
    check_module(model)
    if not isinstance(config, MixedPrecision):
        raise TypeError(f"config must be a MixedPrecision, got {type(config).__name__}")
    modules = dict(model.named_modules())
    missing = sorted(set(config.bits) - set(modules))
    if missing:
        raise ValueError(f"no such layers in the model: {missing}")
    named = {fqn: modules[fqn] for fqn in config.bits}
    if filter_fn is not None:
        picked = dict(matching_modules(model, filter_fn))
        named = {fqn: m for fqn, m in named.items() if fqn in picked}
        if not named:
            raise ValueError("filter_fn picked none of the layers that config.bits names: nothing to quantize")
    for fqn, module in named.items():
        if not isinstance(module, nn.Linear):
            raise TypeError(f"{fqn} is a {type(module).__name__}, not an nn.Linear")
        check_layers_fit({fqn: module}, config.layer_config(fqn))
    return replace_modules_(model, lambda m, fqn: QuantLinear.from_linear(m, config.layer_config(fqn)),
                            filter_fn=lambda m, fqn: fqn in named)
