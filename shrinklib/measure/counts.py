"""Counting parameters: in all, by component, and the nonzero ones (sparsity).

* :func:`count_parameters` - every parameter once (tied weights, such as an LM head
  sharing the embedding matrix, count once): ``sum(p.numel() for p in model.parameters())``,
  plus the weights that compressed layers keep in buffers instead of parameters
  (quantized, clustered and 2:4-packed layers, see :func:`stored_weight`), so that a
  compressed model has as many parameters as the model it came from.
* :func:`parameters_by_component` - the same total broken down by
  :func:`~shrinklib.measure.components.component_of`.
* :func:`nonzeros` / :func:`sparsity` - over the *weights* of the modules a ``filter_fn``
  picks (default: the encoder's ``nn.Linear`` layers, :func:`shrinklib.utils.encoder_linears`),
  which is where pruning acts (Han et al., 2015, "Learning both Weights and Connections
  for Efficient Neural Networks"). Weights pruned with ``torch.nn.utils.prune`` are
  counted as the masked tensor the module computes with, not the ``weight_orig`` it keeps.
* :func:`nonzero_parameters` - nonzero entries of every parameter, biases and norms
  included, comparable with :func:`count_parameters`.
"""
from __future__ import annotations

import torch
from torch import nn

from shrinklib._checks import check_module
from shrinklib.measure.components import component_of, empty_breakdown
from shrinklib.utils import FilterFn, matching_modules


def _effective(module: nn.Module, name: str) -> tuple[str, torch.Tensor]:
    """``(name, tensor)`` the module computes with for its parameter ``name`` (pruning-aware)."""
    if name.endswith("_orig") and hasattr(module, name[: -len("_orig")] + "_mask"):
        base = name[: -len("_orig")]
        return base, getattr(module, base)
    return name, module._parameters[name]


def module_weights(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The weight tensors of ``module`` itself (not its children), as it computes with them.

    Parameters whose name starts with ``weight`` (``weight``, an LSTM's ``weight_ih_l0``,
    ...), pruned ones resolved to their masked value, and a buffer named ``weight`` (a
    weight stored in integer form by a quantized layer). Biases are not weights.
    """
    check_module(module, "module")
    found: dict[str, torch.Tensor] = {}
    for name, param in module._parameters.items():
        if param is None:
            continue
        base, tensor = _effective(module, name)
        if base.startswith("weight"):
            found[base] = tensor
    buffer = module._buffers.get("weight")
    if buffer is not None and "weight" not in found:
        found["weight"] = buffer
    return list(found.items())


def stored_weight(module: nn.Module) -> torch.Tensor | None:
    """The dense weight a compressed layer keeps in buffers, not parameters; ``None`` for other modules.

    Quantized and clustered layers (``dequantized_weight()``) and 2:4-packed layers
    (``dense_weight()``) store integers, codes or packed values; the weight they stand for
    is still one parameter per entry.
    """
    for method in ("dequantized_weight", "dense_weight"):
        fn = getattr(module, method, None)
        if callable(fn):
            with torch.no_grad():
                return fn()
    return None


def _count_nonzero(tensor: torch.Tensor) -> int:
    if tensor.layout != torch.strided:
        tensor = tensor.to_dense()
    return int(torch.count_nonzero(tensor.detach()))


def count_parameters(model: nn.Module) -> int:
    """Number of parameters, each shared (tied) tensor once."""
    check_module(model)
    stored = (stored_weight(m) for m in model.modules())
    return sum(p.numel() for p in model.parameters()) + sum(w.numel() for w in stored if w is not None)


def parameters_by_component(model: nn.Module) -> dict[str, int]:
    """``{component: parameters}`` for every component; the values sum to :func:`count_parameters`.

    A tied tensor counts once, in the component of the first module that holds it (for a
    Llama with tied embeddings: ``embeddings``, not ``head``).
    """
    check_module(model)
    out = empty_breakdown()
    seen: set[int] = set()
    for fqn, module in model.named_modules():
        for param in module.parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            out[component_of(fqn, module)] += param.numel()
        stored = stored_weight(module)
        if stored is not None:
            out[component_of(fqn, module)] += stored.numel()
    return out


def _picked_weights(model: nn.Module, filter_fn: FilterFn | None) -> list[torch.Tensor]:
    check_module(model)
    weights, seen = [], set()
    picked_any = False
    for _, module in matching_modules(model, filter_fn):
        picked_any = True
        for _, tensor in module_weights(module):
            if id(tensor) not in seen:
                seen.add(id(tensor))
                weights.append(tensor)
    if not weights:
        what = "no module" if not picked_any else "only modules without weights"
        raise ValueError(
            f"filter_fn={getattr(filter_fn, '__name__', filter_fn)!r} picked {what} of this "
            f"{type(model).__name__}; pick at least one module with a weight (default: the encoder's nn.Linear layers)"
        )
    return weights


def nonzeros(model: nn.Module, filter_fn: FilterFn | None = None) -> int:
    """Nonzero entries in the weights of the modules ``filter_fn`` picks (default: encoder linears)."""
    return sum(_count_nonzero(w) for w in _picked_weights(model, filter_fn))


def sparsity(model: nn.Module, filter_fn: FilterFn | None = None) -> float:
    """Fraction of zeros in the weights of the modules ``filter_fn`` picks (default: encoder linears)."""
    weights = _picked_weights(model, filter_fn)
    total = sum(w.numel() for w in weights)
    if total == 0:
        raise ValueError("the picked weights are empty (0 entries); sparsity is undefined")
    return 1.0 - sum(_count_nonzero(w) for w in weights) / total


def nonzero_parameters(model: nn.Module) -> int:
    """Nonzero entries over all parameters (each tied tensor once, pruned ones as masked)."""
    check_module(model)
    total, seen = 0, set()
    for _, module in model.named_modules():
        for name, param in module._parameters.items():
            if param is None or id(param) in seen:
                continue
            seen.add(id(param))
            total += _count_nonzero(_effective(module, name)[1])
        stored = stored_weight(module)
        if stored is not None:
            total += _count_nonzero(stored)
    return total
