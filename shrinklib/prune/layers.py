"""Dropping whole encoder layers (Sajjad et al., 2023, "On the effect of dropping layers
of pre-trained transformer models").

The bluntest structured pruning, and often a good one: remove ``n`` of the encoder's
layers and fine-tune. Sajjad et al. compare strategies; dropping the *top* layers (those
nearest the output) holds up best on GLUE, *bottom* worst, *alternate* (every other
layer counting down from the second-highest, so the top layer stays) in between. The layers are deleted from the model, so it is smaller and
faster in proportion, and ``config.num_hidden_layers`` is updated, so the model still
saves and reloads with ``save_pretrained``/``from_pretrained`` as well as
``shrinklib.save``/``load``.
"""
from __future__ import annotations

from typing import Iterable

from torch import nn

STRATEGIES = ("top", "bottom", "alternate")


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ``ModuleList`` of a BERT-style encoder's layers (``...encoder.layer``)."""
    for fqn, module in model.named_modules():
        if fqn.endswith("encoder.layer") and isinstance(module, nn.ModuleList):
            return module
    raise ValueError(f"no BERT-style encoder (a ModuleList at '...encoder.layer') in this {type(model).__name__}")


def layers_to_drop(num_layers: int, n: int, strategy: str = "top") -> list[int]:
    """Which ``n`` of ``num_layers`` layers a strategy of Sajjad et al. removes (sorted)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if not isinstance(n, int) or not 0 <= n < num_layers:
        raise ValueError(f"n must be an int in [0, {num_layers}) (at least one layer stays), got {n!r}")
    if strategy == "top":
        return list(range(num_layers - n, num_layers))
    if strategy == "bottom":
        return list(range(n))
    alternate = list(range(num_layers - 2, -1, -2)) + list(range(num_layers - 1, -1, -2))  # every other, from the top
    return sorted(alternate[:n])


def drop_layers_(model: nn.Module, layers: Iterable[int]) -> nn.Module:
    """Delete the encoder layers ``layers`` (0 = nearest the embeddings); returns ``model``."""
    stack = encoder_layers(model)
    layers = sorted(set(layers))
    if any(not isinstance(i, int) or not 0 <= i < len(stack) for i in layers):
        raise ValueError(f"layers must be ints in [0, {len(stack)}), got {layers}")
    if len(layers) == len(stack):
        raise ValueError("cannot drop every layer of the encoder")
    for i in reversed(layers):
        del stack[i]
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "num_hidden_layers"):
        config.num_hidden_layers = len(stack)
    return model
