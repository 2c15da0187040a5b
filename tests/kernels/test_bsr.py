"""The block-sparse kernel, run for real under Triton's interpreter on the CPU."""
import pytest
import torch

from shrinklib import prune
from shrinklib.kernels.bsr import bsr_matmul, bsr_matmul_ref, bsr_to_dense, to_bsr

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _block_sparse(n, k, block, sparsity, dtype=torch.float32, seed=0):
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(seed))
    keep = prune.select_smallest({"w": prune.block_scores(w, block)}, sparsity, "layer")["w"]
    return (w * prune.expand_blocks(keep, block)).to(dtype)


@pytest.mark.parametrize("n, k, block, sparsity", [(48, 80, (16, 16), 0.5), (64, 96, (32, 16), 0.75), (32, 32, (16, 16), 0.0)])
def test_bsr_format_is_torchs_and_round_trips(n, k, block, sparsity):
    w = _block_sparse(n, k, block, sparsity)
    crow, col, values = to_bsr(w, block)
    blocks = (n // block[0]) * (k // block[1])
    assert values.shape[0] == blocks - round(sparsity * blocks)  # pruned blocks are not stored
    assert torch.equal(bsr_to_dense(crow, col, values, (n, k)), w)


@pytest.mark.parametrize("m, n, k, block, sparsity", [(1, 48, 80, (16, 16), 0.5), (37, 64, 96, (32, 16), 0.75),
                                                      (5, 32, 48, (16, 16), 0.9)])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.float16, 2e-2)])
def test_kernel_matches_the_reference(m, n, k, block, sparsity, dtype, tol):
    w = _block_sparse(n, k, block, sparsity, dtype)
    crow, col, values = to_bsr(w, block)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(1)).to(dtype)
    expected = bsr_matmul_ref(x, crow, col, values, n)
    assert torch.allclose(expected.float(), x.float() @ w.float().T, atol=tol, rtol=tol)
    got = bsr_matmul(x.to(DEVICE), crow.to(DEVICE), col.to(DEVICE), values.to(DEVICE)).cpu()
    assert got.shape == (m, n) and torch.allclose(got.float(), expected.float(), atol=tol, rtol=tol)


def test_an_empty_block_row_gives_zeros():
    w = _block_sparse(32, 32, (16, 16), 0.0)
    w[:16] = 0
    crow, col, values = to_bsr(w, (16, 16))
    y = bsr_matmul(torch.randn(3, 32), crow, col, values)
    assert torch.all(y[:, :16] == 0)


@pytest.mark.parametrize("call, error, message", [
    (lambda: to_bsr(torch.zeros(30, 32), (16, 16)), ValueError, r"block \(16, 16\) does not divide"),
    (lambda: bsr_matmul(torch.zeros(2, 32, dtype=torch.bfloat16), *to_bsr(torch.ones(16, 32), (16, 16))), TypeError, "bf16"),
    (lambda: bsr_matmul(torch.zeros(2, 40), *to_bsr(torch.ones(16, 32), (16, 16))), ValueError, "multiple of the block width"),
])
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()
