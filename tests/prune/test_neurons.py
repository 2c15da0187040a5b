import pytest
import torch

from shrinklib import prune

from .conftest import X, gated_logits, small_bert


def test_pruned_ffn_neurons_compute_what_masked_neurons_compute():
    model = small_bert()
    layers = model.bert.encoder.layer
    keep = {1: list(range(0, 40, 3))}
    dropped = [j for j in range(40) if j not in keep[1]]
    expected = gated_logits(model, lambda i: layers[i].intermediate, lambda i: 40, {1: dropped})
    prune.prune_neurons_(model, keep)
    assert [l.intermediate.dense.out_features for l in layers] == [40, 14, 40]
    with torch.no_grad():
        assert torch.allclose(model(X).logits, expected, atol=1e-6)


@pytest.mark.parametrize("call, message", [
    (lambda m: prune.prune_neurons_(m, {0: []}), "keep must name at least one"),
    (lambda m: prune.prune_neurons_(m, {0: [1, 2], 2: [40]}), "layer 2 has neurons 0..39"),  # layer 0 fine
    (lambda m: prune.prune_neurons_(m, {0: [1, 2], 1: [0, "3"]}), "layer 1 has neurons 0..39"),
    (lambda m: prune.prune_neurons_(m, {0: [1], 3: [0]}), r"layer must be an int in \[0, 3\)"),
])
def test_bad_input_leaves_the_model_whole(call, message, unchanged):
    model = small_bert()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with unchanged(model), pytest.raises(ValueError, match=message):
        call(model)
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
