"""Size of a model: bytes on disk (its safetensors file) and bytes in memory.

* :func:`size_on_disk` - the bytes of the ``model.safetensors`` file that
  :func:`shrinklib.save` writes: every stored tensor once, in its stored dtype, plus a
  small JSON header. This is the number the book's tables report (as MB, 1e6 bytes): a
  weight quantized to int8 shrinks it, a pruned weight does not (zeros take as many
  bytes as any other value until the format stores them sparsely).
* :func:`size_in_memory` - the bytes of the distinct storages behind the parameters and
  buffers (non-persistent buffers included, tied tensors once).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn


def size_on_disk(model: nn.Module) -> int:
    """Bytes of the weights file that :func:`shrinklib.save` writes for ``model``.

    The model is saved into a temporary folder that is removed afterwards. A model that
    ``shrinklib.save`` refuses (one it could not load again) raises its ``TypeError``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    from shrinklib.serialize import WEIGHTS_FILE, save  # lazily: serialize imports transformers

    with tempfile.TemporaryDirectory(prefix="shrinklib-size-") as folder:
        save(model, folder)
        return (Path(folder) / WEIGHTS_FILE).stat().st_size


def _nbytes(tensor: torch.Tensor) -> tuple[object, int]:
    """(key identifying the storage, its bytes); a tensor without a plain storage is its own key."""
    try:
        storage = tensor.untyped_storage()
        return (tensor.device, storage.data_ptr(), storage.nbytes()), storage.nbytes()
    except (RuntimeError, NotImplementedError, TypeError):
        return id(tensor), tensor.numel() * tensor.element_size()


def size_in_memory(model: nn.Module) -> int:
    """Bytes of the distinct storages of ``model``'s parameters and buffers.

    Two tensors that view one storage (tied weights, a fused QKV matrix sliced three ways)
    count once, with the whole storage.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    seen: dict[object, int] = {}
    for tensor in (*model.parameters(), *model.buffers()):
        key, nbytes = _nbytes(tensor)
        if nbytes == 0:
            continue
        seen[key] = nbytes
    return sum(seen.values())
