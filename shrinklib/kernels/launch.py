"""What every kernel launcher in this package shares: checks, ``tl.dot``'s precision, output and grid.

Each kernel module holds a ``@triton.jit`` kernel, its Python launcher and a pure-PyTorch
``*_ref``. The launchers all do the same few things around their own argument checks,
and those live here, once:

* :func:`check_activations` - the activation is fp16 or fp32 (bf16 arithmetic is wrong
  under Triton's interpreter, DESIGN.md section 3);
* :func:`check_blocks` - a tile size is a power of two >= 16, the smallest ``tl.dot``
  takes (``tl.arange`` needs a power of two);
* :func:`dot_precision` - the ``input_precision`` of ``tl.dot``: ``"ieee"`` for fp32 inputs,
  which a GPU would otherwise round to tf32 (10 mantissa bits) without saying so;
* :func:`tiled_matmul` - the rows of the activation, the output, the default row tile and
  the grid of programs of a tiled matmul, as one :class:`TiledMatmul`.

A launcher returns the output as it is when it is empty (a batch with no rows, or a weight
with no output features), without launching anything: an empty result of the right shape
and dtype, and no grid with zero programs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from shrinklib._checks import is_int

ACTIVATION_DTYPES = (torch.float16, torch.float32)
SMALLEST_TILE = 16  # tl.dot's smallest tile side


def dtype_name(t) -> str:
    """``t``'s dtype for an error message (``"torch.bfloat16"``), or its type name if it is not a tensor."""
    return str(t.dtype) if isinstance(t, torch.Tensor) else type(t).__name__


def check_activations(x, name: str = "x") -> None:
    """``TypeError`` unless ``x`` is a float16 or float32 tensor."""
    if not isinstance(x, torch.Tensor) or x.dtype not in ACTIVATION_DTYPES:
        raise TypeError(f"{name} must be float16 or float32, got {dtype_name(x)} "
                        "(bf16 is wrong under Triton's interpreter)")


def check_blocks(**blocks) -> None:
    """``ValueError`` naming the first of ``blocks`` (name=size) that is not a power of two >= 16."""
    for name, value in blocks.items():
        if not is_int(value) or value < SMALLEST_TILE or value & (value - 1):
            raise ValueError(f"{name} must be a power of two >= {SMALLEST_TILE} (tl.dot's smallest tile), "
                             f"got {value!r}")


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot``'s input precision: fp32 inputs stay fp32 on a GPU (its default would round them to tf32)."""
    return "ieee" if dtype == torch.float32 else "tf32"


def default_block_m(m: int) -> int:
    """The smallest power of two from 16 to 64 that holds ``m`` rows: one row tile for a small batch."""
    return min(64, max(SMALLEST_TILE, triton.next_power_of_2(m)))


@dataclass(frozen=True)
class TiledMatmul:
    """One launch of a tiled ``(M, K) x (K, N)`` matmul kernel, made by :func:`tiled_matmul`.

    ``rows`` is ``x`` as ``(M, K)``; ``y`` is the uninitialised ``(M, N)`` output the kernel
    writes; ``out`` is ``y`` viewed with ``x``'s leading dimensions, ``(..., N)``, which the
    launcher returns; ``grid`` has one program per ``(block_m, block_n)`` tile of ``y``.
    """

    rows: torch.Tensor
    y: torch.Tensor
    out: torch.Tensor
    block_m: int
    grid: tuple[int, int]

    @property
    def m(self) -> int:
        """The number of rows, ``M``."""
        return self.rows.shape[0]

    @property
    def empty(self) -> bool:
        """``True`` when there is nothing to compute (no rows, or no output features): launch nothing."""
        return self.y.numel() == 0


def tiled_matmul(x: torch.Tensor, n: int, dtype: torch.dtype, block_m: int | None, block_n: int,
                 block_k: int) -> TiledMatmul:
    """The rows, output and grid of ``x @ W.T`` for ``x`` ``(..., K)`` and ``W`` ``(n, K)``, in ``dtype``.

    ``block_m`` defaults (``None``) to :func:`default_block_m`; all three tile sizes are
    checked by :func:`check_blocks`. The caller has checked that ``x``'s last dimension
    is ``K``.
    """
    k = x.shape[-1]
    rows = x.reshape(-1, k)
    m = rows.shape[0]
    block_m = default_block_m(m) if block_m is None else block_m
    check_blocks(block_m=block_m, block_n=block_n, block_k=block_k)
    y = torch.empty(m, n, dtype=dtype, device=x.device)
    return TiledMatmul(rows, y, y.view(*x.shape[:-1], n), block_m, (triton.cdiv(m, block_m), triton.cdiv(n, block_n)))
