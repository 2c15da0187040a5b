import pytest
import torch

from shrinklib import prune

from .conftest import labelled_batches, small_bert


def test_importance_is_the_gradient_at_the_gate():
    model = small_bert()
    batch = labelled_batches(1)
    scores = prune.head_importance(model, batch, normalize=False)
    assert [s.shape for s in scores] == [(4,)] * 3
    # the same derivative by the chain rule: dL/dxi_h = sum(out_h * dL/dout_h), from a plain backward
    attention = model.bert.encoder.layer[1].attention.self
    kept = {}

    def keep_output(mod, args, output):
        output[0].retain_grad()
        kept["out"] = output[0]

    handle = attention.register_forward_hook(keep_output)
    model(**batch[0]).loss.backward()
    handle.remove()
    out, grad = (t.reshape(*t.shape[:-1], 4, -1) for t in (kept["out"], kept["out"].grad))
    assert scores[1][2].item() == pytest.approx(abs((out[..., 2, :] * grad[..., 2, :]).sum().item()), rel=1e-4)
    neurons = prune.neuron_importance(model, labelled_batches(2))
    assert [s.shape for s in neurons] == [(40,)] * 3 and all(torch.all(s >= 0) for s in neurons)


def test_lowest_units_keeps_one_per_layer_and_ranks_globally():
    scores = [torch.tensor([0.1, 0.2, 0.9]), torch.tensor([0.05, 0.06])]
    assert prune.lowest_units(scores, 0.4, scope="layer") == [[0], [0]]
    assert prune.lowest_units(scores, 0.6, scope="global") == [[0, 1], [0]]  # layer 1 keeps one unit
