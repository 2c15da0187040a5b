"""Quality of a model: accuracy with a bootstrap interval, and perplexity.

* :func:`predict_logits` runs a classifier over a dataset (a Hugging Face
  ``datasets.Dataset`` or a dict of lists) with ``text``/``label`` columns, tokenizing
  each batch on the fly and padding it to its own longest sentence (dynamic padding), or
  over already tokenized ``input_ids`` (and ``attention_mask``) columns.
* :func:`correctness` is 1.0 where the model predicts the label and 0.0 where it does
  not, example by example: the unit that :func:`shrinklib.measure.paired_bootstrap`
  compares two models on.
* :func:`accuracy` is the share of correct predictions with a 95% percentile-bootstrap
  interval (:func:`shrinklib.measure.bootstrap_ci`; Efron & Tibshirani, 1993, *An
  Introduction to the Bootstrap*): on 1,000 test sentences an accuracy of 0.80 is only
  known to about +-0.025, and the book says whether two models differ by more than that
  before it calls one better.
* :func:`perplexity` is exp of the mean next-token negative log-likelihood over a text
  cut into non-overlapping blocks (each block is scored on its own, so its first token
  has no context; the usual convention, e.g. the Hugging Face perplexity guide).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from shrinklib._checks import check_int, check_module, check_number, check_positive_int
from shrinklib.arch import pad_id
from shrinklib.measure.bootstrap import bootstrap_ci, check_confidence
from shrinklib.measure.forward import evaluating, model_device
from shrinklib.utils import check_seed

#: Below this many batches no progress bar is shown (when ``progress`` is None).
PROGRESS_MIN_BATCHES = 10


def _columns(dataset) -> list[str]:
    if isinstance(dataset, dict):
        return list(dataset)
    names = getattr(dataset, "column_names", None)
    if names is None:
        raise TypeError(f"dataset must be a datasets.Dataset or a dict of columns, got {type(dataset).__name__}")
    return list(names)


def _length(dataset) -> int:
    if isinstance(dataset, dict):
        lengths = {len(v) for v in dataset.values()}
        if len(lengths) > 1:
            raise ValueError(f"the columns of dataset must have one length, got lengths {sorted(lengths)}")
        return lengths.pop() if lengths else 0
    return len(dataset)


def _column(dataset, name: str, start: int, stop: int) -> list:
    rows = dataset[name][start:stop] if isinstance(dataset, dict) else dataset[start:stop][name]
    if isinstance(rows, torch.Tensor):
        return rows.tolist()
    return [r.tolist() if isinstance(r, (torch.Tensor, np.ndarray)) else r for r in rows]


def _pad_batch(ids: list, masks: list | None, pad_id: int, device) -> dict[str, torch.Tensor]:
    longest = max(len(r) for r in ids)
    input_ids = torch.full((len(ids), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), longest), dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        attention_mask[i, : len(row)] = torch.as_tensor(masks[i], dtype=torch.long) if masks is not None else 1
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}


def _check_tokenizer(tokenizer) -> None:
    if not callable(tokenizer):
        raise TypeError(f"tokenizer must be a tokenizer (callable on text), got {type(tokenizer).__name__}")


def _logits_of(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None:
        raise TypeError(f"the model returned a {type(output).__name__} without .logits")
    return logits


def predict_logits(
    model: nn.Module,
    dataset,
    tokenizer=None,
    batch_size: int = 64,
    max_length: int = 64,
    *,
    progress: bool | None = None,
) -> torch.Tensor:
    """Logits (n, num_labels), float32 on the CPU, of ``model`` on every row of ``dataset`` in order.

    Rows come from an ``input_ids`` column if there is one (padded with the tokenizer's,
    else the model's, pad id; ``attention_mask`` used if present; ``max_length`` not
    applied), else from a ``text`` column tokenized by ``tokenizer`` with truncation to
    ``max_length`` tokens. The model runs in eval mode under ``torch.inference_mode``.
    ``progress``: show a tqdm bar (None: only for ``PROGRESS_MIN_BATCHES`` batches or more).
    """
    check_module(model)
    check_positive_int("batch_size", batch_size)
    check_positive_int("max_length", max_length)
    columns = _columns(dataset)
    pretokenized = "input_ids" in columns
    if not pretokenized and "text" not in columns:
        raise ValueError(f"dataset must have a 'text' or an 'input_ids' column, got columns {columns}")
    if not pretokenized and tokenizer is None:
        raise ValueError("tokenizer is required for a dataset with a 'text' column (or give 'input_ids')")
    if not pretokenized:
        _check_tokenizer(tokenizer)
    n = _length(dataset)
    if n == 0:
        raise ValueError("dataset is empty; there is nothing to predict")
    starts = range(0, n, batch_size)
    show = len(starts) >= PROGRESS_MIN_BATCHES if progress is None else bool(progress)
    device, pad = model_device(model), pad_id(model, tokenizer, default=0)
    outputs = []
    with evaluating(model), torch.inference_mode():
        for start in tqdm(starts, desc="predicting", unit="batch", disable=not show, leave=False):
            stop = min(start + batch_size, n)
            if pretokenized:
                masks = _column(dataset, "attention_mask", start, stop) if "attention_mask" in columns else None
                batch = _pad_batch(_column(dataset, "input_ids", start, stop), masks, pad, device)
            else:
                texts = _column(dataset, "text", start, stop)
                encoded = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
                batch = {"input_ids": encoded["input_ids"].to(device), "attention_mask": encoded["attention_mask"].to(device)}
            outputs.append(_logits_of(model(**batch)).float().cpu())
    return torch.cat(outputs)


@dataclass(frozen=True)
class Accuracy:
    """An accuracy ``value`` in [0, 1] with its bootstrap interval [``low``, ``high``] over ``n`` examples."""

    value: float
    low: float
    high: float
    n: int

    def __post_init__(self):
        for name in ("value", "low", "high"):
            check_number(name, getattr(self, name), low=0, high=1, what="a number in [0, 1]")
        if self.low > self.high:
            raise ValueError(f"low must not exceed high, got low={self.low}, high={self.high}")
        check_positive_int("n", self.n)

    def __str__(self) -> str:
        return f"{100 * self.value:.1f}% [{100 * self.low:.1f}, {100 * self.high:.1f}] (n={self.n})"


def correctness(
    model: nn.Module,
    dataset,
    tokenizer=None,
    *,
    batch_size: int = 64,
    max_length: int = 64,
    progress: bool | None = None,
) -> np.ndarray:
    """1.0 where ``model`` predicts the ``label`` column of ``dataset``, 0.0 where it does not.

    A float64 NumPy array with one entry per row, in order; its mean is the accuracy, and
    two models' arrays on the same rows are what :func:`shrinklib.measure.paired_bootstrap`
    compares. Prediction as in :func:`predict_logits` (the arguments mean the same).
    """
    check_module(model)
    if "label" not in _columns(dataset):
        raise ValueError(f"dataset must have a 'label' column, got columns {_columns(dataset)}")
    logits = predict_logits(model, dataset, tokenizer, batch_size, max_length, progress=progress)
    labels = torch.as_tensor(_column(dataset, "label", 0, _length(dataset)), dtype=torch.long)
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(
            f"labels must lie in [0, {logits.shape[1]}) for a model with {logits.shape[1]} outputs, "
            f"got labels in [{int(labels.min())}, {int(labels.max())}]"
        )
    return (logits.argmax(dim=1) == labels).double().numpy()


def accuracy(
    model: nn.Module,
    dataset,
    tokenizer=None,
    *,
    batch_size: int = 64,
    max_length: int = 64,
    progress: bool | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Accuracy:
    """Accuracy of ``model`` on ``dataset`` (a ``label`` column) with a bootstrap interval.

    The mean of :func:`correctness` (prediction as in :func:`predict_logits`); the
    interval as in :func:`shrinklib.measure.bootstrap_ci`. The interval's options are
    checked before the model runs.
    """
    check_positive_int("n_resamples", n_resamples)
    check_confidence(confidence)
    check_seed(seed)
    correct = correctness(model, dataset, tokenizer, batch_size=batch_size, max_length=max_length, progress=progress)
    low, high = bootstrap_ci(correct, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return Accuracy(float(correct.mean()), low, high, int(correct.size))


def _token_ids(tokenizer, text: str) -> list[int]:
    encoded: Any = tokenizer(text)
    ids = encoded["input_ids"] if isinstance(encoded, dict) or hasattr(encoded, "keys") else encoded
    if isinstance(ids, torch.Tensor):
        ids = ids.flatten().tolist()
    return list(ids)


def perplexity(
    model: nn.Module,
    tokenizer,
    text: str,
    *,
    block_size: int = 256,
    max_blocks: int | None = None,
    progress: bool | None = None,
) -> float:
    """exp(mean next-token NLL) of ``model`` on ``text`` cut into non-overlapping blocks.

    The text is tokenized once (``tokenizer(text)["input_ids"]``, special tokens as the
    tokenizer adds them) and cut into blocks of ``block_size`` tokens; a last block shorter
    than 2 tokens is dropped, and only the first ``max_blocks`` are scored if given. Each
    block is scored like ``model(input_ids=block, labels=block)``: token t+1 predicted
    from tokens <= t; the NLLs of all predictions are averaged (a short last block weighs
    by its length), in float64.
    """
    check_module(model)
    _check_tokenizer(tokenizer)
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    check_int("block_size", block_size, minimum=2, what="an int >= 2")
    max_positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(max_positions, int) and block_size > max_positions:
        raise ValueError(f"block_size must be at most the model's max_position_embeddings={max_positions}, got {block_size}")
    if max_blocks is not None:
        check_positive_int("max_blocks", max_blocks)
    ids = _token_ids(tokenizer, text)
    blocks = [ids[i : i + block_size] for i in range(0, len(ids), block_size)]
    blocks = [b for b in blocks if len(b) >= 2][: max_blocks]
    if not blocks:
        raise ValueError(f"text must give at least 2 tokens to score, got {len(ids)}")
    show = len(blocks) >= PROGRESS_MIN_BATCHES if progress is None else bool(progress)
    device = model_device(model)
    total_nll, count = 0.0, 0
    with evaluating(model), torch.inference_mode():
        for block in tqdm(blocks, desc="perplexity", unit="block", disable=not show, leave=False):
            input_ids = torch.tensor([block], dtype=torch.long, device=device)
            logits = _logits_of(model(input_ids=input_ids))[0, :-1].double()
            nll = torch.nn.functional.cross_entropy(logits, input_ids[0, 1:], reduction="sum")
            total_nll += float(nll)
            count += len(block) - 1
    return math.exp(total_nll / count)
