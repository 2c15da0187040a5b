import math

import numpy as np
import pytest

from shrinklib.measure import PairedDifference, bootstrap_ci, paired_bootstrap


def correlated_models(n: int = 137, seed: int = 0):
    """Per-sentence correctness of two models that agree on most sentences: A right on ~80%,
    B wrong on a few more of them."""
    rng = np.random.default_rng(seed)
    a = (rng.random(n) < 0.8).astype(float)
    b = a.copy()
    b[rng.choice(n, size=12, replace=False)] = 0.0
    b[rng.choice(n, size=3, replace=False)] = 1.0
    return a, b


def paired_by_hand(a, b, n_resamples: int, confidence: float, seed: int):
    """The paired bootstrap written out: resample sentence indices, score both models on each resample."""
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, len(a), size=(n_resamples, len(a)))
    differences = []
    for rows in indices:
        differences.append(np.mean(a[rows]) - np.mean(b[rows]))
    differences = np.array(differences)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(differences, [alpha, 1 - alpha])
    return np.mean(a) - np.mean(b), low, high, np.mean(differences > 0)


def test_bootstrap_interval():
    assert bootstrap_ci([0.7] * 50) == (pytest.approx(0.7), pytest.approx(0.7))
    values = np.random.default_rng(1).random(1000) < 0.8
    low, high = bootstrap_ci(values, n_resamples=2000)
    assert low < values.mean() < high
    assert high - low == pytest.approx(2 * 1.96 * math.sqrt(0.8 * 0.2 / 1000), rel=0.15)
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    narrow = bootstrap_ci(values, confidence=0.5)
    assert low < narrow[0] < narrow[1] < high


@pytest.mark.parametrize("n_resamples, confidence, seed", [(1000, 0.95, 0), (333, 0.9, 7)])
def test_paired_bootstrap_matches_a_loop_by_hand(n_resamples, confidence, seed):
    a, b = correlated_models()
    result = paired_bootstrap(a, b, n_resamples=n_resamples, confidence=confidence, seed=seed)
    difference, low, high, wins = paired_by_hand(a, b, n_resamples, confidence, seed)
    assert isinstance(result, PairedDifference) and result.n == len(a)
    assert result.difference == pytest.approx(difference, abs=1e-12)
    assert (result.low, result.high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    assert result.a_beats_b == wins
    assert (result.low, result.high) == bootstrap_ci(a - b, n_resamples=n_resamples, confidence=confidence, seed=seed)


def test_paired_bootstrap_of_scores_is_antisymmetric():
    rng = np.random.default_rng(3)
    scores_a = rng.normal(0.5, 0.2, 211)
    scores_b = scores_a - 0.01 + rng.normal(0, 0.05, 211)
    ab, ba = paired_bootstrap(scores_a, scores_b), paired_bootstrap(scores_b, scores_a)
    assert ab.difference == pytest.approx(-ba.difference)
    assert (ab.low, ab.high) == (pytest.approx(-ba.high), pytest.approx(-ba.low))
    assert ab.a_beats_b + ba.a_beats_b == pytest.approx(1.0)  # continuous scores: no tied resamples
    assert ab.a_beats_b > 0.9 and ab.low < ab.difference < ab.high


def test_pairing_narrows_the_interval():
    """Two models that agree on most sentences: the paired interval of the difference is far
    narrower than either model's own interval, which is why the book pairs."""
    a, b = correlated_models(n=1000)
    paired = paired_bootstrap(a, b)
    low_a, high_a = bootstrap_ci(a)
    assert paired.high - paired.low < 0.5 * (high_a - low_a)
    assert paired.low > 0 and paired.a_beats_b == 1.0
    same = paired_bootstrap(a, a)
    assert (same.difference, same.low, same.high, same.a_beats_b) == (0.0, 0.0, 0.0, 0.0)  # ties: A not ahead
    assert str(paired) == "+0.01 [+0.004, +0.01602] (A ahead in 100.0% of resamples, n=1000)"


def test_bad_input():
    with pytest.raises(ValueError, match="values must be a non-empty 1-D"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="values must be finite"):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="confidence must be a number strictly between 0 and 1, got 1"):
        bootstrap_ci([1.0, 0.0], confidence=1)
    with pytest.raises(ValueError, match="a and b must hold one value per example for the same examples, "
                                         "got lengths 3 and 2"):
        paired_bootstrap([1.0, 0.0, 1.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="a must be a non-empty 1-D sequence of numbers, got shape \\(0,\\)"):
        paired_bootstrap([], [])
    with pytest.raises(ValueError, match="b must be a non-empty 1-D sequence of numbers, got shape \\(2, 1\\)"):
        paired_bootstrap([1.0, 0.0], [[1.0], [0.0]])
    with pytest.raises(ValueError, match="b must be finite"):
        paired_bootstrap([1.0, 0.0], [1.0, float("inf")])
    with pytest.raises(ValueError, match="n_resamples must be an int >= 1, got 0"):
        paired_bootstrap([1.0], [0.0], n_resamples=0)
    with pytest.raises(ValueError, match="confidence must be a number strictly between 0 and 1, got 0"):
        paired_bootstrap([1.0], [0.0], confidence=0)
    with pytest.raises(ValueError, match="seed must be a non-negative int, got -1"):
        paired_bootstrap([1.0], [0.0], seed=-1)
    with pytest.raises(ValueError, match="low must not exceed high"):
        PairedDifference(0.0, 0.1, -0.1, 0.5, 10)
    with pytest.raises(ValueError, match="a_beats_b must be a number in \\[0, 1\\], got 1.5"):
        PairedDifference(0.0, -0.1, 0.1, 1.5, 10)
