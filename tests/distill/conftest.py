import pytest
import torch


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
