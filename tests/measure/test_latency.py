import pytest
import torch

from shrinklib.measure import Latency, latency


def test_calls_warmup_plus_repeats_under_the_requested_setting():
    seen = []

    def fn():
        seen.append((torch.get_num_threads(), torch.is_inference_mode_enabled()))

    torch.set_num_threads(1)
    result = latency(fn, warmup=2, repeats=5, threads=2)
    assert len(seen) == 7 and set(seen) == {(2, True)}
    assert torch.get_num_threads() == 1  # restored
    assert result.repeats == 5 and result.threads == 2 and len(result.samples_ms) == 5
    assert result.q25_ms <= result.median_ms <= result.q75_ms
    assert result.iqr_ms == pytest.approx(result.q75_ms - result.q25_ms)


def test_inputs_forms():
    got = []
    latency(lambda a, b: got.append((a, b)), (1, 2), warmup=0, repeats=1, threads=1)
    latency(lambda x=None: got.append(x), {"x": 3}, warmup=0, repeats=1, threads=1)
    latency(lambda t: got.append(t.shape), torch.zeros(4), warmup=0, repeats=1, threads=1)
    assert got == [(1, 2), 3, torch.Size([4])]


def test_model_with_dummy_inputs(bert):
    bert.train()
    result = latency(bert, batch_size=1, seq_len=16, warmup=1, repeats=3, threads=1)
    assert result.median_ms > 0
    assert bert.training  # mode restored


def test_statistics_from_samples():
    result = Latency.from_samples([5.0, 1.0, 3.0, 2.0, 4.0], threads=1)
    assert (result.q25_ms, result.median_ms, result.q75_ms, result.iqr_ms) == (2.0, 3.0, 4.0, 2.0)
    assert "3.00 ms" in str(result)


def test_bad_input(bert):
    with pytest.raises(ValueError, match="repeats must be an int >= 1, got 0"):
        latency(bert, repeats=0)
    with pytest.raises(ValueError, match="threads must be an int >= 1, got 0"):
        latency(bert, threads=0)
    with pytest.raises(ValueError, match="threads must be at most the"):
        latency(bert, threads=100_000)
    with pytest.raises(ValueError, match="warmup must be an int >= 0, got -1"):
        latency(bert, warmup=-1)
    with pytest.raises(TypeError, match="fn_or_model must be a model or a callable, got int"):
        latency(3)
    with pytest.raises(ValueError, match="samples_ms must hold repeats=2 samples, got 1"):
        Latency(1.0, 0.0, 1.0, 1.0, 2, 1, (1.0,))
