"""GPU benchmark of the W8A16, W4A16 and W8A8 Triton kernels against torch's strongest baselines.

For the Linear shapes (N, K) of MiniLM-L6's FFN (1536x384 up, 384x1536 down), BERT-base's
FFN (3072x768, 768x3072) and a 4096-wide LLM (4096x4096 attention, 11008x4096 MLP up,
4096x11008 MLP down), and batch x tokens M from 1 to 16 (decoding) and up to 8192
(prefill), times y = x @ W.T with

* dense fp16 ``torch.matmul`` (cuBLAS) - the baseline every ratio is against;
* ``shrinklib.kernels.int8_weight.w8a16_matmul`` (int8 weight, per-channel scales);
* ``shrinklib.kernels.int4_weight.w4a16_matmul`` (packed 4-bit weight, groups of 128);
* ``shrinklib.kernels.int8_int8.w8a8_matmul`` on an already quantized x, and with
  ``quantize_per_token`` of x timed in (what a W8A8 Linear pays);
* ``torch._int_mm`` (cuBLASLt int8 -> int32) plus the same two scalings, where it runs
  (it wants M > 16 and K, N multiples of 8);

with ``triton.testing.do_bench`` (median of repeated runs), after checking each result
against its ``*_ref``. Writes ``results/quant_kernels.csv`` (device, versions, date and
commit on every row). Needs a CUDA GPU:

    python benchmarks/quant_kernels.py

``--dry-run`` runs the same code on tiny shapes on the CPU under Triton's interpreter
(timed with a plain clock) to check the script itself; it writes nothing.
"""
from __future__ import annotations

from pathlib import Path

import torch

from shrinklib.kernels.benchmark import KernelBenchmark
from shrinklib.kernels.int4_weight import pack_int4, w4a16_matmul, w4a16_matmul_ref
from shrinklib.kernels.int8_int8 import quantize_per_token, w8a8_matmul, w8a8_matmul_ref
from shrinklib.kernels.int8_weight import w8a16_matmul, w8a16_matmul_ref
from shrinklib.quant.primitives import choose_qparams, quantize

OUT = Path(__file__).resolve().parents[1] / "results" / "quant_kernels.csv"
SHAPES = {  # (N, K)
    "MiniLM-L6 FFN up": (1536, 384), "MiniLM-L6 FFN down": (384, 1536),
    "BERT-base FFN up": (3072, 768), "BERT-base FFN down": (768, 3072),
    "LLM 4096 attention": (4096, 4096), "LLM MLP up": (11008, 4096), "LLM MLP down": (4096, 11008),
}
TOKENS = (1, 2, 4, 8, 16, 128, 1024, 8192)
GROUP_SIZE = 128
DRY_SHAPES = {"tiny": (48, 128)}
DRY_TOKENS = (1, 17)


def _int_mm(x_q: torch.Tensor, x_scale: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor,
            out_dtype: torch.dtype) -> torch.Tensor:
    """W8A8 with torch's own int8 matmul: exact int32 ``x_q @ w_q.T``, then both scales in fp32."""
    return (torch._int_mm(x_q, w_q.T).float() * x_scale[:, None] * w_scale).to(out_dtype)


def main() -> None:
    bench = KernelBenchmark.from_command_line(__doc__.splitlines()[0])
    dry, device, dtype = bench.dry, bench.device, bench.dtype
    for shape_name, (n, k) in (DRY_SHAPES if dry else SHAPES).items():
        dense = torch.randn(n, k, device=device, dtype=dtype)
        s8, z8 = choose_qparams(dense, 8, True, axis=0)
        q8, s8 = quantize(dense, s8, z8, 8, True), s8[:, 0].contiguous()
        s4, z4 = choose_qparams(dense, 4, False, group_size=GROUP_SIZE)
        packed = pack_int4(quantize(dense, s4, z4, 4, False, group_size=GROUP_SIZE))
        for m in (DRY_TOKENS if dry else TOKENS):
            x = torch.randn(m, k, device=device, dtype=dtype)
            x_q, x_scale = quantize_per_token(x)
            candidates = {
                "dense matmul": (lambda: x @ dense.T, None),
                "W8A16 triton": (lambda: w8a16_matmul(x, q8, s8), w8a16_matmul_ref(x, q8, s8)),
                f"W4A16 g{GROUP_SIZE} triton": (lambda: w4a16_matmul(x, packed, s4, z4, GROUP_SIZE),
                                                w4a16_matmul_ref(x, packed, s4, z4, GROUP_SIZE)),
            }
            w8a8_ref = w8a8_matmul_ref(x_q, x_scale, q8, s8, dtype)
            candidates["W8A8 triton"] = (lambda: w8a8_matmul(x_q, x_scale, q8, s8, dtype), w8a8_ref)
            candidates["W8A8 triton + quantize x"] = (lambda: w8a8_matmul(*quantize_per_token(x), q8, s8, dtype),
                                                      w8a8_ref)
            try:
                _int_mm(x_q, x_scale, q8, s8, dtype)
                candidates["W8A8 torch._int_mm"] = (lambda: _int_mm(x_q, x_scale, q8, s8, dtype), w8a8_ref)
            except (RuntimeError, NotImplementedError) as err:
                print(f"torch._int_mm unavailable for {shape_name}, M={m}: {str(err).splitlines()[0]}")
            bench.time(candidates, shape_name=shape_name, n=n, k=k, m=m)
    bench.write(OUT)


if __name__ == "__main__":
    main()
