"""Importance of structured units (heads, neurons) as the gradient of the loss at a gate.

Put a gate ``xi_u = 1`` on the output of every unit ``u`` (an attention head's context
vector, an FFN neuron's activation) and measure how much the loss cares:
``I_u = sum over batches of |dL / d xi_u|``. For heads this is the importance of Michel
et al. (2019, "Are Sixteen Heads Really Better than One?"); for a neuron, whose gate
multiplies its activation ``a``, ``dL/dxi = a * dL/da`` summed over tokens is the
first-order Taylor criterion of Molchanov et al. (2017). The gates are the only tensors
differentiated (``torch.autograd.grad``), so no parameter gradient is touched.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from shrinklib._checks import check_instance, check_int, check_iterable, check_mapping, check_module, check_number
from shrinklib.calibration import run_batches


def gate_importance(model: nn.Module, sites: dict[str, tuple[nn.Module, int]], batches: Iterable[dict],
                    *, max_batches: int | None = None) -> dict[str, torch.Tensor]:
    """``{site: importance of each of its units}`` over ``batches`` (dicts with ``labels``).

    ``sites[name] = (module, units)``: the module's output (the first element if it
    returns a tuple) has a last dimension of ``units * unit_size`` and unit ``u`` owns
    the ``u``-th slice of it. ``model`` must be an ``nn.Module``, ``sites`` a mapping of such
    pairs and ``batches`` an iterable of dicts; the model's weights and gradients are not changed.
    """
    check_module(model)
    check_mapping("sites", sites)
    check_iterable("batches", batches, what="an iterable of batches (a list of dicts, a DataLoader)")
    if not sites:
        raise ValueError("no site to measure: the model has no unit of the kind asked for")
    for name, site in sites.items():
        if not (isinstance(site, tuple) and len(site) == 2):
            raise TypeError(f"sites[{name!r}] must be a (module, units) pair, got {site!r}")
        check_module(site[0], f"sites[{name!r}][0]")
        check_int(f"sites[{name!r}][1]", site[1], minimum=1, what="a positive int (the number of units)")
    device = next(model.parameters()).device
    gates = {name: torch.ones(units, device=device, requires_grad=True) for name, (_, units) in sites.items()}
    totals = {name: torch.zeros(units, device=device) for name, (_, units) in sites.items()}

    def hook_for(name: str):
        def hook(module, args, output):
            first = output[0] if isinstance(output, tuple) else output
            shape = first.shape
            gated = (first.reshape(*shape[:-1], gates[name].numel(), -1) * gates[name][:, None]).reshape(shape)
            return (gated, *output[1:]) if isinstance(output, tuple) else gated

        return hook

    def step(batch: dict) -> None:
        if "labels" not in batch:
            raise ValueError("importance needs batches with 'labels' (the loss is differentiated)")
        grads = torch.autograd.grad(model(**batch).loss, list(gates.values()))
        for name, grad in zip(gates, grads):
            totals[name] += grad.abs()

    handles = [module.register_forward_hook(hook_for(name)) for name, (module, _) in sites.items()]
    run_batches(model, batches, step, handles=handles, max_batches=max_batches, what="importance")
    return {name: total.cpu() for name, total in totals.items()}


def check_layer_index(layer, count: int) -> int:
    """``layer`` if it is an int in ``[0, count)``; the error every structured pruner gives otherwise."""
    return check_int("layer", layer, minimum=0, maximum=count - 1, what=f"an int in [0, {count})")


def lowest_units(scores: list[torch.Tensor], fraction: float, *, scope: str = "global") -> list[list[int]]:
    """Per layer, the indices of the units to *remove*: the ``fraction`` with lowest score.

    ``scope="global"`` ranks all units of all layers together (layers lose different
    shares; at least one unit per layer stays), ``"layer"`` removes the same share everywhere.
    ``scores`` must be a list (an iterable) of 1-D tensors.
    """
    check_iterable("scores", scores, what="a list of 1-D tensors, one per layer")
    scores = list(scores)
    if not scores:
        raise ValueError("scores is empty: give one tensor of unit scores per layer")
    for i, s in enumerate(scores):
        check_instance(f"scores[{i}]", s, torch.Tensor)
        if s.ndim != 1:
            raise ValueError(f"scores[{i}] must be 1-D (one score per unit), got shape {tuple(s.shape)}")
    fraction = check_number("fraction", fraction, low=0, high=1, high_open=True, what="in [0, 1)")
    if scope == "layer":
        return [torch.argsort(s)[: round(fraction * s.numel())].tolist() for s in scores]
    if scope != "global":
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    flat = torch.cat(scores)
    owner = torch.cat([torch.full((s.numel(),), i) for i, s in enumerate(scores)])
    offsets = torch.cumsum(torch.tensor([0] + [s.numel() for s in scores]), 0)
    removed: list[list[int]] = [[] for _ in scores]
    budget = round(fraction * flat.numel())
    for j in torch.argsort(flat).tolist():
        if budget == 0:
            break
        layer = int(owner[j])
        if len(removed[layer]) < scores[layer].numel() - 1:  # keep one unit per layer
            removed[layer].append(j - int(offsets[layer]))
            budget -= 1
    return removed
