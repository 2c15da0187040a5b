"""The book's charts: one style, a metric against compression, and the Pareto front.

* :func:`use_style` sets one matplotlib style for every figure of the book: readable
  sizes, a light grid, and a fixed colour cycle (Okabe & Ito's palette, distinguishable
  with the common colour-vision deficiencies).
* :func:`metric_vs_compression` draws a metric against a compression knob (sparsity,
  bits, rank, ...), one line per method, with the uncompressed baseline dashed.
* :func:`pareto_front` / :func:`pareto` find and draw the models no other model beats on
  both cost and quality: the trade-off curve a practitioner chooses from.
* :func:`seed_bars` draws runs repeated over seeds: a light bar at each setting's mean
  and every run as a dot on it, so the spread is seen beside the difference of the means
  (the table of the same numbers is :func:`shrinklib.measure.seed_summary`).

Every drawing function takes an optional ``ax`` and returns the Axes it drew on.
"""
from __future__ import annotations

from numbers import Real
from typing import Sequence

import numpy as np
import pandas as pd

from shrinklib._checks import is_number

#: Okabe & Ito (2008) colour-blind-safe palette, black omitted.
COLORS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def use_style() -> None:
    """Set the book's matplotlib style (rcParams) for the rest of the session."""
    import matplotlib as mpl
    from cycler import cycler

    mpl.rcParams.update({
        "figure.figsize": (6.4, 4.0),
        "figure.dpi": 110,
        "savefig.dpi": 150,
        "savefig.bbox": "tight",
        "font.size": 11,
        "axes.titlesize": 12,
        "axes.labelsize": 11,
        "xtick.labelsize": 10,
        "ytick.labelsize": 10,
        "legend.fontsize": 10,
        "legend.frameon": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "grid.linestyle": "-",
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.prop_cycle": cycler(color=list(COLORS)),
        "lines.linewidth": 2.0,
        "lines.markersize": 6,
        "errorbar.capsize": 3,
    })


def log_axis(ax, ticks: Sequence[float], *, axis: str = "x", base: int = 2):
    """Put ``axis`` of ``ax`` on a log scale labelled at exactly ``ticks`` (e.g. sequence
    lengths 16..512), without the crowded minor-tick labels matplotlib adds by default."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator, ScalarFormatter

    if axis not in ("x", "y"):
        raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")
    ticks = list(ticks)
    if not ticks or any(not isinstance(t, Real) or t <= 0 for t in ticks):
        raise ValueError(f"ticks must be positive numbers, got {ticks!r}")
    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log", base=base)
    target.set_major_locator(FixedLocator(ticks))
    target.set_major_formatter(ScalarFormatter())
    target.set_minor_locator(NullLocator())
    target.set_minor_formatter(NullFormatter())
    return ax


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.gca()
    return ax


def _check_frame(df, columns: dict[str, str | None]) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    if df.empty:
        raise ValueError("df is empty; there is nothing to plot")
    for argument, column in columns.items():
        if column is not None and column not in df.columns:
            raise ValueError(f"{argument}={column!r} is not a column of df; columns: {list(df.columns)}")


def _errors(df: pd.DataFrame, y: str, yerr) -> np.ndarray | None:
    """Error bar lengths from a half-width column or a (low, high) pair of bound columns."""
    if yerr is None:
        return None
    if isinstance(yerr, str):
        return df[yerr].to_numpy(dtype=float)
    low, high = yerr
    values = df[y].to_numpy(dtype=float)
    return np.vstack([values - df[low].to_numpy(dtype=float), df[high].to_numpy(dtype=float) - values])


def metric_vs_compression(
    df: pd.DataFrame,
    x: str,
    y: str,
    *,
    hue: str | None = None,
    yerr: str | tuple[str, str] | None = None,
    ax=None,
    baseline: float | None = None,
    baseline_label: str = "baseline",
):
    """Lines with markers of ``y`` against ``x``, one per value of ``hue``; returns the Axes.

    ``yerr``: a column of error half-widths, or a pair ``(low, high)`` of columns holding
    the interval's bounds (``("accuracy_low", "accuracy_high")``). ``baseline``: draw it as
    a dashed horizontal line (the uncompressed model), labelled ``baseline_label``.
    Points are joined in increasing ``x``.
    """
    if isinstance(yerr, tuple):
        if len(yerr) != 2:
            raise ValueError(f"yerr must be a column name or a (low, high) pair of columns, got {yerr!r}")
        _check_frame(df, {"x": x, "y": y, "hue": hue, "yerr[0]": yerr[0], "yerr[1]": yerr[1]})
    elif yerr is None or isinstance(yerr, str):
        _check_frame(df, {"x": x, "y": y, "hue": hue, "yerr": yerr})
    else:
        raise TypeError(f"yerr must be a column name, a (low, high) pair of columns or None, got {yerr!r}")
    if baseline is not None and not (is_number(baseline) and np.isfinite(baseline)):
        raise ValueError(f"baseline must be a finite number or None, got {baseline!r}")
    ax = _axes(ax)
    groups = [(None, df)] if hue is None else list(df.groupby(hue, sort=False))
    for i, (key, group) in enumerate(groups):
        group = group.sort_values(x)
        ax.errorbar(
            group[x].to_numpy(), group[y].to_numpy(dtype=float), yerr=_errors(group, y, yerr),
            marker=MARKERS[i % len(MARKERS)], label=None if key is None else str(key),
        )
    baseline_line = None
    if baseline is not None:
        baseline_line = ax.axhline(float(baseline), linestyle="--", color="0.35", linewidth=1.5, label=baseline_label)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if hue is not None or baseline is not None:
        handles, labels = ax.get_legend_handles_labels()
        order = sorted(range(len(labels)), key=lambda i: handles[i] is baseline_line)  # the baseline last
        ax.legend([handles[i] for i in order], [labels[i] for i in order])
    return ax


def pareto_front(points) -> list[int]:
    """Indices of the points that no other point dominates, ordered by increasing cost.

    ``points``: a sequence of ``(cost, quality)`` pairs (an (n, 2) array). A point is
    dominated when another has cost <= and quality >= with at least one strict. Exact
    duplicates of a front point are on the front too.
    """
    array = np.asarray(points, dtype=float)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"points must be a sequence of (cost, quality) pairs, got an array of shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("points must be finite (no NaN or inf)")
    order = np.lexsort((-array[:, 1], array[:, 0]))  # by cost, then by quality descending
    front: list[int] = []
    best = -np.inf
    for i in order:
        cost, quality = array[i]
        if quality > best:
            front.append(int(i))
            best = quality
        elif front and (cost, quality) == tuple(array[front[-1]]):
            front.append(int(i))
    return front


def pareto(
    df: pd.DataFrame,
    cost: str = "latency_ms",
    quality: str = "accuracy",
    *,
    label: str | None = "name",
    ax=None,
):
    """Scatter of ``quality`` against ``cost`` with the Pareto front as a step line; returns the Axes.

    Error bars come from the columns ``{quality}_low``/``{quality}_high`` when df has them
    (``accuracy_low``/``accuracy_high`` for the results table). Each point is labelled with
    its ``label`` column (None: no labels). Rows with a missing cost or quality are skipped.
    """
    _check_frame(df, {"cost": cost, "quality": quality, "label": label})
    data = df.dropna(subset=[cost, quality])
    if data.empty:
        raise ValueError(f"no row of df has both {cost!r} and {quality!r}")
    ax = _axes(ax)
    x, y = data[cost].to_numpy(dtype=float), data[quality].to_numpy(dtype=float)
    bounds = (f"{quality}_low", f"{quality}_high")
    yerr = _errors(data, quality, bounds) if all(b in data.columns for b in bounds) else None
    if yerr is not None:
        yerr = np.nan_to_num(yerr)
    ax.errorbar(x, y, yerr=yerr, linestyle="none", marker="o", label="models")
    front = pareto_front(np.column_stack([x, y]))
    ax.step(x[front], y[front], where="post", linestyle="--", color=COLORS[3], label="Pareto front")
    if label is not None:
        for xi, yi, text in zip(x, y, data[label].astype(str)):
            ax.annotate(text, (xi, yi), xytext=(4, 4), textcoords="offset points", fontsize=9)
    ax.set_xlabel(cost)
    ax.set_ylabel(quality)
    ax.legend()
    return ax


def _levels(df: pd.DataFrame, column: str, order, argument: str) -> list:
    """``order`` as a list of values of ``df[column]`` (None: the values present, sorted)."""
    present = list(pd.unique(df[column]))
    if order is None:
        return sorted(present)
    if isinstance(order, str):
        raise TypeError(f"{argument} must be a sequence of values of {column!r}, got the str {order!r}")
    order = list(order)
    missing = [value for value in order if value not in present]
    if missing or not order or len(set(order)) != len(order):
        raise ValueError(
            f"{argument} must list distinct values of {column!r} that have runs, got {order!r}; "
            f"values: {sorted(present)!r}"
        )
    return order


def seed_bars(
    df: pd.DataFrame,
    x: str,
    y: str,
    *,
    hue: str | None = None,
    order: Sequence | None = None,
    hue_order: Sequence | None = None,
    color: str | None = None,
    ax=None,
):
    """Runs over several seeds: a bar at the mean of ``y`` for each value of ``x``, each run a dot.

    ``df`` holds one row per run. Bars stand at x = 0, 1, 2, ... in ``order`` (default:
    the values of ``x``, sorted), labelled with those values. Without ``hue`` each bar has
    its own colour of the book's cycle (or all ``color``); with ``hue`` each value of
    ``x`` gets a group of bars side by side, one per value of ``hue`` in ``hue_order``,
    coloured by it and named in the legend (a pair without runs leaves a gap). Bars are
    light (alpha 0.35) and 0.6 wide (a group 0.8); the dots are the runs themselves.
    Returns the Axes, for the caller's title, limits and reference lines.
    """
    _check_frame(df, {"x": x, "y": y, "hue": hue})
    if hue is None and hue_order is not None:
        raise ValueError("hue_order needs hue: name the column whose values it orders")
    xs = _levels(df, x, order, "order")
    hues = [None] if hue is None else _levels(df, hue, hue_order, "hue_order")
    ax = _axes(ax)
    slot = 0.6 if hue is None else 0.8 / len(hues)
    labelled = set()  # the hue values already in the legend
    for i, x_value in enumerate(xs):
        for k, hue_value in enumerate(hues):
            rows = df[df[x] == x_value] if hue is None else df[(df[x] == x_value) & (df[hue] == hue_value)]
            values = rows[y].to_numpy(dtype=float)
            if values.size == 0:
                continue
            position = i + (k - (len(hues) - 1) / 2) * slot
            shade = color or f"C{i if hue is None else k}"
            label = None if hue is None or k in labelled else str(hue_value)
            labelled.add(k)
            ax.bar(position, values.mean(), slot if hue is None else 0.9 * slot, color=shade, alpha=0.35, label=label)
            ax.plot([position] * values.size, values, "o", color=shade, markersize=4)
    ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if hue is not None:
        ax.legend()
    return ax


__all__: Sequence[str] = ("COLORS", "MARKERS", "use_style", "log_axis", "metric_vs_compression", "pareto_front", "pareto",
                          "seed_bars")
