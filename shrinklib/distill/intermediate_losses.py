"""Intermediate-layer distillation: the student matches what the teacher computes inside.

Logit distillation (:mod:`shrinklib.distill.logits`) passes one vector per example from
teacher to student. The methods here pass the hidden states and attention of the
layers, through a layer map ``g`` (:mod:`shrinklib.distill.layer_map`). Every loss
that involves tokens takes the ``(batch, L)`` attention mask and averages over real
tokens only: what padding holds never changes the value.

* DistilBERT (Sanh et al., 2019, "DistilBERT, a distilled version of BERT"): cosine
  alignment of the last hidden states, ``L_cos = mean_t (1 - cos(h_s[t], h_t[t]))``.
* Patient KD (Sun et al., 2019, "Patient Knowledge Distillation for BERT Model
  Compression"): the normalised [CLS] vectors of the mapped layers,
  ``L_PT = sum_j || h_s,j / ||h_s,j|| - h_t,g(j) / ||h_t,g(j)|| ||^2`` over the student's
  layers ``j = 1..S-1`` (the last one is left to the prediction loss), batch mean.
* TinyBERT (Jiao et al., 2020, "TinyBERT: Distilling BERT for Natural Language
  Understanding"): ``L_embd = MSE(E_s W_e, E_t)``, ``L_hidn = sum_m MSE(H_s,m W_h, H_t,g(m))``
  and ``L_attn = sum_m 1/h sum_i MSE(A_s,m,i, A_t,g(m),i)``; the learned ``W`` map the
  student's width to the teacher's, so the student can be narrower.
* MiniLM (Wang et al., 2020, "MiniLM: Deep Self-Attention Distillation for Task-Agnostic
  Compression of Pre-Trained Transformers") transfers only the LAST layer's
  self-attention distribution ``softmax(Q K^T / sqrt(d))`` and value relation
  ``softmax(V V^T / sqrt(d))`` with ``KL(teacher || student)``; MiniLMv2 (Wang et al.,
  2021, "MiniLMv2: Multi-Head Self-Attention Relation Distillation for Compressing
  Pretrained Transformers") first splits Q, K, V into ``relation_heads`` heads of their
  own, so the student's width and head count are free (relations are ``L x L`` whatever
  the width).

The losses are pure functions on tensors;
:class:`shrinklib.distill.intermediate_term.IntermediateDistillation` is the
``extra_losses`` term of :func:`shrinklib.train.fit` that runs the teacher and combines them.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from shrinklib._checks import check_int


# ----------------------------------------------------------------------------------
# Checks


def _check_tensor(x, name: str, ndim: int, shape_name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must have shape {shape_name}, got {tuple(x.shape)}")
    return x


def check_attention_mask(attention_mask, batch: int, length: int) -> torch.Tensor:
    """The ``(batch, length)`` mask as booleans (True: real token), after checking its shape and values.

    ``attention_mask`` holds 1 on real tokens and 0 on padding, at least one real token;
    every loss here averages over the positions this returns.
    """
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a torch.Tensor, got {type(attention_mask).__name__}")
    if tuple(attention_mask.shape) != (batch, length):
        raise ValueError(f"attention_mask must have shape (batch, length) = {(batch, length)}, "
                         f"got {tuple(attention_mask.shape)}")
    if not ((attention_mask == 0) | (attention_mask == 1)).all():
        raise ValueError("attention_mask must hold only 0 (padding) and 1 (real token)")
    real = attention_mask.bool()
    if not real.any():
        raise ValueError("attention_mask marks no real token: there is nothing to average over")
    return real


def _check_pair(student, teacher, names: tuple[str, str], ndim: int, shape_name: str, same_last: bool) -> None:
    _check_tensor(student, names[0], ndim, shape_name)
    _check_tensor(teacher, names[1], ndim, shape_name)
    lead = ndim if same_last else ndim - 1
    if student.shape[:lead] != teacher.shape[:lead]:
        what = "shape" if same_last else "every dimension but the last"
        raise ValueError(f"{names[0]} and {names[1]} must agree in {what} {shape_name}, got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")


# ----------------------------------------------------------------------------------
# The losses


def hidden_cosine_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                       attention_mask: torch.Tensor) -> torch.Tensor:
    """DistilBERT's alignment ``mean over real tokens of 1 - cos(h_s, h_t)``; both ``(batch, L, d)``."""
    _check_pair(student_hidden, teacher_hidden, ("student_hidden", "teacher_hidden"), 3, "(batch, L, d)", True)
    real = check_attention_mask(attention_mask, *student_hidden.shape[:2])
    s, t = student_hidden[real].float(), teacher_hidden[real].float()
    return (1.0 - F.cosine_similarity(s, t, dim=-1)).mean()


def pkd_loss(student_cls: Sequence[torch.Tensor], teacher_cls: Sequence[torch.Tensor]) -> torch.Tensor:
    """Patient KD: ``sum over layers of mean over the batch of || s/||s|| - t/||t|| ||^2``.

    ``student_cls[j]`` and ``teacher_cls[j]`` are the ``(batch, d)`` [CLS] vectors of the
    j-th mapped pair of layers.
    """
    for name, seq in (("student_cls", student_cls), ("teacher_cls", teacher_cls)):
        if isinstance(seq, torch.Tensor) or not isinstance(seq, (list, tuple)):
            raise TypeError(f"{name} must be a list or tuple of (batch, d) tensors, one per layer, "
                            f"got {type(seq).__name__}")
    if not student_cls or len(student_cls) != len(teacher_cls):
        raise ValueError(f"student_cls and teacher_cls must hold the same number (>= 1) of layers, "
                         f"got {len(student_cls)} and {len(teacher_cls)}")
    total = 0.0
    for j, (s, t) in enumerate(zip(student_cls, teacher_cls)):
        _check_pair(s, t, (f"student_cls[{j}]", f"teacher_cls[{j}]"), 2, "(batch, d)", True)
        diff = F.normalize(s.float(), dim=-1) - F.normalize(t.float(), dim=-1)
        total = total + diff.pow(2).sum(-1).mean()
    return total


def hidden_mse_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, attention_mask: torch.Tensor,
                    projection: nn.Linear | None = None) -> torch.Tensor:
    """TinyBERT's ``MSE(h_s W, h_t)`` over the real tokens (mean over tokens and the teacher's width).

    ``student_hidden`` is ``(batch, L, d_s)``, ``teacher_hidden`` ``(batch, L, d_t)``;
    ``projection`` is an ``nn.Linear(d_s, d_t)``, required when the widths differ.
    """
    _check_pair(student_hidden, teacher_hidden, ("student_hidden", "teacher_hidden"), 3, "(batch, L, d)", False)
    real = check_attention_mask(attention_mask, *student_hidden.shape[:2])
    d_s, d_t = student_hidden.shape[-1], teacher_hidden.shape[-1]
    s = student_hidden[real]
    if projection is None:
        if d_s != d_t:
            raise ValueError(f"student width {d_s} differs from teacher width {d_t}: pass projection="
                             f"nn.Linear({d_s}, {d_t})")
    else:
        if not isinstance(projection, nn.Linear):
            raise TypeError(f"projection must be an nn.Linear or None, got {type(projection).__name__}")
        if (projection.in_features, projection.out_features) != (d_s, d_t):
            raise ValueError(f"projection must map the student width to the teacher width, nn.Linear({d_s}, {d_t}), "
                             f"got nn.Linear({projection.in_features}, {projection.out_features})")
        s = projection(s)
    return F.mse_loss(s.float(), teacher_hidden[real].float())


def attention_mse_loss(student_attention: torch.Tensor, teacher_attention: torch.Tensor,
                       attention_mask: torch.Tensor) -> torch.Tensor:
    """TinyBERT's attention loss: MSE of ``(batch, heads, L, L)`` maps over real query-key pairs.

    The mean runs over the batch, the heads and the pairs ``(i, j)`` with both tokens
    real, which is ``1/h sum_heads MSE`` of the paper. The maps are attention
    probabilities ``softmax(Q K^T / sqrt(d_head))`` (what eager attention returns in eval
    mode; :class:`IntermediateDistillation` computes them from Q and K, before dropout);
    the TinyBERT code compares the unnormalised scores instead.
    """
    _check_tensor(student_attention, "student_attention", 4, "(batch, heads, L, L)")
    _check_tensor(teacher_attention, "teacher_attention", 4, "(batch, heads, L, L)")
    b, h_s, length, length_k = student_attention.shape
    h_t = teacher_attention.shape[1]
    if h_s != h_t:
        raise ValueError(f"student and teacher attention must have the same number of heads, got {h_s} and {h_t}")
    if length != length_k or teacher_attention.shape != student_attention.shape:
        raise ValueError(f"student_attention and teacher_attention must both be (batch, heads, L, L), got "
                         f"{tuple(student_attention.shape)} and {tuple(teacher_attention.shape)}")
    real = check_attention_mask(attention_mask, b, length)
    pairs = real[:, :, None] & real[:, None, :]  # (batch, L, L): query i and key j both real
    s = student_attention.permute(0, 2, 3, 1)[pairs].float()  # (pairs, heads)
    t = teacher_attention.permute(0, 2, 3, 1)[pairs].float()
    return F.mse_loss(s, t)


def check_relation_heads(relation_heads, *widths: int) -> int:
    """``relation_heads`` if it is a positive int dividing every width in ``widths``, else ``ValueError``."""
    check_int("relation_heads", relation_heads, minimum=1, what="a positive int")
    for width in widths:
        if width % relation_heads:
            raise ValueError(f"relation_heads ({relation_heads}) must divide the width {width} "
                             f"(student and teacher widths: {widths})")
    return relation_heads


def relation_log_probs(x: torch.Tensor, y: torch.Tensor, heads: int, real: torch.Tensor) -> torch.Tensor:
    """``log softmax(x_a y_a^T / sqrt(d_a))`` per relation head ``a``, padded keys excluded: (batch, heads, L, L).

    ``x`` and ``y`` are ``(batch, L, width)`` (queries and keys, or values twice), split
    into ``heads`` heads of ``d_a = width / heads``; ``real`` is the boolean mask of
    :func:`check_attention_mask`. MiniLM's relations, and with ``x, y = Q, K`` and the
    model's own head count, the attention probabilities of eager attention. Unchecked:
    call it with checked arguments (the losses check theirs first).
    """
    b, length, width = x.shape
    size = width // heads
    xh = x.float().reshape(b, length, heads, size).transpose(1, 2)
    yh = y.float().reshape(b, length, heads, size).transpose(1, 2)
    scores = xh @ yh.transpose(-1, -2) / math.sqrt(size)
    # The most negative finite number, not -inf: exp gives 0 and no inf - inf appears.
    scores = scores.masked_fill(~real[:, None, None, :], torch.finfo(scores.dtype).min)
    return scores.log_softmax(-1)


def _relation_kl(log_p_teacher: torch.Tensor, log_p_student: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """``KL(teacher || student)`` of each (head, real query) row, averaged."""
    kl = log_p_teacher.exp() * (log_p_teacher - log_p_student)
    kl = kl.masked_fill(~real[:, None, None, :], 0.0).sum(-1)  # (batch, heads, L)
    return kl.transpose(1, 2)[real].mean()  # real queries x heads


def _check_minilm(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], names: Sequence[str],
                  attention_mask, relation_heads) -> torch.Tensor:
    for x, name in zip([*student, *teacher], names):
        _check_tensor(x, name, 3, "(batch, L, width)")
    for group, group_names in ((student, names[:len(student)]), (teacher, names[len(student):])):
        if any(x.shape != group[0].shape for x in group):
            raise ValueError(f"{' and '.join(group_names)} must have one shape, got "
                             f"{[tuple(x.shape) for x in group]}")
    if student[0].shape[:2] != teacher[0].shape[:2]:
        raise ValueError(f"student and teacher inputs must agree in (batch, L), got {tuple(student[0].shape)} "
                         f"and {tuple(teacher[0].shape)}")
    check_relation_heads(relation_heads, student[0].shape[-1], teacher[0].shape[-1])
    return check_attention_mask(attention_mask, *student[0].shape[:2])


def minilm_attention_loss(student_q: torch.Tensor, student_k: torch.Tensor, teacher_q: torch.Tensor,
                          teacher_k: torch.Tensor, attention_mask: torch.Tensor, relation_heads: int) -> torch.Tensor:
    """MiniLM's attention transfer ``KL(softmax(Q_t K_t^T/sqrt(d_t)) || softmax(Q_s K_s^T/sqrt(d_s)))``.

    Inputs are the ``(batch, L, width)`` outputs of the last layer's query and key
    Linear layers; each is split into ``relation_heads`` heads (width / heads each,
    ``d`` that head size). Padded keys are left out of the softmax and padded queries
    out of the mean, which runs over the batch, the relation heads and the real queries.
    """
    real = _check_minilm((student_q, student_k), (teacher_q, teacher_k),
                         ("student_q", "student_k", "teacher_q", "teacher_k"), attention_mask, relation_heads)
    log_p_t = relation_log_probs(teacher_q, teacher_k, relation_heads, real)
    log_p_s = relation_log_probs(student_q, student_k, relation_heads, real)
    return _relation_kl(log_p_t, log_p_s, real)


def minilm_value_loss(student_v: torch.Tensor, teacher_v: torch.Tensor, attention_mask: torch.Tensor,
                      relation_heads: int) -> torch.Tensor:
    """MiniLM's value-relation transfer ``KL(softmax(V_t V_t^T/sqrt(d_t)) || softmax(V_s V_s^T/sqrt(d_s)))``.

    Same conventions as :func:`minilm_attention_loss`, on the last layer's value outputs.
    """
    real = _check_minilm((student_v,), (teacher_v,), ("student_v", "teacher_v"), attention_mask, relation_heads)
    log_p_t = relation_log_probs(teacher_v, teacher_v, relation_heads, real)
    log_p_s = relation_log_probs(student_v, student_v, relation_heads, real)
    return _relation_kl(log_p_t, log_p_s, real)
