"""W4A16: packed 4-bit weight x fp16/fp32 activation, per-group scales and zero points.

A weight ``W`` of shape ``(N, K)`` quantized affinely to 4 bits in groups of
``group_size`` consecutive inputs (``shrinklib.quant.primitives`` with ``bits=4,
symmetric=False, group_size=g``: levels ``0..15``, an integer zero point per group) is
stored as

* ``packed``, ``(N, K/2)`` uint8: two levels per byte, element ``2j`` of a row in the
  **low** nibble of byte ``j`` and element ``2j+1`` in the **high** nibble
  (``packed[n, j] = q[n, 2j] | q[n, 2j+1] << 4``, see :func:`pack_int4`);
* ``scale``, ``(N, K/g)`` fp32 and ``zero_point``, ``(N, K/g)`` integer: one pair per group,

so that ``W[n, k] = (q[n, k] - zero_point[n, k // g]) * scale[n, k // g]``. That is an
eighth of the fp32 bytes (a quarter of fp16) plus two numbers per group: the layout of
GPTQ (Frantar et al., 2023) and AWQ (Lin et al., 2024) checkpoints, up to the nibble order.
The kernel loads a ``(BLOCK_N, BLOCK_K/2)`` tile of bytes, splits each into its two
nibbles and interleaves them back into the ``(BLOCK_N, BLOCK_K)`` tile of levels, gathers
each column's group scale and zero point (so any even ``group_size`` works, smaller or
larger than ``BLOCK_K``; ``K`` need not be a multiple of ``BLOCK_K`` nor of ``group_size``, whose
last group in a row is then shorter), dequantizes in
registers and multiplies with ``tl.dot``, accumulating in fp32.
:func:`w4a16_matmul_ref` is the definition of the right answer.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

import shrinklib.kernels  # noqa: F401  (sets TRITON_INTERPRET before the kernel is defined)
from shrinklib._checks import is_int
from shrinklib.kernels.launch import (
    INTEGER_DTYPES,
    check_activations,
    check_devices,
    check_operand,
    check_same_device,
    check_shape,
    check_width,
    dot_precision,
    tiled_matmul,
)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Pack 4-bit levels ``q`` ``(N, K)`` (integers 0..15, ``K`` even) into uint8 ``(N, K/2)``.

    Element ``2j`` goes to the low nibble of byte ``j``, element ``2j+1`` to the high
    nibble: ``[[1, 2]]`` packs to ``[[0x21]]``. Validated: ``q`` is a 2-D integer tensor
    (``TypeError`` otherwise) with an even ``K`` and levels in 0..15 (``ValueError``).
    """
    check_operand("q", q, "an integer tensor of 4-bit levels", dtypes=INTEGER_DTYPES, ndim=2, layout="(N, K)")
    if q.shape[1] % 2:
        raise ValueError(f"K ({q.shape[1]}) must be even to pack two 4-bit levels per byte")
    if q.numel() and (int(q.min()) < 0 or int(q.max()) > 15):
        raise ValueError(f"4-bit levels must lie in 0..15, got values from {int(q.min())} to {int(q.max())}")
    q = q.to(torch.uint8)
    return (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """The uint8 levels ``(N, 2 * K/2)`` that :func:`pack_int4` packed: its exact inverse.

    Validated: ``packed`` is a 2-D uint8 tensor.
    """
    check_operand("packed", packed, "a uint8 tensor (N, K/2)", dtypes=(torch.uint8,), ndim=2, layout="(N, K/2)")
    return torch.stack([packed & 0xF, packed >> 4], dim=-1).reshape(packed.shape[0], 2 * packed.shape[1])


def _check_weight(packed: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, group_size: int) -> None:
    """``packed`` uint8 ``(N, K/2)``, an even ``group_size``, ``scale`` float32 and ``zero_point``
    integer, both ``(N, ceil(K/group_size))``, all three on one device."""
    check_operand("packed", packed, "a uint8 tensor (N, K/2) from pack_int4", dtypes=(torch.uint8,), ndim=2,
                  layout="(N, K/2)")
    n, k = packed.shape[0], 2 * packed.shape[1]
    if not is_int(group_size) or group_size < 2 or group_size % 2:
        raise ValueError(f"group_size must be a positive even integer (a group is whole bytes), got {group_size!r}")
    groups = (n, -(-k // group_size))  # the last group of a row is shorter when group_size does not divide K
    check_operand("scale", scale, "a float32 tensor (N, ceil(K/group_size))", dtypes=(torch.float32,))
    check_shape("scale", scale, groups, "(N, ceil(K/group_size))")
    check_operand("zero_point", zero_point, "an integer tensor (N, ceil(K/group_size))", dtypes=INTEGER_DTYPES)
    check_shape("zero_point", zero_point, groups, "(N, ceil(K/group_size))")
    check_same_device(packed=packed, scale=scale, zero_point=zero_point)


def w4a16_matmul_ref(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                     group_size: int) -> torch.Tensor:
    """Reference: ``x @ W.T`` with ``W`` unpacked and dequantized, in fp32, cast to ``x.dtype``.

    Validated as :func:`w4a16_matmul` validates, but for ``x``'s dtype and which device
    (any, as long as it is one).
    """
    _check_weight(packed, scale, zero_point, group_size)
    check_operand("x", x, "a tensor (..., K)")
    check_same_device(x=x, packed=packed, scale=scale, zero_point=zero_point)
    check_width(x, 2 * packed.shape[1], k_is="K = 2 * packed.shape[1]", packed=packed)
    q = unpack_int4(packed).float()
    k = q.shape[1]
    zp = zero_point.float().repeat_interleave(group_size, dim=1)[:, :k]
    w = (q - zp) * scale.repeat_interleave(group_size, dim=1)[:, :k]
    return (x.float() @ w.T).to(x.dtype)


@triton.jit
def _w4a16_kernel(
    x_ptr, p_ptr, s_ptr, z_ptr, y_ptr, M, N, K,
    stride_xm, stride_xk, stride_pn, stride_pk, stride_sn, stride_sg, stride_zn, stride_zg, stride_ym, stride_yn,
    GROUP_SIZE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + rm[:, None] * stride_xm + rk[None, :] * stride_xk,
                    mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0)
        rb = k0 // 2 + tl.arange(0, BLOCK_K // 2)  # bytes of this tile; byte j holds levels 2j and 2j+1
        byte = tl.load(p_ptr + rn[:, None] * stride_pn + rb[None, :] * stride_pk,
                       mask=(rn[:, None] < N) & (rb[None, :] < K // 2), other=0).to(tl.int32)
        q = tl.interleave(byte & 0xF, byte >> 4)  # (BLOCK_N, BLOCK_K): low nibble first, as rk runs
        w_mask = (rn[:, None] < N) & (rk[None, :] < K)
        group = rk // GROUP_SIZE
        scale = tl.load(s_ptr + rn[:, None] * stride_sn + group[None, :] * stride_sg, mask=w_mask, other=0.0)
        zero = tl.load(z_ptr + rn[:, None] * stride_zn + group[None, :] * stride_zg, mask=w_mask, other=0)
        w = (q - zero.to(tl.int32)).to(tl.float32) * scale
        acc += tl.dot(x, tl.trans(w.to(x.dtype)), input_precision=PRECISION)
    y_mask = (rm[:, None] < M) & (rn[None, :] < N)
    tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :] * stride_yn, acc.to(y_ptr.dtype.element_ty), mask=y_mask)


def w4a16_matmul(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                 group_size: int, *, block_m: int | None = None, block_n: int = 64,
                 block_k: int = 64) -> torch.Tensor:
    """``x @ W.T`` for ``x`` of shape ``(..., K)`` and a packed 4-bit ``W`` ``(N, K)``; ``x``'s dtype out.

    ``W[n, k] = (unpack_int4(packed)[n, k] - zero_point[n, k // g]) * scale[n, k // g]``
    with ``g = group_size``. ``block_m`` defaults to the smallest power of two from 16 to
    64 that holds the rows of ``x``.

    Validated before anything is launched (``TypeError`` for a dtype, ``ValueError``
    otherwise, naming the argument): ``x`` is fp16/fp32 with last dimension ``K``;
    ``packed`` is uint8 2-D; ``group_size`` a positive even int; ``scale`` float32 and
    ``zero_point`` integer, both ``(N, ceil(K/group_size))``; all four tensors on one device
    the kernel runs on; ``block_m``, ``block_n``, ``block_k`` powers of two >= 16 whose
    tiles fit in a Triton tensor. Any strides are fine.
    """
    check_activations(x)
    _check_weight(packed, scale, zero_point, group_size)
    n, k = packed.shape[0], 2 * packed.shape[1]
    check_devices(x=x, packed=packed, scale=scale, zero_point=zero_point)
    check_width(x, k, k_is="K = 2 * packed.shape[1]", packed=packed)
    run = tiled_matmul(x, n, x.dtype, block_m, block_n, block_k)
    if not run.empty:
        x2, y = run.rows, run.y
        _w4a16_kernel[run.grid](
            x2, packed, scale, zero_point, y, run.m, n, k,
            x2.stride(0), x2.stride(1), packed.stride(0), packed.stride(1), scale.stride(0), scale.stride(1),
            zero_point.stride(0), zero_point.stride(1), y.stride(0), y.stride(1), GROUP_SIZE=group_size,
            BLOCK_M=run.block_m, BLOCK_N=block_n, BLOCK_K=block_k, PRECISION=dot_precision(x.dtype),
        )
    return run.out
