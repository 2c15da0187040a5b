"""Soft-target distillation (Hinton, Vinyals & Dean, 2015, "Distilling the Knowledge in a Neural Network").

The student matches the teacher's class probabilities softened by a temperature ``T``:

    L_KD = T^2 * KL( softmax(z_t / T) || softmax(z_s / T) ),

averaged over the batch. The ``T^2`` keeps the gradient's size independent of ``T``.
The pruning chapter uses it as the recovery signal while a pruned model fine-tunes
(Sanh et al. 2020 do the same for movement pruning).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _check_temperature(temperature) -> float:
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or temperature <= 0:
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
    return float(temperature)


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """``T^2 * KL(p_teacher || p_student)`` at temperature ``T``, averaged over the rows."""
    temperature = _check_temperature(temperature)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits must have one shape, got {tuple(student_logits.shape)} "
                         f"and {tuple(teacher_logits.shape)}")
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(log_p_student.reshape(-1, log_p_student.shape[-1]),
                  log_p_teacher.reshape(-1, log_p_teacher.shape[-1]), log_target=True, reduction="batchmean")
    return temperature ** 2 * kl


def logit_distillation(teacher: nn.Module, *, temperature: float = 2.0, weight: float = 1.0):
    """An ``extra_losses`` term for ``shrinklib.train.fit``: ``weight * soft_target_loss``.

    The teacher runs in eval mode without gradients on the same batch (labels removed).
    """
    temperature = _check_temperature(temperature)
    if not isinstance(weight, (int, float)) or weight < 0:
        raise ValueError(f"weight must be a number >= 0, got {weight!r}")
    if not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be an nn.Module, got {type(teacher).__name__}")
    teacher.eval()

    def term(model, batch, outputs) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with torch.no_grad():
            teacher_logits = teacher(**inputs).logits
        return weight * soft_target_loss(outputs.logits, teacher_logits, temperature)

    return term
