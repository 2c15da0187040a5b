import pytest

from shrinklib.quant.configs import Int8Dynamic, Int8Static, LLMInt8, WeightOnly


def test_configs_are_frozen_values():
    assert WeightOnly() == WeightOnly(8, None, True) and hash(WeightOnly(4, 32)) == hash(WeightOnly(4, 32))
    assert Int8Static() == Int8Static("minmax", 99.99) and LLMInt8().threshold == 6.0 and Int8Dynamic() == Int8Dynamic()
    with pytest.raises(AttributeError):
        WeightOnly().bits = 4


def test_bad_input():
    with pytest.raises(ValueError, match="group_size must be a positive integer"):
        WeightOnly(4, 0)
    with pytest.raises(ValueError, match="bits must be an integer from 2 to 8"):
        WeightOnly(16)
    with pytest.raises(ValueError, match="bits must be an integer from 2 to 8"):
        WeightOnly(True)
    with pytest.raises(ValueError, match="method must be one of"):
        Int8Static("max")
    with pytest.raises(ValueError, match="threshold must be > 0"):
        LLMInt8(0)
