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

from shrinklib.calibration import input_statistics, sequential_statistics
from shrinklib.prune.magnitude import _check_sparsity, _smallest, prunable_weights
from shrinklib.prune.masks import set_mask_
from shrinklib.prune.nm import nm_mask
from shrinklib.utils import FilterFn


def wanda_scores(weight: torch.Tensor, sq_norm: torch.Tensor) -> torch.Tensor:
    """``|W_ij| * ||X_j||`` for a weight ``(out, in)`` and per-feature squared norms ``(in,)``."""
    return weight.detach().abs().float() * sq_norm.sqrt().float().to(weight.device)[None, :]


def wanda_mask(weight: torch.Tensor, sq_norm: torch.Tensor, sparsity: float, *,
               nm: tuple[int, int] | None = None) -> torch.Tensor:
    """Keep-mask pruning the ``round(sparsity * in)`` lowest Wanda scores of every output row.

    With ``nm=(n, m)`` (``sparsity`` is then not used) each group of ``m`` consecutive
    weights of a row keeps its ``n`` highest scores instead: Wanda's N:M variant.
    """
    sparsity = _check_sparsity(sparsity)
    scores = wanda_scores(weight, sq_norm)
    if nm is not None:
        return nm_mask(scores, *nm)
    return torch.stack([_smallest(row, sparsity) for row in scores])


def wanda_(model: nn.Module, batches: Iterable[dict], sparsity: float = 0.5, *,
           filter_fn: FilterFn | None = None, max_batches: int | None = None, sequential: bool = False,
           nm: tuple[int, int] | None = None) -> nn.Module:
    """Prune every picked Linear of ``model`` with Wanda on calibration ``batches``; returns ``model``.

    The default ``filter_fn`` picks every ``nn.Linear`` of the body, not the head (``lm_head``).
    ``sequential=False`` reads every layer's statistics from the dense model in one pass;
    ``sequential=True`` prunes one transformer layer at a time, each calibrated on the
    outputs of the pruned layers before it, as the paper's code does
    (:func:`~shrinklib.calibration.sequential_statistics`). ``nm=(2, 4)`` gives
    2:4 masks instead of ``sparsity`` (see :func:`wanda_mask`).
    """
    sparsity = _check_sparsity(sparsity)
    modules = prunable_weights(model, filter_fn)

    def prune(stats):
        masks = {fqn: wanda_mask(modules[fqn].weight, s.sq_norm, sparsity, nm=nm) for fqn, s in stats.items()}
        for fqn, mask in masks.items():
            set_mask_(modules[fqn], mask)

    if sequential:
        sequential_statistics(model, batches, modules, prune, max_batches=max_batches)
    else:
        prune(input_statistics(model, batches, modules, max_batches=max_batches))
    return model
