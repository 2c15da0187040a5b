import copy
import os
import platform
import subprocess
import sys

import pytest
import torch
from torch import nn

import shrinklib
from shrinklib import measure, zoo
from shrinklib.quant import choose_qparams, dequantize, fake_quantize, quantize, sqnr
from shrinklib.quant.linear import (
    Int8Dynamic,
    Int8Static,
    LLMInt8,
    QuantLinear,
    WeightOnly,
    calibrate_,
    int8_matmul,
    quant_layers,
    quantize_,
    quantize_per_token,
)


def linear(k=96, n=45, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(k, n)


def inputs(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_weight_only_int8_per_channel_is_the_fake_quantized_layer():
    lin, x = linear(), inputs(7, 96)
    q = QuantLinear.from_float(lin, WeightOnly(8))
    w_hat = fake_quantize(lin.weight.detach(), *choose_qparams(lin.weight, 8, True, axis=0), 8, True)
    assert q.qweight.dtype == torch.int8
    assert torch.allclose(q(x), x @ w_hat.T + lin.bias, atol=1e-5)


@pytest.mark.parametrize("bits, group, symmetric", [(4, 32, False), (4, 48, True), (3, None, True), (2, 16, False),
                                                   (4, 40, False)])  # 96 = 40 + 40 + 16
def test_low_bit_levels_are_packed_two_to_a_byte_and_dequantize_exactly(bits, group, symmetric):
    lin = linear()
    q = QuantLinear.from_float(lin, WeightOnly(bits, group, symmetric))
    assert q.qweight.dtype == torch.uint8 and q.qweight.shape == (45, 48)
    w = lin.weight.detach()
    kwargs = {"group_size": group} if group else {"axis": 0}
    scale, zero_point = choose_qparams(w, bits, symmetric, **kwargs)
    expected = dequantize(quantize(w, scale, zero_point, bits, symmetric, group_size=group), scale, zero_point,
                          group_size=group)
    assert torch.equal(q.dequantized_weight(), expected)


def test_dynamic_int8_matches_the_integer_arithmetic_written_out():
    lin, x = linear(), inputs(3, 5, 96)
    q = QuantLinear.from_float(lin, Int8Dynamic())
    x_q, x_scale = quantize_per_token(x.reshape(-1, 96))
    acc = x_q.long() @ q.qweight.long().T  # exact integers
    expected = (acc.float() * x_scale[:, None] * q.scale.reshape(1, -1) + lin.bias).reshape(3, 5, 45)
    assert torch.allclose(q(x), expected, atol=1e-5)
    assert sqnr(lin(x).detach(), q(x).detach()) > 35


@pytest.mark.parametrize("m, k, n", [(1, 384, 1536), (7, 96, 45), (33, 1536, 384), (5, 3, 2)])
def test_int8_matmul_is_exact_over_the_full_int8_range(m, k, n):
    g = torch.Generator().manual_seed(m)
    x_q = torch.randint(-128, 128, (m, k), generator=g, dtype=torch.int8)
    w_q = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int8)
    w_q[0] = -128  # the extremes too
    assert torch.equal(int8_matmul(x_q, w_q), x_q.long().matmul(w_q.long().T).int())


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="oneDNN's x86 int8 kernels")
def test_int8_matmul_is_exact_where_onednn_saturates():
    """On an Intel CPU without VNNI (here imitated by capping oneDNN at AVX2) torch._int_mm saturates
    16-bit pair sums (an AMD EPYC with AVX2 only computed it exactly); whichever it does, the
    probe says so and int8_matmul stays exact. Run in a child process, because oneDNN reads its
    ISA cap once."""
    code = """
import torch
from shrinklib.quant import cpu_int_mm_is_exact, int8_matmul
g = torch.Generator().manual_seed(0)
x = torch.randint(-128, 128, (40, 384), generator=g, dtype=torch.int8)
w = torch.randint(-128, 128, (96, 384), generator=g, dtype=torch.int8)
exact = x.long().matmul(w.long().T).int()
assert cpu_int_mm_is_exact() == torch.equal(torch._int_mm(x, w.T), exact)
assert torch.equal(int8_matmul(x, w), exact)
print("ok")
"""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_int8_matmul_split_path_is_exact(monkeypatch):
    """The path taken where torch._int_mm saturates, forced on whatever CPU runs the test."""
    from shrinklib.quant import linear

    monkeypatch.setattr(linear, "cpu_int_mm_is_exact", lambda: False)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(-128, 128, (33, 200), generator=g, dtype=torch.int8)
    w = torch.full((17, 200), -128, dtype=torch.int8)  # the extremes: |w| = 128 splits into two -64s
    w[1::2] = 127
    assert torch.equal(linear.int8_matmul(x, w), x.long().matmul(w.long().T).int())


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_layers_reading_one_input_quantize_it_once(monkeypatch, mode):
    import shrinklib.quant.linear as linear_module
    calls = []
    monkeypatch.setattr(linear_module, "quantize_per_token", lambda x: calls.append(x.shape) or quantize_per_token(x))
    qkv = [QuantLinear.from_float(linear(seed=s), Int8Dynamic()) for s in range(3)]
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
    assert torch.allclose(after, QuantLinear.from_float(linear(seed=1), Int8Dynamic())(x3.clone()).detach())
    assert not torch.allclose(before, qkv[0](x3).detach())


def test_dynamic_int8_agrees_with_torch_ao_dynamic_quantization():
    lin, x = linear(384, 130), inputs(16, 384)
    ours = QuantLinear.from_float(lin, Int8Dynamic())(x).detach()
    with pytest.warns((DeprecationWarning, UserWarning)):
        theirs = torch.ao.quantization.quantize_dynamic(nn.Sequential(lin), {nn.Linear}, dtype=torch.qint8)(x).detach()
    exact = lin(x).detach()
    assert sqnr(exact, ours) > 35 and sqnr(exact, theirs) > 30
    assert sqnr(theirs, ours) > 30


def test_llm_int8_multiplies_outlier_features_in_float():
    lin, x = linear(), inputs(20, 96)
    x[:, [5, 60]] *= 30  # two outlier features, beyond the threshold of 6 in most tokens
    exact = lin(x).detach()
    decomposed = QuantLinear.from_float(lin, LLMInt8(6.0))
    plain = QuantLinear.from_float(lin, Int8Dynamic())
    assert sqnr(exact, decomposed(x).detach()) > sqnr(exact, plain(x).detach()) + 10
    # written out: int8 for the regular columns, float for the outlier ones, one int8 weight for both
    outliers = (x.abs() >= 6).any(0)
    x_q, x_scale = quantize_per_token(x.masked_fill(outliers, 0))
    w = decomposed.qweight.float() * decomposed.scale
    expected = (x_q.long() @ decomposed.qweight.long().T).float() * x_scale[:, None] * decomposed.scale.T \
        + x[:, outliers] @ w[:, outliers].T + lin.bias
    assert torch.allclose(decomposed(x), expected, atol=1e-4)
    never = QuantLinear.from_float(lin, LLMInt8(1e9))  # no feature reaches the threshold: dynamic int8
    assert torch.equal(never(x), plain(x))


@pytest.mark.parametrize("config", [WeightOnly(8), WeightOnly(4, 32, False), WeightOnly(4, 48, True),
                                    WeightOnly(4, 40, False), Int8Dynamic(), Int8Static()],
                         ids=["w8", "w4-affine", "w4-symmetric", "w4-ragged-groups", "dynamic", "static"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_kernel_path_matches_the_torch_path(config, dtype):
    """``use_kernel=True`` runs the Triton kernels (under the interpreter on a CPU) instead of torch."""
    lin, x = linear(), inputs(2, 5, 96).to(dtype)
    q = QuantLinear.from_float(lin, config)
    if isinstance(config, Int8Static):
        q.input_scale.fill_(float(x.abs().max()) / 127)
    torch_path = q(x.float()).to(dtype)  # torch on the CPU computes in fp32; the kernels take fp16 as it is
    q.use_kernel = True
    kernel_path = q(x)
    assert kernel_path.dtype == dtype
    assert torch.allclose(kernel_path.float(), torch_path.float(), atol=1e-4 if dtype == torch.float32 else 2e-2)


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


def test_bad_input():
    model = zoo.tiny_bert(vocab_size=50)
    with pytest.raises(TypeError, match="config must be one of \\['WeightOnly', 'Int8Dynamic', 'Int8Static', 'LLMInt8'\\]"):
        quantize_(model, "int8")
    odd = nn.Sequential(nn.Linear(8, 7), nn.Linear(7, 3))
    with pytest.raises(ValueError, match="4-bit levels are stored two to a byte; 1 has odd in_features"):
        quantize_(odd, WeightOnly(4), filter_fn=lambda m, fqn: isinstance(m, nn.Linear))
    assert not quant_layers(odd)  # refused before any layer changed
    with pytest.raises(ValueError, match="group_size must be a positive integer"):
        WeightOnly(4, 0)
    with pytest.raises(ValueError, match="bits must be an integer from 2 to 8"):
        WeightOnly(16)
    with pytest.raises(ValueError, match="method must be one of"):
        Int8Static("max")
    with pytest.raises(ValueError, match="threshold must be > 0"):
        LLMInt8(0)
    with pytest.raises(ValueError, match="no nn.Linear layer that filter_fn picks"):
        quantize_(model, WeightOnly(8), filter_fn=lambda m, fqn: False)
    with pytest.raises(ValueError, match="no static QuantLinear layer"):
        calibrate_(model, [{"input_ids": torch.zeros(1, 3, dtype=torch.long)}])
    with pytest.raises(ValueError, match="needs bits=8, symmetric, per channel"):
        QuantLinear(8, 8, mode="dynamic", bits=4)
    with pytest.raises(ValueError, match="in_features must be even"):
        QuantLinear.from_float(nn.Linear(7, 3), WeightOnly(4))
    with pytest.raises(TypeError, match="from_float needs an nn.Linear"):
        QuantLinear.from_float(nn.Conv1d(3, 3, 1), WeightOnly(8))
