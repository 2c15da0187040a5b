"""Students for BERT-style teachers: a subset of the teacher's layers, or a smaller random BERT.

* :func:`student_from_teacher` - the initialisation of DistilBERT (Sanh et al., 2019,
  "DistilBERT, a distilled version of BERT: smaller, faster, cheaper and lighter"):
  the student has the teacher's width and keeps every other layer of it (DistilBERT took
  one layer out of two), plus the teacher's embeddings and head. Starting from the
  teacher's weights rather than at random is worth several GLUE points.
* :func:`bert_student` - a randomly initialised BERT of the teacher's class with its own
  depth and width but the teacher's vocabulary and label set: the students of TinyBERT
  (Jiao et al., 2020) and MiniLM (Wang et al., 2020), whose width differs from the
  teacher's, so that their hidden states are compared through a learned projection or
  through relations that do not depend on the width.
* :func:`bilstm_student` - a BiLSTM over the teacher's vocabulary and embeddings (Tang et
  al., 2019), a student of another architecture altogether.

Both work on any Hugging Face BERT-like model: ``model.base_model`` must hold
``embeddings`` and ``encoder.layer`` (``BertForSequenceClassification``, ``BertModel``,
``BertForMaskedLM``, RoBERTa, ...). Anything else is refused with a ``TypeError``.
"""
from __future__ import annotations

import copy
import re
from typing import Sequence

import torch
from torch import nn

from shrinklib import zoo
from shrinklib._checks import check_int, is_int
from shrinklib.arch import bert_backbone
from shrinklib.distill.sequence import check_tokenizer
from shrinklib.utils import check_seed


def _like(model: nn.Module, new: nn.Module) -> nn.Module:
    """``new`` on the device and in the dtype and train/eval mode of ``model``."""
    param = next(model.parameters())
    return new.to(device=param.device, dtype=param.dtype).train(model.training)


def student_from_teacher(teacher: nn.Module, layers: Sequence[int]) -> nn.Module:
    """A new model of ``teacher``'s class keeping the encoder layers ``layers`` (0-based, increasing).

    The student's config is the teacher's with ``num_hidden_layers=len(layers)``; its
    embeddings, the chosen layers (renumbered 0..len-1), the pooler and the task head are
    copies of the teacher's (the teacher is left untouched). DistilBERT's choice for a
    12-layer teacher is ``layers=range(0, 12, 2)``. The teacher (BERT-like, else
    ``TypeError``) and ``layers`` (a non-empty, strictly increasing sequence of layer
    indices) are checked before anything is built.
    """
    base = bert_backbone(teacher, "teacher")
    depth = len(base.encoder.layer)
    if isinstance(layers, (str, bytes)) or not isinstance(layers, (Sequence, range)):
        raise TypeError(f"layers must be a sequence of ints, got {type(layers).__name__}")
    layers = list(layers)
    if not layers:
        raise ValueError("layers must name at least one teacher layer, got an empty sequence")
    if not all(is_int(i) for i in layers):
        raise TypeError(f"layers must hold ints, got {layers!r}")
    if any(i < 0 or i >= depth for i in layers):
        raise ValueError(f"layers must be 0-based teacher layer indices in 0..{depth - 1} "
                         f"(the teacher has {depth} layers), got {layers!r}")
    if any(b <= a for a, b in zip(layers, layers[1:])):
        raise ValueError(f"layers must be strictly increasing, got {layers!r}")

    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    student = type(teacher)(config)

    # Map the teacher's state dict onto the student's names: layer i of the teacher becomes
    # layer layers.index(i) of the student, layers left out are dropped, the rest is kept.
    prefix = next(n for n, m in teacher.named_modules() if m is base.encoder.layer)
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.(.*)$")
    renumber = {old: new for new, old in enumerate(layers)}
    state = {}
    for key, value in teacher.state_dict().items():
        match = pattern.match(key)
        if match is None:
            state[key] = value
        elif int(match.group(1)) in renumber:
            state[f"{prefix}.{renumber[int(match.group(1))]}.{match.group(2)}"] = value
    student.load_state_dict(state, strict=True)  # copies: the student shares no tensor with the teacher
    return _like(teacher, student)


def bert_student(teacher: nn.Module, *, num_layers: int, hidden_size: int, num_heads: int, intermediate_size: int,
                 seed: int = 0) -> nn.Module:
    """A randomly initialised model of ``teacher``'s class, with its own depth and width.

    It keeps the teacher's vocabulary, maximum positions, token types and labels (so it
    reads the same tokenizer's batches and predicts the same classes) and has
    ``num_layers`` layers of width ``hidden_size`` with ``num_heads`` heads and a
    feed-forward of ``intermediate_size``. ``seed`` fixes the initialisation without
    touching the caller's random state. The sizes (positive ints, ``hidden_size`` divisible
    by ``num_heads``) and the seed are checked before anything is built; the teacher is only read.
    """
    bert_backbone(teacher, "teacher")
    for name, value in (("num_layers", num_layers), ("hidden_size", hidden_size), ("num_heads", num_heads),
                        ("intermediate_size", intermediate_size)):
        check_int(name, value, minimum=1, what="a positive int")
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
    check_seed(seed)
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = num_layers
    config.hidden_size = hidden_size
    config.num_attention_heads = num_heads
    config.intermediate_size = intermediate_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = type(teacher)(config)
    return _like(teacher, student)


def bilstm_student(teacher: nn.Module, tokenizer, *, hidden_size: int = 300) -> nn.Module:
    """A one-layer BiLSTM classifier over the teacher's vocabulary, its embeddings copied from the teacher.

    The student of Tang et al. (2019, "Distilling Task-Specific Knowledge from BERT into
    Simple Neural Networks"), with the teacher's input embeddings (a copy) in place of
    their word2vec vectors, so it reads the teacher's tokenizer's batches. The LSTM and
    the classifier start at random: seed before calling for a reproducible student.
    ``tokenizer`` must be a Hugging Face tokenizer (its length and ``pad_token_id`` are
    read) whose length is the teacher's number of embeddings; the teacher is only read.
    """
    check_int("hidden_size", hidden_size, minimum=1, what="a positive int")
    if not isinstance(teacher, nn.Module) or not hasattr(teacher, "get_input_embeddings"):
        raise TypeError(f"teacher must be a model with get_input_embeddings(), got {type(teacher).__name__}")
    check_tokenizer(tokenizer, "__len__", "pad_token_id")
    embeddings = teacher.get_input_embeddings().weight
    if len(tokenizer) != embeddings.shape[0]:
        raise ValueError(f"the tokenizer's {len(tokenizer)} tokens do not match the teacher's "
                         f"{embeddings.shape[0]} embeddings")
    student = zoo.bilstm(tokenizer, embed_dim=embeddings.shape[1], hidden_size=hidden_size)
    with torch.no_grad():
        student.embedding.weight.copy_(embeddings)
    return student
