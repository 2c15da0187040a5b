"""The W8A8 kernel (int8 x int8 -> int32), run for real under Triton's interpreter on the CPU."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from shrinklib.kernels.int8_int8 import MAX_K, quantize_per_token, w8a8_matmul, w8a8_matmul_ref
from shrinklib.quant.primitives import choose_qparams, dequantize, quantize

from .conftest import BAD_BLOCKS, BLOCKS, HUGE_BLOCK, PROPERTY, elsewhere, seeded

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _levels(*shape, seed=0):
    return torch.randint(-128, 128, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.int8)


def _scales(n, seed=0):
    return torch.rand(n, generator=torch.Generator().manual_seed(seed)) / 50 + 1e-3


def test_quantize_per_token_is_symmetric_int8_per_row():
    x = torch.randn(2, 7, 45, generator=torch.Generator().manual_seed(0))
    x[0, 3] = 0  # a row of zeros
    x_q, x_scale = quantize_per_token(x)
    assert x_q.dtype == torch.int8 and x_scale.dtype == torch.float32 and x_scale.shape == (2, 7)
    assert torch.all(x_q[0, 3] == 0) and x_scale[0, 3] == 1 and torch.isfinite(x_scale).all()
    for b in range(2):  # the primitives, per row (axis 0 of each 2-D slice)
        scale, zero_point = choose_qparams(x[b], 8, True, axis=0)
        rows = x[b].abs().amax(-1) > 0
        assert torch.equal(x_scale[b][rows], scale[rows, 0])
        assert torch.equal(x_q[b], quantize(x[b], scale, zero_point, 8, True))
    absmax_level = x_q.abs().amax(-1)
    assert torch.all(absmax_level[x_scale != 1] == 127)  # each row's absmax lands on the end of the grid


@pytest.mark.parametrize("m, n, k", [(7, 45, 76), (33, 130, 96), (1, 17, 264)])
def test_kernel_is_exact_in_int32_before_scaling(m, n, k):
    x_q, w_q = _levels(m, k, seed=1), _levels(n, k, seed=2)
    x_q[0], w_q[0] = -128, -128  # the largest product, K times
    got = w8a8_matmul(x_q.to(DEVICE), torch.ones(m, device=DEVICE), w_q.to(DEVICE), torch.ones(n, device=DEVICE))
    exact = x_q.long() @ w_q.long().T
    assert int(exact[0, 0]) == 128 * 128 * k
    assert torch.equal(got.cpu().long(), exact)
    assert torch.equal(w8a8_matmul_ref(x_q, torch.ones(m), w_q, torch.ones(n)).long(), exact)


@pytest.mark.parametrize("m, n, k, batch", [(7, 45, 76, ()), (33, 130, 96, ()), (1, 17, 264, ()), (5, 24, 64, (3,))])
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float16])
def test_kernel_matches_the_reference_with_ragged_edges(m, n, k, batch, out_dtype):
    x_q, w_q = _levels(*batch, m, k, seed=1), _levels(n, k, seed=2)
    x_scale, w_scale = _scales(batch + (m,), seed=3), _scales(n, seed=4)
    expected = w8a8_matmul_ref(x_q, x_scale, w_q, w_scale, out_dtype)
    got = w8a8_matmul(x_q.to(DEVICE), x_scale.to(DEVICE), w_q.to(DEVICE), w_scale.to(DEVICE), out_dtype).cpu()
    assert got.shape == (*batch, m, n) and got.dtype == out_dtype
    # same integers, same two fp32 products in the same order: equal up to the last bit
    assert torch.allclose(got.float(), expected.float(), atol=0, rtol=1e-6)


def test_reference_is_the_matmul_of_the_dequantized_operands():
    x = torch.randn(7, 76, generator=torch.Generator().manual_seed(0))
    w = torch.randn(45, 76, generator=torch.Generator().manual_seed(1))
    x_q, x_scale = quantize_per_token(x)
    w_scale, w_zero = choose_qparams(w, 8, True, axis=0)
    w_q = quantize(w, w_scale, w_zero, 8, True)
    got = w8a8_matmul_ref(x_q, x_scale, w_q, w_scale[:, 0])
    x_hat = dequantize(x_q, x_scale[:, None], torch.zeros(7, 1, dtype=torch.int32))
    assert torch.allclose(got, x_hat @ dequantize(w_q, w_scale, w_zero).T, atol=1e-4, rtol=1e-5)
    assert torch.allclose(got, x @ w.T, atol=0.05 * 76 ** 0.5)  # and both int8 roundings stay close
    strided = w8a8_matmul(x_q, x_scale, w_q.T.contiguous().T, w_scale[:, 0], block_m=16, block_n=16, block_k=32)
    assert torch.allclose(strided, got, atol=0, rtol=1e-6)


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("lead", [(0,), (3, 0)])
def test_an_empty_batch_gives_an_empty_result(lead, out_dtype):
    got = w8a8_matmul(_levels(*lead, 76).to(DEVICE), torch.ones(lead, device=DEVICE), _levels(45, 76).to(DEVICE),
                      _scales(45).to(DEVICE), out_dtype)
    assert got.shape == (*lead, 45) and got.dtype == out_dtype and got.device.type == DEVICE


@pytest.mark.parametrize("call, error, message", [
    (lambda: w8a8_matmul(torch.zeros(2, 8), torch.ones(2), _levels(3, 8), torch.ones(3)), TypeError,
     "x_q must be an int8 tensor"),
    (lambda: w8a8_matmul(_levels(2, 8), torch.ones(2).half(), _levels(3, 8), torch.ones(3)), TypeError,
     "x_scale must be a float32 tensor"),
    (lambda: w8a8_matmul(_levels(2, 8), torch.ones(2), _levels(3, 8), torch.ones(3), torch.bfloat16), TypeError,
     "bf16"),
    (lambda: w8a8_matmul(_levels(2, 12), torch.ones(2), _levels(3, 8), torch.ones(3)), ValueError,
     "shapes do not fit"),
    (lambda: w8a8_matmul(_levels(2, 8), torch.ones(2, 1), _levels(3, 8), torch.ones(3)), ValueError,
     r"x_scale must have shape x_q.shape\[:-1\] = \(2,\)"),
    (lambda: w8a8_matmul(_levels(2, 8), torch.ones(2), _levels(3, 8), torch.ones(4)), ValueError,
     r"w_scale must have shape \(N,\) = \(3,\)"),
    (lambda: w8a8_matmul(_levels(2, 8), torch.ones(2), _levels(3, 8), torch.ones(3), block_m=24), ValueError,
     "block_m must be a power of two"),
    (lambda: w8a8_matmul(_levels(1, MAX_K + 1), torch.ones(1), _levels(1, MAX_K + 1), torch.ones(1)), ValueError,
     r"K \(131072\) is too large for an exact int32 accumulator \(at most 131071\)"),
    (lambda: quantize_per_token(_levels(2, 8)), TypeError, "x must be a floating-point tensor"),
    (lambda: quantize_per_token(torch.tensor([[1.0, float("nan")]])), ValueError, "inf or nan"),
])
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


BREAKS = ("x not floating-point", "x_q not int8", "w_q not int8", "x_scale not float32", "w_scale not float32",
          "out_dtype", "w_q not 2-D", "x too wide", "x too narrow", "x_scale of another shape",
          "w_scale of another shape", "block_m", "block_n", "block_k", "block_k of 16", "tile past Triton's largest",
          "another device")


@pytest.mark.parametrize("broken", (None, *BREAKS))
@PROPERTY
@given(data=st.data())
def test_property_valid_shapes_match_the_reference_and_broken_ones_raise(broken, data):
    m, n, k = (data.draw(st.integers(lo, hi), label=name) for name, lo, hi in (("m", 0, 9), ("n", 1, 64), ("k", 1, 64)))
    g = seeded(data)
    out_dtype = data.draw(st.sampled_from([torch.float32, torch.float16]), label="out_dtype")
    blocks = {"block_m": data.draw(st.sampled_from([None, 16, 32, 64]), label="block_m"),
              "block_n": data.draw(BLOCKS, label="block_n"),
              "block_k": data.draw(st.sampled_from([32, 64]), label="block_k")}  # an int8 K is >= 32 on a GPU
    x = torch.randn(m, k, generator=g)
    w_q, w_scale = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int8), torch.rand(n, generator=g) / 50
    if broken is None:
        x_q, x_scale = quantize_per_token(x)
        got = w8a8_matmul(x_q.to(DEVICE), x_scale.to(DEVICE), w_q.to(DEVICE), w_scale.to(DEVICE), out_dtype,
                          **blocks).cpu()
        expected = w8a8_matmul_ref(x_q, x_scale, w_q, w_scale, out_dtype)
        assert got.shape == (m, n) and got.dtype == out_dtype
        assert torch.allclose(got.float(), expected.float(), atol=0, rtol=1e-6)  # same integers, same scalings
        return
    error, message, quantize_x = ValueError, None, quantize_per_token
    if broken == "x not floating-point":
        x, error, message = x.to(torch.int8), TypeError, "x must be a floating-point tensor"
    elif broken == "x_q not int8":
        quantize_x = lambda x: (quantize_per_token(x)[0].to(torch.int16), quantize_per_token(x)[1])  # noqa: E731
        error, message = TypeError, "x_q must be an int8 tensor"
    elif broken == "w_q not int8":
        w_q, error, message = w_q.to(torch.uint8), TypeError, "w_q must be an int8 tensor"
    elif broken == "x_scale not float32":
        quantize_x = lambda x: (quantize_per_token(x)[0], quantize_per_token(x)[1].half())  # noqa: E731
        error, message = TypeError, "x_scale must be a float32 tensor"
    elif broken == "w_scale not float32":
        w_scale, error, message = w_scale.double(), TypeError, "w_scale must be a float32 tensor"
    elif broken == "out_dtype":
        out_dtype = data.draw(st.sampled_from([torch.bfloat16, torch.float64, "float32"]), label="bad out_dtype")
        error, message = TypeError, "out_dtype must be torch.float32 or torch.float16"
    elif broken == "w_q not 2-D":
        w_q, message = w_q[None], r"w_q must be 2-D \(N, K\)"
    elif broken in ("x too wide", "x too narrow"):
        w_q = torch.randint(-128, 128, (n, k - 1 if broken == "x too wide" else k + 1), generator=g, dtype=torch.int8)
        message = "shapes do not fit"
    elif broken == "x_scale of another shape":
        quantize_x = lambda x: (quantize_per_token(x)[0], quantize_per_token(x)[1][:, None])  # noqa: E731
        message = r"x_scale must have shape x_q.shape\[:-1\]"
    elif broken == "w_scale of another shape":
        w_scale, message = torch.cat([w_scale, w_scale[:1]]), r"w_scale must have shape \(N,\)"
    elif broken in ("block_m", "block_n", "block_k"):
        blocks[broken] = data.draw(BAD_BLOCKS, label="bad block")
        message = f"{broken} must be a power of two >= {32 if broken == 'block_k' else 16}"
    elif broken == "block_k of 16":  # the interpreter would take it; an int8 tl.dot on a GPU does not
        blocks["block_k"], message = 16, r"block_k must be a power of two >= 32 \(an int8 tl.dot's smallest K"
    elif broken == "tile past Triton's largest":
        blocks.update(block_n=HUGE_BLOCK, block_k=HUGE_BLOCK)
        message = "more than Triton's largest tensor"
    else:
        moved = data.draw(st.sampled_from(["x_q", "x_scale", "w_q", "w_scale"]), label="moved")
        quantize_x = lambda x: tuple(elsewhere(t) if name == moved else t  # noqa: E731
                                     for name, t in zip(("x_q", "x_scale"), quantize_per_token(x)))
        w_q, w_scale = (elsewhere(t) if name == moved else t for name, t in (("w_q", w_q), ("w_scale", w_scale)))
        message = rf"\b{moved}\b.*must be on one device"
    with pytest.raises(error, match=message):
        w8a8_matmul(*quantize_x(x), w_q, w_scale, out_dtype, **blocks)


@pytest.mark.parametrize("call, error, message", [
    (lambda: w8a8_matmul(_levels(2, 8), torch.ones(2), _levels(3, 8), torch.ones(3), block_k=16), ValueError,
     r"block_k must be a power of two >= 32 \(an int8 tl.dot's smallest K on a GPU\), got 16"),
    (lambda: w8a8_matmul(_levels(2, 8), torch.ones(2), _levels(3, 8), torch.ones(3, device="meta")), ValueError,
     "w_scale is on meta but x_q is on cpu: every tensor of one kernel call must be on one device"),
    (lambda: w8a8_matmul(_levels(2, 8), torch.ones(2), _levels(3, 8), torch.ones(3), block_m=4096, block_k=512),
     ValueError, r"block_m \(4096\) x block_k \(512\) is a tile of 2097152 elements"),
    (lambda: w8a8_matmul(_levels(2, 8), torch.ones(2), _levels(8), torch.ones(3)), ValueError,
     r"w_q must be 2-D \(N, K\), got shape \(8,\)"),
])
def test_bad_input_refused_since_issue_17(call, error, message):
    with pytest.raises(error, match=message):
        call()
