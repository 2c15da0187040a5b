"""The launcher machinery every kernel shares: checks, tl.dot's precision, output and grid."""
import pytest
import torch
import triton

from shrinklib.kernels import INTERPRETED
from shrinklib.kernels.launch import (
    INDEX_DTYPES,
    KERNEL_DEVICES,
    LARGEST_TILE,
    TiledMatmul,
    check_activations,
    check_blocks,
    check_contiguous,
    check_devices,
    check_operand,
    check_same_device,
    check_shape,
    check_width,
    default_block_m,
    dot_precision,
    dtype_name,
    tiled_matmul,
)


def test_dtype_name_of_a_tensor_and_of_anything_else():
    assert dtype_name(torch.zeros(1, dtype=torch.bfloat16)) == "torch.bfloat16"
    assert dtype_name([1.0]) == "list" and dtype_name(None) == "NoneType"


def test_fp32_dots_stay_ieee_and_fp16_ones_take_the_tensor_core_default():
    assert dot_precision(torch.float32) == "ieee"
    assert dot_precision(torch.float16) == "tf32"  # ignored by tl.dot for fp16 inputs


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_fp16_and_fp32_activations_pass(dtype):
    check_activations(torch.zeros(2, 3, dtype=dtype))


@pytest.mark.parametrize("m, expected", [(0, 16), (1, 16), (16, 16), (17, 32), (33, 64), (64, 64), (1000, 64)])
def test_default_block_m_is_the_smallest_power_of_two_from_16_to_64_holding_the_rows(m, expected):
    assert default_block_m(m) == expected
    assert expected == min(64, max(16, 1 << max(m - 1, 0).bit_length()))


@pytest.mark.parametrize("size", [16, 32, 64, 256])
def test_powers_of_two_from_16_are_tiles(size):
    check_blocks(block_m=size, block_n=size, block_k=size)


@pytest.mark.parametrize("lead, k, n, block_m, block_n, expected_block_m", [
    ((37,), 76, 45, None, 64, 64), ((3, 5), 7, 9, None, 16, 16), ((1,), 8, 130, 32, 64, 32),
])
def test_tiled_matmul_is_x_as_rows_an_output_that_views_back_and_one_program_per_tile(lead, k, n, block_m, block_n,
                                                                                        expected_block_m):
    x = torch.randn(*lead, k)
    run = tiled_matmul(x, n, torch.float16, block_m, block_n, 32)
    assert isinstance(run, TiledMatmul) and run.block_m == expected_block_m
    m = x.numel() // k
    assert run.m == m and not run.empty and torch.equal(run.rows, x.reshape(m, k))
    assert run.y.shape == (m, n) and run.y.dtype == torch.float16
    assert run.out.shape == (*lead, n) and run.out.data_ptr() == run.y.data_ptr()  # what the kernel writes
    assert run.grid == (triton.cdiv(m, expected_block_m), triton.cdiv(n, block_n))
    run.y.fill_(1.5)
    assert torch.all(run.out == 1.5)


def test_tiled_matmul_of_an_empty_batch_has_no_rows_and_an_empty_output():
    run = tiled_matmul(torch.zeros(2, 0, 12), 5, torch.float32, None, 64, 64)
    assert run.m == 0 and run.empty and run.block_m == 16
    assert run.out.shape == (2, 0, 5) and run.out.dtype == torch.float32


def test_tiled_matmul_with_no_output_features_is_empty_too():
    run = tiled_matmul(torch.zeros(3, 12), 0, torch.float16, None, 64, 64)
    assert run.m == 3 and run.empty and run.out.shape == (3, 0)


@pytest.mark.parametrize("call, error, message", [
    (lambda: check_activations(torch.zeros(2, dtype=torch.bfloat16)), TypeError,
     r"x must be float16 or float32, got torch.bfloat16 \(bf16 is wrong under Triton's interpreter\)"),
    (lambda: check_activations([1.0], name="act"), TypeError, "act must be float16 or float32, got list"),
    (lambda: check_activations(torch.zeros(2, dtype=torch.int8)), TypeError, "got torch.int8"),
    (lambda: check_blocks(block_m=24), ValueError, r"block_m must be a power of two >= 16 \(tl.dot's smallest tile\), got 24"),
    (lambda: check_blocks(block_n=32, block_k=8), ValueError, "block_k must be a power of two >= 16.*got 8"),
    (lambda: check_blocks(block_k=True), ValueError, "block_k must be a power of two >= 16.*got True"),
    (lambda: check_blocks(block_k=32.0), ValueError, r"block_k must be a power of two >= 16.*got 32\.0"),
    (lambda: check_blocks(block_k=0), ValueError, "got 0"),
    (lambda: tiled_matmul(torch.zeros(3, 8), 4, torch.float32, 48, 64, 64), ValueError,
     "block_m must be a power of two >= 16.*got 48"),
    (lambda: tiled_matmul(torch.zeros(3, 8), 4, torch.float32, None, 64, 100), ValueError,
     "block_k must be a power of two >= 16.*got 100"),
])
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_the_shared_checks_return_what_they_checked():
    t = torch.zeros(3, 4, dtype=torch.int32)
    assert check_operand("t", t, "an index tensor", dtypes=INDEX_DTYPES, ndim=2) is t
    assert check_operand("t", t, "a tensor") is t  # any dtype, any ndim
    assert check_shape("t", t, (3, 4), "(N, K)") is t and check_contiguous("t", t) is t
    assert check_width(torch.zeros(2, 5, 4), 4, w=t) == 4
    assert check_devices(a=t, b=torch.ones(1)) == torch.device("cpu")
    assert check_same_device(a=t.to("meta"), b=torch.ones(1, device="meta")) == torch.device("meta")
    assert LARGEST_TILE == 2 ** 20 and ("cpu" in KERNEL_DEVICES) == INTERPRETED


def test_the_largest_tiles_triton_takes_pass_and_a_minimum_can_be_raised():
    check_blocks(block_m=1024, block_n=1024, block_k=1024)  # 2**20 elements per pair: Triton's largest tensor
    check_blocks(block_k=32, minimum=32, why="an int8 K")


@pytest.mark.parametrize("call, error, message", [
    (lambda: check_blocks(block_m=2048, block_n=1024), ValueError,
     r"block_m \(2048\) x block_n \(1024\) is a tile of 2097152 elements, more than Triton's largest tensor "
     r"\(1048576\); choose smaller blocks"),
    (lambda: check_blocks(block_m=16, block_n=16, block_k=2 ** 17), ValueError,
     r"block_m \(16\) x block_k \(131072\)"),
    (lambda: check_blocks(block_k=16, minimum=32, why="an int8 K"), ValueError,
     r"block_k must be a power of two >= 32 \(an int8 K\), got 16"),
    (lambda: check_operand("meta", [1], "a uint8 tensor (N, K/4)", dtypes=(torch.uint8,)), TypeError,
     r"meta must be a uint8 tensor \(N, K/4\), got list"),
    (lambda: check_operand("meta", torch.zeros(2), "a uint8 tensor", dtypes=(torch.uint8,)), TypeError,
     "meta must be a uint8 tensor, got torch.float32"),
    (lambda: check_operand("q", torch.zeros(2), "a tensor", ndim=2, layout="(N, K)"), ValueError,
     r"q must be 2-D \(N, K\), got shape \(2,\)"),
    (lambda: check_operand("q", torch.zeros(2), "a tensor", ndim=2), ValueError, r"q must be 2-D, got shape \(2,\)"),
    (lambda: check_shape("scale", torch.zeros(3, 1), (3,), "(N,)", ", one per output channel"), ValueError,
     r"scale must have shape \(N,\) = \(3,\), one per output channel, got \(3, 1\)"),
    (lambda: check_width(torch.zeros(2, 12), 8, k_is="K = 2 * packed.shape[1]", packed=torch.zeros(3, 4)), ValueError,
     r"shapes do not fit: x \(2, 12\), packed \(3, 4\) \(x's last dimension must be K = 2 \* packed.shape\[1\] = 8\)"),
    (lambda: check_width(torch.tensor(1.0), 1, name="x_q"), ValueError,
     r"shapes do not fit: x_q \(\) \(x_q's last dimension must be K = 1\)"),
    (lambda: check_devices(x=torch.zeros(1), w=torch.zeros(1, device="meta")), ValueError,
     "w is on meta but x is on cpu: every tensor of one kernel call must be on one device"),
    (lambda: check_devices(w=torch.zeros(1, device="meta")), ValueError, "w is on meta, where the kernels cannot run"),
    (lambda: check_devices(x=torch.zeros(1, device="meta"), w=torch.zeros(1, device="meta")), ValueError,
     "x, w are on meta, where the kernels cannot run"),
    (lambda: check_contiguous("crow", torch.zeros(4, 2)[:, 0]), ValueError,
     r"crow must be contiguous \(the kernel reads it as a flat array\), got strides \(2,\); pass crow.contiguous\(\)"),
])
def test_bad_input_to_the_shared_checks(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_where_the_kernels_cannot_run_the_references_and_packers_still_do(monkeypatch):
    """On a GPU machine (compiled kernels) the references, packers and decompressors take CPU tensors;
    only a launcher refuses them: simulated here by taking the CPU off the kernels' devices."""
    from shrinklib.kernels import launch
    from shrinklib.kernels.bsr import bsr_matmul, bsr_matmul_ref, bsr_to_dense, to_bsr
    from shrinklib.kernels.int4_weight import pack_int4, w4a16_matmul, w4a16_matmul_ref
    from shrinklib.kernels.int8_int8 import quantize_per_token, w8a8_matmul, w8a8_matmul_ref
    from shrinklib.kernels.int8_weight import w8a16_matmul, w8a16_matmul_ref
    from shrinklib.kernels.sparse24 import compress_24, decompress_24, sparse24_matmul, sparse24_matmul_ref

    monkeypatch.setattr(launch, "KERNEL_DEVICES", ("cuda",))
    x, w = torch.randn(2, 32), torch.zeros(16, 32)
    sparse, bsr = compress_24(w), to_bsr(w, (16, 16))
    int4 = (pack_int4(torch.zeros(16, 32, dtype=torch.uint8)), torch.ones(16, 1), torch.zeros(16, 1, dtype=torch.uint8),
            32)
    int8 = (torch.zeros(16, 32, dtype=torch.int8), torch.ones(16))
    decompress_24(*sparse), bsr_to_dense(*bsr, (16, 32))
    sparse24_matmul_ref(x, *sparse), bsr_matmul_ref(x, *bsr, 16), w4a16_matmul_ref(x, *int4)
    w8a16_matmul_ref(x, *int8), w8a8_matmul_ref(*quantize_per_token(x), *int8)
    for launch_kernel in (lambda: sparse24_matmul(x, *sparse), lambda: bsr_matmul(x, *bsr),
                          lambda: w4a16_matmul(x, *int4), lambda: w8a16_matmul(x, *int8),
                          lambda: w8a8_matmul(*quantize_per_token(x), *int8)):
        with pytest.raises(ValueError, match="are on cpu, where the kernels cannot run: .* take tensors on cuda"):
            launch_kernel()
