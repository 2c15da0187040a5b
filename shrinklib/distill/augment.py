"""Data for distillation: augmented and unlabelled sentences, labelled by the teacher.

A student learns the teacher's function only where it sees it. With a few thousand
labelled sentences that is not much, so Tang et al. (2019, "Distilling Task-Specific
Knowledge from BERT into Simple Neural Networks") and Jiao et al. (2020, "TinyBERT:
Distilling BERT for Natural Language Understanding") enlarge the *transfer set* with
perturbed copies of the training sentences, and let the teacher label them. For each
whitespace-separated word ``w_i`` draw ``u_i ~ U[0, 1)``:

* ``u_i < p_mask``: replace ``w_i`` by the tokenizer's mask token (Tang et al.);
* ``p_mask <= u_i < p_mask + p_replace``: replace ``w_i`` by one of its ``neighbours``
  nearest words, drawn uniformly. TinyBERT takes GloVe neighbours; here they are the
  nearest vocabulary tokens by cosine similarity in a word-embedding matrix, such as the
  teacher's input embeddings, ``cos(e_a, e_b) = e_a . e_b / (|e_a| |e_b|)`` (see
  :class:`WordNeighbours`). A word that is not one whole-word token stays as it is.
  Nearest in embedding space is not the same meaning: ``good``'s neighbours in MiniLM
  include ``bad``. That is acceptable here: a variant is labelled by the teacher, it
  does not inherit the original sentence's label;
* otherwise keep ``w_i``.

Then, with probability ``p_ngram``, keep only a random n-gram of the result, ``n``
uniform in ``1..max_ngram`` (Tang et al.'s n-gram sampling). Each original sentence
gives ``copies`` such variants.

Other text works too: :func:`unlabelled_sentences` draws sentences from the book's other
corpora (BBC News, Hamlet; :func:`shrinklib.data.sentences`), and :func:`teacher_labelled`
turns any list of sentences into a dataset of the teacher's labels and logits, for
``shrinklib.train.fit`` with :func:`shrinklib.distill.logits.stored_logit_distillation` or
:func:`~shrinklib.distill.logits.logit_distillation`. :func:`transfer_sets` builds the
two sets the chapter's students train on, once, in the shrinklib cache.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from shrinklib import data
from shrinklib._checks import check_choice, check_instance, check_int, check_iterable, check_number
from shrinklib.cache import cached_folder
from shrinklib.distill.sequence import check_tokenizer
from shrinklib.utils import check_seed

#: Sources of :func:`unlabelled_sentences`, and the corpus of :func:`shrinklib.data.sentences` each reads.
SOURCES = {"bbc": "bbc_news", "hamlet": "hamlet"}

_PUNCT = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)
_PLACEHOLDER = re.compile(r"^(\[.*\]|<.*>)$")


def _check_texts(texts) -> list[str]:
    texts = list(check_iterable("texts", texts, what="a list of str"))
    if len(texts) == 0:
        raise ValueError("texts is empty; give at least one sentence")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts must hold str, got a {type(text).__name__} at index {i}")
    return texts


@dataclass(frozen=True)
class AugmentConfig:
    """Options of :func:`augment` (Tang et al. 2019's defaults for the probabilities).

    ``p_mask``/``p_replace``: chance that a word is masked / replaced by a neighbour (drawn
    from one uniform number, so ``p_mask + p_replace <= 1``); ``p_ngram``: chance that a
    variant is cut to a random n-gram, ``n`` in ``1..max_ngram``; ``copies``: variants per
    sentence; ``neighbours``: how many nearest words a replacement is drawn from.
    """

    p_mask: float = 0.1
    p_replace: float = 0.1
    p_ngram: float = 0.25
    max_ngram: int = 5
    copies: int = 4
    neighbours: int = 8

    def __post_init__(self):
        for name in ("p_mask", "p_replace", "p_ngram"):
            check_number(f"AugmentConfig.{name}", getattr(self, name), low=0, high=1, what="a probability in [0, 1]")
        if self.p_mask + self.p_replace > 1:
            raise ValueError(f"AugmentConfig.p_mask + p_replace must be at most 1 (one draw decides a word), "
                             f"got {self.p_mask!r} + {self.p_replace!r}")
        for name in ("max_ngram", "copies", "neighbours"):
            check_int(f"AugmentConfig.{name}", getattr(self, name), minimum=1, what="a positive int")


def _embedding_matrix(embeddings) -> torch.Tensor:
    if isinstance(embeddings, nn.Embedding):
        embeddings = embeddings.weight
    if not isinstance(embeddings, torch.Tensor):
        raise TypeError(f"embeddings must be a 2-D tensor (vocabulary, dim) or an nn.Embedding, "
                        f"got {type(embeddings).__name__}")
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D tensor (vocabulary, dim), got shape {tuple(embeddings.shape)}")
    return embeddings.detach().float().cpu()


class WordNeighbours:
    """The ``k`` nearest whole-word tokens of each word, by cosine similarity of embeddings.

    ``embeddings``: one row per token id of ``tokenizer`` (e.g.
    ``teacher.get_input_embeddings().weight``), a tensor or an ``nn.Embedding``.
    Written for WordPiece vocabularies (BERT's). The candidates are the vocabulary's
    whole-word tokens: not special tokens, not ``##`` continuation pieces, not
    placeholders such as ``[unused0]``, and holding at least one letter. A word has
    neighbours when the tokenizer turns it into exactly one candidate token; a word is
    never its own neighbour.

    The table is computed once, in batched matrix products, for the tokens of ``words``
    (all candidates if None); a word looked up later that is not in it is computed then
    and remembered. So augmentation itself only does dictionary look-ups.
    """

    def __init__(self, tokenizer, embeddings, k: int = 8, *, words: Iterable[str] | None = None,
                 chunk_size: int = 1024):
        check_int("k", k, minimum=1, what="a positive int")
        check_int("chunk_size", chunk_size, minimum=1, what="a positive int")
        check_tokenizer(tokenizer, "get_vocab", "tokenize", "convert_tokens_to_ids", "__len__")
        if words is not None:
            if isinstance(words, str):
                raise TypeError("words must be an iterable of words, got a str")
            words = list(check_iterable("words", words, what="an iterable of words (str)"))
            for i, word in enumerate(words):
                check_instance(f"words[{i}]", word, str)
        matrix = _embedding_matrix(embeddings)
        if matrix.shape[0] < len(tokenizer):
            raise ValueError(f"embeddings must have a row per token of the tokenizer ({len(tokenizer)}), "
                             f"got {matrix.shape[0]} rows")
        special = set(getattr(tokenizer, "all_special_tokens", ()))
        vocab = tokenizer.get_vocab()
        candidates = sorted(
            (i, tok) for tok, i in vocab.items()
            if tok not in special and not tok.startswith("##") and not _PLACEHOLDER.match(tok)
            and any(c.isalpha() for c in tok)
        )
        if len(candidates) <= k:
            raise ValueError(f"k must be smaller than the {len(candidates)} whole-word tokens of the vocabulary, got {k}")
        self.k, self.tokenizer, self.chunk_size = k, tokenizer, chunk_size
        self._ids = torch.tensor([i for i, _ in candidates])
        self._tokens = [tok for _, tok in candidates]
        self._position = {i: p for p, (i, _) in enumerate(candidates)}  # token id -> candidate row
        self._unit = F.normalize(matrix[self._ids], dim=1)
        self._word_token: dict[str, int | None] = {}
        self._table: dict[int, tuple[str, ...]] = {}
        if words is None:
            queries = list(range(len(candidates)))
        else:
            found = {self.token_id(w) for w in words}
            queries = sorted(self._position[i] for i in found if i is not None)
        self._fill(queries)

    def token_id(self, word: str) -> int | None:
        """The token id of ``word`` if it is one whole-word token, else None."""
        if word not in self._word_token:
            pieces = self.tokenizer.tokenize(word) if word else []
            token = self.tokenizer.convert_tokens_to_ids(pieces[0]) if len(pieces) == 1 else None
            self._word_token[word] = token if token in self._position else None
        return self._word_token[word]

    def _fill(self, positions: list[int]) -> None:
        chunks = range(0, len(positions), self.chunk_size)
        for start in tqdm(chunks, desc="word neighbours", unit="chunk", disable=len(chunks) < 2, leave=False):
            rows = torch.tensor(positions[start:start + self.chunk_size])
            similarity = self._unit[rows] @ self._unit.T
            similarity[torch.arange(len(rows)), rows] = float("-inf")  # not one's own neighbour
            nearest = similarity.topk(self.k, dim=1).indices
            for row, near in zip(rows.tolist(), nearest.tolist()):
                self._table[int(self._ids[row])] = tuple(self._tokens[j] for j in near)

    def neighbours(self, word: str) -> tuple[str, ...]:
        """The ``k`` nearest whole-word tokens of ``word``, nearest first; () if it is not one token."""
        if not isinstance(word, str):
            raise TypeError(f"word must be a str, got {type(word).__name__}")
        token = self.token_id(word)
        if token is None:
            return ()
        if token not in self._table:
            self._fill([self._position[token]])
        return self._table[token]

    def __contains__(self, word) -> bool:
        return isinstance(word, str) and self.token_id(word) is not None

    def __len__(self) -> int:
        """How many tokens have their neighbours computed."""
        return len(self._table)


def _split_word(word: str) -> tuple[str, str, str]:
    """``(leading punctuation, core, trailing punctuation)`` of a whitespace-separated word."""
    lead, core, trail = _PUNCT.match(word).groups()
    return lead, core, trail


def _same_case(replacement: str, original: str) -> str:
    if len(original) > 1 and original.isupper():
        return replacement.upper()
    if original[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def _augment_one(words: list[str], rng: np.random.Generator, config: AugmentConfig, mask_token,
                 table: WordNeighbours | None) -> str:
    out = []
    for word, u in zip(words, rng.random(len(words))):
        if u < config.p_mask:
            lead, core, trail = _split_word(word)
            out.append(f"{lead}{mask_token}{trail}" if core else mask_token)
        elif u < config.p_mask + config.p_replace and table is not None:
            lead, core, trail = _split_word(word)
            near = table.neighbours(core)[: config.neighbours] if core else ()
            if near:
                out.append(lead + _same_case(near[rng.integers(len(near))], core) + trail)
            else:
                out.append(word)
        else:
            out.append(word)
    if out and rng.random() < config.p_ngram:
        n = int(rng.integers(1, config.max_ngram + 1))
        if n < len(out):
            start = int(rng.integers(0, len(out) - n + 1))
            out = out[start:start + n]
    return " ".join(out)


def augment(texts: Sequence[str], tokenizer, embeddings, config: AugmentConfig = AugmentConfig(),
            seed: int = 0) -> list[str]:
    """``config.copies`` augmented variants of each sentence (see the module docstring).

    ``embeddings``: the word-embedding matrix whose cosine neighbours replace words (a
    tensor with a row per token of ``tokenizer``, an ``nn.Embedding``, e.g.
    ``teacher.get_input_embeddings()``, or a :class:`WordNeighbours` built before, reused
    as it is). Returns ``len(texts) * copies`` strings, the variants of ``texts[0]``
    first; the originals are not included and duplicates are kept, so the count is
    exact. Words are joined by single spaces. The same ``seed`` gives the same variants.
    ``texts`` must be a non-empty list of str, ``config`` an :class:`AugmentConfig`,
    ``seed`` an int >= 0, ``tokenizer`` a Hugging Face tokenizer (``TypeError`` otherwise);
    with ``p_mask > 0`` it must have a mask token.
    """
    texts = _check_texts(texts)
    check_instance("config", config, AugmentConfig, what="an AugmentConfig")
    seed = check_seed(seed)
    check_tokenizer(tokenizer, "mask_token")
    mask_token = tokenizer.mask_token
    if config.p_mask > 0 and not mask_token:
        raise ValueError(f"the tokenizer has no mask token, so p_mask must be 0, got {config.p_mask!r}")
    table = None
    if isinstance(embeddings, WordNeighbours):
        table = embeddings
    elif config.p_replace > 0:
        words = {_split_word(w)[1] for text in texts for w in text.split()}
        table = WordNeighbours(tokenizer, embeddings, config.neighbours, words=words)
    else:
        _embedding_matrix(embeddings)  # still refuse a wrong argument
    rng = np.random.default_rng(seed)
    variants = []
    for text in tqdm(texts, desc="augmenting", unit="sentence", disable=len(texts) < 100, leave=False):
        words = text.split()
        variants += [_augment_one(words, rng, config, mask_token, table) for _ in range(config.copies)]
    return variants


# ----------------------------------------------------------------------------------
# Unlabelled sentences from the book's other corpora


def unlabelled_sentences(source: str, n: int, seed: int = 0) -> list[str]:
    """``n`` distinct sentences of another corpus, drawn with ``seed``, for the teacher to label.

    ``source``: ``"bbc"`` (BBC News) or ``"hamlet"``; the sentences are those of
    :func:`shrinklib.data.sentences` (``"bbc_news"`` or ``"hamlet"``), which says how the
    corpora are cut: :data:`~shrinklib.data.MIN_WORDS` to :data:`~shrinklib.data.MAX_WORDS`
    words, whitespace collapsed, no speaker names or stage directions, no duplicates.
    """
    check_choice("source", source, SOURCES)
    return data.sentences(SOURCES[source], n, seed)


# ----------------------------------------------------------------------------------
# The teacher's labels


def teacher_labelled(teacher: nn.Module, tokenizer, texts: Sequence[str], *, batch_size: int = 64,
                     max_length: int = 64):
    """A ``datasets.Dataset`` of ``texts`` with the teacher's ``label`` and ``teacher_logits``.

    ``label`` is the argmax of the logits (a ``ClassLabel`` named by
    ``teacher.config.id2label`` when it has one name per class), ``teacher_logits`` one
    list of float32 per row. The teacher runs once per sentence in eval mode without
    gradients (:func:`shrinklib.measure.predict_logits`, truncation to ``max_length``
    tokens, a progress bar). The result feeds ``fit`` directly (hard labels), or
    :func:`~shrinklib.distill.logits.stored_logit_distillation` through a collate that
    keeps the logits. ``teacher`` must be an ``nn.Module`` and ``tokenizer`` a Hugging Face
    tokenizer (``TypeError``), ``texts`` a non-empty list of str; the teacher's modes are
    given back afterwards.
    """
    from datasets import ClassLabel, Dataset, Features, List, Value

    from shrinklib.measure import predict_logits

    check_instance("teacher", teacher, nn.Module, what="an nn.Module")
    check_tokenizer(tokenizer, "__call__")
    texts = _check_texts(texts)
    logits = predict_logits(teacher, {"text": texts}, tokenizer, batch_size, max_length, progress=True)
    if logits.ndim != 2:
        raise ValueError(f"the teacher must give one row of class logits per sentence, got shape {tuple(logits.shape)}")
    num_labels = logits.shape[1]
    id2label = getattr(getattr(teacher, "config", None), "id2label", None) or {}
    names = [id2label.get(i, id2label.get(str(i))) for i in range(num_labels)]
    label = ClassLabel(names=names) if len(id2label) == num_labels and all(names) else Value("int64")
    features = Features({"text": Value("string"), "label": label, "teacher_logits": List(Value("float32"))})
    return Dataset.from_dict({"text": texts, "label": logits.argmax(dim=1).tolist(), "teacher_logits": logits.tolist()},
                             features=features)


def transfer_sets(teacher: nn.Module, tokenizer, train, *, teacher_key: str, copies: int = 2, seed: int = 0):
    """The two transfer sets of a classification task, labelled by ``teacher`` once and cached.

    ``train`` is a ``datasets.Dataset`` with ``text`` and ``label``. Returns
    ``(with_logits, augmented)``: ``train`` with the teacher's ``teacher_logits`` added
    (gold labels kept, for Hinton's mix of both), and the transfer set of Tang et al.
    (2019): the training sentences plus ``copies`` :func:`augment`-ed variants of each,
    every one labelled by the teacher (:func:`teacher_labelled`). Labelling some 30,000
    sentences takes minutes, so both are kept in the shrinklib cache, keyed by
    ``teacher_key`` (a name that changes when the teacher does, such as
    ``zoo.teacher_folder("rt").name``), the training sentences, ``copies`` and ``seed``.
    All of them are checked before anything is computed or cached: ``teacher`` a model with
    input embeddings, ``tokenizer`` a Hugging Face tokenizer with a mask token, ``train`` a
    ``datasets.Dataset`` with a ``text`` column, ``teacher_key`` a non-empty str,
    ``copies`` an int >= 1 and ``seed`` an int >= 0.
    """
    from datasets import Dataset, concatenate_datasets, load_from_disk

    check_instance("teacher", teacher, nn.Module, what="an nn.Module")
    if not callable(getattr(teacher, "get_input_embeddings", None)):
        raise TypeError(f"teacher must be a model with get_input_embeddings(), got {type(teacher).__name__}")
    check_tokenizer(tokenizer, "__call__", "mask_token", "get_vocab", "tokenize", "convert_tokens_to_ids", "__len__")
    check_instance("train", train, Dataset, what="a datasets.Dataset")
    if "text" not in train.column_names:
        raise ValueError(f"train must have a 'text' column, got columns {train.column_names}")
    check_instance("teacher_key", teacher_key, str, what="a non-empty str naming the teacher")
    if not teacher_key:
        raise ValueError(f"teacher_key must be a non-empty str naming the teacher, got {teacher_key!r}")
    check_int("copies", copies, minimum=1, what="a positive int")
    check_seed(seed)
    key = hashlib.sha1(json.dumps([teacher_key, list(train["text"]), copies, seed]).encode()).hexdigest()

    def build(folder) -> None:
        scored = teacher_labelled(teacher, tokenizer, train["text"])
        train.add_column("teacher_logits", scored["teacher_logits"]).save_to_disk(folder / "with_logits")
        variants = augment(train["text"], tokenizer, teacher.get_input_embeddings(), AugmentConfig(copies=copies),
                           seed=seed)
        augmented = concatenate_datasets([scored, teacher_labelled(teacher, tokenizer, variants)])
        augmented.save_to_disk(folder / "augmented")

    folder = cached_folder(f"distill-transfer-{key[:12]}", build)
    return load_from_disk(folder / "with_logits"), load_from_disk(folder / "augmented")
