"""The measured results of the book: the CSV files in ``results/``, written and read here.

The scripts in ``benchmarks/`` measure what a notebook cannot afford (long fine-tunes,
sweeps over seeds, GPU kernel timings) and keep it in ``results/<name>.csv``; the
notebooks plot those files beside their own small runs.

Writing: :func:`upsert` merges rows into a CSV by a key, so a rerun replaces the rows it
measures again and keeps the others, and a run cut short keeps what it wrote. The file is
changed under a lock (:func:`lock`) and rewritten atomically (:func:`write_frame`: a
temporary file renamed over the old one), so a reader never sees half a file and two
writers never lose each other's rows. Every row carries its provenance
(:data:`PROVENANCE_COLUMNS`: the device, the library versions, the UTC date and the git
commit, ``+dirty`` when the checkout had uncommitted changes). The book's results table
(:class:`shrinklib.measure.ResultsTable`) is written through the same lock and the same
atomic write.

Reading: :func:`read` finds ``results/<name>.csv`` in the checkout when ``shrinklib`` is
imported from one, and otherwise in the copy the wheel ships (the build copies
``results/*.csv`` into the package, see ``setup.py``), so a notebook run alone with
``pip install shrinklib`` reads the same numbers. :func:`names` lists what is there.

:func:`accuracy_columns` and :func:`classifier_row` are how a row records a classifier's
test accuracy and size, in the same columns in every file.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
from filelock import FileLock

#: The columns that say where a row came from; :func:`upsert` fills in those a row lacks.
PROVENANCE_COLUMNS = ("device", "torch_version", "transformers_version", "shrinklib_version", "date", "commit")
#: The folder inside the installed package that holds the shipped copy of ``results/``.
PACKAGED_FOLDER = "results_data"

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent


def folder() -> Path:
    """Where :func:`read` looks: the checkout's ``results/`` or the package's shipped copy.

    ``shrinklib`` imported from a checkout (the repository's folder holds
    ``pyproject.toml`` and ``results/``, as in ``make install``'s editable install):
    ``results/`` of that checkout, so a benchmark's new rows are read at once. Installed
    from a wheel: ``shrinklib/results_data/``, the files as they were when it was built.
    """
    if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "results").is_dir():
        return _CHECKOUT / "results"
    return _PACKAGE / PACKAGED_FOLDER


def names() -> list[str]:
    """The names :func:`read` accepts (``"ptq_bert"`` for ``ptq_bert.csv``), sorted."""
    where = folder()
    return sorted(p.stem for p in where.glob("*.csv")) if where.is_dir() else []


def path(name: str) -> Path:
    """The file of ``results/<name>.csv``; ``FileNotFoundError`` naming those that exist."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str such as 'ptq_bert', got {type(name).__name__}")
    file = folder() / f"{name}.csv"
    if not name or Path(name).name != name or not file.is_file():
        raise FileNotFoundError(
            f"no results file named {name!r} in {folder()}; the names there are {names()} "
            "(a benchmark in benchmarks/ writes each; see the README)"
        )
    return file


def read(name: str) -> pd.DataFrame:
    """The rows of ``results/<name>.csv`` (``read("ptq_bert")``), from the checkout or the package."""
    return pd.read_csv(path(name))


def lock(file: str | Path) -> FileLock:
    """The lock every writer of ``file`` holds while it reads and rewrites it (``<file>.lock``)."""
    return FileLock(str(file) + ".lock")


def write_frame(file: str | Path, frame: pd.DataFrame) -> None:
    """Write ``frame`` to the CSV ``file`` atomically: a temporary file renamed over the old one.

    A reader sees the old file or the new one, never half of one. Hold :func:`lock` around
    a read-change-write so that no other writer's rows are lost.
    """
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            frame.to_csv(f, index=False)
        os.replace(tmp, file)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _check_rows(rows, key: Sequence[str]) -> list[dict]:
    if isinstance(rows, Mapping):
        raise TypeError("rows must be a sequence of dicts; wrap a single row in a list: upsert(file, [row], key)")
    rows = list(rows)
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"rows must hold only dicts, got {type(row).__name__} at position {i}")
        missing = [k for k in key if k not in row]
        if missing:
            raise ValueError(f"row {i} lacks the key columns {missing}; key is {list(key)}")
    return rows


def upsert(file: str | Path, rows: Sequence[Mapping], key: Sequence[str], *,
           stamp: Mapping[str, str] | None = None) -> int:
    """Merge ``rows`` into the CSV ``file`` by ``key``; return how many rows the file holds now.

    Rows of the file whose ``key`` columns equal a new row's are replaced (missing values
    count as equal), the others kept; new columns are added. A row that lacks a column
    of :data:`PROVENANCE_COLUMNS` gets it from ``stamp`` (default: the provenance now,
    :func:`shrinklib.measure.provenance`); a benchmark passes the stamp it took when it
    started, so all its rows share one date and commit. Nothing happens for no rows
    (returns 0). Locked and atomic, see the module docstring.
    """
    file = Path(file)
    if file.suffix != ".csv":
        raise ValueError(f"file must name a .csv file, got {str(file)!r}")
    if isinstance(key, str) or not key or not all(isinstance(k, str) for k in key):
        raise ValueError(f"key must be a non-empty list of column names, got {key!r}")
    key = list(key)
    rows = _check_rows(rows, key)
    if not rows:
        return 0
    if stamp is None and any(c not in row for row in rows for c in PROVENANCE_COLUMNS):
        from shrinklib.measure import provenance  # here: shrinklib.measure imports this module

        stamp = provenance()
    stamp = dict(stamp or {})
    frame = pd.DataFrame([{**row, **{c: stamp[c] for c in PROVENANCE_COLUMNS if c not in row and c in stamp}}
                          for row in rows])
    missing = [c for c in PROVENANCE_COLUMNS if c not in frame.columns or frame[c].isna().any()]
    if missing:
        raise ValueError(f"every row must carry its provenance; rows and stamp lack {missing}")
    with lock(file):
        if file.exists() and file.stat().st_size:
            old = pd.read_csv(file)
            replaced = old.set_index(key).index.isin(frame.set_index(key).index)
            frame = pd.concat([old[~replaced], frame], ignore_index=True)
        write_frame(file, frame)
    return len(frame)


def accuracy_columns(accuracy) -> dict:
    """A test accuracy as every file in ``results/`` records it.

    ``accuracy``: a :class:`shrinklib.measure.Accuracy`; returns ``test_accuracy``,
    ``test_low`` and ``test_high`` (the bootstrap interval) and ``n_test`` (sentences).
    """
    from shrinklib.measure import Accuracy  # here: shrinklib.measure imports this module

    if not isinstance(accuracy, Accuracy):
        raise TypeError(f"accuracy must be a shrinklib.measure.Accuracy, got {type(accuracy).__name__}")
    return {"test_accuracy": accuracy.value, "test_low": accuracy.low, "test_high": accuracy.high,
            "n_test": accuracy.n}


def classifier_row(model, tokenizer, dataset, result=None, *, label: str | None = None) -> dict:
    """The columns of a classifier measured for ``results/``: what the distillation benchmarks record.

    :func:`accuracy_columns` of ``measure.accuracy(model, dataset, tokenizer)`` (the
    protocol of :func:`shrinklib.measure.measure_classifier`: 64 tokens, a 95% bootstrap
    interval), ``params``, ``size_mb`` (the file :func:`shrinklib.save` writes, in MB of
    1e6 bytes), and from ``result`` (the :class:`shrinklib.train.TrainResult` of its
    training, None for an untrained model) ``steps`` and ``train_seconds``. With a
    ``label``, prints ``"<label>: <accuracy>"`` as a long run's progress line.
    """
    from shrinklib import measure  # here: shrinklib.measure imports this module

    acc = measure.accuracy(model, dataset, tokenizer, progress=False)
    if label is not None:
        print(f"{label}: {acc}", flush=True)
    return {**accuracy_columns(acc), "params": measure.count_parameters(model),
            "size_mb": measure.size_on_disk(model) / 1e6,
            "steps": result.steps if result else 0, "train_seconds": round(result.seconds, 1) if result else 0.0}
