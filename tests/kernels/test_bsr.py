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


@pytest.mark.parametrize("m, n, k, block, batch", [(45, 80, 112, (16, 16), ()), (7, 48, 96, (16, 32), (3,)),
                                                    (70, 96, 48, (32, 16), ())])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.float16, 2e-2)])
def test_awkward_shapes_batches_and_int64_indices(m, n, k, block, batch, dtype, tol):
    w = _block_sparse(n, k, block, 0.5, dtype)
    crow, col, values = to_bsr(w, block)
    x = torch.randn(*batch, m, k, generator=torch.Generator().manual_seed(1)).to(dtype)
    expected = bsr_matmul_ref(x, crow, col, values, n)
    for index in (crow, col), (crow.long(), col.long()):
        got = bsr_matmul(x.to(DEVICE), *(t.to(DEVICE) for t in index), values.to(DEVICE)).cpu()
        assert got.shape == (*batch, m, n) and got.dtype == dtype
        assert torch.allclose(got.float(), expected.float(), atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("lead", [(0,), (3, 0)])
def test_an_empty_batch_gives_an_empty_result(lead, dtype):
    crow, col, values = to_bsr(_block_sparse(48, 80, (16, 16), 0.5, dtype), (16, 16))
    got = bsr_matmul(torch.zeros(*lead, 80, dtype=dtype, device=DEVICE), crow.to(DEVICE), col.to(DEVICE),
                     values.to(DEVICE))
    assert got.shape == (*lead, 48) and got.dtype == dtype and got.device.type == DEVICE


def test_fp32_is_multiplied_in_fp32_not_tf32():
    """tf32 keeps 10 mantissa bits: over K = 112 its error is ~1e-3, a hundred times this tolerance."""
    crow, col, values = to_bsr(_block_sparse(80, 112, (16, 16), 0.25), (16, 16))
    x = torch.randn(37, 112, generator=torch.Generator().manual_seed(1))
    got = bsr_matmul(x.to(DEVICE), crow.to(DEVICE), col.to(DEVICE), values.to(DEVICE)).cpu()
    assert torch.allclose(got, bsr_matmul_ref(x, crow, col, values, 80), atol=1e-5, rtol=1e-5)


def test_other_row_tiles_and_a_strided_x():
    crow, col, values = to_bsr(_block_sparse(48, 80, (16, 16), 0.5), (16, 16))
    x = torch.randn(80, 45, generator=torch.Generator().manual_seed(1)).T  # column-major x
    expected = bsr_matmul_ref(x, crow, col, values, 48)
    for block_m in (16, 32, 128):
        got = bsr_matmul(x.to(DEVICE), crow.to(DEVICE), col.to(DEVICE), values.to(DEVICE), block_m=block_m).cpu()
        assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)


def _bsr(n=32, k=32, block=(16, 16)):
    return to_bsr(torch.ones(n, k), block)


@pytest.mark.parametrize("call, error, message", [
    (lambda: to_bsr(torch.zeros(30, 32), (16, 16)), ValueError, r"block \(16, 16\) does not divide"),
    (lambda: bsr_matmul(torch.zeros(2, 32, dtype=torch.bfloat16), *to_bsr(torch.ones(16, 32), (16, 16))), TypeError, "bf16"),
    (lambda: bsr_matmul(torch.zeros(2, 40), *to_bsr(torch.ones(16, 32), (16, 16))), ValueError, "multiple of the block width"),
    (lambda: bsr_matmul(torch.zeros(2, 32), *_bsr(block=(8, 16))), ValueError,
     r"the block's rows \(values.shape\[1\]\) must be a power of two >= 16 \(tl.dot's smallest tile\), got 8"),
    (lambda: bsr_matmul(torch.zeros(2, 48), *_bsr(32, 48, block=(16, 24))), ValueError,
     r"the block's columns \(values.shape\[2\]\) must be a power of two >= 16.*got 24"),
    (lambda: bsr_matmul(torch.zeros(2, 32), *_bsr(), block_m=24), ValueError,
     r"block_m must be a power of two >= 16 \(tl.dot's smallest tile\), got 24"),
    (lambda: bsr_matmul(torch.zeros(2, 32), *_bsr(), block_m=8), ValueError, "block_m must be a power of two.*got 8"),
    (lambda: bsr_matmul(torch.zeros(2, 32).half(), *_bsr()), TypeError, r"values \(torch.float32\) must have the dtype of x"),
    (lambda: bsr_matmul(torch.zeros(2, 32), _bsr()[0].float(), *_bsr()[1:]), TypeError,
     "crow must be an int32 or int64 tensor from to_bsr, got torch.float32"),
    (lambda: bsr_matmul(torch.zeros(2, 32), _bsr()[0], _bsr()[1][:2], _bsr()[2]), ValueError,
     r"col must have shape \(blocks,\) = \(4,\), one block-column per stored block, got \(2,\)"),
    (lambda: bsr_matmul(torch.zeros(2, 32), _bsr()[0][None], *_bsr()[1:]), ValueError, "crow must be 1-D"),
    (lambda: bsr_matmul(torch.zeros(2, 32), *_bsr()[:2], _bsr()[2][0]), ValueError,
     r"values must be 3-D \(blocks, BN, BK\), got shape \(16, 16\)"),
    (lambda: bsr_matmul_ref(torch.zeros(2, 32), *_bsr(), 48), ValueError,
     r"n \(48\) must be the rows of the BSR weight, \(len\(crow\) - 1\) \* BN = 32"),
    (lambda: bsr_matmul_ref(torch.zeros(2, 40), *_bsr(), 32), ValueError, "multiple of the block width"),
    (lambda: to_bsr(torch.zeros(32, 32), (0, 16)), ValueError, r"block must be a pair of ints >= 1 \(rows, columns\)"),
    (lambda: to_bsr(torch.zeros(32, 32), 16), ValueError, "block must be a pair of ints >= 1"),
    (lambda: to_bsr(torch.zeros(32), (16, 16)), ValueError, r"weight must be 2-D \(N, K\)"),
])
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()
