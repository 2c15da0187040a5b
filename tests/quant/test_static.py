"""Static int8: calibrate_ fixes each layer's input scale from calibration batches."""
import copy

import pytest
import torch
from torch import nn

import shrinklib
from shrinklib import zoo
from shrinklib.quant import choose_qparams, fake_quantize, sqnr
from shrinklib.quant.configs import Int8Dynamic, Int8Static
from shrinklib.quant.linear import QuantLinear, quant_layers, quantize_
from shrinklib.quant.static import calibrate_

from .conftest import Stack, stack_batches


class _OneLayer(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.body = nn.Linear(width, 8)

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("method", ["percentile", "mse"])
def test_calibration_samples_every_feature_of_a_wide_input(method):
    """An outlier feature in every token must reach the range search (a flat stride of 12 would miss it)."""
    x = torch.randn(4096, 384, generator=torch.Generator().manual_seed(0))
    x[:, 5] = 100.0  # 1 value in 384 is an outlier: far more than the 0.01% that percentile 99.99 clips
    model = quantize_(_OneLayer(384), Int8Static(method))
    calibrate_(model, [{"x": x}])
    assert float(model.body.input_scale) * 127 > 50


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_static_calibration_sets_each_layer_input_scale(method):
    model = zoo.tiny_bert(vocab_size=50)
    batches = [{"input_ids": torch.randint(0, 50, (4, 9), generator=torch.Generator().manual_seed(i))}
               for i in range(3)]
    reference = copy.deepcopy(model).eval()  # the float model with the weights the quantized one will hold
    for fqn, m in reference.named_modules():
        if isinstance(m, nn.Linear) and fqn not in ("classifier", "bert.pooler.dense"):
            m.weight.data = fake_quantize(m.weight.data, *choose_qparams(m.weight.data, 8, True, axis=0), 8, True)
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, fqn=fqn: seen.setdefault(fqn, []).append(a[0].abs().max()))
             for fqn, m in reference.named_modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for b in batches:
            reference(**b)
    for h in hooks:
        h.remove()
    quantize_(model, Int8Static(method, percentile=99.0))
    calibrate_(model, batches)
    for fqn, module in model.named_modules():
        if isinstance(module, QuantLinear):
            top = float(torch.stack(seen[fqn]).max()) / 127
            if method == "minmax":
                assert float(module.input_scale) == pytest.approx(top, rel=1e-6)
            else:
                assert 0 < float(module.input_scale) <= top * (1 + 1e-6)
    logits, expected = model(**batches[0]).logits, reference(**batches[0]).logits
    assert sqnr(expected.detach(), logits.detach()) > 15


def test_a_calibrated_static_model_round_trips_and_a_given_config_replaces_the_layers(tmp_path):
    model = zoo.tiny_bert(vocab_size=50)
    batches = [{"input_ids": torch.randint(0, 50, (4, 9), generator=torch.Generator().manual_seed(i)),
                "labels": torch.zeros(4, dtype=torch.long)} for i in range(2)]  # labels are left out of the forward
    quantize_(model, Int8Static())
    calibrate_(model, batches, Int8Static("percentile", 99.0))
    assert all(q.config == Int8Static("percentile", 99.0) for q in quant_layers(model))
    shrinklib.save(model, tmp_path)
    loaded = shrinklib.load(tmp_path)
    ids = batches[0]["input_ids"]
    assert torch.equal(model.eval()(input_ids=ids).logits, loaded.eval()(input_ids=ids).logits)
    assert all(torch.equal(a.input_scale, b.input_scale) for a, b in zip(quant_layers(model), quant_layers(loaded)))


def test_bad_input(unchanged):
    model = zoo.tiny_bert(vocab_size=50)
    with unchanged(model):
        with pytest.raises(ValueError, match="no static QuantLinear layer"):
            calibrate_(model, [{"input_ids": torch.zeros(1, 3, dtype=torch.long)}])
    # the swapped-in layers start in training mode inside the eval model, and the calibration loop
    # (shrinklib.calibration.run_batches) restores the model's mode, not each layer's: make them agree
    quantize_(model, Int8Static()).eval()
    with unchanged(model):
        with pytest.raises(TypeError, match="config must be an Int8Static or None, got Int8Dynamic"):
            calibrate_(model, [{"input_ids": torch.zeros(1, 3, dtype=torch.long)}], Int8Dynamic())
        with pytest.raises(ValueError, match="no calibration batch"):
            calibrate_(model, [])
        with pytest.raises(ValueError, match="max_batches must be an int >= 1, got 0"):
            calibrate_(model, [{"input_ids": torch.zeros(1, 3, dtype=torch.long)}], max_batches=0)
        with pytest.raises(ValueError, match="max_batches must be an int >= 1, got 0.5"):
            calibrate_(model, [{"input_ids": torch.zeros(1, 3, dtype=torch.long)}], max_batches=0.5)
        with pytest.raises(IndexError):  # the second batch holds ids beyond the vocabulary of 50
            calibrate_(model, [{"input_ids": torch.zeros(1, 3, dtype=torch.long)},
                               {"input_ids": torch.full((1, 3), 10_000)}])


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_a_layer_whose_range_cannot_be_found_leaves_every_scale_and_config_as_it_was(method, unchanged):
    """The second layer's inputs are nan: the first layer's scale, already known, must not be set either,
    nor the config passed to replace the layers' own."""
    model = quantize_(Stack(broken_at=0), Int8Static())
    configs = [q.config for q in quant_layers(model)]
    with unchanged(model):
        with pytest.raises(ValueError, match="the inputs of layers.1.linear hold inf or nan"):
            calibrate_(model, stack_batches(), Int8Static(method, 99.0))
    assert [q.config for q in quant_layers(model)] == configs


def test_a_static_layer_the_batches_never_reach_is_an_error(unchanged):
    model = quantize_(Stack(), Int8Static())
    model.spare = QuantLinear(16, 4, config=Int8Static())  # held by the model, never called by its forward
    with unchanged(model):
        with pytest.raises(ValueError, match="spare saw no input on the calibration batches"):
            calibrate_(model, stack_batches())
