"""Where a model's parts are: its blocks, attention, FFNs, embeddings, head, vocabulary and pad id.

Every compression method has to find the parts it changes. This module answers those
questions once, for the three kinds of model the book uses:

- BERT-family encoders (``BertForSequenceClassification``): ``base_model.encoder.layer[i]``
  holds ``attention.self.{query,key,value}``, ``attention.output.dense``,
  ``intermediate.dense`` and ``output.dense``;
- Llama-family decoders (``LlamaForCausalLM``, SmolLM2): ``model.layers[i]`` holds
  ``self_attn.{q,k,v,o}_proj`` and ``mlp.{gate,up,down}_proj``, and an ``lm_head`` that
  may be tied to the input embedding;
- the BiLSTM (:class:`shrinklib.lstm.BiLSTMClassifier`): an ``embedding``, an LSTM and a
  classifier; no blocks, attention or FFN.

Plain ``nn.Module`` stacks are found by shape (:func:`blocks`: the longest
``nn.ModuleList`` that holds Linear layers). Functions that look for a part return an
empty list (or ``None``) when a model has none, and the functions that need one raise a
``ValueError``/``TypeError`` naming the model's class. A ``model`` that is not an
``nn.Module`` is refused with a ``TypeError`` by every function here (through :func:`unwrap`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from shrinklib._checks import check_instance, check_int, check_module, is_int


def unwrap(model: nn.Module) -> nn.Module:
    """``model`` with wrappers that hold it as ``.module`` (DistributedDataParallel, DataParallel) looked through."""
    check_module(model)
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def blocks(model: nn.Module) -> nn.ModuleList:
    """The model's stack of transformer blocks: its longest ``nn.ModuleList`` that holds Linear layers.

    ``model.model.layers`` of a Llama, ``model.bert.encoder.layer`` of a BERT, the list of
    blocks of a plain stack. A model with none (the BiLSTM) raises ``ValueError``.
    """
    stacks = [m for m in unwrap(model).modules() if isinstance(m, nn.ModuleList) and len(m)
              and any(isinstance(sub, nn.Linear) for sub in m.modules())]
    if not stacks:
        raise ValueError(f"found no stack of layers (an nn.ModuleList of blocks) in this {type(model).__name__}")
    return max(stacks, key=len)


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ``ModuleList`` of a BERT-style encoder's layers (``...encoder.layer``)."""
    for fqn, module in unwrap(model).named_modules():
        if fqn.endswith("encoder.layer") and isinstance(module, nn.ModuleList):
            return module
    raise ValueError(f"no BERT-style encoder (a ModuleList at '...encoder.layer') in this {type(model).__name__}")


def bert_backbone(model, name: str = "model") -> nn.Module:
    """``model.base_model`` when it is BERT-like (``embeddings`` and ``encoder.layer``), else ``TypeError``."""
    base = getattr(model, "base_model", None) if isinstance(model, nn.Module) else None
    encoder = getattr(base, "encoder", None)
    if (base is None or not hasattr(base, "embeddings") or not hasattr(model, "config")
            or not isinstance(getattr(encoder, "layer", None), nn.ModuleList)):
        raise TypeError(f"{name} must be a BERT-like Hugging Face model (model.base_model.embeddings and "
                        f"model.base_model.encoder.layer, e.g. BertForSequenceClassification), "
                        f"got {type(model).__name__}")
    return base


@dataclass(frozen=True)
class Attention:
    """One self-attention module and its projections.

    ``query``/``key``/``value`` map the hidden states to the heads, ``output`` maps the
    heads back; ``num_heads`` query heads of ``head_dim`` each (``num_kv_heads`` key/value
    heads: fewer than ``num_heads`` under grouped-query attention). ``fqn`` names
    ``module``, the one that owns query/key/value.
    """

    fqn: str
    module: nn.Module
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    output: nn.Linear
    num_heads: int
    num_kv_heads: int
    head_dim: int


def _bert_attention(model: nn.Module, fqn: str, module: nn.Module) -> Attention | None:
    if not (fqn.endswith("attention.self")
            and all(hasattr(module, a) for a in ("query", "key", "value", "attention_head_size"))):
        return None
    parent = model.get_submodule(fqn.rpartition(".")[0])
    head_dim = module.attention_head_size
    heads = module.query.out_features // head_dim
    return Attention(fqn, module, module.query, module.key, module.value, parent.output.dense, heads, heads, head_dim)


def _llama_attention(model: nn.Module, fqn: str, module: nn.Module) -> Attention | None:
    names = ("q_proj", "k_proj", "v_proj", "o_proj")
    if not all(isinstance(getattr(module, n, None), nn.Linear) for n in names):
        return None
    config = getattr(module, "config", None) or getattr(model, "config", None)
    head_dim = getattr(module, "head_dim", None)
    if not isinstance(head_dim, int):
        head_dim = module.q_proj.out_features // config.num_attention_heads
    return Attention(fqn, module, module.q_proj, module.k_proj, module.v_proj, module.o_proj,
                     module.q_proj.out_features // head_dim, module.k_proj.out_features // head_dim, head_dim)


def attention_modules(model: nn.Module) -> list[Attention]:
    """Every self-attention module of a BERT-like encoder or a Llama-like decoder, in order (empty for a BiLSTM)."""
    model = unwrap(model)
    found = []
    for fqn, module in model.named_modules():
        attention = _bert_attention(model, fqn, module) or _llama_attention(model, fqn, module)
        if attention is not None:
            found.append(attention)
    return found


@dataclass(frozen=True)
class FeedForward:
    """One feed-forward network (FFN) and its projections.

    ``up`` maps the hidden size to the intermediate size (BERT's ``intermediate.dense``,
    Llama's ``up_proj``), ``down`` maps it back (``output.dense``, ``down_proj``), ``gate``
    is Llama's gated branch (``gate_proj``; ``None`` in BERT). ``module`` is the module that
    holds ``up`` (the BERT layer itself, or Llama's ``mlp``); ``fqn`` names it.
    """

    fqn: str
    module: nn.Module
    up: nn.Linear
    down: nn.Linear
    gate: nn.Linear | None

    @property
    def intermediate_size(self) -> int:
        return self.up.out_features


def ffn_modules(model: nn.Module) -> list[FeedForward]:
    """Every FFN of a BERT-like encoder (``intermediate.dense`` + ``output.dense``) or a Llama-like
    decoder (``mlp.{gate,up,down}_proj``), in order (empty for a BiLSTM)."""
    found = []
    for fqn, m in unwrap(model).named_modules():
        if (isinstance(getattr(getattr(m, "intermediate", None), "dense", None), nn.Linear)
                and isinstance(getattr(getattr(m, "output", None), "dense", None), nn.Linear)):
            found.append(FeedForward(fqn, m, m.intermediate.dense, m.output.dense, None))
        elif all(isinstance(getattr(m, n, None), nn.Linear) for n in ("gate_proj", "up_proj", "down_proj")):
            found.append(FeedForward(fqn, m, m.up_proj, m.down_proj, m.gate_proj))
    return found


def input_embedding(model: nn.Module) -> nn.Embedding | None:
    """The token embedding: ``get_input_embeddings()`` (Hugging Face), else an ``embedding``
    attribute (the BiLSTM), else the model's first ``nn.Embedding``; ``None`` if it has none."""
    model = unwrap(model)
    get = getattr(model, "get_input_embeddings", None)
    if callable(get):
        try:
            embedding = get()
        except (NotImplementedError, AttributeError):
            embedding = None
        if isinstance(embedding, nn.Embedding):
            return embedding
    embedding = getattr(model, "embedding", None)
    if isinstance(embedding, nn.Embedding):
        return embedding
    return next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)


def lm_head(model: nn.Module) -> nn.Linear | None:
    """The language-model head (``get_output_embeddings()``, e.g. a Llama's ``lm_head``), or ``None``."""
    get = getattr(unwrap(model), "get_output_embeddings", None)
    head = get() if callable(get) else None
    return head if isinstance(head, nn.Linear) else None


def tied_embeddings(model: nn.Module) -> bool:
    """``True`` when the LM head and the input embedding share one weight tensor (SmolLM2 does)."""
    head, embedding = lm_head(model), input_embedding(model)
    return head is not None and embedding is not None and head.weight is embedding.weight


def vocab_size(model: nn.Module) -> int | None:
    """Number of token ids ``model`` reads: its input embedding's rows, else ``config.vocab_size``; ``None`` if neither."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    model = unwrap(model)
    get = getattr(model, "get_input_embeddings", None)
    if callable(get):  # a Hugging Face model's own answer comes first
        try:
            embedding = get()
        except (NotImplementedError, AttributeError):
            embedding = None
        rows = getattr(embedding, "num_embeddings", None)
        if isinstance(embedding, nn.Module) and isinstance(rows, int):
            return rows
    embedding = getattr(model, "embedding", None)
    if isinstance(embedding, nn.Embedding):
        return embedding.num_embeddings
    size = getattr(getattr(model, "config", None), "vocab_size", None)
    if is_int(size):
        return size
    embedding = input_embedding(model)
    return None if embedding is None else embedding.num_embeddings


def _int_attribute(source, name: str) -> int | None:
    value = getattr(source, name, None)
    return value if is_int(value) else None


def pad_id(model: nn.Module | None = None, tokenizer=None, *, default: int | None = None) -> int | None:
    """The token id that pads a batch, looked up in one order everywhere.

    The tokenizer's ``pad_token_id``, the model config's ``pad_token_id``, the tokenizer's
    ``eos_token_id`` (decoders such as SmolLM2 pad with end-of-sequence), the input
    embedding's ``padding_idx``, and last ``default``. Padded positions are masked out,
    so when nothing names a pad any id will do: pass ``default=0``. ``model`` must be an
    ``nn.Module`` or ``None``, ``default`` an int or ``None``.
    """
    if default is not None:
        check_int("default", default)
    model = None if model is None else unwrap(model)
    config = getattr(model, "config", None)
    for source, name in ((tokenizer, "pad_token_id"), (config, "pad_token_id"), (tokenizer, "eos_token_id")):
        value = _int_attribute(source, name)
        if value is not None:
            return value
    embedding = None if model is None else input_embedding(model)
    if embedding is not None and embedding.padding_idx is not None:
        return embedding.padding_idx
    return default


def slice_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping the output rows (``dim=0``) or input columns (``dim=1``) in ``index``.

    The surgery behind every structured change that makes a layer narrower (heads,
    neurons): the kept rows or columns are copied, the bias follows the output rows.
    ``linear`` must be an ``nn.Linear`` and ``index`` an integer tensor.
    """
    check_instance("linear", linear, nn.Linear)
    check_instance("index", index, torch.Tensor)
    if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
        raise TypeError(f"index must be an integer tensor of row or column numbers, got {index.dtype}")
    if dim not in (0, 1):
        raise ValueError(f"dim must be 0 (output rows) or 1 (input columns), got {dim!r}")
    weight = linear.weight.detach().index_select(dim, index)
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None,
                    device=weight.device, dtype=weight.dtype)
    new.weight.data.copy_(weight)
    if linear.bias is not None:
        new.bias.data.copy_(linear.bias.detach() if dim == 1 else linear.bias.detach().index_select(0, index))
    return new
