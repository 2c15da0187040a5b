"""Quantized embedding tables: one symmetric scale per row (per token), integers stored.

An embedding lookup reads a few rows, so the table can stay in integers and only the
rows looked up are dequantized: ``E[i] = q[i] * scale[i]``. In a small encoder the
table is a large share of the weights (about 12M of MiniLM-L6's 22.7M parameters), so
quantizing the Linear layers alone leaves most of the file in fp32. Q8BERT (Zafrir et al.,
2019) quantizes the embeddings to 8 bits as well.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from shrinklib._checks import check_int, check_module, check_positive_int
from shrinklib.kernels.int4_weight import pack_int4, unpack_int4
from shrinklib.quant.primitives import check_bits, choose_qparams, qrange, quantize, storage_dtype
from shrinklib.rebuild import register_module
from shrinklib.utils import FilterFn, matching_modules, replace_modules_


@dataclass(frozen=True)
class EmbeddingConfig:
    """How :func:`quantize_embeddings_` stores a table: ``bits``-bit symmetric levels, one scale per row."""

    bits: int = 8

    def __post_init__(self):
        check_bits(self.bits)


def check_sizes(num_embeddings, embedding_dim, padding_idx) -> None:
    """Refuse what no embedding table has: a size that is not an int >= 1, a ``padding_idx`` outside the table."""
    check_positive_int("num_embeddings", num_embeddings)
    check_positive_int("embedding_dim", embedding_dim)
    if padding_idx is not None:
        check_int("padding_idx", padding_idx, minimum=-num_embeddings, maximum=num_embeddings - 1)


def all_embeddings(module: nn.Module, fqn: str) -> bool:
    """Default ``filter_fn`` of :func:`quantize_embeddings_`: every ``nn.Embedding``."""
    return isinstance(module, nn.Embedding)


@register_module
class QuantEmbedding(nn.Module):
    """An ``nn.Embedding`` stored as ``bits``-bit integers with one fp32 scale per row."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, bits: int = 8):
        super().__init__()
        check_sizes(num_embeddings, embedding_dim, padding_idx)
        check_bits(bits)
        if bits <= 4 and embedding_dim % 2:
            raise ValueError(f"{bits}-bit levels are stored two to a byte: embedding_dim must be even, "
                             f"got {embedding_dim}")
        self.num_embeddings, self.embedding_dim, self.padding_idx, self.bits = (num_embeddings, embedding_dim,
                                                                                 padding_idx, bits)
        width = embedding_dim // 2 if bits <= 4 else embedding_dim
        dtype = torch.uint8 if bits <= 4 else storage_dtype(bits, True)
        self.register_buffer("qweight", torch.zeros(num_embeddings, width, dtype=dtype))
        self.register_buffer("scale", torch.ones(num_embeddings, 1))

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding, bits: int = 8) -> "QuantEmbedding":
        """``embedding`` rounded to ``bits``-bit levels, one symmetric scale per row."""
        if not isinstance(embedding, nn.Embedding):
            raise TypeError(f"from_embedding needs an nn.Embedding, got {type(embedding).__name__}")
        module = cls(embedding.num_embeddings, embedding.embedding_dim, embedding.padding_idx, bits)
        module.to(embedding.weight.device)
        weight = embedding.weight.detach().float()
        scale, zero_point = choose_qparams(weight, bits, True, axis=0)
        q = quantize(weight, scale, zero_point, bits, True)
        if bits <= 4:
            q = pack_int4(q.to(torch.int16) - qrange(bits, True)[0])
        module.qweight.copy_(q)
        module.scale.copy_(scale)
        return module

    def _offset(self) -> int:
        return -qrange(self.bits, True)[0] if self.bits <= 4 else 0

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        levels = unpack_int4(self.qweight) if self.bits <= 4 else self.qweight
        return ((levels.float() - self._offset()) * self.scale).to(dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(ids, self.qweight)
        if self.bits <= 4:
            rows = unpack_int4(rows.reshape(-1, rows.shape[-1])).reshape(*ids.shape, self.embedding_dim)
        levels = rows
        return (levels.float() - self._offset()) * F.embedding(ids, self.scale)

    def rebuild_kwargs(self) -> dict:
        return {"num_embeddings": self.num_embeddings, "embedding_dim": self.embedding_dim,
                "padding_idx": self.padding_idx, "bits": self.bits}

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, bits={self.bits}"


def check_untied(model: nn.Module, tables: dict[str, nn.Embedding]) -> None:
    """Refuse a table whose weight another module shares (an LM head tied to it): quantizing would untie them."""
    check_module(model)
    users: dict[int, int] = {}
    for module in model.modules():
        for param in module.parameters(recurse=False):
            users[id(param)] = users.get(id(param), 0) + 1
    for fqn, m in tables.items():
        if users[id(m.weight)] > 1:
            raise ValueError(f"{fqn}'s weight is shared with another module (tied embeddings); leave it out "
                             "with filter_fn")


def quantize_embeddings_(model: nn.Module, config: EmbeddingConfig = EmbeddingConfig(), *,
                         filter_fn: FilterFn | None = None) -> nn.Module:
    """Swap the picked ``nn.Embedding`` tables (default: all) for :class:`QuantEmbedding`.

    A table whose weight another module shares (an LM head tied to the input embedding)
    is refused: quantizing one side would silently untie them. ``model`` must be a
    ``torch.nn.Module`` and ``config`` an :class:`EmbeddingConfig`; every table is checked
    and built before any is swapped.
    """
    check_module(model)
    if not isinstance(config, EmbeddingConfig):
        raise TypeError(f"config must be an EmbeddingConfig, got {type(config).__name__}")
    bits = config.bits
    picked = [(fqn, m) for fqn, m in matching_modules(model, filter_fn or all_embeddings)
              if isinstance(m, nn.Embedding)]
    if not picked:
        raise ValueError("the model has no nn.Embedding that filter_fn picks: nothing to quantize")
    check_untied(model, dict(picked))
    for fqn, m in picked:
        if bits <= 4 and m.embedding_dim % 2:
            raise ValueError(f"{bits}-bit levels are stored two to a byte; {fqn} has an odd embedding_dim")
    names = {fqn for fqn, _ in picked}
    return replace_modules_(model, lambda m, fqn: QuantEmbedding.from_embedding(m, bits),
                            filter_fn=lambda m, fqn: fqn in names)
