"""N:M semi-structured sparsity: in every group of M consecutive weights, keep N.

Along the input (reduction) dimension of a Linear weight ``(out, in)``, each run of
``m`` weights keeps its ``n`` largest in magnitude. The pattern is regular enough for
hardware and kernels to exploit: with 2:4, NVIDIA's sparse tensor cores (Ampere and
later, Mishra et al., 2021, "Accelerating Sparse Deep Neural Networks") skip the zeros,
and a compressed form stores only the kept values plus a 2-bit index each (see
``shrinklib.kernels``). Accuracy lost to the fixed 50% is recovered by fine-tuning
with the mask held (``shrinklib.prune.keep_masks``); Zhou et al. (2021) train N:M
masks from scratch.
"""
from __future__ import annotations

import torch
from torch import nn

from shrinklib._checks import check_instance, check_int
from shrinklib.prune.magnitude import prunable_weights
from shrinklib.prune.masks import MASK, set_mask_
from shrinklib.utils import FilterFn


def check_nm(n, m) -> tuple[int, int]:
    """``(n, m)`` if they are ints with ``1 <= n <= m`` (keep ``n`` of every ``m``), else ``ValueError``."""
    check_int("n", n, minimum=1, what="a positive int")
    check_int("m", m, minimum=1, what="a positive int")
    if n > m:
        raise ValueError(f"N:M sparsity needs n <= m, got n={n}, m={m}")
    return n, m


def check_nm_pair(nm) -> tuple[int, int] | None:
    """``nm`` as an ``(n, m)`` tuple checked by :func:`check_nm`, or ``None``: the ``nm=`` option of one-shot pruners."""
    if nm is None:
        return None
    if not (isinstance(nm, (tuple, list)) and len(nm) == 2):
        raise ValueError(f"nm must be an (n, m) pair of ints such as (2, 4), or None, got {nm!r}")
    return check_nm(*nm)


def nm_mask(weight: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Keep-mask of an ``(out, in)`` weight: the ``n`` largest |w| of each ``m`` along ``in``."""
    check_nm(n, m)
    check_instance("weight", weight, torch.Tensor)
    if weight.ndim != 2:
        raise ValueError(f"N:M masks are defined for 2-D weights (out, in), got shape {tuple(weight.shape)}")
    rows, cols = weight.shape
    if cols % m:
        raise ValueError(f"the input dimension ({cols}) must be a multiple of m={m} for {n}:{m} sparsity")
    groups = weight.detach().abs().reshape(rows, cols // m, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, torch.topk(groups, k=n, dim=-1).indices, True)
    return keep.reshape(rows, cols)


def nm_(model: nn.Module, n: int = 2, m: int = 4, *, filter_fn: FilterFn | None = None) -> nn.Module:
    """Prune every picked layer of ``model`` to N:M sparsity in place; returns ``model``.

    A layer already masked keeps its zeros pruned (they count as magnitude 0). Every
    mask is computed before any layer changes, so a layer whose width does not divide
    by ``m`` leaves the whole model untouched.
    """
    check_nm(n, m)
    new = {}
    for fqn, module in prunable_weights(model, filter_fn).items():
        weight = module.weight
        mask = module._buffers.get(MASK)
        scores = weight.detach() * mask if mask is not None else weight
        try:
            new[fqn] = nm_mask(scores, n, m)
        except ValueError as err:
            raise ValueError(f"{fqn}: {err}") from None
    for fqn, mask in new.items():
        set_mask_(model.get_submodule(fqn), mask)
    return model


def is_nm_sparse(weight: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """True if every group of ``m`` along the input dimension has at most ``n`` nonzeros.

    ``weight`` must be a 2-D tensor ``(out, in)``.
    """
    check_nm(n, m)
    check_instance("weight", weight, torch.Tensor)
    if weight.ndim != 2:
        raise ValueError(f"N:M sparsity is defined for 2-D weights (out, in), got shape {tuple(weight.shape)}")
    rows, cols = weight.shape
    if cols % m:
        return False
    return bool(((weight.reshape(rows, cols // m, m) != 0).sum(-1) <= n).all())
