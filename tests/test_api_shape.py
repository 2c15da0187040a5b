"""Every transform has DESIGN.md's shape: ``name_(model, ..., *, filter_fn=None) -> model``.

A public function whose name ends in ``_`` changes a model in place and returns it. This
walks the public API of every package and module of ``shrinklib``, so a family added later
cannot drift: model first, ``filter_fn`` keyword-only wherever a transform takes one, the
model returned; module swaps are built by ``from_linear``/``from_embedding``, never an alias.
"""
import importlib
import inspect
import pkgutil

import pytest
from torch import nn

import shrinklib


def _public_modules():
    names = ["shrinklib"] + [m.name for m in pkgutil.walk_packages(shrinklib.__path__, "shrinklib.")
                             if not m.name.rpartition(".")[2].startswith("_")]
    return [importlib.import_module(name) for name in names if name != "shrinklib.__main__"]


def _public_objects():
    seen = {}
    for module in _public_modules():
        names = getattr(module, "__all__", None)
        if names is None:
            names = [n for n, v in vars(module).items()
                     if not n.startswith("_") and getattr(v, "__module__", None) == module.__name__]
        for name in names:
            obj = getattr(module, name)
            seen.setdefault(f"{obj.__module__}.{obj.__qualname__}" if hasattr(obj, "__qualname__") else name, obj)
    return seen


OBJECTS = _public_objects()
TRANSFORMS = {name: f for name, f in OBJECTS.items()
              if inspect.isfunction(f) and f.__name__.endswith("_") and not f.__name__.startswith("_")}
CLASSES = {name: c for name, c in OBJECTS.items() if inspect.isclass(c) and issubclass(c, nn.Module)}


def shape_problems(function) -> list[str]:
    """What is wrong with ``function``'s shape as a transform (empty when nothing is)."""
    signature = inspect.signature(function, eval_str=True)
    params = list(signature.parameters.values())
    problems = []
    if not params or params[0].name != "model":
        problems.append("its first argument is not `model`")
    if "filter_fn" in signature.parameters and signature.parameters["filter_fn"].kind is not inspect.Parameter.KEYWORD_ONLY:
        problems.append("`filter_fn` is not keyword-only")
    returned = signature.return_annotation
    if not (inspect.isclass(returned) and issubclass(returned, nn.Module)):
        problems.append(f"it is not annotated to return the model (-> nn.Module), but {returned!r}")
    return problems


def test_the_walk_finds_the_transforms_of_every_family():
    modules = {f.__module__.split(".")[1] for f in TRANSFORMS.values()}
    assert {"prune", "quant"} <= modules
    assert len(TRANSFORMS) >= 20


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_every_transform_takes_the_model_first_filter_fn_by_keyword_and_returns_the_model(name):
    assert shape_problems(TRANSFORMS[name]) == []


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_module_swaps_are_built_by_from_linear_or_from_embedding(name):
    assert not hasattr(CLASSES[name], "from_float"), f"{name}.from_float: call it from_linear (no aliases)"


def test_the_shape_check_can_fail():
    def history_(model, sparsity, filter_fn=None) -> list:
        return []

    def swapped_(layers, *, filter_fn=None) -> nn.Module:
        return layers

    assert len(shape_problems(history_)) == 2
    assert shape_problems(swapped_) == ["its first argument is not `model`"]
