import json

import pytest
import torch
from torch import nn

import shrinklib
from shrinklib import serialize, zoo


@serialize.register_module  # load builds only registered classes
class ScaledLinear(nn.Module):
    """A stand-in for a transform's module: a Linear with an int8 code buffer and a scale."""

    def __init__(self, in_features: int, out_features: int, scale: float = 0.5):
        super().__init__()
        self.in_features, self.out_features, self.scale = in_features, out_features, scale
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.register_buffer("codes", torch.zeros(out_features, dtype=torch.int8))

    def rebuild_kwargs(self):
        return {"in_features": self.in_features, "out_features": self.out_features, "scale": self.scale}

    def forward(self, x):
        return self.scale * x @ self.weight.T + self.codes.float()


def _same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


def _roundtrip(model, tmp_path):
    folder = shrinklib.save(model, tmp_path / "m")
    return shrinklib.load(folder), folder


@pytest.fixture()
def ids():
    return torch.randint(0, 1000, (3, 11), generator=torch.Generator().manual_seed(0))


def test_unchanged_model_reloads_bit_exact_and_is_a_plain_hf_folder(tmp_path, ids):
    from transformers import AutoModelForSequenceClassification

    model = zoo.tiny_bert()
    loaded, folder = _roundtrip(model, tmp_path)
    _same_state(model, loaded)
    assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert type(loaded) is type(model) and not loaded.training
    hf = AutoModelForSequenceClassification.from_pretrained(folder)
    assert torch.equal(hf.eval()(ids).logits, model(ids).logits)


def test_swapped_module_reloads_bit_exact(tmp_path, ids):
    model = zoo.tiny_bert()
    layer = model.bert.encoder.layer[0].intermediate
    swapped = ScaledLinear(32, 64, scale=0.25)
    swapped.codes.copy_(torch.arange(64, dtype=torch.int8) - 30)
    layer.dense = swapped
    loaded, folder = _roundtrip(model, tmp_path)
    got = loaded.bert.encoder.layer[0].intermediate.dense
    assert isinstance(got, ScaledLinear) and got.scale == 0.25 and got.codes.dtype == torch.int8
    _same_state(model, loaded)
    assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert not (folder / "config.json").exists()  # from_pretrained must not read a changed model


def test_shrunken_layers_reload_bit_exact(tmp_path, ids):
    model = zoo.tiny_bert(num_layers=3)
    for layer, width in zip(model.bert.encoder.layer, (40, 17, 64)):
        layer.intermediate.dense = nn.Linear(32, width)
        layer.output.dense = nn.Linear(width, 32)
    del model.bert.encoder.layer[1]  # a dropped layer, config left as it was
    loaded, folder = _roundtrip(model, tmp_path)
    assert [l.intermediate.dense.out_features for l in loaded.bert.encoder.layer] == [40, 64]
    _same_state(model, loaded)
    assert torch.equal(model(ids).logits, loaded(ids).logits)
    ops = [e["op"] for e in json.loads((folder / serialize.RECORD_FILE).read_text())["structure"]]
    assert ops.count("delete") == 1 and ops.count("module") == 2  # the 64-wide layer matches the base


def test_added_buffer_and_changed_dtype_reload(tmp_path, ids):
    model = zoo.tiny_bert().half()
    model.bert.encoder.layer[0].output.dense.register_buffer("weight_mask", torch.rand(32, 64) > 0.5)
    loaded, _ = _roundtrip(model, tmp_path)
    assert loaded.bert.encoder.layer[0].output.dense.weight_mask.dtype == torch.bool
    assert loaded.bert.embeddings.word_embeddings.weight.dtype == torch.float16
    _same_state(model, loaded)


def test_tied_weights_stay_tied(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval()
    loaded, folder = _roundtrip(model, tmp_path)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert json.loads((folder / serialize.RECORD_FILE).read_text())["aliases"] == {"lm_head.weight": "model.embed_tokens.weight"}
    x = torch.randint(0, 64, (2, 7))
    assert torch.equal(model(x).logits, loaded(x).logits)


def test_plain_module_with_rebuild_kwargs(tmp_path, ids):
    lstm = zoo.tiny_lstm()
    lstm.lstm = nn.LSTM(16, 10, batch_first=True, bidirectional=True)  # shrunken recurrent layer
    lstm.classifier = nn.Linear(20, 2)
    loaded, _ = _roundtrip(lstm, tmp_path)
    _same_state(lstm, loaded)
    assert torch.equal(lstm(ids).logits, loaded(ids).logits)


# A change that structure cannot show: an attribute. Transforms register such kinds.
@serialize.register_change("test_set_attribute")
def _set_attribute(model, payload):
    setattr(model.get_submodule(payload["fqn"]), payload["name"], payload["value"])


def test_recorded_changes_are_replayed_on_load(tmp_path):
    model = zoo.tiny_bert()
    attention = model.bert.encoder.layer[0].attention.self
    attention.num_attention_heads = 1
    serialize.record_change(model, "test_set_attribute", fqn="bert.encoder.layer.0.attention.self",
                            name="num_attention_heads", value=1)
    loaded, folder = _roundtrip(model, tmp_path)
    assert loaded.bert.encoder.layer[0].attention.self.num_attention_heads == 1
    assert serialize.recorded_changes(loaded) == serialize.recorded_changes(model)
    resaved, _ = _roundtrip(loaded, tmp_path / "again")  # the log survives a second round trip
    assert resaved.bert.encoder.layer[0].attention.self.num_attention_heads == 1


def test_bad_changes_are_refused():
    model = zoo.tiny_bert()
    with pytest.raises(ValueError, match="no change of kind 'nope' is registered"):
        serialize.record_change(model, "nope")
    with pytest.raises(TypeError, match="must be JSON-serializable"):
        serialize.record_change(model, "test_set_attribute", value=torch.zeros(1))


def test_a_module_that_cannot_be_rebuilt_is_refused_at_save_and_nothing_is_written(tmp_path):
    class Opaque(nn.Module):
        def forward(self, x):
            return x

    model = zoo.tiny_bert()
    model.bert.encoder.layer[0].intermediate.intermediate_act_fn = Opaque()
    with pytest.raises(TypeError, match=r"cannot record the module at 'bert.encoder.layer.0.intermediate.intermediate_act_fn'.*rebuild_kwargs"):
        shrinklib.save(model, tmp_path / "m")
    assert not (tmp_path / "m").exists()
    with pytest.raises(TypeError, match="cannot rebuild a Opaque"):
        shrinklib.save(Opaque(), tmp_path / "m")


def test_load_refuses_folders_it_did_not_write(tmp_path):
    with pytest.raises(FileNotFoundError, match="not written by shrinklib.save"):
        shrinklib.load(tmp_path)
    (tmp_path / serialize.RECORD_FILE).write_text(json.dumps({"format": 99}))
    with pytest.raises(ValueError, match="format 99"):
        shrinklib.load(tmp_path)


def test_save_refuses_what_load_would_refuse_and_writes_nothing(tmp_path, unchanged):
    class Unregistered(ScaledLinear):  # has rebuild_kwargs, but load builds only registered classes
        pass

    model = zoo.tiny_bert()
    model.bert.encoder.layer[0].intermediate.dense = Unregistered(32, 64)
    with unchanged(model):
        with pytest.raises(TypeError, match=r"cannot record the module at 'bert.encoder.layer.0.intermediate.dense'.*"
                                            r"rebuild_kwargs\(\) method but its class is not registered"):
            shrinklib.save(model, tmp_path / "m")
    assert not (tmp_path / "m").exists()

    from transformers import BertForSequenceClassification

    class MyBert(BertForSequenceClassification):  # transformers does not export it: load could not find it
        pass

    mine = MyBert(zoo.tiny_bert().config)
    with unchanged(mine):
        with pytest.raises(TypeError, match="cannot rebuild a MyBert: shrinklib.load builds only the Hugging Face "
                                            "model classes that the transformers package exports"):
            shrinklib.save(mine, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_save_and_load_check_their_arguments(tmp_path, unchanged):
    model = zoo.tiny_lstm()
    with unchanged(model):
        with pytest.raises(TypeError, match=r"folder must be a path \(str or os.PathLike\), got int"):
            shrinklib.save(model, 3)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got str"):
        shrinklib.save("model", tmp_path)
    with pytest.raises(TypeError, match=r"folder must be a path \(str or os.PathLike\), got NoneType"):
        shrinklib.load(None)


def test_a_record_that_does_not_fit_its_model_is_a_clear_error(tmp_path):
    folder = shrinklib.save(zoo.tiny_lstm(), tmp_path / "m")
    record = json.loads((folder / serialize.RECORD_FILE).read_text())
    for structure, message in [
        ([{"op": "delete", "fqn": "no.such.layer"}], r"structure\[0\] \(delete at 'no.such.layer'\) could not be replayed"),
        ([{"op": "remove_tensor", "fqn": "classifier", "name": "bias"}, {"op": "delete", "fqn": "classifier.weight"}],
         r"structure\[1\] \(delete at 'classifier.weight'\) could not be replayed: ValueError: .* is not a submodule"),
        ([{"op": "tensor", "fqn": "classifier", "name": "weight", "tensor_kind": "parameter", "shape": [5, 5],
           "dtype": "float32", "persistent": True}],
         rf"the tensors of {serialize.WEIGHTS_FILE} do not fit the model the record describes"),
    ]:
        (folder / serialize.RECORD_FILE).write_text(json.dumps({**record, "structure": structure}))
        with pytest.raises(ValueError, match=message):
            shrinklib.load(folder)
    (folder / serialize.RECORD_FILE).write_text(json.dumps({**record, "aliases": {"classifier.bias": "nowhere.bias"}}))
    with pytest.raises(ValueError, match=r"aliases\['classifier.bias'\] names 'nowhere.bias', which model.safetensors does not hold"):
        shrinklib.load(folder)
