import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from shrinklib.plot import COLORS, metric_vs_compression, pareto, pareto_front, seed_bars, use_style  # noqa: E402


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


@pytest.fixture
def runs():
    return pd.DataFrame({
        "training": ["labels"] * 3 + ["KD"] * 3 + ["MiniLM"] * 2 + ["KD"],
        "epochs": [1.0] * 3 + [1.0] * 3 + [1.0] * 2 + [6.0],
        "test_accuracy": [0.79, 0.80, 0.78, 0.81, 0.80, 0.82, 0.83, 0.84, 0.85],
    })


def bars_and_dots(ax):
    """(x, height, width) of each bar and (x, y) of each dot, in drawing order."""
    bars = [(p.get_x() + p.get_width() / 2, p.get_height(), p.get_width()) for p in ax.patches]
    dots = [(float(x), float(y)) for line in ax.lines if line.get_marker() == "o"
            for x, y in zip(line.get_xdata(), line.get_ydata())]
    return bars, dots


def test_seed_bars_draw_the_mean_and_every_run(runs):
    order = ["labels", "KD", "MiniLM"]
    ax = seed_bars(runs[runs.epochs == 1.0], "training", "test_accuracy", order=order)
    bars, dots = bars_and_dots(ax)
    expected = [runs[(runs.training == t) & (runs.epochs == 1.0)].test_accuracy for t in order]
    np.testing.assert_allclose([b[0] for b in bars], [0, 1, 2])
    np.testing.assert_allclose([b[1] for b in bars], [e.mean() for e in expected])
    np.testing.assert_allclose([b[2] for b in bars], 0.6)
    assert sorted(dots) == sorted((float(i), y) for i, e in enumerate(expected) for y in e)
    assert [t.get_text() for t in ax.get_xticklabels()] == order and ax.get_ylabel() == "test_accuracy"
    colours = [matplotlib.colors.to_hex(p.get_facecolor()[:3]) for p in ax.patches]
    assert colours == [c.lower() for c in COLORS[:3]] and all(p.get_alpha() == 0.35 for p in ax.patches)
    assert ax.get_legend() is None


def test_seed_bars_with_hue_group_side_by_side(runs):
    fig, axes = plt.subplots(1, 2)
    ax = seed_bars(runs, "epochs", "test_accuracy", hue="training", hue_order=["labels", "KD", "MiniLM"], ax=axes[1])
    assert ax is axes[1] and not axes[0].patches
    bars, dots = bars_and_dots(ax)
    width = 0.8 / 3
    expected = [(0 - width, runs.test_accuracy[:3].mean()), (0.0, runs.test_accuracy[3:6].mean()),
                (0 + width, runs.test_accuracy[6:8].mean()), (1.0, 0.85)]  # epochs 6 has KD only
    np.testing.assert_allclose([b[:2] for b in bars], expected)
    assert len(dots) == len(runs)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["labels", "KD", "MiniLM"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1.0", "6.0"]
    one_colour = seed_bars(runs, "training", "test_accuracy", color="C0", ax=axes[0])
    assert len({p.get_facecolor() for p in one_colour.patches}) == 1


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
    runs = sweep.rename(columns={"method": "training"})
    with pytest.raises(ValueError, match="y='test_accuracy' is not a column of df"):
        seed_bars(runs, "training", "test_accuracy")
    with pytest.raises(ValueError, match="order must list distinct values of 'training' that have runs, "
                                         "got \\['magnitude', 'MiniLM'\\]"):
        seed_bars(runs, "training", "accuracy", order=["magnitude", "MiniLM"])
    with pytest.raises(ValueError, match="order must list distinct values"):
        seed_bars(runs, "training", "accuracy", order=["magnitude", "magnitude"])
    with pytest.raises(TypeError, match="order must be a sequence of values of 'training', got the str 'magnitude'"):
        seed_bars(runs, "training", "accuracy", order="magnitude")
    with pytest.raises(ValueError, match="hue_order needs hue"):
        seed_bars(runs, "training", "accuracy", hue_order=["magnitude"])
    with pytest.raises(ValueError, match="df is empty"):
        seed_bars(runs.iloc[:0], "training", "accuracy")


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
