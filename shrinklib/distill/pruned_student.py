"""A DistilBERT-style student whose feed-forward blocks are pruned before it is trained.

Distillation picks the layers; structured pruning then narrows them. Each kept teacher
layer's FFN ``W_2 act(W_1 x + b_1) + b_2`` loses the neurons that matter least *to the
teacher*: neuron ``j`` is scored by the first-order Taylor importance of
:func:`shrinklib.prune.neuron_importance` (Molchanov et al., 2017, "Pruning Convolutional
Neural Networks for Resource Efficient Inference"; used for BERT's FFNs by Michel et al.,
2019, and CoFi, Xia et al., 2022), ``I_j = sum |a_j * dL/da_j|`` over the teacher's task
loss on ``batches``, and only the highest-scoring ``keep`` share of each layer stays
(:func:`shrinklib.prune.prune_neurons_` slices ``W_1``'s rows and ``W_2``'s columns). The
student is then distilled like any other (Sanh et al., 2019, for the initialization). The
survey practice of combining methods (Gupta & Agrawal, 2022, "Compression of Deep Learning
Models for Text: A Survey") in one constructor: notebook 4.5 adds int8 on top.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn

from shrinklib._checks import check_iterable, check_mapping, check_number, check_positive_int
from shrinklib.distill.student import student_from_teacher
from shrinklib.prune.neurons import neuron_importance, prune_neurons_


def student_with_pruned_ffn(teacher: nn.Module, layers: Sequence[int], batches: Iterable[dict], *,
                            keep: float = 0.5, max_batches: int | None = None) -> nn.Module:
    """:func:`student_from_teacher` ``(teacher, layers)`` whose FFNs keep the ``keep`` share of neurons the teacher needs most.

    ``batches``: dicts the teacher takes with ``labels`` (its loss is differentiated to
    score the neurons; at most ``max_batches`` of them). In student layer ``i`` the kept
    neurons are the ``max(1, round(keep * d_ff))`` highest-scoring ones of teacher layer
    ``layers[i]``, in their original order. The teacher is left untouched, also when
    scoring fails: its modes are given back and the hooks that score it are removed.

    Checked first: ``keep`` (a finite number in (0, 1]), ``batches`` (an iterable, not a
    string; each batch a mapping, checked as it is read), ``max_batches`` (None or an int
    >= 1), then the teacher and ``layers`` (:func:`student_from_teacher`).
    """
    check_number("keep", keep, low=0, low_open=True, high=1, what="the share of FFN neurons to keep, in (0, 1]")
    check_iterable("batches", batches, what="an iterable of batches (a list of dicts, a DataLoader)")
    if max_batches is not None:
        check_positive_int("max_batches", max_batches)
    student = student_from_teacher(teacher, layers)  # checks the teacher and the layers first
    checked = (check_mapping(f"batches[{i}]", batch) for i, batch in enumerate(batches))
    # A Hugging Face classifier that computes a loss sets config.problem_type on the way: the
    # teacher's is given back, so scoring leaves no trace on it (its hooks and modes are
    # restored by neuron_importance itself), whether it succeeds or fails.
    config = getattr(teacher, "config", None)
    problem_type = getattr(config, "problem_type", None)
    try:
        scores = neuron_importance(teacher, checked, max_batches=max_batches)
    finally:
        if hasattr(config, "problem_type"):
            config.problem_type = problem_type
    plan = {}
    for i, layer in enumerate(layers):
        count = max(1, round(keep * scores[layer].numel()))
        plan[i] = torch.argsort(scores[layer], descending=True)[:count].tolist()
    return prune_neurons_(student, plan)
