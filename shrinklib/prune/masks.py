"""Pruning masks held as buffers: the state every pruning method of the book shares.

A pruned layer keeps its dense ``weight`` (with the pruned entries set to zero) and a
boolean buffer ``weight_mask`` beside it (True = kept); any other parameter ``p`` (an
LSTM's ``weight_hh_l0``, say) gets ``p_mask`` the same way. The buffer travels with the
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

from shrinklib._checks import check_instance, check_module

SUFFIX = "_mask"
MASK = "weight" + SUFFIX


def set_mask_(model: nn.Module, mask: torch.Tensor, name: str = "weight") -> nn.Module:
    """Give ``model``'s own parameter ``name`` the mask ``mask`` (True = keep) and zero its pruned entries.

    ``model`` is the module holding the parameter (usually one layer); returns it.
    ``mask`` must be a tensor of the parameter's shape; nothing changes otherwise.
    """
    check_module(model)
    check_instance("mask", mask, torch.Tensor)
    check_instance("name", name, str)
    param = getattr(model, name, None)
    if not isinstance(param, torch.Tensor):
        raise TypeError(f"{type(model).__name__} has no {name} tensor to mask")
    if mask.shape != param.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match {name} shape {tuple(param.shape)}")
    mask = mask.to(device=param.device, dtype=torch.bool)
    buffer = f"{name}{SUFFIX}"
    if buffer in model._buffers:
        model._buffers[buffer] = mask
    else:
        model.register_buffer(buffer, mask)
    with torch.no_grad():
        param.mul_(mask)
    return model


def _masked_params(module: nn.Module):
    for buffer, mask in module._buffers.items():
        if mask is not None and buffer.endswith(SUFFIX) and isinstance(getattr(module, buffer[: -len(SUFFIX)], None), torch.Tensor):
            yield buffer[: -len(SUFFIX)], mask


def masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{fqn: mask}`` of the ``weight`` masks of ``model``'s modules."""
    check_module(model)
    return {fqn: m._buffers[MASK] for fqn, m in model.named_modules() if m._buffers.get(MASK) is not None}


def param_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{"fqn.param": mask}`` of every masked parameter, ``weight`` or not."""
    check_module(model)
    return {f"{fqn}.{name}" if fqn else name: mask
            for fqn, m in model.named_modules() for name, mask in _masked_params(m)}


@torch.no_grad()
def apply_masks_(model: nn.Module) -> nn.Module:
    """Zero again every weight its mask prunes (after an optimizer step moved it).

    Every mask is checked to have its parameter's shape before any weight changes.
    """
    check_module(model)
    pairs = [(fqn, module, name, mask) for fqn, module in model.named_modules() for name, mask in _masked_params(module)]
    for fqn, module, name, mask in pairs:
        if mask.shape != getattr(module, name).shape:
            raise ValueError(f"{fqn + '.' if fqn else ''}{name}{SUFFIX} has shape {tuple(mask.shape)}, "
                             f"{name} {tuple(getattr(module, name).shape)}")
    for _, module, name, mask in pairs:
        getattr(module, name).mul_(mask)
    return model


def keep_masks(model: nn.Module) -> Callable:
    """A ``shrinklib.train.fit`` callback that keeps pruned weights at zero while training."""
    check_module(model)

    def callback(state) -> None:
        apply_masks_(model)

    return callback


def make_permanent_(model: nn.Module) -> nn.Module:
    """Fold the masks into the weights and remove the ``weight_mask`` buffers."""
    apply_masks_(model)  # checks model
    for _, module in model.named_modules():
        for name, _ in list(_masked_params(module)):
            module._buffers.pop(name + SUFFIX)
    return model
