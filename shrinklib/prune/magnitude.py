"""Unstructured magnitude pruning: remove the weights of smallest absolute value.

The oldest and simplest criterion (Han et al., 2015; for text, See et al., 2016 and
Zhu & Gupta, 2017): a weight's importance is its magnitude, and a fraction ``s`` of the
least important weights is set to zero. The *scope* decides among which weights the
fraction is taken:

* ``"layer"``: in every layer separately, so each keeps ``1 - s`` of its weights;
* ``"global"``: over all chosen layers at once, so layers whose weights are small
  overall lose more of them.

For each pool of weights the ``round(s * n)`` smallest magnitudes are pruned, the rule
``torch.nn.utils.prune.l1_unstructured`` / ``global_unstructured`` follow, so the masks
are identical to torch's (tests check it). The result is held in ``weight_mask``
buffers (see :mod:`shrinklib.prune.masks`).
"""
from __future__ import annotations

import torch
from torch import nn

from shrinklib._checks import check_instance, check_mapping, check_sparsity
from shrinklib.prune.masks import MASK, set_mask_
from shrinklib.utils import FilterFn, weighted_modules

SCOPES = ("layer", "global")


def prunable_weights(model: nn.Module, filter_fn: FilterFn | None = None) -> dict[str, nn.Module]:
    """``{fqn: module}`` of the modules ``filter_fn`` picks that have a floating-point weight.

    The default ``filter_fn`` is :func:`shrinklib.utils.encoder_linears` (the body's
    Linear layers, not the head). A model with none raises ``ValueError``.
    """
    return weighted_modules(model, filter_fn, what="prunable layer")


def _smallest(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Boolean keep-mask pruning the ``round(sparsity * n)`` smallest entries of ``scores``."""
    flat = scores.flatten()
    k = round(sparsity * flat.numel())
    if k == 0:
        return torch.ones_like(scores, dtype=torch.bool)
    # The k-th smallest value as a threshold: ~8x faster than topk with a large k on the
    # CPU (movement pruning recomputes its masks every step). Entries tied at the
    # threshold are pruned in index order until exactly k are gone.
    threshold = torch.kthvalue(flat, k).values
    keep = flat > threshold
    excess = int((~keep).sum()) - k
    if excess > 0:
        tied = torch.nonzero(flat == threshold).flatten()
        keep[tied[-excess:]] = True
    return keep.view(scores.shape)


def magnitude_masks(model: nn.Module, sparsity: float, *, scope: str = "global",
                    filter_fn: FilterFn | None = None) -> dict[str, torch.Tensor]:
    """The keep-masks magnitude pruning would set, without changing ``model``.

    A weight already masked counts as magnitude 0, so masks only grow sparser. ``model``
    must be an ``nn.Module``, ``sparsity`` a number in [0, 1) and ``scope`` one of :data:`SCOPES`.
    """
    sparsity = check_sparsity(sparsity)
    modules = prunable_weights(model, filter_fn)
    with torch.no_grad():
        scores = {}
        for fqn, m in modules.items():
            w = m.weight.detach().abs()
            mask = m._buffers.get(MASK)
            scores[fqn] = w * mask if mask is not None else w
        return select_smallest(scores, sparsity, scope)


def select_smallest(scores: dict, sparsity: float, scope: str) -> dict:
    """Keep-masks pruning the ``sparsity`` share of lowest ``scores``, per tensor or over all.

    The selection every score-based method shares (magnitude, blocks, See et al.'s
    schemes, movement, Wanda row by row, SparseGPT block by block): ``scores`` maps any
    keys to tensors; ``scope="layer"`` prunes ``round(s * n)`` entries of each tensor,
    ``"global"`` ``round(s * N)`` entries of all of them together. Entries tied at the
    threshold are pruned in index order, so exactly that many go (the rule of
    ``torch.nn.utils.prune``). One tensor is ``select_smallest({"w": w}, s, "layer")["w"]``.
    ``scores`` must be a mapping of tensors, ``sparsity`` a number in [0, 1).
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    check_mapping("scores", scores)
    for key, s in scores.items():
        check_instance(f"scores[{key!r}]", s, torch.Tensor)
    sparsity = check_sparsity(sparsity)
    if scope == "layer":
        return {fqn: _smallest(s, sparsity) for fqn, s in scores.items()}
    flat = _smallest(torch.cat([s.flatten() for s in scores.values()]), sparsity)
    out, start = {}, 0
    for fqn, s in scores.items():
        out[fqn] = flat[start:start + s.numel()].view(s.shape)
        start += s.numel()
    return out


def magnitude_(model: nn.Module, sparsity: float = 0.5, *, scope: str = "global",
               filter_fn: FilterFn | None = None) -> nn.Module:
    """Prune ``model`` in place to ``sparsity`` by weight magnitude; returns ``model``.

    Every mask is computed before any layer changes, so bad input leaves the model whole
    (the checks are :func:`magnitude_masks`').
    """
    for fqn, mask in magnitude_masks(model, sparsity, scope=scope, filter_fn=filter_fn).items():
        set_mask_(model.get_submodule(fqn), mask)
    return model
