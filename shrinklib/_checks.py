"""Argument checks every family shares.

DESIGN.md's rule for bad input: a ``ValueError``/``TypeError`` that names the argument,
the value and what is allowed; nothing silently clamped. These functions are that rule
written once. Each returns the checked value (as ``int``/``float`` where it converts), so a
caller writes ``self.sparsity = check_sparsity(sparsity)``.

``bool`` is a subclass of ``int`` in Python, so ``True`` would pass ``isinstance(x, int)``;
every number check here refuses it, which is why callers never write that guard themselves.
The ``what`` argument keeps each message in the words its module always used
("a number in [0, 1)", "an int >= 1"); the default says the same thing more generically.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from numbers import Integral, Real

import torch


def is_int(value) -> bool:
    """``True`` for an integer (``int``, a NumPy integer) that is not a ``bool``."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_number(value) -> bool:
    """``True`` for a real number (int, float, numpy scalar) that is not a ``bool``."""
    return isinstance(value, Real) and not isinstance(value, bool)


def check_int(name: str, value, *, minimum: int | None = None, maximum: int | None = None,
              what: str | None = None) -> int:
    """``value`` if it is an int (not a bool) within ``[minimum, maximum]``, else ``ValueError``."""
    if (not is_int(value) or (minimum is not None and value < minimum)
            or (maximum is not None and value > maximum)):
        if what is None:
            if minimum is not None and maximum is not None:
                what = f"an int from {minimum} to {maximum}"
            else:
                bound = "" if minimum is None and maximum is None else f" >= {minimum}" if maximum is None else f" <= {maximum}"
                what = f"an int{bound}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def check_positive_int(name: str, value) -> int:
    """``value`` if it is an int >= 1, else a ValueError naming ``name``."""
    return check_int(name, value, minimum=1, what="an int >= 1")


def check_number(name: str, value, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, what: str | None = None) -> float:
    """``float(value)`` if it is a finite real number (not a bool) in the stated interval.

    ``low``/``high`` are the bounds, closed unless ``low_open``/``high_open``: ``low=0,
    high=1, high_open=True`` is ``[0, 1)``. A nan is never in an interval.
    """
    inside = is_number(value) and math.isfinite(value)
    if inside and low is not None:
        inside = value > low if low_open else value >= low
    if inside and high is not None:
        inside = value < high if high_open else value <= high
    if not inside:
        if what is None:
            left = "(" if low_open else "["
            right = ")" if high_open else "]"
            lo = "-inf" if low is None else f"{low:g}"
            hi = "inf" if high is None else f"{high:g}"
            what = f"a number in {left}{lo}, {hi}{right}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return float(value)


def check_bool(name: str, value) -> bool:
    """``value`` if it is a ``bool`` (not 0/1 or a string), else ``TypeError``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_choice(name: str, value, allowed: Iterable) -> object:
    """``value`` if it is one of ``allowed``, else ``ValueError`` listing them."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def check_sparsity(sparsity) -> float:
    """The fraction of weights to remove: a number in ``[0, 1)`` (1 would remove everything)."""
    return check_number("sparsity", sparsity, low=0, high=1, high_open=True, what="a number in [0, 1)")


def check_temperature(temperature) -> float:
    """A softmax temperature: a number > 0."""
    return check_number("temperature", temperature, low=0, low_open=True, what="a number > 0")


def check_weight(weight, name: str = "weight") -> float:
    """A loss weight: a number >= 0."""
    return check_number(name, weight, low=0, what="a number >= 0")


def check_tensor(x, name: str = "x") -> torch.Tensor:
    """``x`` if it is a non-empty, finite, floating-point tensor (what a quantizer can range)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty: there is nothing to choose a range from")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} holds inf or nan; a quantization range needs finite values")
    return x


def _type_names(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join(f"{t.__module__}.{t.__qualname__}" if t.__module__ not in ("builtins",) else t.__name__
                       for t in types)


def check_instance(name: str, value, types, *, what: str | None = None):
    """``value`` if it is an instance of ``types``, else ``TypeError`` naming ``name`` and what it got."""
    if not isinstance(value, types):
        raise TypeError(f"{name} must be {what or 'a ' + _type_names(types)}, got {type(value).__name__}")
    return value


def check_module(value, name: str = "model") -> torch.nn.Module:
    """``value`` if it is a ``torch.nn.Module`` (a model, a layer), else ``TypeError``."""
    return check_instance(name, value, torch.nn.Module, what="a torch.nn.Module")


def check_mapping(name: str, value) -> Mapping:
    """``value`` if it is a mapping (a dict, a tokenizer's ``BatchEncoding``), else ``TypeError``."""
    return check_instance(name, value, Mapping, what="a mapping (a dict)")


def check_iterable(name: str, value, *, what: str = "an iterable (a list, a DataLoader)"):
    """``value`` if it can be iterated and is not a string or bytes (a list of batches, of texts,
    a DataLoader), else ``TypeError``: a string would iterate character by character."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
    return value
