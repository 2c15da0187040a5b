"""Statistics of the inputs each layer sees on calibration data (for Wanda, SparseGPT).

One-shot pruning methods for large models read a few calibration batches through the
*dense* model and record, for every Linear layer they will prune, the inputs ``X``
(tokens x in_features) it receives: the squared norm of each input feature,
``sum_t x_tj^2`` (Wanda), and optionally the Gram matrix ``H = X^T X`` (SparseGPT's
layer-wise Hessian). The papers propagate through already-pruned layers one block at a
time; reading all statistics from the dense model in one pass is the simpler variant
(Wanda reports the difference is small), and is what this module does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn


@dataclass
class InputStats:
    """What a layer saw: per-feature squared norms, the Gram matrix if asked, token count."""

    sq_norm: torch.Tensor  # (in_features,)
    gram: torch.Tensor | None  # (in_features, in_features) = X^T X
    tokens: int


@torch.no_grad()
def input_statistics(model: nn.Module, batches: Iterable[dict], modules: dict[str, nn.Linear], *,
                     gram: bool = False, max_batches: int | None = None) -> dict[str, InputStats]:
    """Run ``batches`` (dicts of model inputs) through ``model`` and gather each module's input stats."""
    if not modules:
        raise ValueError("no module to calibrate")
    stats = {fqn: InputStats(torch.zeros(m.in_features, dtype=torch.float64),
                             torch.zeros(m.in_features, m.in_features, dtype=torch.float64) if gram else None, 0)
             for fqn, m in modules.items()}

    def hook_for(fqn):
        def hook(module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).to(torch.float64).cpu()
            s = stats[fqn]
            s.sq_norm += x.pow(2).sum(0)
            if s.gram is not None:
                s.gram += x.T @ x
            s.tokens += x.shape[0]

        return hook

    handles = [m.register_forward_pre_hook(hook_for(fqn)) for fqn, m in modules.items()]
    run_batches(model, batches, lambda batch: model(**{k: v for k, v in batch.items() if k != "labels"}),
                handles=handles, max_batches=max_batches, what="calibration")
    return stats


def run_batches(model: nn.Module, batches: Iterable[dict], step: Callable[[dict], None], *, handles=(),
                max_batches: int | None = None, what: str = "a") -> int:
    """Call ``step(batch)`` on up to ``max_batches`` batches moved to the model's device, in eval mode.

    Shared by the methods that read statistics off a model with hooks: the hooks in
    ``handles`` are removed and the model's mode restored however the loop ends. Returns
    the number of batches seen; none is an error.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    seen = 0
    try:
        for batch in batches:
            if max_batches is not None and seen >= max_batches:
                break
            step({k: v.to(device) for k, v in batch.items()})
            seen += 1
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if not seen:
        raise ValueError(f"batches gave no {what} batch")
    return seen


def lm_batches(token_blocks: torch.Tensor, batch_size: int = 4) -> list[dict]:
    """Calibration batches ``{"input_ids": ...}`` from ``shrinklib.data.lm_blocks`` output."""
    if token_blocks.ndim != 2:
        raise ValueError(f"token_blocks must be (blocks, block_size), got shape {tuple(token_blocks.shape)}")
    return [{"input_ids": token_blocks[i:i + batch_size]} for i in range(0, len(token_blocks), batch_size)]
