import pytest
import torch
from torch import nn

import shrinklib
from shrinklib import measure, zoo
from shrinklib.quant import choose_qparams, fake_quantize, sqnr
from shrinklib.quant.embedding import EmbeddingConfig, QuantEmbedding, quantize_embeddings_


@pytest.mark.parametrize("bits", [8, 4])
def test_rows_are_the_per_row_fake_quantized_table(bits):
    torch.manual_seed(0)
    table = nn.Embedding(53, 38, padding_idx=0)
    q = QuantEmbedding.from_embedding(table, bits)
    expected = fake_quantize(table.weight.detach(), *choose_qparams(table.weight, bits, True, axis=0), bits, True)
    ids = torch.tensor([[0, 5, 52], [7, 7, 1]])
    assert torch.equal(q(ids), expected[ids])
    assert torch.equal(q.dequantized_weight(), expected)
    if bits == 8:
        assert sqnr(table.weight.detach(), expected) > 35


def test_bert_embeddings_quantized_save_and_reload_bit_exact(tmp_path):
    model = zoo.tiny_bert(vocab_size=50)
    ids = torch.randint(0, 50, (2, 6))
    before_size, before = measure.size_on_disk(model), model.eval()(input_ids=ids).logits
    quantize_embeddings_(model)
    assert isinstance(model.bert.embeddings.word_embeddings, QuantEmbedding)
    assert measure.size_on_disk(model) < before_size
    after = model(input_ids=ids).logits
    assert sqnr(before.detach(), after.detach()) > 30
    shrinklib.save(model, tmp_path)
    assert torch.equal(shrinklib.load(tmp_path).eval()(input_ids=ids).logits, after)


def test_bad_input(unchanged):
    tied = nn.Sequential(nn.Embedding(10, 4), nn.Embedding(10, 4), nn.Linear(4, 10))
    tied[2].weight = tied[1].weight  # the first table could be quantized; the second is refused first
    with unchanged(tied):
        with pytest.raises(ValueError, match="1's weight is shared with another module \\(tied embeddings\\)"):
            quantize_embeddings_(tied)
    odd = nn.Sequential(nn.Embedding(10, 4), nn.Embedding(10, 3))
    with unchanged(odd):
        with pytest.raises(ValueError, match="4-bit levels are stored two to a byte; 1 has an odd embedding_dim"):
            quantize_embeddings_(odd, EmbeddingConfig(bits=4))
    with pytest.raises(ValueError, match="no nn.Embedding"):
        quantize_embeddings_(nn.Sequential(nn.Linear(3, 3)))
    with pytest.raises(ValueError, match="embedding_dim must be even"):
        QuantEmbedding(5, 3, bits=4)
    with pytest.raises(ValueError, match="bits must be an integer from 2 to 8"):
        quantize_embeddings_(zoo.tiny_bert(vocab_size=50), EmbeddingConfig(bits=1))
    with pytest.raises(TypeError, match="from_embedding needs an nn.Embedding"):
        QuantEmbedding.from_embedding(nn.Linear(2, 2))
    model = zoo.tiny_bert(vocab_size=50)
    with unchanged(model):
        with pytest.raises(TypeError, match="config must be an EmbeddingConfig, got int"):
            quantize_embeddings_(model, 8)
