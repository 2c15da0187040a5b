"""Lottery tickets: iterative magnitude pruning with rewinding.

Frankle & Carbin (2019, "The Lottery Ticket Hypothesis") find sparse subnetworks that
train as well as the dense network *from their original initialization*: train, prune
the smallest weights, reset the survivors to their initial values, and repeat, each
round removing a share of what is left. For large models the reset goes to an early
training checkpoint instead (*rewinding*; Frankle et al., 2020); for BERT, Chen et al.
(2020, "The Lottery Ticket Hypothesis for Pre-trained BERT Networks") rewind to the
pre-trained weights, so tickets are found per downstream task.

:func:`find_lottery_ticket` runs the rounds with a training function you supply (usually a
``shrinklib.train.fit`` call with ``keep_masks``) and leaves the model holding the
ticket: the rewound weights under the final mask, ready for its last training.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from shrinklib._checks import check_instance, check_int, check_mapping, check_module, check_sparsity
from shrinklib.prune.magnitude import SCOPES, magnitude_, prunable_weights
from shrinklib.prune.masks import SUFFIX, apply_masks_
from shrinklib.utils import FilterFn


def round_sparsities(final_sparsity: float, rounds: int) -> list[float]:
    """Sparsity after each round when every round prunes the same share of what remains."""
    final_sparsity = check_sparsity(final_sparsity)
    check_int("rounds", rounds, minimum=1, what="a positive int")
    return [1 - (1 - final_sparsity) ** (r / rounds) for r in range(1, rounds + 1)]


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's parameters (not its masks): the state to rewind to."""
    check_module(model)
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _check_state(model: nn.Module, state) -> dict[str, nn.Parameter]:
    """``model``'s parameters by name, once ``state`` is checked to hold exactly them, as tensors of their shapes."""
    check_module(model)
    check_mapping("state", state)
    params = dict(model.named_parameters())
    missing, unknown = params.keys() - state.keys(), state.keys() - params.keys()
    if missing:
        raise ValueError(f"the rewind state lacks parameters: {sorted(missing)[:5]}")
    if unknown:
        raise ValueError(f"the rewind state holds parameters this model does not have: {sorted(unknown, key=str)[:5]}")
    for name, value in state.items():
        check_instance(f"state[{name!r}]", value, torch.Tensor)
        if value.shape != params[name].shape:
            raise ValueError(f"state[{name!r}] has shape {tuple(value.shape)}, the parameter {tuple(params[name].shape)}")
    return params


@torch.no_grad()
def rewind_(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Set the parameters back to ``state`` and re-apply the masks; returns ``model``.

    ``state`` (from :func:`snapshot`) must map exactly the model's parameter names to
    tensors of their shapes; it is checked in full before any parameter changes.
    """
    params = _check_state(model, state)
    for name, value in state.items():
        params[name].copy_(value)
    return apply_masks_(model)


def find_lottery_ticket(model: nn.Module, train: Callable[[nn.Module, int], None], *, final_sparsity: float,
                        rounds: int, rewind_state: dict[str, torch.Tensor] | None = None, scope: str = "global",
                        filter_fn: FilterFn | None = None) -> list[dict]:
    """Find a ticket in place: ``rounds`` of train -> prune -> rewind; returns one row per round.

    Its result is the history of the rounds (target and reached sparsity), not the model,
    so its name does not end in ``_``; ``model`` is left holding the ticket.

    ``train(model, round)`` trains the model as it is (keep its masks with
    ``shrinklib.prune.keep_masks``). ``rewind_state`` defaults to the parameters
    ``model`` has when called (for BERT: the pre-trained weights, as in Chen et al.).

    Every argument is checked before ``train`` is first called (``model`` an ``nn.Module``
    with layers ``filter_fn`` picks, ``scope`` one of ``"layer"``/``"global"``,
    ``rewind_state`` matching the model as :func:`rewind_` requires), so bad options fail
    before any training; an error raised by ``train`` itself leaves the model as trained so far.
    """
    targets = round_sparsities(final_sparsity, rounds)
    if not callable(train):
        raise TypeError("train must be callable as train(model, round)")
    prunable_weights(check_module(model), filter_fn)
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if rewind_state is None:
        rewind_state = snapshot(model)
    else:
        _check_state(model, rewind_state)
    history = []
    for r, sparsity in enumerate(targets, start=1):
        train(model, r)
        magnitude_(model, sparsity, scope=scope, filter_fn=filter_fn)
        rewind_(model, rewind_state)
        masks = [b for m in model.modules() for n, b in m._buffers.items() if n.endswith(SUFFIX) and b is not None]
        pruned = sum(int((~b).sum()) for b in masks)
        history.append({"round": r, "target_sparsity": sparsity, "sparsity": pruned / sum(b.numel() for b in masks)})
    return history
