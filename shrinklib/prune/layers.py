"""Dropping whole encoder layers (Sajjad et al., 2023, "On the effect of dropping layers
of pre-trained transformer models").

The bluntest structured pruning, and often a good one: remove ``n`` of the encoder's
layers and fine-tune. Sajjad et al. compare strategies; dropping the *top* layers (those
nearest the output) holds up best on GLUE, *bottom* worst, *alternate* (every other
layer counting down from the second-highest, so the top layer stays) in between. The layers are deleted from the model, so it is smaller and
faster in proportion, and ``config.num_hidden_layers`` is updated, so the model still
saves and reloads with ``save_pretrained``/``from_pretrained`` as well as
``shrinklib.save``/``load``.

LayerDrop (Fan et al., 2020, "Reducing Transformer Depth on Demand with Structured
Dropout") trains for this: each layer is skipped with probability ``p`` at every
training step, so the network learns not to rely on any single layer and sub-networks
of any depth work at inference without retraining. :func:`layer_drop` switches it on
for the duration of a ``with`` block (usually around ``shrinklib.train.fit``).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from torch import nn

from shrinklib._checks import check_int, check_iterable, check_module, check_number, check_positive_int, is_int
from shrinklib.arch import encoder_layers
from shrinklib.utils import check_seed

STRATEGIES = ("top", "bottom", "alternate")


def layers_to_drop(num_layers: int, n: int, strategy: str = "top") -> list[int]:
    """Which ``n`` of ``num_layers`` layers a strategy of Sajjad et al. removes (sorted)."""
    check_positive_int("num_layers", num_layers)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    check_int("n", n, minimum=0, maximum=num_layers - 1, what=f"an int in [0, {num_layers}) (at least one layer stays)")
    if strategy == "top":
        return list(range(num_layers - n, num_layers))
    if strategy == "bottom":
        return list(range(n))
    alternate = list(range(num_layers - 2, -1, -2)) + list(range(num_layers - 1, -1, -2))  # every other, from the top
    return sorted(alternate[:n])


def drop_layers_(model: nn.Module, layers: Iterable[int]) -> nn.Module:
    """Delete the encoder layers ``layers`` (0 = nearest the embeddings); returns ``model``.

    ``model`` must be an ``nn.Module`` with a BERT-style encoder and ``layers`` an iterable
    of layer indices that leaves at least one layer; all is checked before a layer goes.
    """
    stack = encoder_layers(check_module(model))
    layers = list(check_iterable("layers", layers, what="an iterable of layer indices"))
    if any(not is_int(i) or not 0 <= i < len(stack) for i in layers):
        raise ValueError(f"layers must be ints in [0, {len(stack)}), got {layers}")
    layers = sorted(set(layers))
    if len(layers) == len(stack):
        raise ValueError("cannot drop every layer of the encoder")
    for i in reversed(layers):
        del stack[i]
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "num_hidden_layers"):
        config.num_hidden_layers = len(stack)
    return model


@contextmanager
def layer_drop(model: nn.Module, p: float, *, seed: int = 0) -> Iterator[nn.Module]:
    """While the block runs, skip each encoder layer with probability ``p`` in training mode.

    A skipped layer passes its input through unchanged, and its computation is not done.
    In eval mode every layer runs. The draws are seeded. Nothing about the model is
    changed once the block ends (the layers' own ``forward`` is restored).
    """
    p = check_number("p", p, low=0, high=1, high_open=True, what="a probability in [0, 1)")
    check_seed(seed)
    stack = encoder_layers(check_module(model))
    generator = torch.Generator().manual_seed(seed)
    patched = []
    for layer in stack:
        def forward(hidden_states, *args, _layer=layer, _forward=layer.forward, **kwargs):
            if _layer.training and torch.rand((), generator=generator).item() < p:
                return hidden_states
            return _forward(hidden_states, *args, **kwargs)

        layer.forward = forward
        patched.append(layer)
    try:
        yield model
    finally:
        for layer in patched:
            del layer.forward  # back to the class's forward
