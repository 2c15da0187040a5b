"""Word-level distillation from the teacher's stored top-k logits.

Word-level KD (Kim & Rush 2016; :func:`shrinklib.distill.sequence.word_level_distillation`)
runs the teacher on every batch. For a 135M-parameter teacher on a CPU that forward pass
costs several times the small student's whole step, and it is repeated every epoch and for
every seed although the text does not change. Storing the full distributions instead is
out of reach too (49,152 floats per token). What is stored here is the teacher's ``k``
largest logits at each position, with their token ids, computed once per text (the idea
of the sparse or top-k logits of later LLM distillation work, e.g. MiniLLM, and of
caching teacher outputs in general).

With ``S`` the top-``k`` token ids at a position, the teacher's distribution is
renormalized over ``S`` and the loss is

    L = T^2 * sum_{v in S} p_v (log p_v - log q_v),   p = softmax(z_t[S] / T),  q = softmax(z_s / T),

averaged over the real positions, with the student's ``log q`` from its softmax over the
*whole* vocabulary. It is the word-level KL in which the teacher's mass outside ``S`` is
moved proportionally onto ``S``; with ``k`` the vocabulary size it is exactly
:func:`~shrinklib.distill.sequence.token_distillation_loss`. How much mass ``S`` holds is
measured by :func:`top_k_mass`.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from shrinklib._checks import (
    check_bool,
    check_instance,
    check_int,
    check_mapping,
    check_positive_int,
    check_temperature,
    check_weight,
)
from shrinklib.arch import pad_id, vocab_size
from shrinklib.distill.logits import safe_log_probs
from shrinklib.distill.sequence import check_texts, check_tokenizer, token_lists
from shrinklib.measure.forward import evaluating, model_device

#: The batch keys of the stored targets (``shrinklib.data.LOSS_ONLY_KEYS`` keeps them from the model).
TOP_IDS, TOP_LOGITS = "teacher_top_ids", "teacher_top_logits"


def _check_top_k(top_ids, top_logits) -> None:
    check_instance("top_ids", top_ids, torch.Tensor)
    check_instance("top_logits", top_logits, torch.Tensor)
    if top_ids.shape != top_logits.shape:
        raise ValueError(f"top_ids and top_logits must have one shape, got {tuple(top_ids.shape)} "
                         f"and {tuple(top_logits.shape)}")
    if top_ids.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"top_ids must hold integer token ids, got dtype {top_ids.dtype}")


def top_k_token_distillation_loss(student_logits: torch.Tensor, top_ids: torch.Tensor, top_logits: torch.Tensor,
                                  attention_mask: torch.Tensor | None = None,
                                  temperature: float = 1.0) -> torch.Tensor:
    """``T^2 * KL(p || q)`` restricted to the teacher's top ``k`` tokens, averaged over real positions.

    ``student_logits``: ``(batch, length, vocab)``; ``top_ids``/``top_logits``:
    ``(batch, length, k)``, the teacher's ``k`` largest logits and their token ids at each
    position (see the module docstring for the formula); ``attention_mask``:
    ``(batch, length)``, 1 on the real positions (all of them without a mask); ``temperature``
    a finite number > 0. A stored logit of ``-inf`` (a token the teacher masks, kept when
    ``k`` exceeds the tokens it allows) contributes 0
    (:func:`~shrinklib.distill.logits.safe_log_probs`).
    """
    temperature = check_temperature(temperature)
    check_instance("student_logits", student_logits, torch.Tensor)
    if student_logits.ndim != 3:
        raise ValueError(f"student_logits must be a (batch, length, vocab) tensor, got {tuple(student_logits.shape)}")
    _check_top_k(top_ids, top_logits)
    if top_ids.ndim != 3 or tuple(top_ids.shape[:2]) != tuple(student_logits.shape[:2]):
        raise ValueError(f"top_ids and top_logits must be (batch, length, k) = "
                         f"{tuple(student_logits.shape[:2])} + (k,), got {tuple(top_ids.shape)}")
    vocab = student_logits.shape[-1]
    if top_ids.shape[-1] > vocab or (top_ids.numel() and (top_ids.min() < 0 or top_ids.max() >= vocab)):
        raise ValueError(f"top_ids must be at most {vocab} token ids in [0, {vocab}) (the student's vocabulary): "
                         "the student and the teacher must share one vocabulary")
    device = student_logits.device
    if attention_mask is not None:
        check_instance("attention_mask", attention_mask, torch.Tensor, what="a torch.Tensor or None")
        if tuple(attention_mask.shape) != tuple(student_logits.shape[:2]):
            raise ValueError(f"attention_mask must be a (batch, length) = {tuple(student_logits.shape[:2])} tensor")
        real = attention_mask.to(device) == 1
        if not real.any():
            raise ValueError("attention_mask has no real position (no entry == 1): nothing to distil")
    with torch.no_grad():
        log_p = F.log_softmax(top_logits.to(device).float() / temperature, dim=-1)
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1).gather(-1, top_ids.to(device).long())
    log_p, log_q = safe_log_probs(log_p, log_q)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)  # (batch, length)
    if attention_mask is None:
        return temperature ** 2 * kl.mean()
    return temperature ** 2 * kl[real].mean()


def teacher_top_k(teacher: nn.Module, tokenizer, texts: Sequence[str], *, k: int = 64, block_size: int = 128,
                  batch_size: int = 8, progress: bool = True) -> list[dict[str, torch.Tensor]]:
    """The teacher's ``k`` largest next-token logits at every position of each text, computed once.

    Each text is tokenized as :func:`~shrinklib.distill.sequence.lm_dataloader` does
    (special tokens as the tokenizer adds them, truncated to ``block_size``) and read by the
    teacher in eval mode without gradients, ``batch_size`` texts at a time, right-padded.
    Returns one ``{"ids": int64 (L, k), "logits": float32 (L, k)}`` per text, ``L`` its
    number of tokens, largest logit first; pass the list to ``lm_dataloader(top_k=...)``.
    Every argument is checked before the teacher runs (``k`` against the teacher's
    vocabulary where it is known); the teacher's modes are given back afterwards.
    """
    check_instance("teacher", teacher, nn.Module, what="an nn.Module")
    check_tokenizer(tokenizer, "__call__")
    texts = check_texts("texts", texts)
    check_positive_int("k", k)
    check_positive_int("batch_size", batch_size)
    check_int("block_size", block_size, minimum=2, what="an int >= 2")
    check_bool("progress", progress)
    vocabulary = vocab_size(teacher)
    if vocabulary is not None and k > vocabulary:
        raise ValueError(f"k ({k}) must be at most the teacher's vocabulary size ({vocabulary})")
    rows = token_lists(tokenizer, texts, truncation=True, max_length=block_size)
    pad, device, out = pad_id(tokenizer=tokenizer, default=0), model_device(teacher), []
    with evaluating(teacher), torch.no_grad():
        for start in tqdm(range(0, len(rows), batch_size), desc="teacher top-k", unit="batch",
                          disable=not progress, leave=False):
            batch = rows[start:start + batch_size]
            width = max(len(r) for r in batch)
            ids = torch.tensor([r + [pad] * (width - len(r)) for r in batch], device=device)
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in batch], device=device)
            logits = teacher(input_ids=ids, attention_mask=mask).logits.float()
            if k > logits.shape[-1]:
                raise ValueError(f"k ({k}) must be at most the teacher's vocabulary size ({logits.shape[-1]})")
            values, indices = logits.topk(k, dim=-1)
            for i, r in enumerate(batch):
                out.append({"ids": indices[i, :len(r)].cpu(), "logits": values[i, :len(r)].cpu()})
    return out


def top_k_mass(teacher_logits: torch.Tensor, k: int, temperature: float = 1.0) -> torch.Tensor:
    """The teacher's probability (at ``temperature``, a finite number > 0) on its ``k`` likeliest tokens,
    per position: ``(...)``."""
    temperature = check_temperature(temperature)
    check_positive_int("k", k)
    check_instance("teacher_logits", teacher_logits, torch.Tensor)
    if teacher_logits.ndim == 0 or k > teacher_logits.shape[-1]:
        raise ValueError(f"teacher_logits must be a tensor with at least k ({k}) logits in its last dimension")
    return F.softmax(teacher_logits.float() / temperature, dim=-1).topk(k, dim=-1).values.sum(-1)


def stored_word_level_distillation(*, temperature: float = 1.0, weight: float = 1.0):
    """An ``extra_losses`` term for :func:`shrinklib.train.fit`: ``weight * top_k_token_distillation_loss``.

    Reads the teacher's stored top-k logits from the batch (``lm_dataloader(texts,
    tokenizer, top_k=teacher_top_k(teacher, tokenizer, texts))``), so no teacher runs
    during training. With ``TrainConfig(task_loss_weight=0)`` this is word-level KD alone.
    ``temperature`` (> 0) and ``weight`` (>= 0) must be finite numbers.
    """
    temperature = check_temperature(temperature)
    weight = check_weight(weight)

    def term(model, batch, outputs) -> torch.Tensor:
        check_mapping("batch", batch)
        if TOP_IDS not in batch or TOP_LOGITS not in batch:
            raise KeyError(f"stored_word_level_distillation needs the batch keys {TOP_IDS!r} and {TOP_LOGITS!r}: "
                           "build the loader with lm_dataloader(texts, tokenizer, top_k=teacher_top_k(teacher, "
                           "tokenizer, texts)), or use word_level_distillation(teacher) to run the teacher")
        return weight * top_k_token_distillation_loss(outputs.logits, batch[TOP_IDS], batch[TOP_LOGITS],
                                                      batch.get("attention_mask"), temperature)

    return term
