"""Soft-target distillation (Hinton, Vinyals & Dean, 2015, "Distilling the Knowledge in a Neural Network").

The student matches the teacher's class probabilities softened by a temperature ``T``:

    L_KD = T^2 * KL( softmax(z_t / T) || softmax(z_s / T) ),

averaged over the batch. The ``T^2`` keeps the gradient's size independent of ``T``.
The pruning chapter uses it as the recovery signal while a pruned model fine-tunes
(Sanh et al. 2020 do the same for movement pruning).

Tang et al. (2019, "Distilling Task-Specific Knowledge from BERT into Simple Neural
Networks") distil BERT into a BiLSTM with the mean squared error between the logits
instead, ``L_MSE = mean_{i,c} (z_s[i, c] - z_t[i, c])^2`` (:func:`logit_mse_loss`): no
temperature, and the logits' scale is matched, not just their softmax.

:func:`distill` is Hinton's whole recipe, the hard labels and the soft targets mixed,
``(1 - alpha) * CE(z_s, y) + alpha * L_KD``, as one call to :func:`shrinklib.train.fit`.
:func:`stored_logit_distillation` reads teacher logits computed once beforehand
(:func:`shrinklib.distill.augment.teacher_labelled`), so a slow teacher runs once per
sentence rather than once per sentence and epoch.

The teacher reads the *student's* input ids, so both must use one tokenizer: the terms
refuse two models whose vocabularies differ in size (:func:`check_same_vocabulary`).
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from shrinklib import train
from shrinklib._checks import (
    check_choice,
    check_instance,
    check_mapping,
    check_number,
    check_temperature,
    check_weight,
)
from shrinklib.arch import vocab_size
from shrinklib.data import model_inputs
from shrinklib.measure.forward import evaluating
from shrinklib.train import TrainConfig

LOSSES = ("kl", "mse")


def check_logits(student_logits, teacher_logits) -> None:
    """``TypeError`` unless both are tensors, ``ValueError`` unless they have one shape."""
    check_instance("student_logits", student_logits, torch.Tensor)
    check_instance("teacher_logits", teacher_logits, torch.Tensor)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits must have one shape, got {tuple(student_logits.shape)} "
                         f"and {tuple(teacher_logits.shape)}")


def safe_log_probs(log_p_teacher: torch.Tensor, log_q_student: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p, log q)`` ready for ``sum p (log p - log q)``: a class the teacher gives probability 0 adds 0.

    Where the teacher's log-probability is ``-inf`` (a masked class, logit ``-inf``), ``log p``
    becomes the most negative finite float (so ``p = exp(log p)`` is exactly 0 and
    ``log p - log q`` is finite) and ``log q`` becomes 0 (so a student that masks the class too
    gives no ``inf - inf``): the class's term is ``0 * finite = 0``, the convention
    ``0 log(0 / q) = 0`` of the KL divergence. Elsewhere both are returned bit for bit, and
    the gradient reaching a masked class's ``log q`` is 0. Every KL of this package goes
    through it. ``TypeError`` unless both are tensors.
    """
    check_instance("log_p_teacher", log_p_teacher, torch.Tensor)
    check_instance("log_q_student", log_q_student, torch.Tensor)
    masked = torch.isneginf(log_p_teacher)
    return (log_p_teacher.masked_fill(masked, torch.finfo(log_p_teacher.dtype).min),
            log_q_student.masked_fill(masked, 0.0))


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """``T^2 * KL(p_teacher || p_student)`` at temperature ``T``, averaged over the rows.

    Both logits are tensors of one shape ``(..., classes)`` (else ``TypeError``/``ValueError``);
    ``temperature`` is a finite number > 0. A class whose teacher logit is ``-inf`` (a masked
    class: probability 0) contributes 0, whatever the student gives it (:func:`safe_log_probs`).
    """
    temperature = check_temperature(temperature)
    check_logits(student_logits, teacher_logits)
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    log_p_teacher, log_p_student = safe_log_probs(log_p_teacher, log_p_student)
    kl = F.kl_div(log_p_student.reshape(-1, log_p_student.shape[-1]),
                  log_p_teacher.reshape(-1, log_p_teacher.shape[-1]), log_target=True, reduction="batchmean")
    return temperature ** 2 * kl


def logit_mse_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Tang et al. (2019): ``mean_{i,c} (z_s[i, c] - z_t[i, c])^2``, the MSE between raw logits.

    Averaged over the batch and the classes (``F.mse_loss``'s mean), in float32. Both are
    tensors of one shape (else ``TypeError``/``ValueError``).
    """
    check_logits(student_logits, teacher_logits)
    return F.mse_loss(student_logits.float(), teacher_logits.float())


def _distillation_loss(student_logits, teacher_logits, loss: str, temperature: float) -> torch.Tensor:
    if loss == "mse":
        return logit_mse_loss(student_logits, teacher_logits)
    return soft_target_loss(student_logits, teacher_logits, temperature)


# ----------------------------------------------------------------------------------
# One vocabulary for student and teacher


def check_same_vocabulary(student: nn.Module, teacher: nn.Module, *, teacher_name: str = "teacher") -> None:
    """``ValueError`` when both vocabulary sizes are known and differ (see :func:`shrinklib.arch.vocab_size`).

    The teacher is fed the student's input ids, so the two must share a tokenizer; a
    size mismatch is the part of that which can be checked. ``TypeError`` (naming the
    argument, or ``teacher_name``) when either is not an ``nn.Module``.
    """
    check_instance("student", student, nn.Module, what="an nn.Module")
    check_instance(teacher_name, teacher, nn.Module, what="an nn.Module")
    student_size, teacher_size = vocab_size(student), vocab_size(teacher)
    if student_size is not None and teacher_size is not None and student_size != teacher_size:
        raise ValueError(
            f"the student and the {teacher_name} have different vocabularies ({student_size} and {teacher_size} "
            f"tokens): the {teacher_name} reads the student's input ids, so both must use one tokenizer "
            f"(a BiLSTM student: build it with zoo.bilstm(teacher_tokenizer))"
        )


def run_teacher(teacher: nn.Module, batch: dict) -> torch.Tensor:
    """The teacher's logits on ``batch``: its model inputs only, in eval mode, no gradient, on the batch's device.

    ``batch`` is stripped by :func:`shrinklib.data.model_inputs` (no ``labels``, no stored
    teacher targets); a teacher on another device than the batch's tensors is moved there
    first. The teacher runs in eval mode and gets its own modes back afterwards, so a term
    never leaves a trace on it. ``TypeError`` for a teacher that is not an ``nn.Module`` or
    a batch that is not a mapping.
    """
    check_instance("teacher", teacher, nn.Module, what="an nn.Module")
    inputs = model_inputs(batch)
    device = next((v.device for v in inputs.values() if isinstance(v, torch.Tensor)), None)
    first = next(teacher.parameters(), None)
    if device is not None and first is not None and first.device != device:
        teacher.to(device)
    with torch.no_grad(), evaluating(teacher):
        return teacher(**inputs).logits


def teacher_term(teacher: nn.Module, loss_of_logits: Callable) -> train.LossTerm:
    """A ``fit`` term ``loss_of_logits(student_logits, teacher_logits, batch)`` with the teacher run on the batch.

    The one way a live teacher joins training: each call checks that the teacher shares
    the student's vocabulary (:func:`check_same_vocabulary`) and runs it in eval mode
    without gradients on the batch (:func:`run_teacher`, which gives the teacher its modes
    back). ``TypeError`` for a teacher that is not an ``nn.Module`` or a ``loss_of_logits``
    that is not callable.
    """
    check_instance("teacher", teacher, nn.Module, what="an nn.Module")
    if not callable(loss_of_logits):
        raise TypeError(f"loss_of_logits must be callable as fn(student_logits, teacher_logits, batch), "
                        f"got {type(loss_of_logits).__name__}")

    def term(model, batch, outputs) -> torch.Tensor:
        check_same_vocabulary(model, teacher)
        return loss_of_logits(outputs.logits, run_teacher(teacher, batch), batch)

    return term


def logit_distillation(teacher: nn.Module, *, temperature: float = 2.0, weight: float = 1.0, loss: str = "kl"):
    """An ``extra_losses`` term for ``shrinklib.train.fit``: ``weight * distillation loss``.

    ``loss="kl"``: :func:`soft_target_loss` at ``temperature`` (Hinton et al. 2015);
    ``loss="mse"``: :func:`logit_mse_loss` (Tang et al. 2019; ``temperature`` unused).
    The teacher runs in eval mode without gradients on the same batch (labels removed),
    moved to the batch's device if it is elsewhere. Each call checks that student
    and teacher share a vocabulary (:func:`check_same_vocabulary`). ``temperature`` (> 0)
    and ``weight`` (>= 0) must be finite numbers. The teacher itself is never changed:
    building the term does not touch it, and each call gives it its modes back.
    """
    temperature = check_temperature(temperature)
    weight = check_weight(weight)
    loss = check_choice("loss", loss, LOSSES)
    return teacher_term(teacher, lambda student_logits, teacher_logits, batch:
                        weight * _distillation_loss(student_logits, teacher_logits, loss, temperature))


def stored_logit_distillation(*, temperature: float = 2.0, weight: float = 1.0, loss: str = "kl"):
    """A ``fit`` term like :func:`logit_distillation` that reads ``batch["teacher_logits"]``.

    The teacher ran once, beforehand (:func:`shrinklib.distill.augment.teacher_labelled`
    stores its logits in a ``teacher_logits`` column), instead of on every batch of every
    epoch. ``shrinklib.data.collate`` (what ``fit`` uses for a ``Dataset``) carries that
    column into each batch as a float tensor ``(batch, num_labels)``, and ``fit`` keeps it
    from the model (``shrinklib.data.LOSS_ONLY_KEYS``). ``temperature`` (> 0) and ``weight``
    (>= 0) must be finite numbers.
    """
    temperature = check_temperature(temperature)
    weight = check_weight(weight)
    loss = check_choice("loss", loss, LOSSES)

    def term(model, batch, outputs) -> torch.Tensor:
        check_mapping("batch", batch)
        if "teacher_logits" not in batch:
            raise ValueError(
                f"the batch has no 'teacher_logits' (its keys: {sorted(batch)}): stored_logit_distillation reads "
                "the teacher's logits from the batch; train on a dataset with a 'teacher_logits' column "
                "(shrinklib.distill.teacher_labelled), or use logit_distillation(teacher) to run the teacher on "
                "each batch"
            )
        stored = batch["teacher_logits"]
        if not isinstance(stored, torch.Tensor):
            stored = torch.as_tensor(stored, dtype=torch.float32)
        return weight * _distillation_loss(outputs.logits, stored.to(outputs.logits.device), loss, temperature)

    return term


@contextlib.contextmanager
def _restored_on_failure(model: nn.Module):
    """Inside: ``model`` as it is; if the block raises an ``Exception``, what training can change is
    put back before the exception goes on: the weights and buffers (from a CPU copy), and the
    attributes of every submodule and of ``model.config`` (modes, the flags and wrappers that
    Accelerate sets, the ``problem_type`` that a Hugging Face loss sets). An interrupt
    (``KeyboardInterrupt``) keeps what training did so far."""
    saved = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    owners = [*model.modules()]
    if hasattr(getattr(model, "config", None), "__dict__"):
        owners.append(model.config)
    attributes = [(owner, dict(vars(owner))) for owner in owners]
    try:
        yield model
    except Exception:
        with torch.no_grad():
            for key, value in model.state_dict().items():
                value.copy_(saved[key])
        for owner, before in attributes:
            now = vars(owner)
            for key in [k for k in now if k not in before]:
                del now[key]
            now.update(before)
        raise


def distill(student: nn.Module, teacher: nn.Module, train_data, config: TrainConfig = TrainConfig(), *,
            tokenizer=None, eval_data=None, temperature: float = 2.0, alpha: float = 0.5,
            loss: str = "kl") -> train.TrainResult:
    """Train ``student`` in place on ``(1 - alpha) * hard-label loss + alpha * soft-target loss``.

    Hinton et al. (2015): the hard-label loss is the student's own (cross-entropy on the
    labels), the soft-target term :func:`logit_distillation` with ``temperature`` and
    ``loss`` ("kl", or Tang et al.'s "mse"). One call to :func:`shrinklib.train.fit` with
    ``task_loss_weight = 1 - alpha`` and ``extra_losses={"kd": ...}`` (logged as
    ``loss_task`` and ``loss_kd``); ``alpha=1`` trains
    on the teacher alone (labels unused), ``alpha=0`` is plain fine-tuning (the teacher is
    then not run at all). ``config`` is a :class:`~shrinklib.train.TrainConfig` whose
    ``task_loss_weight`` must be left at 1.0 (``alpha`` sets it). Returns fit's ``TrainResult``.

    Checked before anything runs: ``student`` and ``teacher`` are two models (``nn.Module``) with one
    vocabulary, ``train_data`` is iterable (``fit`` checks the rest of it, and ``tokenizer``
    and ``eval_data``), ``alpha`` is a finite number in [0, 1], ``temperature`` a finite
    number > 0, ``loss`` "kl" or "mse". The teacher is run in eval mode and keeps its own
    modes. If training fails (an exception from ``fit``, a bad batch at step 100), the
    student gets back the weights, modes and attributes it had before the call (a CPU copy
    of its state is kept while it trains); an interrupt keeps what training did so far.

    Teacher assistants (Mirzadeh et al., 2020, "Improved Knowledge Distillation via
    Teacher Assistant"): when the gap between teacher and student is large, distil in
    steps through a model of middle size,
    ``distill(assistant, teacher, data, ...)`` then ``distill(student, assistant, data, ...)``.
    """
    check_instance("config", config, TrainConfig, what="a TrainConfig")
    check_number("alpha", alpha, low=0, high=1, what="a number in [0, 1]")
    if config.task_loss_weight != 1.0:
        raise ValueError(f"distill sets task_loss_weight to 1 - alpha; leave TrainConfig.task_loss_weight at 1.0, "
                         f"got {config.task_loss_weight!r}")
    check_instance("student", student, nn.Module, what="an nn.Module")
    check_instance("teacher", teacher, nn.Module, what="an nn.Module")
    check_instance("train_data", train_data, Iterable, what="a datasets.Dataset or a DataLoader")
    if student is teacher:
        raise ValueError("student and teacher must be two models, got the same one twice")
    check_same_vocabulary(student, teacher)
    temperature = check_temperature(temperature)
    loss = check_choice("loss", loss, LOSSES)
    with _restored_on_failure(student):
        extra = {"kd": logit_distillation(teacher, temperature=temperature, weight=float(alpha), loss=loss)
                 } if alpha > 0 else {}
        return train.fit(student, train_data, dataclasses.replace(config, task_loss_weight=1.0 - alpha),
                         tokenizer=tokenizer, eval_data=eval_data, extra_losses=extra)
