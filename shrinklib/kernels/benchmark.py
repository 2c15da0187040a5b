"""Timing the kernels against a dense baseline, the protocol of ``benchmarks/*_kernels.py``.

A kernel benchmark builds, per layer shape ``(N, K)`` and number of tokens ``M``, a dict
of candidates ``{kernel: (fn, expected)}`` whose first entry is the ``"dense matmul"``
baseline (``x @ W.T`` by cuBLAS). :meth:`KernelBenchmark.time` checks every result against
its reference (when there is one), times it with ``triton.testing.do_bench`` (the median of
repeated runs after warm-up; a single plain-clock call in a dry run on the CPU, which only
checks the script) and keeps one row per kernel with its speed-up over the baseline
measured in the same run (DESIGN.md section 3: the strongest baseline torch has, same
run). Every row carries :func:`shrinklib.measure.provenance` and triton's version.
:meth:`KernelBenchmark.write` merges the rows into ``results/`` through
:func:`shrinklib.results.upsert`, except in a dry run.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import triton

from shrinklib._checks import check_bool

BASELINE = "dense matmul"
#: The columns that name one measurement: a rerun replaces the rows with the same values.
KEY = ("shape", "M", "kernel", "dtype", "device")
ATOL, RTOL = 0.5, 2e-2  # a wrong kernel is far off; fp16 sums over K up to 11008 are not exact
_DTYPES = (torch.float16, torch.float32)


def _median_ms(fn: Callable[[], object], dry: bool) -> float:
    """Median milliseconds of ``fn`` (``do_bench`` on a GPU; one plain-clock call for a dry run)."""
    if dry:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    import triton.testing

    return float(triton.testing.do_bench(fn, return_mode="median"))


@dataclass
class KernelBenchmark:
    """The rows of one benchmark run: ``dtype`` on ``device``, a ``dry`` run or a real one.

    :meth:`from_command_line` is what a script calls: ``--dry-run`` picks fp32 on the CPU
    (under Triton's interpreter), otherwise fp16 on a CUDA GPU. ``stamp`` is added to
    every row (device, versions, date, commit).
    """

    dry: bool
    device: str
    dtype: torch.dtype
    stamp: dict = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)

    def __post_init__(self):
        check_bool("dry", self.dry)
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be torch.float16 or torch.float32, got {self.dtype}")

    @classmethod
    def from_command_line(cls, description: str, argv: list[str] | None = None) -> "KernelBenchmark":
        """Parse ``--dry-run`` from ``argv`` (default ``sys.argv``) and start a run; no CUDA without it exits."""
        parser = argparse.ArgumentParser(description=description)
        parser.add_argument("--dry-run", action="store_true",
                            help="tiny shapes on the CPU under Triton's interpreter, plain clock, nothing written")
        dry = parser.parse_args(argv).dry_run
        if not dry and not torch.cuda.is_available():
            raise SystemExit("this benchmark needs a CUDA GPU (use --dry-run to check the script on the CPU)")
        from shrinklib.measure import provenance

        device, dtype = ("cpu", torch.float32) if dry else ("cuda", torch.float16)
        return cls(dry, device, dtype, {**provenance(device), "triton_version": triton.__version__})

    def time(self, candidates: dict, *, shape_name: str, n: int, k: int, m: int) -> list[dict]:
        """Check and time every candidate of one (shape, ``M``); the baseline must come first.

        ``candidates`` maps a kernel's name to ``(fn, expected)``: ``fn()`` computes the
        product, ``expected`` is its reference or ``None``. A result further than
        ``atol=0.5, rtol=0.02`` from its reference raises ``AssertionError``. Returns the
        new rows (also kept in :attr:`rows`).
        """
        if not candidates or next(iter(candidates)) != BASELINE:
            raise ValueError(f"the first candidate must be the {BASELINE!r} baseline")
        baseline, new = None, []
        for kernel, (fn, expected) in candidates.items():
            if expected is not None:
                got = fn()
                if not torch.allclose(got.float(), expected.float(), atol=ATOL, rtol=RTOL):
                    raise AssertionError(f"{kernel} gives wrong results for {shape_name}, M={m}")
            ms = _median_ms(fn, self.dry)
            baseline = ms if kernel == BASELINE else baseline
            new.append({"shape": shape_name, "N": n, "K": k, "M": m, "kernel": kernel, "median_ms": ms,
                        "speedup_vs_dense": baseline / ms, "dtype": str(self.dtype).removeprefix("torch."),
                        **self.stamp})
            print(f"{shape_name:>18} M={m:>5} {kernel:<26} {ms:8.4f} ms  x{baseline / ms:5.2f}")
        self.rows.extend(new)
        return new

    def write(self, out: str | Path) -> int:
        """Merge :attr:`rows` into the CSV ``out`` by :data:`KEY` (:func:`shrinklib.results.upsert`:
        locked, atomic, the rows a rerun measures again replaced) and return their number; a
        dry run writes nothing."""
        if self.dry:
            print(f"dry run ok: {len(self.rows)} timings (nothing written)")
            return 0
        from shrinklib import results

        results.upsert(out, self.rows, KEY, stamp=self.stamp)
        print(f"wrote {len(self.rows)} rows to {out}")
        return len(self.rows)
