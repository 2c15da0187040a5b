"""Peak activation memory of a forward pass: the bytes of tensors a model holds at once.

The weights are only part of the memory a model needs; the rest is its activations,
which grow with batch size and sequence length. A ``TorchDispatchMode`` sees the output
of every aten operation of a real forward pass; each new storage is added to a running
total of live bytes, and a weak-reference finalizer takes it off again when the storage
is freed. The peak of that total is the answer. Storages that existed before the pass
(parameters, buffers, inputs) and views of them are not counted, so a transposed weight
inside a ``Linear`` costs nothing, as it should.

What a fused kernel allocates internally and frees before it returns (the tiles of the
CPU flash-attention kernel, say) is not visible; that is why fused attention shows no
term quadratic in the sequence length here, while eager attention, which materializes
the (heads x L x L) score matrix as an output, does.
"""
from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from shrinklib.measure.forward import Inputs, call, dummy_inputs, evaluating


class _LiveBytes(TorchDispatchMode):
    """Tracks the bytes of storages created by operations while the mode is active."""

    def __init__(self, existing):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._pinned = list(existing)  # keep them alive so their ids stay theirs
        self._tracked = {id(s) for s in self._pinned}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in pytree.tree_leaves(out):
            if isinstance(leaf, torch.Tensor) and leaf.device.type != "meta":
                self._track(leaf.untyped_storage())
        return out

    def _track(self, storage) -> None:
        key = id(storage)  # torch keeps one Python object per live storage
        if key in self._tracked:
            return
        nbytes = storage.nbytes()
        self._tracked.add(key)
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key, nbytes)

    def _free(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._tracked.discard(key)


def peak_activation_memory(
    model: nn.Module, inputs: Inputs | None = None, *, batch_size: int = 1, seq_len: int = 128
) -> int:
    """Peak bytes of activations alive at once during one forward pass (eval, no grad).

    Inputs as in :func:`~shrinklib.measure.latency.latency`: given, or dummy token ids of
    ``batch_size`` x ``seq_len``. The model's output counts (it is alive at the end).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if inputs is None:
        inputs = dummy_inputs(model, batch_size, seq_len)
    existing = [t.untyped_storage() for t in (*model.parameters(), *model.buffers())]
    existing += [t.untyped_storage() for t in pytree.tree_leaves(inputs) if isinstance(t, torch.Tensor)]
    tracker = _LiveBytes(existing)
    with evaluating(model), torch.inference_mode():
        with tracker:
            output = call(model, inputs)
        del output
    return tracker.peak
