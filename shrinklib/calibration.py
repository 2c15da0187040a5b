"""Running calibration text through a model, layer by layer: the inputs each layer sees.

One-shot methods for large models (Wanda and SparseGPT prune, GPTQ, AWQ and SmoothQuant
quantize) read a few calibration batches through the model and record, for every Linear
layer they will change, the inputs ``X``
(tokens x in_features) it receives: the squared norm of each input feature,
``sum_t x_tj^2`` (Wanda), and optionally the Gram matrix ``H = X^T X`` (SparseGPT's
layer-wise Hessian). Reading all statistics from the dense model in one pass
(:func:`input_statistics`) is the simpler variant. The papers' reference code works
*sequentially* (:func:`sequential_statistics`): it calibrates and changes one transformer
layer at a time and feeds the next layer the outputs of the layers already changed, so
each layer sees the inputs it will really get and can correct the errors made before it.
:func:`record_inputs` keeps the inputs themselves, for a method (or a notebook) that
needs more than these sums.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping

import torch
from torch import nn

from shrinklib._checks import check_instance, check_iterable, check_mapping, check_module, check_number, check_positive_int
from shrinklib.arch import blocks
from shrinklib.data import model_inputs
from shrinklib.measure.forward import evaluating
from shrinklib.utils import Rollback


@dataclass
class InputStats:
    """What a layer saw, per input feature: squared norm, sum and maximum of |x|; the Gram matrix if asked."""

    sq_norm: torch.Tensor  # (in_features,) = sum_t x_tj^2 (Wanda)
    gram: torch.Tensor | None  # (in_features, in_features) = X^T X (SparseGPT, GPTQ, AWQ's error)
    tokens: int
    abs_sum: torch.Tensor | None = None  # (in_features,) = sum_t |x_tj| (AWQ's activation scale)
    abs_max: torch.Tensor | None = None  # (in_features,) = max_t |x_tj| (SmoothQuant)


@torch.no_grad()
def input_statistics(model: nn.Module, batches: Iterable[dict], modules: dict[str, nn.Linear], *,
                     gram: bool = False, max_batches: int | None = None) -> dict[str, InputStats]:
    """Run ``batches`` (dicts of model inputs) through ``model`` and gather each module's input stats.

    ``modules`` maps names to the Linear layers (an int ``in_features``) to watch. The
    arguments' types are checked before anything runs (:func:`check_calibration`).
    """
    check_calibration(model, batches, modules)
    stats = _empty_stats(modules, gram)
    handles = [m.register_forward_pre_hook(_stats_hook(stats[fqn])) for fqn, m in modules.items()]
    run_batches(model, batches, lambda batch: model(**model_inputs(batch)), handles=handles, max_batches=max_batches,
                what="calibration")
    return stats


@contextlib.contextmanager
def recording_inputs(modules: Mapping[str, nn.Module]) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Inside the ``with`` block, the first input of every call of each module is kept, detached.

    ``with recording_inputs({"layer": layer}) as seen: model(**batch)`` leaves in
    ``seen["layer"]`` one tensor per call, shaped as the module received it (batch, tokens,
    features); the hooks are removed however the block ends. The statistics above are
    sums of these; a method or a figure that needs the inputs themselves records them.
    """
    check_mapping("modules", modules)
    if not modules:
        raise ValueError("no module to record the inputs of")
    for fqn, module in modules.items():
        if not isinstance(module, nn.Module):
            raise TypeError(f"modules[{fqn!r}] must be an nn.Module, got {type(module).__name__}")
    seen: dict[str, list[torch.Tensor]] = {fqn: [] for fqn in modules}
    handles = [module.register_forward_pre_hook(lambda m, args, fqn=fqn: seen[fqn].append(args[0].detach()))
               for fqn, module in modules.items()]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def check_calibration(model: nn.Module, batches: Iterable[dict], modules: Mapping[str, nn.Module]) -> None:
    """The argument checks every calibration entry point shares, made before anything runs.

    ``model`` an ``nn.Module``, ``batches`` an iterable that is not a string (each batch a
    mapping, checked as it is read), ``modules`` a non-empty mapping of names to modules
    whose inputs have an int width ``in_features`` (Linear layers). ``TypeError`` or
    ``ValueError`` naming the argument otherwise.
    """
    check_module(model)
    check_iterable("batches", batches, what="an iterable of batches (a list of dicts, a DataLoader)")
    check_mapping("modules", modules)
    if not modules:
        raise ValueError("no module to calibrate")
    for fqn, module in modules.items():
        check_module(module, f"modules[{fqn!r}]")
        if not isinstance(getattr(module, "in_features", None), int):
            raise TypeError(f"modules[{fqn!r}] is a {type(module).__name__} without an int in_features: "
                            "calibration reads the inputs of Linear layers")


def _empty_stats(modules: dict[str, nn.Linear], gram: bool) -> dict[str, InputStats]:
    if not modules:
        raise ValueError("no module to calibrate")
    return {fqn: InputStats(torch.zeros(m.in_features, dtype=torch.float64),
                            torch.zeros(m.in_features, m.in_features, dtype=torch.float64) if gram else None, 0,
                            torch.zeros(m.in_features, dtype=torch.float64), torch.zeros(m.in_features, dtype=torch.float64))
            for fqn, m in modules.items()}


def _stats_hook(s: InputStats):
    def hook(module, args):
        x = args[0].detach().reshape(-1, args[0].shape[-1]).to(torch.float64).cpu()
        s.sq_norm += x.pow(2).sum(0)
        s.abs_sum += x.abs().sum(0)
        torch.maximum(s.abs_max, x.abs().amax(0), out=s.abs_max)
        if s.gram is not None:
            s.gram += x.T @ x
        s.tokens += x.shape[0]

    return hook




class _Captured(Exception):
    pass


def is_cache(name: str, value) -> bool:
    """A key/value cache, whatever transformers calls it (``past_key_values``, ``layer_past``, and
    ``cache`` since transformers 5.24): by its name (a str), or by being a ``transformers`` ``Cache``."""
    check_instance("name", name, str)
    if "past_key" in name or name in ("layer_past", "cache"):
        return True
    try:
        from transformers.cache_utils import Cache
    except ImportError:  # a plain nn.Module stack with no transformers installed
        return False
    return isinstance(value, Cache)


def without_cache(kwargs: dict) -> dict:
    """A layer's keyword arguments with its cache removed and ``use_cache`` off.

    A cache object grows each time a layer is re-run, so a layer run twice on the same
    batch (for its statistics, then changed) would attend to its own earlier keys too.
    ``kwargs`` must be a mapping.
    """
    check_mapping("kwargs", kwargs)
    return {k: None if is_cache(k, v) else False if k == "use_cache" else v for k, v in kwargs.items()}


@torch.no_grad()
def sequential_statistics(model: nn.Module, batches: Iterable[dict], modules: dict[str, nn.Linear],
                          change_fn: Callable[[dict[str, InputStats]], None], *, gram: bool = False,
                          max_batches: int | None = None) -> None:
    """Calibrate and change ``modules`` one transformer layer at a time, as the Wanda, SparseGPT and GPTQ code does.

    The inputs of the first layer of :func:`shrinklib.arch.blocks` are recorded for every batch.
    Then, layer by layer: the layer runs on its inputs with hooks that gather the stats of
    its picked modules, ``change_fn(stats)`` changes them in place (prunes or quantizes them;
    it gets only that layer's modules), and the layer runs again, now changed, to give the
    next layer its inputs. Each layer is thus calibrated on the outputs of the already-changed
    layers before it: the same statistics as a full forward pass of the partly changed model
    with hooks on that layer alone, at the cost of two passes through each layer instead
    of one per layer.
    Picked modules outside the stack (none in a Llama by default) are calibrated last, on
    a forward pass of the changed model.

    A failure part-way (a later layer's statistics that ``change_fn`` cannot use, such as a
    singular Gram matrix) leaves the model as it was: the parameters and buffers of each
    layer's modules are saved (:class:`shrinklib.utils.Rollback`) before ``change_fn``
    changes them and put back if anything after fails, at the cost of a copy of the
    changed modules' tensors. The arguments are checked before anything runs
    (:func:`check_calibration`; ``change_fn`` must be callable).
    """
    check_calibration(model, batches, modules)
    if not callable(change_fn):
        raise TypeError(f"change_fn must be callable as change_fn(stats), got {change_fn!r}")
    layers = blocks(model)
    captured: list[tuple[tuple, dict]] = []

    def capture(module, args, kwargs):
        captured.append((args, without_cache(kwargs)))
        raise _Captured

    def first_layer_inputs(batch):
        try:
            model(**model_inputs(batch))
        except _Captured:
            return
        raise RuntimeError("the model's forward pass never reached its first layer")

    kept: list[dict] = []
    handle = layers[0].register_forward_pre_hook(capture, with_kwargs=True)
    run_batches(model, batches, lambda batch: (kept.append(batch), first_layer_inputs(batch)), handles=[handle],
                max_batches=max_batches, what="calibration")
    # hidden states travel as args[0] or as kwargs["hidden_states"]
    hidden = [args[0] if args else kwargs["hidden_states"] for args, kwargs in captured]

    def run_layer(layer, i):
        args, kwargs = captured[i]
        if args:
            out = layer(hidden[i], *args[1:], **kwargs)
        else:
            out = layer(**{**kwargs, "hidden_states": hidden[i]})
        return out[0] if isinstance(out, (tuple, list)) else out

    rollback = Rollback()
    try:
        inside = set()
        with evaluating(model):  # each module's own mode put back after
            for layer in layers:
                owned = {fqn: m for fqn, m in modules.items() if any(m is sub for sub in layer.modules())}
                inside.update(owned)
                if owned:
                    stats = _empty_stats(owned, gram)
                    handles = [m.register_forward_pre_hook(_stats_hook(stats[fqn])) for fqn, m in owned.items()]
                    try:
                        for i in range(len(hidden)):
                            run_layer(layer, i)
                    finally:
                        for h in handles:
                            h.remove()
                    rollback.save(owned.values())
                    change_fn(stats)
                hidden = [run_layer(layer, i) for i in range(len(hidden))]
        rest = {fqn: m for fqn, m in modules.items() if fqn not in inside}
        if rest:
            stats = input_statistics(model, kept, rest, gram=gram)
            rollback.save(rest.values())
            change_fn(stats)
    except BaseException:
        rollback.restore()
        raise


def run_batches(model: nn.Module, batches: Iterable[dict], step: Callable[[dict], None], *, handles=(),
                max_batches: int | None = None, what: str = "a") -> int:
    """Call ``step(batch)`` on up to ``max_batches`` batches moved to the model's device, in eval mode
    (every module's own mode is put back afterwards).

    Shared by the methods that read statistics off a model with hooks: the hooks in
    ``handles`` are removed and the model's mode restored however the loop ends. Returns
    the number of batches seen; none is an error. ``model`` must be an ``nn.Module`` with a
    parameter, ``batches`` an iterable of mappings, ``step`` callable and ``max_batches``
    ``None`` or an int >= 1 (checked before anything runs; each batch as it is read).
    """
    seen = 0
    try:  # the caller's hooks go, whatever fails
        check_module(model)
        check_iterable("batches", batches, what="an iterable of batches (a list of dicts, a DataLoader)")
        if not callable(step):
            raise TypeError(f"step must be callable as step(batch), got {step!r}")
        if max_batches is not None:
            check_positive_int("max_batches", max_batches)
        first = next(iter(model.parameters()), None)
        if first is None:
            raise ValueError(f"this {type(model).__name__} has no parameter: there is nothing to calibrate")
        with evaluating(model):
            for batch in batches:
                if max_batches is not None and seen >= max_batches:
                    break
                check_mapping(f"batches[{seen}]", batch)
                step({k: v.to(first.device) for k, v in batch.items()})
                seen += 1
    finally:
        for handle in handles:
            handle.remove()
    if not seen:
        raise ValueError(f"batches gave no {what} batch")
    return seen


def inverse_hessian_cholesky(gram: torch.Tensor, percdamp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U, dead)``: the upper Cholesky factor of ``(H + damp I)^-1`` (float64) for ``H = gram``.

    The shared first step of SparseGPT and GPTQ (Frantar et al.): features that never
    fired (``dead``, a zero diagonal) get a unit diagonal so ``H`` stays invertible, and
    ``percdamp`` times the mean diagonal is added for a stable inverse. Row ``i`` of ``U``
    from the diagonal on is what the column-by-column updates need. ``gram`` must be a
    finite, square, floating-point tensor and ``percdamp`` a finite number >= 0.
    """
    percdamp = check_number("percdamp", percdamp, low=0, what="a finite number >= 0")
    check_instance("gram", gram, torch.Tensor)
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"gram must be square, got {tuple(gram.shape)}")
    if not gram.is_floating_point() or not torch.isfinite(gram).all():
        raise ValueError("gram must be a finite floating-point matrix (X^T X of finite inputs)")
    cols = gram.shape[0]
    H = gram.to(torch.float64).clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    H += percdamp * torch.diag(H).mean() * torch.eye(cols, dtype=H.dtype, device=H.device)
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True), dead


def lm_batches(token_blocks: torch.Tensor, batch_size: int = 4) -> list[dict]:
    """Calibration batches ``{"input_ids": ...}`` from ``shrinklib.data.lm_blocks`` output.

    ``token_blocks`` must be a 2-D tensor and ``batch_size`` an int >= 1.
    """
    check_instance("token_blocks", token_blocks, torch.Tensor)
    check_positive_int("batch_size", batch_size)
    if token_blocks.ndim != 2:
        raise ValueError(f"token_blocks must be (blocks, block_size), got shape {tuple(token_blocks.shape)}")
    return [{"input_ids": token_blocks[i:i + batch_size]} for i in range(0, len(token_blocks), batch_size)]
