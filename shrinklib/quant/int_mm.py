"""Exact ``int8 x int8 -> int32`` matrix products on any CPU, at the fastest exact speed it has.

``torch._int_mm`` is PyTorch's int8 product on the CPU (oneDNN). It pays off only on x86
cores with VNNI, which multiply bytes into 32-bit sums. Without VNNI it is either wrong or
slow: on Intel AVX2 cores it adds pairs of byte products into 16-bit integers that saturate,
silently (:func:`cpu_int_mm_is_exact` probes this), and on an AMD EPYC with AVX2 only it was
exact but about 25 times slower than an fp32 matmul of the same shape. :func:`int8_matmul`
therefore calls it only where :func:`cpu_int8_is_fast` says so, and elsewhere computes the
same integers with fp32 matmuls (exact, see :func:`int8_matmul`). The dynamic and static
int8 paths of :class:`~shrinklib.quant.linear.QuantLinear` compute with it.
"""
from __future__ import annotations

import functools

import torch

from shrinklib._checks import check_instance

FP32_EXACT_DEPTH = 1024
"""The longest int8 dot product an fp32 matmul sums exactly: ``1024 * 128 * 128 = 2**24``,
and every integer up to ``2**24`` is an fp32 number, whatever order the sum is taken in."""


@functools.cache
def cpu_int_mm_is_exact() -> bool:
    """Whether ``torch._int_mm`` computes int8 products exactly on this CPU (checked once, on a probe).

    oneDNN's int8 kernel for x86 CPUs without VNNI (AVX2, and AVX-512 before Cascade Lake)
    may multiply unsigned by signed bytes and add adjacent pairs into 16-bit integers with
    saturation (``vpmaddubsw``). With weights beyond +-64 the pair sums overflow and most
    entries of the product come back wrong, silently. CPUs with VNNI (AVX512-VNNI, AVX-VNNI)
    accumulate in 32 bits and are exact.
    """
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (32, 64), generator=g, dtype=torch.int8)
    b = torch.randint(-128, 128, (48, 64), generator=g, dtype=torch.int8)
    return torch.equal(torch._int_mm(a, b.t()), a.int() @ b.int().t())


@functools.cache
def cpu_has_vnni() -> bool:
    """Whether this CPU has VNNI or AMX int8 instructions (four int8 multiply-adds into an int32
    in the slot of one fp32 multiply-add), as ``torch.cpu.get_capabilities()`` reports them."""
    capabilities = torch.cpu.get_capabilities()
    return any(capabilities.get(flag, False) for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


@functools.cache
def cpu_int8_is_fast() -> bool:
    """Whether :func:`int8_matmul` uses ``torch._int_mm`` on this CPU: it has VNNI (or AMX)
    and oneDNN really uses it (the product is exact; ``ONEDNN_MAX_CPU_ISA=AVX2`` takes VNNI
    away from oneDNN on a CPU that has it)."""
    return cpu_has_vnni() and cpu_int_mm_is_exact()


def _fp32_int8_matmul(x_q: torch.Tensor, w_q: torch.Tensor) -> torch.Tensor:
    """``x_q @ w_q.T`` with fp32 matmuls over slices of at most :data:`FP32_EXACT_DEPTH` inputs,
    each exact, converted to int32 and added."""
    k = x_q.shape[1]
    out = None
    for start in range(0, max(k, 1), FP32_EXACT_DEPTH):
        part = x_q[:, start:start + FP32_EXACT_DEPTH].float() @ w_q[:, start:start + FP32_EXACT_DEPTH].float().t()
        out = part.to(torch.int32) if out is None else out.add_(part.to(torch.int32))
    return out


def int8_matmul(x_q: torch.Tensor, w_q: torch.Tensor) -> torch.Tensor:
    """Exact ``int32`` product ``x_q @ w_q.T`` of 2-D int8 matrices.

    On a GPU, and on CPUs where :func:`cpu_int8_is_fast`, this is ``torch._int_mm``. On other
    CPUs it is computed with fp32 matmuls: every int8 product is an integer of at most
    ``2**14`` in magnitude, so a sum of up to :data:`FP32_EXACT_DEPTH` of them stays within
    the ``2**24`` integers that fp32 holds exactly, and longer rows are summed in slices of
    that depth and added in int32. Exact, at the speed of the fp32 matmul: such CPUs have no
    int8 instruction that beats it. (FBGEMM's x86 dynamic quantization gets its speed on them
    by keeping activations to 7 bits, ``reduce_range=True``, so that the 16-bit pair sums
    cannot saturate: a coarser grid, not the same integers.) Both arguments must be 2-D int8
    tensors with as many columns.
    """
    check_instance("x_q", x_q, torch.Tensor)
    check_instance("w_q", w_q, torch.Tensor)
    if x_q.dim() != 2 or w_q.dim() != 2 or x_q.dtype != torch.int8 or w_q.dtype != torch.int8:
        raise ValueError(f"int8_matmul multiplies 2-D int8 matrices, got {x_q.dtype} {tuple(x_q.shape)} "
                         f"and {w_q.dtype} {tuple(w_q.shape)}")
    if x_q.shape[1] != w_q.shape[1]:
        raise ValueError(f"int8_matmul: x_q has {x_q.shape[1]} columns but w_q has {w_q.shape[1]}")
    if x_q.device.type == "cpu" and not cpu_int8_is_fast():
        return _fp32_int8_matmul(x_q, w_q)
    return torch._int_mm(x_q, w_q.t())
