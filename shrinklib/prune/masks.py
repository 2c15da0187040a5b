"""Pruning masks held as buffers: the state every pruning method of the book shares.

A pruned layer keeps its dense ``weight`` (with the pruned entries set to zero) and a
boolean buffer ``weight_mask`` beside it (True = kept). The buffer travels with the
model: ``shrinklib.save``/``load`` record it like any added tensor, so a pruned model
reloads with its masks. Training updates every entry of ``weight``, so after each
optimizer step the masks must be applied again: pass :func:`keep_masks` to
``shrinklib.train.fit`` as a callback. :func:`make_permanent_` folds the masks in and
drops the buffers when the sparsity pattern is final.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

MASK = "weight_mask"


def set_mask_(module: nn.Module, mask: torch.Tensor) -> nn.Module:
    """Give ``module`` the mask ``mask`` (True = keep) and zero its pruned weights."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(module).__name__} has no weight tensor to mask")
    if mask.shape != weight.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match weight shape {tuple(weight.shape)}")
    mask = mask.to(device=weight.device, dtype=torch.bool)
    if MASK in module._buffers:
        module._buffers[MASK] = mask
    else:
        module.register_buffer(MASK, mask)
    with torch.no_grad():
        weight.mul_(mask)
    return module


def masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{fqn: mask}`` of every masked module of ``model``."""
    return {fqn: m._buffers[MASK] for fqn, m in model.named_modules() if m._buffers.get(MASK) is not None}


@torch.no_grad()
def apply_masks_(model: nn.Module) -> nn.Module:
    """Zero again every weight its mask prunes (after an optimizer step moved it)."""
    for _, module in model.named_modules():
        mask = module._buffers.get(MASK)
        if mask is not None:
            module.weight.mul_(mask)
    return model


def keep_masks(model: nn.Module) -> Callable:
    """A ``shrinklib.train.fit`` callback that keeps pruned weights at zero while training."""

    def callback(state) -> None:
        apply_masks_(model)

    return callback


def make_permanent_(model: nn.Module) -> nn.Module:
    """Fold the masks into the weights and remove the ``weight_mask`` buffers."""
    apply_masks_(model)
    for _, module in model.named_modules():
        module._buffers.pop(MASK, None)
    return model
