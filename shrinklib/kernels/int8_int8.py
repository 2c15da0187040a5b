"""W8A8: int8 activation x int8 weight with an exact int32 accumulator, then two scales.

Both operands are quantized symmetrically to int8 (``shrinklib.quant.primitives``: levels
``[-128, 127]``, ``scale = absmax / 127``, zero point 0):

* the activation per token (row): ``x_q`` ``(M, K)`` int8 and ``x_scale`` ``(M,)`` fp32,
  made on the fly by :func:`quantize_per_token`;
* the weight per output channel: ``w_q`` ``(N, K)`` int8 and ``w_scale`` ``(N,)`` fp32.

Both scales factor out of the sum over ``K``, so
``y[m, n] = x_scale[m] * w_scale[n] * sum_k x_q[m, k] * w_q[n, k]``: the kernel multiplies
int8 tiles with ``tl.dot`` into an int32 accumulator (exact integer arithmetic, the
integer tensor cores' path on a GPU) and applies the two scales once, at the end. This is
the int8 matmul of LLM.int8() (Dettmers et al., 2022) for the non-outlier part and of
SmoothQuant (Xiao et al., 2023), whose per-channel smoothing of activations happens
before quantization and does not change the kernel. The accumulator is exact while
``K * 128 * 128 < 2^31``, that is ``K < 131072``. :func:`w8a8_matmul_ref` is the
definition of the right answer.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

import shrinklib.kernels  # noqa: F401  (sets TRITON_INTERPRET before the kernel is defined)
from shrinklib.kernels.launch import (
    SMALLEST_INT8_K,
    check_blocks,
    check_devices,
    check_operand,
    check_same_device,
    check_shape,
    check_width,
    dtype_name,
    tiled_matmul,
)

MAX_K = 2 ** 31 // (128 * 128) - 1  # the int32 accumulator cannot overflow up to this K
OUT_DTYPES = (torch.float32, torch.float16)


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_q, x_scale)``: ``x`` ``(..., K)`` quantized symmetrically to int8, one scale per row.

    ``x_scale = absmax(row) / 127`` (fp32, shape ``x.shape[:-1]``) and
    ``x_q = clamp(round(x / x_scale), -128, 127)``, rounding half to even as
    :func:`shrinklib.quant.primitives.quantize`. A row of zeros gets scale 1 (and zeros).
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {dtype_name(x)}")
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"x must have a nonempty last dimension (K), got shape {tuple(x.shape)}")
    xf = x.float()
    absmax = xf.abs().amax(dim=-1)
    if not torch.isfinite(absmax).all():
        raise ValueError("x holds inf or nan; a quantization range needs finite values")
    scale = torch.where(absmax > 0, absmax / 127, torch.ones_like(absmax))
    # |x / scale| <= 127 up to one rounding of the division, so round() already lands in
    # -127..127 and the clamp of quantize() would be a pass over x that changes nothing
    x_q = (xf / scale[..., None]).round_().to(torch.int8)
    return x_q, scale


def _check_args(x_q, x_scale, w_q, w_scale, out_dtype) -> None:
    """Dtypes, shapes and one device for the four operands, ``out_dtype``, and ``K`` within :data:`MAX_K`.

    Shared with the reference, which runs on any device: the launcher checks that the device
    is one the kernel runs on.
    """
    for name, t in (("x_q", x_q), ("w_q", w_q)):
        check_operand(name, t, "an int8 tensor", dtypes=(torch.int8,))
    for name, t in (("x_scale", x_scale), ("w_scale", w_scale)):
        check_operand(name, t, "a float32 tensor", dtypes=(torch.float32,))
    if out_dtype not in OUT_DTYPES:
        raise TypeError(f"out_dtype must be torch.float32 or torch.float16, got {out_dtype} "
                        "(bf16 is wrong under Triton's interpreter)")
    check_operand("w_q", w_q, "an int8 tensor", ndim=2, layout="(N, K)")
    n, k = w_q.shape
    check_same_device(x_q=x_q, x_scale=x_scale, w_q=w_q, w_scale=w_scale)
    check_width(x_q, k, name="x_q", w_q=w_q)
    check_shape("x_scale", x_scale, x_q.shape[:-1], "x_q.shape[:-1]", ", one per token")
    check_shape("w_scale", w_scale, (n,), "(N,)", ", one per output channel")
    if k > MAX_K:
        raise ValueError(f"K ({k}) is too large for an exact int32 accumulator (at most {MAX_K})")


def w8a8_matmul_ref(x_q: torch.Tensor, x_scale: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor,
                    out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Reference: the exact integer product ``x_q @ w_q.T`` times ``x_scale[:, None] * w_scale[None, :]``.

    The product is computed in float64, which is exact here on any device (every partial
    sum is an integer below ``2^31 < 2^53``), then held as int32; the scaling is done in
    fp32 in the kernel's order and cast to ``out_dtype``. Validated as :func:`w8a8_matmul`
    validates, but for the block sizes and which device (any, as long as it is one).
    """
    _check_args(x_q, x_scale, w_q, w_scale, out_dtype)
    acc = (x_q.double() @ w_q.double().T).to(torch.int32)
    return (acc.float() * x_scale[..., None] * w_scale).to(out_dtype)


@triton.jit
def _w8a8_kernel(
    x_ptr, xs_ptr, w_ptr, ws_ptr, y_ptr, M, N, K,
    stride_xm, stride_xk, stride_xs, stride_wn, stride_wk, stride_ws, stride_ym, stride_yn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + rm[:, None] * stride_xm + rk[None, :] * stride_xk,
                    mask=(rm[:, None] < M) & (rk[None, :] < K), other=0)
        w = tl.load(w_ptr + rn[:, None] * stride_wn + rk[None, :] * stride_wk,
                    mask=(rn[:, None] < N) & (rk[None, :] < K), other=0)
        acc += tl.dot(x, tl.trans(w))  # int8 x int8 -> int32, exact
    x_scale = tl.load(xs_ptr + rm * stride_xs, mask=rm < M, other=0.0)
    w_scale = tl.load(ws_ptr + rn * stride_ws, mask=rn < N, other=0.0)
    y = acc.to(tl.float32) * x_scale[:, None] * w_scale[None, :]
    y_mask = (rm[:, None] < M) & (rn[None, :] < N)
    tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :] * stride_yn, y.to(y_ptr.dtype.element_ty), mask=y_mask)


def w8a8_matmul(x_q: torch.Tensor, x_scale: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor,
                out_dtype: torch.dtype = torch.float32, *, block_m: int | None = None, block_n: int = 64,
                block_k: int = 64) -> torch.Tensor:
    """``(x_q @ w_q.T) * x_scale[:, None] * w_scale[None, :]`` in ``out_dtype``, for ``x_q`` ``(..., K)``.

    ``x_q`` int8 with ``x_scale`` fp32 of shape ``x_q.shape[:-1]`` (per token, see
    :func:`quantize_per_token`), ``w_q`` int8 ``(N, K)`` with ``w_scale`` fp32 ``(N,)``.
    ``block_m`` defaults to the smallest power of two from 16 to 64 that holds the rows.

    Validated before anything is launched (``TypeError`` for a dtype, ``ValueError``
    otherwise, naming the argument): the dtypes above, ``out_dtype`` fp32 or fp16, ``w_q``
    2-D, ``x_q``'s last dimension ``K`` (at most :data:`MAX_K`), the scales' shapes, all four
    on one device the kernel runs on, ``block_m`` and ``block_n`` powers of two >= 16 and
    ``block_k`` one >= 32 (an int8 ``tl.dot`` on a GPU needs ``K >= 32``; the interpreter
    would take 16 and hide it), their tiles within a Triton tensor. Any strides are fine.
    """
    _check_args(x_q, x_scale, w_q, w_scale, out_dtype)
    n, k = w_q.shape
    check_devices(x_q=x_q, x_scale=x_scale, w_q=w_q, w_scale=w_scale)
    check_blocks(block_k=block_k, minimum=SMALLEST_INT8_K, why="an int8 tl.dot's smallest K on a GPU")
    run = tiled_matmul(x_q, n, out_dtype, block_m, block_n, block_k)
    if not run.empty:
        x2, xs, y = run.rows, x_scale.reshape(-1), run.y
        _w8a8_kernel[run.grid](
            x2, xs, w_q, w_scale, y, run.m, n, k,
            x2.stride(0), x2.stride(1), xs.stride(0), w_q.stride(0), w_q.stride(1), w_scale.stride(0),
            y.stride(0), y.stride(1), BLOCK_M=run.block_m, BLOCK_N=block_n, BLOCK_K=block_k,
        )
    return run.out
