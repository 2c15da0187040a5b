"""Wall-clock latency of a forward pass: median and interquartile range of repeated calls.

The protocol: ``warmup`` untimed calls (first calls allocate memory and pick kernels),
then ``repeats`` timed ones, each alone, under ``torch.inference_mode`` with
``torch.set_num_threads(threads)`` (the previous setting is restored afterwards); a model
runs in eval mode. We report the median, robust to the occasional slow call that a
shared machine produces, with the interquartile range as its spread; the raw samples
are kept. On a GPU each call is bracketed by ``torch.cuda.synchronize()``.

Latency depends on the machine, the thread count and the input shape: compare numbers
only when all three agree (the results table records the device).
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from shrinklib._checks import check_int, check_number, check_positive_int
from shrinklib.measure.forward import Inputs, call, dummy_inputs, evaluating, model_device


def available_cpus() -> int:
    """CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass(frozen=True)
class Latency:
    """Timings of one function in milliseconds: median, quartiles, and the raw samples."""

    median_ms: float
    iqr_ms: float
    q25_ms: float
    q75_ms: float
    repeats: int
    threads: int
    samples_ms: tuple[float, ...]

    def __post_init__(self):
        for name in ("median_ms", "iqr_ms", "q25_ms", "q75_ms"):
            check_number(name, getattr(self, name), low=0, what="a finite number of milliseconds >= 0")
        check_positive_int("repeats", self.repeats)
        check_positive_int("threads", self.threads)
        if len(self.samples_ms) != self.repeats:
            raise ValueError(f"samples_ms must hold repeats={self.repeats} samples, got {len(self.samples_ms)}")
        if not self.q25_ms <= self.median_ms <= self.q75_ms:
            raise ValueError(
                f"quartiles must bracket the median, got q25_ms={self.q25_ms}, median_ms={self.median_ms}, "
                f"q75_ms={self.q75_ms}"
            )

    @classmethod
    def from_samples(cls, samples_ms, threads: int) -> "Latency":
        samples = tuple(float(s) for s in samples_ms)
        if not samples:
            raise ValueError("samples_ms must hold at least one timing")
        q25, median, q75 = (float(v) for v in np.percentile(samples, [25, 50, 75]))
        return cls(median, q75 - q25, q25, q75, len(samples), threads, samples)

    def __str__(self) -> str:
        return f"{self.median_ms:.2f} ms (IQR {self.iqr_ms:.2f} ms, {self.repeats} runs, {self.threads} threads)"


def latency(
    fn_or_model: Callable | nn.Module,
    inputs: Inputs | None = None,
    *,
    batch_size: int = 1,
    seq_len: int = 128,
    warmup: int = 3,
    repeats: int = 20,
    threads: int = 2,
) -> Latency:
    """Time ``fn_or_model(inputs)`` ``repeats`` times after ``warmup`` calls; see the module docstring.

    ``inputs``: a dict (called as ``**inputs``), a tuple (``*inputs``), one tensor, or
    None. With None, a model gets :func:`~shrinklib.measure.forward.dummy_inputs` of
    ``batch_size`` x ``seq_len`` (token ids and a mask of ones for a model that reads
    tokens) and a plain function is called with no arguments.
    """
    if not callable(fn_or_model):
        raise TypeError(f"fn_or_model must be a model or a callable, got {type(fn_or_model).__name__}")
    check_positive_int("batch_size", batch_size)
    check_positive_int("seq_len", seq_len)
    check_positive_int("repeats", repeats)
    check_positive_int("threads", threads)
    check_int("warmup", warmup, minimum=0)
    if threads > available_cpus():
        raise ValueError(f"threads must be at most the {available_cpus()} CPUs this process may use, got {threads}")

    is_model = isinstance(fn_or_model, nn.Module)
    if is_model and inputs is None:
        inputs = dummy_inputs(fn_or_model, batch_size, seq_len)
    on_gpu = is_model and model_device(fn_or_model).type == "cuda"

    def once():
        return fn_or_model() if inputs is None else call(fn_or_model, inputs)

    def sync():
        if on_gpu:
            torch.cuda.synchronize()

    previous_threads = torch.get_num_threads()
    samples = []
    try:
        torch.set_num_threads(threads)
        with torch.inference_mode(), (evaluating(fn_or_model) if is_model else contextlib.nullcontext()):
            for _ in range(warmup):
                once()
            sync()
            for _ in range(repeats):
                start = time.perf_counter_ns()
                once()
                sync()
                samples.append((time.perf_counter_ns() - start) / 1e6)
    finally:
        torch.set_num_threads(previous_threads)
    return Latency.from_samples(samples, threads)

