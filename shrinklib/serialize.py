"""``shrinklib.save`` / ``shrinklib.load``: any model, compressed or not, reloaded bit-exact.

A folder holds ``model.safetensors`` (every tensor once; never pickle) and
``shrinklib.json``, which says how to rebuild the module tree those tensors fit:

1. **base**: what to build first - a Hugging Face class and its config
   (``{"kind": "transformers", "class": "BertForSequenceClassification", "config": {...}}``)
   or a plain module class and its constructor arguments
   (``{"kind": "module", "class": "shrinklib.lstm:BiLSTMClassifier", "kwargs": {...}}``).
2. **structure**: the differences between the model and that freshly built base, found
   at save time by walking both trees: a submodule of another class or other
   constructor arguments (a swapped or shrunken layer), a tensor added, reshaped or
   removed, a submodule deleted (a dropped layer). Each is replayed on load.
3. **changes**: what the structure cannot show (an attention module's head count, say),
   logged by the transform that made it through :func:`record_change` and replayed on
   load by the function registered for its kind with :func:`register_change`.
4. **aliases**: tensors shared under two names (tied embeddings, shared layers), stored
   once and tied again on load.

A module is rebuilt as ``cls(**kwargs)``: modules of shrinklib give their arguments
with a ``rebuild_kwargs()`` method, and the torch layers the book uses are described
by :data:`TORCH_MODULE_ARGS`. ``save`` rebuilds the skeleton itself and refuses (with
the module named) anything it could not rebuild, so a save that succeeds loads.

An unchanged Hugging Face model also gets ``config.json``, so ``from_pretrained`` reads
the folder; a changed one does not, so ``from_pretrained`` cannot silently load
re-initialized weights into the wrong shapes.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file
from torch import nn

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
RECORD_FILE = "shrinklib.json"

# ----------------------------------------------------------------------------------
# Describing a module so that it can be built again

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
    """``"package.module:QualName"`` of a class, the form :func:`import_class` reads."""
    return f"{cls.__module__}:{cls.__qualname__}"


def import_class(path: str) -> type:
    module_name, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def module_spec(module: nn.Module) -> dict | None:
    """``{"class": ..., "kwargs": ...}`` that rebuilds ``module``'s shapes, or None if unknown."""
    if hasattr(module, "rebuild_kwargs"):
        kwargs = module.rebuild_kwargs()
    elif type(module) in TORCH_MODULE_ARGS:
        kwargs = TORCH_MODULE_ARGS[type(module)](module)
    else:
        return None
    return {"class": class_path(type(module)), "kwargs": kwargs}


def build_module(spec: dict) -> nn.Module:
    return import_class(spec["class"])(**spec["kwargs"])


# ----------------------------------------------------------------------------------
# Change records that transforms log and load replays

_CHANGE_APPLIERS: dict[str, Callable[[nn.Module, dict], None]] = {}
_CHANGES_ATTR = "_shrinklib_changes"


def register_change(kind: str):
    """Decorator: ``apply(model, payload)`` replays a change of ``kind`` on a fresh model."""

    def decorate(apply: Callable[[nn.Module, dict], None]):
        if kind in _CHANGE_APPLIERS and _CHANGE_APPLIERS[kind] is not apply:
            raise ValueError(f"a change of kind {kind!r} is already registered")
        _CHANGE_APPLIERS[kind] = apply
        return apply

    return decorate


def record_change(model: nn.Module, kind: str, **payload) -> None:
    """Log, on ``model``, a change that :func:`load` must replay with the applier of ``kind``.

    ``payload`` must be JSON (it is checked now, not at save time). The change must
    already be made on ``model``; the log only says how to make it again.
    """
    if kind not in _CHANGE_APPLIERS:
        raise ValueError(f"no change of kind {kind!r} is registered; known: {sorted(_CHANGE_APPLIERS)}")
    try:
        json.dumps(payload)
    except TypeError as err:
        raise TypeError(f"the payload of a {kind!r} change must be JSON-serializable: {err}") from None
    provider = _CHANGE_APPLIERS[kind].__module__  # load imports it to find the applier
    model.__dict__.setdefault(_CHANGES_ATTR, []).append({"kind": kind, "provider": provider, **payload})


def recorded_changes(model: nn.Module) -> list[dict]:
    """The change records logged on ``model`` so far (a copy)."""
    return [dict(c) for c in model.__dict__.get(_CHANGES_ATTR, [])]


def _apply_change(model: nn.Module, record: dict) -> None:
    payload = {k: v for k, v in record.items() if k not in ("kind", "provider")}
    kind = record["kind"]
    if kind not in _CHANGE_APPLIERS and record.get("provider"):
        importlib.import_module(record["provider"])  # registers the applier
    if kind not in _CHANGE_APPLIERS:
        raise ValueError(
            f"this folder records a change of kind {kind!r} but no applier for it is registered; "
            "import the shrinklib module that made it before calling shrinklib.load"
        )
    _CHANGE_APPLIERS[kind](model, payload)
    record_change(model, kind, **payload)


# ----------------------------------------------------------------------------------
# The base model


def _base_spec(model: nn.Module) -> dict:
    from transformers import PreTrainedModel

    if isinstance(model, PreTrainedModel):
        return {"kind": "transformers", "class": class_path(type(model)), "config": model.config.to_dict()}
    spec = module_spec(model)
    if spec is None:
        raise TypeError(
            f"shrinklib.save cannot rebuild a {type(model).__name__}: it is neither a Hugging Face model "
            "nor a module with a rebuild_kwargs() method returning its constructor arguments"
        )
    return {"kind": "module", **spec}


def _build_base(base: dict) -> nn.Module:
    cls = import_class(base["class"])
    if base["kind"] == "transformers":
        config = cls.config_class.from_dict(dict(base["config"]))
        return cls(config)
    return cls(**base["kwargs"])


# ----------------------------------------------------------------------------------
# Structural differences between a model and its rebuilt base


def _tensor_kind(module: nn.Module, name: str) -> str:
    return "parameter" if name in module._parameters else "buffer"


def _own_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    own = {n: t for n, t in module._parameters.items() if t is not None}
    own.update({n: t for n, t in module._buffers.items() if t is not None})
    return own


def _set_submodule(root: nn.Module, fqn: str, new: nn.Module) -> None:
    parent_name, _, child = fqn.rpartition(".")
    parent = root.get_submodule(parent_name)
    if isinstance(parent, nn.ModuleList) and child.isdigit() and int(child) == len(parent):
        parent.append(new)
    else:
        setattr(parent, child, new)


def _has_submodule(root: nn.Module, fqn: str) -> bool:
    try:
        root.get_submodule(fqn)
        return True
    except AttributeError:
        return False


def _apply_structure(root: nn.Module, entry: dict) -> None:
    op, fqn = entry["op"], entry["fqn"]
    if op == "module":
        _set_submodule(root, fqn, build_module(entry))
    elif op == "delete":
        parent_name, _, child = fqn.rpartition(".")
        parent = root.get_submodule(parent_name)
        if isinstance(parent, nn.ModuleList):
            del parent[int(child)]
        else:
            delattr(parent, child)
    elif op == "tensor":
        module = root.get_submodule(fqn)
        empty = torch.empty(entry["shape"], dtype=getattr(torch, entry["dtype"]))
        module._parameters.pop(entry["name"], None)
        module._buffers.pop(entry["name"], None)
        if entry["tensor_kind"] == "parameter":
            module.register_parameter(entry["name"], nn.Parameter(empty, requires_grad=entry["dtype"].startswith("float")))
        else:
            module.register_buffer(entry["name"], empty, persistent=entry["persistent"])
    elif op == "remove_tensor":
        module = root.get_submodule(fqn)
        module._parameters.pop(entry["name"], None)
        module._buffers.pop(entry["name"], None)
    else:
        raise ValueError(f"unknown structural entry {op!r}")


def _structure_entries(model: nn.Module, skeleton: nn.Module) -> list[dict]:
    """Entries that turn ``skeleton`` into ``model``'s shape; applied to ``skeleton`` as found."""
    entries: list[dict] = []

    def add(entry: dict) -> None:
        _apply_structure(skeleton, entry)
        entries.append(entry)

    for fqn, module in model.named_modules():
        target = skeleton.get_submodule(fqn) if (fqn == "" or _has_submodule(skeleton, fqn)) else None
        if fqn and (target is None or type(target) is not type(module) or module_spec(target) != module_spec(module)):
            spec = module_spec(module)
            if spec is None:
                raise TypeError(
                    f"shrinklib.save cannot record the module at {fqn!r}: {type(module).__name__} differs from "
                    "the base model and has no rebuild_kwargs() method to say how to build it"
                )
            add({"op": "module", "fqn": fqn, **spec})
            target = skeleton.get_submodule(fqn)
        mine, theirs = _own_tensors(module), _own_tensors(target)
        for name, tensor in mine.items():
            other = theirs.get(name)
            kind = _tensor_kind(module, name)
            if other is None or (other.shape, other.dtype) != (tensor.shape, tensor.dtype) or _tensor_kind(target, name) != kind:
                add({
                    "op": "tensor", "fqn": fqn, "name": name, "tensor_kind": kind,
                    "shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch."),
                    "persistent": name not in module._non_persistent_buffers_set,
                })
        for name in theirs.keys() - mine.keys():
            add({"op": "remove_tensor", "fqn": fqn, "name": name})

    model_fqns = {fqn for fqn, _ in model.named_modules(remove_duplicate=False)}
    missing = [fqn for fqn, _ in skeleton.named_modules(remove_duplicate=False) if fqn and fqn not in model_fqns]
    topmost = [f for f in missing if f.rpartition(".")[0] in model_fqns or f.rpartition(".")[0] == ""]
    # delete list items from the end so the indices of the others stay put
    for fqn in sorted(topmost, key=lambda f: [int(p) if p.isdigit() else -1 for p in f.split(".")], reverse=True):
        add({"op": "delete", "fqn": fqn})
    return entries


# ----------------------------------------------------------------------------------
# Tensors shared under several names


def _storage_key(t: torch.Tensor):
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


def _unique_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state dict with each shared tensor once, and ``{alias: stored name}``."""
    state = model.state_dict(keep_vars=False)
    seen: dict[Any, str] = {}
    unique, aliases = {}, {}
    for name, tensor in state.items():
        key = _storage_key(tensor)
        if key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
            unique[name] = tensor.detach().contiguous()
    return unique, aliases


def _tie(model: nn.Module, alias: str, stored: str) -> None:
    owner_name, _, attr = alias.rpartition(".")
    source_name, _, source_attr = stored.rpartition(".")
    owner, source = model.get_submodule(owner_name), model.get_submodule(source_name)
    tensor = getattr(source, source_attr)
    if attr in owner._parameters:
        owner._parameters[attr] = tensor
    else:
        owner._buffers[attr] = tensor


# ----------------------------------------------------------------------------------
# The public pair


def save(model: nn.Module, folder: str | Path, tokenizer=None) -> Path:
    """Save ``model`` (and optionally its tokenizer) to ``folder``; returns the folder.

    Raises ``TypeError`` before writing anything if some part of the model could not be
    rebuilt by :func:`load`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    folder = Path(folder)
    base = _base_spec(model)
    skeleton = _build_base(base)
    structure = _structure_entries(model, skeleton)
    changes = recorded_changes(model)
    state, aliases = _unique_state(model)
    expected = skeleton.state_dict()
    if expected.keys() != model.state_dict().keys():
        diff = sorted(expected.keys() ^ model.state_dict().keys())[:5]
        raise TypeError(f"shrinklib.save could not reproduce the model's structure; differing tensors: {diff}")

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.cpu() for k, v in state.items()}, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    record = {
        "format": FORMAT_VERSION, "base": base, "structure": structure,
        "changes": changes, "aliases": aliases, "training": model.training,
    }
    (folder / RECORD_FILE).write_text(json.dumps(record, indent=1))
    if base["kind"] == "transformers" and not structure and not changes:
        model.config.save_pretrained(folder)
    elif (folder / "config.json").exists():
        (folder / "config.json").unlink()  # a stale one would let from_pretrained load wrong shapes
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def load(folder: str | Path, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model saved in ``folder`` with :func:`save`, bit-exact."""
    folder = Path(folder)
    record_path = folder / RECORD_FILE
    if not record_path.exists():
        raise FileNotFoundError(
            f"{folder} holds no {RECORD_FILE}; it was not written by shrinklib.save "
            "(for a plain Hugging Face folder use from_pretrained)"
        )
    record = json.loads(record_path.read_text())
    if record.get("format") != FORMAT_VERSION:
        raise ValueError(f"{record_path} has format {record.get('format')!r}; this shrinklib reads {FORMAT_VERSION}")
    model = _build_base(record["base"])
    for entry in record["structure"]:
        _apply_structure(model, entry)
    for change in record["changes"]:
        _apply_change(model, change)
    state = load_file(str(folder / WEIGHTS_FILE))
    for alias, stored in record["aliases"].items():
        state[alias] = state[stored]
    model.load_state_dict(state, strict=True, assign=True)
    for alias, stored in record["aliases"].items():
        _tie(model, alias, stored)
    model.train(record.get("training", False))
    return model.to(device)
