"""Tiny models and a toy tokenizer for the measurement tests (no model hub, no zoo)."""
from __future__ import annotations

import pytest
import torch
import transformers

VOCAB = 100


class ToyTokenizer:
    """Characters to ids 1..VOCAB-1 (0 is padding), in the two call forms the library uses."""

    pad_token_id = 0

    def encode(self, text: str) -> list[int]:
        return [ord(c) % (VOCAB - 1) + 1 for c in text]

    def __call__(self, text, padding=False, truncation=False, max_length=None, return_tensors=None):
        if isinstance(text, str):
            return {"input_ids": self.encode(text)}
        rows = [self.encode(t)[: max_length if truncation and max_length else None] for t in text]
        longest = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), longest, dtype=torch.long)
        mask = torch.zeros(len(rows), longest, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return {"input_ids": ids, "attention_mask": mask}


def make_bert(**overrides) -> transformers.BertForSequenceClassification:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        num_labels=2, max_position_embeddings=128, **overrides,
    )
    return transformers.BertForSequenceClassification(config).eval()


def make_llama(tie: bool = False) -> transformers.LlamaForCausalLM:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=tie,
    )
    return transformers.LlamaForCausalLM(config).eval()


@pytest.fixture
def bert():
    return make_bert()


@pytest.fixture
def llama():
    return make_llama()


@pytest.fixture
def bilstm():
    from shrinklib.lstm import BiLSTMClassifier

    torch.manual_seed(0)
    return BiLSTMClassifier(vocab_size=50, embed_dim=8, hidden_size=6, num_layers=2, num_labels=2).eval()


@pytest.fixture
def tokenizer():
    return ToyTokenizer()
