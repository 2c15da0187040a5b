"""Quantization (chapter 3): store and compute with fewer bits per number.

* :mod:`~shrinklib.quant.primitives` - uniform affine and symmetric quantization per tensor,
  channel or group; nearest and stochastic rounding; SQNR.
* :mod:`~shrinklib.quant.ranges` - calibration of the range: min-max, percentile, MSE, entropy.
"""
from shrinklib.quant.primitives import (
    ROUNDINGS,
    choose_qparams,
    dequantize,
    fake_quantize,
    group_view,
    qparams_from_range,
    qrange,
    quantize,
    sqnr,
    storage_dtype,
)
from shrinklib.quant.ranges import RANGE_METHODS, calibrate_range, entropy_range, minmax_range, mse_range, percentile_range

__all__ = [
    "ROUNDINGS", "choose_qparams", "dequantize", "fake_quantize", "group_view", "qparams_from_range", "qrange",
    "quantize", "sqnr", "storage_dtype",
    "RANGE_METHODS", "calibrate_range", "entropy_range", "minmax_range", "mse_range", "percentile_range",
]
