"""The shared argument checks: bools refused as numbers, intervals open or closed as asked."""
import math

import numpy as np
import pytest
import torch

from shrinklib import _checks


@pytest.mark.parametrize("value", [True, False, 1.0, "3", None, 0])
def test_check_positive_int_refuses_what_is_not_a_positive_int(value):
    with pytest.raises(ValueError, match=r"blocks must be an int >= 1, got"):
        _checks.check_positive_int("blocks", value)


def test_check_int_bounds_and_default_message():
    assert _checks.check_int("k", 3, minimum=2, maximum=3) == 3
    with pytest.raises(ValueError, match=r"k must be an int from 2 to 3, got 4"):
        _checks.check_int("k", 4, minimum=2, maximum=3)
    with pytest.raises(ValueError, match=r"k must be an int >= 2, got 1"):
        _checks.check_int("k", 1, minimum=2)


@pytest.mark.parametrize("value, ok", [(0, True), (0.5, True), (np.float32(0.25), True), (1, False),
                                       (-0.01, False), (True, False), (math.nan, False), ("0.5", False)])
def test_check_sparsity_is_the_half_open_unit_interval(value, ok):
    if ok:
        assert _checks.check_sparsity(value) == pytest.approx(float(value))
    else:
        with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)"):
            _checks.check_sparsity(value)


def test_check_number_open_bounds_and_default_message():
    with pytest.raises(ValueError, match=r"t must be a number in \(0, inf\], got 0"):
        _checks.check_number("t", 0, low=0, low_open=True)
    assert _checks.check_temperature(2) == 2.0
    with pytest.raises(ValueError, match="temperature must be a number > 0"):
        _checks.check_temperature(0.0)
    with pytest.raises(ValueError, match="alpha must be a number >= 0"):
        _checks.check_weight(-1, "alpha")


def test_check_bool_and_choice():
    assert _checks.check_bool("shuffle", False) is False
    with pytest.raises(TypeError, match="shuffle must be True or False, got 1"):
        _checks.check_bool("shuffle", 1)
    with pytest.raises(ValueError, match="scope must be one of 'layer', 'global', got 'all'"):
        _checks.check_choice("scope", "all", ("layer", "global"))


@pytest.mark.parametrize("x, error, message", [
    ([1.0], TypeError, "must be a torch.Tensor"),
    (torch.empty(0), ValueError, "is empty"),
    (torch.ones(2, dtype=torch.int8), TypeError, "floating-point"),
    (torch.tensor([1.0, math.inf]), ValueError, "inf or nan"),
])
def test_check_tensor_refuses_what_cannot_be_ranged(x, error, message):
    with pytest.raises(error, match=message):
        _checks.check_tensor(x, "w")


def test_type_checks_name_the_argument_and_what_they_got():
    from shrinklib._checks import check_instance, check_iterable, check_mapping, check_module

    layer = torch.nn.Linear(2, 2)
    assert check_module(layer) is layer
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got str"):
        check_module("bert-base-uncased")
    with pytest.raises(TypeError, match="teacher must be a torch.nn.Module, got int"):
        check_module(3, "teacher")
    assert check_mapping("batch", {"a": 1}) == {"a": 1}
    with pytest.raises(TypeError, match=r"batch must be a mapping \(a dict\), got list"):
        check_mapping("batch", [1])
    assert check_iterable("batches", ({"a": 1},)) == ({"a": 1},)
    for bad in ("text", b"bytes", 3, None):
        with pytest.raises(TypeError, match="batches must be an iterable"):
            check_iterable("batches", bad)
    assert check_instance("n", 3, int) == 3
    with pytest.raises(TypeError, match="config must be a dict, got float"):
        check_instance("config", 3.0, dict)


def test_the_unchanged_fixture_sees_every_kind_of_change(unchanged):
    """The fixture that the bad-input tests use must fail on each kind of change it promises to catch."""
    def changes():
        yield lambda m: m[0].weight.data.view(-1)[0].add_(1e-7)  # one bit of one weight
        yield lambda m: m[0].register_buffer("mask", torch.ones(1))  # a tensor added
        yield lambda m: m.__setitem__(1, torch.nn.Identity())  # a module swapped
        yield lambda m: setattr(m[0], "out_features", 5)  # a plain attribute
        yield lambda m: m[0].weight.requires_grad_(False)
        yield lambda m: m.eval()
        yield lambda m: m[0].register_forward_hook(lambda *a: None)
        yield lambda m: vars(m).setdefault("_shrinklib_changes", []).append({"kind": "x"})

    for change in changes():
        model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())
        with pytest.raises(AssertionError):
            with unchanged(model):
                change(model)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())
    with unchanged(model):
        model(torch.randn(2, 3))  # a forward pass changes nothing


def test_numpy_integers_are_ints():
    """A step from np.arange is an int (notebook 1.2 plots the schedule over one); bools are not."""
    assert _checks.check_int("step", np.int64(3), minimum=0) == 3
    assert type(_checks.check_int("step", np.int64(3))) is int
    with pytest.raises(ValueError, match="step must be an int"):
        _checks.check_int("step", np.bool_(True))
    with pytest.raises(ValueError, match="step must be an int"):
        _checks.check_int("step", True)
