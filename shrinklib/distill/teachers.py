"""Several teachers: distil an ensemble into one student.

Hinton, Vinyals & Dean (2015, "Distilling the Knowledge in a Neural Network") distil an
ensemble by training the student on the average of its members' softened predictions;
You, Xu, Xu & Tao (2017, "Learning from Multiple Teacher Networks") do the same with
several teacher networks. With teachers ``k = 1..K``, weights ``w_k >= 0`` and logits
``z_k``, the soft target is

    p_ens = sum_k w_k softmax(z_k / T) / sum_k w_k,

an average of *probabilities* (not of logits), and the student minimises

    L = T^2 * KL( p_ens || softmax(z_s / T) ),

which for one teacher is :func:`shrinklib.distill.logits.soft_target_loss`.

A chain of teachers, teacher -> assistant -> student (Mirzadeh et al. 2020), needs
nothing new: call :func:`shrinklib.distill.logits.distill` twice.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from shrinklib._checks import check_number, check_temperature, check_weight
from shrinklib.arch import vocab_size
from shrinklib.distill.logits import check_logits, check_same_vocabulary, run_teacher


def _check_teacher_weights(weights, count: int, name: str = "weights") -> list[float] | None:
    if weights is None:
        return None
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise TypeError(f"{name} must be a sequence of {count} numbers, got {type(weights).__name__}")
    weights = list(weights)
    if len(weights) != count:
        raise ValueError(f"{name} must have one number per teacher ({count}), got {len(weights)}")
    weights = [check_number(name, w, low=0, what="finite numbers >= 0") for w in weights]
    if sum(weights) <= 0:
        raise ValueError(f"{name} must sum to more than 0, got {weights!r}")
    return weights


def ensemble_soft_targets(teacher_logits: Sequence[torch.Tensor], temperature: float,
                          weights: Sequence[float] | None = None) -> torch.Tensor:
    """``sum_k w_k softmax(z_k / T) / sum_k w_k``: the teachers' averaged soft targets (probabilities).

    ``teacher_logits``: one tensor per teacher, all of one shape ``(..., num_labels)``;
    ``weights``: one finite number >= 0 per teacher, summing to more than 0 (default: equal);
    ``temperature`` a finite number > 0. Returns float32 probabilities of that shape (each
    row sums to 1).
    """
    temperature = check_temperature(temperature)
    if isinstance(teacher_logits, torch.Tensor) or not isinstance(teacher_logits, Sequence):
        raise TypeError(f"teacher_logits must be a sequence of tensors (one per teacher), "
                        f"got {type(teacher_logits).__name__}")
    if len(teacher_logits) == 0:
        raise ValueError("teacher_logits must hold at least one teacher's logits, got an empty sequence")
    for z in teacher_logits:
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"teacher_logits must hold tensors, got a {type(z).__name__}")
    shapes = [tuple(z.shape) for z in teacher_logits]
    if len(set(shapes)) > 1:
        raise ValueError(f"every teacher's logits must have one shape, got shapes {shapes}")
    weights = _check_teacher_weights(weights, len(teacher_logits)) or [1.0] * len(teacher_logits)
    total = sum(weights)
    probs = sum(w * F.softmax(z.float() / temperature, dim=-1) for w, z in zip(weights, teacher_logits))
    return probs / total


def multi_teacher_distillation(teachers: Sequence[nn.Module], *, temperature: float = 2.0, weight: float = 1.0,
                               teacher_weights: Sequence[float] | None = None):
    """A ``fit`` term: ``weight * T^2 * KL(ensemble_soft_targets(teachers) || softmax(z_s / T))``.

    Every teacher runs in eval mode without gradients on the student's batch (labels
    removed), so each must share the student's vocabulary (checked on each call, as in
    :func:`~shrinklib.distill.logits.logit_distillation`, and among the teachers now).
    ``teacher_weights``: one finite number >= 0 per teacher (default: equal); ``temperature``
    (> 0) and ``weight`` (>= 0) finite numbers too. The teachers themselves are never changed
    (each call gives them their modes back). A class that no teacher gives any probability adds 0 to the KL.
    With one teacher this is ``logit_distillation(teacher, temperature=T, weight=weight)``.
    """
    temperature = check_temperature(temperature)
    weight = check_weight(weight)
    if isinstance(teachers, nn.Module) or not isinstance(teachers, Sequence):
        raise TypeError(f"teachers must be a sequence of nn.Modules, got {type(teachers).__name__}")
    teachers = list(teachers)
    if not teachers:
        raise ValueError("teachers must hold at least one teacher, got an empty sequence")
    for i, teacher in enumerate(teachers):
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teachers[{i}] must be an nn.Module, got {type(teacher).__name__}")
    sizes = {i: vocab_size(t) for i, t in enumerate(teachers) if vocab_size(t) is not None}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"the teachers have different vocabularies (tokens per teacher index: {sizes}): each reads "
                         "the student's input ids, so all must use the student's tokenizer")
    teacher_weights = _check_teacher_weights(teacher_weights, len(teachers), "teacher_weights")

    def term(model, batch, outputs) -> torch.Tensor:
        for i, teacher in enumerate(teachers):
            check_same_vocabulary(model, teacher, teacher_name=f"teachers[{i}]")
        logits = [run_teacher(teacher, batch) for teacher in teachers]
        target = ensemble_soft_targets(logits, temperature, teacher_weights)
        check_logits(outputs.logits, target)
        student = outputs.logits.float()
        log_q = F.log_softmax(student / temperature, dim=-1).reshape(-1, student.shape[-1])
        target = target.reshape(-1, target.shape[-1])
        # A class no teacher gives any probability adds 0, even where the student masks it too (0 * -inf).
        log_q = log_q.masked_fill(target == 0, 0.0)
        kl = F.kl_div(log_q, target, reduction="batchmean")
        return weight * temperature ** 2 * kl

    return term
