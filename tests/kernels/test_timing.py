"""shrinklib.kernels.timing: every candidate checked against its reference, timed, and its rows kept."""
import pandas as pd
import pytest
import torch

from shrinklib import results
from shrinklib.kernels.timing import BASELINE, KEY, bench, time_candidates, write_rows

STAMP = {c: f"<{c}>" for c in results.PROVENANCE_COLUMNS}


def _candidates(x, w, wrong=False):
    expected = x @ w.T
    return {BASELINE: (lambda: x @ w.T, None),
            "transposed first": (lambda: (w @ x.T).T + (1.0 if wrong else 0.0), expected)}


def test_time_candidates_checks_times_and_compares_with_the_baseline(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(5, 24, generator=g), torch.randn(40, 24, generator=g)
    rows = []
    time_candidates(_candidates(x, w), rows, shape_name="toy", n=40, k=24, m=5, dtype=torch.float32, stamp=STAMP,
                    dry=True)
    assert [r["kernel"] for r in rows] == [BASELINE, "transposed first"]
    assert rows[0]["speedup_vs_dense"] == 1.0 and all(r["median_ms"] > 0 for r in rows)
    assert rows[1]["speedup_vs_dense"] == rows[0]["median_ms"] / rows[1]["median_ms"]
    assert rows[1]["dtype"] == "float32" and rows[1]["date"] == "<date>" and set(KEY) <= set(rows[1])
    assert bench(lambda: None, dry=True) >= 0

    out = tmp_path / "kernels.csv"
    write_rows(rows, out, dry=True)
    assert not out.exists()  # a dry run writes nothing
    write_rows(rows, out, dry=False)
    write_rows(rows[1:], out, dry=False)  # a rerun of one kernel replaces its row
    frame = pd.read_csv(out)
    assert len(frame) == 2 and sorted(frame["kernel"]) == sorted([BASELINE, "transposed first"])


def test_bad_input():
    x, w = torch.randn(3, 8), torch.randn(16, 8)
    candidates = _candidates(x, w)
    with pytest.raises(AssertionError, match="transposed first gives wrong results for toy, M=3"):
        time_candidates(_candidates(x, w, wrong=True), [], shape_name="toy", n=16, k=8, m=3, dtype=torch.float32,
                        stamp=STAMP, dry=True)
    backwards = dict(reversed(list(candidates.items())))
    with pytest.raises(ValueError, match="the first candidate must be the 'dense matmul' baseline, got"):
        time_candidates(backwards, [], shape_name="toy", n=16, k=8, m=3, dtype=torch.float32, stamp=STAMP, dry=True)
    with pytest.raises(ValueError, match="the first candidate must be the 'dense matmul' baseline, got \\[\\]"):
        time_candidates({}, [], shape_name="toy", n=16, k=8, m=3, dtype=torch.float32, stamp=STAMP, dry=True)
