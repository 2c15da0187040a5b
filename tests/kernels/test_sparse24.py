"""The 2:4 kernel, run for real under Triton's interpreter on the CPU (on a GPU, compiled)."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from shrinklib import prune
from shrinklib.kernels.sparse24 import compress_24, decompress_24, sparse24_matmul, sparse24_matmul_ref

from .conftest import BAD_BLOCKS, BLOCKS, DTYPES, HUGE_BLOCK, PROPERTY, elsewhere, seeded

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _sparse(n, k, seed=0, dtype=torch.float32):
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(seed))
    return (w * prune.nm_mask(w, 2, 4)).to(dtype)


def test_format_of_one_group():
    values, meta = compress_24(torch.tensor([[0.0, 3.0, 0.0, 5.0]]))
    assert values.tolist() == [[3.0, 5.0]] and meta.tolist() == [[1 | 3 << 2]]


@pytest.mark.parametrize("n, k", [(1, 4), (45, 76), (8, 132)])
def test_compress_round_trips_exactly(n, k):
    w = _sparse(n, k)
    w[0, :4] = 0  # a group with no nonzero
    w[-1, 4:8] = torch.tensor([0.0, 0.0, 2.0, 0.0]) if k > 4 else w[-1, 4:8]  # a group with one
    values, meta = compress_24(w)
    assert values.shape == (n, k // 2) and meta.shape == (n, k // 4) and meta.dtype == torch.uint8
    assert torch.equal(decompress_24(values, meta), w)


@pytest.mark.parametrize("m, n, k, batch", [(1, 8, 4, ()), (5, 45, 76, ()), (33, 70, 132, ()), (7, 24, 64, (3,))])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.float16, 2e-2)])
def test_kernel_matches_the_reference_with_ragged_edges(m, n, k, batch, dtype, tol):
    w = _sparse(n, k, dtype=dtype)
    values, meta = compress_24(w)
    x = torch.randn(*batch, m, k, generator=torch.Generator().manual_seed(1)).to(dtype)
    expected = sparse24_matmul_ref(x, values, meta)
    assert torch.allclose(expected.float(), x.float() @ w.float().T, atol=tol, rtol=tol)
    got = sparse24_matmul(x.to(DEVICE), values.to(DEVICE), meta.to(DEVICE)).cpu()
    assert got.shape == (*batch, m, n) and got.dtype == dtype
    assert torch.allclose(got.float(), expected.float(), atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("lead", [(0,), (3, 0)])
def test_an_empty_batch_gives_an_empty_result(lead, dtype):
    values, meta = compress_24(_sparse(45, 76, dtype=dtype))
    got = sparse24_matmul(torch.zeros(*lead, 76, dtype=dtype, device=DEVICE), values.to(DEVICE), meta.to(DEVICE))
    assert got.shape == (*lead, 45) and got.dtype == dtype and got.device.type == DEVICE


def test_fp32_is_multiplied_in_fp32_not_tf32():
    """tf32 keeps 10 mantissa bits: over K = 132 its error is ~1e-3, a hundred times this tolerance."""
    w = _sparse(70, 132)
    values, meta = compress_24(w)
    x = torch.randn(37, 132, generator=torch.Generator().manual_seed(1))
    got = sparse24_matmul(x.to(DEVICE), values.to(DEVICE), meta.to(DEVICE)).cpu()
    assert torch.allclose(got, sparse24_matmul_ref(x, values, meta), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.float16, 2e-2)])
def test_other_block_sizes_and_strided_operands(dtype, tol):
    w = _sparse(90, 76, dtype=dtype)
    values, meta = compress_24(w)
    values, meta = values[::2], meta[::2]  # every other output feature: strided rows
    x = torch.randn(76, 45, generator=torch.Generator().manual_seed(1)).to(dtype).T  # column-major x
    got = sparse24_matmul(x.to(DEVICE), values.to(DEVICE), meta.to(DEVICE), block_m=16, block_n=16, block_k=32).cpu()
    assert got.shape == (45, 45)
    assert torch.allclose(got.float(), sparse24_matmul_ref(x, values, meta).float(), atol=tol, rtol=tol)


@pytest.mark.parametrize("call, error, message", [
    (lambda: compress_24(torch.ones(2, 8)), ValueError, "not 2:4 sparse"),
    (lambda: compress_24(torch.zeros(2, 6)), ValueError, r"K \(6\) must be a multiple of 4"),
    (lambda: sparse24_matmul(torch.zeros(2, 8, dtype=torch.bfloat16), *compress_24(torch.zeros(3, 8))), TypeError, "bf16"),
    (lambda: sparse24_matmul(torch.zeros(2, 12), *compress_24(torch.zeros(3, 8))), ValueError, "shapes do not fit"),
    (lambda: sparse24_matmul(torch.zeros(2, 8).half(), *compress_24(torch.zeros(3, 8))), TypeError, "must have the dtype of x"),
    (lambda: sparse24_matmul([[0.0] * 8], *compress_24(torch.zeros(3, 8))), TypeError,
     "x must be float16 or float32, got list"),
    (lambda: sparse24_matmul(torch.zeros(2, 8), torch.zeros(3, 4), torch.zeros(3, 2, dtype=torch.int64)), TypeError,
     "meta must be a uint8 tensor"),
    (lambda: sparse24_matmul(torch.zeros(2, 8), torch.zeros(12), torch.zeros(3, 2, dtype=torch.uint8)), ValueError,
     r"values must be 2-D \(N, K/2\), got shape \(12,\)"),
    (lambda: sparse24_matmul(torch.zeros(2, 8), torch.zeros(3, 4), torch.zeros(3, 1, dtype=torch.uint8)), ValueError,
     r"meta must have shape \(N, K/4\) = \(3, 2\)"),
    (lambda: sparse24_matmul(torch.zeros(2, 16), *compress_24(torch.zeros(3, 16)), block_m=24), ValueError,
     r"block_m must be a power of two >= 16 \(tl.dot's smallest tile\), got 24"),
    (lambda: sparse24_matmul(torch.zeros(2, 16), *compress_24(torch.zeros(3, 16)), block_n=8), ValueError,
     "block_n must be a power of two >= 16.*got 8"),
    (lambda: sparse24_matmul(torch.zeros(2, 16), *compress_24(torch.zeros(3, 16)), block_k=48), ValueError,
     "block_k must be a power of two >= 16.*got 48"),
    (lambda: sparse24_matmul_ref(torch.zeros(2, 12), *compress_24(torch.zeros(3, 8))), ValueError, "shapes do not fit"),
    (lambda: compress_24([[0.0] * 4]), TypeError, "weight must be a tensor"),
    (lambda: decompress_24(torch.zeros(3, 4), torch.zeros(3, 2)), TypeError, "meta must be a uint8 tensor"),
])
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


#: The six metadata codes ``first | second << 2`` with ``first < second``: every way to keep two of four.
CODES = torch.tensor([a | b << 2 for a in range(4) for b in range(a + 1, 4)], dtype=torch.uint8)
BREAKS = ("values of odd width", "meta of another shape", "meta not uint8", "values not x's dtype", "x too wide",
          "x too narrow", "x bf16", "block_m", "block_n", "block_k", "tile past Triton's largest", "another device")


@pytest.mark.parametrize("broken", (None, *BREAKS))
@PROPERTY
@given(data=st.data())
def test_property_valid_shapes_match_the_reference_and_broken_ones_raise(broken, data):
    m, n = data.draw(st.integers(0, 9), label="m"), data.draw(st.integers(1, 64), label="n")
    k = 4 * data.draw(st.integers(1, 16), label="K/4")
    (dtype, tol), g = data.draw(DTYPES, label="dtype"), seeded(data)
    blocks = {"block_m": data.draw(st.sampled_from([None, 16, 32, 64]), label="block_m"),
              "block_n": data.draw(BLOCKS, label="block_n"), "block_k": data.draw(BLOCKS, label="block_k")}
    values = torch.randn(n, k // 2, generator=g).to(dtype)
    meta = CODES[torch.randint(0, len(CODES), (n, k // 4), generator=g)]  # any two of four positions
    x = torch.randn(m, k, generator=g).to(dtype)
    if broken is None:
        got = sparse24_matmul(x.to(DEVICE), values.to(DEVICE), meta.to(DEVICE), **blocks).cpu()
        expected = sparse24_matmul_ref(x, values, meta)
        assert got.shape == (m, n) and got.dtype == dtype
        assert torch.allclose(got.float(), expected.float(), atol=tol, rtol=tol)
        return
    error, message = ValueError, None
    if broken == "values of odd width":  # K/2 odd: K not a multiple of 4, the last group half outside meta
        values, message = values[:, :-1], "values must have an even number of columns"
    elif broken == "meta of another shape":
        meta = torch.cat([meta, meta[:, :1]], 1) if data.draw(st.booleans(), label="wider") else meta[:, :-1]
        message = r"meta must have shape \(N, K/4\)"
    elif broken == "meta not uint8":
        meta = meta.to(data.draw(st.sampled_from([torch.int8, torch.int32]), label="meta dtype"))
        error, message = TypeError, "meta must be a uint8"
    elif broken == "values not x's dtype":
        values = values.to(torch.float16 if dtype == torch.float32 else torch.float32)
        error, message = TypeError, r"values \(torch.float\d+\) must have the dtype of x"
    elif broken in ("x too wide", "x too narrow"):
        x = torch.randn(m, k + 4 if broken == "x too wide" else k - 4, generator=g).to(dtype)
        message = "shapes do not fit"
    elif broken == "x bf16":
        x, error, message = x.bfloat16(), TypeError, "x must be float16 or float32"
    elif broken in ("block_m", "block_n", "block_k"):
        blocks[broken] = data.draw(BAD_BLOCKS, label="bad block")
        message = f"{broken} must be a power of two >= 16"
    elif broken == "tile past Triton's largest":
        blocks.update(block_n=HUGE_BLOCK, block_k=HUGE_BLOCK)
        message = "more than Triton's largest tensor"
    else:
        moved = data.draw(st.sampled_from(["x", "values", "meta"]), label="moved")
        operands = {"x": x, "values": values, "meta": meta}
        x, values, meta = (elsewhere(t) if name == moved else t for name, t in operands.items())
        message = rf"\b{moved}\b.*must be on one device"
    with pytest.raises(error, match=message):
        sparse24_matmul(x, values, meta, **blocks)


@pytest.mark.parametrize("call, error, message", [
    # issue 17: values of odd width (K/2 odd, so K is not a multiple of 4) and their K/4-wide meta
    (lambda: sparse24_matmul(torch.zeros(2, 6), torch.zeros(3, 3), torch.zeros(3, 1, dtype=torch.uint8)), ValueError,
     r"values must have an even number of columns, K/2 with K a multiple of 4 .*got shape \(3, 3\)"),
    (lambda: decompress_24(torch.zeros(3, 3), torch.zeros(3, 1, dtype=torch.uint8)), ValueError,
     "values must have an even number of columns"),
    (lambda: sparse24_matmul(torch.zeros(2, 8), torch.zeros(3, 4), torch.zeros(3, 2, dtype=torch.uint8).to("meta")),
     ValueError, "meta is on meta but values is on cpu: every tensor of one kernel call must be on one device"),
    (lambda: sparse24_matmul(torch.zeros(2, 8).to("meta"), torch.zeros(3, 4), torch.zeros(3, 2, dtype=torch.uint8)),
     ValueError, "values is on cpu but x is on meta"),
    (lambda: sparse24_matmul(*(t.to("meta") for t in (torch.zeros(2, 8), *compress_24(torch.zeros(3, 8))))), ValueError,
     "x, values, meta are on meta, where the kernels cannot run"),
    (lambda: sparse24_matmul_ref(torch.zeros(2, 8).to("meta"), *compress_24(torch.zeros(3, 8))), ValueError,
     "values is on cpu but x is on meta"),
    (lambda: sparse24_matmul(torch.zeros(2, 16), *compress_24(torch.zeros(3, 16)), block_n=2048, block_k=1024),
     ValueError, r"block_n \(2048\) x block_k \(1024\) is a tile of 2097152 elements, more than Triton's largest"),
    (lambda: compress_24(torch.zeros(3, 8, dtype=torch.int64)), TypeError,
     "weight must be a floating-point tensor \\(N, K\\), got torch.int64"),
    (lambda: sparse24_matmul_ref([[0.0] * 8], *compress_24(torch.zeros(3, 8))), TypeError, "x must be a tensor"),
])
def test_bad_input_refused_since_issue_17(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_kernels_run_whatever_shrinklib_module_is_imported_first():
    """measure imports triton (through torch's flop counter); the interpreter must be on by then."""
    import subprocess
    import sys

    script = ("import torch\nfrom shrinklib import measure\nfrom shrinklib import prune\n"
              "from shrinklib.kernels.sparse24 import compress_24, sparse24_matmul\n"
              "w = torch.randn(8, 16); w = w * prune.nm_mask(w)\n"
              "print(sparse24_matmul(torch.randn(3, 16), *compress_24(w)).shape)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "torch.Size([3, 8])" in result.stdout
