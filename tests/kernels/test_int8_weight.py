"""The W8A16 kernel, run for real under Triton's interpreter on the CPU (on a GPU, compiled)."""
import pytest
import torch

from shrinklib.kernels.int8_weight import w8a16_matmul, w8a16_matmul_ref
from shrinklib.quant.primitives import choose_qparams, dequantize, quantize

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
