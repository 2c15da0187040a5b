"""Pruning recurrent models: the three schemes of See et al. (2016, "Compression of
Neural Machine Translation Models via Pruning").

See et al. group an NMT model's weights into *classes* (embeddings, each LSTM layer's
input and recurrent matrices, the softmax weights) and compare three ways of pruning a
share ``s`` of all weights by magnitude:

* ``"class-blind"``: the ``s`` smallest |w| of the whole model, wherever they are
  (their best scheme: some classes tolerate far more pruning than others);
* ``"class-uniform"``: the ``s`` smallest |w| within every class;
* ``"class-distribution"``: in class ``c`` prune |w| < lambda * sigma_c, with ``sigma_c``
  the class's standard deviation and one lambda chosen so the total share is ``s``.

All three are one global or per-class selection on a score: |w| for the first two,
|w| / sigma_c for the third. Biases are left alone, as in the paper.
"""
from __future__ import annotations

import torch
from torch import nn

from shrinklib._checks import check_module, check_sparsity
from shrinklib.prune.magnitude import select_smallest
from shrinklib.prune.masks import SUFFIX, set_mask_
from shrinklib.utils import FilterFn, check_filter_fn

SCHEMES = ("class-blind", "class-uniform", "class-distribution")


def weight_classes(model: nn.Module, *, filter_fn: FilterFn | None = None) -> dict[str, tuple[nn.Module, str]]:
    """``{"fqn.param": (module, param)}``: every weight matrix (2-D or more) of the modules ``filter_fn`` picks.

    The default picks every module, so every weight matrix of the model is a class.
    ``model`` must be an ``nn.Module`` and ``filter_fn`` callable or ``None``.
    """
    check_module(model)
    pick = check_filter_fn(filter_fn, default=lambda module, fqn: True)
    classes = {}
    for fqn, module in model.named_modules():
        if not pick(module, fqn):
            continue
        for name, param in module.named_parameters(recurse=False):
            if param.ndim >= 2 and param.is_floating_point():
                classes[f"{fqn}.{name}" if fqn else name] = (module, name)
    if not classes:
        raise ValueError(f"no prunable weight matrix in this {type(model).__name__}")
    return classes


def see_prune_(model: nn.Module, sparsity: float = 0.5, *, scheme: str = "class-blind",
               filter_fn: FilterFn | None = None) -> nn.Module:
    """Prune ``sparsity`` of the weight matrices of ``model`` by a scheme of See et al.; returns ``model``.

    ``filter_fn(module, fqn)`` picks the modules whose weight matrices are pruned (each
    matrix one class, see :func:`weight_classes`); the default picks every module, so all
    weight matrices are pruned, embeddings and softmax included, as in the paper.
    """
    sparsity = check_sparsity(sparsity)
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    classes = weight_classes(model, filter_fn=filter_fn)
    scores = {}
    with torch.no_grad():
        for key, (module, name) in classes.items():
            weight = getattr(module, name).detach()
            mask = module._buffers.get(name + SUFFIX)
            magnitude = weight.abs() * mask if mask is not None else weight.abs()
            scores[key] = magnitude / weight.std() if scheme == "class-distribution" else magnitude
    keep = select_smallest(scores, sparsity, "layer" if scheme == "class-uniform" else "global")
    for key, mask in keep.items():
        module, name = classes[key]
        set_mask_(module, mask, name)
    return model
