"""The W8A8 kernel (int8 x int8 -> int32), run for real under Triton's interpreter on the CPU."""
import pytest
import torch

from shrinklib.kernels.int8_int8 import MAX_K, quantize_per_token, w8a8_matmul, w8a8_matmul_ref
from shrinklib.quant.primitives import choose_qparams, dequantize, quantize

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
