"""The W4A16 kernel and its nibble packing, run for real under Triton's interpreter on the CPU."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from shrinklib.kernels.int4_weight import pack_int4, unpack_int4, w4a16_matmul, w4a16_matmul_ref
from shrinklib.quant.primitives import choose_qparams, dequantize, quantize

from .conftest import BAD_BLOCKS, BLOCKS, DTYPES, HUGE_BLOCK, PROPERTY, elsewhere, seeded

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _quantized(n, k, group_size, seed=0):
    """``(w, q, scale, zero_point)``: a random weight quantized to 4 bits (affine) per group."""
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(seed))
    scale, zero_point = choose_qparams(w, 4, False, group_size=group_size)  # (N, ceil(K/g)) each
    return w, quantize(w, scale, zero_point, 4, False, group_size=group_size), scale, zero_point


def test_nibble_order_of_one_byte():
    # element 2j -> low nibble, element 2j+1 -> high nibble
    assert pack_int4(torch.tensor([[1, 2]])).tolist() == [[0x21]]
    assert pack_int4(torch.tensor([[15, 0, 0, 15]], dtype=torch.uint8)).tolist() == [[0x0F, 0xF0]]
    assert unpack_int4(torch.tensor([[0x21]], dtype=torch.uint8)).tolist() == [[1, 2]]


@pytest.mark.parametrize("n, k", [(1, 2), (45, 76), (8, 264)])
def test_pack_round_trips_exactly(n, k):
    q = torch.randint(0, 16, (n, k), generator=torch.Generator().manual_seed(0), dtype=torch.int32)
    packed = pack_int4(q)
    assert packed.shape == (n, k // 2) and packed.dtype == torch.uint8
    assert torch.equal(unpack_int4(packed), q.to(torch.uint8))
    every_byte = torch.arange(256, dtype=torch.uint8)[None]
    assert torch.equal(pack_int4(unpack_int4(every_byte)), every_byte)


@pytest.mark.parametrize("n, k, group_size", [(45, 76, 38), (17, 256, 128), (8, 64, 64), (9, 576, 128), (5, 12, 8)])
def test_reference_is_the_matmul_with_the_dequantized_weight(n, k, group_size):
    w, q, scale, zero_point = _quantized(n, k, group_size)
    x = torch.randn(5, k, generator=torch.Generator().manual_seed(1))
    expected = x @ dequantize(q, scale, zero_point, group_size=group_size).T
    got = w4a16_matmul_ref(x, pack_int4(q), scale, zero_point, group_size)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-5)


# group < BLOCK_K (64) with K ragged, group > BLOCK_K, group == K ragged, a group straddling two
# K-blocks, groups of one byte, a 3-D x, and K not a multiple of the group (SmolLM2's 576 in groups
# of 128: the last group of each row holds 64)
@pytest.mark.parametrize("m, n, k, group_size, batch", [
    (33, 130, 96, 32, ()), (7, 45, 256, 128, ()), (1, 17, 264, 264, ()), (7, 45, 76, 38, ()), (1, 24, 76, 2, ()),
    (5, 24, 64, 32, (3,)), (3, 20, 576, 128, ()), (2, 9, 100, 24, ()),
])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.float16, 2e-2)])
def test_kernel_matches_the_reference_with_ragged_edges(m, n, k, group_size, batch, dtype, tol):
    _, q, scale, zero_point = _quantized(n, k, group_size)
    packed = pack_int4(q)
    x = torch.randn(*batch, m, k, generator=torch.Generator().manual_seed(1)).to(dtype)
    expected = w4a16_matmul_ref(x, packed, scale, zero_point, group_size)
    got = w4a16_matmul(x.to(DEVICE), packed.to(DEVICE), scale.to(DEVICE), zero_point.to(DEVICE), group_size).cpu()
    assert got.shape == (*batch, m, n) and got.dtype == dtype
    assert torch.allclose(got.float(), expected.float(), atol=tol, rtol=tol)


def test_uint8_zero_points_and_other_block_sizes():
    _, q, scale, zero_point = _quantized(40, 96, 16)
    packed, zero_point = pack_int4(q), zero_point.to(torch.uint8)
    x = torch.randn(20, 96, generator=torch.Generator().manual_seed(1))
    got = w4a16_matmul(x.to(DEVICE), packed.to(DEVICE), scale.to(DEVICE), zero_point.to(DEVICE), 16,
                       block_m=16, block_n=16, block_k=32).cpu()
    assert torch.allclose(got, w4a16_matmul_ref(x, packed, scale, zero_point, 16), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("lead", [(0,), (3, 0)])
def test_an_empty_batch_gives_an_empty_result(lead, dtype):
    _, q, scale, zero_point = _quantized(45, 76, 38)
    got = w4a16_matmul(torch.zeros(*lead, 76, dtype=dtype, device=DEVICE), pack_int4(q).to(DEVICE), scale.to(DEVICE),
                       zero_point.to(DEVICE), 38)
    assert got.shape == (*lead, 45) and got.dtype == dtype and got.device.type == DEVICE


def _args(n=3, k=8, group_size=4):
    return (pack_int4(torch.zeros(n, k, dtype=torch.uint8)), torch.ones(n, k // group_size),
            torch.zeros(n, k // group_size, dtype=torch.uint8))


@pytest.mark.parametrize("call, error, message", [
    (lambda: pack_int4(torch.zeros(2, 7, dtype=torch.uint8)), ValueError, r"K \(7\) must be even"),
    (lambda: pack_int4(torch.tensor([[3, 16]])), ValueError, "levels must lie in 0..15, got values from 3 to 16"),
    (lambda: pack_int4(torch.tensor([[-1, 2]])), ValueError, "levels must lie in 0..15"),
    (lambda: pack_int4(torch.zeros(2, 8)), TypeError, "q must be an integer tensor"),
    (lambda: unpack_int4(torch.zeros(2, 4, dtype=torch.int8)), TypeError, "packed must be a uint8 tensor"),
    (lambda: w4a16_matmul(torch.zeros(2, 8, dtype=torch.bfloat16), *_args(), 4), TypeError, "bf16"),
    (lambda: w4a16_matmul(torch.zeros(2, 12), *_args(), 4), ValueError, "shapes do not fit"),
    (lambda: w4a16_matmul(torch.zeros(2, 12), *_args(k=12, group_size=4), 3), ValueError,
     "group_size must be a positive even integer"),
    (lambda: w4a16_matmul(torch.zeros(2, 8), *_args(), 2), ValueError,
     r"scale must have shape \(N, ceil\(K/group_size\)\) = \(3, 4\)"),
    (lambda: w4a16_matmul(torch.zeros(2, 8), _args()[0], _args()[1].half(), _args()[2], 4), TypeError,
     "scale must be a float32 tensor"),
    (lambda: w4a16_matmul(torch.zeros(2, 8), _args()[0], _args()[1], _args()[2].float(), 4), TypeError,
     "zero_point must be an integer tensor"),
    (lambda: w4a16_matmul(torch.zeros(2, 8), _args()[0], _args()[1], _args()[2][:, :1], 4), ValueError,
     r"zero_point must have shape \(N, ceil\(K/group_size\)\) = \(3, 2\)"),
    (lambda: w4a16_matmul(torch.zeros(2, 8), torch.zeros(3, 4, dtype=torch.int8), *_args()[1:], 4), TypeError,
     "packed must be a uint8 tensor"),
])
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


BREAKS = ("levels of odd K", "levels outside 0..15", "packed not uint8", "packed not 2-D", "group_size",
          "scale not float32", "scale of another shape", "zero_point not integer", "zero_point of another shape",
          "x too wide", "x too narrow", "x bf16", "block_m", "block_n", "block_k", "tile past Triton's largest",
          "another device")


@pytest.mark.parametrize("broken", (None, *BREAKS))
@PROPERTY
@given(data=st.data())
def test_property_valid_shapes_match_the_reference_and_broken_ones_raise(broken, data):
    m, n = data.draw(st.integers(0, 9), label="m"), data.draw(st.integers(1, 64), label="n")
    k, group_size = 2 * data.draw(st.integers(1, 32), label="K/2"), 2 * data.draw(st.integers(1, 40), label="g/2")
    groups = -(-k // group_size)  # the last group of a row is shorter when group_size does not divide K
    (dtype, tol), g = data.draw(DTYPES, label="dtype"), seeded(data)
    blocks = {"block_m": data.draw(st.sampled_from([None, 16, 32, 64]), label="block_m"),
              "block_n": data.draw(BLOCKS, label="block_n"), "block_k": data.draw(BLOCKS, label="block_k")}
    q = torch.randint(0, 16, (n, k), generator=g, dtype=torch.int32)
    scale = torch.rand(n, groups, generator=g) / 10 + 1e-3
    zero_point = torch.randint(0, 16, (n, groups), generator=g).to(
        data.draw(st.sampled_from([torch.uint8, torch.int32]), label="zero_point dtype"))
    x = torch.randn(m, k, generator=g).to(dtype)
    if broken is None:
        packed = pack_int4(q)
        got = w4a16_matmul(x.to(DEVICE), packed.to(DEVICE), scale.to(DEVICE), zero_point.to(DEVICE), group_size,
                           **blocks).cpu()
        expected = w4a16_matmul_ref(x, packed, scale, zero_point, group_size)
        assert got.shape == (m, n) and got.dtype == dtype
        assert torch.allclose(got.float(), expected.float(), atol=tol, rtol=tol)
        return
    error, message, pack = ValueError, None, pack_int4
    if broken == "levels of odd K":
        q, message = torch.cat([q, q[:, :1]], 1), r"K \(\d+\) must be even"
    elif broken == "levels outside 0..15":
        q = q.clone()
        q[data.draw(st.integers(0, n - 1), label="row"), 0] = data.draw(st.sampled_from([-1, 16, 255]), label="level")
        message = "4-bit levels must lie in 0..15"
    elif broken == "packed not uint8":
        pack = lambda q: pack_int4(q).to(torch.int8)  # noqa: E731
        error, message = TypeError, "packed must be a uint8 tensor"
    elif broken == "packed not 2-D":
        pack, message = lambda q: pack_int4(q)[None], r"packed must be 2-D \(N, K/2\)"
    elif broken == "group_size":
        group_size = data.draw(st.sampled_from([0, 1, 3, -2, 4.0, True]), label="bad group_size")
        message = "group_size must be a positive even integer"
    elif broken == "scale not float32":
        scale, error, message = scale.to(torch.float16), TypeError, "scale must be a float32 tensor"
    elif broken == "scale of another shape":
        scale = scale[:, 0] if data.draw(st.booleans(), label="1-D") else torch.cat([scale, scale[:, :1]], 1)
        message = r"scale must have shape \(N, ceil\(K/group_size\)\)"
    elif broken == "zero_point not integer":
        zero_point = zero_point.to(data.draw(st.sampled_from([torch.float32, torch.bool]), label="zero_point dtype"))
        error, message = TypeError, "zero_point must be an integer tensor"
    elif broken == "zero_point of another shape":
        zero_point, message = torch.cat([zero_point, zero_point[:, :1]], 1), r"zero_point must have shape \(N, ceil"
    elif broken in ("x too wide", "x too narrow"):
        x = torch.randn(m, k + 2 if broken == "x too wide" else k - 2, generator=g).to(dtype)
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
        moved = data.draw(st.sampled_from(["x", "packed", "scale", "zero_point"]), label="moved")
        if moved == "packed":
            pack = lambda q: elsewhere(pack_int4(q))  # noqa: E731
        x, scale, zero_point = (elsewhere(t) if name == moved else t
                                for name, t in (("x", x), ("scale", scale), ("zero_point", zero_point)))
        message = rf"\b{moved}\b.*must be on one device"
    with pytest.raises(error, match=message):
        w4a16_matmul(x, pack(q), scale, zero_point, group_size, **blocks)


@pytest.mark.parametrize("call, error, message", [
    (lambda: w4a16_matmul(torch.zeros(2, 8, device="meta"), *_args(), 4), ValueError,
     "packed is on cpu but x is on meta: every tensor of one kernel call must be on one device"),
    (lambda: w4a16_matmul(torch.zeros(2, 8), _args()[0], _args()[1].to("meta"), _args()[2], 4), ValueError,
     "scale is on meta but packed is on cpu"),
    (lambda: w4a16_matmul(torch.zeros(2, 8), *_args(), 4, block_n=4096, block_k=512), ValueError,
     r"block_n \(4096\) x block_k \(512\) is a tile of 2097152 elements"),
    (lambda: w4a16_matmul_ref(None, *_args(), 4), TypeError, "x must be a tensor"),
])
def test_bad_input_refused_since_issue_17(call, error, message):
    with pytest.raises(error, match=message):
        call()
