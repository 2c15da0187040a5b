"""How the measurements call a model: on dummy inputs, in eval mode, on its device.

MACs and latency need one forward pass on inputs of a given shape, not on real text:
:func:`dummy_inputs` builds them (token ids for a model that reads tokens, random
floats for a plain stack of ``nn.Linear``), :func:`call` feeds any form of inputs to a
model, and :func:`evaluating` puts a model in eval mode for the duration of a
measurement and gives every submodule back the mode it had.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Any, Iterator

import torch
from torch import nn

from shrinklib._checks import check_module, check_positive_int
from shrinklib.arch import pad_id, vocab_size

Inputs = Any  # a dict of keyword arguments, a tuple of positional ones, or one tensor


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    check_module(model)
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Context manager: ``model`` (an ``nn.Module``) in eval mode inside, each submodule's own mode restored after."""
    check_module(model)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def _accepts(forward, name: str) -> bool:
    try:
        params = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _reads_tokens(model: nn.Module) -> bool:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return "input_ids" in params


def _first_leaf(model: nn.Module) -> nn.Module | None:
    for module in model.modules():
        if next(module.children(), None) is None and next(module.parameters(recurse=False), None) is not None:
            return module
    return None


def dummy_token_ids(model: nn.Module, batch_size: int, seq_len: int, *, seed: int = 0) -> torch.Tensor:
    """Random token ids of shape (batch_size, seq_len) valid for ``model``, never its pad id."""
    check_module(model)
    check_positive_int("batch_size", batch_size)
    check_positive_int("seq_len", seq_len)
    config = getattr(model, "config", None)
    max_positions = getattr(config, "max_position_embeddings", None)
    if isinstance(max_positions, int) and seq_len > max_positions:
        raise ValueError(f"seq_len must be at most the model's max_position_embeddings={max_positions}, got {seq_len}")
    vocab = vocab_size(model)
    if vocab is None:
        raise TypeError(f"cannot tell the vocabulary size of this {type(model).__name__}: it has no nn.Embedding")
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch_size, seq_len), generator=generator)
    pad = pad_id(model)
    if pad is not None and vocab > 1:
        ids[ids == pad] = (pad + 1) % vocab
    return ids.to(model_device(model))


def dummy_inputs(model: nn.Module, batch_size: int = 1, seq_len: int = 128, *, seed: int = 0) -> Inputs:
    """Inputs for one forward pass of ``model`` with ``batch_size`` sequences of ``seq_len``.

    * A model whose ``forward`` takes ``input_ids`` (Hugging Face models, the book's
      BiLSTM) gets ``{"input_ids": ids, "attention_mask": ones}`` (the mask only if
      accepted), the ids random but valid: below the vocabulary size, never the pad id.
    * Any other module gets one positional tensor chosen by its first layer: token ids
      of shape (batch, seq) for an ``nn.Embedding``, random floats of shape
      (batch, seq, in_features) for an ``nn.Linear`` and (batch, seq, input_size) for a
      batch-first RNN, (seq, batch, input_size) for one that is not.

    Raises ``TypeError`` for a model whose inputs cannot be guessed; pass explicit
    inputs to the measuring function then.
    """
    check_module(model)
    check_positive_int("batch_size", batch_size)
    check_positive_int("seq_len", seq_len)
    if _reads_tokens(model):
        ids = dummy_token_ids(model, batch_size, seq_len, seed=seed)
        inputs = {"input_ids": ids}
        if _accepts(model.forward, "attention_mask"):
            inputs["attention_mask"] = torch.ones_like(ids)
        return inputs
    first = _first_leaf(model)
    device = model_device(model)
    generator = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype if first is not None else torch.float32
    if isinstance(first, nn.Embedding):
        return (dummy_token_ids(model, batch_size, seq_len, seed=seed),)
    if isinstance(first, nn.RNNBase):
        shape = (batch_size, seq_len, first.input_size) if first.batch_first else (seq_len, batch_size, first.input_size)
        return (torch.randn(shape, generator=generator).to(device=device, dtype=dtype),)
    if isinstance(getattr(first, "in_features", None), int):
        x = torch.randn(batch_size, seq_len, first.in_features, generator=generator)
        return (x.to(device=device, dtype=dtype if dtype.is_floating_point else torch.float32),)
    raise TypeError(
        f"cannot guess the inputs of a {type(model).__name__} (its first layer is "
        f"{type(first).__name__ if first is not None else 'missing'}); pass inputs= explicitly"
    )


def call(model, inputs: Inputs):
    """``model(**inputs)`` for a dict, ``model(*inputs)`` for a tuple or list, else ``model(inputs)``; ``model`` must be callable."""
    if not callable(model):
        raise TypeError(f"model must be a model or a callable, got {type(model).__name__}")
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)
