import os

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from shrinklib.measure import size_in_memory, size_on_disk

from .conftest import make_llama


def _payload(model) -> int:
    seen, total = set(), 0
    for t in model.state_dict().values():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def test_matches_the_file_shrinklib_save_writes(bert, tmp_path):
    import shrinklib

    shrinklib.save(bert, tmp_path / "saved")
    assert size_on_disk(bert) == (tmp_path / "saved" / "model.safetensors").stat().st_size


def test_is_the_safetensors_state_dict(bert, tmp_path):
    # What counts is the weights file: the plain safetensors file of the state dict.
    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in bert.state_dict().items()}, str(path), metadata={"format": "pt"})
    assert size_on_disk(bert) == os.path.getsize(path)
    payload = _payload(bert)
    assert payload < size_on_disk(bert) < payload + 20_000  # the JSON header is small


def test_half_precision_halves_it_and_ties_count_once(llama):
    full = size_on_disk(llama)
    assert size_on_disk(llama.half()) == pytest.approx(full / 2, rel=0.05)
    tied = make_llama(tie=True)
    assert size_on_disk(llama.float()) - size_on_disk(tied) == pytest.approx(100 * 32 * 4, abs=200)


def test_plain_modules(bilstm):
    assert size_on_disk(bilstm) > 4 * sum(p.numel() for p in bilstm.parameters())
    seq = nn.Sequential(nn.Linear(7, 13), nn.ReLU(), nn.Linear(13, 5))
    assert size_on_disk(seq) > 4 * (7 * 13 + 13 + 13 * 5 + 5)


def test_in_memory_counts_storages_once(bert):
    expected = sum(p.numel() * 4 for p in bert.parameters()) + sum(b.numel() * b.element_size() for b in bert.buffers())
    assert size_in_memory(bert) == expected
    tied = make_llama(tie=True)
    untied = make_llama(tie=False)
    assert size_in_memory(untied) - size_in_memory(tied) == 100 * 32 * 4

    class Views(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("whole", torch.zeros(10, 4))
            self.register_buffer("part", self.whole[:2])  # a view: no new memory

    assert size_in_memory(Views()) == 10 * 4 * 4


def test_bad_input():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got dict"):
        size_on_disk({"w": torch.zeros(2)})
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got int"):
        size_in_memory(3)
