import time

import pytest
import torch
from torch import nn

from shrinklib.measure import COMPONENTS, latency_by_component

from .conftest import make_bert


class _Sleeps(nn.Module):
    def __init__(self, seconds: float, child: nn.Module | None = None):
        super().__init__()
        self.seconds, self.child = seconds, child

    def forward(self, x):
        time.sleep(self.seconds)
        return self.child(x) if self.child is not None else x


class _Model(nn.Module):
    """An 'ffn' block that sleeps 10 ms itself and holds an 'attention' block that sleeps 30 ms."""

    def __init__(self):
        super().__init__()
        self.ffn = _Sleeps(0.010, child=nn.Sequential())
        self.ffn.child.add_module("attention", _Sleeps(0.030))

    def forward(self, x):
        return self.ffn(x)


def test_time_is_charged_exclusively_to_each_modules_component():
    times = latency_by_component(_Model(), (torch.zeros(1),), warmup=1, repeats=3, threads=1)
    assert set(times) == set(COMPONENTS) | {"total"}
    assert 29 < times["attention"] < 45  # the child's own 30 ms
    assert 9 < times["ffn"] < 20  # 10 ms, not the 40 ms the block takes with its child
    assert times["recurrent"] == 0.0
    assert abs(times["total"] - sum(times[c] for c in COMPONENTS)) < 5


def test_bert_time_splits_over_its_components_and_hooks_are_removed():
    model = make_bert()
    times = latency_by_component(model, seq_len=16, warmup=1, repeats=3, threads=1)
    for component in ("embeddings", "attention", "ffn", "norms", "head"):
        assert times[component] > 0, component
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert not model.training


def test_bad_input():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        latency_by_component(lambda x: x)
