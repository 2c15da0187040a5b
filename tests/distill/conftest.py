from types import SimpleNamespace

import pytest
import torch

import shrinklib  # noqa: F401  (first: it sets TRITON_INTERPRET before transformers can load triton)
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

from datasets import Dataset  # noqa: E402

from shrinklib import zoo


@pytest.fixture
def padded_batch():
    """A maker of token batches with padding: row i has width - i real tokens."""

    def make(vocab=50, rows=5, width=7, seed=0):
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(1, vocab, (rows, width), generator=g)
        mask = torch.ones(rows, width, dtype=torch.long)
        for i in range(rows):
            mask[i, width - i:] = 0
        ids[mask == 0] = 0
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.arange(rows) % 2}

    return make


@pytest.fixture(scope="module")
def tokenizer():
    """A 64-word whitespace tokenizer matching ``zoo.tiny_llama``: pad 0, bos 1, eos 2.

    Test modules that need another tokenizer define their own ``tokenizer`` fixture."""
    words = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"] + [f"w{i}" for i in range(60)]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", bos_token="[BOS]",
                                   eos_token="[EOS]", unk_token="[UNK]")


@pytest.fixture
def peaked_llama():
    """A maker of ``tiny_llama`` with larger random weights, so greedy text depends on the
    whole prefix (at the default init it repeats its last token) and left padding would show."""

    def make(seed: int = 1):
        model = zoo.tiny_llama(seed=seed)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim == 2:
                    p.normal_(0, 0.3, generator=g)
        return model

    return make


@pytest.fixture
def distill_kit(tokenizer):
    """What the calls are given: a BERT student and teacher sharing the tokenizer's vocabulary,
    a Llama teacher, the tokenizer and a few valid tensors and batches, models in train mode."""
    teacher = zoo.tiny_bert(vocab_size=64, num_layers=3).train()
    student = zoo.tiny_bert(vocab_size=64, num_layers=2, hidden_size=24, num_heads=2, seed=1).train()
    llama = zoo.tiny_llama(vocab_size=64).train()
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(1, 64, (2, 5), generator=g),
             "attention_mask": torch.ones(2, 5, dtype=torch.long), "labels": torch.tensor([0, 1])}
    return SimpleNamespace(
        teacher=teacher, student=student, llama=llama, tokenizer=tokenizer, batch=batch,
        logits=torch.randn(2, 3, generator=g), seq=torch.randn(1, 2, 5, generator=g),
        ids=torch.zeros(1, 2, 3, dtype=torch.long), top=torch.zeros(1, 2, 3), hidden=torch.randn(2, 5, 8, generator=g),
        mask=torch.ones(2, 5, dtype=torch.long), data=Dataset.from_dict({"text": ["w1 w2", "w3"], "label": [0, 1]}),
        embeddings=torch.randn(64, 8, generator=g),
    )
