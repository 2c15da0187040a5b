from fractions import Fraction

import pytest

from shrinklib.distill.layer_map import check_layer_map, layer_map


@pytest.mark.parametrize("s, n", [(1, 1), (1, 5), (2, 4), (3, 12), (4, 6), (4, 12), (5, 7), (6, 12), (7, 7)])
def test_uniform_is_m_times_n_over_s_rounded_half_up(s, n):
    expected = []
    for m in range(1, s + 1):
        exact = Fraction(m * n, s)
        expected.append(int(exact) + (1 if exact - int(exact) >= Fraction(1, 2) else 0))
    got = layer_map(s, n)
    assert got == tuple(expected)
    assert got[-1] == n and all(1 <= g <= n for g in got) and list(got) == sorted(set(got))


def test_the_papers_maps():
    assert layer_map(4, 12) == (3, 6, 9, 12)  # TinyBERT-4 from BERT-base
    assert layer_map(6, 12) == (2, 4, 6, 8, 10, 12)  # PKD-Skip: Sun et al. use {2, 4, 6, 8, 10} + the output
    assert layer_map(6, 12, "last") == (7, 8, 9, 10, 11, 12)  # PKD-Last: {7, ..., 11} + the output
    assert layer_map(3, 6, "first") == (1, 2, 3)
    assert layer_map(4, 6) == (2, 3, 5, 6)  # 1.5 -> 2, 4.5 -> 5 (half up, not to even)
    assert layer_map(3, 3, "last") == layer_map(3, 3, "first") == layer_map(3, 3) == (1, 2, 3)


def test_check_layer_map_accepts_any_in_range_map():
    assert check_layer_map([0, 4, 2], 3, 4) == (0, 4, 2)
    assert check_layer_map((1,), 1, 1) == (1,)


def test_bad_input():
    with pytest.raises(ValueError, match="strategy must be one of"):
        layer_map(2, 4, "skip")
    with pytest.raises(ValueError, match="student_layers must be a positive int"):
        layer_map(0, 4)
    with pytest.raises(ValueError, match="teacher_layers must be a positive int"):
        layer_map(2, 4.0)
    with pytest.raises(ValueError, match=r"student_layers \(5\) must be <= teacher_layers \(4\)"):
        layer_map(5, 4)
    with pytest.raises(ValueError, match="past the teacher's depth"):
        check_layer_map((2, 5), 2, 4)
    with pytest.raises(ValueError, match="must be >= 0"):
        check_layer_map((-1, 4), 2, 4)
    with pytest.raises(ValueError, match="one teacher layer per student layer"):
        check_layer_map((2, 4), 3, 4)
    with pytest.raises(TypeError, match="layer_map must be a tuple or list"):
        check_layer_map(range(2), 2, 4)
    with pytest.raises(TypeError, match=r"layer_map\[1\] must be an int"):
        check_layer_map((1, 2.0), 2, 4)
    with pytest.raises(ValueError, match="teacher_layers must be a positive int"):
        check_layer_map((1,), 1, True)
