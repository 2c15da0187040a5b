import os
import platform
import subprocess
import sys

import pytest
import torch

from shrinklib.quant.int_mm import int8_matmul


@pytest.mark.parametrize("m, k, n", [(1, 384, 1536), (7, 96, 45), (33, 1536, 384), (5, 3, 2)])
def test_int8_matmul_is_exact_over_the_full_int8_range(m, k, n):
    g = torch.Generator().manual_seed(m)
    x_q = torch.randint(-128, 128, (m, k), generator=g, dtype=torch.int8)
    w_q = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int8)
    w_q[0] = -128  # the extremes too
    assert torch.equal(int8_matmul(x_q, w_q), x_q.long().matmul(w_q.long().T).int())


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="oneDNN's x86 int8 kernels")
def test_int8_matmul_is_exact_where_onednn_saturates():
    """On an Intel CPU without VNNI (here imitated by capping oneDNN at AVX2) torch._int_mm saturates
    16-bit pair sums (an AMD EPYC with AVX2 only computed it exactly); whichever it does, the
    probe says so and int8_matmul stays exact (it calls torch._int_mm only where VNNI makes it fast). Run in a child process, because oneDNN reads its
    ISA cap once."""
    code = """
import torch
from shrinklib.quant import cpu_int_mm_is_exact, int8_matmul
g = torch.Generator().manual_seed(0)
x = torch.randint(-128, 128, (40, 384), generator=g, dtype=torch.int8)
w = torch.randint(-128, 128, (96, 384), generator=g, dtype=torch.int8)
exact = x.long().matmul(w.long().T).int()
assert cpu_int_mm_is_exact() == torch.equal(torch._int_mm(x, w.T), exact)
assert torch.equal(int8_matmul(x, w), exact)
print("ok")
"""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


@pytest.mark.parametrize("k", [200, 1024, 2500])
def test_int8_matmul_fp32_path_is_exact_past_fp32s_integers(monkeypatch, k):
    """The path taken where torch._int_mm is slow or saturates, forced on whatever CPU runs the test.
    All -128s at depth 2500 sum to 2500 * 2**14 > 2**24, which one fp32 matmul would round."""
    from shrinklib.quant import int_mm

    monkeypatch.setattr(int_mm, "cpu_int8_is_fast", lambda: False)
    g = torch.Generator().manual_seed(k)
    x = torch.randint(-128, 128, (33, k), generator=g, dtype=torch.int8)
    x[0] = -128
    w = torch.randint(-128, 128, (17, k), generator=g, dtype=torch.int8)
    w[0] = -128
    w[1] = 127
    exact = x.long().matmul(w.long().T)
    assert exact.abs().max() > 2**24 or k <= int_mm.FP32_EXACT_DEPTH
    assert torch.equal(int_mm.int8_matmul(x, w), exact.int())
    assert int_mm.int8_matmul(x[:0], w).shape == (0, 17)


def test_int8_matmul_fast_path_only_with_vnni(monkeypatch):
    """torch._int_mm is called only where the CPU has VNNI and oneDNN uses it (an exact probe)."""
    from shrinklib.quant import int_mm

    int_mm.cpu_int8_is_fast.cache_clear()
    monkeypatch.setattr(int_mm, "cpu_has_vnni", lambda: False)
    assert not int_mm.cpu_int8_is_fast()
    int_mm.cpu_int8_is_fast.cache_clear()
    monkeypatch.setattr(int_mm, "cpu_has_vnni", lambda: True)
    monkeypatch.setattr(int_mm, "cpu_int_mm_is_exact", lambda: False)
    assert not int_mm.cpu_int8_is_fast()
    int_mm.cpu_int8_is_fast.cache_clear()


def test_int8_matmul_rejects_what_it_cannot_multiply():
    x = torch.zeros(4, 8, dtype=torch.int8)
    with pytest.raises(ValueError, match="2-D int8"):
        int8_matmul(x.float(), x)
    with pytest.raises(ValueError, match="2-D int8"):
        int8_matmul(x[None], x)
    with pytest.raises(ValueError, match="8 columns but w_q has 6"):
        int8_matmul(x, torch.zeros(3, 6, dtype=torch.int8))
