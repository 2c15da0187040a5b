"""``SparseLinear``: a Linear layer whose 2:4-sparse weight is stored compressed.

After ``shrinklib.prune.nm_(model, 2, 4)`` (and fine-tuning with the masks held),
:func:`sparsify_24_` swaps each pruned ``nn.Linear`` for a :class:`SparseLinear` holding
the ``values``/``meta`` of ``shrinklib.kernels.sparse24``: 9/16 of the dense weight's
bytes in fp32 (half the values plus a metadata byte per four weights). On a GPU the
forward pass runs the Triton kernel; on the CPU it takes the reference path
(decompress, then a dense matmul), which is exact but not faster: torch has no 2:4
support on the CPU.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from shrinklib._checks import check_bool, check_positive_int
from shrinklib.kernels.sparse24 import compress_24, decompress_24, sparse24_matmul
from shrinklib.rebuild import register_module
from shrinklib.utils import FilterFn, check_filter_fn, replace_modules_

_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@register_module
class SparseLinear(nn.Module):
    """``y = x W^T + b`` with a 2:4-sparse ``W`` kept as ``values`` and ``meta`` buffers.

    ``in_features`` is an int >= 1 and a multiple of 4, ``out_features`` an int >= 1,
    ``dtype`` ``"float32"`` or ``"float16"``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: str = "float32"):
        super().__init__()
        check_positive_int("in_features", in_features)
        check_positive_int("out_features", out_features)
        check_bool("bias", bias)
        if in_features % 4:
            raise ValueError(f"in_features ({in_features}) must be a multiple of 4 for 2:4 sparsity")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        self.in_features, self.out_features, self.dtype_name = in_features, out_features, dtype
        self.register_buffer("values", torch.zeros(out_features, in_features // 2, dtype=_DTYPES[dtype]))
        self.register_buffer("meta", torch.zeros(out_features, in_features // 4, dtype=torch.uint8))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=_DTYPES[dtype])) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "SparseLinear":
        """Compress a 2:4-sparse ``nn.Linear`` (raises ``ValueError`` if it is not 2:4)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear needs an nn.Linear, got {type(linear).__name__}")
        dtype = {v: k for k, v in _DTYPES.items()}.get(linear.weight.dtype)
        if dtype is None:
            raise TypeError(f"weight dtype must be float32 or float16, got {linear.weight.dtype}")
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, dtype)
        values, meta = compress_24(linear.weight.detach())
        module.values.copy_(values)
        module.meta.copy_(meta)
        if linear.bias is not None:
            module.bias.data.copy_(linear.bias.detach())
        return module.to(linear.weight.device)

    def rebuild_kwargs(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None, "dtype": self.dtype_name}

    def dense_weight(self) -> torch.Tensor:
        return decompress_24(self.values, self.meta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and x.dtype == self.values.dtype:
            y = sparse24_matmul(x, self.values, self.meta)
            return y + self.bias if self.bias is not None else y
        return F.linear(x, self.dense_weight().to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, 2:4"


def sparsify_24_(model: nn.Module, *, filter_fn: FilterFn | None = None) -> nn.Module:
    """Swap every picked 2:4-sparse ``nn.Linear`` for a :class:`SparseLinear`; returns ``model``.

    Every layer is compressed before any is swapped, so one layer that is not 2:4 sparse
    leaves the model as it was (the error names the layer).
    """
    filter_fn = check_filter_fn(filter_fn)

    def factory(module: nn.Module, fqn: str) -> nn.Module:
        try:
            return SparseLinear.from_linear(module)
        except ValueError as err:
            raise ValueError(f"{fqn}: {err}") from None

    return replace_modules_(model, factory, filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and filter_fn(m, fqn))
