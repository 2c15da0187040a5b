import pytest
import torch

import shrinklib
from shrinklib import prune, zoo

from .conftest import X, gated_logits, small_bert


def test_pruned_heads_compute_what_masked_heads_compute():
    model = small_bert()
    layers = model.bert.encoder.layer
    expected = gated_logits(model, lambda i: layers[i].attention.self, lambda i: 4, {0: [1, 3], 2: [0]})
    prune.prune_heads_(model, {0: [1, 3], 2: [0]})
    assert [l.attention.self.query.out_features for l in layers] == [12, 24, 18]
    assert [l.attention.self.num_attention_heads for l in layers] == [2, 4, 3]
    assert layers[0].attention.output.dense.in_features == 12
    with torch.no_grad():
        assert torch.allclose(model(X).logits, expected, atol=1e-6)


def test_structurally_pruned_model_reloads_exactly_and_refuses_from_pretrained(tmp_path):
    from transformers import AutoModelForSequenceClassification

    model = small_bert()
    prune.prune_heads_(model, {0: [0], 1: [1, 2]})
    prune.prune_neurons_(model, {2: [0, 5, 9]})
    folder = shrinklib.save(model, tmp_path / "m")
    loaded = shrinklib.load(folder)
    assert [l.attention.self.num_attention_heads for l in loaded.bert.encoder.layer] == [3, 2, 4]
    with torch.no_grad():
        assert torch.equal(loaded(X).logits, model(X).logits)
    with pytest.raises((OSError, ValueError)):  # no config.json: from_pretrained refuses, never loads wrong shapes
        AutoModelForSequenceClassification.from_pretrained(folder)


@pytest.mark.parametrize("call, message", [
    (lambda m: prune.prune_heads_(m, {0: [0, 1, 2, 3]}), "cannot remove all 4 heads of layer 0"),
    (lambda m: prune.prune_heads_(m, {7: [0]}), r"layer must be an int in \[0, 3\)"),
    (lambda m: prune.prune_heads_(m, {0: [4]}), "layer 0 has heads 0..3"),
    (lambda m: prune.prune_heads_(zoo.tiny_lstm(), {0: [0]}), "no BERT-style attention layer"),
    (lambda m: prune.prune_heads_(m, {0: [1], 2: [0, 1, 2, 3]}), "cannot remove all 4 heads of layer 2"),  # layer 0 fine
    (lambda m: prune.prune_heads_(m, {0: [1], 1: ["2"]}), "layer 1 has heads 0..3"),
])
def test_bad_input_leaves_the_model_whole(call, message, unchanged):
    model = small_bert()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with unchanged(model), pytest.raises(ValueError, match=message):
        call(model)
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
