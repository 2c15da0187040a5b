"""Word-level and sequence-level distillation of a language model (Kim & Rush, 2016,
"Sequence-Level Knowledge Distillation").

A decoder predicts the next token; its student shares the teacher's vocabulary and
tokenizer. Kim & Rush distil it in two ways:

* **Word-level KD** trains the student on the teacher's next-token distribution at
  every position ``j`` of real text ``x`` (the prefix ``x_<=j`` is the real one):

      L_word = 1/|J| * sum_{j in J} T^2 * KL( softmax(z_t(x_<=j) / T) || softmax(z_s(x_<=j) / T) ),

  ``J`` the real (non-padding) positions. It is Hinton et al.'s soft-target loss applied
  per token (:func:`token_distillation_loss`, :func:`word_level_distillation`).
* **Sequence-level KD** approximates the teacher's distribution over whole sequences by
  its mode: the teacher writes text (beam search in Kim & Rush's main recipe, or greedy
  or sampled outputs), and the student is trained on that text with the ordinary
  cross-entropy ``-log p_s(y_hat)`` (:func:`generate_corpus` then :func:`lm_dataloader`
  and :func:`shrinklib.train.fit`). The two can be combined (Kim & Rush's "Seq-Inter"
  and word+seq variants): train on the teacher's text and add the word-level term.

:func:`lm_student` builds the small student of the teacher's class, vocabulary and
special tokens. Perplexity is :func:`shrinklib.measure.perplexity`.
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
    check_number,
    check_positive_int,
    check_temperature,
    check_weight,
)
from shrinklib.arch import pad_id
from shrinklib.distill.logits import safe_log_probs, teacher_term
from shrinklib.measure.forward import evaluating, model_device
from shrinklib.utils import check_seed

_MISMATCH = ("the student and the teacher must share one vocabulary (and tokenizer) for token-level "
             "distillation: their vocabularies differ")


# ----------------------------------------------------------------------------------
# Word-level distillation


def token_distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                            attention_mask: torch.Tensor | None = None, temperature: float = 1.0) -> torch.Tensor:
    """Word-level KD: ``T^2 * KL(softmax(z_t/T) || softmax(z_s/T))`` per position, averaged
    over the real positions (``attention_mask == 1``; all of them without a mask).

    ``student_logits`` and ``teacher_logits`` are ``(batch, length, vocab)``; a different
    last dimension means different vocabularies and raises ``ValueError``. Computed in
    float32 as ``sum p log p - sum p log q`` with the teacher's probabilities ``p`` and the
    student's log-probabilities ``log q`` (the sums are contractions, no product tensor):
    at SmolLM2's 49,152 tokens a forward and backward pass peaks at three
    ``(batch, length, vocab)`` float32 tensors besides the logits (``F.kl_div`` on the two
    log-softmaxes: five). Padded positions are computed and then ignored. A token whose
    teacher logit is ``-inf`` (probability 0) contributes 0, also where the student gives it
    ``-inf`` too (those positions alone are recomputed with
    :func:`~shrinklib.distill.logits.safe_log_probs`).
    """
    temperature = check_temperature(temperature)
    for name, logits in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        check_instance(name, logits, torch.Tensor)
        if logits.ndim != 3:
            raise ValueError(f"{name} must be (batch, length, vocab), got shape {tuple(logits.shape)}")
    if student_logits.shape[-1] != teacher_logits.shape[-1]:
        raise ValueError(f"{_MISMATCH}: student logits over {student_logits.shape[-1]} tokens, "
                         f"teacher logits over {teacher_logits.shape[-1]}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits must have one shape, got {tuple(student_logits.shape)} "
                         f"and {tuple(teacher_logits.shape)}")
    if attention_mask is not None:
        check_instance("attention_mask", attention_mask, torch.Tensor, what="a torch.Tensor or None")
        if tuple(attention_mask.shape) != tuple(student_logits.shape[:2]):
            raise ValueError(f"attention_mask must be (batch, length) = {tuple(student_logits.shape[:2])}, "
                             f"got {tuple(attention_mask.shape)}")
        real = attention_mask.to(student_logits.device) == 1
        if not real.any():
            raise ValueError("attention_mask has no real position (no entry == 1): nothing to distil")

    def scaled(logits):
        logits = logits.float()
        return logits if temperature == 1.0 else logits / temperature

    with torch.no_grad():
        log_p = F.log_softmax(scaled(teacher_logits.detach()), dim=-1)
        p = log_p.exp()
        log_p.clamp_(min=torch.finfo(log_p.dtype).min)  # 0 * log 0 = 0 where the teacher masks a token (-inf)
        neg_entropy = torch.einsum("blv,blv->bl", p, log_p)  # sum p log p, no (B, L, V) temporary
        del log_p
    log_q = F.log_softmax(scaled(student_logits), dim=-1)
    kl = neg_entropy - torch.einsum("blv,blv->bl", p, log_q)  # (batch, length)
    undefined = kl.isnan()
    if undefined.any():  # 0 * -inf where both give a token probability 0 (or a nan logit): recompute those rows
        with torch.no_grad():
            log_p_rows = F.log_softmax(scaled(teacher_logits.detach()[undefined]), dim=-1)
        log_p_rows, log_q_rows = safe_log_probs(log_p_rows, log_q[undefined])
        kl = kl.masked_scatter(undefined, (log_p_rows.exp() * (log_p_rows - log_q_rows)).sum(-1))
    if attention_mask is None:
        mean = kl.mean()
    else:
        mean = kl[real].mean()
    return temperature ** 2 * mean


def word_level_distillation(teacher: nn.Module, *, temperature: float = 1.0, weight: float = 1.0):
    """An ``extra_losses`` term for :func:`shrinklib.train.fit`: ``weight * token_distillation_loss``.

    ``fn(model, batch, outputs)`` runs the teacher in eval mode without gradients on the
    batch with its ``labels`` removed and compares its logits with ``outputs.logits`` at
    the positions ``batch["attention_mask"]`` marks real. The student is not known before
    the first call, so each call checks that the two share a vocabulary
    (:func:`shrinklib.distill.logits.check_same_vocabulary`, which can also be called up
    front). A teacher on another device than the batch is moved to the batch's device.
    With ``TrainConfig(task_loss_weight=0)`` this is pure word-level KD; with the task
    loss on it is the usual mixture ``(1 - a) NLL + a KD`` up to the weights.
    ``temperature`` (> 0) and ``weight`` (>= 0) must be finite numbers; the teacher runs in
    eval mode on each call and keeps its own modes.
    """
    temperature = check_temperature(temperature)
    weight = check_weight(weight)
    return teacher_term(teacher, lambda student_logits, teacher_logits, batch: weight * token_distillation_loss(
        student_logits, teacher_logits, batch.get("attention_mask"), temperature))


# ----------------------------------------------------------------------------------
# The student

_WIDTH_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size")


def lm_student(teacher: nn.Module, *, hidden_size: int = 128, num_layers: int = 4, num_heads: int = 4,
               num_kv_heads: int | None = None, intermediate_size: int | None = None, seed: int = 0) -> nn.Module:
    """A randomly initialized decoder of the teacher's class with its own width and depth.

    It keeps what makes it speak the teacher's language: the vocabulary size, the special
    token ids (bos/eos/pad/unk), the rotary settings, the maximum positions, the
    activation and norm epsilon; it ties its input and output embeddings. ``num_kv_heads``
    defaults to ``num_heads`` (plain multi-head attention); ``intermediate_size`` to the
    teacher's MLP ratio times ``hidden_size`` (SmolLM2: 1536 / 576 = 8/3). The head size
    ``hidden_size / num_heads`` must be a whole, even number (rotary embeddings rotate
    pairs). Initialized after ``torch.manual_seed(seed)``; returned in eval mode.
    """
    if not isinstance(teacher, nn.Module) or not hasattr(teacher, "config"):
        raise TypeError(f"teacher must be a Hugging Face model with a config, got {type(teacher).__name__}")
    config = teacher.config
    missing = [k for k in (*_WIDTH_KEYS, "vocab_size") if not isinstance(getattr(config, k, None), int)]
    if missing:
        raise ValueError(f"teacher must have a Llama-style config (hidden_size, num_hidden_layers, "
                         f"num_attention_heads, ...); this {type(config).__name__} lacks {missing}")
    check_positive_int("hidden_size", hidden_size)
    check_positive_int("num_layers", num_layers)
    check_positive_int("num_heads", num_heads)
    num_kv_heads = num_heads if num_kv_heads is None else check_positive_int("num_kv_heads", num_kv_heads)
    if intermediate_size is None:
        intermediate_size = max(1, round(hidden_size * config.intermediate_size / config.hidden_size))
    check_positive_int("intermediate_size", intermediate_size)
    check_seed(seed)
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
    head_dim = hidden_size // num_heads
    if head_dim % 2:
        raise ValueError(f"hidden_size / num_heads must be even for rotary embeddings, got "
                         f"{hidden_size} / {num_heads} = {head_dim}")
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads ({num_heads}) must be divisible by num_kv_heads ({num_kv_heads})")

    values = config.to_dict()
    for key in ("_name_or_path", "_model_name_or_path", "quantization_config", "transformers_version",
                "layer_types"):  # per-layer lists follow the new depth
        values.pop(key, None)
    values.update(hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads,
                  num_key_value_heads=num_kv_heads, intermediate_size=intermediate_size, head_dim=head_dim,
                  tie_word_embeddings=True)
    student_config = type(config).from_dict(values)
    torch.manual_seed(seed)
    student = type(teacher)(student_config)
    student.tie_weights()
    return student.eval()


# ----------------------------------------------------------------------------------
# Sequence-level distillation: the teacher's text


def check_texts(name: str, texts) -> list[str]:
    """``texts`` as a list if it is a non-empty sequence of ``str`` (not one ``str``).

    ``TypeError`` for anything else, ``ValueError`` for an empty one; ``name`` is the
    argument's name in the messages.
    """
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"{name} must be a sequence of str (a list), got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError(f"{name} must not be empty")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(text).__name__}")
    return list(texts)


def check_tokenizer(tokenizer, *attributes: str):
    """``tokenizer`` if it has every one of ``attributes`` (``"__call__"``: it can be called),
    else a ``TypeError`` naming what it lacks: what each function needs of a Hugging Face
    tokenizer, checked before any model runs (a string passed by mistake has none of them)."""
    missing = [a for a in attributes if not hasattr(tokenizer, a)]
    if missing:
        raise TypeError(f"tokenizer must be a Hugging Face tokenizer, got {type(tokenizer).__name__} "
                        f"(it lacks {', '.join(missing)})")
    return tokenizer


def token_lists(tokenizer, texts: list[str], **kwargs) -> list[list[int]]:
    """The token ids of each text as a plain list: ``tokenizer(texts, **kwargs)["input_ids"]``, unpadded.

    Special tokens as the tokenizer adds them; ``kwargs`` go to the tokenizer
    (``truncation=True, max_length=...``). The rows a language-model batch is cut from.
    """
    check_tokenizer(tokenizer, "__call__")
    return [list(ids) for ids in tokenizer(texts, **kwargs)["input_ids"]]


def generate_corpus(teacher: nn.Module, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 64,
                    num_beams: int = 1, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                    batch_size: int = 8, seed: int = 0, progress: bool = True) -> list[str]:
    """The teacher's continuation of each prompt: ``prompt + generated text``, one per prompt.

    The text a student learns from in sequence-level KD (Kim & Rush, 2016). Greedy by
    default; ``num_beams > 1`` is beam search (the top beam is kept, Kim & Rush's main
    recipe); ``do_sample=True`` samples at ``temperature`` with nucleus ``top_p``
    (no top-k cut). Prompts are tokenized as the tokenizer does by default, left-padded
    and generated ``batch_size`` at a time without gradients; generation stops at the
    teacher's end-of-sequence token or after ``max_new_tokens``. The output is decoded
    without special tokens and begins with the prompt exactly as given. Sampling is
    reproducible: the torch RNG is seeded with ``seed`` inside (and restored after).
    Every argument is checked before the teacher runs (``TypeError`` for a teacher without
    ``generate``, a tokenizer that cannot be called or decode, prompts that are not a list of
    str, a non-bool flag; ``ValueError`` for the numbers, ``temperature`` and ``top_p`` finite);
    the teacher keeps its modes.
    """
    if not isinstance(teacher, nn.Module) or not callable(getattr(teacher, "generate", None)):
        raise TypeError(f"teacher must be a Hugging Face generative model (with .generate), "
                        f"got {type(teacher).__name__}")
    check_tokenizer(tokenizer, "__call__", "decode")
    prompts = check_texts("prompts", prompts)
    check_positive_int("max_new_tokens", max_new_tokens)
    check_positive_int("num_beams", num_beams)
    check_positive_int("batch_size", batch_size)
    check_bool("do_sample", do_sample)
    temperature = check_temperature(temperature)
    check_number("top_p", top_p, low=0, low_open=True, high=1, what="a number in (0, 1]")
    check_seed(seed)
    check_bool("progress", progress)
    ids = token_lists(tokenizer, prompts)
    for i, row in enumerate(ids):
        if not row:
            raise ValueError(f"prompts[{i}] = {prompts[i]!r} gives no token to continue from")

    gen = teacher.generation_config
    eos = gen.eos_token_id if gen.eos_token_id is not None else tokenizer.eos_token_id
    pad = pad_id(tokenizer=tokenizer, default=eos if isinstance(eos, int) else 0)
    options = dict(max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=do_sample, num_return_sequences=1,
                   repetition_penalty=1.0, pad_token_id=pad, eos_token_id=eos)
    if do_sample:
        options.update(temperature=temperature, top_p=float(top_p), top_k=0)
    device = model_device(teacher)
    texts: list[str] = []
    with evaluating(teacher), torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        bar = tqdm(total=len(prompts), desc="generate", unit="prompt", disable=not progress, leave=False)
        for start in range(0, len(ids), batch_size):
            rows = ids[start:start + batch_size]
            width = max(len(r) for r in rows)
            input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
            out = teacher.generate(input_ids=input_ids, attention_mask=mask, **options)
            for row, prompt, sequence in zip(rows, prompts[start:start + batch_size], out.tolist()):
                new = sequence[width:]
                full = tokenizer.decode(row + new, skip_special_tokens=True)
                head = tokenizer.decode(row, skip_special_tokens=True)
                # Keep the prompt exactly as written: decoding need not give its spelling back.
                texts.append(prompt + full[len(head):] if full.startswith(head) else full)
            bar.update(len(rows))
        bar.close()
    return texts


def lm_dataloader(texts: Sequence[str], tokenizer, *, block_size: int = 128, batch_size: int = 8,
                  shuffle: bool = False, seed: int = 0, top_k: Sequence[dict] | None = None):
    """A ``DataLoader`` of causal-LM batches for :func:`shrinklib.train.fit`, one text a row.

    Each text is tokenized (special tokens as the tokenizer adds them), truncated to
    ``block_size`` tokens and right-padded to the longest row of its batch. A batch is
    ``{"input_ids", "attention_mask", "labels"}`` with ``labels`` the input ids and -100
    exactly on the padding (the model shifts them itself: token t+1 is predicted from
    tokens <= t). Texts that give fewer than 2 tokens, so nothing to predict, are refused.
    With ``shuffle`` the order is seeded by ``seed``.

    ``top_k``: the teacher's stored top-k logits, one entry per text
    (:func:`shrinklib.distill.top_k.teacher_top_k` with the same ``block_size``); each
    batch then also holds ``teacher_top_ids`` and ``teacher_top_logits``,
    ``(batch, length, k)``, zero on the padding, for
    :func:`~shrinklib.distill.top_k.stored_word_level_distillation`. ``texts`` must be a
    non-empty list of str and ``tokenizer`` callable (``TypeError``), each ``top_k`` entry a
    dict of two tensors of the text's length.
    """
    from torch.utils.data import DataLoader

    texts = check_texts("texts", texts)
    check_int("block_size", block_size, minimum=2, what="an int >= 2")
    check_positive_int("batch_size", batch_size)
    check_bool("shuffle", shuffle)
    check_seed(seed)
    rows = token_lists(tokenizer, texts, truncation=True, max_length=block_size)
    for i, row in enumerate(rows):
        if len(row) < 2:
            raise ValueError(f"texts[{i}] = {texts[i][:40]!r} gives {len(row)} token(s); a row needs at least 2")
    pad = pad_id(tokenizer=tokenizer, default=0)
    if top_k is not None:
        _check_stored_top_k(top_k, rows)

    def collate(indices: list[int]) -> dict[str, torch.Tensor]:
        batch = [rows[i] for i in indices]
        width = max(len(r) for r in batch)
        input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in batch])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in batch])
        out = {"input_ids": input_ids, "attention_mask": mask, "labels": input_ids.masked_fill(mask == 0, -100)}
        if top_k is not None:
            k = top_k[0]["ids"].shape[1]
            for key, field, dtype in (("teacher_top_ids", "ids", torch.int64),
                                      ("teacher_top_logits", "logits", torch.float32)):
                padded = torch.zeros(len(batch), width, k, dtype=dtype)
                for row, i in enumerate(indices):
                    padded[row, :len(rows[i])] = top_k[i][field]
                out[key] = padded
        return out

    generator = torch.Generator().manual_seed(seed)
    return DataLoader(range(len(rows)), batch_size=batch_size, shuffle=shuffle, generator=generator,
                      collate_fn=collate)


def _check_stored_top_k(top_k, rows: list[list[int]]) -> None:
    if isinstance(top_k, dict) or not isinstance(top_k, Sequence):
        raise TypeError(f"top_k must be a sequence of dicts (teacher_top_k's output), got {type(top_k).__name__}")
    if len(top_k) != len(rows):
        raise ValueError(f"top_k must hold one entry per text ({len(rows)}), got {len(top_k)}")
    widths = set()
    for i, (entry, row) in enumerate(zip(top_k, rows)):
        if (not isinstance(entry, dict) or not {"ids", "logits"} <= set(entry)
                or not all(isinstance(entry[key], torch.Tensor) for key in ("ids", "logits"))):
            raise TypeError(f"top_k[{i}] must be a dict with 'ids' and 'logits' tensors (teacher_top_k's output)")
        shape = tuple(entry["ids"].shape)
        if len(shape) != 2 or shape != tuple(entry["logits"].shape) or shape[0] != len(row):
            raise ValueError(f"top_k[{i}] must be ({len(row)}, k) for the {len(row)} tokens of texts[{i}], got "
                             f"ids {shape} and logits {tuple(entry['logits'].shape)}: compute it with the same "
                             "tokenizer and block_size")
        widths.add(shape[1])
    if len(widths) > 1:
        raise ValueError(f"every top_k entry must keep one k, got {sorted(widths)}")
