"""SmoothQuant: per-input-channel scaling that moves activation outliers into the weights, then W8A8."""
import pytest
import torch
from torch import nn

import shrinklib
from shrinklib import zoo
from shrinklib.quant import Int8Dynamic, Int8Static, QuantLinear, WeightOnly, quant_layers, sqnr
from shrinklib.quant.smoothquant import smoothing_factors, smoothquant_


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
    with pytest.raises(TypeError, match="config must be Int8Dynamic or Int8Static"):
        smoothquant_(zoo.tiny_llama(), _batches(), WeightOnly(8))
    with pytest.raises(ValueError, match="no calibration batch"):
        smoothquant_(zoo.tiny_llama(), [])
