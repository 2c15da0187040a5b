"""What the kernel test files share: how their property-based tests draw shapes, blocks and a broken input.

Each kernel's property test is parametrized by the one thing it breaks: ``None`` (the
call is valid and the kernel must match its ``*_ref``) or a named break from the kernel's
list (the launcher must refuse it with a ``ValueError``/``TypeError`` naming the argument,
before launching). For each, Hypothesis draws a small problem (the interpreter's cost grows
with programs x loop iterations, so M <= 9 and N, K <= 64) and tile sizes. Every break is
thus tried on purpose, on several shapes, never left to the chance of a draw, and the
examples are the same on every run (``derandomize``), so a failure in CI is one a reader
can rerun.
"""
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import shrinklib.kernels  # noqa: F401  (sets TRITON_INTERPRET before a test file imports triton itself)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

#: Settings of every kernel property test: reproducible, no deadline (the interpreter is slow).
PROPERTY = settings(max_examples=20, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
#: Tile sizes a kernel takes, and sizes it must refuse (not powers of two, or below tl.dot's 16).
BLOCKS = st.sampled_from([16, 32, 64])
BAD_BLOCKS = st.sampled_from([0, 8, 24, 48, 100])
#: Two sides whose tile (2**22 elements) is larger than Triton's largest tensor (2**20).
HUGE_BLOCK = 2048
#: An activation dtype and the tolerance the kernel tests use for it.
DTYPES = st.sampled_from([(torch.float32, 1e-4), (torch.float16, 2e-2)])


def elsewhere(t: torch.Tensor) -> torch.Tensor:
    """``t`` on another device, one with no data: a kernel given it would read addresses it does not own."""
    return t.to("meta")


def seeded(data) -> torch.Generator:
    """A generator seeded from the draw, so tensors vary with the example and repeat with it."""
    return torch.Generator().manual_seed(data.draw(st.integers(0, 2 ** 16), label="seed"))
