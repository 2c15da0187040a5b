"""Block pruning: remove whole ``(rows x cols)`` tiles of a weight matrix.

Unstructured zeros are scattered and hard to skip; zeros in aligned blocks are not. A
block-sparse weight is stored as the dense blocks that remain plus their coordinates
(the BSR format) and multiplied tile by tile, skipping the pruned ones (see the
block-sparse kernel in ``shrinklib.kernels``). Narang et al. (2017, "Block-Sparse
Recurrent Neural Networks") score a block by its largest magnitude (``"max"``);
Lagunas et al. (2021, "Block Pruning For Faster Transformers") learn block scores by
movement; the L2 norm (``"l2"``) is the other common choice. The share ``sparsity`` of
lowest-scoring blocks is pruned, per layer or over all layers.
"""
from __future__ import annotations

import torch
from torch import nn

from shrinklib._checks import check_instance, check_sparsity, is_int
from shrinklib.prune.magnitude import prunable_weights, select_smallest
from shrinklib.prune.masks import MASK, set_mask_
from shrinklib.utils import FilterFn

CRITERIA = ("max", "l2")


def _check_block(block) -> tuple[int, int]:
    if (not isinstance(block, tuple) or len(block) != 2
            or any(not is_int(b) or b < 1 for b in block)):
        raise ValueError(f"block must be a (rows, cols) pair of positive ints, got {block!r}")
    return block


def _check_criterion(criterion) -> str:
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    return criterion


def block_scores(weight: torch.Tensor, block: tuple[int, int], criterion: str = "max") -> torch.Tensor:
    """One score per block of an ``(out, in)`` weight: shape ``(out // rows, in // cols)``."""
    rows, cols = _check_block(block)
    _check_criterion(criterion)
    check_instance("weight", weight, torch.Tensor)
    if weight.ndim != 2 or weight.shape[0] % rows or weight.shape[1] % cols:
        raise ValueError(f"block {block} does not divide the weight of shape {tuple(weight.shape)}")
    tiles = weight.detach().abs().reshape(weight.shape[0] // rows, rows, weight.shape[1] // cols, cols)
    if criterion == "max":
        return tiles.amax(dim=(1, 3))
    return tiles.pow(2).sum(dim=(1, 3)).sqrt()


def expand_blocks(block_mask: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """A per-block mask ``(R, C)`` blown up to the weight's shape ``(R*rows, C*cols)``."""
    rows, cols = _check_block(block)
    check_instance("block_mask", block_mask, torch.Tensor)
    return block_mask.repeat_interleave(rows, dim=0).repeat_interleave(cols, dim=1)


def block_(model: nn.Module, sparsity: float = 0.5, *, block: tuple[int, int] = (32, 32), scope: str = "global",
           criterion: str = "max", filter_fn: FilterFn | None = None) -> nn.Module:
    """Prune the ``sparsity`` share of blocks of each picked layer (or of all); returns ``model``.

    A block already partly masked is scored on its remaining weights. Every mask is
    computed before any layer changes, so a block size that does not divide some weight
    leaves the whole model untouched; so do a ``model`` that is not an ``nn.Module``, a
    ``sparsity`` outside [0, 1), and a ``block``, ``scope`` or ``criterion`` not allowed.
    """
    sparsity = check_sparsity(sparsity)
    _check_block(block)
    _check_criterion(criterion)
    scores = {}
    for fqn, module in prunable_weights(model, filter_fn).items():
        mask = module._buffers.get(MASK)
        weight = module.weight.detach() * mask if mask is not None else module.weight
        try:
            scores[fqn] = block_scores(weight, block, criterion)
        except ValueError as err:
            raise ValueError(f"{fqn}: {err}") from None
    keep = select_smallest(scores, sparsity, scope)
    for fqn, block_mask in keep.items():
        module = model.get_submodule(fqn)
        full = expand_blocks(block_mask, block)
        old = module._buffers.get(MASK)
        set_mask_(module, full & old if old is not None else full)
    return model
