"""What every kernel launcher in this package shares: checks, ``tl.dot``'s precision, output and grid.

Each kernel module holds a ``@triton.jit`` kernel, its Python launcher and a pure-PyTorch
``*_ref``. Under Triton's interpreter (no GPU) an unmasked load past a buffer returns
whatever memory lies there without an error, and on a GPU a shape the kernel was not
written for fails deep inside Triton, so a launcher checks every input against what its
kernel computes *before* launching, and those checks live here, once:

* :func:`check_operand` - a tensor of the right dtype(s) and number of dimensions;
  :func:`check_shape` - a tensor of one exact shape; :func:`check_width` - the
  activation's last dimension is the weight's ``K``;
* :func:`check_same_device` - every tensor of one call on one device; :func:`check_devices`
  - and that device one the kernels run on (a CUDA GPU; the CPU too under the interpreter);
* :func:`check_contiguous` - a tensor the kernel reads as a flat array (no strides);
* :func:`check_activations` - the activation is fp16 or fp32 (bf16 arithmetic is wrong
  under Triton's interpreter, DESIGN.md section 3);
* :func:`check_blocks` - a tile size is a power of two >= 16, the smallest ``tl.dot``
  takes (``tl.arange`` needs a power of two), and no tile of two of them holds more than
  Triton's largest tensor (``TRITON_MAX_TENSOR_NUMEL`` elements);
* :func:`dot_precision` - the ``input_precision`` of ``tl.dot``: ``"ieee"`` for fp32 inputs,
  which a GPU would otherwise round to tf32 (10 mantissa bits) without saying so;
* :func:`tiled_matmul` - the rows of the activation, the output, the default row tile and
  the grid of programs of a tiled matmul, as one :class:`TiledMatmul`.

The dtype sets the kernels take are named once too: :data:`ACTIVATION_DTYPES`,
:data:`INDEX_DTYPES` (BSR indices), :data:`INTEGER_DTYPES` (levels and zero points).

A launcher returns the output as it is when it is empty (a batch with no rows, or a weight
with no output features), without launching anything: an empty result of the right shape
and dtype, and no grid with zero programs.
"""
from __future__ import annotations

from dataclasses import dataclass

from itertools import combinations

import torch
import triton
import triton.language as tl

from shrinklib._checks import is_int
from shrinklib.kernels import INTERPRETED

ACTIVATION_DTYPES = (torch.float16, torch.float32)
INDEX_DTYPES = (torch.int32, torch.int64)
INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
SMALLEST_TILE = 16  # tl.dot's smallest tile side
SMALLEST_INT8_K = 32  # tl.dot's smallest K for 8-bit operands on an NVIDIA GPU (the interpreter takes 16)
LARGEST_TILE = tl.TRITON_MAX_TENSOR_NUMEL  # elements in Triton's largest tensor: 2**20
#: The devices a kernel launches on: compiled, a CUDA GPU; interpreted, the CPU (or a GPU, copied through it).
KERNEL_DEVICES = ("cpu", "cuda") if INTERPRETED else ("cuda",)


def dtype_name(t) -> str:
    """``t``'s dtype for an error message (``"torch.bfloat16"``), or its type name if it is not a tensor."""
    return str(t.dtype) if isinstance(t, torch.Tensor) else type(t).__name__


def check_activations(x, name: str = "x") -> None:
    """``TypeError`` unless ``x`` is a float16 or float32 tensor."""
    if not isinstance(x, torch.Tensor) or x.dtype not in ACTIVATION_DTYPES:
        raise TypeError(f"{name} must be float16 or float32, got {dtype_name(x)} "
                        "(bf16 is wrong under Triton's interpreter)")


def check_blocks(*, minimum: int = SMALLEST_TILE, why: str = "tl.dot's smallest tile", **blocks) -> None:
    """``ValueError`` naming the first of ``blocks`` (name=size) that is not a power of two >= ``minimum``,
    or the first two whose ``(a, b)`` tile holds more than Triton's largest tensor (2**20 elements).

    ``why`` says where ``minimum`` comes from in the message (``tl.dot``'s smallest tile side
    by default; 32 for the ``K`` of an int8 ``tl.dot``, which a GPU needs and the interpreter
    does not).
    """
    for name, value in blocks.items():
        if not is_int(value) or value < minimum or value & (value - 1):
            raise ValueError(f"{name} must be a power of two >= {minimum} ({why}), got {value!r}")
    for (a, size_a), (b, size_b) in combinations(blocks.items(), 2):
        if size_a * size_b > LARGEST_TILE:
            raise ValueError(f"{a} ({size_a}) x {b} ({size_b}) is a tile of {size_a * size_b} elements, more than "
                             f"Triton's largest tensor ({LARGEST_TILE}); choose smaller blocks")


def check_operand(name: str, t, what: str, *, dtypes: tuple | None = None, ndim: int | None = None,
                  layout: str = "") -> torch.Tensor:
    """``t`` if it is a tensor with a dtype in ``dtypes`` (any, if ``None``) and ``ndim`` dimensions.

    Otherwise ``TypeError`` "``name`` must be ``what``, got <its dtype or type>", or
    ``ValueError`` "``name`` must be ``ndim``-D ``layout``, got shape ...": ``what`` is the
    whole description (``"a uint8 tensor (N, K/4) from compress_24"``), ``layout`` the shape
    in words (``"(N, K/4)"``).
    """
    if not isinstance(t, torch.Tensor) or (dtypes is not None and t.dtype not in dtypes):
        raise TypeError(f"{name} must be {what}, got {dtype_name(t)}")
    if ndim is not None and t.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {layout}".rstrip() + f", got shape {tuple(t.shape)}")
    return t


def check_shape(name: str, t: torch.Tensor, shape: tuple, formula: str, why: str = "") -> torch.Tensor:
    """``t`` if its shape is ``shape``, else ``ValueError`` "``name`` must have shape ``formula`` = ``shape``",
    followed by ``why`` (", one per output channel")."""
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {formula} = {tuple(shape)}{why}, got {tuple(t.shape)}")
    return t


def check_width(x: torch.Tensor, k: int, *, name: str = "x", k_is: str = "K", **weights: torch.Tensor) -> int:
    """``k`` if ``x``'s last dimension is ``k``, else ``ValueError`` "shapes do not fit" listing every shape.

    ``weights`` (name=tensor) are the operands ``k`` comes from, shown in the message;
    ``k_is`` says how (``"K = 2 * values.shape[1]"``). A 0-d ``x`` has no last dimension.
    """
    if x.ndim == 0 or x.shape[-1] != k:
        shapes = ", ".join(f"{n} {tuple(t.shape)}" for n, t in {name: x, **weights}.items())
        raise ValueError(f"shapes do not fit: {shapes} ({name}'s last dimension must be {k_is} = {k})")
    return k


def check_same_device(**tensors: torch.Tensor) -> torch.device:
    """The one device of ``tensors`` (name=tensor), else ``ValueError`` naming two that differ.

    Every tensor of one kernel call must be on one device: the kernel gets raw pointers and
    would read another device's addresses as its own. The references and the helpers that
    check a compressed weight need this much and no more: they run wherever torch does.
    """
    (first, device), *rest = ((name, t.device) for name, t in tensors.items())
    for name, other in rest:
        if other != device:
            raise ValueError(f"{name} is on {other} but {first} is on {device}: every tensor of one kernel call "
                             "must be on one device")
    return device


def check_devices(**tensors: torch.Tensor) -> torch.device:
    """The one device of ``tensors`` (name=tensor), which a kernel can launch on, else ``ValueError`` naming them.

    :func:`check_same_device`, and that device must be one in :data:`KERNEL_DEVICES`: a
    CUDA GPU, and the CPU too under the interpreter. A launcher calls it on every operand.
    """
    device = check_same_device(**tensors)
    if device.type not in KERNEL_DEVICES:
        mode = "under Triton's interpreter" if INTERPRETED else "compiled"
        raise ValueError(f"{', '.join(tensors)} {'is' if len(tensors) == 1 else 'are'} on {device}, where the "
                         f"kernels cannot run: {mode} they take tensors on {' or '.join(KERNEL_DEVICES)}")
    return device


def check_contiguous(name: str, t: torch.Tensor) -> torch.Tensor:
    """``t`` if it is contiguous, else ``ValueError``: for a tensor the kernel reads as a flat array."""
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous (the kernel reads it as a flat array), got strides "
                         f"{t.stride()}; pass {name}.contiguous()")
    return t


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
    checked by :func:`check_blocks` (each a power of two >= 16, each pair's tile within
    Triton's largest tensor). The caller has checked that ``x``'s last dimension is ``K``
    and that every operand is on ``x``'s device.
    """
    k = x.shape[-1]
    rows = x.reshape(-1, k)
    m = rows.shape[0]
    block_m = default_block_m(m) if block_m is None else block_m
    check_blocks(block_m=block_m, block_n=block_n, block_k=block_k)
    y = torch.empty(m, n, dtype=dtype, device=x.device)
    return TiledMatmul(rows, y, y.view(*x.shape[:-1], n), block_m, (triton.cdiv(m, block_m), triton.cdiv(n, block_n)))
