import multiprocessing
import math

import numpy as np
import pandas as pd
import pytest
import torch

from shrinklib.measure import (
    COLUMNS,
    Report,
    ResultsTable,
    count_parameters,
    measure_classifier,
    nonzero_parameters,
    size_on_disk,
    to_frame,
)

from .test_quality import LABELS, TEXTS


def row(name="teacher", **overrides) -> Report:
    fields = dict(
        name=name, chapter="01_foundations", method="none", accuracy=0.8, accuracy_low=0.77, accuracy_high=0.83,
        params=22_700_000, nonzeros=22_690_000, size_mb=90.9, latency_ms=12.5, latency_iqr_ms=0.4,
    )
    fields.update(overrides)
    return Report(**fields)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SHRINKLIB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_report_fills_in_the_machine_and_normalizes_numbers():
    r = row(accuracy=np.float32(0.75), params=np.int64(10), nonzeros=np.int64(9))
    assert r.device.startswith("cpu: ") and r.torch_version == torch.__version__ and r.date[:2] == "20"
    assert type(r.accuracy) is float and type(r.params) is int
    assert r.perplexity is None and r.notes == ""
    lm = row("smollm", accuracy=None, accuracy_low=None, accuracy_high=None, perplexity=21.3)
    assert lm.accuracy is None and lm.perplexity == 21.3


def test_to_frame_keeps_column_order():
    df = to_frame([row("a"), row("b", perplexity=2.0)])
    assert tuple(df.columns) == COLUMNS and list(df["name"]) == ["a", "b"]
    assert to_frame([]).empty


def test_table_lives_in_the_cache_and_upserts_in_place(cache):
    table = ResultsTable.load()
    assert table.path == cache / "results_table.csv" and len(table) == 0
    table.add(row("a")).add(row("b", notes="int8, per channel")).add(row("c"))
    table.add(row("b", accuracy=0.5, accuracy_low=0.4, accuracy_high=0.6))
    df = ResultsTable.load().frame()
    assert list(df["name"]) == ["a", "b", "c"]
    assert df.loc[1, "accuracy"] == 0.5 and df.loc[1, "notes"] == ""
    assert df.loc[0, "notes"] == "" and math.isnan(df.loc[0, "perplexity"])
    assert df["params"].dtype.kind == "i"
    table.remove("c")
    assert list(table.frame()["name"]) == ["a", "b"]
    assert not list(cache.glob("*.tmp"))  # no leftover temporary files


def _writer(path, prefix, n):
    table = ResultsTable(path)
    for i in range(n):
        table.add(row(f"{prefix}{i}"))


def test_two_writers_lose_nothing(tmp_path):
    path = tmp_path / "shared.csv"
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_writer, args=(path, p, 8)) for p in ("x", "y")]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    assert sorted(ResultsTable(path).frame()["name"]) == sorted([f"x{i}" for i in range(8)] + [f"y{i}" for i in range(8)])


def test_measure_classifier_runs_the_protocol(bert, tokenizer):
    report = measure_classifier(
        bert, tokenizer, {"text": TEXTS, "label": LABELS}, name="tiny", chapter="test", method="none",
        seq_len=16, latency_repeats=2,
    )
    assert report.params == count_parameters(bert) and report.nonzeros == nonzero_parameters(bert)
    assert report.size_mb == size_on_disk(bert) / 1e6
    assert 0 <= report.accuracy_low <= report.accuracy <= report.accuracy_high <= 1
    assert report.latency_ms > 0
    ResultsTable.load().add(report)
    assert ResultsTable.load().frame().loc[0, "name"] == "tiny"


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="accuracy must be a finite number in \\[0.0, 1.0\\] or None, got 1.5"):
        row(accuracy=1.5, accuracy_high=1.0)
    with pytest.raises(ValueError, match="must be given together"):
        row(accuracy_low=None)
    with pytest.raises(ValueError, match="accuracy_low must not exceed accuracy_high"):
        row(accuracy_low=0.9, accuracy_high=0.85, accuracy=0.87)
    with pytest.raises(ValueError, match="nonzeros must not exceed params=10, got 11"):
        row(params=10, nonzeros=11)
    with pytest.raises(ValueError, match="params must be an int >= 0, got 1.5"):
        row(params=1.5)
    with pytest.raises(ValueError, match="name must be a non-empty str, got ''"):
        row("")
    with pytest.raises(ValueError, match="perplexity must be a finite number in \\[1.0, inf\\] or None, got 0.5"):
        row(perplexity=0.5)
    with pytest.raises(TypeError, match="wrap a single report in a list"):
        to_frame(row())
    with pytest.raises(TypeError, match="rows must hold only Report objects, got dict at position 0"):
        to_frame([{"name": "a"}])
    with pytest.raises(TypeError, match="report must be a Report, got dict"):
        ResultsTable(tmp_path / "t.csv").add({"name": "a"})
    with pytest.raises(ValueError, match="path must name a .csv file"):
        ResultsTable(tmp_path / "t.json")
    with pytest.raises(ValueError, match="no row named 'zzz'"):
        ResultsTable(tmp_path / "t.csv").remove("zzz")
    (tmp_path / "junk.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="is not a results table"):
        ResultsTable.load(tmp_path / "junk.csv")
    with pytest.raises(ValueError, match="chapter must be a non-empty str"):
        measure_classifier(torch.nn.Linear(2, 2), None, {"text": []}, name="x", chapter="", method="m")


def test_provenance_names_device_versions_date_and_commit():
    import re

    from shrinklib.measure import provenance

    stamp = provenance()
    assert set(stamp) == {"device", "torch_version", "transformers_version", "shrinklib_version", "date", "commit"}
    assert stamp["device"].startswith(("cpu: ", "cuda: "))
    assert re.fullmatch(r"[0-9a-f]{4,40}(\+dirty)?|unknown", stamp["commit"])
