"""Movement pruning (Sanh et al., 2020, "Movement Pruning: Adaptive Sparsity by Fine-Tuning").

Magnitude pruning keeps the weights that are large; during fine-tuning a better signal
is which weights are *moving away from zero*. Each weight gets a learned score ``S``,
the layer computes with ``W * M(S)``, and the mask ``M`` is

* **hard**: ``TopK(S)``, the ``1 - s`` highest scores of the layer (``s`` raised over
  training by a schedule, as in Zhu & Gupta);
* **soft**: ``S > tau``, with ``lambda * mean(sigmoid(S))`` added to the loss to push scores
  down (the sparsity then follows from ``lambda`` and ``tau``).

``M`` is a step function, so its gradient is taken as 1 (the straight-through
estimator): ``dL/dS = dL/dW' * W``, which accumulates ``-W * dL/dW`` -- the movement of
``W`` away from zero. After training, :func:`finalize_movement_` turns every
:class:`MovementLinear` back into an ``nn.Linear`` with a ``weight_mask`` buffer.

How the scores learn (``score_update``):

* ``"optimizer"``: ``S`` is a parameter trained by the fine-tuning optimizer (Sanh et al.
  use Adam at 1e-2 for the scores). Adam normalizes each step, so a score counts the
  *steps* a weight moved outwards more than the amount: early on, that ranks noise.
* ``"sum"``: ``S`` is a buffer to which every backward pass adds ``-W * dL/dW'``: the
  exact sum of Sanh et al.'s analysis (plain gradient descent), which weighs each step by
  how far it moved the weight, as NNI's movement pruner does.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from shrinklib._checks import check_bool, check_module, check_number, check_positive_int, check_sparsity, check_weight
from shrinklib.prune.magnitude import select_smallest
from shrinklib.prune.masks import set_mask_
from shrinklib.prune.schedule import cubic_sparsity
from shrinklib.rebuild import register_module
from shrinklib.utils import FilterFn, check_filter_fn, replace_modules_

METHODS = ("hard", "soft")
SCORE_UPDATES = ("optimizer", "sum")


class _StraightThrough(torch.autograd.Function):
    """Forward: the binary mask given; backward: the gradient passed to the scores unchanged."""

    @staticmethod
    def forward(ctx, scores, mask):
        return mask.to(scores.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


@register_module
class MovementLinear(nn.Module):
    """An ``nn.Linear`` whose weight is masked by learned movement scores.

    ``in_features``/``out_features`` are ints >= 1, ``sparsity`` in [0, 1), ``threshold``
    (soft movement's ``tau``) a finite number; ``method`` and ``score_update`` one of
    :data:`METHODS` and :data:`SCORE_UPDATES`.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, method: str = "hard",
                 sparsity: float = 0.0, threshold: float = 0.0, score_update: str = "optimizer"):
        super().__init__()
        _check_options(method, score_update, threshold)
        check_positive_int("in_features", in_features)
        check_positive_int("out_features", out_features)
        check_bool("bias", bias)
        self.in_features, self.out_features, self.method = in_features, out_features, method
        self.score_update = score_update
        self.sparsity = check_sparsity(sparsity)
        self.threshold = float(threshold)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        if score_update == "optimizer":
            self.scores = nn.Parameter(torch.zeros(out_features, in_features))  # constant init, as Sanh et al.
        else:
            self.register_buffer("scores", torch.zeros(out_features, in_features))

    @classmethod
    def from_linear(cls, linear: nn.Linear, method: str = "hard", threshold: float = 0.0,
                    score_update: str = "optimizer") -> "MovementLinear":
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear needs an nn.Linear, got {type(linear).__name__}")
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, method, 0.0, threshold,
                     score_update)
        module = module.to(device=linear.weight.device, dtype=linear.weight.dtype)
        module.weight.data.copy_(linear.weight.detach())
        if linear.bias is not None:
            module.bias.data.copy_(linear.bias.detach())
        return module

    def rebuild_kwargs(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.bias is not None,
                "method": self.method, "sparsity": self.sparsity, "threshold": self.threshold,
                "score_update": self.score_update}

    def mask(self) -> torch.Tensor:
        """The current binary keep-mask (no gradient)."""
        with torch.no_grad():
            if self.method == "hard":
                return select_smallest({"scores": self.scores}, self.sparsity, "layer")["scores"]
            return self.scores > self.threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.score_update == "optimizer":
            mask = _StraightThrough.apply(self.scores, self.mask())
            return F.linear(x, self.weight * mask, self.bias)
        effective = self.weight * self.mask()
        if effective.requires_grad:
            weight = self.weight.detach()

            def add_movement(grad: torch.Tensor) -> None:  # S += -W dL/dW'; returns None: grad flows on unchanged
                self.scores.sub_(grad * weight)

            effective.register_hook(add_movement)
        return F.linear(x, effective, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, method={self.method}, "
                f"sparsity={self.sparsity:.3f}" + (f", threshold={self.threshold}" if self.method == "soft" else ""))


def _check_options(method: str, score_update: str, threshold: float) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if score_update not in SCORE_UPDATES:
        raise ValueError(f"score_update must be one of {SCORE_UPDATES}, got {score_update!r}")
    if method == "soft" and score_update != "optimizer":
        raise ValueError("soft movement learns its scores with the optimizer (its penalty needs their gradient)")
    check_number("threshold", threshold, what="a finite number")


def movement_(model: nn.Module, *, method: str = "hard", threshold: float = 0.0, score_update: str = "optimizer",
              filter_fn: FilterFn | None = None) -> nn.Module:
    """Swap the picked ``nn.Linear`` layers for :class:`MovementLinear` to learn their scores.

    Every option is checked (``threshold`` finite, ``method``/``score_update`` known,
    ``filter_fn`` callable, ``model`` an ``nn.Module``) before any layer is swapped.
    """
    _check_options(method, score_update, threshold)
    pick = check_filter_fn(filter_fn)
    return replace_modules_(model, lambda m, fqn: MovementLinear.from_linear(m, method, threshold, score_update),
                            filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and pick(m, fqn))


def movement_layers(model: nn.Module) -> list[MovementLinear]:
    """The :class:`MovementLinear` layers of ``model`` (an ``nn.Module``); ``ValueError`` if it has none."""
    check_module(model)
    layers = [m for m in model.modules() if isinstance(m, MovementLinear)]
    if not layers:
        raise ValueError("the model has no MovementLinear layer; call shrinklib.prune.movement_ first")
    return layers


class MovementSchedule:
    """Callback for ``shrinklib.train.fit``: raise the hard-movement sparsity on the cubic schedule."""

    def __init__(self, model: nn.Module, final_sparsity: float, *, start_step: int, end_step: int):
        cubic_sparsity(start_step, final=final_sparsity, start=start_step, end=end_step)  # validates
        self.layers = movement_layers(model)
        if any(layer.method != "hard" for layer in self.layers):
            raise ValueError("MovementSchedule drives hard movement pruning; soft layers take a threshold")
        self.final, self.start, self.end = final_sparsity, start_step, end_step

    def __call__(self, state) -> None:
        sparsity = cubic_sparsity(state.step, final=self.final, start=self.start, end=self.end)
        for layer in self.layers:
            layer.sparsity = sparsity


def soft_movement_penalty(model: nn.Module, weight: float):
    """``extra_losses`` term of soft movement: ``weight * mean(sigmoid(S))`` over all scores (``weight`` a number >= 0)."""
    weight = check_weight(weight)
    layers = movement_layers(model)

    def term(m, batch, outputs) -> torch.Tensor:
        total = sum(torch.sigmoid(layer.scores).sum() for layer in layers)
        return weight * total / sum(layer.scores.numel() for layer in layers)

    return term


def finalize_movement_(model: nn.Module) -> nn.Module:
    """Replace every :class:`MovementLinear` by an ``nn.Linear`` holding its current mask."""
    movement_layers(model)

    def factory(module: MovementLinear, fqn: str) -> nn.Linear:
        linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                           device=module.weight.device, dtype=module.weight.dtype)
        linear.weight.data.copy_(module.weight.detach())
        if module.bias is not None:
            linear.bias.data.copy_(module.bias.detach())
        return set_mask_(linear, module.mask())

    return replace_modules_(model, factory, filter_fn=lambda m, fqn: isinstance(m, MovementLinear))
