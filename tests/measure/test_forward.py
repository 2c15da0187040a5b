import pytest
import torch
from torch import nn

from shrinklib.measure import dummy_inputs, evaluating
from shrinklib.measure.forward import call


def test_token_models_get_valid_ids_and_a_mask(bert, bilstm):
    inputs = dummy_inputs(bert, 3, 17)
    assert set(inputs) == {"input_ids", "attention_mask"}
    ids = inputs["input_ids"]
    assert ids.shape == (3, 17) and ids.dtype == torch.long
    assert ids.min() >= 0 and ids.max() < 100 and not (ids == bert.config.pad_token_id).any()
    assert torch.equal(inputs["attention_mask"], torch.ones_like(ids))
    assert torch.equal(ids, dummy_inputs(bert, 3, 17)["input_ids"])  # seeded
    lstm_ids = dummy_inputs(bilstm, 2, 5)["input_ids"]
    assert lstm_ids.max() < 50 and not (lstm_ids == 0).any()  # 0 is the BiLSTM's padding_idx


def test_plain_modules_get_tensors():
    (x,) = dummy_inputs(nn.Sequential(nn.Linear(7, 3), nn.ReLU()), 2, 5)
    assert x.shape == (2, 5, 7) and x.is_floating_point()
    (ids,) = dummy_inputs(nn.Sequential(nn.Embedding(11, 4), nn.Linear(4, 2)), 2, 5)
    assert ids.dtype == torch.long and ids.max() < 11
    (seq_first,) = dummy_inputs(nn.LSTM(3, 4), 2, 5)
    assert seq_first.shape == (5, 2, 3)


def test_evaluating_restores_each_mode(bert):
    bert.train()
    bert.bert.pooler.eval()
    with evaluating(bert):
        assert not any(m.training for m in bert.modules())
    assert bert.training and bert.bert.encoder.training and not bert.bert.pooler.training


def test_call_dispatches_on_the_form_of_inputs():
    f = nn.Bilinear(2, 3, 4)
    a, b = torch.randn(5, 2), torch.randn(5, 3)
    assert torch.equal(call(f, (a, b)), f(a, b))
    assert torch.equal(call(f, {"input1": a, "input2": b}), f(a, b))
    lin = nn.Linear(2, 2)
    assert torch.equal(call(lin, a), lin(a))


def test_bad_input(bert):
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        dummy_inputs(bert, 0, 8)
    with pytest.raises(ValueError, match="seq_len must be at most the model's max_position_embeddings=128, got 129"):
        dummy_inputs(bert, 1, 129)
    with pytest.raises(TypeError, match="cannot guess the inputs of a ReLU"):
        dummy_inputs(nn.ReLU())
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        dummy_inputs(lambda x: x)
