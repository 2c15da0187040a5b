"""Block-sparse (BSR) weight x dense activation: ``y = x @ W.T`` skipping pruned blocks.

A weight ``W`` of shape ``(N, K)`` block-pruned with blocks ``(BN, BK)``
(``shrinklib.prune.block_``) is stored in block compressed sparse row form, exactly as
torch's ``Tensor.to_sparse_bsr`` makes it: for block-row ``r`` (output features
``r*BN .. r*BN+BN-1``) the kept blocks are ``values[crow[r]:crow[r+1]]``, each
``(BN, BK)``, at block-columns ``col[crow[r]:crow[r+1]]``. One program computes a
``(BLOCK_M, BN)`` tile of ``y``: it walks the block-row's kept blocks only, loads the
matching ``(BLOCK_M, BK)`` slice of ``x`` and accumulates ``tl.dot`` in fp32. Work and
weight traffic scale with the blocks kept (Gray et al., 2017, "GPU kernels for
block-sparse weights"). :func:`bsr_matmul_ref` is the definition of the right answer.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch
import triton
import triton.language as tl

import shrinklib.kernels  # noqa: F401  (sets TRITON_INTERPRET before the kernel is defined)


@contextmanager
def _quiet_sparse():
    """torch warns that BSR tensors are in beta on every use; we only convert with them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse BSR tensor support is in beta")
        warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
        yield


def to_bsr(weight: torch.Tensor, block: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(crow, col, values)`` of ``weight`` in BSR form with ``block``; all-zero blocks dropped."""
    if weight.ndim != 2:
        raise ValueError(f"weight must be 2-D (N, K), got shape {tuple(weight.shape)}")
    rows, cols = block
    if weight.shape[0] % rows or weight.shape[1] % cols:
        raise ValueError(f"block {block} does not divide the weight of shape {tuple(weight.shape)}")
    with _quiet_sparse():
        bsr = weight.detach().to_sparse_bsr(block)
    return (bsr.crow_indices().to(torch.int32).contiguous(), bsr.col_indices().to(torch.int32).contiguous(),
            bsr.values().contiguous())


def bsr_to_dense(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    with _quiet_sparse():
        return torch.sparse_bsr_tensor(crow.long(), col.long(), values, size=shape).to_dense()


def bsr_matmul_ref(x: torch.Tensor, crow, col, values, n: int) -> torch.Tensor:
    """Reference: ``x @ W.T`` with ``W`` rebuilt dense, accumulated in fp32, cast to ``x.dtype``."""
    w = bsr_to_dense(crow, col, values, (n, x.shape[-1]))
    return (x.float() @ w.float().T).to(x.dtype)


@triton.jit
def _bsr_kernel(
    x_ptr, crow_ptr, col_ptr, v_ptr, y_ptr, M, K,
    stride_xm, stride_xk, stride_vb, stride_vn, stride_vk, stride_ym, stride_yn,
    BLOCK_M: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
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
        acc += tl.dot(x.to(tl.float32), tl.trans(w.to(tl.float32)))
    cols = row * BN + rn
    tl.store(y_ptr + rm[:, None] * stride_ym + cols[None, :] * stride_yn, acc.to(y_ptr.dtype.element_ty),
             mask=rm[:, None] < M)


def bsr_matmul(x: torch.Tensor, crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, *,
               block_m: int = 16) -> torch.Tensor:
    """``x @ W.T`` for ``x`` of shape ``(..., K)`` and ``W`` in the BSR form of :func:`to_bsr`."""
    if x.dtype not in (torch.float16, torch.float32):
        raise TypeError(f"x must be float16 or float32, got {x.dtype} (bf16 is wrong under Triton's interpreter)")
    if values.dtype != x.dtype:
        raise TypeError(f"values ({values.dtype}) must have the dtype of x ({x.dtype})")
    _, bn, bk = values.shape
    n = (crow.numel() - 1) * bn
    k = x.shape[-1]
    if k % bk:
        raise ValueError(f"x's last dimension ({k}) must be a multiple of the block width {bk}")
    x2 = x.reshape(-1, k)
    m = x2.shape[0]
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(m, block_m), crow.numel() - 1)
    _bsr_kernel[grid](
        x2, crow, col, values, y, m, k,
        x2.stride(0), x2.stride(1), values.stride(0), values.stride(1), values.stride(2), y.stride(0), y.stride(1),
        BLOCK_M=block_m, BN=bn, BK=bk,
    )
    return y.reshape(*x.shape[:-1], n)
