import pytest
import torch
from torch import nn

from shrinklib.measure import peak_activation_memory

from .conftest import make_bert


def test_peak_is_the_largest_set_of_activations_alive_at_once():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    # at the ReLU both the first Linear's output and the ReLU's output (3*5*16 floats each)
    # are alive; the transposed weight inside each Linear is a view and costs nothing
    assert peak_activation_memory(model, (torch.randn(3, 5, 8),)) == 2 * 3 * 5 * 16 * 4


def test_eager_attention_holds_the_score_matrix_and_fused_attention_does_not():
    batch, heads, length = 2, 2, 128
    scores = batch * heads * length * length * 4  # bytes of one (B, h, L, L) fp32 matrix
    eager = make_bert(attn_implementation="eager")
    fused = make_bert(attn_implementation="sdpa")
    assert peak_activation_memory(eager, batch_size=batch, seq_len=length) >= 2 * scores  # scores and softmax
    assert peak_activation_memory(fused, batch_size=batch, seq_len=length) < scores


def test_bad_input():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        peak_activation_memory("bert")
