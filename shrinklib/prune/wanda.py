"""Wanda: pruning by weights and activations (Sun et al., 2024, "A Simple and Effective
Pruning Approach for Large Language Models").

Large language models have a few input features with huge activations; a small weight
on such a feature still matters. Wanda scores each weight by its magnitude times the
norm of the input feature it multiplies, ``S_ij = |W_ij| * ||X_j||_2`` (norms over the
calibration tokens), and prunes the lowest scores *within each output row*, with no
weight update and no retraining: one forward pass of calibration data and a sort.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn

from shrinklib._checks import check_bool, check_instance, check_module, check_sparsity
from shrinklib.calibration import InputStats, input_statistics, sequential_statistics
from shrinklib.prune.magnitude import prunable_weights, select_smallest
from shrinklib.prune.masks import set_mask_
from shrinklib.prune.nm import check_nm_pair, nm_mask
from shrinklib.prune.oneshot import check_one_shot_layers, precomputed_statistics
from shrinklib.utils import FilterFn


def wanda_scores(weight: torch.Tensor, sq_norm: torch.Tensor) -> torch.Tensor:
    """``|W_ij| * ||X_j||`` for a weight ``(out, in)`` and per-feature squared norms ``(in,)`` (both tensors)."""
    check_instance("weight", weight, torch.Tensor)
    check_instance("sq_norm", sq_norm, torch.Tensor)
    if weight.ndim != 2 or tuple(sq_norm.shape) != (weight.shape[1],):
        raise ValueError(f"weight must be (out, in) and sq_norm (in,), got shapes {tuple(weight.shape)} "
                         f"and {tuple(sq_norm.shape)}")
    return weight.detach().abs().float() * sq_norm.sqrt().float().to(weight.device)[None, :]


def wanda_mask(weight: torch.Tensor, sq_norm: torch.Tensor, sparsity: float, *,
               nm: tuple[int, int] | None = None) -> torch.Tensor:
    """Keep-mask pruning the ``round(sparsity * in)`` lowest Wanda scores of every output row.

    With ``nm=(n, m)`` (``sparsity`` is then not used) each group of ``m`` consecutive
    weights of a row keeps its ``n`` highest scores instead: Wanda's N:M variant.
    """
    sparsity = check_sparsity(sparsity)
    nm = check_nm_pair(nm)
    scores = wanda_scores(weight, sq_norm)
    if nm is not None:
        return nm_mask(scores, *nm)
    return torch.stack(list(select_smallest(dict(enumerate(scores)), sparsity, "layer").values()))  # row by row


def wanda_(model: nn.Module, batches: Iterable[dict] | None = None, sparsity: float = 0.5, *,
           stats: Mapping[str, InputStats] | None = None, filter_fn: FilterFn | None = None,
           max_batches: int | None = None, sequential: bool = False, nm: tuple[int, int] | None = None) -> nn.Module:
    """Prune every picked Linear of ``model`` with Wanda on calibration ``batches``; returns ``model``.

    The default ``filter_fn`` picks every ``nn.Linear`` of the body, not the head (``lm_head``).
    ``sequential=False`` reads every layer's statistics from the dense model in one pass;
    ``sequential=True`` prunes one transformer layer at a time, each calibrated on the
    outputs of the pruned layers before it, as the paper's code does
    (:func:`~shrinklib.calibration.sequential_statistics`). ``nm=(2, 4)`` gives
    2:4 masks instead of ``sparsity`` (see :func:`wanda_mask`).

    Instead of ``batches``, ``stats`` may hand over statistics already read
    (:func:`~shrinklib.calibration.input_statistics` of the picked modules, on this model
    or an unpruned copy of it): the result is the one-pass result on the batches they
    were read from, and one reading serves a whole sweep of sparsities
    (checked by :func:`~shrinklib.prune.oneshot.precomputed_statistics`).

    Every argument, and every picked layer against ``nm``
    (:func:`~shrinklib.prune.oneshot.check_one_shot_layers`), is checked before any layer
    is pruned, and with ``sequential=True`` a failure part-way puts the layers already
    pruned back as they were, so a failed call leaves the model as it was.
    """
    check_module(model)
    sparsity = check_sparsity(sparsity)
    check_bool("sequential", sequential)
    modules = prunable_weights(model, filter_fn)
    nm = check_one_shot_layers(modules, nm=nm)
    given = precomputed_statistics(batches, stats, modules, sequential=sequential, max_batches=max_batches)

    def prune(layer_stats):
        masks = {fqn: wanda_mask(modules[fqn].weight, s.sq_norm, sparsity, nm=nm) for fqn, s in layer_stats.items()}
        for fqn, mask in masks.items():
            set_mask_(modules[fqn], mask)

    if given is not None:
        prune(given)
    elif sequential:
        sequential_statistics(model, batches, modules, prune, max_batches=max_batches)
    else:
        prune(input_statistics(model, batches, modules, max_batches=max_batches))
    return model
