"""Gradual pruning during training with the cubic schedule of Zhu & Gupta (2017).

"To prune, or not to prune" (Zhu & Gupta, 2017) raises the sparsity from an initial
``s_i`` to a final ``s_f`` over the steps ``t_0 .. t_0 + n*dt`` as

    s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (n * dt)) ** 3,

pruning fast while many redundant weights remain and slowly as the network has fewer
to spare, while training goes on and recovers. :class:`GradualMagnitude` is a
``shrinklib.train.fit`` callback that prunes by magnitude to ``s_t`` every ``every``
steps and keeps pruned weights at zero after every step.
"""
from __future__ import annotations

from shrinklib._checks import check_int, check_module, check_number, check_sparsity, is_int
from shrinklib.prune.magnitude import SCOPES, magnitude_, prunable_weights
from shrinklib.prune.masks import apply_masks_
from shrinklib.utils import FilterFn


def cubic_sparsity(step: int, *, final: float, end: int, initial: float = 0.0, start: int = 0) -> float:
    """Target sparsity at ``step``: ``initial`` up to ``start``, ``final`` from ``end`` on, cubic between.

    ``step`` is a finite number, ``initial``/``final`` in [0, 1), ``start``/``end`` ints with 0 <= start < end.
    """
    initial, final = check_sparsity(initial), check_sparsity(final)
    if not (is_int(start) and is_int(end)) or not 0 <= start < end:
        raise ValueError(f"start and end must be ints with 0 <= start < end, got start={start!r}, end={end!r}")
    check_number("step", step, what="a finite number (an optimizer step)")
    if step <= start:
        return initial
    if step >= end:
        return final
    return final + (initial - final) * (1 - (step - start) / (end - start)) ** 3


class GradualMagnitude:
    """Callback for ``shrinklib.train.fit``: magnitude pruning on the cubic schedule.

    ``GradualMagnitude(model, final_sparsity=0.9, start_step=50, end_step=400)`` prunes at
    ``start_step`` and every ``every`` steps after it until ``end_step``, and re-applies
    the masks after every optimizer step so pruned weights stay at zero.
    """

    def __init__(self, model, final_sparsity: float, *, start_step: int, end_step: int, every: int = 10,
                 initial_sparsity: float = 0.0, scope: str = "global", filter_fn: FilterFn | None = None):
        check_module(model)
        cubic_sparsity(start_step, final=final_sparsity, initial=initial_sparsity, start=start_step, end=end_step)
        check_int("every", every, minimum=1, what="a positive int")
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
        prunable_weights(model, filter_fn)  # refuse a model with nothing to prune now, not mid-training
        self.model, self.final, self.initial = model, final_sparsity, initial_sparsity
        self.start, self.end, self.every, self.scope, self.filter_fn = start_step, end_step, every, scope, filter_fn
        self.history: list[tuple[int, float]] = []  # (step, sparsity pruned to)

    def target(self, step: int) -> float:
        return cubic_sparsity(step, final=self.final, initial=self.initial, start=self.start, end=self.end)

    def __call__(self, state) -> None:
        step = state.step
        due = self.start <= step <= self.end and ((step - self.start) % self.every == 0 or step == self.end)
        if due:
            sparsity = self.target(step)
            magnitude_(self.model, sparsity, scope=self.scope, filter_fn=self.filter_fn)
            self.history.append((step, sparsity))
        apply_masks_(self.model)
