import numpy as np
import pandas as pd
import pytest

from shrinklib.measure import SEED_STATISTICS, seed_summary


@pytest.fixture
def runs():
    """Three trainings of a student over seeds (one seed of 'labels' at 12 epochs only)."""
    rng = np.random.default_rng(0)
    rows = [{"training": t, "epochs": e, "seed": s, "test_accuracy": 0.8 + 0.01 * rng.standard_normal(),
             "real_ppl": 30 + rng.standard_normal()}
            for t in ("labels", "KD", "KD + augmentation") for e in (1.0, 6.0) for s in range(3)]
    rows.append({"training": "labels", "epochs": 12.0, "seed": 0, "test_accuracy": 0.79, "real_ppl": 31.0})
    return pd.DataFrame(rows)


def by_hand(runs, column, training):
    seeds = runs[runs["training"] == training][column]
    return [seeds.mean(), seeds.std(ddof=1), seeds.min(), seeds.max(), len(seeds)]


def test_seed_summary_matches_the_runs(runs):
    summary = seed_summary(runs, "training")
    assert tuple(summary.columns) == SEED_STATISTICS == ("mean", "std", "lowest", "highest", "seeds")
    assert list(summary.index) == sorted(runs["training"].unique())
    for training in summary.index:
        np.testing.assert_allclose(summary.loc[training].to_numpy(dtype=float),
                                   by_hand(runs, "test_accuracy", training), rtol=1e-12)
    assert summary["seeds"].dtype.kind == "i"


def test_seed_summary_order_several_keys_and_values(runs):
    order = ["KD + augmentation", "labels"]
    assert list(seed_summary(runs, "training", order=order).index) == order
    by_two = seed_summary(runs, ["epochs", "training"])
    assert list(by_two.index) == sorted(set(zip(runs["epochs"], runs["training"])))
    single = by_two.loc[(12.0, "labels")]
    assert single["seeds"] == 1 and np.isnan(single["std"]) and single["mean"] == 0.79
    picked = seed_summary(runs, ["epochs", "training"], order=[(6.0, "KD"), (1.0, "labels")])
    assert list(picked.index) == [(6.0, "KD"), (1.0, "labels")]
    both = seed_summary(runs, "training", ["test_accuracy", "real_ppl"])
    assert list(both.columns) == [(v, s) for v in ("test_accuracy", "real_ppl") for s in SEED_STATISTICS]
    np.testing.assert_allclose(both.loc["KD", "real_ppl"].to_numpy(dtype=float), by_hand(runs, "real_ppl", "KD"))
    pd.testing.assert_series_equal(both.xs("mean", axis=1, level=1)["real_ppl"],
                                   runs.groupby("training")["real_ppl"].mean(), check_names=False)


def test_bad_input(runs):
    with pytest.raises(TypeError, match="runs must be a pandas DataFrame, got list"):
        seed_summary([1, 2], "training")
    with pytest.raises(ValueError, match="runs is empty"):
        seed_summary(runs.iloc[:0], "training")
    with pytest.raises(ValueError, match="by='student' is not a column of runs"):
        seed_summary(runs, "student")
    with pytest.raises(ValueError, match="by\\[1\\]='lr' is not a column of runs"):
        seed_summary(runs, ["epochs", "lr"])
    with pytest.raises(ValueError, match="value='accuracy' is not a column of runs"):
        seed_summary(runs, "training", "accuracy")
    with pytest.raises(ValueError, match="value='training' must be a numeric column, got dtype"):
        seed_summary(runs, "epochs", "training")
    with pytest.raises(ValueError, match="by must name at least one column, got \\[\\]"):
        seed_summary(runs, [])
    with pytest.raises(ValueError, match="order names \\['MiniLM'\\], which no run has"):
        seed_summary(runs, "training", order=["labels", "MiniLM"])
