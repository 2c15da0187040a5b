"""Test-wide settings (nothing reaches a model hub, plots draw off-screen, threads wait passively)
and the `unchanged` fixture that every bad-input test of a transform uses."""
import contextlib
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# Notebook kernels started by this session inherit it: two notebooks on two cores must
# not spin-wait on each other's OpenMP threads (see the Makefile).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def model_snapshot(model: torch.nn.Module) -> dict:
    """Everything a transform could change on ``model``, copied: the module tree (names and
    classes), every tensor's bits, dtype, shape and ``requires_grad``, each module's plain
    attributes (head counts, sizes, flags), its hooks, the training flag, a Hugging Face
    config and the change records that ``shrinklib.save`` writes."""
    plain = (bool, int, float, str, tuple, type(None))
    modules = {}
    for fqn, module in model.named_modules(remove_duplicate=False):
        modules[fqn] = {
            "class": type(module),
            "training": module.training,
            "attributes": {k: v for k, v in vars(module).items() if isinstance(v, plain)},
            "hooks": tuple(len(getattr(module, h)) for h in (
                "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_state_dict_hooks")),
            "parametrized": hasattr(module, "parametrizations"),
        }
    tensors = {}
    for name, t in model.state_dict(keep_vars=True).items():
        data = t.detach()
        tensors[name] = (data.dtype, tuple(data.shape), t.requires_grad,
                         data.reshape(-1).view(torch.uint8).clone() if data.numel() else None)
    config = getattr(model, "config", None)
    return {"modules": modules, "tensors": tensors,
            "config": config.to_dict() if hasattr(config, "to_dict") else None,
            "changes": [dict(c) for c in vars(model).get("_shrinklib_changes", [])]}


@contextlib.contextmanager
def _unchanged(model: torch.nn.Module):
    before = model_snapshot(model)
    yield model
    after = model_snapshot(model)
    assert after["modules"].keys() == before["modules"].keys(), "the module tree changed"
    for fqn, seen in before["modules"].items():
        assert after["modules"][fqn] == seen, f"module {fqn or '<root>'!r} changed"
    assert after["tensors"].keys() == before["tensors"].keys(), "tensors were added or removed"
    for name, (dtype, shape, grad, bits) in before["tensors"].items():
        dtype2, shape2, grad2, bits2 = after["tensors"][name]
        assert (dtype2, shape2, grad2) == (dtype, shape, grad), f"{name} changed dtype, shape or requires_grad"
        assert (bits is None) == (bits2 is None) and (bits is None or torch.equal(bits, bits2)), f"{name} changed"
    assert after["config"] == before["config"], "the model's config changed"
    assert after["changes"] == before["changes"], "change records were added"


@pytest.fixture
def unchanged():
    """``with unchanged(model): <a call that must fail>``: asserts that the call left ``model``
    bit-identical (see :func:`model_snapshot`); a failed transform must not half-change a model."""
    return _unchanged
