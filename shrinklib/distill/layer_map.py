"""Layer maps: which teacher layer each student layer learns from.

A student with ``S`` layers distilled from a teacher with ``N`` layers needs a map
``g: {1..S} -> {0..N}`` in the numbering of ``outputs.hidden_states`` (0 is the
embedding output, ``n`` the output of layer ``n``). Three strategies are common:

* ``"uniform"``: ``g(m) = m * N / S`` (Jiao et al., 2020, "TinyBERT: Distilling BERT for
  Natural Language Understanding"), rounded half up when ``S`` does not divide ``N``;
  it spreads the student over the whole depth and always ends on the teacher's last
  layer. For Patient KD this is **PKD-Skip** (Sun et al., 2019, "Patient Knowledge
  Distillation for BERT Model Compression"): every ``N/S``-th layer.
* ``"last"``: **PKD-Last**, the last ``S`` teacher layers ``N-S+1 .. N`` (Sun et al., 2019).
* ``"first"``: the first ``S`` layers ``1 .. S``.

Sun et al. found PKD-Skip slightly better than PKD-Last on GLUE: the lower layers carry
information the top layers have already abstracted away.
"""
from __future__ import annotations

from typing import Sequence

from shrinklib._checks import check_choice, check_int, is_int

STRATEGIES = ("uniform", "last", "first")


def layer_map(student_layers: int, teacher_layers: int, strategy: str = "uniform") -> tuple[int, ...]:
    """The teacher layer (``hidden_states`` numbering, 1..N) for each student layer 1..S.

    ``layer_map(6, 12)`` is ``(2, 4, 6, 8, 10, 12)``; ``layer_map(4, 6)`` is
    ``(2, 3, 5, 6)`` (``m * 6 / 4`` rounded half up); ``layer_map(3, 12, "last")`` is
    ``(10, 11, 12)``. A student deeper than its teacher is refused.
    """
    student_layers = check_int("student_layers", student_layers, minimum=1, what="a positive int")
    teacher_layers = check_int("teacher_layers", teacher_layers, minimum=1, what="a positive int")
    strategy = check_choice("strategy", strategy, STRATEGIES)
    if student_layers > teacher_layers:
        raise ValueError(f"student_layers ({student_layers}) must be <= teacher_layers ({teacher_layers}): "
                         "each student layer learns from a teacher layer of its own")
    s, n = student_layers, teacher_layers
    if strategy == "uniform":
        # round(m * n / s) with halves rounded up, in integers: floor((2 m n + s) / (2 s)).
        return tuple((2 * m * n + s) // (2 * s) for m in range(1, s + 1))
    if strategy == "last":
        return tuple(range(n - s + 1, n + 1))
    return tuple(range(1, s + 1))


def check_layer_map(mapping: Sequence[int], student_layers: int, teacher_layers: int) -> tuple[int, ...]:
    """Validate a user-given map (one teacher layer in 0..N per student layer) and return it as a tuple.

    0 (the teacher's embedding output) is allowed; the map need not be increasing
    (TinyBERT's experiments try several). Raises ``TypeError`` for a map that is not a
    tuple/list of ints and ``ValueError`` for a wrong length or a layer out of range.
    """
    student_layers = check_int("student_layers", student_layers, minimum=1, what="a positive int")
    teacher_layers = check_int("teacher_layers", teacher_layers, minimum=1, what="a positive int")
    if not isinstance(mapping, (tuple, list)):
        raise TypeError(f"layer_map must be a tuple or list of ints, got {type(mapping).__name__}")
    if len(mapping) != student_layers:
        raise ValueError(f"layer_map must give one teacher layer per student layer ({student_layers}), "
                         f"got {len(mapping)}: {tuple(mapping)!r}")
    for m, g in enumerate(mapping, start=1):
        if not is_int(g):
            raise TypeError(f"layer_map[{m - 1}] must be an int, got {g!r}")
        if g < 0:
            raise ValueError(f"layer_map[{m - 1}] = {g} must be >= 0 (0 is the embedding output)")
        if g > teacher_layers:
            raise ValueError(f"layer_map[{m - 1}] = {g} is past the teacher's depth: the teacher has "
                             f"{teacher_layers} layers, so allowed values are 0..{teacher_layers}")
    return tuple(mapping)
