"""Where the time of a forward pass goes: CPU latency broken down by component.

Every module gets a forward pre-hook and a forward hook that read the clock. A
module's *exclusive* time is its own time minus that of its submodules, and it is
charged to the module's component (:func:`~shrinklib.measure.components.component_of`):
the attention scores computed inside ``BertSelfAttention`` itself go to "attention",
its ``query`` Linear also to "attention", the ``LayerNorm`` inside ``attention.output``
to "norms". Glue code of containers lands in "other". The hooks cost a few
microseconds per module, so the hooked total is a little above :func:`latency`'s.
CPU only: a GPU runs asynchronously and would need a synchronization per hook.
"""
from __future__ import annotations

import time

import numpy as np
from torch import nn

from shrinklib.measure.components import COMPONENTS, component_of
from shrinklib.measure.forward import Inputs, call, dummy_inputs, evaluating, model_device
from shrinklib.measure.latency import latency


def latency_by_component(
    model: nn.Module,
    inputs: Inputs | None = None,
    *,
    batch_size: int = 1,
    seq_len: int = 128,
    warmup: int = 2,
    repeats: int = 10,
    threads: int = 2,
) -> dict[str, float]:
    """Median exclusive milliseconds per component over ``repeats`` forward passes.

    The protocol (warm-up, thread count, inference mode) is :func:`latency`'s. The
    result has every component of :data:`COMPONENTS` (0.0 where none ran) and
    ``"total"``, the median of the per-pass sums.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if model_device(model).type != "cpu":
        raise ValueError(f"latency_by_component times CPU models only; this model is on {model_device(model)}")
    if inputs is None:
        inputs = dummy_inputs(model, batch_size, seq_len)

    passes: list[dict[str, float]] = []
    current: dict[str, float] = {}
    stack: list[list[int]] = []  # per open module: [start ns, ns spent in its submodules]

    def pre(module, args):
        stack.append([time.perf_counter_ns(), 0])

    def post_for(component: str):
        def post(module, args, output):
            start, inner = stack.pop()
            elapsed = time.perf_counter_ns() - start
            current[component] = current.get(component, 0.0) + (elapsed - inner) / 1e6
            if stack:
                stack[-1][1] += elapsed

        return post

    handles = []
    for fqn, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post_for(component_of(fqn, module))))

    def one_pass():
        current.clear()
        call(model, inputs)
        passes.append(dict(current))

    try:
        with evaluating(model):
            latency(one_pass, warmup=warmup, repeats=repeats, threads=threads)
    finally:
        for handle in handles:
            handle.remove()
    timed = passes[warmup:]
    result = {c: float(np.median([p.get(c, 0.0) for p in timed])) for c in COMPONENTS}
    result["total"] = float(np.median([sum(p.values()) for p in timed]))
    return result
