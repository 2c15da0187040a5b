"""W8A16: int8 weight x fp16/fp32 activation, ``y = x @ (qweight * scale[:, None]).T``.

A weight ``W`` of shape ``(N, K)`` quantized symmetrically per output channel
(``shrinklib.quant.primitives``: levels ``[-128, 127]``, ``scale = absmax / 127``, zero
point 0) is stored as

* ``qweight``, ``(N, K)`` int8: the levels, a quarter of the fp32 bytes (half of fp16);
* ``scale``, ``(N,)`` fp32: one step per output feature.

Because the scale belongs to the output feature ``n``, it factors out of the sum over
``K``: ``y[m, n] = scale[n] * sum_k x[m, k] * qweight[n, k]``. The kernel loads int8
tiles of ``qweight``, converts them to the activation's dtype in registers (exact: every
level is a small integer), accumulates ``tl.dot`` in fp32 and multiplies the accumulator
by the scales once, at the end. The weight's bytes are what a small-batch (decode) matmul
waits for, so halving them is the whole speedup - the weight-only scheme of LLM.int8()
(Dettmers et al., 2022) without its outlier decomposition, and of ZeroQuant (Yao et al.,
2022). :func:`w8a16_matmul_ref` is the definition of the right answer.
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


def _check_weight(qweight: torch.Tensor, scale: torch.Tensor) -> None:
    """``qweight`` is int8 ``(N, K)``, ``scale`` float32 ``(N,)``, both on one device."""
    check_operand("qweight", qweight, "an int8 tensor (N, K)", dtypes=(torch.int8,), ndim=2, layout="(N, K)")
    check_operand("scale", scale, "a float32 tensor (N,)", dtypes=(torch.float32,))
    check_shape("scale", scale, qweight.shape[:1], "(N,)", ", one per output channel")
    check_same_device(qweight=qweight, scale=scale)


def w8a16_matmul_ref(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Reference: ``x @ (qweight * scale[:, None]).T`` in fp32, cast to ``x.dtype``.

    Validated as :func:`w8a16_matmul` validates, but for ``x``'s dtype and which device
    (any, as long as it is one).
    """
    _check_weight(qweight, scale)
    check_operand("x", x, "a tensor (..., K)")
    check_same_device(x=x, qweight=qweight, scale=scale)
    check_width(x, qweight.shape[1], qweight=qweight)
    w = qweight.float() * scale[:, None]
    return (x.float() @ w.T).to(x.dtype)


@triton.jit
def _w8a16_kernel(
    x_ptr, w_ptr, s_ptr, y_ptr, M, N, K,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_s, stride_ym, stride_yn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
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
        w = tl.load(w_ptr + rn[:, None] * stride_wn + rk[None, :] * stride_wk,
                    mask=(rn[:, None] < N) & (rk[None, :] < K), other=0)
        # int8 -> x's dtype is exact
        acc += tl.dot(x, tl.trans(w.to(x.dtype)), input_precision=PRECISION)
    scale = tl.load(s_ptr + rn * stride_s, mask=rn < N, other=0.0)
    acc = acc * scale[None, :]
    y_mask = (rm[:, None] < M) & (rn[None, :] < N)
    tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :] * stride_yn, acc.to(y_ptr.dtype.element_ty), mask=y_mask)


def w8a16_matmul(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, *,
                 block_m: int | None = None, block_n: int = 64, block_k: int = 64) -> torch.Tensor:
    """``x @ (qweight * scale[:, None]).T`` for ``x`` of shape ``(..., K)``; the result has ``x``'s dtype.

    ``qweight`` is int8 ``(N, K)``, ``scale`` fp32 ``(N,)``. ``block_m`` defaults to the
    smallest power of two from 16 to 64 that holds the rows of ``x``.

    Validated before anything is launched (``TypeError`` for a dtype, ``ValueError``
    otherwise, naming the argument): ``x`` is fp16/fp32 with last dimension ``K``,
    ``qweight`` int8 2-D, ``scale`` float32 ``(N,)``, all three on one device the kernel
    runs on, and ``block_m``, ``block_n``, ``block_k`` powers of two >= 16 whose tiles fit
    in a Triton tensor. Any strides are fine.
    """
    check_activations(x)
    _check_weight(qweight, scale)
    n, k = qweight.shape
    check_devices(x=x, qweight=qweight, scale=scale)
    check_width(x, k, qweight=qweight)
    run = tiled_matmul(x, n, x.dtype, block_m, block_n, block_k)
    if not run.empty:
        x2, y = run.rows, run.y
        _w8a16_kernel[run.grid](
            x2, qweight, scale, y, run.m, n, k,
            x2.stride(0), x2.stride(1), qweight.stride(0), qweight.stride(1), scale.stride(0), y.stride(0), y.stride(1),
            BLOCK_M=run.block_m, BLOCK_N=block_n, BLOCK_K=block_k, PRECISION=dot_precision(x.dtype),
        )
    return run.out
