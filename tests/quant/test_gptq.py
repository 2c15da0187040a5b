import math

import pytest
import torch

import shrinklib
import shrinklib.quant.gptq
from shrinklib import zoo
from shrinklib.quant import QuantLinear, WeightOnly, choose_qparams, dequantize, fake_quantize_weight, quant_layers, quantize
from shrinklib.quant.clipping import search_clip
from shrinklib.quant.gptq import gptq_, gptq_quantize

from .conftest import Stack, stack_batches


def problem(seed=0, tokens=512, n_in=64, n_out=24):
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-1, 1, n_in)[torch.randperm(n_in, generator=g)]  # some features far louder
    mixing = torch.randn(n_in, n_in, generator=g, dtype=torch.float64) * 0.3 + torch.eye(n_in, dtype=torch.float64)
    X = (torch.randn(tokens, n_in, generator=g, dtype=torch.float64) @ mixing) * scales.double()  # correlated
    W = torch.randn(n_out, n_in, generator=g, dtype=torch.float64)
    return X, W


def output_error(X, W, W_hat):
    return float((X @ W.T - X @ W_hat.T).pow(2).sum())


def rtn(W, bits, group_size, symmetric):
    return fake_quantize_weight(W.float(), bits, symmetric, group_size=group_size).double()


@pytest.mark.parametrize("bits, group_size, symmetric", [(4, 16, False), (3, None, True), (4, 32, True),
                                                          (4, 24, False)])  # 64 = 24 + 24 + 16
def test_gptq_reconstructs_the_layer_output_better_than_rounding(bits, group_size, symmetric):
    X, W = problem()
    levels, scale, zero_point = gptq_quantize(W, X.T @ X, bits, group_size=group_size, symmetric=symmetric,
                                              blocksize=24)
    W_hat = dequantize(levels, scale, zero_point, group_size=group_size).double()
    assert output_error(X, W, W_hat) < 0.7 * output_error(X, W, rtn(W, bits, group_size, symmetric))
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2 ** bits - 1)
    assert lo <= int(levels.min()) and int(levels.max()) <= hi


def test_with_uncorrelated_unit_inputs_gptq_is_round_to_nearest():
    """H = I: no error can be compensated by another column, so GPTQ rounds each weight to nearest."""
    _, W = problem()
    levels, scale, zero_point = gptq_quantize(W, torch.eye(64, dtype=torch.float64), 4, group_size=16, percdamp=0.0)
    assert torch.equal(dequantize(levels, scale, zero_point, group_size=16).double(), rtn(W, 4, 16, False))


@pytest.mark.parametrize("group_size", [None, 16, 24])
def test_act_order_and_clipping_lower_the_error_further(group_size):
    X, W = problem(seed=1)
    errors = {}
    for act_order in (False, True):
        for clip in (False, True):
            q = gptq_quantize(W, X.T @ X, 3, group_size=group_size, act_order=act_order, clip=clip, blocksize=24)
            errors[act_order, clip] = output_error(X, W, dequantize(*q, group_size=group_size).double())
    assert errors[True, False] < errors[False, False]
    assert errors[True, True] < errors[False, False]
    assert errors[False, True] < errors[False, False]


@pytest.mark.parametrize("clip", [False, True])
def test_with_uncorrelated_inputs_act_order_is_round_to_nearest_on_static_groups(clip):
    """A diagonal H in any order: nothing to compensate, and the groups keep their columns."""
    _, W = problem()
    loud = torch.diag(torch.logspace(2, -2, 64, dtype=torch.float64)[torch.randperm(64)])  # a real permutation
    levels, scale, zero_point = gptq_quantize(W, loud, 4, group_size=24, percdamp=0.0, act_order=True, clip=clip)
    if clip:
        expected_scale, expected_zero = search_clip(W.float(), 4, False, group_size=24)
    else:
        expected_scale, expected_zero = choose_qparams(W.float(), 4, False, group_size=24)
    assert torch.equal(scale, expected_scale) and torch.equal(zero_point, expected_zero)
    assert torch.equal(levels.int(), quantize(W.float(), scale, zero_point, 4, False, group_size=24).int())


@pytest.mark.parametrize("sequential", [False, True])
def test_gptq_on_a_decoder_gives_quant_layers_that_round_trip(sequential, tmp_path):
    model = zoo.tiny_llama()
    blocks = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(0))
    batches = [{"input_ids": blocks[i:i + 4]} for i in range(0, 8, 4)]
    reference = zoo.tiny_llama()
    gptq_(model, batches, WeightOnly(4, 16), sequential=sequential)
    layers = quant_layers(model)
    assert len(layers) == 2 * 7 and all(q.bits == 4 for q in layers)  # q, k, v, o, gate, up, down per layer
    assert not isinstance(model.lm_head, QuantLinear)
    ids = blocks[:2]
    logits, expected = model(input_ids=ids).logits, reference(input_ids=ids).logits
    assert torch.corrcoef(torch.stack([logits.flatten(), expected.flatten()]))[0, 1] > 0.9
    shrinklib.save(model, tmp_path)
    assert torch.equal(shrinklib.load(tmp_path)(input_ids=ids).logits, logits)


def test_bad_input():
    X, W = problem()
    with pytest.raises(ValueError, match="gram must be \\(64, 64\\)"):
        gptq_quantize(W, torch.eye(3), 4)
    with pytest.raises(ValueError, match="group_size must be a positive integer"):
        gptq_quantize(W, X.T @ X, 4, group_size=0)
    with pytest.raises(ValueError, match="bits must be an integer from 2 to 8"):
        gptq_quantize(W, X.T @ X, 1)
    with pytest.raises(TypeError, match="config must be a WeightOnly"):
        gptq_(zoo.tiny_llama(), [], "int4")
    with pytest.raises(ValueError, match="no calibration batch"):
        gptq_(zoo.tiny_llama(), [], WeightOnly(4, 16))
    with pytest.raises(ValueError, match="weight must be \\(out, in\\)"):
        gptq_quantize(W[0], X.T @ X, 4)
    with pytest.raises(ValueError, match="gram holds inf or nan"):
        gptq_quantize(W, torch.full((64, 64), math.nan), 4)
    with pytest.raises(ValueError, match="gram is not positive definite with percdamp=0.0"):
        gptq_quantize(W, torch.ones(64, 64, dtype=torch.float64), 4, percdamp=0.0)
    with pytest.raises(ValueError, match="blocksize must be >= 1, got 0"):
        gptq_quantize(W, X.T @ X, 4, blocksize=0)
    with pytest.raises(TypeError, match="act_order must be True or False, got 'yes'"):
        gptq_quantize(W, X.T @ X, 4, act_order="yes")


@pytest.mark.parametrize("percdamp", [math.nan, math.inf, -0.01, "0.01", True])
def test_the_damping_is_a_finite_number_at_least_zero(percdamp, unchanged):
    X, W = problem()
    with pytest.raises(ValueError, match="percdamp must be >= 0, got"):
        gptq_quantize(W, X.T @ X, 4, percdamp=percdamp)
    model = Stack()
    with unchanged(model):
        with pytest.raises(ValueError, match="percdamp must be >= 0, got"):
            gptq_(model, stack_batches(), WeightOnly(4, 8), percdamp=percdamp)


@pytest.mark.parametrize("sequential", [False, True])
@pytest.mark.parametrize("breaks, percdamp, message", [
    ("rank_one", 0.0, "GPTQ cannot quantize layers.1.linear: gram is not positive definite"),
    ("nan", 0.01, "GPTQ cannot quantize layers.1.linear: gram holds inf or nan"),
])
def test_a_later_layer_that_cannot_be_quantized_leaves_the_model_unchanged(sequential, breaks, percdamp, message,
                                                                            unchanged):
    """The first layer is quantized (and, sequentially, computes with its new weight) before the
    second layer's Gram matrix turns out singular or nan: the first must get its float weight back."""
    model = Stack(broken_at=0, breaks=breaks)
    with unchanged(model):
        with pytest.raises(ValueError, match=message):
            gptq_(model, stack_batches(), WeightOnly(4, 8), sequential=sequential, percdamp=percdamp)
    assert not quant_layers(model)
    healthy = Stack()  # the same model without the break is quantized whole with the same options
    gptq_(healthy, stack_batches(), WeightOnly(4, 8), sequential=sequential, percdamp=percdamp)
    assert len(quant_layers(healthy)) == 3


@pytest.mark.parametrize("sequential", [False, True])
def test_a_cholesky_failure_deep_in_a_decoder_leaves_it_unchanged(sequential, monkeypatch, unchanged):
    """The fifth layer's Hessian cannot be factored (as if singular): four layers of a Llama were done before it."""
    calls, inverse = [], shrinklib.quant.gptq.inverse_hessian_cholesky

    def fifth_fails(gram, percdamp):
        calls.append(gram)
        if len(calls) == 5:
            raise torch.linalg.LinAlgError("linalg.cholesky: the input is not positive-definite")
        return inverse(gram, percdamp)

    monkeypatch.setattr(shrinklib.quant.gptq, "inverse_hessian_cholesky", fifth_fails)
    model = zoo.tiny_llama()
    blocks = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(0))
    with unchanged(model):
        with pytest.raises(ValueError, match="GPTQ cannot quantize model.layers.0.mlp.gate_proj: gram is not "
                                             "positive definite"):
            gptq_(model, [{"input_ids": blocks[i:i + 4]} for i in range(0, 8, 4)], WeightOnly(4, 16),
                  sequential=sequential)
    assert len(calls) == 5


def test_a_failed_sequential_run_keeps_a_layers_own_parametrization(unchanged):
    """GPTQ's provisional weight is stacked on the layer's own parametrization and only it is removed."""
    class Doubled(torch.nn.Module):
        def forward(self, weight):
            return 2 * weight

    model = Stack(broken_at=1)
    torch.nn.utils.parametrize.register_parametrization(model.layers[0].linear, "weight", Doubled())
    with unchanged(model):
        with pytest.raises(ValueError, match="GPTQ cannot quantize layers.2.linear: gram holds inf or nan"):
            gptq_(model, stack_batches(), WeightOnly(4, 8), sequential=True)
    assert isinstance(model.layers[0].linear.parametrizations.weight[0], Doubled)
    assert len(model.layers[0].linear.parametrizations.weight) == 1
