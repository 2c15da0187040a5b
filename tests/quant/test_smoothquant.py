"""SmoothQuant: per-input-channel scaling that moves activation outliers into the weights, then W8A8."""
import math

import pytest
import torch
from torch import nn

import shrinklib
from shrinklib import zoo
from shrinklib.quant import Int8Dynamic, Int8Static, QuantLinear, WeightOnly, quant_layers, sqnr
from shrinklib.quant.smoothquant import smoothing_factors, smoothquant_

from .conftest import Stack, stack_batches


def outlier_inputs(tokens=256, n_in=64, seed=0, loud=(3, 17), factor=40.0):
    """Activations with a few channels far louder than the rest in every token, as in LLMs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, n_in, generator=g)
    x[:, list(loud)] *= factor
    return x


def linear(n_in=64, n_out=40, seed=1):
    torch.manual_seed(seed)
    return nn.Linear(n_in, n_out)


def test_smoothing_factors_formula():
    act = torch.tensor([4.0, 1.0, 0.0])
    weight = torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.5, 1.0]])
    s = smoothing_factors(act, weight, alpha=0.5)
    assert torch.allclose(s[:2], torch.tensor([4.0 ** 0.5 / 1.0 ** 0.5, 1.0 / 2.0 ** 0.5]))
    assert s[2] == 1  # a channel that never fired is left alone


def test_smoothed_layer_computes_the_same_function():
    lin, x = linear(), outlier_inputs()
    s = smoothing_factors(x.abs().amax(0), lin.weight)
    q = QuantLinear.from_linear(lin, WeightOnly(8), smoothing=s)
    assert sqnr(lin(x).detach(), q(x).detach()) > 40


def test_smoothing_rescues_int8_activations_with_outlier_channels():
    lin, x = linear(), outlier_inputs()
    exact = lin(x).detach()
    plain = QuantLinear.from_linear(lin, Int8Dynamic())(x).detach()
    smoothed = QuantLinear.from_linear(lin, Int8Dynamic(), smoothing=smoothing_factors(x.abs().amax(0), lin.weight))(x)
    assert sqnr(exact, smoothed.detach()) > sqnr(exact, plain) + 6


def _batches():
    blocks = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(0))
    return [{"input_ids": blocks[i:i + 4]} for i in range(0, 8, 4)]


@pytest.mark.parametrize("method", ["smoothquant_dynamic", "smoothquant_static"])
def test_on_a_decoder_layers_are_smoothed_and_round_trip(method, tmp_path):
    model, reference = zoo.tiny_llama(), zoo.tiny_llama()
    smoothquant_(model, iter(_batches()) if method.endswith("dynamic") else _batches(),
                 Int8Dynamic() if method.endswith("dynamic") else Int8Static())
    layers = quant_layers(model)
    assert len(layers) == 14 and all(q.smoothed for q in layers)
    ids = _batches()[0]["input_ids"]
    logits = model(input_ids=ids).logits
    assert torch.corrcoef(torch.stack([logits.flatten(), reference(input_ids=ids).logits.flatten()]))[0, 1] > 0.9
    shrinklib.save(model, tmp_path)
    assert torch.equal(shrinklib.load(tmp_path)(input_ids=ids).logits, logits)


def test_bad_input():
    lin = linear()
    with pytest.raises(ValueError, match="alpha must be in \\[0, 1\\]"):
        smoothing_factors(torch.ones(64), lin.weight, alpha=1.5)
    with pytest.raises(ValueError, match="act_absmax must have shape \\(64,\\)"):
        smoothing_factors(torch.ones(3), lin.weight)
    with pytest.raises(ValueError, match="smoothing must be positive"):
        QuantLinear.from_linear(lin, WeightOnly(8), smoothing=-torch.ones(64))
    with pytest.raises(ValueError, match="weight must be \\(out, in\\)"):
        smoothing_factors(torch.ones(64), lin.weight[0])
    with pytest.raises(ValueError, match="smoothing must be positive and finite"):
        QuantLinear.from_linear(lin, WeightOnly(8), smoothing=torch.full((64,), math.inf))


@pytest.mark.parametrize("call, error, message", [
    (lambda m: smoothquant_(m, _batches(), WeightOnly(8)), TypeError, "config must be Int8Dynamic or Int8Static"),
    (lambda m: smoothquant_(m, []), ValueError, "no calibration batch"),
    (lambda m: smoothquant_(m, _batches(), alpha=1.5), ValueError, "alpha must be in \\[0, 1\\], got 1.5"),
    (lambda m: smoothquant_(m, _batches(), alpha=math.nan), ValueError, "alpha must be in \\[0, 1\\], got nan"),
    (lambda m: smoothquant_(m, _batches(), max_batches=0), ValueError, "max_batches must be an int >= 1, got 0"),
])
def test_bad_options_leave_the_model_unchanged(call, error, message, unchanged):
    model = zoo.tiny_llama()
    with unchanged(model):
        with pytest.raises(error, match=message):
            call(model)


@pytest.mark.parametrize("alpha", [math.nan, math.inf, -0.5, "0.5"])
def test_alpha_is_a_number_in_the_unit_interval(alpha):
    with pytest.raises(ValueError, match="alpha must be in \\[0, 1\\]"):
        smoothing_factors(torch.ones(64), linear().weight, alpha=alpha)


@pytest.mark.parametrize("percentile", [150, 50, math.nan, math.inf])
def test_a_bad_calibration_percentile_is_refused_before_any_layer_is_swapped(percentile):
    """It once raised in the static calibration, after every layer had been swapped; now the config refuses it."""
    with pytest.raises(ValueError, match="percentile must be in \\(50, 100\\]"):
        Int8Static("percentile", percentile)


def test_a_static_calibration_failing_half_way_puts_the_float_layers_back(unchanged):
    """The smoothed layers are swapped in to calibrate their inputs; the second layer's inputs are nan."""
    model = Stack(broken_at=0)
    with unchanged(model):
        with pytest.raises(ValueError, match="the inputs of layers.1.linear hold inf or nan"):
            smoothquant_(model, stack_batches(), Int8Static("percentile", 99.0))
    assert not quant_layers(model)
    assert len(quant_layers(smoothquant_(Stack(), stack_batches(), Int8Static("percentile", 99.0)))) == 3
