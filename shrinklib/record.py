"""``shrinklib.json``: what the record of a saved model may say, checked before anything is built.

:func:`shrinklib.save` writes the record and :func:`shrinklib.load` replays it (the format
is described in :mod:`shrinklib.serialize`). A folder may come from anywhere, so ``load``
first passes the whole record through :func:`check_record`, which imports nothing and
builds nothing: a record it accepts names only classes and change kinds that
:mod:`shrinklib.rebuild` allows, with JSON arguments, in the shape ``save`` writes. A
malformed or hostile record is a ``ValueError`` that says where and what is wrong
(``"shrinklib.json: structure[3] has no 'fqn'"``), never a ``KeyError`` from inside.
"""
from __future__ import annotations

import re

import torch

from shrinklib.rebuild import CHANGE_PROVIDERS, is_known_change, is_transformers_path, may_build

FORMAT_VERSION = 1
RECORD_FILE = "shrinklib.json"

#: The dtypes a ``tensor`` entry may name, by the name ``save`` writes (``"float16"``).
TENSOR_DTYPES = {name: dtype for name, dtype in vars(torch).items() if isinstance(dtype, torch.dtype)}

#: Per structural op, the keys an entry has besides ``op``.
STRUCTURE_KEYS = {
    "module": ("fqn", "class", "kwargs"),
    "delete": ("fqn",),
    "tensor": ("fqn", "name", "tensor_kind", "shape", "dtype", "persistent"),
    "remove_tensor": ("fqn", "name"),
}

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INDEX = re.compile(r"[0-9]+")
_JSON_SCALARS = (str, int, float, bool, type(None))
_MAX_DEPTH = 64
# Config keys that save never writes and that would make transformers fetch or import code
# (a hub attention kernel, remote code): refused at any depth of a base's config.
_CODE_CONFIG_KEY = re.compile(r"_?(attn|experts)_implementation(_internal)?|auto_map|trust_remote_code")


def _is_name(value) -> bool:
    """An attribute name (ASCII identifier) that is not a dunder."""
    return isinstance(value, str) and bool(_NAME.fullmatch(value)) and not value.startswith("__")


def _kind_of(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a bool", int: "an int", float: "a float",
            type(None): "null"}.get(type(value), f"a {type(value).__name__}")


class _Checker:
    """The checks of one record; every failure is a ValueError that starts with the file's name."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, what: str):
        raise ValueError(f"{self.source}: {where} {what}")

    def keys(self, where: str, value, required: tuple, optional: tuple = ()) -> dict:
        self.typed(where, value, (dict,), "an object")
        for key in required:
            if key not in value:
                self.fail(where, f"has no {key!r}")
        extra = sorted(value.keys() - set(required) - set(optional), key=str)
        if extra:
            self.fail(where, f"has unknown key(s) {extra}; allowed: {sorted(required + optional)}")
        return value

    def typed(self, where: str, value, types: tuple, what: str):
        if type(value) not in types:
            shown = "" if type(value) in (dict, list) else f" {value!r:.80}"
            self.fail(where, f"must be {what}, got {_kind_of(value)}{shown}")
        return value

    def json(self, where: str, value, depth: int = 0) -> None:
        if depth > _MAX_DEPTH:
            self.fail(where, f"is nested more than {_MAX_DEPTH} levels deep")
        if type(value) is list:
            for i, item in enumerate(value):
                self.json(f"{where}[{i}]", item, depth + 1)
        elif type(value) is dict:
            for key, item in value.items():
                self.typed(f"a key of {where}", key, (str,), "a string")
                self.json(f"{where}[{key!r:.80}]", item, depth + 1)
        elif type(value) not in _JSON_SCALARS:
            self.fail(where, f"is a Python {type(value).__name__}, not a JSON value")

    def fqn(self, where: str, value, *, root: bool) -> str:
        self.typed(where, value, (str,), "a dotted name")
        if value == "" and root:
            return value
        if not all(_INDEX.fullmatch(p) or _is_name(p) for p in value.split(".")):
            self.fail(where, f"is not a dotted name of attributes and indices: {value!r:.80}")
        return value

    def kwargs(self, where: str, value) -> None:
        self.typed(where, value, (dict,), "an object of constructor arguments")
        for key in value:
            if not _is_name(key):
                self.fail(where, f"has an argument name that is not an identifier: {key!r:.80}")
        self.json(where, value)

    def module_class(self, where: str, path) -> None:
        self.typed(where, path, (str,), "a class path 'module:Class'")
        if not may_build(path):
            self.fail(where, f"names {path!r:.120}, which is not a class shrinklib.load may build: a torch layer "
                             "of TORCH_MODULE_ARGS or a class registered by one of shrinklib.rebuild.PROVIDER_MODULES")

    def config(self, where: str, value, depth: int = 0) -> None:
        if type(value) is dict:
            for key, item in value.items():
                if _CODE_CONFIG_KEY.fullmatch(key):
                    self.fail(where, f"sets {key!r}, which shrinklib.save never writes (it could make "
                                     "transformers load code)")
                self.config(f"{where}[{key!r:.80}]", item, depth + 1)
        elif type(value) is list:
            for i, item in enumerate(value):
                self.config(f"{where}[{i}]", item, depth + 1)

    def base(self, base) -> None:
        self.keys("base", base, ("kind", "class"), ("config", "kwargs"))
        if base["kind"] == "transformers":
            self.keys("base", base, ("kind", "class", "config"))
            self.typed("base['class']", base["class"], (str,), "a class path 'module:Class'")
            if not is_transformers_path(base["class"]):
                self.fail("base['class']", f"names {base['class']!r:.120}, which is not a class of the "
                                           "transformers package")
            self.typed("base['config']", base["config"], (dict,), "an object")
            self.json("base['config']", base["config"])
            self.config("base['config']", base["config"])
        elif base["kind"] == "module":
            self.keys("base", base, ("kind", "class", "kwargs"))
            self.module_class("base['class']", base["class"])
            self.kwargs("base['kwargs']", base["kwargs"])
        else:
            self.fail("base['kind']", f"must be 'transformers' or 'module', got {base['kind']!r:.80}")

    def structure_entry(self, where: str, entry) -> None:
        self.keys(where, entry, ("op",), tuple({k for keys in STRUCTURE_KEYS.values() for k in keys}))
        op = entry["op"]
        if type(op) is not str or op not in STRUCTURE_KEYS:
            self.fail(where, f"has unknown op {op!r:.80}; known: {sorted(STRUCTURE_KEYS)}")
        self.keys(where, entry, ("op", *STRUCTURE_KEYS[op]))
        self.fqn(f"{where}['fqn']", entry["fqn"], root=op in ("tensor", "remove_tensor"))
        if op == "module":
            self.module_class(f"{where}['class']", entry["class"])
            self.kwargs(f"{where}['kwargs']", entry["kwargs"])
        if op in ("tensor", "remove_tensor") and not _is_name(entry["name"]):
            self.fail(f"{where}['name']", f"must be a tensor name (an identifier), got {entry['name']!r:.80}")
        if op == "tensor":
            if entry["tensor_kind"] not in ("parameter", "buffer"):
                self.fail(f"{where}['tensor_kind']", f"must be 'parameter' or 'buffer', got {entry['tensor_kind']!r:.80}")
            self.typed(f"{where}['shape']", entry["shape"], (list,), "a list of sizes")
            for j, size in enumerate(entry["shape"]):
                if type(size) is not int or size < 0:
                    self.fail(f"{where}['shape'][{j}]", f"must be an int >= 0, got {size!r:.80}")
            if type(entry["dtype"]) is not str or entry["dtype"] not in TENSOR_DTYPES:
                self.fail(f"{where}['dtype']", f"must name a torch dtype ('float32', 'int8', ...), got {entry['dtype']!r:.80}")
            self.typed(f"{where}['persistent']", entry["persistent"], (bool,), "true or false")

    def change(self, where: str, change) -> None:
        self.keys(where, change, ("kind",), tuple(change) if type(change) is dict else ())
        self.typed(f"{where}['kind']", change["kind"], (str,), "a string")
        if "provider" in change:
            self.typed(f"{where}['provider']", change["provider"], (str,), "a string")
        if not is_known_change(change["kind"]):
            self.fail(f"{where}['kind']", f"is {change['kind']!r:.80}, which no imported module registers and "
                                          f"shrinklib does not make (it makes {sorted(CHANGE_PROVIDERS)}); import "
                                          "the module that registers it before calling shrinklib.load")
        self.json(where, change)


def check_record(record, *, source: str = RECORD_FILE) -> None:
    """Refuse a record that ``load`` must not act on; import nothing, build nothing.

    Each failure is a ``ValueError`` that starts with ``source`` and names the place
    (``"shrinklib.json: structure[3] has no 'fqn'"``). Checked: the record is an object with
    ``format`` :data:`FORMAT_VERSION` and exactly the keys ``save`` writes (``training``
    optional, a bool); ``base`` is a ``"transformers"`` class path (looked up by name in the
    ``transformers`` package) with a JSON ``config`` that sets no key that would make
    transformers load code, or a ``"module"`` of an allowed class with JSON ``kwargs`` whose
    names are identifiers; each ``structure`` entry has a known ``op`` and exactly its keys
    (:data:`STRUCTURE_KEYS`): dotted names of attributes and indices (no dunders), an allowed
    class with JSON ``kwargs``, a ``tensor_kind`` of ``parameter``/``buffer``, a ``shape``
    of ints >= 0, a dtype of :data:`TENSOR_DTYPES`, a bool ``persistent``; each change has a
    string ``kind`` that is registered or one of :data:`~shrinklib.rebuild.CHANGE_PROVIDERS`
    and a JSON payload (a ``provider`` it names must be a string, and is never imported);
    ``aliases`` maps tensor names to tensor names. An allowed class is one
    :func:`shrinklib.rebuild.may_build` accepts; whether a class of a provider module is
    registered is checked when ``load`` resolves it, before anything is built.
    """
    c = _Checker(source)
    c.typed("the record", record, (dict,), "an object")
    if record.get("format") != FORMAT_VERSION:
        raise ValueError(f"{source} has format {record.get('format')!r:.40}; this shrinklib reads {FORMAT_VERSION}")
    c.keys("the record", record, ("format", "base", "structure", "changes", "aliases"), ("training",))
    c.base(record["base"])
    c.typed("structure", record["structure"], (list,), "a list")
    for i, entry in enumerate(record["structure"]):
        c.structure_entry(f"structure[{i}]", entry)
    c.typed("changes", record["changes"], (list,), "a list")
    for i, change in enumerate(record["changes"]):
        c.change(f"changes[{i}]", change)
    c.typed("aliases", record["aliases"], (dict,), "an object")
    for alias, stored in record["aliases"].items():
        c.fqn("a key of aliases", alias, root=False)
        c.fqn(f"aliases[{alias!r:.80}]", stored, root=False)
    if "training" in record:
        c.typed("training", record["training"], (bool,), "true or false")
