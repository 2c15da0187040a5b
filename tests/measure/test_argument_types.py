"""Every public function of ``shrinklib.measure`` refuses an argument of the wrong type up front.

A string or an int where a model, a dataset, a list or a path belongs raises a
``TypeError`` that names the argument; a measurement handed a model and a wrong option
leaves the model as it was (its modes and hooks included).
"""
import pandas as pd
import pytest

from shrinklib import measure
from shrinklib.measure.forward import call, dummy_token_ids, model_device

from .conftest import ToyTokenizer, make_bert

DATA = {"text": ["a fine film", "a dull one"], "label": [1, 0]}
NAMES = {"name": "m", "chapter": "1", "method": "dense"}


def _enter(context):
    with context:
        pass


#: ``name: call(model)`` for every public function that takes a model first.
TAKES_A_MODEL = {
    "count_parameters": measure.count_parameters,
    "parameters_by_component": measure.parameters_by_component,
    "nonzeros": measure.nonzeros,
    "sparsity": measure.sparsity,
    "nonzero_parameters": measure.nonzero_parameters,
    "size_on_disk": measure.size_on_disk,
    "size_in_memory": measure.size_in_memory,
    "peak_activation_memory": measure.peak_activation_memory,
    "macs": measure.macs,
    "macs_by_component": measure.macs_by_component,
    "macs_by_module": measure.macs_by_module,
    "dummy_inputs": measure.dummy_inputs,
    "dummy_token_ids": lambda m: dummy_token_ids(m, 1, 4),
    "model_device": model_device,
    "evaluating": lambda m: _enter(measure.evaluating(m)),
    "latency_by_component": measure.latency_by_component,
    "predict_logits": lambda m: measure.predict_logits(m, DATA, ToyTokenizer()),
    "correctness": lambda m: measure.correctness(m, DATA, ToyTokenizer()),
    "accuracy": lambda m: measure.accuracy(m, DATA, ToyTokenizer()),
    "perplexity": lambda m: measure.perplexity(m, ToyTokenizer(), "some text"),
    "measure_model": lambda m: measure.measure_model(m, **NAMES),
    "measure_classifier": lambda m: measure.measure_classifier(m, ToyTokenizer(), DATA, **NAMES),
    "measure_lm": lambda m: measure.measure_lm(m, ToyTokenizer(), "some text", **NAMES),
}


@pytest.mark.parametrize("bad", ["bert", 3], ids=["str", "int"])
@pytest.mark.parametrize("name", sorted(TAKES_A_MODEL))
def test_a_model_that_is_not_a_module_is_refused_by_name(name, bad):
    with pytest.raises(TypeError, match=f"model must be a torch.nn.Module, got {type(bad).__name__}"):
        TAKES_A_MODEL[name](bad)


#: ``(call(model), error, message)``: a wrong argument other than the model; the model must not change.
WRONG_ARGUMENT = {
    "module_weights module": (lambda m: measure.module_weights("query"), TypeError, "module must be a torch.nn.Module, got str"),
    "nonzeros filter_fn": (lambda m: measure.nonzeros(m, filter_fn="query"), TypeError, "filter_fn must be callable"),
    "call model": (lambda m: call(3, {}), TypeError, "model must be a model or a callable, got int"),
    "predict_logits dataset": (lambda m: measure.predict_logits(m, ["a fine film"], ToyTokenizer()), TypeError,
                               "dataset must be a datasets.Dataset or a dict of columns, got list"),
    "predict_logits tokenizer": (lambda m: measure.predict_logits(m, DATA, "bert-base-uncased"), TypeError,
                                 r"tokenizer must be a tokenizer \(callable on text\), got str"),
    "perplexity tokenizer": (lambda m: measure.perplexity(m, 3, "some text"), TypeError, "tokenizer must be a tokenizer"),
    "perplexity text": (lambda m: measure.perplexity(m, ToyTokenizer(), ["some", "text"]), TypeError, "text must be a str, got list"),
    "accuracy confidence": (lambda m: measure.accuracy(m, DATA, ToyTokenizer(), confidence=float("nan")), ValueError,
                            "confidence must be a number strictly between 0 and 1, got nan"),
    "accuracy seed": (lambda m: measure.accuracy(m, DATA, ToyTokenizer(), seed=-1), ValueError, "seed must be a non-negative int"),
    "latency inputs": (lambda m: measure.latency("model"), TypeError, "fn_or_model must be a model or a callable, got str"),
    "measure_model accuracy": (lambda m: measure.measure_model(m, accuracy=0.8, **NAMES), TypeError,
                               "accuracy must be a shrinklib.measure.Accuracy or None, got float"),
    "to_frame rows": (lambda m: measure.to_frame(3), TypeError, "rows must be an iterable of Report, got int"),
    "ResultsTable path": (lambda m: measure.ResultsTable(3), TypeError, "path must be a str, a path or None, got int"),
    "describe_device device": (lambda m: measure.describe_device(0), TypeError,
                               "device must be a torch.device, a device name or None, got int"),
    "git_commit folder": (lambda m: measure.git_commit(3), TypeError, "folder must be a str, a path or None, got int"),
    "seed_summary by": (lambda m: measure.seed_summary(pd.DataFrame({"a": [1]}), 3), TypeError,
                        "by must be a column name or a list of them, got int"),
    "seed_summary order": (lambda m: measure.seed_summary(pd.DataFrame({"a": [1], "test_accuracy": [0.5]}), "a", order=1),
                           TypeError, r"order must be a list of settings \(values of by\), got int"),
    "Latency median_ms": (lambda m: measure.Latency(float("nan"), 0.0, 1.0, 1.0, 1, 1, (1.0,)), ValueError,
                          "median_ms must be a finite number of milliseconds >= 0, got nan"),
}


@pytest.mark.parametrize("name", sorted(WRONG_ARGUMENT))
def test_a_wrong_argument_is_refused_by_name_and_the_model_is_left_as_it_was(name, unchanged):
    function, error, message = WRONG_ARGUMENT[name]
    model = make_bert()
    model.classifier.train()  # a mixed mode that a measurement must give back
    with unchanged(model), pytest.raises(error, match=message):
        function(model)


@pytest.mark.parametrize("call, error, message", [
    (lambda: measure.bootstrap_ci("0101"), TypeError, "values must be a sequence of numbers, got str"),
    (lambda: measure.bootstrap_ci([1.0, "x"]), TypeError, "values must be a sequence of numbers, got list"),
    (lambda: measure.paired_bootstrap([1.0], {"a": 1}), TypeError, "b must be a sequence of numbers, got dict"),
    (lambda: measure.describe_device("gpu0"), ValueError, "device must name a device such as 'cpu' or 'cuda:0', got 'gpu0'"),
])
def test_samples_and_devices_of_the_wrong_kind_are_refused_by_name(call, error, message):
    with pytest.raises(error, match=message):
        call()
