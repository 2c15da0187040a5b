"""shrinklib.results: the files in results/, written by upsert and read from a checkout or a wheel."""
import json
import multiprocessing
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from shrinklib import measure, results
from shrinklib.lstm import BiLSTMClassifier

CHECKOUT = Path(__file__).resolve().parents[1]
STAMP = {c: f"<{c}>" for c in results.PROVENANCE_COLUMNS}


def test_upsert_replaces_rows_with_the_same_key_and_keeps_the_rest(tmp_path):
    out = tmp_path / "r.csv"
    assert results.upsert(out, [], ["method"]) == 0 and not out.exists()
    assert results.upsert(out, [{"method": "a", "level": None, "value": 1},
                                {"method": "b", "level": 0.5, "value": 2}], ["method", "level"]) == 2
    # a rerun of "a" (whose key holds a missing value) replaces it; "c" is new; "b" is kept
    assert results.upsert(out, [{"method": "a", "level": None, "value": 10},
                                {"method": "c", "level": 0.9, "value": 3, "extra": "x"}], ["method", "level"]) == 3
    frame = pd.read_csv(out).set_index("method")
    assert frame.loc["a", "value"] == 10 and frame.loc["b", "value"] == 2 and frame.loc["c", "extra"] == "x"


def test_upsert_stamps_every_row_with_its_provenance(tmp_path):
    out = tmp_path / "r.csv"
    results.upsert(out, [{"k": 1}], ["k"])  # the provenance now, as measure.provenance() gives it
    row = pd.read_csv(out, dtype=str).iloc[0]
    now = measure.provenance()
    assert {c: row[c] for c in ("device", "torch_version", "commit")} == {c: now[c] for c in ("device", "torch_version",
                                                                                           "commit")}
    results.upsert(out, [{"k": 2}, {"k": 3, "commit": "abc1234"}], ["k"], stamp=STAMP)  # a benchmark's stamp
    frame = pd.read_csv(out, dtype=str).set_index("k")
    assert frame.loc["2", "date"] == "<date>" and frame.loc["3", "date"] == "<date>"
    assert frame.loc["3", "commit"] == "abc1234"  # a row's own value is kept
    assert list(frame.columns[:1]) == ["device"] and set(results.PROVENANCE_COLUMNS) <= set(frame.columns)
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write leaves no temporary file


def _upserter(path, prefix, n):
    for i in range(n):
        results.upsert(path, [{"name": f"{prefix}{i}"}], ["name"], stamp=STAMP)


def test_two_writers_lose_nothing(tmp_path):
    path = tmp_path / "shared.csv"
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_upserter, args=(path, p, 8)) for p in ("x", "y")]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    assert sorted(pd.read_csv(path)["name"]) == sorted([f"x{i}" for i in range(8)] + [f"y{i}" for i in range(8)])


def test_write_frame_replaces_the_file_whole(tmp_path):
    out = tmp_path / "sub" / "f.csv"
    results.write_frame(out, pd.DataFrame({"a": [1, 2]}))
    results.write_frame(out, pd.DataFrame({"b": ["x"]}))
    assert pd.read_csv(out).to_dict("list") == {"b": ["x"]}
    assert [p.name for p in out.parent.iterdir()] == ["f.csv"]


def test_read_gives_the_checkouts_files():
    assert results.folder() == CHECKOUT / "results"
    on_disk = sorted(p.stem for p in (CHECKOUT / "results").glob("*.csv"))
    assert results.names() == on_disk and "ptq_bert" in on_disk
    pd.testing.assert_frame_equal(results.read("ptq_bert"), pd.read_csv(CHECKOUT / "results" / "ptq_bert.csv"))
    assert results.path("qat_bert") == CHECKOUT / "results" / "qat_bert.csv"


class _Characters:
    pad_token_id = 0

    def __call__(self, texts, padding=False, truncation=False, max_length=None, return_tensors=None):
        rows = [[ord(c) % 49 + 1 for c in t][:max_length] for t in texts]
        ids = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def test_classifier_row_is_the_measure_protocol():
    torch.manual_seed(0)
    model = BiLSTMClassifier(vocab_size=50, embed_dim=8, hidden_size=6, num_layers=1, num_labels=2).eval()
    tokenizer = _Characters()
    dataset = {"text": ["good", "bad film", "a fine one", "dull", "ok"], "label": [1, 0, 1, 0, 1]}
    acc = measure.accuracy(model, dataset, tokenizer, progress=False)
    assert results.accuracy_columns(acc) == {"test_accuracy": acc.value, "test_low": acc.low, "test_high": acc.high,
                                             "n_test": 5}
    trained = SimpleNamespace(steps=7, seconds=12.34)
    assert results.classifier_row(model, tokenizer, dataset, trained) == {
        **results.accuracy_columns(acc), "params": measure.count_parameters(model),
        "size_mb": measure.size_on_disk(model) / 1e6, "steps": 7, "train_seconds": 12.3}
    assert results.classifier_row(model, tokenizer, dataset)["steps"] == 0


def test_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no results file named 'nope' in .*; the names there are \[.*'ptq_bert'"):
        results.read("nope")
    with pytest.raises(FileNotFoundError, match="no results file named '../results/ptq_bert'"):
        results.read("../results/ptq_bert")
    with pytest.raises(TypeError, match="name must be a str such as 'ptq_bert', got PosixPath"):
        results.read(Path("ptq_bert"))
    out = tmp_path / "r.csv"
    with pytest.raises(ValueError, match=r"file must name a .csv file, got '.*r.txt'"):
        results.upsert(tmp_path / "r.txt", [{"k": 1}], ["k"], stamp=STAMP)
    with pytest.raises(ValueError, match="key must be a non-empty list of column names, got 'k'"):
        results.upsert(out, [{"k": 1}], "k", stamp=STAMP)
    with pytest.raises(TypeError, match="wrap a single row in a list"):
        results.upsert(out, {"k": 1}, ["k"], stamp=STAMP)
    with pytest.raises(TypeError, match="rows must hold only dicts, got int at position 1"):
        results.upsert(out, [{"k": 1}, 2], ["k"], stamp=STAMP)
    with pytest.raises(ValueError, match=r"row 0 lacks the key columns \['seed'\]"):
        results.upsert(out, [{"k": 1}], ["k", "seed"], stamp=STAMP)
    with pytest.raises(ValueError, match=r"every row must carry its provenance; rows and stamp lack \['commit'\]"):
        results.upsert(out, [{"k": 1}], ["k"], stamp={**STAMP, "commit": None})
    assert not out.exists()
    with pytest.raises(TypeError, match="accuracy must be a shrinklib.measure.Accuracy, got float"):
        results.accuracy_columns(0.8)


def test_an_installed_wheel_reads_its_own_copy(tmp_path):
    """Built wheel: holds every results/*.csv; installed alone, it reads them with no checkout in sight."""
    wheels, target, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(CHECKOUT)], check=True, cwd=CHECKOUT, capture_output=True)
    (wheel,) = wheels.glob("shrinklib-*.whl")
    packed = {Path(n).name for n in zipfile.ZipFile(wheel).namelist() if n.startswith("shrinklib/results_data/")}
    assert packed == {p.name for p in (CHECKOUT / "results").glob("*.csv")}
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    child = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import shrinklib.results as r; "
        "print(json.dumps({'file': r.__file__, 'path': sys.path, 'names': r.names(), 'rows': len(r.read('ptq_bert')),"
        " 'folder': str(r.folder())}))"
    )
    # -I: no PYTHONPATH, no current folder on sys.path; the cwd holds nothing of the checkout
    done = subprocess.run([sys.executable, "-I", "-c", child, str(target)], cwd=elsewhere, capture_output=True,
                          text=True, check=True)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["file"] == str(target / "shrinklib" / "results.py")
    assert not any(Path(p).resolve() == CHECKOUT for p in seen["path"] if p)
    assert seen["folder"] == str(target / "shrinklib" / "results_data")
    assert seen["names"] == results.names() and seen["rows"] == len(results.read("ptq_bert"))
