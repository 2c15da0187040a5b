"""Where Wanda and SparseGPT get their calibration statistics: batches, or statistics read once.

Both one-shot pruners (:mod:`~shrinklib.prune.wanda`, Sun et al., 2024;
:mod:`~shrinklib.prune.sparsegpt`, Frantar & Alistarh, 2023) need, for every Linear layer
they prune, what its inputs looked like on calibration text: the squared norm of each input
feature, and for SparseGPT the Gram matrix ``X^T X`` too
(:func:`shrinklib.calibration.input_statistics`). They read them from ``batches`` themselves,
or are handed them as ``stats=``: a sweep over sparsities then reads the dense model once
and prunes every copy from the same statistics, which gives exactly what reading the
batches each time gives. :func:`precomputed_statistics` is the check both run on what they
are handed, and :func:`check_one_shot_layers` the check of the layers and the N:M pattern,
both before any layer changes: layer by layer (``sequential=True``) a layer that cannot
be pruned would otherwise be found after the layers before it were pruned.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn

from shrinklib._checks import check_iterable, check_mapping, is_int
from shrinklib.calibration import InputStats
from shrinklib.prune.nm import check_nm_pair


def check_one_shot_layers(modules: Mapping[str, nn.Module], *, nm=None, blocksize: int | None = None
                          ) -> tuple[int, int] | None:
    """``nm`` checked as an ``(n, m)`` pair (or ``None``) that fits every module to prune; refuses what would fail part-way.

    Each module must be a Linear layer (an int ``in_features`` and a 2-D weight of that
    width); with ``nm``, every input width, and SparseGPT's ``blocksize`` if given, must be
    a multiple of ``m``. The error names the first module that does not fit.
    """
    check_mapping("modules", modules)
    for fqn, module in modules.items():
        weight, width = getattr(module, "weight", None), getattr(module, "in_features", None)
        if not (is_int(width) and isinstance(weight, torch.Tensor) and weight.ndim == 2 and weight.shape[1] == width):
            raise TypeError(f"{fqn} is a {type(module).__name__}, not a Linear layer (an int in_features and a "
                            "2-D weight of that width): Wanda and SparseGPT prune Linear layers")
    nm = check_nm_pair(nm)
    if nm is None:
        return None
    n, m = nm
    if blocksize is not None and is_int(blocksize) and blocksize % m:
        raise ValueError(f"blocksize ({blocksize}) must be a multiple of m={m} for {n}:{m} sparsity")
    for fqn, module in modules.items():
        if module.in_features % m:
            raise ValueError(f"{fqn}: the input dimension ({module.in_features}) must be a multiple of m={m} "
                             f"for {n}:{m} sparsity")
    return nm


def precomputed_statistics(batches: Iterable[dict] | None, stats: Mapping[str, InputStats] | None,
                           modules: dict[str, nn.Linear], *, gram: bool = False, sequential: bool = False,
                           max_batches: int | None = None) -> dict[str, InputStats] | None:
    """``stats`` checked against the ``modules`` to prune, or ``None`` when the pruner was given ``batches``.

    Exactly one of ``batches`` and ``stats`` is given. ``stats`` (the output of
    :func:`~shrinklib.calibration.input_statistics`) must hold an :class:`InputStats` for
    exactly the modules picked, each with an ``(in_features,)`` squared norm from at
    least one token and, when ``gram`` (SparseGPT), an ``(in_features, in_features)`` Gram
    matrix. Statistics read once cannot follow the layers as they are pruned, so
    ``sequential=True`` needs ``batches``; ``max_batches`` applies only to ``batches``.
    ``batches``, when given, must be an iterable of dicts and ``modules`` a mapping.
    """
    check_mapping("modules", modules)
    if (batches is None) == (stats is None):
        raise ValueError("give calibration batches or precomputed stats, exactly one of them")
    if stats is None:
        check_iterable("batches", batches, what="an iterable of batches (a list of dicts, a DataLoader)")
        return None
    if sequential:
        raise ValueError("sequential=True calibrates each layer on the pruned layers before it: "
                         "it needs batches, not precomputed stats")
    if max_batches is not None:
        raise ValueError(f"max_batches limits the batches read; with precomputed stats it must be None, got {max_batches!r}")
    if not isinstance(stats, Mapping):
        raise TypeError(f"stats must be a dict of InputStats by module name, got {type(stats).__name__}")
    missing, unexpected = sorted(modules.keys() - stats.keys()), sorted(stats.keys() - modules.keys())
    if missing or unexpected:
        raise ValueError(f"stats must hold the statistics of exactly the modules to prune: missing {missing[:5]}, "
                         f"not pruned {unexpected[:5]}")
    for fqn, module in modules.items():
        s, features = stats[fqn], module.weight.shape[1]
        if not isinstance(s, InputStats):
            raise TypeError(f"stats[{fqn!r}] must be an InputStats, got {type(s).__name__}")
        if not isinstance(s.sq_norm, torch.Tensor) or tuple(s.sq_norm.shape) != (features,):
            raise ValueError(f"stats[{fqn!r}].sq_norm must have shape ({features},) for {fqn}'s {features} inputs, "
                             f"got {_shape(s.sq_norm)}")
        if s.tokens < 1:
            raise ValueError(f"stats[{fqn!r}] saw no token")
        if gram and s.gram is None:
            raise ValueError(f"stats[{fqn!r}] has no Gram matrix: SparseGPT needs input_statistics(..., gram=True)")
        if gram and (not isinstance(s.gram, torch.Tensor) or tuple(s.gram.shape) != (features, features)):
            raise ValueError(f"stats[{fqn!r}].gram must have shape ({features}, {features}), got {_shape(s.gram)}")
    return {fqn: stats[fqn] for fqn in modules}


def _shape(x) -> object:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
