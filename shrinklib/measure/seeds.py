"""Results over several seeds: one row per setting with the mean and the spread.

A training run is one draw: the seed picks the initialization, the order of the batches
and the dropout masks, and two seeds of the same recipe often differ by more than two
recipes do. The benchmarks therefore train each setting with several seeds (one row per
run in ``results/``), and a chapter claims "A beats B" only when the spread over seeds
says so (DESIGN.md, section 4). :func:`seed_summary` is the table those claims read:
per setting, the mean, the sample standard deviation, the lowest and highest run and the
number of seeds. :func:`shrinklib.plot.seed_bars` draws the same runs.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from shrinklib._checks import check_iterable

#: The statistics :func:`seed_summary` gives for each value column, in order.
SEED_STATISTICS = ("mean", "std", "lowest", "highest", "seeds")


def _columns(argument: str, names) -> dict[str, str]:
    """``{"by": "training"}`` for one name, ``{"by[0]": "epochs", "by[1]": "training"}`` for several."""
    names = [names] if isinstance(names, str) else list(check_iterable(argument, names, what="a column name or a list of them"))
    if not names:
        raise ValueError(f"{argument} must name at least one column, got {names!r}")
    return {f"{argument}[{i}]" if len(names) > 1 else argument: name for i, name in enumerate(names)}


def _check_runs(runs, keys: dict[str, str], values: dict[str, str]) -> None:
    if not isinstance(runs, pd.DataFrame):
        raise TypeError(f"runs must be a pandas DataFrame, got {type(runs).__name__}")
    if runs.empty:
        raise ValueError("runs is empty; there are no runs to summarize")
    for argument, column in {**keys, **values}.items():
        if column not in runs.columns:
            raise ValueError(f"{argument}={column!r} is not a column of runs; columns: {list(runs.columns)}")
    for argument, column in values.items():
        if not pd.api.types.is_numeric_dtype(runs[column]) or pd.api.types.is_bool_dtype(runs[column]):
            raise ValueError(f"{argument}={column!r} must be a numeric column, got dtype {runs[column].dtype}")


def seed_summary(
    runs: pd.DataFrame,
    by: str | Sequence[str],
    value: str | Sequence[str] = "test_accuracy",
    *,
    order: Sequence | None = None,
) -> pd.DataFrame:
    """Mean, standard deviation, lowest, highest and count of ``value`` over the runs of each setting.

    ``runs``: one row per training run (one seed of one setting); ``by``: the column, or
    list of columns, that names a setting; ``value``: the measured column, or a list of
    them. Returns one row per setting, indexed by ``by``, with the columns
    :data:`SEED_STATISTICS` (``std`` is the sample standard deviation, NaN for a single
    run); for a list of values the columns are ``(value, statistic)`` pairs. Rows come in
    ``order`` (values of ``by``: tuples for several columns), or sorted; every entry of
    ``order`` must be a setting that has runs, and settings it leaves out are dropped.
    """
    keys, values = _columns("by", by), _columns("value", value)
    _check_runs(runs, keys, values)
    columns = list(keys.values())
    groups = runs.groupby(columns[0] if len(columns) == 1 else columns)
    table = pd.concat(
        {v: groups[v].agg(mean="mean", std="std", lowest="min", highest="max", seeds="count") for v in values.values()},
        axis=1,
    )
    if isinstance(value, str):
        table = table[value]
    if order is not None:
        order = list(check_iterable("order", order, what="a list of settings (values of by)"))
        missing = [o for o in order if o not in table.index]
        if missing:
            raise ValueError(f"order names {missing!r}, which no run has; settings: {list(table.index)!r}")
        table = table.loc[order]
    return table
