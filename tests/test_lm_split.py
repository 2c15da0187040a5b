import pytest
import torch

from shrinklib import data, zoo


@pytest.fixture(scope="module")
def tokenizer():
    return zoo.encoder()[1]


def test_lm_split_is_the_two_halves_set_up_by_hand(tokenizer):
    split = data.lm_split(tokenizer, "hamlet", block_size=64, calibration_blocks=5, max_chars=20_000)
    by_hand = data.lm_blocks(data.lm_text("hamlet", "calibration")[:20_000], tokenizer, block_size=64, max_blocks=5)
    assert split.calibration.shape == (5, 64) and torch.equal(split.calibration, by_hand)
    assert split.evaluation == data.lm_text("hamlet", "evaluation")[:20_000]
    calibration, evaluation = split  # a named tuple: unpacks in order
    assert evaluation is split.evaluation and calibration is split.calibration
    assert data.lm_text("hamlet").startswith(data.lm_text("hamlet", "calibration"))
    assert data.lm_text("hamlet", "evaluation").startswith(evaluation)  # held out: from the other half
    whole = data.lm_split(tokenizer, "hamlet", block_size=64, calibration_blocks=1, max_chars=None)
    assert whole.evaluation == data.lm_text("hamlet", "evaluation")


def test_lm_split_defaults_are_the_bbc_set_up_of_the_llm_chapters(tokenizer):
    split = data.lm_split(tokenizer)
    by_hand = data.lm_blocks(data.lm_text("bbc_news", "calibration")[:100_000], tokenizer, block_size=256,
                             max_blocks=8)
    assert torch.equal(split.calibration, by_hand)
    assert split.evaluation == data.lm_text("bbc_news", "evaluation")[:100_000]


def test_bad_input(tokenizer):
    with pytest.raises(ValueError, match="calibration_blocks must be an int >= 1, got 0"):
        data.lm_split(tokenizer, "hamlet", calibration_blocks=0)
    with pytest.raises(ValueError, match="max_chars must be an int >= 1, got 0"):
        data.lm_split(tokenizer, "hamlet", max_chars=0)
    with pytest.raises(ValueError, match="unknown lm_text name 'wiki'"):
        data.lm_split(tokenizer, "wiki")
    with pytest.raises(ValueError, match="the calibration half of 'hamlet' holds only 1 x 64 tokens within "
                                         "max_chars=500, fewer blocks than calibration_blocks=8"):
        data.lm_split(tokenizer, "hamlet", block_size=64, max_chars=500)
