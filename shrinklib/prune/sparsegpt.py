"""SparseGPT: one-shot pruning with second-order weight updates (Frantar & Alistarh,
2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot").

For a layer with weight ``W`` and calibration inputs ``X``, pruning should keep the
output ``W X^T`` close: minimize ``||W X^T - W' X^T||^2`` over sparse ``W'``. With the
Hessian ``H = X^T X`` of that objective, removing weight ``w_j`` of a row costs
``w_j^2 / [H^-1]_jj`` and is best compensated by moving the row's remaining weights by
``-w_j / [H^-1]_jj * H^-1_{j,:}`` (Optimal Brain Surgeon, Hassibi & Stork, 1993).
SparseGPT applies this column by column, left to right, with the Cholesky factor of
``H^-1`` so every row shares one inverse, choosing the mask per block of columns by the
OBS cost. :func:`sparsegpt_prune` is the algorithm on one matrix; :func:`sparsegpt_`
applies it to a model with statistics from :mod:`shrinklib.calibration`.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn

from shrinklib._checks import check_bool, check_instance, check_module, check_number, check_positive_int, check_sparsity
from shrinklib.calibration import InputStats, input_statistics, inverse_hessian_cholesky, sequential_statistics
from shrinklib.prune.magnitude import prunable_weights, select_smallest
from shrinklib.prune.masks import set_mask_
from shrinklib.prune.nm import check_nm_pair
from shrinklib.prune.oneshot import check_one_shot_layers, precomputed_statistics
from shrinklib.utils import FilterFn


@torch.no_grad()
def sparsegpt_prune(weight: torch.Tensor, gram: torch.Tensor, sparsity: float, *, blocksize: int = 128,
                    percdamp: float = 0.01, nm: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(new_weight, keep_mask)``: ``weight (out, in)`` pruned to ``sparsity`` given ``gram = X^T X``.

    In each block of ``blocksize`` columns exactly ``round(sparsity * out * block)``
    weights with the lowest OBS cost ``w^2 / [H^-1]_jj^2`` are pruned; ``percdamp`` times
    the mean diagonal is added to ``H`` for a stable inverse. With ``nm=(n, m)`` the mask
    is N:M instead (``sparsity`` is then not used): on reaching each group of ``m``
    columns, every row keeps the ``n`` of lowest OBS cost at that point, as in the
    paper's semi-structured variant.

    ``weight`` must be a 2-D tensor, ``gram`` a finite square one of its width,
    ``blocksize`` an int >= 1 and ``percdamp`` a finite number >= 0.
    """
    sparsity = check_sparsity(sparsity)
    _check_options(blocksize, percdamp)
    check_instance("weight", weight, torch.Tensor)
    if weight.ndim != 2:
        raise ValueError(f"weight must be 2-D (out, in), got shape {tuple(weight.shape)}")
    nm = check_nm_pair(nm)
    if nm is not None:
        n, m = nm
        if blocksize % m or weight.shape[1] % m:
            raise ValueError(f"blocksize ({blocksize}) and the input dimension ({weight.shape[1]}) must be "
                             f"multiples of m={m} for {n}:{m} sparsity")
    check_instance("gram", gram, torch.Tensor)
    rows, cols = weight.shape
    if gram.shape != (cols, cols):
        raise ValueError(f"gram must be ({cols}, {cols}) for a weight of shape {tuple(weight.shape)}, got {tuple(gram.shape)}")
    W = weight.detach().to(torch.float64).clone()
    Hinv, dead = inverse_hessian_cholesky(gram, percdamp)
    W[:, dead] = 0  # features never active: their weights can go for free
    keep = torch.ones(rows, cols, dtype=torch.bool)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Hinv1 = Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        if nm is None:
            cost = W1.pow(2) / torch.diag(Hinv1)[None, :].pow(2)
            keep1 = select_smallest({"block": cost}, sparsity, "layer")["block"]
        else:
            keep1 = torch.ones_like(W1, dtype=torch.bool)
        for i in range(i2 - i1):
            if nm is not None and i % m == 0:
                cost = W1[:, i:i + m].pow(2) / torch.diag(Hinv1)[i:i + m][None, :].pow(2)
                pruned = torch.topk(cost, m - n, dim=1, largest=False).indices
                keep1[:, i:i + m].scatter_(1, pruned, False)
            w, d = W1[:, i], Hinv1[i, i]
            q = w * keep1[:, i]
            err = (w - q) / d
            W1[:, i:] -= err[:, None] @ Hinv1[i, i:][None, :]
            W1[:, i] = q
            Err1[:, i] = err
        W[:, i1:i2] = W1
        keep[:, i1:i2] = keep1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return (W * keep).to(weight.dtype), keep


def _check_options(blocksize, percdamp) -> None:
    check_positive_int("blocksize", blocksize)
    check_number("percdamp", percdamp, low=0, what="a finite number >= 0")


def sparsegpt_(model: nn.Module, batches: Iterable[dict] | None = None, sparsity: float = 0.5, *,
               stats: Mapping[str, InputStats] | None = None, blocksize: int = 128, percdamp: float = 0.01,
               filter_fn: FilterFn | None = None, max_batches: int | None = None, sequential: bool = False,
               nm: tuple[int, int] | None = None) -> nn.Module:
    """Prune every picked Linear of ``model`` with SparseGPT on calibration ``batches``; returns ``model``.

    ``nm=(2, 4)`` gives 2:4 masks instead of ``sparsity`` (see :func:`sparsegpt_prune`).
    ``sequential=False`` reads every layer's Gram matrix from the dense model in one pass;
    ``sequential=True`` prunes one transformer layer at a time, each calibrated on the
    outputs of the pruned (and updated) layers before it, as the paper's code does
    (:func:`~shrinklib.calibration.sequential_statistics`).

    Instead of ``batches``, ``stats`` may hand over statistics already read
    (:func:`~shrinklib.calibration.input_statistics` of the picked modules with
    ``gram=True``, on this model or an unpruned copy of it): the result is the one-pass
    result on the batches they were read from, and one reading serves a whole sweep of
    sparsities (checked by :func:`~shrinklib.prune.oneshot.precomputed_statistics`).

    Every argument (``blocksize`` an int >= 1, ``percdamp`` a finite number >= 0), and
    every picked layer against ``nm`` (:func:`~shrinklib.prune.oneshot.check_one_shot_layers`),
    is checked before any layer changes. A failure only a layer's statistics reveal (a
    Gram matrix that is not positive definite even after damping) is found before any
    layer changes in one pass, and with ``sequential=True`` puts the layers already
    pruned back as they were: a failed call leaves the model as it was.
    """
    check_module(model)
    sparsity = check_sparsity(sparsity)
    _check_options(blocksize, percdamp)
    check_bool("sequential", sequential)
    modules = prunable_weights(model, filter_fn)
    nm = check_one_shot_layers(modules, nm=nm, blocksize=blocksize)
    given = precomputed_statistics(batches, stats, modules, gram=True, sequential=sequential, max_batches=max_batches)

    def prune(layer_stats):
        results = {fqn: sparsegpt_prune(modules[fqn].weight, s.gram, sparsity, blocksize=blocksize,
                                        percdamp=percdamp, nm=nm)
                   for fqn, s in layer_stats.items()}
        for fqn, (new_weight, keep) in results.items():
            modules[fqn].weight.data.copy_(new_weight)
            set_mask_(modules[fqn], keep)

    if given is not None:
        prune(given)
    elif sequential:
        sequential_statistics(model, batches, modules, prune, gram=True, max_batches=max_batches)
    else:
        prune(input_statistics(model, batches, modules, gram=True, max_batches=max_batches))
    return model
