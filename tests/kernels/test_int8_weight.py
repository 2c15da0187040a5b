"""The W8A16 kernel, run for real under Triton's interpreter on the CPU (on a GPU, compiled)."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from shrinklib.kernels.int8_weight import w8a16_matmul, w8a16_matmul_ref
from shrinklib.quant.primitives import choose_qparams, dequantize, quantize

from .conftest import BAD_BLOCKS, BLOCKS, DTYPES, HUGE_BLOCK, PROPERTY, elsewhere, seeded

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _quantized(n, k, seed=0):
    """``(w, qweight, scale, zero_point)``: a random weight quantized to int8 per output channel."""
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(seed))
    scale, zero_point = choose_qparams(w, 8, True, axis=0)  # (N, 1) each
    return w, quantize(w, scale, zero_point, 8, True), scale, zero_point


@pytest.mark.parametrize("n, k", [(45, 76), (1, 8)])
def test_reference_is_the_matmul_with_the_dequantized_weight(n, k):
    w, q, scale, zero_point = _quantized(n, k)
    x = torch.randn(5, k, generator=torch.Generator().manual_seed(1))
    expected = x @ dequantize(q, scale, zero_point).T
    got = w8a16_matmul_ref(x, q, scale[:, 0])
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert torch.allclose(got, x @ w.T, atol=0.05 * k ** 0.5)  # and int8 is close to the fp32 weight


@pytest.mark.parametrize("m, n, k, batch", [(7, 45, 76, ()), (33, 130, 96, ()), (1, 17, 264, ()), (5, 24, 64, (3,))])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.float16, 2e-2)])
def test_kernel_matches_the_reference_with_ragged_edges(m, n, k, batch, dtype, tol):
    _, q, scale, _ = _quantized(n, k)
    scale = scale[:, 0]
    x = torch.randn(*batch, m, k, generator=torch.Generator().manual_seed(1)).to(dtype)
    expected = w8a16_matmul_ref(x, q, scale)
    got = w8a16_matmul(x.to(DEVICE), q.to(DEVICE), scale.to(DEVICE)).cpu()
    assert got.shape == (*batch, m, n) and got.dtype == dtype
    assert torch.allclose(got.float(), expected.float(), atol=tol, rtol=tol)


def test_other_block_sizes_and_a_strided_weight():
    _, q, scale, _ = _quantized(90, 76)
    q, scale = q[::2], scale[::2, 0]  # every other output channel: strides 2K and 2
    x = torch.randn(33, 76, generator=torch.Generator().manual_seed(1))
    got = w8a16_matmul(x.to(DEVICE), q.to(DEVICE), scale.to(DEVICE), block_m=16, block_n=16, block_k=32).cpu()
    assert torch.allclose(got, w8a16_matmul_ref(x, q, scale), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("lead", [(0,), (3, 0)])
def test_an_empty_batch_gives_an_empty_result(lead, dtype):
    _, q, scale, _ = _quantized(45, 76)
    got = w8a16_matmul(torch.zeros(*lead, 76, dtype=dtype, device=DEVICE), q.to(DEVICE), scale[:, 0].to(DEVICE))
    assert got.shape == (*lead, 45) and got.dtype == dtype and got.device.type == DEVICE


@pytest.mark.parametrize("call, error, message", [
    (lambda: w8a16_matmul(torch.zeros(2, 8, dtype=torch.bfloat16), torch.zeros(3, 8, dtype=torch.int8),
                          torch.ones(3)), TypeError, "bf16"),
    (lambda: w8a16_matmul(torch.zeros(2, 8), torch.zeros(3, 8), torch.ones(3)), TypeError,
     "qweight must be an int8 tensor"),
    (lambda: w8a16_matmul(torch.zeros(2, 8), torch.zeros(3, 8, dtype=torch.int8), torch.ones(3).half()), TypeError,
     "scale must be a float32 tensor"),
    (lambda: w8a16_matmul(torch.zeros(2, 8), torch.zeros(3, 8, dtype=torch.int8), torch.ones(3, 1)), ValueError,
     r"scale must have shape \(N,\) = \(3,\)"),
    (lambda: w8a16_matmul(torch.zeros(2, 12), torch.zeros(3, 8, dtype=torch.int8), torch.ones(3)), ValueError,
     "shapes do not fit"),
    (lambda: w8a16_matmul(torch.zeros(2, 8), torch.zeros(3, 8, dtype=torch.int8), torch.ones(3), block_k=48),
     ValueError, r"block_k must be a power of two >= 16 \(tl.dot's smallest tile\), got 48"),
])
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


BREAKS = ("qweight not int8", "qweight not 2-D", "scale not float32", "scale of another shape", "x too wide",
          "x too narrow", "x bf16", "block_m", "block_n", "block_k", "tile past Triton's largest", "another device")


@pytest.mark.parametrize("broken", (None, *BREAKS))
@PROPERTY
@given(data=st.data())
def test_property_valid_shapes_match_the_reference_and_broken_ones_raise(broken, data):
    m, n, k = (data.draw(st.integers(lo, hi), label=name) for name, lo, hi in (("m", 0, 9), ("n", 1, 64), ("k", 1, 64)))
    (dtype, tol), g = data.draw(DTYPES, label="dtype"), seeded(data)
    blocks = {"block_m": data.draw(st.sampled_from([None, 16, 32, 64]), label="block_m"),
              "block_n": data.draw(BLOCKS, label="block_n"), "block_k": data.draw(BLOCKS, label="block_k")}
    qweight = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int8)
    scale = torch.rand(n, generator=g) / 50 + 1e-3
    x = torch.randn(m, k, generator=g).to(dtype)
    if broken is None:
        got = w8a16_matmul(x.to(DEVICE), qweight.to(DEVICE), scale.to(DEVICE), **blocks).cpu()
        expected = w8a16_matmul_ref(x, qweight, scale)
        assert got.shape == (m, n) and got.dtype == dtype
        assert torch.allclose(got.float(), expected.float(), atol=tol, rtol=tol)
        return
    error, message = ValueError, None
    if broken == "qweight not int8":
        qweight = qweight.to(data.draw(st.sampled_from([torch.uint8, torch.int32, torch.float32]), label="dtype"))
        error, message = TypeError, "qweight must be an int8 tensor"
    elif broken == "qweight not 2-D":
        qweight, message = qweight[None], r"qweight must be 2-D \(N, K\)"
    elif broken == "scale not float32":
        scale, error, message = scale.half(), TypeError, "scale must be a float32 tensor"
    elif broken == "scale of another shape":
        scale = scale[:, None] if data.draw(st.booleans(), label="2-D") else torch.cat([scale, scale[:1]])
        message = r"scale must have shape \(N,\)"
    elif broken in ("x too wide", "x too narrow"):
        x = torch.randn(m, k + 1 if broken == "x too wide" else k - 1, generator=g).to(dtype)
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
        moved = data.draw(st.sampled_from(["x", "qweight", "scale"]), label="moved")
        operands = {"x": x, "qweight": qweight, "scale": scale}
        x, qweight, scale = (elsewhere(t) if name == moved else t for name, t in operands.items())
        message = rf"\b{moved}\b.*must be on one device"
    with pytest.raises(error, match=message):
        w8a16_matmul(x, qweight, scale, **blocks)


@pytest.mark.parametrize("call, error, message", [
    (lambda: w8a16_matmul(torch.zeros(2, 8), torch.zeros(3, 8, dtype=torch.int8), torch.ones(3, device="meta")),
     ValueError, "scale is on meta but qweight is on cpu: every tensor of one kernel call must be on one device"),
    (lambda: w8a16_matmul(torch.zeros(2, 8), torch.zeros(3, 8, dtype=torch.int8), torch.ones(3), block_m=1024,
                          block_k=2048), ValueError, r"block_m \(1024\) x block_k \(2048\) is a tile of 2097152"),
    (lambda: w8a16_matmul_ref("x", torch.zeros(3, 8, dtype=torch.int8), torch.ones(3)), TypeError,
     "x must be a tensor"),
])
def test_bad_input_refused_since_issue_17(call, error, message):
    with pytest.raises(error, match=message):
        call()
