"""A bidirectional LSTM sentence classifier, the recurrent model of the book.

Recurrent networks (Hochreiter & Schmidhuber, 1997) read a sentence left to right,
carrying a hidden state; a bidirectional one (Schuster & Paliwal, 1997) reads it both
ways and joins the two. For classification we max-pool the outputs over the real
(unpadded) tokens and apply one linear layer. Its forward pass has the same signature
as a Hugging Face classifier, so ``shrinklib.train`` and ``shrinklib.measure`` treat
both alike.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from shrinklib._checks import check_int, check_number
from shrinklib.rebuild import register_module


@register_module
class BiLSTMClassifier(nn.Module):
    """Embedding -> bidirectional LSTM -> max-pool over tokens -> linear classifier.

    The sizes are ints >= 1, ``pad_token_id`` an int in ``[0, vocab_size)`` and
    ``dropout`` a number in [0, 1).
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 300,
        hidden_size: int = 300,
        num_layers: int = 1,
        num_labels: int = 2,
        pad_token_id: int = 0,
        dropout: float = 0.1,
    ):
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("embed_dim", embed_dim), ("hidden_size", hidden_size),
                            ("num_layers", num_layers), ("num_labels", num_labels)):
            check_int(name, value, minimum=1, what="a positive int")
        check_int("pad_token_id", pad_token_id, minimum=0, maximum=vocab_size - 1)
        check_number("dropout", dropout, low=0, high=1, high_open=True, what="in [0, 1)")
        self._kwargs = dict(vocab_size=vocab_size, embed_dim=embed_dim, hidden_size=hidden_size,
                            num_layers=num_layers, num_labels=num_labels, pad_token_id=pad_token_id, dropout=dropout)
        self.num_labels = num_labels
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_token_id)
        self.lstm = nn.LSTM(embed_dim, hidden_size, num_layers=num_layers, batch_first=True, bidirectional=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * hidden_size, num_labels)

    def rebuild_kwargs(self) -> dict:
        """Constructor arguments, so ``shrinklib.save``/``load`` can rebuild the model."""
        return dict(self._kwargs)

    def forward(self, input_ids, attention_mask=None, labels=None, **unused) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden, _ = self.lstm(self.embedding(input_ids))
        hidden = hidden.masked_fill(~attention_mask.bool().unsqueeze(-1), float("-inf"))
        pooled = hidden.max(dim=1).values
        logits = self.classifier(self.dropout(pooled))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)
