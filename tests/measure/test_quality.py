import math

import numpy as np
import pytest
import torch
from datasets import Dataset
from torch import nn

from shrinklib.measure import Accuracy, accuracy, bootstrap_ci, correctness, perplexity, predict_logits

TEXTS = ["a fine film", "dull", "an utterly wonderful and moving story", "bad", "ok I guess",
         "great", "boring and long", "superb acting", "meh", "the worst"]
LABELS = [1, 0, 1, 0, 1, 1, 0, 1, 0, 0]


class FirstTokenParity(nn.Module):
    """Predicts class (first token id) % 2: a classifier whose answers we know."""

    def forward(self, input_ids, attention_mask=None):
        logits = torch.zeros(input_ids.shape[0], 2)
        logits[torch.arange(input_ids.shape[0]), input_ids[:, 0] % 2] = 1.0
        return type("Out", (), {"logits": logits})()


def test_dynamic_padding_matches_one_by_one(bert, tokenizer):
    logits = predict_logits(bert, Dataset.from_dict({"text": TEXTS, "label": LABELS}), tokenizer, batch_size=3)
    assert logits.shape == (10, 2) and logits.dtype == torch.float32
    with torch.no_grad():
        for i, text in enumerate(TEXTS):
            one = bert(input_ids=torch.tensor([tokenizer.encode(text)])).logits[0]
            torch.testing.assert_close(logits[i], one, atol=1e-5, rtol=1e-5)


def test_pretokenized_and_dict_datasets_agree(bert, tokenizer):
    from_text = predict_logits(bert, {"text": TEXTS}, tokenizer, batch_size=4)
    ids = [tokenizer.encode(t) for t in TEXTS]
    from_ids = predict_logits(bert, Dataset.from_dict({"input_ids": ids}), batch_size=4)
    torch.testing.assert_close(from_text, from_ids)


def test_accuracy_of_a_known_classifier(tokenizer):
    data = {"text": TEXTS, "label": LABELS}
    predicted = [tokenizer.encode(t)[0] % 2 for t in TEXTS]
    expected = np.mean(np.equal(predicted, LABELS))
    result = accuracy(FirstTokenParity(), data, tokenizer, batch_size=4)
    assert isinstance(result, Accuracy) and result.n == 10
    assert result.value == pytest.approx(expected)
    assert result.low <= result.value <= result.high
    assert (result.low, result.high) == bootstrap_ci(np.equal(predicted, LABELS).astype(float))


def test_correctness_sentence_by_sentence(bert, tokenizer):
    data = {"text": TEXTS, "label": LABELS}
    predicted = [tokenizer.encode(t)[0] % 2 for t in TEXTS]
    correct = correctness(FirstTokenParity(), data, tokenizer, batch_size=3)
    assert correct.dtype == np.float64 and correct.tolist() == [float(p == l) for p, l in zip(predicted, LABELS)]
    by_hand = (predict_logits(bert, data, tokenizer).argmax(1) == torch.tensor(LABELS)).double().numpy()
    np.testing.assert_array_equal(correctness(bert, Dataset.from_dict(data), tokenizer), by_hand)
    assert accuracy(bert, data, tokenizer).value == by_hand.mean()
    with pytest.raises(ValueError, match="dataset must have a 'label' column, got columns \\['text'\\]"):
        correctness(bert, {"text": TEXTS}, tokenizer)
    with pytest.raises(ValueError, match="labels must lie in \\[0, 2\\) for a model with 2 outputs, got labels in \\[0, 5\\]"):
        correctness(bert, {"text": TEXTS, "label": [5] + LABELS[1:]}, tokenizer)


def test_perplexity_by_hand(llama, tokenizer):
    text = "To be, or not to be, that is the question: whether 'tis nobler"  # 64 characters
    ids = tokenizer.encode(text)
    blocks = [ids[i : i + 16] for i in range(0, len(ids), 16)]
    total, count = 0.0, 0
    with torch.no_grad():
        for block in blocks:
            x = torch.tensor([block])
            total += llama(input_ids=x, labels=x).loss.item() * (len(block) - 1)
            count += len(block) - 1
    assert perplexity(llama, tokenizer, text, block_size=16) == pytest.approx(math.exp(total / count), rel=1e-5)
    with torch.no_grad():
        x = torch.tensor([blocks[0]])
        first = math.exp(llama(input_ids=x, labels=x).loss.item())
    assert perplexity(llama, tokenizer, text, block_size=16, max_blocks=1) == pytest.approx(first, rel=1e-5)


def test_bad_input(bert, llama, tokenizer):
    with pytest.raises(ValueError, match="tokenizer is required"):
        predict_logits(bert, {"text": TEXTS})
    with pytest.raises(ValueError, match="must have a 'text' or an 'input_ids' column, got columns \\['sentence'\\]"):
        predict_logits(bert, {"sentence": TEXTS}, tokenizer)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        predict_logits(bert, {"text": TEXTS}, tokenizer, batch_size=0)
    with pytest.raises(ValueError, match="must have a 'label' column"):
        accuracy(bert, {"text": TEXTS}, tokenizer)
    with pytest.raises(ValueError, match="labels must lie in \\[0, 2\\)"):
        accuracy(bert, {"text": TEXTS, "label": [3] * 10}, tokenizer)
    with pytest.raises(ValueError, match="block_size must be an int >= 2, got 1"):
        perplexity(llama, tokenizer, "hello", block_size=1)
    with pytest.raises(ValueError, match="text must give at least 2 tokens to score, got 1"):
        perplexity(llama, tokenizer, "h", block_size=16)
    with pytest.raises(ValueError, match="max_blocks must be an int >= 1, got 0"):
        perplexity(llama, tokenizer, "hello", block_size=16, max_blocks=0)
    with pytest.raises(ValueError, match="block_size must be at most the model's max_position_embeddings=128"):
        perplexity(llama, tokenizer, "hello", block_size=256)
