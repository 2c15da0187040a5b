"""measure_lm and measure_model: the results-table protocol for a language model, and for
a model whose quality was measured elsewhere (measure_classifier is tested in test_report)."""
import pytest
import torch

from shrinklib.measure import (
    Accuracy,
    Report,
    ResultsTable,
    count_parameters,
    measure_lm,
    measure_model,
    nonzero_parameters,
    perplexity,
    size_on_disk,
)

TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SHRINKLIB_CACHE", str(tmp_path / "cache"))


def test_measure_lm_runs_the_protocol(llama, tokenizer):
    with torch.no_grad():
        llama.model.layers[0].mlp.down_proj.weight[:, :5] = 0.0
    report = measure_lm(llama, tokenizer, TEXT, name="tiny llama", chapter="test", method="none", block_size=16,
                        max_blocks=3, seq_len=16, latency_repeats=2, latency_warmup=1, notes="3 x 16 tokens")
    assert isinstance(report, Report) and report.notes == "3 x 16 tokens"
    assert report.perplexity == pytest.approx(perplexity(llama, tokenizer, TEXT, block_size=16, max_blocks=3), rel=1e-12)
    assert report.accuracy is None and report.accuracy_low is None and report.accuracy_high is None
    assert report.params == count_parameters(llama) and report.nonzeros == nonzero_parameters(llama) < report.params
    assert report.size_mb == size_on_disk(llama) / 1e6
    assert report.latency_ms > 0 and report.device.startswith("cpu: ")
    ResultsTable.load().add(report)
    assert ResultsTable.load().frame().loc[0, "perplexity"] == pytest.approx(report.perplexity)


def test_measure_model_keeps_the_quality_it_is_given(bert):
    given = Accuracy(0.81, 0.79, 0.83, n=1500)
    report = measure_model(bert, name="from a benchmark", chapter="test", method="none", accuracy=given,
                           seq_len=16, latency_repeats=2, latency_warmup=0)
    assert (report.accuracy, report.accuracy_low, report.accuracy_high) == (0.81, 0.79, 0.83)
    assert report.perplexity is None and report.params == count_parameters(bert)
    assert report.size_mb == size_on_disk(bert) / 1e6
    both = measure_model(bert, name="both", chapter="test", method="none", accuracy=given, perplexity=12.5,
                         seq_len=16, latency_repeats=1)
    assert both.perplexity == 12.5 and both.accuracy == 0.81


def test_bad_input(bert, llama, tokenizer):
    with pytest.raises(ValueError, match="method must be a non-empty str, got ''"):
        measure_lm(llama, tokenizer, TEXT, name="x", chapter="test", method="")
    with pytest.raises(ValueError, match="block_size must be an int >= 2, got 1"):
        measure_lm(llama, tokenizer, TEXT, name="x", chapter="test", method="m", block_size=1)
    with pytest.raises(TypeError, match="text must be a str, got list"):
        measure_lm(llama, tokenizer, [TEXT], name="x", chapter="test", method="m", block_size=16)
    with pytest.raises(TypeError, match="accuracy must be a shrinklib.measure.Accuracy or None, got float"):
        measure_model(bert, name="x", chapter="test", method="m", accuracy=0.8)
    with pytest.raises(ValueError, match="perplexity must be a finite number in \\[1.0, inf\\] or None, got 0.5"):
        measure_model(bert, name="x", chapter="test", method="m", perplexity=0.5, seq_len=16, latency_repeats=1)
    with pytest.raises(ValueError, match="warmup must be an int >= 0, got -1"):
        measure_model(bert, name="x", chapter="test", method="m", latency_warmup=-1)
