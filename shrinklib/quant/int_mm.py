"""Exact ``int8 x int8 -> int32`` matrix products on any CPU.

``torch._int_mm`` is the fast int8 product PyTorch has on the CPU (oneDNN). On CPUs
without VNNI it silently saturates (:func:`cpu_int_mm_is_exact` says whether this one
does), and :func:`int8_matmul` then splits the weights so the product stays exact. The
dynamic and static int8 paths of :class:`~shrinklib.quant.linear.QuantLinear` compute
with it.
"""
from __future__ import annotations

import functools

import torch


@functools.cache
def cpu_int_mm_is_exact() -> bool:
    """Whether ``torch._int_mm`` computes int8 products exactly on this CPU (checked once, on a probe).

    oneDNN's int8 kernel for x86 CPUs without VNNI (AVX2, and AVX-512 before Cascade Lake:
    AMD Zen 2 and 3, Skylake and older Intel) multiplies unsigned by signed bytes and adds
    adjacent pairs into 16-bit integers with saturation (``vpmaddubsw``). With weights
    beyond +-64 the pair sums overflow and most entries of the product come back wrong,
    silently. CPUs with VNNI (AVX512-VNNI, AVX-VNNI) accumulate in 32 bits and are exact.
    """
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (32, 64), generator=g, dtype=torch.int8)
    b = torch.randint(-128, 128, (48, 64), generator=g, dtype=torch.int8)
    return torch.equal(torch._int_mm(a, b.t()), a.int() @ b.int().t())


def int8_matmul(x_q: torch.Tensor, w_q: torch.Tensor) -> torch.Tensor:
    """Exact ``int32`` product ``x_q @ w_q.T`` of 2-D int8 matrices (``torch._int_mm`` on the CPU).

    Where :func:`cpu_int_mm_is_exact` is false, each weight is split into two halves of at
    most 64 in magnitude, ``w = floor(w / 2) + (w - floor(w / 2))``, whose products cannot
    saturate, and the two are added: exact, at twice the multiply-adds. (The same
    saturation is why FBGEMM's x86 dynamic quantization keeps activations to 7 bits,
    ``reduce_range=True``.)
    """
    if x_q.device.type == "cpu" and not cpu_int_mm_is_exact():
        high = w_q >> 1  # floor(w / 2): an arithmetic shift
        return torch._int_mm(x_q, high.t()) + torch._int_mm(x_q, (w_q - high).t())
    return torch._int_mm(x_q, w_q.t())
