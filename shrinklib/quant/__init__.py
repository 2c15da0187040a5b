"""Quantization (chapter 3): store and compute with fewer bits per number.

* :mod:`~shrinklib.quant.primitives` - uniform affine and symmetric quantization per tensor,
  channel or group; nearest and stochastic rounding; SQNR.
* :mod:`~shrinklib.quant.ranges` - calibration of the range: min-max, percentile, MSE, entropy.
* :mod:`~shrinklib.quant.clipping` - clipping search for weight grids (GPTQ's and AWQ's).
* :mod:`~shrinklib.quant.configs` - how a quantized Linear computes: :class:`WeightOnly` (2-8 bits),
  :class:`Int8Dynamic`, :class:`Int8Static` (W8A8), :class:`LLMInt8`.
* :mod:`~shrinklib.quant.linear` - :class:`QuantLinear` and :func:`quantize_`, one dispatch table
  keyed by the config's class.
* :mod:`~shrinklib.quant.static` - :func:`calibrate_`: the input scales of static int8 layers.
* :mod:`~shrinklib.quant.int_mm` - exact int8 x int8 -> int32 products on any CPU.
* :mod:`~shrinklib.quant.embedding` - int8 / int4 embedding tables, one scale per row.
* :mod:`~shrinklib.quant.gptq` - GPTQ, weight quantization with second-order error compensation.
* :mod:`~shrinklib.quant.awq` - AWQ, activation-aware scaling before weight quantization.
* :mod:`~shrinklib.quant.smoothquant` - SmoothQuant, outliers moved from activations into weights for W8A8.
* :mod:`~shrinklib.quant.clustering` - weight sharing: k-means quantization (Deep Compression) and
  product quantization of embedding tables.
* :mod:`~shrinklib.quant.mixed_precision` - Hessian-aware bit allocation (Hutchinson traces, Q-BERT / HAWQ).
* :mod:`~shrinklib.quant.qat` - quantization-aware training: Q8BERT-style 8-bit, LSQ, ternary, binary.
"""
from shrinklib.kernels.int8_int8 import quantize_per_token
from shrinklib.quant.awq import awq_, awq_clip, awq_search
from shrinklib.quant.clipping import search_clip
from shrinklib.quant.clustering import ClusterConfig, ClusteredLinear, PQConfig, PQEmbedding, cluster_, kmeans, pq_embeddings_
from shrinklib.quant.configs import Int8Dynamic, Int8Static, LLMInt8, WeightOnly
from shrinklib.quant.embedding import EmbeddingConfig, QuantEmbedding, quantize_embeddings_
from shrinklib.quant.gptq import gptq_, gptq_quantize
from shrinklib.quant.int_mm import cpu_has_vnni, cpu_int8_is_fast, cpu_int_mm_is_exact, int8_matmul
from shrinklib.quant.linear import (
    QuantLinear,
    SharedInputQuantization,
    quant_layers,
    quantize_,
    share_input_quantization_,
)
from shrinklib.quant.mixed_precision import MixedPrecision, allocate_bits, hessian_traces, quantize_mixed_
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
from shrinklib.quant.qat import QATConfig, QATLinear, convert_qat_, qat_, qat_layers
from shrinklib.quant.ranges import RANGE_METHODS, calibrate_range, entropy_range, minmax_range, mse_range, percentile_range
from shrinklib.quant.smoothquant import smoothing_factors, smoothquant_
from shrinklib.quant.static import calibrate_

__all__ = [
    "ROUNDINGS", "choose_qparams", "dequantize", "fake_quantize", "fake_quantize_weight", "group_view", "num_groups",
    "qparams_from_range", "qrange", "quantize", "sqnr", "storage_dtype",
    "RANGE_METHODS", "calibrate_range", "entropy_range", "minmax_range", "mse_range", "percentile_range",
    "search_clip",
    "WeightOnly", "Int8Dynamic", "Int8Static", "LLMInt8",
    "QuantLinear", "SharedInputQuantization", "quant_layers", "quantize_", "quantize_per_token",
    "share_input_quantization_", "calibrate_", "cpu_has_vnni", "cpu_int8_is_fast", "cpu_int_mm_is_exact", "int8_matmul",
    "EmbeddingConfig", "QuantEmbedding", "quantize_embeddings_",
    "ClusterConfig", "ClusteredLinear", "PQConfig", "PQEmbedding", "cluster_", "kmeans", "pq_embeddings_",
    "MixedPrecision", "allocate_bits", "hessian_traces", "quantize_mixed_",
    "QATConfig", "QATLinear", "convert_qat_", "qat_", "qat_layers",
    "gptq_", "gptq_quantize", "awq_", "awq_clip", "awq_search", "smoothing_factors", "smoothquant_",
]
