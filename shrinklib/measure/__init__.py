"""Measuring a model: what it costs and how well it still works.

The measurement protocol of the book
------------------------------------
Every model in every chapter is measured the same way, so that rows of the results
table compare:

* **Quality.** Accuracy on the held-out Rotten Tomatoes split, sentences truncated to
  64 tokens, with a 95% percentile-bootstrap interval (1,000 resamples, seed 0); for a
  decoder, perplexity over non-overlapping 256-token blocks.
* **Parameters.** Every parameter once (tied weights once); *nonzeros* counts the
  nonzero entries, so pruning shows up before any format exploits it. Breakdowns by
  component: embeddings, attention, FFN, norms, head, recurrent, other.
* **Size.** The bytes of the safetensors file that :func:`shrinklib.save` writes, in MB
  (1e6 bytes); memory as the bytes of distinct parameter and buffer storages, plus the
  peak bytes of activations alive at once in a forward pass
  (:func:`peak_activation_memory`).
* **Compute.** Multiply-accumulates of one forward pass on dummy token ids
  (batch 1 x 128 tokens unless stated), counted by PyTorch's ``FlopCounterMode`` with
  the CPU attention kernel and recurrent layers added, per module and per component.
* **Latency.** Median (and interquartile range) of 20 timed forward passes of batch 1 x
  64 tokens after 3 warm-up passes, in eval mode under ``torch.inference_mode`` on 2
  CPU threads; the machine is recorded with the number. :func:`latency_by_component`
  splits that time by component (each module's own time, via hooks).

:func:`measure_classifier` and :func:`measure_lm` run the whole protocol and return a
:class:`Report` (:func:`measure_model` measures the costs of a model whose quality was
measured elsewhere); :class:`ResultsTable` keeps the rows of all chapters in one CSV.

"A beats B" rests on :func:`paired_bootstrap` of the two models' :func:`correctness` on
the same test sentences, or on several seeds with their spread (:func:`seed_summary`).
"""
from shrinklib.measure.activation_memory import peak_activation_memory
from shrinklib.measure.bootstrap import PairedDifference, bootstrap_ci, paired_bootstrap
from shrinklib.measure.component_latency import latency_by_component
from shrinklib.measure.components import COMPONENTS, component_of
from shrinklib.measure.counts import (
    count_parameters,
    module_weights,
    nonzero_parameters,
    nonzeros,
    parameters_by_component,
    sparsity,
)
from shrinklib.measure.forward import dummy_inputs, evaluating
from shrinklib.measure.latency import Latency, latency
from shrinklib.measure.macs import macs, macs_by_component, macs_by_module, recurrent_macs
from shrinklib.measure.quality import Accuracy, accuracy, correctness, perplexity, predict_logits
from shrinklib.measure.report import (
    COLUMNS,
    Report,
    ResultsTable,
    describe_device,
    git_commit,
    provenance,
    measure_classifier,
    measure_lm,
    measure_model,
    to_frame,
)
from shrinklib.measure.seeds import SEED_STATISTICS, seed_summary
from shrinklib.measure.size import size_in_memory, size_on_disk

__all__ = [
    "COMPONENTS", "component_of",
    "count_parameters", "parameters_by_component", "nonzeros", "sparsity", "nonzero_parameters", "module_weights",
    "size_on_disk", "size_in_memory", "peak_activation_memory",
    "macs", "macs_by_component", "macs_by_module", "recurrent_macs",
    "dummy_inputs", "evaluating",
    "Latency", "latency", "latency_by_component",
    "Accuracy", "accuracy", "correctness", "perplexity", "predict_logits",
    "bootstrap_ci", "paired_bootstrap", "PairedDifference", "seed_summary", "SEED_STATISTICS",
    "Report", "ResultsTable", "COLUMNS", "to_frame", "measure_classifier", "measure_lm", "measure_model",
    "describe_device", "provenance", "git_commit",
]
