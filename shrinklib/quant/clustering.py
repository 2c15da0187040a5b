"""Weight sharing by clustering: k-means quantization and product quantization.

A uniform grid spreads its levels evenly; weights are not spread evenly. Clustering
puts the levels where the weights are:

* **k-means quantization** (Han et al., 2016, "Deep Compression"): the weights of a layer
  are clustered into ``2^bits`` values (1-D k-means, centroids initialized evenly over
  ``[min, max]`` as the paper recommends), and each weight stores the index of its
  centroid. The centroids stay trainable: the gradient of a centroid is the sum of the
  gradients of the weights that share it, the paper's fine-tuning of shared weights.
  :class:`ClusteredLinear`, :func:`cluster_` (:class:`ClusterConfig`).
* **product quantization** (Jegou et al., 2011; applied to embedding tables by, e.g.,
  Stock et al., 2020, "And the Bit Goes Down"): each row of an embedding table is cut
  into ``subvectors`` pieces, each piece's space is clustered into ``centroids`` codewords
  by k-means, and a row is stored as ``subvectors`` one-byte codes. A 384-wide fp32 row of
  1,536 bytes becomes, with 48 subvectors, 48 bytes (plus the shared codebooks).
  :class:`PQEmbedding`, :func:`pq_embeddings_` (:class:`PQConfig`).

:func:`kmeans` is Lloyd's algorithm: assign each point to its nearest centroid, move each
centroid to the mean of its points, repeat; a centroid that loses all its points stays
where it is.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from shrinklib._checks import check_bool, check_instance, check_int, check_module, check_positive_int, is_int
from shrinklib.kernels.int4_weight import pack_int4, unpack_int4
from shrinklib.quant.embedding import check_sizes, check_untied
from shrinklib.quant.primitives import check_bits
from shrinklib.rebuild import register_module
from shrinklib.utils import FilterFn, check_seed, matching_modules, replace_modules_


@dataclass(frozen=True)
class ClusterConfig:
    """How :func:`cluster_` shares a layer's weights: ``2^bits`` values, found by ``iters`` Lloyd iterations."""

    bits: int = 4
    iters: int = 25

    def __post_init__(self):
        check_bits(self.bits)
        check_int("iters", self.iters, minimum=1, what=">= 1")


@dataclass(frozen=True)
class PQConfig:
    """How :func:`pq_embeddings_` codes a table: ``subvectors`` codes per row, ``centroids`` codewords per subvector.

    Each subvector's codebook comes from ``iters`` Lloyd iterations; ``centroids`` is at
    most 256, so that a code fits in a byte.
    """

    subvectors: int = 8
    centroids: int = 256
    iters: int = 15

    def __post_init__(self):
        check_int("subvectors", self.subvectors, minimum=1, what="an int >= 1")
        check_int("centroids", self.centroids, minimum=1, maximum=256, what="from 1 to 256 (one byte per code)")
        check_int("iters", self.iters, minimum=1, what=">= 1")


@torch.no_grad()
def kmeans(points: torch.Tensor, centroids: int | torch.Tensor, *, iters: int = 25, seed: int = 0,
           chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """``(centroids (k, d), assignment (n,))`` of Lloyd's k-means on ``points (n, d)``.

    ``centroids`` is either the starting centroids ``(k, d)`` or a count ``k``, then drawn
    as ``k`` distinct points at random (``seed``, an int >= 0). Distances are computed
    ``chunk`` (an int >= 1) points at a time. ``points`` must be finite; ``iters`` an int >= 1.
    """
    check_instance("points", points, torch.Tensor)
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError(f"points must be a nonempty (n, d) tensor, got shape {tuple(points.shape)}")
    check_int("iters", iters, minimum=1, what=">= 1")
    check_seed(seed)
    check_positive_int("chunk", chunk)
    x = points.detach().float()
    if not torch.isfinite(x).all():
        raise ValueError("points hold inf or nan; k-means needs finite points")
    if is_int(centroids):
        if not 1 <= centroids <= x.shape[0]:
            raise ValueError(f"k must be between 1 and the {x.shape[0]} points, got {centroids}")
        pick = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:centroids]
        c = x[pick.to(x.device)].clone()
    else:
        check_instance("centroids", centroids, torch.Tensor, what="a count (an int) or a (k, d) tensor")
        c = centroids.detach().float().to(x.device).clone()
        if c.ndim != 2 or c.shape[1] != x.shape[1] or not torch.isfinite(c).all():
            raise ValueError(f"centroids must be a finite (k, {x.shape[1]}) tensor, got shape {tuple(c.shape)}")
    for _ in range(iters):
        assignment = nearest(x, c, chunk)
        sums = torch.zeros_like(c).index_add_(0, assignment, x)
        counts = torch.bincount(assignment, minlength=c.shape[0]).to(c.dtype)
        c = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], c)
    return c, nearest(x, c, chunk)


def nearest(points: torch.Tensor, centroids: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """Index of the nearest centroid (Euclidean) of every point."""
    return torch.cat([torch.cdist(points[i:i + chunk], centroids).argmin(dim=1)
                      for i in range(0, points.shape[0], chunk)])


def _store(indices: torch.Tensor, bits: int) -> torch.Tensor:
    return pack_int4(indices) if bits <= 4 else indices.to(torch.uint8)


def _load(stored: torch.Tensor, bits: int) -> torch.Tensor:
    return (unpack_int4(stored) if bits <= 4 else stored).long()


@register_module
class ClusteredLinear(nn.Module):
    """A Linear layer whose weights are ``2^bits`` shared values (a trainable codebook) and their indices."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bits: int = 4):
        super().__init__()
        check_positive_int("in_features", in_features)
        check_positive_int("out_features", out_features)
        check_bool("bias", bias)
        check_bits(bits)
        if bits <= 4 and in_features % 2:
            raise ValueError(f"{bits}-bit indices are stored two to a byte: in_features must be even, got {in_features}")
        self.in_features, self.out_features, self.bits = in_features, out_features, bits
        width = in_features // 2 if bits <= 4 else in_features
        self.codebook = nn.Parameter(torch.zeros(2 ** bits))
        self.register_buffer("indices", torch.zeros(out_features, width, dtype=torch.uint8))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int = 4, iters: int = 25) -> "ClusteredLinear":
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear needs an nn.Linear, got {type(linear).__name__}")
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, bits).to(linear.weight.device)
        w = linear.weight.detach().float().reshape(-1, 1)
        start = torch.linspace(float(w.min()), float(w.max()), 2 ** bits, device=w.device)[:, None]  # linear init
        codebook, assignment = kmeans(w, start, iters=iters)
        module.codebook.data.copy_(codebook[:, 0])
        module.indices.copy_(_store(assignment.reshape(linear.weight.shape), bits))
        if linear.bias is not None:
            module.bias.data.copy_(linear.bias.detach())
        return module

    def weight(self) -> torch.Tensor:
        """The shared-value weight ``codebook[indices]`` (differentiable in the codebook)."""
        return self.codebook[_load(self.indices, self.bits)]

    def dequantized_weight(self) -> torch.Tensor:
        """The weight the codes stand for, as the other quantized layers name it."""
        return self.weight()

    def rebuild_kwargs(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.bias is not None,
                "bits": self.bits}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight().to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {2 ** self.bits} shared values"


def cluster_(model: nn.Module, config: ClusterConfig = ClusterConfig(), *,
             filter_fn: FilterFn | None = None) -> nn.Module:
    """Swap the picked ``nn.Linear`` layers (default: the body's, not the head) for :class:`ClusteredLinear`.

    ``model`` must be a ``torch.nn.Module`` and ``config`` a :class:`ClusterConfig`; every
    layer is checked and built before any is swapped.
    """
    check_module(model)
    if not isinstance(config, ClusterConfig):
        raise TypeError(f"config must be a ClusterConfig, got {type(config).__name__}")
    bits = config.bits
    picked = {fqn: m for fqn, m in matching_modules(model, filter_fn) if isinstance(m, nn.Linear)}
    if not picked:
        raise ValueError("the model has no nn.Linear layer that filter_fn picks: nothing to cluster")
    for fqn, m in picked.items():
        if bits <= 4 and m.in_features % 2:
            raise ValueError(f"{bits}-bit indices are stored two to a byte; {fqn} has odd in_features")
    return replace_modules_(model, lambda m, fqn: ClusteredLinear.from_linear(m, bits, config.iters),
                            filter_fn=lambda m, fqn: fqn in picked)


@register_module
class PQEmbedding(nn.Module):
    """An embedding table stored as product-quantization codes: one byte per subvector of each row."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, subvectors: int = 8,
                 centroids: int = 256):
        super().__init__()
        check_sizes(num_embeddings, embedding_dim, padding_idx)
        check_positive_int("subvectors", subvectors)
        check_int("centroids", centroids, minimum=1, maximum=256, what="from 1 to 256 (one byte per code)")
        if embedding_dim % subvectors:
            raise ValueError(f"subvectors={subvectors} must divide embedding_dim={embedding_dim}")
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.subvectors, self.centroids = subvectors, centroids
        self.register_buffer("codebooks", torch.zeros(subvectors, centroids, embedding_dim // subvectors))
        self.register_buffer("codes", torch.zeros(num_embeddings, subvectors, dtype=torch.uint8))

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding, subvectors: int = 8, centroids: int = 256, iters: int = 15,
                       seed: int = 0) -> "PQEmbedding":
        """``embedding`` product-quantized: k-means (``iters`` iterations, seeded) in each subvector's space."""
        if not isinstance(embedding, nn.Embedding):
            raise TypeError(f"from_embedding needs an nn.Embedding, got {type(embedding).__name__}")
        module = cls(embedding.num_embeddings, embedding.embedding_dim, embedding.padding_idx, subvectors, centroids)
        module.to(embedding.weight.device)
        pieces = embedding.weight.detach().float().reshape(embedding.num_embeddings, subvectors, -1)
        if centroids > embedding.num_embeddings:
            raise ValueError(f"centroids={centroids} is more than the table's {embedding.num_embeddings} rows")
        for j in range(subvectors):
            codebook, assignment = kmeans(pieces[:, j], centroids, iters=iters, seed=seed + j)
            module.codebooks[j].copy_(codebook)
            module.codes[:, j].copy_(assignment.to(torch.uint8))
        return module

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        codes = self.codes[ids].long()  # (..., m)
        picked = self.codebooks[torch.arange(self.subvectors, device=codes.device), codes]  # (..., m, d/m)
        return picked.flatten(-2)

    def dequantized_weight(self) -> torch.Tensor:
        return self.rows(torch.arange(self.num_embeddings, device=self.codes.device))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.rows(ids)

    def rebuild_kwargs(self) -> dict:
        return {"num_embeddings": self.num_embeddings, "embedding_dim": self.embedding_dim,
                "padding_idx": self.padding_idx, "subvectors": self.subvectors, "centroids": self.centroids}

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.embedding_dim}, {self.subvectors} subvectors x "
                f"{self.centroids} centroids")


def pq_embeddings_(model: nn.Module, config: PQConfig = PQConfig(), *,
                   filter_fn: FilterFn | None = None) -> nn.Module:
    """Swap the picked ``nn.Embedding`` tables for :class:`PQEmbedding`.

    The default ``filter_fn`` picks the tables with at least ``centroids`` rows (in a BERT
    at 256 centroids: the word and position tables, not the two token types). A picked
    table too small for its codebook, whose width ``subvectors`` does not divide, or
    tied to another module is refused before any table changes. ``model`` must be a
    ``torch.nn.Module`` and ``config`` a :class:`PQConfig`.
    """
    check_module(model)
    if not isinstance(config, PQConfig):
        raise TypeError(f"config must be a PQConfig, got {type(config).__name__}")
    subvectors, centroids = config.subvectors, config.centroids

    def large_tables(module: nn.Module, fqn: str) -> bool:
        return isinstance(module, nn.Embedding) and module.num_embeddings >= centroids

    picked = {fqn: m for fqn, m in matching_modules(model, filter_fn or large_tables) if isinstance(m, nn.Embedding)}
    if not picked:
        raise ValueError("the model has no nn.Embedding that filter_fn picks: nothing to quantize")
    check_untied(model, picked)
    for fqn, m in picked.items():
        if subvectors < 1 or m.embedding_dim % subvectors:
            raise ValueError(f"subvectors={subvectors} must divide the embedding_dim={m.embedding_dim} of {fqn}")
        if centroids > m.num_embeddings:
            raise ValueError(f"centroids={centroids} is more than the {m.num_embeddings} rows of {fqn}; "
                             "leave it out with filter_fn")
    return replace_modules_(model, lambda m, fqn: PQEmbedding.from_embedding(m, subvectors, centroids, config.iters),
                            filter_fn=lambda m, fqn: fqn in picked)
