import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from shrinklib.measure import COMPONENTS, macs, macs_by_component, macs_by_module, recurrent_macs

from .conftest import make_bert, make_llama


def attention_scores(by_module: dict, suffix: str) -> int:
    return sum(v for fqn, v in by_module.items() if fqn.endswith(suffix))


def test_lone_linear_is_exact():
    lin = nn.Linear(7, 5)
    assert macs(lin, batch_size=3, seq_len=11) == 7 * 5 * 3 * 11
    assert macs_by_module(lin, 3, 11) == {"": 7 * 5 * 3 * 11}
    assert macs_by_component(lin, 3, 11)["other"] == 7 * 5 * 3 * 11
    seq = nn.Sequential(nn.Linear(7, 13), nn.ReLU(), nn.Linear(13, 5))
    assert macs_by_module(seq, 2, 4) == {"0": 7 * 13 * 8, "2": 13 * 5 * 8}


@pytest.mark.parametrize("seq_len", [8, 16, 32])
def test_bert_exact_and_quadratic_in_length(seq_len):
    model = make_bert()
    batch, h, i, layers, heads = 2, 24, 37, 2, 2
    by_module = macs_by_module(model, batch, seq_len)
    scores = attention_scores(by_module, "attention.self")  # QK^T and AV, nothing else
    assert scores == 2 * layers * heads * seq_len * seq_len * (h // heads) * batch
    tokens = batch * seq_len
    linears = layers * (4 * h * h + 2 * h * i) * tokens
    head = h * h * batch + h * 2 * batch  # pooler and classifier read the [CLS] token only
    assert macs(model, batch, seq_len) == linears + scores + head


def test_sdpa_is_counted_like_eager(bert):
    assert bert.config._attn_implementation == "sdpa"
    with_sdpa = macs_by_module(bert, 2, 16)
    bert.set_attn_implementation("eager")
    assert macs_by_module(bert, 2, 16) == with_sdpa


def test_llama_grouped_query_attention(llama):
    batch, seq_len, heads, head_dim, layers = 2, 16, 4, 8, 2
    by_module = macs_by_module(llama, batch, seq_len)
    assert attention_scores(by_module, "self_attn") == 2 * layers * heads * seq_len * seq_len * head_dim * batch
    by_component = macs_by_component(llama, batch, seq_len)
    assert by_component["head"] == 32 * 100 * batch * seq_len
    assert by_component["ffn"] == layers * 3 * 32 * 40 * batch * seq_len


def test_components_sum_to_total(bert, llama, bilstm):
    for model in (bert, llama, bilstm, make_llama(tie=True)):
        by_component = macs_by_component(model, 2, 16)
        assert tuple(by_component) == COMPONENTS
        assert sum(by_component.values()) == macs(model, 2, 16)
        assert min(by_component.values()) >= 0


def test_lstm_formula(bilstm):
    # BiLSTM: embed 8 -> 2 layers x 2 directions of hidden 6, then Linear(12, 2) on the pooled vector.
    per_token = 2 * 4 * 6 * (8 + 6) + 2 * 4 * 6 * (12 + 6)
    by_component = macs_by_component(bilstm, batch_size=3, seq_len=5)
    assert by_component["recurrent"] == per_token * 15
    assert by_component["head"] == 12 * 2 * 3
    assert recurrent_macs(bilstm.lstm, tokens=15) == per_token * 15


@pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning")
def test_recurrent_variants():
    proj = nn.LSTM(8, 6, proj_size=3)  # recurrent input is the projection
    assert macs(proj, inputs=(torch.randn(5, 2, 8),)) == (4 * 6 * (8 + 3) + 6 * 3) * 10
    gru = nn.GRU(8, 6, batch_first=True)
    assert macs(gru, 2, 5) == 3 * 6 * (8 + 6) * 10
    packed = pack_padded_sequence(torch.randn(2, 5, 8), [5, 3], batch_first=True)
    assert macs(gru, inputs=(packed,)) == 3 * 6 * (8 + 6) * 8  # only real tokens


def test_fused_multihead_attention_fast_path():
    mha = nn.MultiheadAttention(24, 2, batch_first=True)
    x = torch.randn(2, 16, 24)
    expected = 4 * 24 * 24 * 32 + 2 * 16 * 16 * 24 * 2
    assert macs(mha, inputs=(x, x, x)) == expected  # eval, no grad: the fused aten op


def test_unbatched_sdpa():
    class Attend(nn.Module):
        def forward(self, q):
            return nn.functional.scaled_dot_product_attention(q, q, q)

    assert macs(Attend(), inputs=(torch.randn(3, 10, 8),)) == 2 * 3 * 10 * 10 * 8


def test_restores_modes(bert):
    bert.train()
    macs(bert, 1, 8)
    assert all(m.training for m in bert.modules())


def test_bad_input(bert):
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        macs(bert, batch_size=0)
    with pytest.raises(ValueError, match="seq_len must be an int >= 1, got 2.5"):
        macs_by_component(bert, seq_len=2.5)
    with pytest.raises(ValueError, match="seq_len must be at most the model's max_position_embeddings"):
        macs(bert, seq_len=1000)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        macs(lambda x: x)
    with pytest.raises(TypeError, match="rnn must be an nn.LSTM, nn.GRU or nn.RNN, got Linear"):
        recurrent_macs(nn.Linear(2, 2), 4)
    with pytest.raises(ValueError, match="tokens must be an int >= 0, got -1"):
        recurrent_macs(nn.GRU(2, 2), -1)
    with pytest.raises(TypeError, match="pass inputs= explicitly"):
        macs(nn.Sequential(nn.ReLU()))
