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
    probe says so and int8_matmul stays exact. Run in a child process, because oneDNN reads its
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


def test_int8_matmul_split_path_is_exact(monkeypatch):
    """The path taken where torch._int_mm saturates, forced on whatever CPU runs the test."""
    from shrinklib.quant import int_mm as linear

    monkeypatch.setattr(linear, "cpu_int_mm_is_exact", lambda: False)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(-128, 128, (33, 200), generator=g, dtype=torch.int8)
    w = torch.full((17, 200), -128, dtype=torch.int8)  # the extremes: |w| = 128 splits into two -64s
    w[1::2] = 127
    assert torch.equal(linear.int8_matmul(x, w), x.long().matmul(w.long().T).int())
