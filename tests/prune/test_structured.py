import pytest
import torch
from torch import nn

import shrinklib
from shrinklib import measure, prune, zoo


def _model():
    return zoo.tiny_bert(hidden_size=24, num_heads=4, num_layers=3, intermediate_size=40, seed=2)


def _batches(n=3):
    g = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(1, 1000, (4, 11), generator=g), "labels": torch.randint(0, 2, (4,), generator=g)}
            for _ in range(n)]


X = torch.randint(1, 1000, (2, 13), generator=torch.Generator().manual_seed(5))


def _gated_logits(model, module_of, units_of, zeroed: dict[int, list[int]]):
    """Reference: zero the chosen units' outputs with hooks, without changing any weight."""
    handles = []
    for layer, units in zeroed.items():
        module, n_units = module_of(layer), units_of(layer)

        def hook(mod, args, output, units=units, n_units=n_units):
            first = output[0] if isinstance(output, tuple) else output
            gate = torch.ones(n_units)
            gate[units] = 0
            gated = (first.reshape(*first.shape[:-1], n_units, -1) * gate[:, None]).reshape(first.shape)
            return (gated, *output[1:]) if isinstance(output, tuple) else gated

        handles.append(module.register_forward_hook(hook))
    with torch.no_grad():
        logits = model(X).logits
    for h in handles:
        h.remove()
    return logits


def test_pruned_heads_compute_what_masked_heads_compute():
    model = _model()
    layers = model.bert.encoder.layer
    expected = _gated_logits(model, lambda i: layers[i].attention.self, lambda i: 4, {0: [1, 3], 2: [0]})
    prune.prune_heads_(model, {0: [1, 3], 2: [0]})
    assert [l.attention.self.query.out_features for l in layers] == [12, 24, 18]
    assert [l.attention.self.num_attention_heads for l in layers] == [2, 4, 3]
    assert layers[0].attention.output.dense.in_features == 12
    with torch.no_grad():
        assert torch.allclose(model(X).logits, expected, atol=1e-6)


def test_pruned_ffn_neurons_compute_what_masked_neurons_compute():
    model = _model()
    layers = model.bert.encoder.layer
    keep = {1: list(range(0, 40, 3))}
    dropped = [j for j in range(40) if j not in keep[1]]
    expected = _gated_logits(model, lambda i: layers[i].intermediate, lambda i: 40, {1: dropped})
    prune.prune_neurons_(model, keep)
    assert [l.intermediate.dense.out_features for l in layers] == [40, 14, 40]
    with torch.no_grad():
        assert torch.allclose(model(X).logits, expected, atol=1e-6)


def test_structurally_pruned_model_reloads_exactly_and_refuses_from_pretrained(tmp_path):
    from transformers import AutoModelForSequenceClassification

    model = _model()
    prune.prune_heads_(model, {0: [0], 1: [1, 2]})
    prune.prune_neurons_(model, {2: [0, 5, 9]})
    folder = shrinklib.save(model, tmp_path / "m")
    loaded = shrinklib.load(folder)
    assert [l.attention.self.num_attention_heads for l in loaded.bert.encoder.layer] == [3, 2, 4]
    with torch.no_grad():
        assert torch.equal(loaded(X).logits, model(X).logits)
    with pytest.raises((OSError, ValueError)):  # no config.json: from_pretrained refuses, never loads wrong shapes
        AutoModelForSequenceClassification.from_pretrained(folder)


def test_importance_is_the_gradient_at_the_gate():
    model = _model()
    batch = _batches(1)
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
    neurons = prune.neuron_importance(model, _batches(2))
    assert [s.shape for s in neurons] == [(40,)] * 3 and all(torch.all(s >= 0) for s in neurons)


def test_lowest_units_keeps_one_per_layer_and_ranks_globally():
    scores = [torch.tensor([0.1, 0.2, 0.9]), torch.tensor([0.05, 0.06])]
    assert prune.lowest_units(scores, 0.4, scope="layer") == [[0], [0]]
    assert prune.lowest_units(scores, 0.6, scope="global") == [[0, 1], [0]]  # layer 1 keeps one unit


@pytest.mark.parametrize("strategy, expected", [("top", [4, 5]), ("bottom", [0, 1]), ("alternate", [2, 4])])
def test_layer_dropping_strategies(strategy, expected):
    assert prune.layers_to_drop(6, 2, strategy) == expected


def test_dropped_layers_make_a_smaller_model_that_hf_can_reload(tmp_path):
    from transformers import AutoModelForSequenceClassification

    model = _model()
    before = measure.macs(model, seq_len=16)
    third = model.bert.encoder.layer[2]
    prune.drop_layers_(model, [1])
    assert model.config.num_hidden_layers == 2 and model.bert.encoder.layer[1] is third
    assert measure.macs(model, seq_len=16) < before
    model.save_pretrained(tmp_path / "hf")
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        assert torch.equal(again(X).logits, model(X).logits)


@pytest.mark.parametrize("call, message", [
    (lambda m: prune.prune_heads_(m, {0: [0, 1, 2, 3]}), "cannot remove all 4 heads of layer 0"),
    (lambda m: prune.prune_heads_(m, {7: [0]}), r"layer must be an int in \[0, 3\)"),
    (lambda m: prune.prune_heads_(m, {0: [4]}), "layer 0 has heads 0..3"),
    (lambda m: prune.prune_neurons_(m, {0: []}), "keep must name at least one"),
    (lambda m: prune.drop_layers_(m, [0, 1, 2]), "cannot drop every layer"),
    (lambda m: prune.layers_to_drop(6, 6), r"n must be an int in \[0, 6\)"),
    (lambda m: prune.layers_to_drop(6, 1, "middle"), "strategy must be one of"),
    (lambda m: prune.drop_layers_(zoo.tiny_lstm(), [0]), "no BERT-style encoder"),
    (lambda m: prune.prune_heads_(zoo.tiny_lstm(), {0: [0]}), "no BERT-style attention layer"),
])
def test_bad_input_leaves_the_model_whole(call, message):
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        call(model)
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_layer_drop_skips_layers_only_while_training_and_only_inside_the_block():
    model = _model()
    with torch.no_grad():
        eval_logits = model(X).logits
    calls = []
    for layer in model.bert.encoder.layer:  # counted inside the layer: a skipped layer computes nothing
        layer.attention.register_forward_pre_hook(lambda m, args: calls.append(1))
    with prune.layer_drop(model, 0.5, seed=0):
        with torch.no_grad():
            assert torch.equal(model(X).logits, eval_logits)  # eval mode: every layer runs
        model.train()
        ran = []
        for _ in range(100):
            before = len(calls)
            model(X)
            ran.append(len(calls) - before)
        model.eval()
    assert 0.35 < sum(ran) / (100 * 3) < 0.65  # about half of the layer calls were skipped
    assert all("forward" not in layer.__dict__ for layer in model.bert.encoder.layer)  # restored
    with torch.no_grad():
        assert torch.equal(model(X).logits, eval_logits)
    with pytest.raises(ValueError, match=r"p must be a probability in \[0, 1\)"):
        with prune.layer_drop(model, 1.0):
            pass
