"""Running calibration text through a model: recorded inputs, statistics, cache handling."""
import pytest
import torch

from shrinklib import calibration, zoo


def test_recording_inputs_keeps_every_call_and_removes_its_hooks():
    model = zoo.tiny_bert()
    layer = model.bert.encoder.layer[1].intermediate.dense
    batch = {"input_ids": torch.randint(0, 1000, (3, 9), generator=torch.Generator().manual_seed(0))}
    with calibration.recording_inputs({"ffn": layer}) as seen:
        model(**batch)
        model(**batch)
    assert len(seen["ffn"]) == 2 and seen["ffn"][0].shape == (3, 9, layer.in_features)
    assert not layer._forward_pre_hooks
    stats = calibration.input_statistics(model, [batch], {"ffn": layer})
    x = seen["ffn"][0].reshape(-1, layer.in_features).double()
    torch.testing.assert_close(stats["ffn"].sq_norm, x.pow(2).sum(0))
    torch.testing.assert_close(stats["ffn"].abs_max, x.abs().amax(0))
    with pytest.raises(ValueError, match="no module to record"):
        with calibration.recording_inputs({}):
            pass
    with pytest.raises(TypeError, match=r"modules\['x'\] must be an nn.Module"):
        with calibration.recording_inputs({"x": 3}):
            pass


def test_input_statistics_drop_labels_and_stored_teacher_targets():
    model = zoo.tiny_bert()
    batch = {"input_ids": torch.randint(0, 1000, (2, 5), generator=torch.Generator().manual_seed(1)),
             "labels": torch.zeros(2, dtype=torch.long), "teacher_top_ids": torch.zeros(2, 5, 3, dtype=torch.long)}
    layer = model.bert.encoder.layer[0].attention.self.query
    stats = calibration.input_statistics(model, [batch], {"q": layer})
    assert stats["q"].tokens == 10


def test_a_layer_re_run_for_its_statistics_gets_no_cache():
    """transformers passes a layer its key/value cache as ``past_key_values`` or (5.24) ``cache``; a layer
    re-run on the same batch would otherwise attend to the keys of its earlier runs too."""
    from transformers.cache_utils import DynamicCache

    kwargs = {"cache": DynamicCache(), "my_kv": DynamicCache(), "past_key_values": object(), "layer_past": 1,
              "use_cache": True, "attention_mask": None, "position_ids": torch.arange(3)}
    clean = calibration.without_cache(kwargs)
    assert clean["cache"] is clean["my_kv"] is clean["past_key_values"] is clean["layer_past"] is None
    assert clean["use_cache"] is False and clean["attention_mask"] is None
    assert clean["position_ids"] is kwargs["position_ids"]
