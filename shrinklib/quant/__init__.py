"""Quantization (chapter 3): store and compute with fewer bits per number.

* :mod:`~shrinklib.quant.primitives` - uniform affine and symmetric quantization per tensor,
  channel or group; nearest and stochastic rounding; SQNR.
* :mod:`~shrinklib.quant.ranges` - calibration of the range: min-max, percentile, MSE, entropy.
* :mod:`~shrinklib.quant.clipping` - clipping search for weight grids (GPTQ's and AWQ's).
* :mod:`~shrinklib.quant.linear` - :class:`QuantLinear` and :func:`quantize_`: weight-only
  (2-8 bits), dynamic int8 and static int8 (W8A8, with :func:`calibrate_`).
* :mod:`~shrinklib.quant.embedding` - int8 / int4 embedding tables, one scale per row.
* :mod:`~shrinklib.quant.gptq` - GPTQ, weight quantization with second-order error compensation.
* :mod:`~shrinklib.quant.awq` - AWQ, activation-aware scaling before weight quantization.
* :mod:`~shrinklib.quant.smoothquant` - SmoothQuant, outliers moved from activations into weights for W8A8.
* :mod:`~shrinklib.quant.clustering` - weight sharing: k-means quantization (Deep Compression) and
  product quantization of embedding tables.
* :mod:`~shrinklib.quant.mixed_precision` - Hessian-aware bit allocation (Hutchinson traces, Q-BERT / HAWQ).
* :mod:`~shrinklib.quant.qat` - quantization-aware training: Q8BERT-style 8-bit, LSQ, ternary, binary.
"""
from shrinklib.quant.awq import awq_, awq_clip, awq_search
from shrinklib.quant.clipping import search_clip
from shrinklib.quant.gptq import gptq_, gptq_quantize
from shrinklib.quant.clustering import ClusteredLinear, PQEmbedding, cluster_, kmeans, pq_embeddings_
from shrinklib.quant.embedding import QuantEmbedding, quantize_embeddings_
from shrinklib.quant.linear import (
    MODES,
    Int8Dynamic,
    Int8Static,
    LLMInt8,
    QuantLinear,
    WeightOnly,
    calibrate_,
    cpu_int_mm_is_exact,
    int8_matmul,
    quant_layers,
    quantize_,
    quantize_per_token,
)
from shrinklib.quant.primitives import (
    ROUNDINGS,
    choose_qparams,
    dequantize,
    fake_quantize,
    fake_quantize_weight,
    group_view,
    num_groups,
    qparams_from_range,
    qrange,
    quantize,
    sqnr,
    storage_dtype,
)
from shrinklib.quant.mixed_precision import allocate_bits, hessian_traces, quantize_mixed_
from shrinklib.quant.qat import QATConfig, QATLinear, convert_qat_, qat_, qat_layers
from shrinklib.quant.smoothquant import smoothing_factors, smoothquant_
from shrinklib.quant.ranges import RANGE_METHODS, calibrate_range, entropy_range, minmax_range, mse_range, percentile_range

__all__ = [
    "ROUNDINGS", "choose_qparams", "dequantize", "fake_quantize", "fake_quantize_weight", "group_view", "num_groups", "qparams_from_range", "qrange",
    "quantize", "sqnr", "storage_dtype",
    "ClusteredLinear", "PQEmbedding", "cluster_", "kmeans", "pq_embeddings_", "QATConfig", "QATLinear", "convert_qat_", "qat_", "qat_layers", "awq_", "awq_clip", "awq_search", "search_clip", "smoothing_factors", "smoothquant_", "gptq_", "gptq_quantize", "QuantEmbedding", "quantize_embeddings_", "MODES", "Int8Dynamic", "Int8Static", "LLMInt8", "QuantLinear", "WeightOnly",
    "calibrate_", "cpu_int_mm_is_exact", "int8_matmul", "quant_layers", "quantize_",
    "quantize_per_token",
    "RANGE_METHODS", "calibrate_range", "entropy_range", "minmax_range", "mse_range", "percentile_range",
]
