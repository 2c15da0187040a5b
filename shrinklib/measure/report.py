"""The book's results table: one :class:`Report` per compressed model, kept in a CSV.

Every chapter ends by measuring its best model with the same protocol
(:func:`measure_classifier` for a classifier, :func:`measure_lm` for a language model,
:func:`measure_model` when the quality comes from elsewhere, such as a benchmark's row)
and adding the row to the :class:`ResultsTable`, a CSV in
the shrinklib cache folder (``$SHRINKLIB_CACHE`` or ``~/.cache/shrinklib``, file
``results_table.csv``). Chapter 9 reads the whole table and draws the trade-offs.
Notebooks run two at a time, so :meth:`ResultsTable.add` re-reads, changes and rewrites
the file under a file lock, writing a temporary file and renaming it over the old one
(:func:`shrinklib.results.lock` and :func:`shrinklib.results.write_frame`, the same as
the benchmarks' files in ``results/``): a reader never sees half a table and no writer
loses another's row.
"""
from __future__ import annotations

import dataclasses
import math
import os
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from numbers import Integral
from pathlib import Path
from typing import Iterable

import pandas as pd
import torch
from torch import nn

from shrinklib._checks import check_instance, check_iterable, check_module, check_number, is_number
from shrinklib.measure.counts import count_parameters, nonzero_parameters
from shrinklib.measure.forward import model_device
from shrinklib.measure.latency import available_cpus, latency
from shrinklib.measure import quality
from shrinklib.measure.quality import Accuracy
from shrinklib.measure.size import size_on_disk
from shrinklib.results import lock, write_frame

TABLE_FILE = "results_table.csv"


def describe_device(device: torch.device | str | None = None) -> str:
    """A short description of the machine: the GPU's name, or the CPU's model and count.

    ``device`` is a ``torch.device``, a device name such as ``"cuda:0"``, or ``None`` (the CPU).
    """
    if device is not None:
        check_instance("device", device, (torch.device, str), what="a torch.device, a device name or None")
    try:
        device = torch.device(device) if device is not None else torch.device("cpu")
    except RuntimeError:
        raise ValueError(f"device must name a device such as 'cpu' or 'cuda:0', got {device!r}") from None
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    name = ""
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    return f"cpu: {name} ({available_cpus()} CPUs)"


def git_commit(folder: str | Path | None = None) -> str:
    """Short hash of the checked-out commit (``+dirty`` if files changed), or ``"unknown"``.

    ``folder`` (a path in the checkout; default: shrinklib's own) must be a str, a path or ``None``.
    """
    import subprocess

    if folder is not None:
        check_instance("folder", folder, (str, os.PathLike), what="a str, a path or None")
    cwd = str(folder or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def provenance(device: torch.device | str | None = None) -> dict[str, str]:
    """What every row in ``results/`` carries: device, library versions, UTC date, commit."""
    import transformers

    import shrinklib

    return {
        "device": describe_device(device), "torch_version": torch.__version__,
        "transformers_version": transformers.__version__, "shrinklib_version": shrinklib.__version__,
        "date": _now(), "commit": git_commit(),
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _text(name: str, value, *, empty_ok: bool = False) -> None:
    if not isinstance(value, str) or (not empty_ok and not value.strip()):
        raise ValueError(f"{name} must be a {'' if empty_ok else 'non-empty '}str, got {value!r}")


def _number(name: str, value, *, low: float = -math.inf, high: float = math.inf, optional: bool = False):
    if value is None and optional:
        return None
    allowed = f"a finite number in [{low}, {high}]" + (" or None" if optional else "")
    return check_number(name, value, low=low, high=high, what=allowed)


def _count(name: str, value) -> int:
    if not (is_number(value) and isinstance(value, Integral)) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Report:
    """One row of the results table: a model, how it was made, and what it costs and scores.

    ``accuracy``/``accuracy_low``/``accuracy_high`` are a share in [0, 1] with its
    bootstrap interval (all three None for a model measured by ``perplexity`` alone);
    ``params`` counts parameters, ``nonzeros`` their nonzero entries; ``size_mb`` is the
    safetensors file in MB (1e6 bytes); ``latency_ms`` the median of one batch-1 forward
    pass and ``latency_iqr_ms`` its interquartile range. ``device``, ``torch_version`` and
    ``date`` (UTC) fill themselves in.
    """

    name: str
    chapter: str
    method: str
    accuracy: float | None
    accuracy_low: float | None
    accuracy_high: float | None
    params: int
    nonzeros: int
    size_mb: float
    latency_ms: float
    latency_iqr_ms: float
    perplexity: float | None = None
    notes: str = ""
    device: str = field(default_factory=describe_device)
    torch_version: str = field(default_factory=lambda: torch.__version__)
    date: str = field(default_factory=_now)

    def __post_init__(self):
        for name in ("name", "chapter", "method", "device", "torch_version", "date"):
            _text(name, getattr(self, name))
        _text("notes", self.notes, empty_ok=True)
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        triple = ("accuracy", "accuracy_low", "accuracy_high")
        given = [getattr(self, n) is not None for n in triple]
        if any(given) and not all(given):
            raise ValueError(
                "accuracy, accuracy_low and accuracy_high must be given together or all be None, got "
                + ", ".join(f"{n}={getattr(self, n)!r}" for n in triple)
            )
        for name in triple:
            set_(name, _number(name, getattr(self, name), low=0.0, high=1.0, optional=True))
        if all(given) and self.accuracy_low > self.accuracy_high:
            raise ValueError(f"accuracy_low must not exceed accuracy_high, got {self.accuracy_low} > {self.accuracy_high}")
        set_("params", _count("params", self.params))
        set_("nonzeros", _count("nonzeros", self.nonzeros))
        if self.nonzeros > self.params:
            raise ValueError(f"nonzeros must not exceed params={self.params}, got {self.nonzeros}")
        set_("size_mb", _number("size_mb", self.size_mb, low=0.0))
        set_("latency_ms", _number("latency_ms", self.latency_ms, low=0.0))
        set_("latency_iqr_ms", _number("latency_iqr_ms", self.latency_iqr_ms, low=0.0))
        set_("perplexity", _number("perplexity", self.perplexity, low=1.0, optional=True))


#: The table's columns, in order.
COLUMNS = tuple(f.name for f in dataclasses.fields(Report))
_TEXT_COLUMNS = ("name", "chapter", "method", "notes", "device", "torch_version", "date")


def to_frame(rows: Iterable[Report]) -> pd.DataFrame:
    """A DataFrame with one row per :class:`Report`, columns in :data:`COLUMNS` order."""
    if isinstance(rows, Report):
        raise TypeError("rows must be an iterable of Report; wrap a single report in a list: to_frame([report])")
    rows = list(check_iterable("rows", rows, what="an iterable of Report"))
    for i, row in enumerate(rows):
        if not isinstance(row, Report):
            raise TypeError(f"rows must hold only Report objects, got {type(row).__name__} at position {i}")
    return pd.DataFrame([dataclasses.asdict(r) for r in rows], columns=list(COLUMNS))


class ResultsTable:
    """The results table, a CSV file shared by every notebook (see the module docstring).

    It keeps nothing in memory: :meth:`frame` reads the file, :meth:`add` and
    :meth:`remove` change it under the lock, so two notebooks see each other's rows.
    """

    def __init__(self, path: str | Path | None = None):
        if path is not None:
            check_instance("path", path, (str, os.PathLike), what="a str, a path or None")
        if path is None:
            from shrinklib.cache import cache_dir

            path = cache_dir() / TABLE_FILE
        self.path = Path(path)
        if self.path.suffix != ".csv":
            raise ValueError(f"path must name a .csv file, got {str(self.path)!r}")
        self._lock = lock(self.path)

    @classmethod
    def load(cls, path: str | Path | None = None) -> "ResultsTable":
        """The table at ``path`` (default: ``results_table.csv`` in the cache folder), checked readable."""
        table = cls(path)
        table.frame()
        return table

    def _read(self) -> pd.DataFrame:
        if not self.path.exists():
            return pd.DataFrame(columns=list(COLUMNS))
        df = pd.read_csv(self.path, dtype={c: str for c in _TEXT_COLUMNS})
        missing = {"name", "chapter", "method"} - set(df.columns)
        if missing:
            raise ValueError(f"{self.path} is not a results table: it lacks the columns {sorted(missing)}")
        df = df.reindex(columns=list(COLUMNS))
        for column in _TEXT_COLUMNS:
            df[column] = df[column].fillna("").astype(str)
        return df

    def frame(self) -> pd.DataFrame:
        """The table as it is on disk now."""
        return self._read()

    def _write(self, df: pd.DataFrame) -> None:
        write_frame(self.path, df)

    def add(self, report: Report) -> "ResultsTable":
        """Insert ``report``, or replace the row with its name (in place); returns the table."""
        if not isinstance(report, Report):
            raise TypeError(f"report must be a Report, got {type(report).__name__}")
        new = dataclasses.asdict(report)
        with self._lock:
            records = self._read().to_dict("records")
            names = [r["name"] for r in records]
            if report.name in names:
                records[names.index(report.name)] = new
            else:
                records.append(new)
            self._write(pd.DataFrame(records, columns=list(COLUMNS)))
        return self

    def remove(self, name: str) -> "ResultsTable":
        """Delete the row called ``name`` (a str); a ValueError if there is none."""
        _text("name", name)
        with self._lock:
            df = self._read()
            if name not in set(df["name"]):
                raise ValueError(f"no row named {name!r} in {self.path}; names: {sorted(df['name'])}")
            self._write(df[df["name"] != name])
        return self

    def __len__(self) -> int:
        return len(self._read())

    def __repr__(self) -> str:
        return f"ResultsTable({str(self.path)!r})"


def _check_names(name, chapter, method) -> None:
    for argument, value in (("name", name), ("chapter", chapter), ("method", method)):
        _text(argument, value)


def measure_model(
    model: nn.Module,
    *,
    name: str,
    chapter: str,
    method: str,
    accuracy: Accuracy | None = None,
    perplexity: float | None = None,
    seq_len: int = 64,
    latency_repeats: int = 20,
    latency_warmup: int = 3,
    notes: str = "",
) -> Report:
    """The :class:`Report` of ``model``: its costs measured now, its quality as given.

    Measures parameters and nonzero parameters, the size of the file
    :func:`shrinklib.save` writes, and the median latency of a batch of 1 x ``seq_len``
    token ids (2 threads, ``latency_warmup`` untimed then ``latency_repeats`` timed runs).
    The quality is what the caller measured: an :class:`Accuracy` (from
    :func:`shrinklib.measure.accuracy`, or rebuilt from a benchmark's row) and/or a
    ``perplexity``; :func:`measure_classifier` and :func:`measure_lm` measure it too.
    Nothing is written: add the report to a :class:`ResultsTable` to keep it.
    ``model`` must be an ``nn.Module``.
    """
    check_module(model)
    _check_names(name, chapter, method)
    if accuracy is not None and not isinstance(accuracy, Accuracy):
        raise TypeError(f"accuracy must be a shrinklib.measure.Accuracy or None, got {type(accuracy).__name__}")
    timing = latency(model, batch_size=1, seq_len=seq_len, repeats=latency_repeats, warmup=latency_warmup)
    return Report(
        name=name, chapter=chapter, method=method,
        accuracy=None if accuracy is None else accuracy.value,
        accuracy_low=None if accuracy is None else accuracy.low,
        accuracy_high=None if accuracy is None else accuracy.high,
        params=count_parameters(model), nonzeros=nonzero_parameters(model),
        size_mb=size_on_disk(model) / 1e6,
        latency_ms=timing.median_ms, latency_iqr_ms=timing.iqr_ms, perplexity=perplexity,
        notes=notes, device=describe_device(model_device(model)),
    )


def measure_classifier(
    model: nn.Module,
    tokenizer,
    dataset,
    *,
    name: str,
    chapter: str,
    method: str,
    seq_len: int = 64,
    latency_repeats: int = 20,
    latency_warmup: int = 3,
    notes: str = "",
) -> Report:
    """Measure a classifier with the book's protocol and return its :class:`Report`.

    accuracy on ``dataset`` with a 95% bootstrap interval (sentences truncated to
    ``seq_len`` tokens), then the costs as in :func:`measure_model`: parameters and
    nonzero parameters, the size of the file :func:`shrinklib.save` writes, and the
    median latency of a batch of 1 x ``seq_len`` token ids (2 threads,
    ``latency_repeats`` runs). Nothing is written: add the report to a
    :class:`ResultsTable` to keep it.
    """
    check_module(model)
    _check_names(name, chapter, method)
    acc = quality.accuracy(model, dataset, tokenizer, max_length=seq_len)
    return measure_model(model, name=name, chapter=chapter, method=method, accuracy=acc, seq_len=seq_len,
                         latency_repeats=latency_repeats, latency_warmup=latency_warmup, notes=notes)


def measure_lm(
    model: nn.Module,
    tokenizer,
    text: str,
    *,
    name: str,
    chapter: str,
    method: str,
    block_size: int = 256,
    max_blocks: int | None = None,
    seq_len: int = 64,
    latency_repeats: int = 20,
    latency_warmup: int = 3,
    notes: str = "",
) -> Report:
    """Measure a language model with the book's protocol and return its :class:`Report`.

    :func:`shrinklib.measure.perplexity` on ``text`` (held-out text, such as
    ``shrinklib.data.lm_text("bbc_news", "evaluation")``) in non-overlapping blocks of
    ``block_size`` tokens, the first ``max_blocks`` of them if given; then the costs as
    in :func:`measure_model`. The report's accuracy columns are empty. Nothing is
    written: add the report to a :class:`ResultsTable` to keep it.
    """
    check_module(model)
    _check_names(name, chapter, method)
    ppl = quality.perplexity(model, tokenizer, text, block_size=block_size, max_blocks=max_blocks)
    return measure_model(model, name=name, chapter=chapter, method=method, perplexity=ppl, seq_len=seq_len,
                         latency_repeats=latency_repeats, latency_warmup=latency_warmup, notes=notes)
