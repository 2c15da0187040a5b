"""Triton kernels for compressed matmuls, each with the pure-PyTorch reference that defines it.

Without a GPU, Triton's interpreter runs the real kernel code on the CPU (slowly), so
the tests exercise the kernels everywhere. ``TRITON_INTERPRET=1`` must be set before
Triton itself is imported (its own ``@triton.jit`` helpers, ``tl.zeros`` among them,
are built then), so ``import shrinklib`` sets it first thing when no CUDA device is
present (set ``TRITON_INTERPRET=0`` yourself to override). If Triton was imported
before shrinklib, the kernels cannot run on the CPU and this package says so. Facts about the interpreter on this
project's machine are in DESIGN.md: bf16 arithmetic is wrong there (cast to fp32),
and unmasked out-of-bounds loads pass silently, so masks are right by construction.

* :mod:`~shrinklib.kernels.sparse24` - 2:4 sparse weight x dense activation.
* :mod:`~shrinklib.kernels.bsr` - block-sparse (BSR) weight x dense activation.
* :mod:`~shrinklib.kernels.int8_weight` - W8A16: int8 weight (per-channel scales) x fp16/fp32 activation.
* :mod:`~shrinklib.kernels.int4_weight` - W4A16: packed 4-bit weight (per-group scales and zero points)
  x fp16/fp32 activation.
* :mod:`~shrinklib.kernels.int8_int8` - W8A8: int8 activation (per-token) x int8 weight (per-channel),
  exact int32 accumulation.

Every launcher checks every input's dtype, shape and device and every tile size against
what its kernel computes before it launches anything (the interpreter would read past a
buffer without a word). What the launchers share (those checks, ``tl.dot``'s input
precision: ieee for fp32, the output, the grid, the empty-batch path) is
:mod:`~shrinklib.kernels.launch`;
the protocol of the GPU benchmarks in ``benchmarks/*_kernels.py`` is
:mod:`~shrinklib.kernels.benchmark`.
"""
import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"

if INTERPRETED and "triton.language.standard" in sys.modules:
    if type(sys.modules["triton.language.standard"].zeros).__name__ != "InterpretedFunction":
        raise ImportError(
            "Triton was imported before TRITON_INTERPRET=1 was set, so its kernels cannot run on this CPU-only "
            "machine: import shrinklib before anything that imports triton, or set TRITON_INTERPRET=1 in the "
            "environment"
        )
