import pytest
import torch
from torch import nn

from shrinklib import zoo
from shrinklib.quant import QuantLinear
from shrinklib.quant.mixed_precision import MixedPrecision, allocate_bits, hessian_traces, quantize_mixed_


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.first, self.second = nn.Linear(5, 4), nn.Linear(4, 3)

    def forward(self, x, labels):
        out = self.second(torch.tanh(self.first(x)))
        return type("Out", (), {"loss": nn.functional.cross_entropy(out, labels)})()


def exact_trace(model, batch, name):
    weight = getattr(model, name).weight.detach().clone()

    def loss_of(w):
        return torch.func.functional_call(model, {f"{name}.weight": w}, (batch["x"], batch["labels"])).loss

    hessian = torch.autograd.functional.hessian(loss_of, weight)
    return float(hessian.reshape(weight.numel(), weight.numel()).diagonal().sum())


class Regression(nn.Module):
    """MSE of a linear layer: the Hessian in W is 2/N X^T X (x) I, diagonal when X's columns are orthogonal."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(4, 3)

    def forward(self, x, labels):
        return type("Out", (), {"loss": nn.functional.mse_loss(self.layer(x), labels)})()


def test_with_a_diagonal_hessian_every_sample_is_the_exact_trace():
    x = torch.diag(torch.tensor([1.0, 2.0, 0.5, 3.0]))  # orthogonal columns
    batch = {"x": x, "labels": torch.randn(4, 3, generator=torch.Generator().manual_seed(0))}
    estimate = hessian_traces(Regression(), [batch], filter_fn=lambda m, fqn: isinstance(m, nn.Linear), samples=1)
    assert estimate["layer"] == pytest.approx(exact_trace(Regression(), batch, "layer"), rel=1e-5)


def test_hutchinson_estimate_converges_to_the_exact_trace():
    model = TwoLayers()
    g = torch.Generator().manual_seed(1)
    batch = {"x": torch.randn(16, 5, generator=g), "labels": torch.randint(0, 3, (16,), generator=g)}
    estimates = hessian_traces(model, [batch], filter_fn=lambda m, fqn: isinstance(m, nn.Linear), samples=2000)
    for name in ("first", "second"):
        assert estimates[name] == pytest.approx(exact_trace(model, batch, name), rel=0.12)


def test_the_sensitive_layer_keeps_more_bits_within_the_budget():
    torch.manual_seed(0)
    weights = {"flat": torch.randn(64, 64), "sharp": torch.randn(64, 64)}
    bits = allocate_bits({"flat": 1.0, "sharp": 100.0}, weights, average_bits=5, choices=(2, 4, 8), group_size=None)
    assert bits["sharp"] > bits["flat"]
    assert (bits["flat"] + bits["sharp"]) / 2 <= 5
    everything = allocate_bits({"flat": 1.0, "sharp": 100.0}, weights, average_bits=8, choices=(2, 4, 8))
    assert everything == {"flat": 8, "sharp": 8}


def test_mixed_quantization_of_bert():
    model = zoo.tiny_bert(vocab_size=50)
    batch = {"input_ids": torch.randint(0, 50, (8, 6), generator=torch.Generator().manual_seed(0)),
             "labels": torch.randint(0, 2, (8,), generator=torch.Generator().manual_seed(1))}
    traces = hessian_traces(model, [batch], samples=4)
    assert len(traces) == 12 and all(t == t for t in traces.values())
    layers = dict(model.named_modules())
    bits = allocate_bits(traces, {f: layers[f].weight for f in traces}, average_bits=4, choices=(2, 4, 8), group_size=16)
    quantize_mixed_(model, MixedPrecision(bits, group_size=16))
    assert {fqn: model.get_submodule(fqn).bits for fqn in bits} == bits
    assert all(isinstance(model.get_submodule(fqn), QuantLinear) for fqn in bits)


def test_filter_fn_keeps_some_of_the_named_layers():
    model = zoo.tiny_bert(vocab_size=50)
    query, key = "bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.0.attention.self.key"
    config = MixedPrecision({query: 2, key: 8}, group_size=16)
    quantize_mixed_(model, config, filter_fn=lambda m, fqn: fqn.endswith("query"))
    assert isinstance(model.get_submodule(query), QuantLinear) and isinstance(model.get_submodule(key), nn.Linear)
    assert model.get_submodule(query).config == config.layer_config(query) and config.layer_config(key).bits == 8
    with pytest.raises(TypeError):
        config.bits[key] = 4  # a read-only copy: the config cannot change after it was checked


def test_bad_input(unchanged):
    weights = {"a": torch.randn(4, 4)}
    with pytest.raises(ValueError, match="below the smallest choice 2"):
        allocate_bits({"a": 1.0}, weights, average_bits=1)
    with pytest.raises(ValueError, match="name the same layers"):
        allocate_bits({"b": 1.0}, weights, average_bits=4)
    with pytest.raises(ValueError, match="bits must be an integer from 2 to 8"):
        allocate_bits({"a": 1.0}, weights, average_bits=4, choices=(1, 4))
    model = zoo.tiny_bert(vocab_size=50)
    with unchanged(model):
        with pytest.raises(ValueError, match="no such layers in the model: \\['nope'\\]"):
            quantize_mixed_(model, MixedPrecision({"nope": 4}))
        with pytest.raises(ValueError, match="returned no loss"):
            hessian_traces(model, [{"input_ids": torch.zeros(1, 3, dtype=torch.long)}])
        with pytest.raises(ValueError, match="no calibration batch"):
            hessian_traces(model, [])
        with pytest.raises(TypeError, match="config must be a MixedPrecision, got dict"):
            quantize_mixed_(model, {"bert.encoder.layer.0.attention.self.query": 4})
        with pytest.raises(TypeError, match="bert.pooler is a BertPooler, not an nn.Linear"):
            quantize_mixed_(model, MixedPrecision({"bert.encoder.layer.0.attention.self.query": 4, "bert.pooler": 4}))
    with pytest.raises(TypeError, match="bits must be a nonempty mapping"):
        MixedPrecision({})
    with pytest.raises(ValueError, match="bits must be an integer from 2 to 8"):
        MixedPrecision({"a": 9})
    with pytest.raises(ValueError, match="group_size must be a positive integer"):
        MixedPrecision({"a": 4}, group_size=0)
    with unchanged(model):
        with pytest.raises(ValueError, match="filter_fn picked none of the layers that config.bits names"):
            quantize_mixed_(model, MixedPrecision({"bert.encoder.layer.0.attention.self.query": 4}),
                            filter_fn=lambda m, fqn: False)
