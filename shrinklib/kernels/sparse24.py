"""2:4 sparse weight x dense activation: ``y = x @ W.T`` from a compressed ``W``.

A weight ``W`` of shape ``(N, K)`` pruned to 2:4 (``shrinklib.prune.nm_``: at most two
nonzeros in every group of four along ``K``) is stored as

* ``values``, ``(N, K/2)``: the two kept entries of each group, in order;
* ``meta``, ``(N, K/4)`` uint8: for each group, the positions (0-3) of its two kept
  entries, ``first | second << 2`` with ``first < second``.

That is half the weight's bytes plus a quarter byte per kept pair, the layout idea of
NVIDIA's sparse tensor cores (Mishra et al., 2021), which keep 2-bit indices too. The
kernel reads the compressed tiles, rebuilds each dense ``(BLOCK_N, BLOCK_K)`` tile of
``W`` in registers (every column picks ``values[2g]``, ``values[2g+1]`` or zero by
comparing its position with the metadata) and multiplies it with ``tl.dot`` in the
activation's dtype (fp32 inputs at full fp32 precision, not tf32), accumulating in fp32.
:func:`sparse24_matmul_ref` is the definition of the right answer.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

import shrinklib.kernels  # noqa: F401  (sets TRITON_INTERPRET before the kernel is defined)
from shrinklib.kernels.launch import (
    check_activations,
    check_devices,
    check_operand,
    check_same_device,
    check_shape,
    check_width,
    dot_precision,
    tiled_matmul,
)


def compress_24(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, meta)`` of a 2:4-sparse ``(N, K)`` weight (``K`` a multiple of 4).

    A group with fewer than two nonzeros stores zeros at unused positions, so any weight
    with at most two nonzeros per group of four compresses exactly. Validated: ``weight``
    is a 2-D floating-point tensor (``TypeError`` otherwise: the kernel multiplies the
    values in the activation's float dtype), ``K`` is a multiple of 4, and no group of
    four holds more than two nonzeros (``ValueError``).
    """
    if isinstance(weight, torch.Tensor) and not weight.is_floating_point():
        raise TypeError(f"weight must be a floating-point tensor (N, K), got {weight.dtype}")
    check_operand("weight", weight, "a tensor (N, K)", ndim=2, layout="(N, K)")
    n, k = weight.shape
    if k % 4:
        raise ValueError(f"K ({k}) must be a multiple of 4 for the 2:4 format")
    groups = weight.reshape(n, k // 4, 4)
    if int(((groups != 0).sum(-1) > 2).sum()):
        raise ValueError("weight is not 2:4 sparse: some group of 4 along K has more than 2 nonzeros "
                         "(prune it with shrinklib.prune.nm_ first)")
    # positions of the two kept entries: the nonzeros first (stable), lowest positions on ties
    order = torch.argsort((groups == 0).to(torch.int8), dim=-1, stable=True)[..., :2]
    first, second = order.min(dim=-1).values, order.max(dim=-1).values
    values = torch.stack([groups.gather(-1, first[..., None])[..., 0], groups.gather(-1, second[..., None])[..., 0]], -1)
    meta = (first | (second << 2)).to(torch.uint8)
    return values.reshape(n, k // 2).contiguous(), meta.contiguous()


def _check_compressed(values: torch.Tensor, meta: torch.Tensor) -> tuple[int, int]:
    """``(N, K)`` of the weight that ``(values, meta)`` encode, once both are checked.

    ``values`` is 2-D ``(N, K/2)`` with ``K/2`` even (``K`` a multiple of 4: the kernel
    reads ``meta`` at group ``k // 4`` for every ``k < K``, so an odd ``K/2`` would read one
    group past it), ``meta`` is uint8 of shape exactly ``(N, K/4)``, and both are on one
    device (any one: the reference and :func:`decompress_24` run wherever torch does). The
    2-bit codes inside ``meta`` are not read here: that would cost a device sync on every
    call, and a wrong code cannot make the kernel read outside a buffer.
    """
    check_operand("values", values, "a tensor (N, K/2) from compress_24", ndim=2, layout="(N, K/2)")
    check_operand("meta", meta, "a uint8 tensor (N, K/4) from compress_24", dtypes=(torch.uint8,))
    n, half = values.shape
    if half % 2:
        raise ValueError(f"values must have an even number of columns, K/2 with K a multiple of 4 (two kept entries "
                         f"per group of four), got shape {tuple(values.shape)}")
    check_shape("meta", meta, (n, half // 2), "(N, K/4)", f" for values {tuple(values.shape)}")
    check_same_device(values=values, meta=meta)
    return n, 2 * half


def decompress_24(values: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """The dense ``(N, K)`` weight that ``(values, meta)`` encode (both checked as for :func:`sparse24_matmul`)."""
    n, k = _check_compressed(values, meta)
    half = k // 2
    pairs = values.reshape(n, half // 2, 2)
    dense = torch.zeros(n, half // 2, 4, dtype=values.dtype, device=values.device)
    m = meta.to(torch.int64)
    dense.scatter_(-1, (m & 3)[..., None], pairs[..., :1])
    dense.scatter_(-1, ((m >> 2) & 3)[..., None], pairs[..., 1:])
    return dense.reshape(n, half * 2)


def sparse24_matmul_ref(x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """Reference: ``x @ W.T`` with ``W`` decompressed, accumulated in fp32, cast to ``x.dtype``.

    ``values`` and ``meta`` are checked as for :func:`sparse24_matmul`, ``x``'s last
    dimension must be ``K`` and all three must be on one device; ``x``'s dtype is not
    checked (any dtype ``@`` takes), nor is the device (any one torch runs on).
    """
    _, k = _check_compressed(values, meta)
    check_operand("x", x, "a tensor (..., K)")
    check_same_device(x=x, values=values, meta=meta)
    check_width(x, k, k_is="K = 2 * values.shape[1]", values=values)
    return (x.float() @ decompress_24(values, meta).float().T).to(x.dtype)


@triton.jit
def _sparse24_kernel(
    x_ptr, v_ptr, meta_ptr, y_ptr, M, N, K,
    stride_xm, stride_xk, stride_vn, stride_vk, stride_mn, stride_mk, stride_ym, stride_yn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        x_mask = (rm[:, None] < M) & (rk[None, :] < K)
        x = tl.load(x_ptr + rm[:, None] * stride_xm + rk[None, :] * stride_xk, mask=x_mask, other=0.0)
        group = rk // 4
        position = rk % 4
        w_mask = (rn[:, None] < N) & (rk[None, :] < K)
        meta = tl.load(meta_ptr + rn[:, None] * stride_mn + group[None, :] * stride_mk, mask=w_mask, other=0)
        meta = meta.to(tl.int32)
        v0 = tl.load(v_ptr + rn[:, None] * stride_vn + (2 * group)[None, :] * stride_vk, mask=w_mask, other=0.0)
        v1 = tl.load(v_ptr + rn[:, None] * stride_vn + (2 * group + 1)[None, :] * stride_vk, mask=w_mask, other=0.0)
        w = tl.where((meta & 3) == position[None, :], v0, tl.where(((meta >> 2) & 3) == position[None, :], v1, 0.0))
        acc += tl.dot(x, tl.trans(w.to(x.dtype)), input_precision=PRECISION)
    y_mask = (rm[:, None] < M) & (rn[None, :] < N)
    tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :] * stride_yn, acc.to(y_ptr.dtype.element_ty), mask=y_mask)


def sparse24_matmul(x: torch.Tensor, values: torch.Tensor, meta: torch.Tensor, *,
                    block_m: int | None = None, block_n: int = 64, block_k: int = 64) -> torch.Tensor:
    """``x @ W.T`` for ``x`` of shape ``(..., K)`` and a compressed 2:4 ``W`` of shape ``(N, K)``; ``x``'s dtype out.

    ``values`` ``(N, K/2)`` has ``x``'s dtype (fp16 or fp32), ``meta`` is uint8 ``(N, K/4)``,
    both from :func:`compress_24`. ``block_m`` defaults to the smallest power of two from
    16 to 64 that holds the rows of ``x``.

    Validated before anything is launched (``TypeError`` for a dtype, ``ValueError``
    otherwise, naming the argument): ``x`` is fp16/fp32 with last dimension ``K``;
    ``values`` is 2-D with ``x``'s dtype and an even width ``K/2``; ``meta`` is uint8 of
    shape ``(N, K/4)``; all three are on one device the kernel runs on; ``block_m``,
    ``block_n`` and ``block_k`` are powers of two >= 16 whose tiles fit in a Triton tensor.
    Any strides are fine. The codes inside ``meta`` are trusted (see :func:`compress_24`).
    """
    check_activations(x)
    n, k = _check_compressed(values, meta)
    if values.dtype != x.dtype:
        raise TypeError(f"values ({values.dtype}) must have the dtype of x ({x.dtype})")
    check_devices(x=x, values=values, meta=meta)
    check_width(x, k, k_is="K = 2 * values.shape[1]", values=values, meta=meta)
    run = tiled_matmul(x, n, x.dtype, block_m, block_n, block_k)
    if not run.empty:
        x2, y = run.rows, run.y
        _sparse24_kernel[run.grid](
            x2, values, meta, y, run.m, n, k,
            x2.stride(0), x2.stride(1), values.stride(0), values.stride(1), meta.stride(0), meta.stride(1),
            y.stride(0), y.stride(1),
            BLOCK_M=run.block_m, BLOCK_N=block_n, BLOCK_K=block_k, PRECISION=dot_precision(x.dtype),
        )
    return run.out
