"""The four ways a :class:`~shrinklib.quant.linear.QuantLinear` can compute, as frozen, validated configs.

* :class:`WeightOnly`: integer weights, float activations;
* :class:`Int8Dynamic`: int8 weights and int8 activations per token, scaled at run time
  (Zafrir et al., 2019, "Q8BERT: Quantized 8Bit BERT");
* :class:`Int8Static`: int8 weights and int8 activations on one calibrated scale per
  layer (Jacob et al., 2018, "Quantization and Training of Neural Networks for Efficient
  Integer-Arithmetic-Only Inference");
* :class:`LLMInt8`: dynamic int8 with the outlier features in floating point
  (Dettmers et al., 2022).

What each means to a layer is :data:`shrinklib.quant.linear.SCHEMES`.
"""
from __future__ import annotations

from dataclasses import dataclass

from shrinklib._checks import check_bool, check_choice, check_number
from shrinklib.quant.primitives import check_bits, check_group_size
from shrinklib.quant.ranges import RANGE_METHODS, check_percentile


@dataclass(frozen=True)
class WeightOnly:
    """Integer weights (``bits``), one scale per output channel or per ``group_size`` inputs.

    ``bits`` is an int from 2 to 8, ``group_size`` an int >= 1 or ``None``, ``symmetric`` a bool.
    """

    bits: int = 8
    group_size: int | None = None
    symmetric: bool = True

    def __post_init__(self):
        check_bits(self.bits)
        if self.group_size is not None:
            check_group_size(self.group_size)
        check_bool("symmetric", self.symmetric)


@dataclass(frozen=True)
class Int8Dynamic:
    """int8 weights per output channel; int8 activations per token, scaled at run time."""


@dataclass(frozen=True)
class Int8Static:
    """int8 weights per output channel; int8 activations with one calibrated scale per layer.

    ``method`` is one of :data:`~shrinklib.quant.ranges.RANGE_METHODS`; ``percentile``, a
    number in ``(50, 100]``, is what the ``"percentile"`` method keeps (checked whatever the method).
    """

    method: str = "minmax"
    percentile: float = 99.99

    def __post_init__(self):
        check_choice("method", self.method, RANGE_METHODS)
        check_percentile(self.percentile)


@dataclass(frozen=True)
class LLMInt8:
    """LLM.int8(): dynamic int8, except the input features where some token reaches ``threshold``.

    Dettmers et al. (2022), "LLM.int8(): 8-bit Matrix Multiplication for Transformers at
    Scale": a few feature dimensions carry outliers of magnitude 6 and more; those columns
    of the activations are multiplied in floating point (with the int8 weights dequantized),
    the rest in int8 with per-token and per-channel scales (vector-wise quantization).
    ``threshold`` is a finite number > 0.
    """

    threshold: float = 6.0

    def __post_init__(self):
        check_number("threshold", self.threshold, low=0, low_open=True, what="> 0")


def check_weight_only(config, method: str) -> WeightOnly:
    """``config`` if it is a :class:`WeightOnly`, else ``TypeError``: ``method`` (GPTQ, AWQ) rounds weights only."""
    if not isinstance(config, WeightOnly):
        raise TypeError(f"{method} quantizes weights only: config must be a WeightOnly, got {type(config).__name__}")
    return config


QuantConfig = WeightOnly | Int8Dynamic | Int8Static | LLMInt8
