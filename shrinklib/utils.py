"""Small helpers every chapter uses: seeding, module replacement, and undoing a failed change.

The ``filter_fn(module, fqn) -> bool`` convention
--------------------------------------------------
Every transform in shrinklib takes a ``filter_fn`` that decides which submodules it
touches. It is called with the module and its fully qualified name (``fqn``, the name
``model.named_modules()`` gives, e.g. ``"bert.encoder.layer.0.attention.self.query"``).
The default, :func:`encoder_linears`, picks the ``nn.Linear`` layers of the body of the
model and leaves the task head (``classifier``, ``pooler``, ``lm_head``, ``score``) alone.
"""
from __future__ import annotations

import os
import random
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from shrinklib._checks import check_bool, check_instance, check_int, check_module

FilterFn = Callable[[nn.Module, str], bool]
Factory = Callable[[nn.Module, str], nn.Module]

#: Name parts that mark a module as part of the task head rather than the body.
HEAD_NAMES = ("classifier", "pooler", "lm_head", "score", "qa_outputs")


def check_seed(seed) -> int:
    """``seed`` if it is a non-negative int, else ``ValueError``."""
    return check_int("seed", seed, minimum=0, what="a non-negative int")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA) and return a seeded torch generator."""
    check_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


def is_head(fqn: str) -> bool:
    """True when ``fqn`` names a module of the task head (see :data:`HEAD_NAMES`); ``fqn`` must be a str."""
    check_instance("fqn", fqn, str)
    return any(part in HEAD_NAMES for part in fqn.split("."))


def encoder_linears(module: nn.Module, fqn: str) -> bool:
    """Default ``filter_fn``: the ``nn.Linear`` layers of the model body, not its head."""
    return isinstance(module, nn.Linear) and not is_head(fqn)


def all_linears(module: nn.Module, fqn: str) -> bool:
    """``filter_fn`` that picks every ``nn.Linear``, the head's included."""
    return isinstance(module, nn.Linear)


def matching_modules(model: nn.Module, filter_fn: FilterFn | None = None) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(fqn, module)`` for each submodule that ``filter_fn`` picks (default: :func:`encoder_linears`).

    ``model`` must be an ``nn.Module`` and ``filter_fn`` callable: a ``TypeError`` says so
    when this is called, before anything is yielded.
    """
    return _picked(check_module(model), check_filter_fn(filter_fn))


def check_filter_fn(filter_fn: FilterFn | None, default: FilterFn = encoder_linears) -> FilterFn:
    """``filter_fn``, or ``default`` for ``None``; ``TypeError`` if it is not callable."""
    filter_fn = default if filter_fn is None else filter_fn
    if not callable(filter_fn):
        raise TypeError(f"filter_fn must be callable as filter_fn(module, fqn), got {filter_fn!r}")
    return filter_fn


def _picked(model: nn.Module, filter_fn: FilterFn) -> Iterator[tuple[str, nn.Module]]:
    for fqn, module in model.named_modules():
        if fqn and filter_fn(module, fqn):
            yield fqn, module


def weighted_modules(model: nn.Module, filter_fn: FilterFn | None = None, *,
                     what: str = "layer to change") -> dict[str, nn.Module]:
    """``{fqn: module}`` of the modules ``filter_fn`` picks that have a floating-point weight.

    The layers a pruning or quantization transform works on. The default ``filter_fn`` is
    :func:`encoder_linears` (the body's Linear layers, not the head). A model with none
    raises ``ValueError`` that says ``no {what}``.
    """
    picked = {fqn: m for fqn, m in matching_modules(model, filter_fn)
              if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.is_floating_point()}
    if not picked:
        raise ValueError(f"no {what}: filter_fn picked no module with a floating-point weight in this "
                         f"{type(model).__name__}")
    return picked


def replace_modules_(
    model: nn.Module,
    factory: Factory,
    *,
    filter_fn: FilterFn | None = None,
    strict: bool = True,
) -> nn.Module:
    """Replace, in place, every submodule that ``filter_fn`` picks by ``factory(module, fqn)``.

    The default ``filter_fn`` is :func:`encoder_linears`, as for every transform.

    The set of modules is decided before anything changes, so a factory may return a
    module that ``filter_fn`` would pick again without being visited twice. With
    ``strict=True`` (the default) a model in which nothing matches raises ``ValueError``
    rather than silently staying as it was. Every factory call is made, and every result
    checked to be an ``nn.Module``, before the first swap, so a factory that fails on one
    module leaves the model as it was. Each new module takes the training mode of the one it
    replaces. Returns ``model``.
    """
    check_module(model)
    if not callable(factory):
        raise TypeError(f"factory must be callable as factory(module, fqn), got {factory!r}")
    check_bool("strict", strict)
    targets = list(matching_modules(model, filter_fn))
    if strict and not targets:
        raise ValueError(
            f"filter_fn picked no module of this {type(model).__name__}; nothing to replace "
            "(pass strict=False to allow that)"
        )
    new_modules = []
    for fqn, module in targets:
        new = factory(module, fqn)
        if not isinstance(new, nn.Module):
            raise TypeError(f"factory returned {type(new).__name__} for {fqn!r}; it must return an nn.Module")
        new_modules.append((fqn, new))
    for fqn, new in new_modules:  # swap only once every factory call has succeeded
        new.train(model.get_submodule(fqn).training)  # in the mode of the module it replaces
        model.set_submodule(fqn, new)
    return model


class Rollback:
    """Puts modules' own tensors back as they were when a change fails part-way through.

    Most transforms compute every new tensor first and assign them all at the end, so a
    failure leaves the model untouched. A method that changes a model layer by layer,
    each layer calibrated on the layers already changed (:func:`shrinklib.calibration.sequential_statistics`),
    cannot: a later layer can fail (a singular matrix) after earlier ones changed. It calls
    :meth:`save` on the modules it is about to change, and :meth:`restore` if anything fails.

    :meth:`save` keeps, per module (once), its own parameters and buffers: the tensor
    objects and a copy of their values. :meth:`restore` puts those objects back, with
    their values, ``requires_grad`` and persistence, and drops parameters and buffers
    added since (a ``weight_mask``). Only saved modules are restored; the copies cost the
    memory of the saved tensors.
    """

    def __init__(self):
        self._saved: dict[int, tuple] = {}

    def save(self, modules: Iterable[nn.Module]) -> None:
        """Remember the current tensors of each of ``modules`` (a module saved before is kept as first saved)."""
        for module in modules:
            check_module(module, "module")
            if id(module) in self._saved:
                continue
            params = {n: None if p is None else (p, p.detach().clone(), p.requires_grad)
                      for n, p in module._parameters.items()}
            buffers = {n: None if b is None else (b, b.detach().clone()) for n, b in module._buffers.items()}
            self._saved[id(module)] = (module, params, buffers, set(module._non_persistent_buffers_set))

    @torch.no_grad()
    def restore(self) -> None:
        """Put every saved module's tensors back as :meth:`save` found them."""
        for module, params, buffers, non_persistent in reversed(self._saved.values()):
            module._parameters.clear()
            for name, saved in params.items():
                module._parameters[name] = None if saved is None else _put_back(*saved[:2], saved[2])
            module._buffers.clear()
            for name, saved in buffers.items():
                module._buffers[name] = None if saved is None else _put_back(*saved, None)
            module._non_persistent_buffers_set.clear()
            module._non_persistent_buffers_set.update(non_persistent)


def _put_back(tensor: torch.Tensor, values: torch.Tensor, requires_grad: bool | None) -> torch.Tensor:
    if tensor.shape == values.shape and tensor.dtype == values.dtype and tensor.device == values.device:
        tensor.copy_(values)
    else:
        tensor.data = values
    if requires_grad is not None:
        tensor.requires_grad_(requires_grad)
    return tensor


def glue(name: str, value, *, display: bool = False) -> None:
    """Make ``value`` quotable in a notebook's text as ``{glue:text}`name:format```.

    The book's prose quotes numbers from the run that produced them (myst-nb's glue),
    never typed by hand. Glue plain numbers (``float(x)``, not NumPy scalars) and format
    them in the text, e.g. ``{glue:text}`acc:.1%```. Where myst-nb is not installed (a
    bare Colab runtime) this does nothing. ``name`` must be a str.
    """
    check_instance("name", name, str)
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        return
    myst_glue(name, value, display=display)


def comma_list(text: str) -> list[str]:
    """The non-empty, stripped items of a comma-separated value: ``"3L, 2L,"`` -> ``["3L", "2L"]``.

    How the benchmarks read options such as ``--only "3L,3L half-FFN"``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a comma-separated str, got {type(text).__name__}")
    return [item.strip() for item in text.split(",") if item.strip()]
