"""The percentile bootstrap: how well a mean over test sentences is known.

* :func:`bootstrap_ci` is a 95% percentile-bootstrap interval for the mean of one sample
  (Efron & Tibshirani, 1993, *An Introduction to the Bootstrap*, ch. 13): the accuracy of
  one model is the mean of its per-sentence correctness.
* :func:`paired_bootstrap` compares two models **on the same sentences**: it resamples
  sentences, not models, so each resample keeps every sentence's pair of results
  together, and reports the mean difference with its interval and the share of resamples
  in which A comes out ahead (Koehn, 2004, "Statistical Significance Tests for Machine
  Translation Evaluation", EMNLP; Berg-Kirkpatrick, Burkett & Klein, 2012, "An Empirical
  Investigation of Statistical Significance in NLP", EMNLP). Two models that agree on most
  sentences differ far less noisily than two independent intervals suggest: this is the
  protocol chapter 1 promises for every "A beats B".

Both draw their resamples from a NumPy generator seeded with ``seed``, in the same way,
so ``paired_bootstrap(a, b)`` gives exactly the interval of ``bootstrap_ci(a - b)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shrinklib._checks import check_number, check_positive_int
from shrinklib.utils import check_seed


def _sample(name: str, values) -> np.ndarray:
    """``values`` as a float64 array: non-empty, 1-D and finite, else a ValueError naming ``name``
    (a ``TypeError`` for a string or anything else that is not numbers)."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}")
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}") from None
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of numbers, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return array


def check_confidence(confidence) -> float:
    """``confidence`` as a float if it is a number strictly between 0 and 1 (a level such as 0.95), else ``ValueError``."""
    return check_number("confidence", confidence, low=0, high=1, low_open=True, high_open=True,
                        what="a number strictly between 0 and 1")


def _resampled_means(array: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Means of ``n_resamples`` samples of len(array) drawn with replacement (seeded)."""
    rng = np.random.default_rng(seed)
    n = array.size
    chunk = max(1, 4_000_000 // n)  # bound the index matrix at ~32 MB
    means = []
    for done in range(0, n_resamples, chunk):
        rows = min(chunk, n_resamples - done)
        means.append(array[rng.integers(0, n, size=(rows, n))].mean(axis=1))
    return np.concatenate(means)


def _interval(means: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def bootstrap_ci(values, *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval ``(low, high)`` for the mean of ``values``.

    Draws ``n_resamples`` samples of len(values) with replacement (NumPy generator seeded
    with ``seed``: the same interval every run) and returns the (1 - confidence)/2 and
    (1 + confidence)/2 quantiles of their means.
    """
    array = _sample("values", values)
    check_positive_int("n_resamples", n_resamples)
    confidence = check_confidence(confidence)
    return _interval(_resampled_means(array, n_resamples, check_seed(seed)), confidence)


@dataclass(frozen=True)
class PairedDifference:
    """mean(A) - mean(B) over the same ``n`` examples: ``difference``, its bootstrap interval
    [``low``, ``high``], and ``a_beats_b``, the share of resamples in which A's mean is above B's."""

    difference: float
    low: float
    high: float
    a_beats_b: float
    n: int

    def __post_init__(self):
        for name in ("difference", "low", "high"):
            check_number(name, getattr(self, name), what="a finite number")
        check_number("a_beats_b", self.a_beats_b, low=0, high=1)
        if self.low > self.high:
            raise ValueError(f"low must not exceed high, got low={self.low}, high={self.high}")
        check_positive_int("n", self.n)

    def __str__(self) -> str:
        return (f"{self.difference:+.4g} [{self.low:+.4g}, {self.high:+.4g}] "
                f"(A ahead in {100 * self.a_beats_b:.1f}% of resamples, n={self.n})")


def paired_bootstrap(a, b, *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> PairedDifference:
    """Compare models A and B on the same examples with a paired percentile bootstrap.

    ``a`` and ``b``: one number per example, in the same order, for each model: its
    correctness (1.0 right, 0.0 wrong; :func:`shrinklib.measure.correctness`) or any
    per-example score. Resamples the examples as :func:`bootstrap_ci` does (``n_resamples``
    samples with replacement, NumPy generator seeded with ``seed``) and takes the
    difference of A's and B's means in each, keeping each example's pair together.
    Returns the observed mean difference, the percentile interval at ``confidence`` (equal
    to ``bootstrap_ci(a - b)``) and the share of resamples in which the difference is above
    zero (a tie counts as A *not* ahead).
    """
    a, b = _sample("a", a), _sample("b", b)
    if a.size != b.size:
        raise ValueError(
            f"a and b must hold one value per example for the same examples, got lengths {a.size} and {b.size}"
        )
    check_positive_int("n_resamples", n_resamples)
    confidence = check_confidence(confidence)
    differences = a - b
    means = _resampled_means(differences, n_resamples, check_seed(seed))
    low, high = _interval(means, confidence)
    return PairedDifference(float(differences.mean()), low, high, float(np.mean(means > 0)), int(a.size))
