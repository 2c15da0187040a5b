"""Timing the GPU kernels against the strongest baseline torch has, for ``benchmarks/``.

``benchmarks/sparse_kernels.py`` and ``benchmarks/quant_kernels.py`` each build, per layer
shape and number of tokens ``M``, a dict of candidates ``{kernel: (fn, expected)}`` whose
first entry is the :data:`BASELINE` (``"dense matmul"``: cuBLAS fp16). :func:`time_candidates`
checks every result against its reference (when there is one), times it with
``triton.testing.do_bench`` (median; a plain clock for a ``--dry-run`` on the CPU, where
the interpreter's timings mean nothing) and appends one row per kernel with its speed-up
over the baseline measured in the same run. :func:`write_rows` puts the rows into
``results/`` (:func:`shrinklib.results.upsert`, keyed by :data:`KEY`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from shrinklib import results

BASELINE = "dense matmul"
#: The columns that name one timing: a rerun replaces the rows with the same values.
KEY = ("shape", "N", "K", "M", "kernel", "dtype")


def bench(fn: Callable[[], object], dry: bool) -> float:
    """Median milliseconds of ``fn`` (``do_bench`` on a GPU; one plain-clock call for a dry run)."""
    if dry:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    import triton.testing

    return float(triton.testing.do_bench(fn, return_mode="median"))


def time_candidates(candidates: dict, rows: list[dict], *, shape_name: str, n: int, k: int, m: int,
                    dtype: torch.dtype, stamp: dict, dry: bool) -> None:
    """Check and time every candidate of one (shape, M); the baseline must come first."""
    if not candidates or next(iter(candidates)) != BASELINE:
        raise ValueError(f"the first candidate must be the {BASELINE!r} baseline, got {list(candidates)[:1]}")
    baseline = None
    for kernel, (fn, expected) in candidates.items():
        if expected is not None:
            got = fn()
            if not torch.allclose(got.float(), expected.float(), atol=0.5, rtol=2e-2):
                raise AssertionError(f"{kernel} gives wrong results for {shape_name}, M={m}")
        ms = bench(fn, dry)
        baseline = ms if kernel == BASELINE else baseline
        rows.append({"shape": shape_name, "N": n, "K": k, "M": m, "kernel": kernel, "median_ms": ms,
                     "speedup_vs_dense": baseline / ms, "dtype": str(dtype).removeprefix("torch."), **stamp})
        print(f"{shape_name:>18} M={m:>5} {kernel:<26} {ms:8.4f} ms  x{baseline / ms:5.2f}")


def write_rows(rows: list[dict], out: Path, dry: bool) -> None:
    """Merge ``rows`` into the CSV ``out`` (nothing is written for a dry run)."""
    if dry:
        print(f"dry run ok: {len(rows)} timings (nothing written)")
        return
    total = results.upsert(out, rows, KEY)
    print(f"wrote {len(rows)} rows to {out} ({total} in all)")
