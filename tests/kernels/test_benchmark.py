"""The kernel benchmarks' protocol: check each candidate, time it against the dense baseline, keep the rows."""
import pandas as pd
import pytest
import torch

from shrinklib.kernels.benchmark import BASELINE, KernelBenchmark


def _candidates(x, w, wrong=False):
    expected = x @ w.T
    return {BASELINE: (lambda: x @ w.T, None),
            "same product": (lambda: (x.double() @ w.double().T).float() + (1.0 if wrong else 0.0), expected)}


def test_a_dry_run_checks_times_and_keeps_one_row_per_kernel(capsys):
    bench = KernelBenchmark(True, "cpu", torch.float32, {"device": "cpu: test"})
    x, w = torch.randn(17, 48), torch.randn(40, 48)
    new = bench.time(_candidates(x, w), shape_name="tiny", n=40, k=48, m=17)
    assert new == bench.rows and [row["kernel"] for row in new] == [BASELINE, "same product"]
    for row in new:
        assert row["median_ms"] > 0 and row["dtype"] == "float32" and row["device"] == "cpu: test"
        assert (row["shape"], row["N"], row["K"], row["M"]) == ("tiny", 40, 48, 17)
        assert row["speedup_vs_dense"] == pytest.approx(new[0]["median_ms"] / row["median_ms"])
    assert new[0]["speedup_vs_dense"] == 1.0
    bench.time(_candidates(x[:1], w), shape_name="tiny", n=40, k=48, m=1)
    assert len(bench.rows) == 4
    assert bench.write("unused.csv") == 0 and "dry run ok: 4 timings (nothing written)" in capsys.readouterr().out


def test_write_merges_the_rows_by_key_with_their_provenance(tmp_path):
    from shrinklib.measure import provenance

    stamp = {**provenance("cpu"), "triton_version": "3.x"}
    bench = KernelBenchmark(False, "cpu", torch.float16, stamp)

    def row(kernel, ms, m=8):
        return {"shape": "s", "N": 4, "K": 4, "M": m, "kernel": kernel, "median_ms": ms, "dtype": "float16", **stamp}

    out = tmp_path / "results" / "kernels.csv"
    bench.rows.extend([row(BASELINE, 2.0), row("k", 1.0)])
    assert bench.write(out) == 2
    rerun = KernelBenchmark(False, "cpu", torch.float16, stamp)
    rerun.rows.extend([row("k", 0.5), row("k", 3.0, m=16)])  # one measured again, one new
    assert rerun.write(out) == 2
    got = pd.read_csv(out).sort_values(["M", "kernel"]).reset_index(drop=True)
    assert got[["M", "kernel", "median_ms"]].values.tolist() == [[8, BASELINE, 2.0], [8, "k", 0.5], [16, "k", 3.0]]


def test_the_command_line_picks_a_dry_run_on_the_cpu():
    bench = KernelBenchmark.from_command_line("test", ["--dry-run"])
    assert (bench.dry, bench.device, bench.dtype) == (True, "cpu", torch.float32)
    assert {"device", "torch_version", "triton_version", "date", "commit"} <= set(bench.stamp)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_a_real_run_is_refused():
    with pytest.raises(SystemExit, match="this benchmark needs a CUDA GPU"):
        KernelBenchmark.from_command_line("test", [])


@pytest.mark.parametrize("call, error, message", [
    (lambda: KernelBenchmark(True, "cpu", torch.float32).time(
        {"k": (lambda: None, None), BASELINE: (lambda: None, None)}, shape_name="s", n=1, k=1, m=1),
     ValueError, "the first candidate must be the 'dense matmul' baseline"),
    (lambda: KernelBenchmark(True, "cpu", torch.float32).time({}, shape_name="s", n=1, k=1, m=1),
     ValueError, "the first candidate must be the 'dense matmul' baseline"),
    (lambda: KernelBenchmark(True, "cpu", torch.float32).time(
        _candidates(torch.randn(3, 8), torch.randn(5, 8), wrong=True), shape_name="tiny", n=5, k=8, m=3),
     AssertionError, "same product gives wrong results for tiny, M=3"),
    (lambda: KernelBenchmark(1, "cpu", torch.float32), TypeError, "dry must be True or False, got 1"),
    (lambda: KernelBenchmark(True, "cpu", torch.bfloat16), ValueError,
     "dtype must be torch.float16 or torch.float32, got torch.bfloat16"),
])
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()
