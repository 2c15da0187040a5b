import pytest
import torch

from shrinklib import measure, prune, zoo

from .conftest import X, small_bert


@pytest.mark.parametrize("strategy, expected", [("top", [4, 5]), ("bottom", [0, 1]), ("alternate", [2, 4])])
def test_layer_dropping_strategies(strategy, expected):
    assert prune.layers_to_drop(6, 2, strategy) == expected


def test_dropped_layers_make_a_smaller_model_that_hf_can_reload(tmp_path):
    from transformers import AutoModelForSequenceClassification

    model = small_bert()
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
    (lambda m: prune.drop_layers_(m, [0, 1, 2]), "cannot drop every layer"),
    (lambda m: prune.layers_to_drop(6, 6), r"n must be an int in \[0, 6\)"),
    (lambda m: prune.layers_to_drop(6, 1, "middle"), "strategy must be one of"),
    (lambda m: prune.drop_layers_(zoo.tiny_lstm(), [0]), "no BERT-style encoder"),
    (lambda m: prune.drop_layers_(m, [0, 3]), r"layers must be ints in \[0, 3\), got \[0, 3\]"),
    (lambda m: prune.drop_layers_(m, [1, "0"]), r"layers must be ints in \[0, 3\)"),
    (lambda m: prune.layers_to_drop(0, 0), "num_layers must be an int >= 1, got 0"),
])
def test_bad_input_leaves_the_model_whole(call, message, unchanged):
    model = small_bert()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with unchanged(model), pytest.raises(ValueError, match=message):
        call(model)
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_layer_drop_skips_layers_only_while_training_and_only_inside_the_block(unchanged):
    model = small_bert()
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
    for bad, message in ((float("nan"), r"p must be a probability in \[0, 1\), got nan"),
                         (0.5, "seed must be a non-negative int, got -1")):
        with unchanged(model), pytest.raises(ValueError, match=message):
            with prune.layer_drop(model, bad, seed=-1 if bad == 0.5 else 0):
                pass
