"""Triton kernels for compressed matmuls, each with the pure-PyTorch reference that defines it.

Without a GPU, Triton's interpreter runs the real kernel code on the CPU (slowly), so
the tests exercise the kernels everywhere. ``TRITON_INTERPRET=1`` must be set before
a kernel is defined, so this package sets it on import when no CUDA device is present
(set ``TRITON_INTERPRET=0`` yourself to override). Facts about the interpreter on this
project's machine are in DESIGN.md: bf16 arithmetic is wrong there (cast to fp32),
and unmasked out-of-bounds loads pass silently, so masks are right by construction.

* :mod:`~shrinklib.kernels.sparse24` - 2:4 sparse weight x dense activation.
* :mod:`~shrinklib.kernels.bsr` - block-sparse (BSR) weight x dense activation.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
