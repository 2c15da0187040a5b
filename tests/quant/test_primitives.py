import math

import pytest
import torch

from shrinklib.quant import (
    choose_qparams,
    dequantize,
    fake_quantize,
    qparams_from_range,
    qrange,
    quantize,
    sqnr,
)

# torch's quantized tensors are the trusted peer here; torch warns that they are deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_affine_per_tensor_matches_torch_quantize_per_tensor():
    x = randn(37, 53) * 2 + 0.7
    scale, zero_point = choose_qparams(x, 8, symmetric=False)
    ours = quantize(x, scale, zero_point, 8, symmetric=False)
    theirs = torch.quantize_per_tensor(x, float(scale), int(zero_point), torch.quint8).int_repr()
    assert ours.dtype == torch.uint8 and torch.equal(ours, theirs)
    assert torch.equal(dequantize(ours, scale, zero_point), torch.dequantize(
        torch.quantize_per_tensor(x, float(scale), int(zero_point), torch.quint8)))


def test_symmetric_per_channel_matches_torch_quantize_per_channel():
    x = randn(29, 41)
    scale, zero_point = choose_qparams(x, 8, symmetric=True, axis=0)
    assert scale.shape == (29, 1) and zero_point.abs().sum() == 0
    ours = quantize(x, scale, zero_point, 8, symmetric=True)
    theirs = torch.quantize_per_channel(x, scale.flatten().double(), zero_point.flatten().long(), 0,
                                        torch.qint8).int_repr()
    assert ours.dtype == torch.int8 and torch.equal(ours, theirs)


@pytest.mark.parametrize("per_channel", [False, True])
def test_affine_qparams_match_torch_observers(per_channel):
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

    x = randn(23, 31) * 3 + 1
    if per_channel:
        observer = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.quint8, qscheme=torch.per_channel_affine)
        scale, zero_point = choose_qparams(x, 8, symmetric=False, axis=0)
    else:
        observer = MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine)
        scale, zero_point = choose_qparams(x, 8, symmetric=False)
    observer(x)
    torch_scale, torch_zero_point = observer.calculate_qparams()
    assert torch.allclose(scale.flatten(), torch_scale.float().flatten(), rtol=1e-6)
    assert torch.equal(zero_point.flatten().long(), torch_zero_point.flatten().long())


def test_symmetric_grid_maps_absmax_to_the_top_level_and_zero_exactly():
    x = torch.tensor([-3.0, -1.0, 0.0, 0.5, 2.0])
    scale, zero_point = choose_qparams(x, 4, symmetric=True)
    assert math.isclose(float(scale), 3.0 / 7, rel_tol=1e-6)
    q = quantize(x, scale, zero_point, 4, symmetric=True)
    assert q.tolist() == [-7, -2, 0, 1, 5]
    assert dequantize(q, scale, zero_point)[2] == 0
    assert qrange(4, True) == (-8, 7) and qrange(4, False) == (0, 15)


def test_affine_range_is_stretched_to_hold_zero():
    scale, zero_point = qparams_from_range(torch.tensor(1.0), torch.tensor(5.0), 8, symmetric=False)
    assert math.isclose(float(scale), 5.0 / 255, rel_tol=1e-6) and int(zero_point) == 0


def test_per_group_equals_quantizing_each_group_alone():
    x, group = randn(6, 96, seed=1), 32
    scale, zero_point = choose_qparams(x, 4, symmetric=False, group_size=group)
    assert scale.shape == (6, 3)
    q = quantize(x, scale, zero_point, 4, symmetric=False, group_size=group)
    x_hat = dequantize(q, scale, zero_point, group_size=group)
    for row in range(6):
        for g in range(3):
            chunk = x[row, g * group:(g + 1) * group]
            s, z = choose_qparams(chunk, 4, symmetric=False)
            assert torch.equal(q[row, g * group:(g + 1) * group], quantize(chunk, s, z, 4, symmetric=False))
            assert torch.allclose(x_hat[row, g * group:(g + 1) * group], dequantize(quantize(chunk, s, z, 4, False), s, z))


def test_groups_that_do_not_divide_the_row_end_with_a_shorter_group():
    x, group = randn(5, 100, seed=3), 32  # groups of 32, 32, 32 and 4
    scale, zero_point = choose_qparams(x, 4, symmetric=False, group_size=group)
    assert scale.shape == (5, 4)
    q = quantize(x, scale, zero_point, 4, symmetric=False, group_size=group)
    assert q.shape == x.shape
    last = x[:, 96:]
    s, z = choose_qparams(last, 4, symmetric=False, axis=0)
    assert torch.allclose(scale[:, 3:], s) and torch.equal(q[:, 96:], quantize(last, s, z, 4, symmetric=False))
    x_grad = x.clone().requires_grad_(True)
    fake_quantize(x_grad, scale, zero_point, 4, False, group_size=group).sum().backward()
    assert x_grad.grad.shape == x.shape


def test_fake_quantize_forward_and_straight_through_gradient_match_torch():
    x = (randn(19, 23) * 3).requires_grad_(True)
    scale, zero_point = torch.tensor(0.02), torch.tensor(128, dtype=torch.int32)  # clamps the tails
    ours = fake_quantize(x, scale, zero_point, 8, symmetric=False)
    ours.sum().backward()
    our_grad = x.grad.clone()
    x.grad = None
    theirs = torch.fake_quantize_per_tensor_affine(x, 0.02, 128, 0, 255)
    theirs.sum().backward()
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert torch.equal(our_grad, x.grad)
    assert 0 < our_grad.sum() < x.numel()  # some values were clamped, some passed


def test_stochastic_rounding_is_unbiased_and_only_floors_or_ceils():
    x = torch.linspace(-1, 1, 101)
    scale, zero_point = choose_qparams(x, 4, symmetric=True)
    g = torch.Generator().manual_seed(0)
    samples = torch.stack([dequantize(quantize(x, scale, zero_point, 4, True, rounding="stochastic", generator=g),
                                      scale, zero_point) for _ in range(3000)])
    steps = samples / scale
    assert torch.isin((steps - torch.floor(x / scale)).round(), torch.tensor([0.0, 1.0])).all()
    assert (samples.mean(0) - x).abs().max() < 0.08 * float(scale)  # nearest rounding is off by up to half a step
    nearest = dequantize(quantize(x, scale, zero_point, 4, True), scale, zero_point)
    assert (nearest - x).abs().max() > 0.3 * float(scale)


def test_sqnr_int8_gaussian_and_six_db_per_bit():
    w = randn(384, 1000, seed=2)
    by_bits = {}
    for bits in (4, 8):
        scale, zero_point = choose_qparams(w, bits, symmetric=True, axis=0)
        by_bits[bits] = sqnr(w, fake_quantize(w, scale, zero_point, bits, True))
    assert by_bits[8] >= 35
    assert 20 < by_bits[8] - by_bits[4] < 28  # about 6.02 dB a bit
    per_tensor = sqnr(w, fake_quantize(w, *choose_qparams(w, 4, True), 4, True))
    per_group = sqnr(w, fake_quantize(w, *choose_qparams(w, 4, True, group_size=100), 4, True, group_size=100))
    assert per_tensor < by_bits[4] < per_group
    assert sqnr(w, w) == math.inf


def test_bad_input():
    x = randn(4, 6)
    for bits in (1, 9, 4.0, True):
        with pytest.raises(ValueError, match="bits must be an integer from 2 to 8"):
            choose_qparams(x, bits)
    with pytest.raises(ValueError, match="group_size must be a positive integer"):
        choose_qparams(x, 4, group_size=0)
    with pytest.raises(ValueError, match="give axis or group_size, not both"):
        choose_qparams(x, 4, axis=0, group_size=3)
    with pytest.raises(ValueError, match="axis=2 is out of range"):
        choose_qparams(x, 4, axis=2)
    with pytest.raises(ValueError, match="x is empty"):
        choose_qparams(torch.empty(0, 3))
    with pytest.raises(ValueError, match="inf or nan"):
        choose_qparams(torch.tensor([1.0, float("nan")]))
    with pytest.raises(TypeError, match="floating-point"):
        choose_qparams(torch.arange(4))
    with pytest.raises(ValueError, match="rounding must be one of"):
        quantize(x, *choose_qparams(x), rounding="up")
    with pytest.raises(ValueError, match="lo <= hi"):
        qparams_from_range(torch.tensor(1.0), torch.tensor(-1.0))
    with pytest.raises(ValueError, match="one shape"):
        sqnr(x, x[:2])
