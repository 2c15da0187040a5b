"""Every public function of shrinklib.quant refuses a wrong argument with a message that names it.

One table for the family: a string or an int where a model, a list of batches, a mapping
or a config belongs is a ``TypeError`` naming the argument (never ``AttributeError`` or
"'int' object is not iterable"); a float option that is nan, infinite or out of range is
a ``ValueError``. Every call given a model is made inside ``unchanged``: a refused call
leaves the model bit-identical. A weight or an input that no grid can cover, met in a
later layer, is refused before the first layer changes.
"""
import math

import numpy as np
import pytest
import torch
from torch import nn

from shrinklib import zoo
from shrinklib.calibration import InputStats
from shrinklib.quant import (
    ClusterConfig,
    ClusteredLinear,
    EmbeddingConfig,
    Int8Dynamic,
    Int8Static,
    LLMInt8,
    MixedPrecision,
    PQConfig,
    PQEmbedding,
    QATConfig,
    QATLinear,
    QuantEmbedding,
    QuantLinear,
    WeightOnly,
    allocate_bits,
    awq_,
    awq_clip,
    awq_search,
    calibrate_,
    calibrate_range,
    choose_qparams,
    cluster_,
    convert_qat_,
    dequantize,
    entropy_range,
    gptq_,
    gptq_quantize,
    group_view,
    hessian_traces,
    int8_matmul,
    kmeans,
    mse_range,
    num_groups,
    percentile_range,
    pq_embeddings_,
    qat_,
    qat_layers,
    qparams_from_range,
    qrange,
    quant_layers,
    quantize,
    quantize_,
    quantize_embeddings_,
    quantize_mixed_,
    search_clip,
    share_input_quantization_,
    smoothing_factors,
    smoothquant_,
    sqnr,
)

from .conftest import Stack, stack_batches

MODEL = "model must be a torch.nn.Module, got"
BATCHES = "batches must be an iterable"


def bert():
    return zoo.tiny_bert(vocab_size=300)


def static_stack():
    return quantize_(Stack(), Int8Static())


def qat_stack():
    return qat_(Stack())


def traced(model, batch_x):
    """A batch with labels for hessian_traces' default loss."""
    return [{"x": batch_x, "labels": torch.zeros(len(batch_x), dtype=torch.long)}]


# (id, the model to keep unchanged, the call, error, message)
CALLS = [
    ("quantize_ model", Stack, lambda m: quantize_("bert-base-uncased"), TypeError, MODEL + " str"),
    ("quantize_ config", Stack, lambda m: quantize_(m, "int8"), TypeError, "config must be one of"),
    ("quantize_ filter_fn", Stack, lambda m: quantize_(m, filter_fn="query"), TypeError, "filter_fn must be callable"),
    ("share_input_quantization_ model", Stack, lambda m: share_input_quantization_(3), TypeError, MODEL + " int"),
    ("quant_layers model", Stack, lambda m: quant_layers("model"), TypeError, MODEL + " str"),
    ("calibrate_ model", static_stack, lambda m: calibrate_([m], stack_batches()), TypeError, MODEL + " list"),
    ("calibrate_ batches int", static_stack, lambda m: calibrate_(m, 3), TypeError, BATCHES + ".*got int"),
    ("calibrate_ batches str", static_stack, lambda m: calibrate_(m, "some text"), TypeError, BATCHES + ".*got str"),
    ("calibrate_ config", static_stack, lambda m: calibrate_(m, stack_batches(), WeightOnly()), TypeError,
     "config must be an Int8Static or None, got WeightOnly"),
    ("calibrate_ max_batches", static_stack, lambda m: calibrate_(m, stack_batches(), max_batches="1"), ValueError,
     "max_batches must be an int >= 1, got '1'"),
    ("gptq_ model", Stack, lambda m: gptq_("model", stack_batches()), TypeError, MODEL + " str"),
    ("gptq_ batches int", Stack, lambda m: gptq_(m, 8), TypeError, BATCHES + ".*got int"),
    ("gptq_ batches str", Stack, lambda m: gptq_(m, "text"), TypeError, BATCHES + ".*got str"),
    ("gptq_ config", Stack, lambda m: gptq_(m, stack_batches(), Int8Dynamic()), TypeError,
     "GPTQ quantizes weights only: config must be a WeightOnly, got Int8Dynamic"),
    ("gptq_ blocksize", Stack, lambda m: gptq_(m, stack_batches(), WeightOnly(4, 8), blocksize=0.5), ValueError,
     "blocksize must be >= 1, got 0.5"),
    ("gptq_ sequential", Stack, lambda m: gptq_(m, stack_batches(), WeightOnly(4, 8), sequential=1), TypeError,
     "sequential must be True or False, got 1"),
    ("gptq_ clip", Stack, lambda m: gptq_(m, stack_batches(), WeightOnly(4, 8), clip="no"), TypeError,
     "clip must be True or False"),
    ("gptq_ max_batches", Stack, lambda m: gptq_(m, stack_batches(), WeightOnly(4, 8), max_batches=0), ValueError,
     "max_batches must be an int >= 1, got 0"),
    ("awq_ model", Stack, lambda m: awq_(None, stack_batches()), TypeError, MODEL + " NoneType"),
    ("awq_ batches", Stack, lambda m: awq_(m, 3), TypeError, BATCHES + ".*got int"),
    ("awq_ config", Stack, lambda m: awq_(m, stack_batches(), LLMInt8()), TypeError,
     "AWQ quantizes weights only: config must be a WeightOnly, got LLMInt8"),
    ("awq_ grid", Stack, lambda m: awq_(m, stack_batches(), WeightOnly(4, 8), grid=2.5), ValueError,
     "grid must be >= 1, got 2.5"),
    ("awq_ clip", Stack, lambda m: awq_(m, stack_batches(), WeightOnly(4, 8), clip=1), TypeError,
     "clip must be True or False, got 1"),
    ("smoothquant_ model", Stack, lambda m: smoothquant_("model", stack_batches()), TypeError, MODEL + " str"),
    ("smoothquant_ batches", Stack, lambda m: smoothquant_(m, None), TypeError, BATCHES + ".*got NoneType"),
    ("smoothquant_ config", Stack, lambda m: smoothquant_(m, stack_batches(), "int8"), TypeError,
     "config must be Int8Dynamic or Int8Static, got str"),
    ("smoothquant_ alpha", Stack, lambda m: smoothquant_(m, stack_batches(), alpha=math.inf), ValueError,
     "alpha must be in \\[0, 1\\], got inf"),
    ("quantize_embeddings_ model", bert, lambda m: quantize_embeddings_("bert"), TypeError, MODEL + " str"),
    ("quantize_embeddings_ config", bert, lambda m: quantize_embeddings_(m, {"bits": 8}), TypeError,
     "config must be an EmbeddingConfig, got dict"),
    ("cluster_ model", Stack, lambda m: cluster_(1.5), TypeError, MODEL + " float"),
    ("cluster_ config", Stack, lambda m: cluster_(m, {"bits": 4}), TypeError, "config must be a ClusterConfig, got dict"),
    ("pq_embeddings_ model", bert, lambda m: pq_embeddings_("bert"), TypeError, MODEL + " str"),
    ("pq_embeddings_ config", bert, lambda m: pq_embeddings_(m, ClusterConfig()), TypeError,
     "config must be a PQConfig, got ClusterConfig"),
    ("quantize_mixed_ model", Stack, lambda m: quantize_mixed_("m", MixedPrecision({"layers.0.linear": 4})),
     TypeError, MODEL + " str"),
    ("quantize_mixed_ config", Stack, lambda m: quantize_mixed_(m, {"layers.0.linear": 4}), TypeError,
     "config must be a MixedPrecision, got dict"),
    ("hessian_traces model", Stack, lambda m: hessian_traces("model", []), TypeError, MODEL + " str"),
    ("hessian_traces batches", Stack, lambda m: hessian_traces(m, 3), TypeError, BATCHES + ".*got int"),
    ("hessian_traces batch", Stack, lambda m: hessian_traces(m, [(torch.ones(2, 16), torch.zeros(2))]), TypeError,
     "batch must be a mapping \\(a dict\\), got tuple"),
    ("hessian_traces samples", Stack, lambda m: hessian_traces(m, [], samples=0), ValueError,
     "samples must be >= 1, got 0"),
    ("hessian_traces seed", Stack, lambda m: hessian_traces(m, [], seed=-1), ValueError,
     "seed must be a non-negative int, got -1"),
    ("hessian_traces loss_fn", Stack, lambda m: hessian_traces(m, [], loss_fn="mse"), TypeError,
     "loss_fn must be callable"),
    ("qat_ model", Stack, lambda m: qat_("model"), TypeError, MODEL + " str"),
    ("qat_ config", Stack, lambda m: qat_(m, "lsq"), TypeError, "config must be a QATConfig, got str"),
    ("convert_qat_ model", qat_stack, lambda m: convert_qat_(0), TypeError, MODEL + " int"),
    ("qat_layers model", qat_stack, lambda m: qat_layers("model"), TypeError, MODEL + " str"),
]


@pytest.mark.parametrize("make_model, call, error, message", [row[1:] for row in CALLS], ids=[row[0] for row in CALLS])
def test_a_wrong_argument_is_named_and_the_model_is_unchanged(make_model, call, error, message, unchanged):
    model = make_model()
    with unchanged(model):
        with pytest.raises(error, match=message):
            call(model)


def _with_nan_weight(model, fqn):
    with torch.no_grad():
        model.get_submodule(fqn).weight[0, 0] = math.nan
    return model


# a later layer (the last) that no grid can take: the transform must refuse it before touching the first
LATE_FAILURES = [
    ("quantize_", lambda: _with_nan_weight(Stack(), "layers.2.linear"), lambda m: quantize_(m, WeightOnly(4, 8)),
     "layers.2.linear.weight holds inf or nan"),
    ("quantize_mixed_", lambda: _with_nan_weight(Stack(), "layers.2.linear"),
     lambda m: quantize_mixed_(m, MixedPrecision({f"layers.{i}.linear": 4 for i in range(3)}, group_size=8)),
     "layers.2.linear.weight holds inf or nan"),
    ("gptq_", lambda: _with_nan_weight(Stack(), "layers.2.linear"), lambda m: gptq_(m, stack_batches(), WeightOnly(4, 8)),
     "layers.2.linear.weight holds inf or nan"),
    ("awq_ weight", lambda: _with_nan_weight(Stack(), "layers.2.linear"),
     lambda m: awq_(m, stack_batches(), WeightOnly(4, 8)), "layers.2.linear.weight holds inf or nan"),
    ("awq_ inputs", lambda: Stack(broken_at=0), lambda m: awq_(m, stack_batches(), WeightOnly(4, 8), grid=2),
     "the inputs of layers.1.linear hold inf or nan"),
    ("smoothquant_", lambda: _with_nan_weight(Stack(), "layers.2.linear"),
     lambda m: smoothquant_(m, stack_batches()), "layers.2.linear.weight holds inf or nan"),
    ("cluster_", lambda: _with_nan_weight(Stack(), "layers.2.linear"), lambda m: cluster_(m, ClusterConfig(iters=2)),
     "points hold inf or nan"),
    ("quantize_embeddings_", lambda: _with_nan_weight(bert(), "bert.embeddings.token_type_embeddings"),
     lambda m: quantize_embeddings_(m), "inf or nan"),
    ("pq_embeddings_", lambda: _with_nan_weight(bert(), "bert.embeddings.position_embeddings"),
     lambda m: pq_embeddings_(m, PQConfig(subvectors=4, centroids=16, iters=2)), "points hold inf or nan"),
    ("convert_qat_", lambda: _with_nan_weight(qat_stack(), "layers.2.linear"), convert_qat_,
     "layers.2.linear.weight holds inf or nan"),
]


@pytest.mark.parametrize("make_model, call, message", [row[1:] for row in LATE_FAILURES],
                         ids=[row[0] for row in LATE_FAILURES])
def test_a_later_layer_no_grid_can_take_is_refused_before_the_first_changes(make_model, call, message, unchanged):
    model = make_model()
    with unchanged(model):
        with pytest.raises(ValueError, match=message):
            call(model)


W = torch.randn(6, 16, generator=torch.Generator().manual_seed(0))
GRAM = W.T.double() @ W.double() + torch.eye(16, dtype=torch.float64)
STATS = InputStats(torch.ones(16), GRAM, 6, torch.ones(16), torch.ones(16))

PURE = [
    ("allocate_bits traces", lambda: allocate_bits([("a", 1.0)], {"a": W}, 4), TypeError,
     "traces must be a mapping \\(a dict\\), got list"),
    ("allocate_bits weights", lambda: allocate_bits({"a": 1.0}, "W", 4), TypeError, "weights must be a mapping"),
    ("allocate_bits a weight", lambda: allocate_bits({"a": 1.0}, {"a": [1.0]}, 4), TypeError,
     "weights\\['a'\\] must be a torch.Tensor"),
    ("allocate_bits choices", lambda: allocate_bits({"a": 1.0}, {"a": W}, 4, choices=4), TypeError,
     "choices must be an iterable of bit widths, got int"),
    ("kmeans points", lambda: kmeans([[1.0, 2.0]], 1), TypeError, "points must be a torch.Tensor, got list"),
    ("kmeans centroids", lambda: kmeans(W, True), TypeError, "centroids must be a count \\(an int\\) or a \\(k, d\\)"),
    ("kmeans seed", lambda: kmeans(W, 2, seed=-1), ValueError, "seed must be a non-negative int"),
    ("kmeans chunk", lambda: kmeans(W, 2, chunk=0), ValueError, "chunk must be an int >= 1"),
    ("smoothing_factors act_absmax", lambda: smoothing_factors([1.0] * 16, W), TypeError,
     "act_absmax must be a torch.Tensor"),
    ("awq_search stats", lambda: awq_search(W, {"gram": GRAM}, WeightOnly(4, 8)), TypeError,
     "stats must be a shrinklib.calibration.InputStats, got dict"),
    ("awq_search config", lambda: awq_search(W, STATS, "int4"), TypeError, "AWQ quantizes weights only"),
    ("awq_search grid", lambda: awq_search(W, STATS, WeightOnly(4, 8), grid=0), ValueError, "grid must be >= 1, got 0"),
    ("awq_clip s", lambda: awq_clip(W, [1.0] * 16, GRAM, WeightOnly(4, 8)), TypeError, "s must be a torch.Tensor"),
    ("gptq_quantize gram", lambda: gptq_quantize(W, GRAM.tolist()), TypeError, "gram must be a torch.Tensor, got list"),
    ("gptq_quantize weight", lambda: gptq_quantize(W.numpy(), GRAM), TypeError, "weight must be a torch.Tensor"),
    ("search_clip weight", lambda: search_clip(W.tolist(), 4), TypeError, "weight must be a torch.Tensor, got list"),
    ("dequantize q", lambda: dequantize([1, 2], torch.tensor(1.0), torch.tensor(0)), TypeError,
     "q must be a torch.Tensor"),
    ("quantize scale", lambda: quantize(W, 0.1, torch.tensor(0)), TypeError, "scale must be a torch.Tensor, got float"),
    ("quantize generator", lambda: quantize(W, *choose_qparams(W), rounding="stochastic", generator=0), TypeError,
     "generator must be a torch.Generator"),
    ("choose_qparams axis", lambda: choose_qparams(W, axis=0.5), ValueError, "axis must be an int, got 0.5"),
    ("sqnr x", lambda: sqnr([1.0], torch.ones(1)), TypeError, "x must be a torch.Tensor, got list"),
    ("group_view x", lambda: group_view([1.0, 2.0], 2), TypeError, "x must be a torch.Tensor, got list"),
    ("num_groups width", lambda: num_groups("16", 4), ValueError, "width must be an int >= 0, got '16'"),
    ("qrange symmetric", lambda: qrange(4, "yes"), TypeError, "symmetric must be True or False, got 'yes'"),
    ("int8_matmul x_q", lambda: int8_matmul(np.zeros((2, 2), dtype=np.int8), torch.zeros(2, 2, dtype=torch.int8)),
     TypeError, "x_q must be a torch.Tensor, got ndarray"),
    ("calibrate_range method", lambda: calibrate_range(W, "max"), ValueError, "method must be one of"),
    ("calibrate_range symmetric", lambda: calibrate_range(W, symmetric=1), TypeError, "symmetric must be True or False"),
    ("mse_range grid", lambda: mse_range(W, grid=2.5), ValueError, "grid must be >= 1, got 2.5"),
    ("entropy_range bins", lambda: entropy_range(W, bins=300.5), ValueError, "bins must be >= 128"),
    ("QuantLinear in_features", lambda: QuantLinear(8.0, 4), ValueError, "in_features must be an int >= 1, got 8.0"),
    ("QuantLinear bias", lambda: QuantLinear(8, 4, bias="yes"), TypeError, "bias must be True or False"),
    ("QuantLinear smoothing", lambda: QuantLinear.from_linear(nn.Linear(16, 4), smoothing=[1.0] * 16), TypeError,
     "smoothing must be a torch.Tensor, got list"),
    ("QuantEmbedding padding_idx", lambda: QuantEmbedding(10, 4, padding_idx=10), ValueError,
     "padding_idx must be an int from -10 to 9, got 10"),
    ("PQEmbedding num_embeddings", lambda: PQEmbedding(0, 8), ValueError, "num_embeddings must be an int >= 1, got 0"),
    ("ClusteredLinear bias", lambda: ClusteredLinear(8, 4, bias=1), TypeError, "bias must be True or False, got 1"),
    ("QATLinear out_features", lambda: QATLinear(8, 0), ValueError, "out_features must be an int >= 1, got 0"),
    ("QATLinear.from_linear config", lambda: QATLinear.from_linear(nn.Linear(8, 4), "lsq"), TypeError,
     "config must be a QATConfig, got str"),
    ("WeightOnly symmetric", lambda: WeightOnly(4, symmetric="yes"), TypeError, "symmetric must be True or False"),
    ("EmbeddingConfig bits", lambda: EmbeddingConfig(8.0), ValueError, "bits must be an integer from 2 to 8"),
    ("QATConfig activation_bits", lambda: QATConfig("lsq", 4, 4.0), ValueError, "bits must be an integer from 2 to 8"),
]


@pytest.mark.parametrize("call, error, message", [row[1:] for row in PURE], ids=[row[0] for row in PURE])
def test_a_wrong_argument_of_a_function_or_class_is_named(call, error, message):
    with pytest.raises(error, match=message):
        call()


NOT_FINITE = [math.nan, math.inf, -math.inf]
FLOATS = [
    ("Int8Static percentile", lambda v: Int8Static("percentile", v), "percentile must be in \\(50, 100\\]"),
    ("LLMInt8 threshold", lambda v: LLMInt8(v), "threshold must be > 0"),
    ("percentile_range", lambda v: percentile_range(W, v), "percentile must be in \\(50, 100\\]"),
    ("calibrate_range percentile", lambda v: calibrate_range(W, "percentile", percentile=v),
     "percentile must be in \\(50, 100\\]"),
    ("search_clip max_shrink", lambda v: search_clip(W, 4, max_shrink=v), "max_shrink must be in \\[0, 1\\)"),
    ("search_clip norm", lambda v: search_clip(W, 4, norm=v), "norm must be > 0"),
    ("awq_clip max_shrink", lambda v: awq_clip(W, torch.ones(16), GRAM, WeightOnly(4, 8), max_shrink=v),
     "max_shrink must be in \\[0, 1\\)"),
    ("gptq_quantize percdamp", lambda v: gptq_quantize(W, GRAM, percdamp=v), "percdamp must be >= 0"),
    ("smoothing_factors alpha", lambda v: smoothing_factors(torch.ones(16), W, alpha=v), "alpha must be in \\[0, 1\\]"),
    ("allocate_bits average_bits", lambda v: allocate_bits({"a": 1.0}, {"a": W}, v),
     "average_bits must be a finite number"),
    ("allocate_bits a trace", lambda v: allocate_bits({"a": v}, {"a": W}, 4), "traces\\['a'\\] must be a finite number"),
    ("qparams_from_range lo", lambda v: qparams_from_range(v, 1.0), "a quantization range needs finite lo and hi"),
    ("kmeans points", lambda v: kmeans(torch.full((4, 2), v), 2), "points hold inf or nan"),
]


@pytest.mark.parametrize("value", NOT_FINITE)
@pytest.mark.parametrize("call, message", [row[1:] for row in FLOATS], ids=[row[0] for row in FLOATS])
def test_a_float_option_that_is_not_finite_is_refused(call, message, value):
    with pytest.raises(ValueError, match=message):
        call(value)


@pytest.mark.parametrize("call, message", [
    (lambda: Int8Static("percentile", 150), "percentile must be in \\(50, 100\\], got 150"),
    (lambda: LLMInt8(-1.0), "threshold must be > 0, got -1.0"),
    (lambda: search_clip(W, 4, max_shrink=1.0), "max_shrink must be in \\[0, 1\\), got 1.0"),
    (lambda: smoothing_factors(torch.ones(16), W, alpha=1.01), "alpha must be in \\[0, 1\\], got 1.01"),
    (lambda: gptq_quantize(W, GRAM, percdamp=-0.1), "percdamp must be >= 0, got -0.1"),
])
def test_a_float_option_out_of_range_is_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("traces, weights, options, message", [
    ({}, {}, {}, "traces and weights name no layer: there is nothing to allocate bits to"),
    ({"a": 1.0}, {"a": W}, {"choices": ()}, "choices must name at least one bit width"),
    ({"a": 1.0}, {"a": torch.empty(0, 16)}, {}, "weights\\['a'\\] is empty"),
])
def test_bit_allocation_with_nothing_to_allocate_is_an_error_not_a_division_by_zero(traces, weights, options, message):
    with pytest.raises(ValueError, match=message):
        allocate_bits(traces, weights, 4, **options)
