import pytest
from torch import nn

from shrinklib.measure import COMPONENTS, component_of

from .conftest import make_bert, make_llama

BERT = {
    "bert.embeddings.word_embeddings": "embeddings",
    "bert.embeddings.position_embeddings": "embeddings",
    "bert.embeddings.LayerNorm": "norms",
    "bert.encoder.layer.0.attention.self.query": "attention",
    "bert.encoder.layer.0.attention.self.value": "attention",
    "bert.encoder.layer.0.attention.output.dense": "attention",
    "bert.encoder.layer.0.attention.output.LayerNorm": "norms",
    "bert.encoder.layer.1.intermediate.dense": "ffn",
    "bert.encoder.layer.1.output.dense": "ffn",
    "bert.encoder.layer.1.output.LayerNorm": "norms",
    "bert.pooler.dense": "head",
    "classifier": "head",
    "": "other",
    "bert.encoder": "other",
}
LLAMA = {
    "model.embed_tokens": "embeddings",
    "model.layers.0.self_attn.q_proj": "attention",
    "model.layers.0.self_attn.o_proj": "attention",
    "model.layers.1.mlp.gate_proj": "ffn",
    "model.layers.1.mlp.down_proj": "ffn",
    "model.layers.0.input_layernorm": "norms",
    "model.layers.0.post_attention_layernorm": "norms",
    "model.norm": "norms",
    "lm_head": "head",
}


@pytest.mark.parametrize("make, expected", [(make_bert, BERT), (make_llama, LLAMA)], ids=["bert", "llama"])
def test_hugging_face_layouts(make, expected):
    model = make()
    for fqn, component in expected.items():
        assert component_of(fqn, model.get_submodule(fqn)) == component, fqn


def test_every_module_gets_a_known_component(bert, llama, bilstm):
    for model in (bert, llama, bilstm):
        for fqn, module in model.named_modules():
            assert component_of(fqn, module) in COMPONENTS


def test_lstm_classifier(bilstm):
    got = {fqn: component_of(fqn, m) for fqn, m in bilstm.named_children()}
    assert got == {"embedding": "embeddings", "lstm": "recurrent", "dropout": "other", "classifier": "head"}


def test_norm_class_wins_over_its_name_and_place():
    class FancyRMSNorm(nn.Module):
        pass

    assert component_of("encoder.layer.0.attention.whatever", FancyRMSNorm()) == "norms"
    assert component_of("classifier.ln", nn.LayerNorm(4)) == "norms"
    assert component_of("encoder.rnn_like", nn.GRU(3, 4)) == "recurrent"


def test_name_only():
    assert component_of("bert.embeddings.LayerNorm") == "norms"
    assert component_of("bert.encoder.layer.3.output.dense") == "ffn"
    assert component_of("bert.encoder.layer.3.attention.output.dense") == "attention"
    assert component_of("0") == "other"


def test_bad_input():
    with pytest.raises(TypeError, match="fqn must be a str"):
        component_of(3)
    with pytest.raises(TypeError, match="module must be a torch.nn.Module or None, got str"):
        component_of("classifier", "classifier")
