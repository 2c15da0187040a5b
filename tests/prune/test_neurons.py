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
])
def test_bad_input_leaves_the_model_whole(call, message):
    model = small_bert()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        call(model)
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
