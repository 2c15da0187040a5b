"""The BiLSTM classifier: padding never reaches the max-pool, labels give the loss, bad sizes are refused."""
import pytest
import torch

from shrinklib.lstm import BiLSTMClassifier


def test_padding_does_not_change_a_sentences_logits():
    model = BiLSTMClassifier(50, embed_dim=8, hidden_size=6, num_labels=3).eval()
    ids = torch.tensor([[5, 7, 9, 11]])
    padded = torch.tensor([[5, 7, 9, 11, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0]])
    # the forward direction never sees the pads; the backward one starts from them, so only the
    # forward half of the pooled state is pad-free: compare the halves
    out = model(ids).logits
    assert out.shape == (1, 3)
    hidden, _ = model.lstm(model.embedding(ids))
    hidden_padded, _ = model.lstm(model.embedding(padded))
    torch.testing.assert_close(hidden_padded[:, :4, :6], hidden[:, :, :6])
    pooled = hidden_padded.masked_fill(~mask.bool().unsqueeze(-1), float("-inf")).max(1).values
    torch.testing.assert_close(model(padded, attention_mask=mask).logits, model.classifier(pooled))


def test_labels_give_the_cross_entropy_and_rebuild_kwargs_rebuild_it():
    model = BiLSTMClassifier(30, embed_dim=4, hidden_size=5, num_layers=2, dropout=0.0)
    ids, labels = torch.tensor([[1, 2, 3], [4, 5, 6]]), torch.tensor([0, 1])
    out = model(ids, labels=labels)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    twin = BiLSTMClassifier(**model.rebuild_kwargs())
    twin.load_state_dict(model.state_dict())
    torch.testing.assert_close(twin(ids).logits, model(ids).logits)


@pytest.mark.parametrize("kwargs, message", [
    ({"vocab_size": 0}, "vocab_size must be a positive int, got 0"),
    ({"vocab_size": True}, "vocab_size must be a positive int, got True"),
    ({"vocab_size": 9, "hidden_size": 2.0}, "hidden_size must be a positive int"),
    ({"vocab_size": 9, "dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
    ({"vocab_size": 9, "dropout": float("nan")}, r"dropout must be in \[0, 1\), got nan"),
    ({"vocab_size": 9, "pad_token_id": 9}, "pad_token_id must be an int from 0 to 8, got 9"),
    ({"vocab_size": 9, "pad_token_id": "0"}, "pad_token_id must be an int from 0 to 8, got '0'"),
])
def test_bad_sizes_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BiLSTMClassifier(**kwargs)
