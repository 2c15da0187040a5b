import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from shrinklib.plot import COLORS, metric_vs_compression, pareto, pareto_front, use_style  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def sweep():
    return pd.DataFrame({
        "sparsity": [0.0, 0.5, 0.25, 0.75, 0.0, 0.25, 0.5, 0.75],
        "accuracy": [0.81, 0.79, 0.80, 0.70, 0.81, 0.80, 0.78, 0.74],
        "accuracy_low": [0.78, 0.76, 0.77, 0.67, 0.78, 0.77, 0.75, 0.71],
        "accuracy_high": [0.84, 0.82, 0.83, 0.73, 0.84, 0.83, 0.81, 0.77],
        "method": ["magnitude"] * 4 + ["movement"] * 4,
    })


@pytest.fixture
def table():
    return pd.DataFrame({
        "name": ["teacher", "int8", "pruned", "distilled", "bad"],
        "latency_ms": [12.0, 6.0, 11.0, 4.0, 13.0],
        "accuracy": [0.81, 0.80, 0.81, 0.77, 0.70],
        "accuracy_low": [0.78, 0.77, 0.78, 0.74, 0.67],
        "accuracy_high": [0.84, 0.83, 0.84, 0.80, 0.73],
    })


def test_use_style_sets_the_book_style():
    use_style()
    assert matplotlib.rcParams["axes.grid"] is True
    assert matplotlib.rcParams["axes.prop_cycle"].by_key()["color"] == list(COLORS)
    assert matplotlib.rcParams["font.size"] >= 10


def test_metric_vs_compression(sweep):
    ax = metric_vs_compression(sweep, "sparsity", "accuracy", hue="method",
                               yerr=("accuracy_low", "accuracy_high"), baseline=0.81)
    data_lines = [l for l in ax.lines if l.get_linestyle() == "-"]
    assert len(data_lines) == 2
    np.testing.assert_allclose(data_lines[0].get_xdata(), [0.0, 0.25, 0.5, 0.75])  # sorted by x
    np.testing.assert_allclose(data_lines[0].get_ydata(), [0.81, 0.80, 0.79, 0.70])
    dashed = [l for l in ax.lines if l.get_linestyle() == "--"]
    assert len(dashed) == 1 and set(dashed[0].get_ydata()) == {0.81}
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["magnitude", "movement", "baseline"]
    assert ax.get_xlabel() == "sparsity"


def test_metric_vs_compression_on_a_given_axes(sweep):
    fig, axes = plt.subplots(1, 2)
    assert metric_vs_compression(sweep, "sparsity", "accuracy", ax=axes[1]) is axes[1]
    assert len(axes[1].lines) == 1 and not axes[0].lines


def test_pareto_front_examples():
    points = [(12, 0.81), (6, 0.80), (11, 0.81), (4, 0.77), (13, 0.70), (6, 0.80)]
    assert pareto_front(points) == [3, 1, 5, 2]
    assert pareto_front([(1.0, 1.0)]) == [0]
    assert pareto_front(np.array([[1, 0.5], [1, 0.9]])) == [1]  # same cost: the better one only


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=12))
def test_pareto_front_matches_the_definition(points):
    def dominated(i):
        ci, qi = points[i]
        return any(c <= ci and q >= qi and (c, q) != (ci, qi) for c, q in points)

    front = pareto_front(points)
    assert sorted(front) == [i for i in range(len(points)) if not dominated(i)]
    costs = [points[i][0] for i in front]
    assert costs == sorted(costs)


def test_pareto_plot(table):
    ax = pareto(table)
    step = [l for l in ax.lines if l.get_label() == "Pareto front"][0]
    np.testing.assert_allclose(step.get_xdata(), [4.0, 6.0, 11.0])
    assert sorted(t.get_text() for t in ax.texts) == sorted(table["name"])
    assert len(ax.collections) >= 1  # error bars from accuracy_low/high
    assert ax.get_xlabel() == "latency_ms" and ax.get_ylabel() == "accuracy"


def test_pareto_skips_missing_and_labels_optional(table):
    table.loc[4, "accuracy"] = np.nan
    ax = pareto(table.drop(columns=["accuracy_low", "accuracy_high"]), label=None)
    assert not ax.texts and not ax.collections


def test_bad_input(sweep, table):
    with pytest.raises(ValueError, match="x='bits' is not a column of df"):
        metric_vs_compression(sweep, "bits", "accuracy")
    with pytest.raises(ValueError, match="yerr must be a column name or a \\(low, high\\) pair"):
        metric_vs_compression(sweep, "sparsity", "accuracy", yerr=("accuracy_low",))
    with pytest.raises(ValueError, match="baseline must be a finite number or None, got 'x'"):
        metric_vs_compression(sweep, "sparsity", "accuracy", baseline="x")
    with pytest.raises(ValueError, match="df is empty"):
        pareto(table.iloc[:0])
    with pytest.raises(TypeError, match="df must be a pandas DataFrame, got list"):
        pareto([1, 2])
    with pytest.raises(ValueError, match="cost='size_mb' is not a column"):
        pareto(table, cost="size_mb")
    with pytest.raises(ValueError, match="points must be a sequence of \\(cost, quality\\) pairs"):
        pareto_front([1, 2, 3])
    with pytest.raises(ValueError, match="points must be finite"):
        pareto_front([(1, np.nan)])


def test_log_axis_labels_exactly_the_ticks():
    import matplotlib.pyplot as plt

    from shrinklib.plot import log_axis

    fig, ax = plt.subplots()
    ax.plot([16, 64, 512], [1, 2, 3])
    assert log_axis(ax, [16, 64, 512]) is ax
    fig.canvas.draw()
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["16", "64", "512"]
    assert not [t for t in ax.xaxis.get_minorticklabels() if t.get_text()]
    with pytest.raises(ValueError, match="ticks must be positive numbers"):
        log_axis(ax, [0, 16])
    with pytest.raises(ValueError, match="axis must be 'x' or 'y'"):
        log_axis(ax, [16], axis="z")
    plt.close(fig)
