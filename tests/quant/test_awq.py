"""AWQ: activation-aware per-input-channel scaling (and clipping) before weight quantization."""
import pytest
import torch
from torch import nn

import shrinklib
from shrinklib import zoo
from shrinklib.calibration import InputStats
from shrinklib.quant import Int8Dynamic, QuantLinear, WeightOnly, fake_quantize_weight, quant_layers
from shrinklib.quant.awq import awq_, awq_clip, awq_search, output_error


def outlier_inputs(tokens=256, n_in=64, seed=0, loud=(3, 17), factor=40.0):
    """Activations with a few channels far louder than the rest in every token, as in LLMs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, n_in, generator=g)
    x[:, list(loud)] *= factor
    return x


def stats_of(x):
    x64 = x.double()
    return InputStats(x64.pow(2).sum(0), x64.T @ x64, x.shape[0], x64.abs().sum(0), x64.abs().amax(0))


def linear(n_in=64, n_out=40, seed=1):
    torch.manual_seed(seed)
    return nn.Linear(n_in, n_out)


def test_awq_search_never_loses_to_rounding_and_wins_on_salient_channels():
    lin, x = linear(), outlier_inputs(loud=(3, 17, 40), factor=8.0)
    stats, config = stats_of(x), WeightOnly(4, 16, symmetric=False)
    s, alpha, errors = awq_search(lin.weight, stats, config, grid=10)
    rtn_error = output_error(lin.weight, fake_quantize_weight(lin.weight.detach(), 4, False, group_size=16), stats.gram)
    assert errors[0.0] == pytest.approx(rtn_error, rel=1e-9)  # alpha = 0 is plain rounding
    assert alpha > 0 and errors[alpha] == min(errors.values()) and errors[alpha] < 0.9 * rtn_error
    q = QuantLinear.from_linear(lin, config, smoothing=s)
    w_eff = q.dequantized_weight() * q.input_multiplier[None, :]
    assert output_error(lin.weight, w_eff, stats.gram) == pytest.approx(errors[alpha], rel=1e-4)


@pytest.mark.parametrize("group_size", [16, 24, None])  # 64 = 24 + 24 + 16: a ragged last group
def test_awq_clipping_lowers_the_output_error_of_the_scaled_weight(group_size):
    lin, x = linear(), outlier_inputs(loud=(3, 17, 40), factor=8.0)
    stats, config = stats_of(x), WeightOnly(3, group_size, symmetric=False)
    s = awq_search(lin.weight, stats, config, grid=10)[0]
    unclipped = QuantLinear.from_linear(lin, config, smoothing=s)
    clipped = QuantLinear.from_linear(lin, config, smoothing=s)
    clipped.set_quantized(*awq_clip(lin.weight, s, stats.gram, config))

    def error(q):
        return output_error(lin.weight, q.dequantized_weight() * q.input_multiplier[None, :], stats.gram)

    assert error(clipped) < 0.95 * error(unclipped)


def _batches():
    blocks = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(0))
    return [{"input_ids": blocks[i:i + 4]} for i in range(0, 8, 4)]


@pytest.mark.parametrize("method", ["awq", "awq_clip"])
def test_on_a_decoder_layers_are_smoothed_and_round_trip(method, tmp_path):
    model, reference = zoo.tiny_llama(), zoo.tiny_llama()
    awq_(model, _batches(), WeightOnly(4, 16), grid=5, clip=method == "awq_clip")
    layers = quant_layers(model)
    assert len(layers) == 14 and all(q.smoothed for q in layers)
    ids = _batches()[0]["input_ids"]
    logits = model(input_ids=ids).logits
    assert torch.corrcoef(torch.stack([logits.flatten(), reference(input_ids=ids).logits.flatten()]))[0, 1] > 0.9
    shrinklib.save(model, tmp_path)
    assert torch.equal(shrinklib.load(tmp_path)(input_ids=ids).logits, logits)


def test_bad_input(unchanged):
    lin = linear()
    model = zoo.tiny_llama()
    with unchanged(model):
        with pytest.raises(TypeError, match="config must be a WeightOnly"):
            awq_(model, _batches(), Int8Dynamic())
        with pytest.raises(ValueError, match="no calibration batch"):
            awq_(model, [], WeightOnly(4, 16))
        with pytest.raises(ValueError, match="grid must be >= 1, got 0"):
            awq_(model, _batches(), WeightOnly(4, 16), grid=0)
    with pytest.raises(ValueError, match="needs input statistics with the Gram matrix"):
        awq_search(lin.weight, InputStats(torch.ones(64), None, 10), WeightOnly(4, 16))
