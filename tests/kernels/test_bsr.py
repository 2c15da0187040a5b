"""The block-sparse kernel, run for real under Triton's interpreter on the CPU."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from shrinklib import prune
from shrinklib.kernels.bsr import bsr_matmul, bsr_matmul_ref, bsr_to_dense, to_bsr

from .conftest import BAD_BLOCKS, DTYPES, PROPERTY, elsewhere, seeded

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


BREAKS = ("x narrower than the weight", "x not whole blocks", "x bf16", "values not x's dtype", "values not 3-D",
          "a block side", "block_m", "tile past Triton's largest", "crow not an index", "col not an index",
          "col of another length", "crow not from 0 to the blocks", "a negative col", "crow not contiguous",
          "another device")


@pytest.mark.parametrize("broken", (None, *BREAKS))
@PROPERTY
@given(data=st.data())
def test_property_valid_shapes_match_the_reference_and_broken_ones_raise(broken, data):
    bn, bk = data.draw(st.sampled_from([16, 32]), label="BN"), data.draw(st.sampled_from([16, 32]), label="BK")
    rows, cols = data.draw(st.integers(1, 64 // bn), label="block-rows"), data.draw(st.integers(1, 64 // bk),
                                                                                     label="block-columns")
    n, k, m = rows * bn, cols * bk, data.draw(st.integers(0, 9), label="m")
    (dtype, tol), g = data.draw(DTYPES, label="dtype"), seeded(data)
    keep = torch.rand(rows, cols, generator=g) < data.draw(st.sampled_from([0.3, 0.6, 1.0]), label="density")
    keep[0, -1] = True  # a block in the last block-column: an x narrower than the weight drops it
    w = torch.randn(n, k, generator=g) * keep.repeat_interleave(bn, 0).repeat_interleave(bk, 1)
    crow, col, values = to_bsr(w.to(dtype), (bn, bk))
    index = data.draw(st.sampled_from([torch.int32, torch.int64]), label="index dtype")
    crow, col = crow.to(index), col.to(index)
    x = torch.randn(m, k, generator=g).to(dtype)
    block_m = data.draw(st.sampled_from([None, 16, 32, 64]), label="block_m")
    if broken is None:
        got = bsr_matmul(x.to(DEVICE), crow.to(DEVICE), col.to(DEVICE), values.to(DEVICE), block_m=block_m).cpu()
        expected = bsr_matmul_ref(x, crow, col, values, n)
        assert got.shape == (m, n) and got.dtype == dtype
        assert torch.allclose(got.float(), expected.float(), atol=tol, rtol=tol)
        return
    error, message = ValueError, None
    if broken == "x narrower than the weight":  # the kernel would mask the last blocks away: a truncated product
        x = x[:, :k - bk * data.draw(st.integers(1, cols), label="block-columns dropped")]
        message = r"x's last dimension \(\d+\) is narrower than the weight: col holds block-column"
    elif broken == "x not whole blocks":
        x, message = torch.randn(m, k + 8, generator=g).to(dtype), "multiple of the block width"
    elif broken == "x bf16":
        x, error, message = x.bfloat16(), TypeError, "x must be float16 or float32"
    elif broken == "values not x's dtype":
        values = values.to(torch.float16 if dtype == torch.float32 else torch.float32)
        error, message = TypeError, r"values \(torch.float\d+\) must have the dtype of x"
    elif broken == "values not 3-D":
        values, message = values[0], r"values must be 3-D \(blocks, BN, BK\)"
    elif broken == "a block side":
        side, size = data.draw(st.sampled_from([1, 2]), label="side"), data.draw(st.sampled_from([8, 12]), label="size")
        values = values[:, :size] if side == 1 else values[:, :, :size]
        message = rf"the block's {'rows' if side == 1 else 'columns'} \(values.shape\[{side}\]\) must be a power of two"
    elif broken == "block_m":
        block_m, message = data.draw(BAD_BLOCKS, label="bad block"), "block_m must be a power of two >= 16"
    elif broken == "tile past Triton's largest":
        block_m, message = 2 ** 17, "more than Triton's largest tensor"
    elif broken in ("crow not an index", "col not an index"):
        bad = data.draw(st.sampled_from([torch.float32, torch.int16, torch.uint8]), label="index dtype")
        name = broken.split()[0]
        crow, col = (crow.to(bad), col) if name == "crow" else (crow, col.to(bad))
        error, message = TypeError, f"{name} must be an int32 or int64 tensor"
    elif broken == "col of another length":
        col, message = col[:-1], r"col must have shape \(blocks,\)"
    elif broken == "crow not from 0 to the blocks":  # the kernel would walk past values and col
        crow = crow.clone()
        crow[data.draw(st.sampled_from([0, -1]), label="end")] += data.draw(st.sampled_from([-1, 1]), label="by")
        message = "crow must run from 0 to the number of stored blocks"
    elif broken == "a negative col":  # the kernel would read before x
        col = col.clone()
        col[data.draw(st.integers(0, len(col) - 1), label="which")] = -1
        message = "col holds a negative block-column"
    elif broken == "crow not contiguous":  # the kernel reads it as a flat array
        crow, message = torch.stack([crow, crow], 1)[:, 0], "crow must be contiguous"
    else:
        moved = data.draw(st.sampled_from(["x", "crow", "col", "values"]), label="moved")
        operands = {"x": x, "crow": crow, "col": col, "values": values}
        x, crow, col, values = (elsewhere(t) if name == moved else t for name, t in operands.items())
        message = rf"\b{moved}\b.*must be on one device"
    with pytest.raises(error, match=message):
        bsr_matmul(x, crow, col, values, block_m=block_m)


def _blocks_in_the_last_column():
    w = torch.zeros(32, 64)
    w[:, 48:] = 1
    return to_bsr(w, (16, 16))


@pytest.mark.parametrize("call, error, message", [
    # issue 17: an x narrower than the weight was multiplied with the weight's first block-columns only
    (lambda: bsr_matmul(torch.zeros(2, 32), *_blocks_in_the_last_column()), ValueError,
     r"x's last dimension \(32\) is narrower than the weight: col holds block-column 3, which needs K >= 64"),
    (lambda: bsr_matmul_ref(torch.zeros(2, 32), *_blocks_in_the_last_column(), 32), ValueError,
     "narrower than the weight"),
    (lambda: bsr_matmul(torch.zeros(2, 64), torch.tensor([0, 2, 9], dtype=torch.int32), *_bsr(32, 64)[1:]), ValueError,
     r"crow must run from 0 to the number of stored blocks \(values.shape\[0\] = 8\) without decreasing"),
    (lambda: bsr_matmul(torch.zeros(2, 64), torch.tensor([0, 6, 4], dtype=torch.int32), *_bsr(32, 64)[1:]), ValueError,
     "crow must run from 0"),
    (lambda: bsr_matmul(torch.zeros(2, 64), _bsr(32, 64)[0], -_bsr(32, 64)[1], _bsr(32, 64)[2]), ValueError,
     r"col holds a negative block-column \(-3\)"),
    (lambda: bsr_matmul(torch.zeros(2, 64), _bsr(32, 64)[0], torch.stack([_bsr(32, 64)[1]] * 2, 1)[:, 0],
                        _bsr(32, 64)[2]), ValueError,
     r"col must be contiguous \(the kernel reads it as a flat array\)"),
    (lambda: bsr_matmul(torch.zeros(2, 32).to("meta"), *_bsr()), ValueError,
     "crow is on cpu but x is on meta: every tensor of one kernel call must be on one device"),
    (lambda: bsr_matmul(torch.zeros(2, 32), *_bsr(), block_m=2 ** 17), ValueError,
     r"block_m \(131072\) x block_n \(16\) is a tile of 2097152 elements, more than Triton's largest tensor"),
    (lambda: to_bsr(torch.ones(32, 32, dtype=torch.int32), (16, 16)), TypeError,
     "weight must be a floating-point tensor"),
    (lambda: bsr_to_dense(*_bsr(), (48, 32)), ValueError, r"shape \(48, 32\) does not fit the BSR weight"),
    (lambda: bsr_to_dense(*_bsr(), (32, 16)), ValueError, "narrower than the weight"),
    (lambda: bsr_to_dense(*_bsr(), 32), ValueError, r"shape must be a pair of ints \(N, K\)"),
])
def test_bad_input_refused_since_issue_17(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_an_x_wider_than_every_kept_block_reads_as_zero_columns_added():
    """The BSR triple does not record K: to_bsr of a weight whose last block-columns are pruned is the
    triple of the narrower weight, so a wider x is multiplied with the weight padded with zero columns."""
    w = _block_sparse(32, 32, (16, 16), 0.0)
    got = bsr_matmul(torch.ones(3, 64), *to_bsr(w, (16, 16)))
    assert torch.allclose(got, torch.ones(3, 64) @ torch.cat([w, torch.zeros(32, 32)], 1).T, atol=1e-4)
