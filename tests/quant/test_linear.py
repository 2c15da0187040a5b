import copy

import pytest
import torch
from torch import nn

import shrinklib
from shrinklib import measure, zoo
from shrinklib.quant import choose_qparams, dequantize, fake_quantize, quantize, sqnr
from shrinklib.quant.configs import Int8Dynamic, Int8Static, LLMInt8, WeightOnly
from shrinklib.quant.linear import (
    QuantLinear,
    SharedInputQuantization,
    config_from_json,
    config_to_json,
    quant_layers,
    quantize_,
    quantize_per_token,
    share_input_quantization_,
)


def linear(k=96, n=45, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(k, n)


def inputs(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_weight_only_int8_per_channel_is_the_fake_quantized_layer():
    lin, x = linear(), inputs(7, 96)
    q = QuantLinear.from_linear(lin, WeightOnly(8))
    w_hat = fake_quantize(lin.weight.detach(), *choose_qparams(lin.weight, 8, True, axis=0), 8, True)
    assert q.qweight.dtype == torch.int8
    assert torch.allclose(q(x), x @ w_hat.T + lin.bias, atol=1e-5)


@pytest.mark.parametrize("bits, group, symmetric", [(4, 32, False), (4, 48, True), (3, None, True), (2, 16, False),
                                                   (4, 40, False)])  # 96 = 40 + 40 + 16
def test_low_bit_levels_are_packed_two_to_a_byte_and_dequantize_exactly(bits, group, symmetric):
    lin = linear()
    q = QuantLinear.from_linear(lin, WeightOnly(bits, group, symmetric))
    assert q.qweight.dtype == torch.uint8 and q.qweight.shape == (45, 48)
    w = lin.weight.detach()
    kwargs = {"group_size": group} if group else {"axis": 0}
    scale, zero_point = choose_qparams(w, bits, symmetric, **kwargs)
    expected = dequantize(quantize(w, scale, zero_point, bits, symmetric, group_size=group), scale, zero_point,
                          group_size=group)
    assert torch.equal(q.dequantized_weight(), expected)


def test_dynamic_int8_matches_the_integer_arithmetic_written_out():
    lin, x = linear(), inputs(3, 5, 96)
    q = QuantLinear.from_linear(lin, Int8Dynamic())
    x_q, x_scale = quantize_per_token(x.reshape(-1, 96))
    acc = x_q.long() @ q.qweight.long().T  # exact integers
    expected = (acc.float() * x_scale[:, None] * q.scale.reshape(1, -1) + lin.bias).reshape(3, 5, 45)
    assert torch.allclose(q(x), expected, atol=1e-5)
    assert sqnr(lin(x).detach(), q(x).detach()) > 35


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_layers_reading_one_input_quantize_it_once(monkeypatch, mode):
    import shrinklib.quant.linear as linear_module
    calls = []
    monkeypatch.setattr(linear_module, "quantize_per_token", lambda x: calls.append(x.shape) or quantize_per_token(x))
    qkv = [QuantLinear.from_linear(linear(seed=s), Int8Dynamic()) for s in range(3)]
    share_input_quantization_(nn.ModuleList(qkv))  # what quantize_ does: one cache for the model's dynamic layers
    assert all(isinstance(q.input_cache, SharedInputQuantization) and q.input_cache is qkv[0].input_cache for q in qkv)
    with mode():
        x = inputs(2, 7, 96)
        outputs = [q(x) for q in qkv]  # Q, K and V read the same hidden states
        assert len(calls) == 1
        for q, y in zip(qkv, outputs):
            x_q, x_scale = quantize_per_token(x.reshape(-1, 96))
            expected = (x_q.long() @ q.qweight.long().T).float() * x_scale[:, None] * q.scale.reshape(1, -1) + q.bias
            assert torch.allclose(y, expected.reshape(2, 7, 45), atol=1e-5)
        x2 = x.clone()  # equal values, another tensor: quantized again
        qkv[0](x2)
        assert len(calls) == 2
    x3 = inputs(4, 96, seed=5)
    with torch.no_grad():
        before = qkv[0](x3)
        x3.mul_(2)  # changed in place: its version counter moves, so the cache must not answer
        after = qkv[1](x3)
    assert len(calls) == 4
    assert torch.allclose(after, QuantLinear.from_linear(linear(seed=1), Int8Dynamic())(x3.clone()).detach())
    assert not torch.allclose(before, qkv[0](x3).detach())


def test_dynamic_int8_agrees_with_torch_ao_dynamic_quantization():
    lin, x = linear(384, 130), inputs(16, 384)
    ours = QuantLinear.from_linear(lin, Int8Dynamic())(x).detach()
    with pytest.warns((DeprecationWarning, UserWarning)):
        theirs = torch.ao.quantization.quantize_dynamic(nn.Sequential(lin), {nn.Linear}, dtype=torch.qint8)(x).detach()
    exact = lin(x).detach()
    assert sqnr(exact, ours) > 35 and sqnr(exact, theirs) > 30
    assert sqnr(theirs, ours) > 30


def test_llm_int8_multiplies_outlier_features_in_float():
    lin, x = linear(), inputs(20, 96)
    x[:, [5, 60]] *= 30  # two outlier features, beyond the threshold of 6 in most tokens
    exact = lin(x).detach()
    decomposed = QuantLinear.from_linear(lin, LLMInt8(6.0))
    plain = QuantLinear.from_linear(lin, Int8Dynamic())
    assert sqnr(exact, decomposed(x).detach()) > sqnr(exact, plain(x).detach()) + 10
    # written out: int8 for the regular columns, float for the outlier ones, one int8 weight for both
    outliers = (x.abs() >= 6).any(0)
    x_q, x_scale = quantize_per_token(x.masked_fill(outliers, 0))
    w = decomposed.qweight.float() * decomposed.scale
    expected = (x_q.long() @ decomposed.qweight.long().T).float() * x_scale[:, None] * decomposed.scale.T \
        + x[:, outliers] @ w[:, outliers].T + lin.bias
    assert torch.allclose(decomposed(x), expected, atol=1e-4)
    never = QuantLinear.from_linear(lin, LLMInt8(1e9))  # no feature reaches the threshold: dynamic int8
    assert torch.equal(never(x), plain(x))


@pytest.mark.parametrize("config", [WeightOnly(8), WeightOnly(4, 32, False), WeightOnly(4, 48, True),
                                    WeightOnly(4, 40, False), Int8Dynamic(), Int8Static()],
                         ids=["w8", "w4-affine", "w4-symmetric", "w4-ragged-groups", "dynamic", "static"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_kernel_path_matches_the_torch_path(config, dtype):
    """``use_kernel=True`` runs the Triton kernels (under the interpreter on a CPU) instead of torch."""
    lin, x = linear(), inputs(2, 5, 96).to(dtype)
    q = QuantLinear.from_linear(lin, config)
    if isinstance(config, Int8Static):
        q.input_scale.fill_(float(x.abs().max()) / 127)
    torch_path = q(x.float()).to(dtype)  # torch on the CPU computes in fp32; the kernels take fp16 as it is
    q.use_kernel = True
    kernel_path = q(x)
    assert kernel_path.dtype == dtype
    assert torch.allclose(kernel_path.float(), torch_path.float(), atol=1e-4 if dtype == torch.float32 else 2e-2)


def test_quantize_swaps_the_body_not_the_head_and_round_trips(tmp_path):
    model = zoo.tiny_bert(vocab_size=50)
    before = measure.size_on_disk(model)
    quantize_(model, WeightOnly(4, 16, symmetric=False))
    assert len(quant_layers(model)) == 2 * 6  # q, k, v, attention out, FFN in and out of both layers
    assert isinstance(model.classifier, nn.Linear) and isinstance(model.bert.pooler.dense, nn.Linear)  # the head
    assert measure.size_on_disk(model) < before
    shrinklib.save(model, tmp_path)
    loaded = shrinklib.load(tmp_path)
    ids = torch.randint(0, 50, (2, 7))
    assert torch.equal(model.eval()(input_ids=ids).logits, loaded.eval()(input_ids=ids).logits)
    for a, b in zip(quant_layers(model), quant_layers(loaded)):
        assert torch.equal(a.qweight, b.qweight) and torch.equal(a.scale, b.scale)


@pytest.mark.parametrize("config", [WeightOnly(8), WeightOnly(3, 16, False), Int8Dynamic(), Int8Static("entropy", 99.0),
                                    LLMInt8(2.5)], ids=["w8", "w3-affine", "dynamic", "static", "llm-int8"])
def test_the_config_is_the_rebuild_argument_and_every_mode_round_trips(config, tmp_path):
    model = zoo.tiny_bert(vocab_size=50)
    quantize_(model, config)
    for layer in quant_layers(model):
        assert layer.config == config and config_from_json(layer.rebuild_kwargs()["config"]) == config
        if isinstance(config, Int8Static):  # as calibrate_ would leave it: a scale per layer
            layer.input_scale.fill_(0.05 + 0.001 * layer.in_features)
    shrinklib.save(model, tmp_path)
    loaded = shrinklib.load(tmp_path)
    ids = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(3))
    assert torch.equal(model.eval()(input_ids=ids).logits, loaded.eval()(input_ids=ids).logits)
    assert all(a.config == b.config for a, b in zip(quant_layers(model), quant_layers(loaded)))
    before, after = model.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_config_json_is_the_dataclass_fields():
    assert config_to_json(WeightOnly(4, 32, False)) == {"kind": "WeightOnly", "bits": 4, "group_size": 32,
                                                        "symmetric": False}
    assert config_to_json(Int8Dynamic()) == {"kind": "Int8Dynamic"}
    for config in (WeightOnly(2, None), Int8Dynamic(), Int8Static("mse"), LLMInt8(4.0)):
        assert config_from_json(config_to_json(config)) == config
    with pytest.raises(TypeError, match="config must be one of"):
        config_to_json("int8")


def test_the_input_cache_is_explicit_and_copies_start_empty():
    model = quantize_(zoo.tiny_bert(vocab_size=50), Int8Dynamic())
    caches = {id(q.input_cache) for q in quant_layers(model)}
    assert len(caches) == 1 and None not in {q.input_cache for q in quant_layers(model)}
    ids = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert quant_layers(model)[0].input_cache.last is not None
    twin = copy.deepcopy(model)
    twin_caches = {id(q.input_cache) for q in quant_layers(twin)}
    assert len(twin_caches) == 1 and twin_caches != caches and quant_layers(twin)[0].input_cache.last is None
    for q in quant_layers(twin):
        q.input_cache = None  # every layer quantizes its own input: the same outputs
    with torch.no_grad():
        assert torch.equal(twin(input_ids=ids).logits, logits)
    assert all(q.input_cache is None for q in quant_layers(quantize_(zoo.tiny_bert(vocab_size=50), WeightOnly(8))))


def test_bad_input(unchanged):
    model = zoo.tiny_bert(vocab_size=50)
    with unchanged(model):
        with pytest.raises(TypeError, match="config must be one of \\['WeightOnly', 'Int8Dynamic', 'Int8Static', 'LLMInt8'\\]"):
            quantize_(model, "int8")
        with pytest.raises(ValueError, match="no nn.Linear layer that filter_fn picks"):
            quantize_(model, WeightOnly(8), filter_fn=lambda m, fqn: False)
    odd = nn.Sequential(nn.Linear(8, 7), nn.Linear(7, 3))
    with unchanged(odd):  # refused before the first layer, which could take 4 bits, changed
        with pytest.raises(ValueError, match="4-bit levels are stored two to a byte; 1 has odd in_features"):
            quantize_(odd, WeightOnly(4), filter_fn=lambda m, fqn: isinstance(m, nn.Linear))
    # a mode string that contradicts the grid ("dynamic" with bits=4) can no longer be written: the config is the mode
    with pytest.raises(TypeError, match="config must be one of \\['WeightOnly', 'Int8Dynamic', 'Int8Static', 'LLMInt8'\\]"):
        QuantLinear(8, 8, config="dynamic")
    with pytest.raises(ValueError, match="config Int8Dynamic has no field bits"):
        QuantLinear(8, 8, config={"kind": "Int8Dynamic", "bits": 4})
    with pytest.raises(ValueError, match="config kind must be one of"):
        config_from_json({"kind": "Int4Dynamic"})
    with pytest.raises(ValueError, match="in_features must be even"):
        QuantLinear.from_linear(nn.Linear(7, 3), WeightOnly(4))
    with pytest.raises(TypeError, match="from_linear needs an nn.Linear"):
        QuantLinear.from_linear(nn.Conv1d(3, 3, 1), WeightOnly(8))
