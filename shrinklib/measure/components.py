"""Which part of a model a module belongs to: embeddings, attention, FFN, norms, head, ...

The book breaks every cost (parameters, multiply-accumulates, bytes) down by the same
seven components, so that a chart can show *where* a model spends it and what a method
removes. :func:`component_of` decides the component of one module from its fully
qualified name and its class; it knows the layouts of BERT, Llama and the book's
BiLSTM classifier and falls back on ``"other"``.

The rules, first match wins:

1. ``"norms"``: a normalization module (``nn.LayerNorm``, ``nn.GroupNorm``, batch norm,
   ``nn.RMSNorm`` or any class whose name ends in ``Norm``, such as ``LlamaRMSNorm``),
   wherever it sits, ``bert.embeddings.LayerNorm`` and ``attention.output.LayerNorm``
   included. Given no module, a name part containing ``norm`` decides.
2. ``"recurrent"``: an ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (or its cell), or a name part
   ``lstm``/``gru``/``rnn``.
3. ``"head"``: a name part in :data:`shrinklib.utils.HEAD_NAMES` (``classifier``,
   ``pooler``, ``lm_head``, ``score``, ``qa_outputs``).
4. ``"embeddings"``: an ``nn.Embedding`` or a name part such as ``embeddings``,
   ``embed_tokens``, ``embedding``, ``rotary_emb``.
5. ``"attention"``: an ``nn.MultiheadAttention``, a class whose name contains
   ``Attention``, or a name part such as ``attention``, ``self_attn``, ``attn``
   (so BERT's ``attention.self.query`` and ``attention.output.dense`` both count).
6. ``"ffn"``: a name part such as ``intermediate``, ``mlp``, ``ffn``, ``feed_forward`` or
   BERT's ``output`` (the FFN's second linear, ``layer.N.output.dense``; the attention's
   ``attention.output.dense`` matched rule 5 already).
7. ``"other"``: everything else (the root module, containers, a plain ``nn.Sequential``).
"""
from __future__ import annotations

import re

from torch import nn

from shrinklib.utils import HEAD_NAMES

#: The components, in the order tables and charts show them.
COMPONENTS = ("embeddings", "attention", "ffn", "norms", "head", "recurrent", "other")

_NORM_CLASS = re.compile(r"Norm(\d+d)?$")
_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.modules.batchnorm._NormBase)
if hasattr(nn, "RMSNorm"):
    _NORM_TYPES = _NORM_TYPES + (nn.RMSNorm,)
_RECURRENT_TYPES = (nn.RNNBase, nn.RNNCellBase)
_RECURRENT_PARTS = {"lstm", "gru", "rnn", "bilstm"}
_EMBEDDING_PARTS = {
    "embeddings", "embedding", "embed_tokens", "embed_positions", "word_embeddings", "position_embeddings",
    "token_type_embeddings", "rotary_emb", "wte", "wpe",
}
_ATTENTION_PARTS = {
    "attention", "self_attn", "attn", "self_attention", "cross_attention", "crossattention", "encdecattention",
    "mha", "multihead_attn",
}
_FFN_PARTS = {
    "intermediate", "output", "mlp", "ffn", "feed_forward", "feedforward", "fc1", "fc2", "dense_relu_dense",
    "experts", "moe", "block_sparse_moe",
}


def _is_norm(module: nn.Module | None, parts: list[str]) -> bool:
    if module is not None:
        return isinstance(module, _NORM_TYPES) or bool(_NORM_CLASS.search(type(module).__name__))
    return any("norm" in part.lower() for part in parts)


def component_of(fqn: str, module: nn.Module | None = None) -> str:
    """The component (one of :data:`COMPONENTS`) of the module called ``fqn``.

    ``fqn`` is the name ``model.named_modules()`` gives (``"bert.encoder.layer.0.output.dense"``;
    ``""`` for the root). ``module`` is the module itself; pass it whenever you have it,
    since classes decide some cases (a norm under any name, an ``nn.LSTM``). With only a
    parameter's name, pass the name of the module that owns it. See the module docstring
    for the rules.
    """
    if not isinstance(fqn, str):
        raise TypeError(f"fqn must be a str (a name from model.named_modules()), got {type(fqn).__name__}")
    if module is not None and not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module or None, got {type(module).__name__}")
    parts = [p for p in fqn.split(".") if p]
    lower = [p.lower() for p in parts]
    if _is_norm(module, parts):
        return "norms"
    if isinstance(module, _RECURRENT_TYPES) or _RECURRENT_PARTS.intersection(lower):
        return "recurrent"
    if any(part in HEAD_NAMES for part in parts):
        return "head"
    if isinstance(module, nn.Embedding) or _EMBEDDING_PARTS.intersection(lower):
        return "embeddings"
    if (
        isinstance(module, nn.MultiheadAttention)
        or (module is not None and "Attention" in type(module).__name__)
        or _ATTENTION_PARTS.intersection(lower)
    ):
        return "attention"
    if _FFN_PARTS.intersection(lower):
        return "ffn"
    return "other"


def empty_breakdown() -> dict[str, int]:
    """``{component: 0}`` for every component, in :data:`COMPONENTS` order."""
    return {c: 0 for c in COMPONENTS}
