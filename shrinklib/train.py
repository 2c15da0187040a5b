"""The one fine-tune / evaluate loop of the book.

AdamW (Loshchilov & Hutter, 2019) with a linear warm-up then linear decay of the
learning rate, gradient-norm clipping, a step budget, a seeded data order and a tqdm
progress bar, built on Hugging Face Accelerate: the same call runs on the CPU, on one
GPU, or on many under ``accelerate launch``.

Other chapters plug into it instead of copying it:

* ``extra_losses={"kd": fn}`` adds ``fn(model, batch, outputs)`` to the task loss
  (distillation terms, regularizers); each term is logged by name. A term that is an
  ``nn.Module`` is moved to the model's device, and its trainable parameters that are not
  the model's (a learned projection of TinyBERT's hidden-state loss) are trained with it;
  a teacher it holds must be frozen (``requires_grad_(False)``).
* ``callbacks=[fn]`` calls ``fn(state)`` after every optimizer step with a
  :class:`StepState` (pruning schedules, mask re-application, logging).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn
from tqdm import tqdm

from shrinklib._checks import (
    check_bool,
    check_instance,
    check_int,
    check_iterable,
    check_mapping,
    check_module,
    check_number,
    check_positive_int,
    is_number,
)
from shrinklib.data import model_inputs
from shrinklib.utils import check_seed, seed_everything

LossTerm = Callable[[nn.Module, dict, Any], torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """Options of :func:`fit`. Give ``max_steps`` (a step budget) or ``epochs``."""

    max_steps: int | None = None
    epochs: float = 1.0
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_clip: float | None = 1.0
    seed: int = 0
    eval_every: int | None = None  # steps between evaluations; None: once, at the end
    select_best: bool = True  # restore the weights that scored best on eval_data
    max_length: int = 64  # tokens, when fit tokenizes raw text
    group_by_length: bool = True  # batch sentences of similar length: less padding, same epochs
    task_loss_weight: float = 1.0  # weight of the model's own loss (0: extra terms only)
    mixed_precision: str = "no"  # "no", "fp16" or "bf16" (GPU)
    progress: bool = True
    # Learning rates of their own, by parameter-name suffix ({"scores": 1e-2}: every
    # parameter whose name ends in "scores"); those groups get no weight decay.
    param_lrs: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self):
        def positive(name, value):
            check_int(f"TrainConfig.{name}", value, minimum=1, what="a positive int")

        if self.max_steps is not None:
            positive("max_steps", self.max_steps)
        check_number("TrainConfig.epochs", self.epochs, low=0, low_open=True, what="> 0")
        positive("batch_size", self.batch_size)
        positive("max_length", self.max_length)
        if self.eval_every is not None:
            positive("eval_every", self.eval_every)
        check_number("TrainConfig.lr", self.lr, low=0, low_open=True, what="> 0")
        check_number("TrainConfig.warmup_ratio", self.warmup_ratio, low=0, high=1, high_open=True, what="in [0, 1)")
        check_number("TrainConfig.weight_decay", self.weight_decay, low=0, what=">= 0")
        if self.grad_clip is not None:
            check_number("TrainConfig.grad_clip", self.grad_clip, low=0, low_open=True, what="> 0 or None")
        check_number("TrainConfig.task_loss_weight", self.task_loss_weight, low=0, what=">= 0")
        check_seed(self.seed)
        for name in ("select_best", "group_by_length", "progress"):
            check_bool(f"TrainConfig.{name}", getattr(self, name))
        check_mapping("TrainConfig.param_lrs", self.param_lrs)
        for suffix, lr in dict(self.param_lrs).items():
            if not (isinstance(suffix, str) and suffix) or not (is_number(lr) and math.isfinite(lr) and lr > 0):
                raise ValueError(f"TrainConfig.param_lrs maps name suffixes to rates > 0, got {suffix!r}: {lr!r}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"TrainConfig.mixed_precision must be 'no', 'fp16' or 'bf16', got {self.mixed_precision!r}")


@dataclass
class StepState:
    """What a callback sees after each optimizer step."""

    step: int  # 1-based count of optimizer steps done
    total_steps: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss: float  # the total loss of this step
    terms: dict[str, float]  # each named term of the loss
    lr: float  # the learning rate this step used


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one row per logged step / evaluation
    steps: int = 0
    seconds: float = 0.0
    best_step: int | None = None
    best_accuracy: float | None = None
    final_accuracy: float | None = None


def epoch_steps(epochs: float, examples: int, batch_size: int) -> int:
    """Optimizer steps of ``epochs`` passes over ``examples`` in batches of ``batch_size`` (rounded, at least 1).

    A step budget for ``TrainConfig(max_steps=...)`` stated in epochs of one set: students
    trained on a larger transfer set (augmented copies, unlabelled text) get the steps of
    the plain training split, so every training makes the same number of updates.
    """
    check_number("epochs", epochs, low=0, low_open=True)
    check_positive_int("examples", examples)
    check_positive_int("batch_size", batch_size)
    return max(1, round(epochs * -(-examples // batch_size)))


def linear_warmup_decay(step: int, total: int, warmup: int) -> float:
    """Learning-rate multiplier: 0 -> 1 over ``warmup`` steps, then 1 -> 0 at ``total`` (ints: step, warmup >= 0, total >= 1)."""
    check_int("step", step, minimum=0)
    check_positive_int("total", total)
    check_int("warmup", warmup, minimum=0)
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def _check_data(name: str, data, *, labels: bool = True) -> None:
    """``data`` is a ``DataLoader`` or a ``datasets.Dataset``, with a ``label`` column if ``labels`` (a dataset's is checked)."""
    from torch.utils.data import DataLoader

    if isinstance(data, DataLoader):
        return
    columns = getattr(data, "column_names", None)
    if not isinstance(columns, list) or not callable(getattr(data, "map", None)):
        raise TypeError(f"{name} must be a datasets.Dataset or a torch DataLoader of dict batches, got {type(data).__name__}")
    if labels and not {"label", "labels"} & set(columns):
        raise ValueError(f"{name} must have a 'label' column (the loss and the accuracy need it), got columns {columns}")


def _loader(data, tokenizer, *, batch_size, shuffle, seed, max_length, group_by_length=False):
    from torch.utils.data import DataLoader

    from shrinklib.data import dataloader

    if isinstance(data, DataLoader):
        return data
    if tokenizer is None and "input_ids" not in getattr(data, "column_names", ()):
        raise ValueError("pass tokenizer= to train or evaluate on raw text (a dataset with a 'text' column)")
    return dataloader(data, tokenizer, batch_size=batch_size, shuffle=shuffle, seed=seed, max_length=max_length,
                      group_by_length=group_by_length)


def _no_decay(name: str, param: nn.Parameter) -> bool:
    return param.ndim < 2 or "norm" in name.lower() or name.endswith(".bias")


def _term_parameters(model: nn.Module, extra_losses: Mapping[str, LossTerm]) -> list[tuple[str, nn.Parameter]]:
    """Trainable parameters of the loss terms that are modules, other than the model's own."""
    seen = {id(p) for p in model.parameters()}
    params = []
    for name, term in extra_losses.items():
        if isinstance(term, nn.Module):
            for n, p in term.named_parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    params.append((f"extra_losses.{name}.{n}", p))
    return params


def make_optimizer(model: nn.Module, config: TrainConfig, extra: Sequence[tuple[str, nn.Parameter]] = ()
                   ) -> torch.optim.AdamW:
    """The AdamW that :func:`fit` trains with: ``config.lr`` and ``config.weight_decay``, except the
    parameters whose names end in a key of ``config.param_lrs`` (their own rate, no decay), and
    biases and LayerNorm weights (no decay).

    ``extra`` adds ``(name, parameter)`` pairs that live outside the model (a loss term's
    projections). A model with no trainable parameter raises ``ValueError``; a ``model``
    that is not an ``nn.Module``, a ``config`` that is not a :class:`TrainConfig` or an
    ``extra`` that is not an iterable, ``TypeError``.
    """
    check_module(model)
    check_instance("config", config, TrainConfig)
    check_iterable("extra", extra, what="an iterable of (name, parameter) pairs")
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad] + list(extra)
    if not params:
        raise ValueError("the model has no trainable parameter (every requires_grad is False)")
    groups = []
    for suffix, lr in dict(config.param_lrs).items():
        own = [(n, p) for n, p in params if n.endswith(suffix)]
        if not own:
            raise ValueError(f"TrainConfig.param_lrs: no trainable parameter name ends in {suffix!r}")
        groups.append({"params": [p for _, p in own], "lr": lr, "weight_decay": 0.0})
        params = [(n, p) for n, p in params if not n.endswith(suffix)]
    groups += [
        {"params": [p for n, p in params if not _no_decay(n, p)], "weight_decay": config.weight_decay},
        {"params": [p for n, p in params if _no_decay(n, p)], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr)


@torch.no_grad()
def _evaluate_prepared(model, loader, accelerator) -> dict[str, float]:
    was_training = model.training
    model.eval()
    correct, total, loss_sum = 0, 0, 0.0
    for batch in loader:
        outputs = model(**model_inputs(batch, labels=True))
        preds, labels = accelerator.gather_for_metrics((outputs.logits.argmax(-1), batch["labels"]))
        correct += (preds == labels).sum().item()
        total += labels.numel()
        if outputs.loss is not None:
            loss_sum += outputs.loss.item() * batch["labels"].numel()
    model.train(was_training)
    return {"accuracy": correct / max(total, 1), "loss": loss_sum / max(total, 1)}


def _state_before_prepare(model: nn.Module) -> tuple:
    """What ``accelerator.prepare`` and ``model.train()`` change on ``model`` itself: its attributes
    (Accelerate marks the model and may wrap its ``forward``), its device and every module's mode."""
    first = next(iter(model.parameters()), None)
    return model, dict(vars(model)), None if first is None else first.device, [(m, m.training) for m in model.modules()]


def _restore_after_failure(before: tuple) -> None:
    """Undo :func:`_state_before_prepare`'s list of changes: a fit that fails before its first optimizer
    step (no labels, nothing to minimize) leaves the model as it was."""
    model, attributes, device, modes = before
    for name in list(vars(model)):
        if name not in attributes:
            del vars(model)[name]
    vars(model).update({k: v for k, v in attributes.items() if k == "forward"})
    first = next(iter(model.parameters()), None)
    if device is not None and first is not None and first.device != device:
        model.to(device)
    for module, training in modes:
        module.training = training


def _accelerator(mixed_precision: str = "no"):
    from accelerate import Accelerator

    return Accelerator(mixed_precision=mixed_precision)


def evaluate(model: nn.Module, data, *, tokenizer=None, batch_size: int = 128, max_length: int = 64) -> dict[str, float]:
    """Accuracy and mean loss of a classifier on ``data`` (a ``Dataset`` or ``DataLoader``).

    ``model`` must be an ``nn.Module``, ``data`` a ``Dataset`` with a ``label`` column or a
    ``DataLoader``, ``batch_size``/``max_length`` ints >= 1.
    """
    check_module(model)
    _check_data("data", data)
    check_positive_int("batch_size", batch_size)
    check_positive_int("max_length", max_length)
    accelerator = _accelerator()
    loader = accelerator.prepare(
        _loader(data, tokenizer, batch_size=batch_size, shuffle=False, seed=0, max_length=max_length)
    )
    model = model.to(accelerator.device)
    return _evaluate_prepared(model, loader, accelerator)


def fit(
    model: nn.Module,
    train_data,
    config: TrainConfig = TrainConfig(),
    *,
    tokenizer=None,
    eval_data=None,
    extra_losses: Mapping[str, LossTerm] | None = None,
    callbacks: Sequence[Callable[[StepState], None]] = (),
) -> TrainResult:
    """Train ``model`` in place on ``train_data`` and return the :class:`TrainResult`.

    ``train_data``/``eval_data``: a ``datasets.Dataset`` with ``text`` and ``label``
    columns (tokenized here with ``tokenizer``, padded per batch), an already tokenized
    one, or a ``DataLoader`` of dict batches with ``labels``. With ``eval_data`` the
    model is evaluated every ``config.eval_every`` steps and at the end, and with
    ``config.select_best`` it ends holding the weights that scored best.

    Every argument is checked before the model changes: ``model`` an ``nn.Module``,
    the data as above (``TypeError``/``ValueError`` naming ``train_data``/``eval_data``;
    ``train_data`` needs labels only when ``config.task_loss_weight`` is not 0),
    ``extra_losses`` a mapping of callables, ``callbacks`` an iterable of callables. Batches
    the model cannot learn from (no labels and no extra loss) fail at the first batch,
    before any optimizer step, and leave the model as it was (its train/eval modes
    included). An error raised later (by a callback or a loss term) leaves the model as
    trained up to that step.
    """
    check_module(model)
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    _check_data("train_data", train_data, labels=bool(config.task_loss_weight))
    if eval_data is not None:
        _check_data("eval_data", eval_data)
    if extra_losses is not None:
        check_mapping("extra_losses", extra_losses)
    callbacks = list(check_iterable("callbacks", callbacks, what="an iterable of callables taking a StepState"))
    extra_losses = dict(extra_losses or {})
    for name, term in extra_losses.items():
        if not callable(term):
            raise TypeError(f"extra_losses[{name!r}] must be callable as fn(model, batch, outputs)")
    for cb in callbacks:
        if not callable(cb):
            raise TypeError(f"callbacks must be callables taking a StepState, got {cb!r}")

    seed_everything(config.seed)
    accelerator = _accelerator(config.mixed_precision)
    loader = _loader(train_data, tokenizer, batch_size=config.batch_size, shuffle=True,
                     seed=config.seed, max_length=config.max_length, group_by_length=config.group_by_length)
    for term in extra_losses.values():
        if isinstance(term, nn.Module):
            term.to(accelerator.device)
    term_params = _term_parameters(model, extra_losses)
    raw_optimizer = make_optimizer(model, config, term_params)
    raw_eval_loader = None
    if eval_data is not None:
        raw_eval_loader = _loader(eval_data, tokenizer, batch_size=128, shuffle=False, seed=0,
                                  max_length=config.max_length)
    before, bar = _state_before_prepare(model), None
    try:
        model, optimizer, loader = accelerator.prepare(model, raw_optimizer, loader)
        # Steps are counted per process on the prepared (sharded) loader, and the schedule is
        # driven here rather than by Accelerate's scheduler wrapper, which steps once per
        # process: so a step budget means the same number of optimizer steps on 1 or N devices.
        total = config.max_steps or max(1, math.ceil(config.epochs * len(loader)))
        warmup = int(config.warmup_ratio * total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(raw_optimizer, lambda s: linear_warmup_decay(s, total, warmup))
        eval_loader = None if raw_eval_loader is None else accelerator.prepare(raw_eval_loader)

        result, best_state = TrainResult(), None
        start = time.perf_counter()

        def run_eval(step: int) -> None:
            nonlocal best_state
            metrics = _evaluate_prepared(model, eval_loader, accelerator)
            result.history.append({"step": step, "eval_accuracy": metrics["accuracy"], "eval_loss": metrics["loss"]})
            result.final_accuracy = metrics["accuracy"]
            if result.best_accuracy is None or metrics["accuracy"] > result.best_accuracy:
                result.best_accuracy, result.best_step = metrics["accuracy"], step
                if config.select_best:
                    unwrapped = accelerator.unwrap_model(model)
                    best_state = {k: v.detach().to("cpu", copy=True) for k, v in unwrapped.state_dict().items()}
            bar.set_postfix(loss=f"{loss.item():.3f}" if step else "-", eval_acc=f"{metrics['accuracy']:.3f}")

        step, loss = 0, torch.zeros(())
        bar = tqdm(total=total, desc="train", disable=not (config.progress and accelerator.is_local_main_process),
                   mininterval=2.0, dynamic_ncols=True)
        model.train()
        while step < total:
            for batch in loader:
                outputs = model(**model_inputs(batch, labels=True))
                terms = {}
                if config.task_loss_weight:
                    if outputs.loss is None:
                        raise ValueError("the model returned no loss: batches must hold 'labels'")
                    terms["task"] = config.task_loss_weight * outputs.loss
                for name, term in extra_losses.items():
                    terms[name] = term(model, batch, outputs)
                if not terms:
                    raise ValueError("nothing to minimize: task_loss_weight is 0 and no extra_losses were given")
                loss = sum(terms.values())
                accelerator.backward(loss)
                if config.grad_clip is not None:
                    accelerator.clip_grad_norm_([*model.parameters(), *(p for _, p in term_params)], config.grad_clip)
                lr = scheduler.get_last_lr()[0]  # the rate this step used
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                state = StepState(step=step, total_steps=total, model=model, optimizer=optimizer, loss=loss.item(),
                                  terms={k: v.item() for k, v in terms.items()}, lr=lr)
                for cb in callbacks:
                    cb(state)
                if step % 10 == 0 or step == total:
                    result.history.append({"step": step, "loss": state.loss, "lr": state.lr,
                                           **{f"loss_{k}": v for k, v in state.terms.items()}})
                bar.update(1)
                if bar.n % 10 == 0:
                    bar.set_postfix(loss=f"{state.loss:.3f}")
                if eval_loader is not None and config.eval_every and step % config.eval_every == 0 and step < total:
                    run_eval(step)
                if step >= total:
                    break
    except BaseException:
        if bar is not None:
            bar.close()
        _restore_after_failure(before)
        raise
    if eval_loader is not None:
        run_eval(step)
    bar.close()
    if best_state is not None and result.best_step != step:
        accelerator.unwrap_model(model).load_state_dict(best_state)
    model.eval()
    result.steps, result.seconds = step, time.perf_counter() - start
    return result
