"""Attention-head pruning that makes the model smaller (Michel et al., 2019).

Many heads can be removed from a trained BERT with little loss. Heads are ranked by the
gradient importance of :mod:`shrinklib.prune.gates` (normalized by the L2 norm within
each layer, as Michel et al. do), and :func:`prune_heads_` removes them *physically*:
the rows of the query, key and value projections and the columns of the attention
output projection that belong to a removed head are cut out, so the matrices shrink and
the model gets faster. transformers 5 no longer has ``prune_heads`` and its config holds
one head count for all layers, so each layer's new count is logged with
``shrinklib.rebuild.record_change`` and ``shrinklib.load`` rebuilds it.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from shrinklib._checks import check_bool, check_iterable, check_mapping, check_module, check_positive_int, is_int
from shrinklib.arch import Attention, attention_modules, slice_linear
from shrinklib.prune.gates import check_layer_index, gate_importance
from shrinklib.rebuild import record_change, register_change


def _bert_attentions(model: nn.Module) -> list[Attention]:
    """The self-attention modules whose heads this file can remove: BERT's (one head count per module)."""
    return [a for a in attention_modules(model) if hasattr(a.module, "attention_head_size")]


def head_importance(model: nn.Module, batches: Iterable[dict], *, max_batches: int | None = None,
                    normalize: bool = True) -> list[torch.Tensor]:
    """Importance of every head, one tensor per layer (layers may hold different counts).

    ``model`` must be an ``nn.Module`` and ``batches`` an iterable of dicts with ``labels``.
    """
    check_module(model)
    check_bool("normalize", normalize)
    layers = _bert_attentions(model)
    scores = gate_importance(model, {a.fqn: (a.module, a.num_heads) for a in layers}, batches, max_batches=max_batches)
    out = [scores[a.fqn] for a in layers]
    if normalize:
        out = [s / s.norm().clamp_min(1e-12) for s in out]
    return out


def prune_heads_(model: nn.Module, heads: dict[int, Iterable[int]]) -> nn.Module:
    """Remove, in place, the heads ``heads[layer]`` of each layer; returns ``model``.

    Head numbers refer to the layer's current heads. Every layer keeps at least one head
    (drop a whole layer with ``shrinklib.prune.drop_layers_`` instead). All requests are
    checked before anything changes: ``model`` an ``nn.Module``, ``heads`` a mapping of
    layer indices to iterables of head numbers.
    """
    check_module(model)
    check_mapping("heads", heads)
    layers = _bert_attentions(model)
    if not layers:
        raise ValueError(f"no BERT-style attention layer found in this {type(model).__name__}")
    plan = {}
    for layer, removed in heads.items():
        check_layer_index(layer, len(layers))
        removed = set(check_iterable(f"heads[{layer}]", removed, what="an iterable of head numbers"))
        total = layers[layer].num_heads
        if any(not is_int(h) or not 0 <= h < total for h in removed):
            raise ValueError(f"layer {layer} has heads 0..{total - 1}; cannot remove {sorted(removed, key=str)}")
        if len(removed) == total:
            raise ValueError(f"cannot remove all {total} heads of layer {layer}; drop the layer instead")
        plan[layer] = [h for h in range(total) if h not in removed]
    for layer, kept in plan.items():
        fqn, attention, output = layers[layer].fqn, layers[layer].module, layers[layer].output
        size = attention.attention_head_size
        index = torch.cat([torch.arange(h * size, (h + 1) * size) for h in kept]).to(attention.query.weight.device)
        for name in ("query", "key", "value"):
            setattr(attention, name, slice_linear(getattr(attention, name), index, dim=0))
        parent = model.get_submodule(fqn.rpartition(".")[0])
        parent.output.dense = slice_linear(output, index, dim=1)
        _set_head_count(attention, len(kept))
        record_change(model, "attention_heads", fqn=fqn, num_heads=len(kept))
    return model


def _set_head_count(attention: nn.Module, num_heads: int) -> None:
    attention.num_attention_heads = num_heads
    attention.all_head_size = num_heads * attention.attention_head_size


@register_change("attention_heads")
def _replay_heads(model: nn.Module, payload: dict) -> None:
    """Replay a head count that ``shrinklib.load`` read: ``fqn`` must name an attention module
    and ``num_heads`` be an int >= 1 that fits its (already sliced) query projection's ``out_features``."""
    if set(payload) != {"fqn", "num_heads"} or not isinstance(payload["fqn"], str):
        raise ValueError(f"an attention_heads change has the keys 'fqn' (a string) and 'num_heads', got {payload!r:.120}")
    num_heads = check_positive_int("num_heads", payload["num_heads"])
    attention = model.get_submodule(payload["fqn"])
    size = getattr(attention, "attention_head_size", None)
    width = getattr(getattr(attention, "query", None), "out_features", None)  # checked where the projection says
    if not is_int(size) or (width is not None and width != num_heads * size):
        raise ValueError(f"{payload['fqn']!r} is not an attention module whose query projection has "
                         f"num_heads ({num_heads}) heads")
    _set_head_count(attention, num_heads)
