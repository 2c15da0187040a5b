"""Model anatomy: one answer for BERT encoders, Llama decoders and the BiLSTM."""
import pytest
import torch
from torch import nn

from shrinklib import arch, zoo


def test_blocks_of_each_family():
    bert, llama = zoo.tiny_bert(num_layers=3), zoo.tiny_llama(num_layers=2)
    assert arch.blocks(bert) is bert.bert.encoder.layer
    assert arch.blocks(llama) is llama.model.layers
    assert arch.encoder_layers(bert) is bert.bert.encoder.layer
    with pytest.raises(ValueError, match="found no stack of layers .* BiLSTMClassifier"):
        arch.blocks(zoo.tiny_lstm())
    with pytest.raises(ValueError, match="no BERT-style encoder .* LlamaForCausalLM"):
        arch.encoder_layers(llama)


def test_attention_of_bert_and_of_a_grouped_query_llama():
    bert = zoo.tiny_bert(hidden_size=30, num_heads=3, num_layers=2)
    found = arch.attention_modules(bert)
    assert [a.fqn for a in found] == [f"bert.encoder.layer.{i}.attention.self" for i in range(2)]
    first = found[0]
    layer = bert.bert.encoder.layer[0]
    assert (first.query, first.key, first.value, first.output) == (
        layer.attention.self.query, layer.attention.self.key, layer.attention.self.value, layer.attention.output.dense)
    assert (first.num_heads, first.num_kv_heads, first.head_dim) == (3, 3, 10)
    llama = zoo.tiny_llama(hidden_size=32, num_heads=4, num_kv_heads=2, num_layers=2)
    found = arch.attention_modules(llama)
    assert [a.fqn for a in found] == ["model.layers.0.self_attn", "model.layers.1.self_attn"]
    assert (found[1].num_heads, found[1].num_kv_heads, found[1].head_dim) == (4, 2, 8)
    assert found[1].output is llama.model.layers[1].self_attn.o_proj
    assert arch.attention_modules(zoo.tiny_lstm()) == []


def test_ffns_of_bert_and_llama():
    bert = zoo.tiny_bert(intermediate_size=50)
    ffn = arch.ffn_modules(bert)[1]
    assert ffn.module is bert.bert.encoder.layer[1] and ffn.gate is None
    assert ffn.up is ffn.module.intermediate.dense and ffn.down is ffn.module.output.dense
    assert ffn.intermediate_size == 50
    llama = zoo.tiny_llama(intermediate_size=40)
    ffn = arch.ffn_modules(llama)[0]
    assert ffn.fqn == "model.layers.0.mlp" and ffn.gate is ffn.module.gate_proj and ffn.intermediate_size == 40
    assert arch.ffn_modules(zoo.tiny_lstm()) == []


def test_embeddings_head_and_tying():
    llama, bert, lstm = zoo.tiny_llama(vocab_size=70), zoo.tiny_bert(vocab_size=77), zoo.tiny_lstm(vocab_size=91)
    assert arch.input_embedding(llama) is llama.model.embed_tokens
    assert arch.lm_head(llama) is llama.lm_head and arch.tied_embeddings(llama)
    assert arch.lm_head(bert) is None and not arch.tied_embeddings(bert)
    assert arch.input_embedding(lstm) is lstm.embedding
    assert (arch.vocab_size(llama), arch.vocab_size(bert), arch.vocab_size(lstm)) == (70, 77, 91)
    assert arch.vocab_size(nn.Linear(3, 2)) is None
    assert arch.vocab_size(nn.Sequential(nn.Embedding(13, 4), nn.Linear(4, 2))) == 13
    with pytest.raises(TypeError, match="model must be an nn.Module, got str"):
        arch.vocab_size("bert")


class _Tokenizer:
    def __init__(self, pad, eos):
        self.pad_token_id, self.eos_token_id = pad, eos


def test_pad_id_precedence():
    bert = zoo.tiny_bert()  # config.pad_token_id = 0
    assert arch.pad_id(bert, _Tokenizer(5, 6)) == 5  # the tokenizer's pad first
    assert arch.pad_id(bert, _Tokenizer(None, 6)) == 0  # then the config's
    llama = zoo.tiny_llama()
    llama.config.pad_token_id = None
    assert arch.pad_id(llama, _Tokenizer(None, 6)) == 6  # then the tokenizer's end of sequence
    assert arch.pad_id(zoo.tiny_lstm()) == 0  # then the embedding's padding_idx
    assert arch.pad_id(nn.Linear(2, 2)) is None and arch.pad_id(nn.Linear(2, 2), default=0) == 0
    assert arch.pad_id(tokenizer=_Tokenizer(True, 3)) == 3  # a bool is not an id


def test_slice_linear_keeps_the_rows_or_columns_asked_for():
    torch.manual_seed(0)
    linear = nn.Linear(7, 5)
    index = torch.tensor([4, 0, 2])
    rows, cols = arch.slice_linear(linear, index, dim=0), arch.slice_linear(linear, index, dim=1)
    x = torch.randn(3, 7)
    torch.testing.assert_close(rows(x), linear(x)[:, index])
    torch.testing.assert_close(cols(x[:, index]), x[:, index] @ linear.weight[:, index].T + linear.bias)
    with pytest.raises(ValueError, match="dim must be 0 .* or 1"):
        arch.slice_linear(linear, index, dim=2)


@pytest.mark.parametrize("function", [arch.unwrap, arch.blocks, arch.encoder_layers, arch.attention_modules,
                                      arch.ffn_modules, arch.input_embedding, arch.lm_head, arch.tied_embeddings,
                                      arch.pad_id], ids=lambda f: f.__name__)
@pytest.mark.parametrize("bad", ["bert", 3], ids=["str", "int"])
def test_a_model_that_is_not_a_module_is_refused_by_name(function, bad):
    with pytest.raises(TypeError, match=f"model must be a torch.nn.Module, got {type(bad).__name__}"):
        function(bad)


def test_slice_linear_and_pad_id_check_their_other_arguments():
    with pytest.raises(TypeError, match="linear must be a torch.nn.modules.linear.Linear, got ReLU"):
        arch.slice_linear(nn.ReLU(), torch.tensor([0]), 0)
    with pytest.raises(TypeError, match="index must be a torch.Tensor, got list"):
        arch.slice_linear(nn.Linear(3, 2), [0], 0)
    with pytest.raises(TypeError, match="index must be an integer tensor of row or column numbers, got torch.float32"):
        arch.slice_linear(nn.Linear(3, 2), torch.tensor([0.0]), 0)
    with pytest.raises(ValueError, match="default must be an int, got '0'"):
        arch.pad_id(zoo.tiny_lstm(), default="0")
