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
with a ``rebuild_kwargs()`` method and are registered with :func:`register_module`, and
the torch layers the book uses are described by :data:`TORCH_MODULE_ARGS` (both in
:mod:`shrinklib.rebuild`). ``save`` rebuilds the skeleton itself and refuses (with the
module named) anything it could not rebuild, so a save that succeeds loads.

**A folder is data, never code.** ``load`` reads tensors with safetensors only. Before it
imports or builds anything it checks the whole record (:func:`shrinklib.record.check_record`:
every key and JSON type, every class and change kind against the allow-list of
:mod:`shrinklib.rebuild`), then resolves every class and change applier through that
allow-list: torch layers, model classes that the ``transformers`` package exports by name,
classes registered with :func:`register_module`, kinds registered with
:func:`register_change`. The only modules it may import are ``transformers`` and
shrinklib's own :data:`~shrinklib.rebuild.PROVIDER_MODULES`; a module a folder names (a
change's ``provider``, a class path) is never imported for being named. Anything else is
a ``ValueError`` naming the place in ``shrinklib.json``.

An unchanged Hugging Face model also gets ``config.json``, so ``from_pretrained`` reads
the folder; a changed one does not, so ``from_pretrained`` cannot silently load
re-initialized weights into the wrong shapes.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from shrinklib._checks import check_instance, check_module
from shrinklib.rebuild import (
    TORCH_MODULE_ARGS, apply_change, build_module, cannot_build, change_applier, class_path, model_class,
    module_class, module_spec, record_change, recorded_changes, register_change, register_module,
)
from shrinklib.record import FORMAT_VERSION, RECORD_FILE, TENSOR_DTYPES, check_record

WEIGHTS_FILE = "model.safetensors"

__all__ = [
    "save", "load", "WEIGHTS_FILE", "RECORD_FILE", "FORMAT_VERSION", "check_record",
    "register_module", "register_change", "record_change", "recorded_changes", "TORCH_MODULE_ARGS",
]

# ----------------------------------------------------------------------------------
# The base model


def _base_spec(model: nn.Module) -> dict:
    from transformers import PreTrainedModel

    if isinstance(model, PreTrainedModel):
        path = class_path(type(model))
        try:
            exported = model_class(path) is type(model)
        except ValueError:
            exported = False
        if not exported:
            raise TypeError(
                f"shrinklib.save cannot rebuild a {type(model).__name__}: shrinklib.load builds only the "
                "Hugging Face model classes that the transformers package exports under their own name"
            )
        return {"kind": "transformers", "class": path, "config": model.config.to_dict()}
    spec = module_spec(model)
    if spec is None:
        raise TypeError(
            f"shrinklib.save cannot rebuild a {type(model).__name__}: it is neither a Hugging Face model "
            f"nor a module that shrinklib.load may build; it {cannot_build(model)}"
        )
    return {"kind": "module", **spec}


def _build_base(base: dict) -> nn.Module:
    if base["kind"] == "transformers":
        cls = model_class(base["class"])
        return cls(cls.config_class.from_dict(dict(base["config"])))
    return module_class(base["class"])(**base["kwargs"])


# ----------------------------------------------------------------------------------
# Structural differences between a model and its rebuilt base


def _tensor_kind(module: nn.Module, name: str) -> str:
    return "parameter" if name in module._parameters else "buffer"


def _own_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    own = {n: t for n, t in module._parameters.items() if t is not None}
    own.update({n: t for n, t in module._buffers.items() if t is not None})
    return own


def _set_submodule(root: nn.Module, fqn: str, new: nn.Module) -> None:
    """Put ``new`` at ``fqn``: in place of a submodule, appended to a ModuleList, or as a new
    child; never over an attribute that is not a submodule (a method, a size)."""
    parent_name, _, child = fqn.rpartition(".")
    parent = root.get_submodule(parent_name)
    if child in parent._modules:
        setattr(parent, child, new)
    elif isinstance(parent, nn.ModuleList):
        if child != str(len(parent)):
            raise ValueError(f"{fqn!r} is neither an item of the ModuleList {parent_name!r} nor the next one")
        parent.append(new)
    elif getattr(parent, child, None) is None:
        setattr(parent, child, new)
    else:
        raise ValueError(f"{fqn!r} is an attribute of {type(parent).__name__} that is not a submodule")


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
        if child not in parent._modules:
            raise ValueError(f"{fqn!r} is not a submodule")
        if isinstance(parent, nn.ModuleList):
            del parent[int(child)]
        else:
            delattr(parent, child)
    elif op == "tensor":
        module = root.get_submodule(fqn)
        empty = torch.empty(entry["shape"], dtype=TENSOR_DTYPES[entry["dtype"]])
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
                    f"the base model and {cannot_build(module)}"
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


def save(model: nn.Module, folder: str | os.PathLike, tokenizer=None) -> Path:
    """Save ``model`` (and optionally its tokenizer) to ``folder``; returns the folder.

    Raises ``TypeError`` before writing anything if ``model`` is not a module, ``folder`` not
    a path, or some part of the model could not be rebuilt by :func:`load` (a class that is
    neither a torch layer of :data:`TORCH_MODULE_ARGS`, nor registered with
    :func:`register_module`, nor a model class that ``transformers`` exports). What it writes
    passes :func:`check_record`.
    """
    check_module(model)
    folder = Path(check_instance("folder", folder, (str, os.PathLike), what="a path (str or os.PathLike)"))
    base = _base_spec(model)
    skeleton = _build_base(base)
    structure = _structure_entries(model, skeleton)
    changes = recorded_changes(model)
    state, aliases = _unique_state(model)
    expected = skeleton.state_dict()
    if expected.keys() != model.state_dict().keys():
        diff = sorted(expected.keys() ^ model.state_dict().keys())[:5]
        raise TypeError(f"shrinklib.save could not reproduce the model's structure; differing tensors: {diff}")
    record = {
        "format": FORMAT_VERSION, "base": base, "structure": structure,
        "changes": changes, "aliases": aliases, "training": model.training,
    }
    try:
        text = json.dumps(record, indent=1)
        check_record(json.loads(text))
    except (TypeError, ValueError) as err:
        raise TypeError(f"shrinklib.save could not write a record that shrinklib.load accepts: {err}") from err

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.cpu() for k, v in state.items()}, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    (folder / RECORD_FILE).write_text(text)
    if base["kind"] == "transformers" and not structure and not changes:
        model.config.save_pretrained(folder)
    elif (folder / "config.json").exists():
        (folder / "config.json").unlink()  # a stale one would let from_pretrained load wrong shapes
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


@contextlib.contextmanager
def _at(source: str, where: str, failed: str):
    """Turn any failure inside (of an allowed constructor, an applier, the allow-list) into a
    ValueError that names the place in the record."""
    try:
        yield
    except Exception as err:
        raise ValueError(f"{source}: {where} {failed}: {type(err).__name__}: {err}") from err


def load(folder: str | os.PathLike, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model saved in ``folder`` with :func:`save`, bit-exact.

    A folder is data, never code: the record is checked whole by :func:`check_record`
    before anything is imported or built, every class is resolved through the allow-list
    (:func:`module_class`, :func:`model_class`) and every change kind through
    :func:`change_applier` before anything is built, tensors are read with safetensors
    only. A record that fails, or whose entries do not fit the model they build, gives a
    ``ValueError`` naming the place in ``shrinklib.json``; a ``folder`` that is not a path, a
    ``TypeError``; a folder without the record, ``FileNotFoundError``.
    """
    folder = Path(check_instance("folder", folder, (str, os.PathLike), what="a path (str or os.PathLike)"))
    record_path = folder / RECORD_FILE
    if not record_path.exists():
        raise FileNotFoundError(
            f"{folder} holds no {RECORD_FILE}; it was not written by shrinklib.save "
            "(for a plain Hugging Face folder use from_pretrained)"
        )
    source = str(record_path)
    try:
        record = json.loads(record_path.read_text())
    except (ValueError, RecursionError) as err:
        raise ValueError(f"{source} is not valid JSON: {err}") from None
    check_record(record, source=source)

    # every class and applier the record needs, resolved before anything is built
    base = record["base"]
    with _at(source, "base['class']", "is refused"):
        (model_class if base["kind"] == "transformers" else module_class)(base["class"])
    for i, entry in enumerate(record["structure"]):
        if entry["op"] == "module":
            with _at(source, f"structure[{i}]['class']", "is refused"):
                module_class(entry["class"])
    for i, change in enumerate(record["changes"]):
        with _at(source, f"changes[{i}]['kind']", "is refused"):
            change_applier(change["kind"])

    with _at(source, "base", "could not be built"):
        model = _build_base(base)
    for i, entry in enumerate(record["structure"]):
        with _at(source, f"structure[{i}] ({entry['op']} at {entry['fqn']!r})", "could not be replayed"):
            _apply_structure(model, entry)
    for i, change in enumerate(record["changes"]):
        with _at(source, f"changes[{i}] (kind {change['kind']!r})", "could not be replayed"):
            apply_change(model, change)
    state = load_file(str(folder / WEIGHTS_FILE))
    for alias, stored in record["aliases"].items():
        if stored not in state:
            raise ValueError(f"{source}: aliases[{alias!r}] names {stored!r}, which {WEIGHTS_FILE} does not hold")
        state[alias] = state[stored]
    with _at(source, f"the tensors of {WEIGHTS_FILE}", "do not fit the model the record describes"):
        model.load_state_dict(state, strict=True, assign=True)
        for alias, stored in record["aliases"].items():
            _tie(model, alias, stored)
    model.train(record.get("training", False))
    return model.to(device)
