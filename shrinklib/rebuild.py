"""What ``shrinklib.load`` may build and replay: an allow-list, never what a folder names.

A saved folder names the classes of its module tree and the kinds of change its model
went through (see :mod:`shrinklib.serialize`). Building a class or importing a module
because a file names it would run whatever code the file points to, so ``load`` goes
through this module, which knows only:

* **module classes**: the torch layers of :data:`TORCH_MODULE_ARGS` and the classes
  registered with :func:`register_module` (shrinklib's swaps: ``QuantLinear``,
  ``SparseLinear``, ...), built as ``cls(**kwargs)`` (:func:`module_class`);
* **Hugging Face models**: the ``PreTrainedModel`` subclasses that the ``transformers``
  package exports, looked up by name there, with their own ``config_class`` (:func:`model_class`);
* **changes**: the kinds registered with :func:`register_change`, each replayed by its
  applier (:func:`change_applier`).

The only modules it imports are ``transformers`` and the shrinklib modules of
:data:`PROVIDER_MODULES` (and :data:`CHANGE_PROVIDERS`), whose import registers the classes
and kinds above; a test checks these lists against the source.
"""
from __future__ import annotations

import importlib
import json
from typing import Callable

from torch import nn

#: The shrinklib modules whose import registers module classes (:func:`register_module`) or
#: change kinds (:func:`register_change`): the only modules ``load`` imports for a folder,
#: and only when the record needs one of their classes or kinds.
PROVIDER_MODULES = frozenset({
    "shrinklib.lstm",
    "shrinklib.prune.heads",
    "shrinklib.prune.movement",
    "shrinklib.prune.sparse_linear",
    "shrinklib.quant.clustering",
    "shrinklib.quant.embedding",
    "shrinklib.quant.linear",
    "shrinklib.quant.qat",
})

#: The change kinds that shrinklib's transforms record, and the module that registers each:
#: ``load`` imports that module (never the ``provider`` a folder names) for a kind not yet registered.
CHANGE_PROVIDERS = {"attention_heads": "shrinklib.prune.heads"}

# ----------------------------------------------------------------------------------
# Module classes

#: Constructor arguments of the torch layers that transforms create or reshape.
TORCH_MODULE_ARGS: dict[type, Callable[[nn.Module], dict]] = {
    nn.Linear: lambda m: {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None},
    nn.Embedding: lambda m: {
        "num_embeddings": m.num_embeddings, "embedding_dim": m.embedding_dim, "padding_idx": m.padding_idx,
    },
    nn.LayerNorm: lambda m: {
        "normalized_shape": list(m.normalized_shape), "eps": m.eps,
        "elementwise_affine": m.elementwise_affine, "bias": m.bias is not None,
    },
    nn.LSTM: lambda m: {
        "input_size": m.input_size, "hidden_size": m.hidden_size, "num_layers": m.num_layers, "bias": m.bias,
        "batch_first": m.batch_first, "dropout": m.dropout, "bidirectional": m.bidirectional, "proj_size": m.proj_size,
    },
    nn.Dropout: lambda m: {"p": m.p},
    nn.Identity: lambda m: {},
    nn.ModuleList: lambda m: {},
    nn.Sequential: lambda m: {},
    nn.ReLU: lambda m: {},
    nn.GELU: lambda m: {"approximate": m.approximate},
    nn.Tanh: lambda m: {},
}


def class_path(cls: type) -> str:
    """``"package.module:QualName"`` of a class, the form a record names classes in."""
    return f"{cls.__module__}:{cls.__qualname__}"


# class path -> class: what load may build with cls(**kwargs); the torch layers, then register_module's
_MODULE_CLASSES: dict[str, type] = {class_path(cls): cls for cls in TORCH_MODULE_ARGS}


def register_module(cls: type) -> type:
    """Class decorator: let ``shrinklib.load`` build ``cls`` again, as ``cls(**module.rebuild_kwargs())``.

    ``cls`` must be an ``nn.Module`` subclass with a ``rebuild_kwargs()`` method that returns
    its constructor arguments as JSON values (``TypeError`` otherwise). A shrinklib module
    that registers classes must be listed in :data:`PROVIDER_MODULES`; a class of your own
    is found by ``load`` once the module that registers it has been imported.
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_module takes a subclass of torch.nn.Module, got {cls!r}")
    if not callable(getattr(cls, "rebuild_kwargs", None)):
        raise TypeError(f"{cls.__name__} has no rebuild_kwargs() method returning its constructor arguments")
    _MODULE_CLASSES[class_path(cls)] = cls
    return cls


def may_build(path: str) -> bool:
    """Whether :func:`module_class` could give a class for ``path``, decided without importing
    anything: it is registered, or its module is one of :data:`PROVIDER_MODULES`."""
    return isinstance(path, str) and (path in _MODULE_CLASSES or path.partition(":")[0] in PROVIDER_MODULES)


def module_class(path: str) -> type:
    """The class ``path`` names if ``load`` may build it (see :func:`register_module`), else ``ValueError``.

    Imports at most one module: the one ``path`` names, and only if it is one of
    :data:`PROVIDER_MODULES` (importing it registers its classes).
    """
    cls = _MODULE_CLASSES.get(path) if isinstance(path, str) else None
    if cls is None and may_build(path):
        importlib.import_module(path.partition(":")[0])
        cls = _MODULE_CLASSES.get(path)
    if cls is None:
        raise ValueError(
            f"class {path!r:.120} is not one shrinklib.load may build: it builds the torch layers of "
            "TORCH_MODULE_ARGS and classes registered with shrinklib.rebuild.register_module"
        )
    return cls


def module_spec(module: nn.Module) -> dict | None:
    """``{"class": ..., "kwargs": ...}`` that rebuilds ``module``'s shapes, or None if ``load``
    may not build its class (see :func:`cannot_build`)."""
    cls = type(module)
    if _MODULE_CLASSES.get(class_path(cls)) is not cls:
        return None
    kwargs = TORCH_MODULE_ARGS[cls](module) if cls in TORCH_MODULE_ARGS else module.rebuild_kwargs()
    return {"class": class_path(cls), "kwargs": kwargs}


def cannot_build(module: nn.Module) -> str:
    """Why :func:`module_spec` gives None for ``module``, as the end of an error message."""
    if callable(getattr(module, "rebuild_kwargs", None)):
        return ("has a rebuild_kwargs() method but its class is not registered with "
                "shrinklib.rebuild.register_module, so shrinklib.load would refuse to build it")
    return "has no rebuild_kwargs() method to say how to build it"


def build_module(spec: dict) -> nn.Module:
    """``cls(**kwargs)`` for a ``{"class": ..., "kwargs": ...}`` spec of a class :func:`module_class` gives."""
    return module_class(spec["class"])(**spec["kwargs"])


def is_transformers_path(path) -> bool:
    """Whether ``path`` has the shape of a ``transformers`` class path, ``"transformers...:Name"``."""
    if not isinstance(path, str):
        return False
    module, _, name = path.partition(":")
    return ((module == "transformers" or module.startswith("transformers."))
            and name.isidentifier() and not name.startswith("_"))


def model_class(path: str) -> type:
    """The Hugging Face model class ``path`` names, looked up by name in ``transformers`` only.

    ``path`` is ``"transformers...:Name"``; ``Name`` must be a subclass of ``PreTrainedModel``
    that the ``transformers`` package exports, with a config class of its own, else
    ``ValueError``. The module part of ``path`` is never imported.
    """
    import transformers
    from transformers import PretrainedConfig, PreTrainedModel

    cls = None
    if is_transformers_path(path):
        try:
            cls = getattr(transformers, path.partition(":")[2], None)
        except Exception:  # a lazy export whose optional backend is missing
            cls = None
    config_class = getattr(cls, "config_class", None)
    if not (isinstance(cls, type) and issubclass(cls, PreTrainedModel) and cls is not PreTrainedModel
            and isinstance(config_class, type) and issubclass(config_class, PretrainedConfig)):
        raise ValueError(f"class {path!r:.120} is not a Hugging Face model class that the transformers package exports")
    return cls


# ----------------------------------------------------------------------------------
# Change records that transforms log and load replays

_CHANGE_APPLIERS: dict[str, Callable[[nn.Module, dict], None]] = {}
_CHANGES_ATTR = "_shrinklib_changes"


def register_change(kind: str):
    """Decorator: ``apply(model, payload)`` replays a change of ``kind`` on a fresh model.

    A shrinklib module that registers a kind must list it in :data:`CHANGE_PROVIDERS`.
    """

    def decorate(apply: Callable[[nn.Module, dict], None]):
        if kind in _CHANGE_APPLIERS and _CHANGE_APPLIERS[kind] is not apply:
            raise ValueError(f"a change of kind {kind!r} is already registered")
        _CHANGE_APPLIERS[kind] = apply
        return apply

    return decorate


def is_known_change(kind: str) -> bool:
    """Whether :func:`change_applier` could give an applier for ``kind``, decided without importing anything."""
    return isinstance(kind, str) and (kind in _CHANGE_APPLIERS or kind in CHANGE_PROVIDERS)


def record_change(model: nn.Module, kind: str, /, **payload) -> None:
    """Log, on ``model``, a change that ``load`` must replay with the applier of ``kind``.

    ``kind`` must be registered (``ValueError``); ``payload`` must be JSON (``TypeError``;
    it is checked now, not at save time) and may not use the keys ``kind`` and
    ``provider``, which the record uses (``ValueError``). The change must already be made
    on ``model``; the log only says how to make it again.
    """
    if kind not in _CHANGE_APPLIERS:
        raise ValueError(f"no change of kind {kind!r} is registered; known: {sorted(_CHANGE_APPLIERS)}")
    if {"kind", "provider"} & payload.keys():
        raise ValueError(f"the payload of a {kind!r} change may not use the keys 'kind' and 'provider'")
    try:
        json.dumps(payload, allow_nan=True)
    except (TypeError, ValueError) as err:
        raise TypeError(f"the payload of a {kind!r} change must be JSON-serializable: {err}") from None
    provider = _CHANGE_APPLIERS[kind].__module__  # for the reader: load never imports what a record names
    model.__dict__.setdefault(_CHANGES_ATTR, []).append({"kind": kind, "provider": provider, **payload})


def recorded_changes(model: nn.Module) -> list[dict]:
    """The change records logged on ``model`` so far (a copy)."""
    return [dict(c) for c in model.__dict__.get(_CHANGES_ATTR, [])]


def change_applier(kind: str) -> Callable[[nn.Module, dict], None]:
    """The registered applier of ``kind``, else ``ValueError``.

    For a kind of :data:`CHANGE_PROVIDERS` not registered yet it imports that shrinklib
    module first; it imports nothing else.
    """
    if isinstance(kind, str) and kind not in _CHANGE_APPLIERS and kind in CHANGE_PROVIDERS:
        importlib.import_module(CHANGE_PROVIDERS[kind])
    if not isinstance(kind, str) or kind not in _CHANGE_APPLIERS:
        raise ValueError(
            f"this folder records a change of kind {kind!r:.80} but no applier for it is registered; "
            "import the module that registers it before calling shrinklib.load"
        )
    return _CHANGE_APPLIERS[kind]


def apply_change(model: nn.Module, record: dict) -> None:
    """Replay one change record on ``model`` with its kind's applier, and log it there again."""
    payload = {k: v for k, v in record.items() if k not in ("kind", "provider")}
    change_applier(record["kind"])(model, payload)
    record_change(model, record["kind"], **payload)
