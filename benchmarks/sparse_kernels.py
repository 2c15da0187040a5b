"""GPU benchmark of the 2:4 and block-sparse Triton kernels against torch's strongest baselines.

For the Linear shapes of MiniLM-L6 (384x1536), BERT-base (768x3072) and a 4096-wide LLM
layer, and batch x tokens M from 1 to 8192, times y = x @ W.T with

* dense fp16 ``torch.matmul`` (cuBLAS) - the baseline every ratio is against;
* ``torch.sparse.to_sparse_semi_structured`` (cuSPARSELt / CUTLASS 2:4), where it runs;
* ``shrinklib.kernels.sparse24.sparse24_matmul`` (2:4, compressed values + metadata);
* ``shrinklib.kernels.bsr.bsr_matmul`` at 50% and 90% block sparsity (32x32 blocks);

with ``triton.testing.do_bench`` (median of repeated runs), after checking each result
against the dense reference. Writes ``results/sparse_kernels.csv`` (device, versions,
date and commit on every row). Needs a CUDA GPU:

    python benchmarks/sparse_kernels.py

``--dry-run`` runs the same code on tiny shapes on the CPU under Triton's interpreter
(timed with a plain clock) to check the script itself; it writes nothing.
"""
from __future__ import annotations

from pathlib import Path

import torch

from shrinklib import prune
from shrinklib.kernels.benchmark import KernelBenchmark
from shrinklib.kernels.bsr import bsr_matmul, to_bsr
from shrinklib.kernels.sparse24 import compress_24, sparse24_matmul

OUT = Path(__file__).resolve().parents[1] / "results" / "sparse_kernels.csv"
SHAPES = {"MiniLM-L6 FFN": (1536, 384), "BERT-base FFN": (3072, 768), "LLM 4096": (4096, 4096)}  # (N, K)
TOKENS = (1, 16, 128, 1024, 8192)
DRY_SHAPES = {"tiny": (64, 64)}
DRY_TOKENS = (1, 17)


def _block_sparse(weight: torch.Tensor, sparsity: float, block: tuple[int, int]) -> torch.Tensor:
    keep = prune.select_smallest({"w": prune.block_scores(weight.float(), block)}, sparsity, "layer")["w"]
    return weight * prune.expand_blocks(keep, block).to(weight.device)


def main() -> None:
    bench = KernelBenchmark.from_command_line(__doc__.splitlines()[0])
    dry, device, dtype = bench.dry, bench.device, bench.dtype
    block = (16, 16) if dry else (32, 32)
    for shape_name, (n, k) in (DRY_SHAPES if dry else SHAPES).items():
        dense = torch.randn(n, k, device=device, dtype=dtype)
        w24 = dense * prune.nm_mask(dense.float(), 2, 4).to(device)
        values, meta = compress_24(w24)
        semi = None
        if not dry:
            try:
                semi = torch.sparse.to_sparse_semi_structured(w24)
            except (RuntimeError, NotImplementedError) as err:
                print(f"to_sparse_semi_structured unavailable for {shape_name}: {err}")
        bsr = {s: to_bsr(_block_sparse(dense, s, block), block) for s in (0.5, 0.9)}
        for m in (DRY_TOKENS if dry else TOKENS):
            x = torch.randn(m, k, device=device, dtype=dtype)
            reference = x @ w24.T
            candidates = {
                "dense matmul": (lambda: x @ dense.T, None),
                "2:4 triton": (lambda: sparse24_matmul(x, values, meta), reference),
            }
            if semi is not None and m >= 16:  # cuSPARSELt wants a few rows
                candidates["2:4 torch semi-structured"] = (lambda: torch.mm(semi, x.T).T, reference)
            for s, (crow, col, vals) in bsr.items():
                ref = x @ _block_sparse(dense, s, block).T
                candidates[f"block {int(s * 100)}% triton"] = (lambda c=crow, cl=col, v=vals: bsr_matmul(x, c, cl, v), ref)
            bench.time(candidates, shape_name=shape_name, n=n, k=k, m=m)
    bench.write(OUT)


if __name__ == "__main__":
    main()
