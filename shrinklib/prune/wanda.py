"""Wanda: pruning by weights and activations (Sun et al., 2024, "A Simple and Effective
Pruning Approach for Large Language Models").

Large language models have a few input features with huge activations; a small weight
on such a feature still matters. Wanda scores each weight by its magnitude times the
norm of the input feature it multiplies, ``S_ij = |W_ij| * ||X_j||_2`` (norms over the
calibration tokens), and prunes the lowest scores *within each output row*, with no
weight update and no retraining: one forward pass of calibration data and a sort.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from shrinklib.prune.calibration import input_statistics
from shrinklib.prune.magnitude import _check_sparsity, _smallest, prunable_weights
from shrinklib.prune.masks import set_mask_
from shrinklib.utils import FilterFn


def wanda_scores(weight: torch.Tensor, sq_norm: torch.Tensor) -> torch.Tensor:
    """``|W_ij| * ||X_j||`` for a weight ``(out, in)`` and per-feature squared norms ``(in,)``."""
    return weight.detach().abs().float() * sq_norm.sqrt().float().to(weight.device)[None, :]


def wanda_mask(weight: torch.Tensor, sq_norm: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask pruning the ``round(sparsity * in)`` lowest Wanda scores of every output row."""
    sparsity = _check_sparsity(sparsity)
    scores = wanda_scores(weight, sq_norm)
    return torch.stack([_smallest(row, sparsity) for row in scores])


def wanda_(model: nn.Module, batches: Iterable[dict], sparsity: float = 0.5, *,
           filter_fn: FilterFn | None = None, max_batches: int | None = None) -> nn.Module:
    """Prune every picked Linear of ``model`` with Wanda on calibration ``batches``; returns ``model``.

    The default ``filter_fn`` picks every ``nn.Linear`` of the body, not the head (``lm_head``).
    """
    sparsity = _check_sparsity(sparsity)
    modules = prunable_weights(model, filter_fn)
    stats = input_statistics(model, batches, modules, max_batches=max_batches)
    masks = {fqn: wanda_mask(m.weight, stats[fqn].sq_norm, sparsity) for fqn, m in modules.items()}
    for fqn, mask in masks.items():
        set_mask_(modules[fqn], mask)
    return model
