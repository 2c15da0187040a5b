"""Block-sparse (BSR) weight x dense activation: ``y = x @ W.T`` skipping pruned blocks.

A weight ``W`` of shape ``(N, K)`` block-pruned with blocks ``(BN, BK)``
(``shrinklib.prune.block_``) is stored in block compressed sparse row form, exactly as
torch's ``Tensor.to_sparse_bsr`` makes it: for block-row ``r`` (output features
``r*BN .. r*BN+BN-1``) the kept blocks are ``values[crow[r]:crow[r+1]]``, each
``(BN, BK)``, at block-columns ``col[crow[r]:crow[r+1]]``. One program computes a
``(BLOCK_M, BN)`` tile of ``y``: it walks the block-row's kept blocks only, loads the
matching ``(BLOCK_M, BK)`` slice of ``x`` and accumulates ``tl.dot`` in fp32, its inputs
in the activation's dtype (fp32 at full fp32 precision, not tf32). ``BN`` and ``BK`` are
``tl.dot`` tile sides, so the kernel takes blocks whose sides are powers of two >= 16.
Work and weight traffic scale with the blocks kept (Gray et al., 2017, "GPU kernels for
block-sparse weights"). :func:`bsr_matmul_ref` is the definition of the right answer.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch
import triton
import triton.language as tl

import shrinklib.kernels  # noqa: F401  (sets TRITON_INTERPRET before the kernel is defined)
from shrinklib._checks import is_int
from shrinklib.kernels.launch import (
    INDEX_DTYPES,
    check_activations,
    check_blocks,
    check_contiguous,
    check_devices,
    check_operand,
    check_same_device,
    check_shape,
    dot_precision,
    tiled_matmul,
)


@contextmanager
def _quiet_sparse():
    """torch warns that BSR tensors are in beta on every use; we only convert with them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse BSR tensor support is in beta")
        warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
        yield


def to_bsr(weight: torch.Tensor, block: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(crow, col, values)`` of ``weight`` in BSR form with ``block``; all-zero blocks dropped.

    ``crow`` ``(N/BN + 1,)`` and ``col`` ``(blocks,)`` are int32, ``values`` ``(blocks, BN, BK)``
    has ``weight``'s dtype, for ``block = (BN, BK)``. Validated: ``weight`` is a 2-D
    floating-point tensor (``TypeError`` otherwise), ``block`` a pair of ints >= 1 that
    divides it. Any such block converts (and :func:`bsr_to_dense` inverts it);
    :func:`bsr_matmul` takes blocks whose sides are powers of two >= 16 and refuses others.
    The format does not record ``K``: trailing block-columns with no kept block leave no
    trace.
    """
    if isinstance(weight, torch.Tensor) and not weight.is_floating_point():
        raise TypeError(f"weight must be a floating-point tensor (N, K), got {weight.dtype}")
    check_operand("weight", weight, "a tensor (N, K)", ndim=2, layout="(N, K)")
    if not isinstance(block, (tuple, list)) or len(block) != 2 or not all(is_int(b) and b >= 1 for b in block):
        raise ValueError(f"block must be a pair of ints >= 1 (rows, columns), got {block!r}")
    rows, cols = block
    if weight.shape[0] % rows or weight.shape[1] % cols:
        raise ValueError(f"block {tuple(block)} does not divide the weight of shape {tuple(weight.shape)}")
    with _quiet_sparse():
        bsr = weight.detach().to_sparse_bsr(tuple(block))
    return (bsr.crow_indices().to(torch.int32).contiguous(), bsr.col_indices().to(torch.int32).contiguous(),
            bsr.values().contiguous())


def _check_bsr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor) -> tuple[int, int, int]:
    """``(N, BN, BK)`` of the weight that ``(crow, col, values)`` encode, once the three are checked.

    Their types, dtypes and shapes, and that they share a device (any one: the reference
    runs wherever torch does); what the indices hold is :func:`_check_indices`'s part.
    """
    check_operand("values", values, "a tensor (blocks, BN, BK) from to_bsr", ndim=3, layout="(blocks, BN, BK)")
    for name, t in (("crow", crow), ("col", col)):
        check_operand(name, t, "an int32 or int64 tensor from to_bsr", dtypes=INDEX_DTYPES)
    if crow.ndim != 1 or crow.numel() == 0:
        raise ValueError(f"crow must be 1-D (N/BN + 1,), one start per block-row and the end, got shape "
                         f"{tuple(crow.shape)}")
    blocks, bn, bk = values.shape
    check_shape("col", col, (blocks,), "(blocks,)", ", one block-column per stored block")
    check_same_device(crow=crow, col=col, values=values)
    return (crow.numel() - 1) * bn, bn, bk


def _check_indices(crow: torch.Tensor, col: torch.Tensor, blocks: int, k: int, bk: int) -> None:
    """``ValueError`` unless ``crow`` and ``col`` index ``blocks`` stored blocks of a weight ``K = k`` wide.

    ``crow`` starts at 0, never decreases and ends at ``blocks`` (else the kernel walks
    past ``values`` and ``col``), and every ``col`` lies in ``[0, k / bk)`` (a negative one
    reads before ``x``; one past ``x``'s width would be masked away, silently dropping that
    block from the product). One device sync: the five verdicts come back together.
    """
    k_blocks = k // bk
    verdicts = torch.stack([crow[0] != 0, crow[-1] != blocks, (crow[1:] < crow[:-1]).any(),
                            (col < 0).any(), (col >= k_blocks).any()]).tolist()
    start, end, decreasing, negative, past = verdicts
    if start or end or decreasing:
        found = f"crow[0] = {int(crow[0])}, crow[-1] = {int(crow[-1])}" + (", and it decreases" if decreasing else "")
        raise ValueError(f"crow must run from 0 to the number of stored blocks (values.shape[0] = {blocks}) without "
                         f"decreasing, as to_bsr makes it; got {found}")
    if negative:
        raise ValueError(f"col holds a negative block-column ({int(col.min())}); block-columns count from 0")
    if past:
        widest = int(col.max())
        raise ValueError(f"x's last dimension ({k}) is narrower than the weight: col holds block-column {widest}, "
                         f"which needs K >= {(widest + 1) * bk} ({widest + 1} blocks of width {bk}); x would be "
                         "multiplied with a truncated weight")


def bsr_to_dense(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The dense ``shape = (N, K)`` weight that ``(crow, col, values)`` encode: :func:`to_bsr`'s inverse.

    Validated: the three as for :func:`bsr_matmul` (any block size), ``shape`` a pair
    ``(N, K)`` with ``N = (len(crow) - 1) * BN`` and ``K`` a multiple of ``BK``, and the
    indices (``crow`` from 0 to the number of blocks, every ``col`` inside ``K``).
    """
    n, bn, bk = _check_bsr(crow, col, values)
    if not isinstance(shape, (tuple, list, torch.Size)) or len(shape) != 2 or not all(is_int(s) for s in shape):
        raise ValueError(f"shape must be a pair of ints (N, K), got {shape!r}")
    if shape[0] != n or shape[1] < 0 or shape[1] % bk:
        raise ValueError(f"shape {tuple(shape)} does not fit the BSR weight: N must be (len(crow) - 1) * BN = {n} "
                         f"and K a multiple of BK = {bk}")
    _check_indices(crow, col, values.shape[0], shape[1], bk)
    with _quiet_sparse():
        return torch.sparse_bsr_tensor(crow.long(), col.long(), values, size=tuple(shape)).to_dense()


def _check_k(x: torch.Tensor, bk: int) -> int:
    """``K``, the last dimension of ``x``, once it is known to hold whole blocks of width ``bk``."""
    check_operand("x", x, "a tensor (..., K)")
    k = x.shape[-1] if x.ndim else "none: x is 0-d"
    if not x.ndim or k % bk:
        raise ValueError(f"x's last dimension ({k}) must be a multiple of the block width {bk}")
    return k


def bsr_matmul_ref(x: torch.Tensor, crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor,
                   n: int) -> torch.Tensor:
    """Reference: ``x @ W.T`` with ``W`` ``(n, K)`` rebuilt dense, accumulated in fp32, cast to ``x.dtype``.

    Validated as :func:`bsr_matmul` validates, but for ``x``'s dtype, the block sizes, the
    contiguity of the indices and which device (the reference takes any), and ``n`` must be
    the weight's rows.
    """
    n_rows, _, bk = _check_bsr(crow, col, values)
    if n != n_rows:
        raise ValueError(f"n ({n}) must be the rows of the BSR weight, (len(crow) - 1) * BN = {n_rows}")
    k = _check_k(x, bk)
    check_same_device(x=x, crow=crow, col=col, values=values)
    w = bsr_to_dense(crow, col, values, (n, k))
    return (x.float() @ w.float().T).to(x.dtype)


@triton.jit
def _bsr_kernel(
    x_ptr, crow_ptr, col_ptr, v_ptr, y_ptr, M, K,
    stride_xm, stride_xk, stride_vb, stride_vn, stride_vk, stride_ym, stride_yn,
    BLOCK_M: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    row = tl.program_id(1)  # block-row of W = block of output features
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.arange(0, BN)
    rk = tl.arange(0, BK)
    start = tl.load(crow_ptr + row)
    end = tl.load(crow_ptr + row + 1)
    acc = tl.zeros((BLOCK_M, BN), dtype=tl.float32)
    for j in range(start, end):
        c = tl.load(col_ptr + j)
        ks = c * BK + rk
        x = tl.load(x_ptr + rm[:, None] * stride_xm + ks[None, :] * stride_xk,
                    mask=(rm[:, None] < M) & (ks[None, :] < K), other=0.0)
        w = tl.load(v_ptr + j * stride_vb + rn[:, None] * stride_vn + rk[None, :] * stride_vk)
        acc += tl.dot(x, tl.trans(w), input_precision=PRECISION)  # values have x's dtype
    cols = row * BN + rn
    tl.store(y_ptr + rm[:, None] * stride_ym + cols[None, :] * stride_yn, acc.to(y_ptr.dtype.element_ty),
             mask=rm[:, None] < M)


def bsr_matmul(x: torch.Tensor, crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, *,
               block_m: int | None = None) -> torch.Tensor:
    """``x @ W.T`` for ``x`` of shape ``(..., K)`` and ``W`` in the BSR form of :func:`to_bsr`; ``x``'s dtype out.

    ``values`` has ``x``'s dtype (fp16 or fp32) and blocks ``(BN, BK)`` whose sides are
    powers of two >= 16. ``block_m`` defaults to the smallest power of two from 16 to 64
    that holds the rows of ``x``.

    Validated before anything is launched (``TypeError`` for a dtype, ``ValueError``
    otherwise, naming the argument): ``x`` is fp16/fp32 and its last dimension ``K`` holds
    whole blocks; ``values`` is 3-D with ``x``'s dtype; ``crow`` (1-D) and ``col``
    (``(blocks,)``) are contiguous int32/int64 (the kernel reads them as flat arrays); all
    four are on one device the kernel runs on; ``BN``, ``BK`` and ``block_m`` are powers of
    two >= 16 whose tiles fit in a Triton tensor; and the indices are read (one device sync)
    to check that ``crow`` runs from 0 to ``values.shape[0]`` without decreasing and every
    ``col`` is a block-column inside ``x``'s width, so an ``x`` narrower than the weight is
    refused rather than multiplied with a truncated weight. (The format does not record
    ``K``: an ``x`` wider than every kept block reads as the weight with zero columns added.)
    """
    check_activations(x)
    n, bn, bk = _check_bsr(crow, col, values)
    if values.dtype != x.dtype:
        raise TypeError(f"values ({values.dtype}) must have the dtype of x ({x.dtype})")
    check_devices(x=x, crow=crow, col=col, values=values)
    check_contiguous("crow", crow)
    check_contiguous("col", col)
    check_blocks(**{"the block's rows (values.shape[1])": bn, "the block's columns (values.shape[2])": bk})
    k = _check_k(x, bk)
    _check_indices(crow, col, values.shape[0], k, bk)
    # tiles of BN output features: the grid's second axis walks the N / BN block-rows
    run = tiled_matmul(x, n, x.dtype, block_m, bn, bk)
    if not run.empty:
        x2, y = run.rows, run.y
        _bsr_kernel[run.grid](
            x2, crow, col, values, y, run.m, k,
            x2.stride(0), x2.stride(1), values.stride(0), values.stride(1), values.stride(2), y.stride(0), y.stride(1),
            BLOCK_M=run.block_m, BN=bn, BK=bk, PRECISION=dot_precision(x.dtype),
        )
    return run.out
