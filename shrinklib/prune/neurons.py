"""FFN-neuron pruning that makes the model smaller.

Each feed-forward block computes ``W_2 act(W_1 x + b_1) + b_2``; neuron ``j`` owns row
``j`` of ``W_1`` (and ``b_1[j]``) and column ``j`` of ``W_2``. Removing a neuron cuts
both, so the two matrices shrink and the FFN, the largest share of an encoder's MACs,
gets cheaper. Neurons are ranked by the first-order Taylor importance of
:mod:`shrinklib.prune.gates` (Molchanov et al., 2017; used for BERT FFNs by
Michel et al., 2019, and in CoFi, Xia et al., 2022). Each layer may keep a different
width; the new shapes are recorded by ``shrinklib.save`` from the Linear layers.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from shrinklib._checks import check_iterable, check_mapping, check_module, is_int
from shrinklib.arch import FeedForward, ffn_modules, slice_linear
from shrinklib.prune.gates import check_layer_index, gate_importance


def _bert_ffns(model: nn.Module) -> list[FeedForward]:
    """The FFNs whose neurons this file can remove: BERT's (``intermediate.dense`` + ``output.dense``)."""
    return [f for f in ffn_modules(model) if f.gate is None]


def neuron_importance(model: nn.Module, batches: Iterable[dict], *, max_batches: int | None = None) -> list[torch.Tensor]:
    """Taylor importance of every FFN neuron, one tensor per layer.

    ``model`` must be an ``nn.Module`` and ``batches`` an iterable of dicts with ``labels``.
    """
    check_module(model)
    layers = _bert_ffns(model)
    sites = {f.fqn: (f.module.intermediate, f.intermediate_size) for f in layers}
    scores = gate_importance(model, sites, batches, max_batches=max_batches)
    return [scores[f.fqn] for f in layers]


def prune_neurons_(model: nn.Module, keep: dict[int, Iterable[int]]) -> nn.Module:
    """Keep only the neurons ``keep[layer]`` in each listed layer's FFN; returns ``model``.

    At least one neuron per layer must stay. All requests are checked first: ``model`` an
    ``nn.Module``, ``keep`` a mapping of layer indices to iterables of neuron numbers.
    """
    check_module(model)
    check_mapping("keep", keep)
    layers = _bert_ffns(model)
    if not layers:
        raise ValueError(f"no BERT-style FFN found in this {type(model).__name__}")
    plan = {}
    for layer, kept in keep.items():
        check_layer_index(layer, len(layers))
        width = layers[layer].intermediate_size
        kept = set(check_iterable(f"keep[{layer}]", kept, what="an iterable of neuron numbers"))
        if any(not is_int(j) for j in kept):
            raise ValueError(f"layer {layer} has neurons 0..{width - 1}; keep must name at least one of them")
        kept = sorted(kept)
        if not kept or any(not is_int(j) or not 0 <= j < width for j in kept):
            raise ValueError(f"layer {layer} has neurons 0..{width - 1}; keep must name at least one of them")
        plan[layer] = kept
    for layer, kept in plan.items():
        module = layers[layer].module
        index = torch.tensor(kept, device=module.intermediate.dense.weight.device)
        module.intermediate.dense = slice_linear(module.intermediate.dense, index, dim=0)
        module.output.dense = slice_linear(module.output.dense, index, dim=1)
    return model

