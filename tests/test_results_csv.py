"""benchmarks/results_csv.py: a rerun replaces its own rows and keeps the others."""
import importlib.util
from pathlib import Path

import pandas as pd

_spec = importlib.util.spec_from_file_location("results_csv", Path(__file__).parents[1] / "benchmarks" / "results_csv.py")
results_csv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(results_csv)


def test_upsert_replaces_rows_with_the_same_key_and_keeps_the_rest(tmp_path):
    out = tmp_path / "r.csv"
    assert results_csv.upsert(out, [], ["method"]) == 0 and not out.exists()
    assert results_csv.upsert(out, [{"method": "a", "level": None, "value": 1},
                                    {"method": "b", "level": 0.5, "value": 2}], ["method", "level"]) == 2
    # a rerun of "a" (whose key holds a missing value) replaces it; "c" is new; "b" is kept
    assert results_csv.upsert(out, [{"method": "a", "level": None, "value": 10},
                                    {"method": "c", "level": 0.9, "value": 3, "extra": "x"}], ["method", "level"]) == 3
    frame = pd.read_csv(out).set_index("method")
    assert frame.loc["a", "value"] == 10 and frame.loc["b", "value"] == 2 and frame.loc["c", "extra"] == "x"
