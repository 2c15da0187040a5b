"""check_record: a malformed or hostile shrinklib.json is refused whole, with the place named,
before anything is imported or built."""
import copy
import json
import re

import pytest

import shrinklib
from shrinklib import zoo
from shrinklib.record import RECORD_FILE, STRUCTURE_KEYS, TENSOR_DTYPES, check_record

VALID = {
    "format": 1,
    "base": {"kind": "module", "class": "shrinklib.lstm:BiLSTMClassifier",
             "kwargs": {"vocab_size": 50, "embed_dim": 8, "hidden_size": 6, "num_layers": 1, "num_labels": 2,
                        "pad_token_id": 0, "dropout": 0.1}},
    "structure": [
        {"op": "module", "fqn": "classifier", "class": "torch.nn.modules.linear:Linear",
         "kwargs": {"in_features": 12, "out_features": 3, "bias": True}},
        {"op": "tensor", "fqn": "classifier", "name": "weight_mask", "tensor_kind": "buffer", "shape": [3, 12],
         "dtype": "bool", "persistent": True},
        {"op": "remove_tensor", "fqn": "", "name": "unused"},
        {"op": "delete", "fqn": "layers.0.dropout"},
    ],
    "changes": [{"kind": "attention_heads", "provider": "shrinklib.prune.heads", "fqn": "a.b", "num_heads": 2}],
    "aliases": {"head.weight": "embedding.weight"},
    "training": False,
}
TRANSFORMERS_BASE = {"kind": "transformers", "class": "transformers.models.bert.modeling_bert:BertModel",
                     "config": {"hidden_size": 32, "text_config": {"vocab_size": 10}}}


def edited(edit):
    record = copy.deepcopy(VALID)
    edit(record)
    return record


def test_a_record_as_save_writes_it_passes():
    check_record(copy.deepcopy(VALID))
    check_record(edited(lambda r: r.update(base=copy.deepcopy(TRANSFORMERS_BASE))))
    check_record(edited(lambda r: r.pop("training")))  # optional: false


def test_every_op_and_dtype_save_writes_is_known():
    assert set(STRUCTURE_KEYS) == {"module", "delete", "tensor", "remove_tensor"}
    assert {"float32", "float16", "bfloat16", "int8", "uint8", "int32", "int64", "bool"} <= TENSOR_DTYPES.keys()


def _set(path, value):
    """An edit that sets record[path[0]][path[1]]... to value."""
    def edit(record):
        target = record
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


def _delete(path):
    def edit(record):
        target = record
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return edit


MALFORMED = [
    # the record itself
    (_delete(["format"]), "has format None; this shrinklib reads 1"),
    (_delete(["base"]), "the record has no 'base'"),
    (_delete(["aliases"]), "the record has no 'aliases'"),
    (_set(["pickle"], True), r"the record has unknown key\(s\) \['pickle'\]"),
    (_set(["training"], "no"), "training must be true or false, got a string 'no'"),
    (_set(["training"], 1), "training must be true or false, got an int 1"),
    # base
    (_set(["base"], ["shrinklib.lstm:BiLSTMClassifier"]), "base must be an object, got a list"),
    (_delete(["base", "class"]), "base has no 'class'"),
    (_set(["base", "kind"], "pickle"), r"base\['kind'\] must be 'transformers' or 'module', got 'pickle'"),
    (_set(["base", "config"], {}), r"base has unknown key\(s\) \['config'\]"),
    (_set(["base", "class"], 7), r"base\['class'\] must be a class path 'module:Class', got an int 7"),
    (_set(["base", "class"], "os:system"), r"base\['class'\] names 'os:system', which is not a class shrinklib.load may build"),
    (_set(["base", "class"], "shrinklib.__main__:main"), "which is not a class shrinklib.load may build"),
    (_set(["base", "kwargs"], [50, 8]), r"base\['kwargs'\] must be an object of constructor arguments, got a list"),
    (_set(["base", "kwargs", "**extra"], 1), r"base\['kwargs'\] has an argument name that is not an identifier: '\*\*extra'"),
    (_set(["base", "kwargs", "dropout"], object()), r"base\['kwargs'\]\['dropout'\] is a Python object, not a JSON value"),
    (_set(["base", "kwargs", "dropout"], (0.1,)), r"base\['kwargs'\]\['dropout'\] is a Python tuple, not a JSON value"),
    (_set(["base", "kwargs", "dropout"], {1: 0.1}), r"a key of base\['kwargs'\]\['dropout'\] must be a string, got an int"),
    # a transformers base
    (_set(["base"], {**TRANSFORMERS_BASE, "class": "os:system"}),
     r"base\['class'\] names 'os:system', which is not a class of the transformers package"),
    (_set(["base"], {**TRANSFORMERS_BASE, "class": "transformers:_LazyModule"}), "not a class of the transformers package"),
    (_set(["base"], {**TRANSFORMERS_BASE, "config": [1]}), r"base\['config'\] must be an object, got a list"),
    (_set(["base"], {**TRANSFORMERS_BASE, "kwargs": {}}), r"base has unknown key\(s\) \['kwargs'\]"),
    (_set(["base"], {**TRANSFORMERS_BASE, "config": {"text_config": {"attn_implementation": "kernels-community/x"}}}),
     r"base\['config'\]\['text_config'\] sets 'attn_implementation', which shrinklib.save never writes"),
    (_set(["base"], {**TRANSFORMERS_BASE, "config": {"auto_map": {"AutoModel": "x.Y"}}}), "sets 'auto_map'"),
    # structure
    (_set(["structure"], {"op": "delete"}), "structure must be a list, got an object"),
    (_set(["structure", 0], ["module", "classifier"]), r"structure\[0\] must be an object, got a list"),
    (_delete(["structure", 0, "op"]), r"structure\[0\] has no 'op'"),
    (_set(["structure", 0, "op"], "exec"), r"structure\[0\] has unknown op 'exec'; known: \['delete', 'module', 'remove_tensor', 'tensor'\]"),
    (_delete(["structure", 3, "fqn"]), r"structure\[3\] has no 'fqn'"),
    (_delete(["structure", 1, "dtype"]), r"structure\[1\] has no 'dtype'"),
    (_set(["structure", 3, "class"], "x:Y"), r"structure\[3\] has unknown key\(s\) \['class'\]"),
    (_set(["structure", 3, "hook"], 1), r"structure\[3\] has unknown key\(s\) \['hook'\]"),
    (_set(["structure", 0, "class"], "subprocess:Popen"), r"structure\[0\]\['class'\] names 'subprocess:Popen'"),
    (_set(["structure", 0, "kwargs"], None), r"structure\[0\]\['kwargs'\] must be an object of constructor arguments, got null"),
    (_set(["structure", 0, "fqn"], 3), r"structure\[0\]\['fqn'\] must be a dotted name, got an int 3"),
    (_set(["structure", 0, "fqn"], "__class__"), r"structure\[0\]\['fqn'\] is not a dotted name of attributes and indices: '__class__'"),
    (_set(["structure", 0, "fqn"], ""), r"structure\[0\]\['fqn'\] is not a dotted name"),
    (_set(["structure", 3, "fqn"], "layers..0"), r"structure\[3\]\['fqn'\] is not a dotted name"),
    (_set(["structure", 1, "name"], "__dict__"), r"structure\[1\]\['name'\] must be a tensor name \(an identifier\), got '__dict__'"),
    (_set(["structure", 1, "tensor_kind"], "code"), r"structure\[1\]\['tensor_kind'\] must be 'parameter' or 'buffer', got 'code'"),
    (_set(["structure", 1, "shape"], "3x12"), r"structure\[1\]\['shape'\] must be a list of sizes, got a string"),
    (_set(["structure", 1, "shape"], [3, -1]), r"structure\[1\]\['shape'\]\[1\] must be an int >= 0, got -1"),
    (_set(["structure", 1, "shape"], [True]), r"structure\[1\]\['shape'\]\[0\] must be an int >= 0, got True"),
    (_set(["structure", 1, "dtype"], "load"), r"structure\[1\]\['dtype'\] must name a torch dtype .*got 'load'"),
    (_set(["structure", 1, "persistent"], "yes"), r"structure\[1\]\['persistent'\] must be true or false"),
    # changes
    (_set(["changes"], {"kind": "attention_heads"}), "changes must be a list, got an object"),
    (_set(["changes", 0], "attention_heads"), r"changes\[0\] must be an object, got a string"),
    (_delete(["changes", 0, "kind"]), r"changes\[0\] has no 'kind'"),
    (_set(["changes", 0, "kind"], ["attention_heads"]), r"changes\[0\]\['kind'\] must be a string, got a list"),
    (_set(["changes", 0, "kind"], "run_shell"), r"changes\[0\]\['kind'\] is 'run_shell', which no imported module registers"),
    (_set(["changes", 0, "provider"], 1), r"changes\[0\]\['provider'\] must be a string, got an int 1"),
    (_set(["changes", 0, "num_heads"], {2}), r"changes\[0\]\['num_heads'\] is a Python set, not a JSON value"),
    # aliases
    (_set(["aliases"], [["head.weight", "embedding.weight"]]), "aliases must be an object, got a list"),
    (_set(["aliases", "head.weight"], 3), r"aliases\['head.weight'\] must be a dotted name, got an int 3"),
    (_set(["aliases", "__class__.x"], "embedding.weight"), "a key of aliases is not a dotted name"),
]


@pytest.mark.parametrize("edit, message", MALFORMED, ids=[m for _, m in MALFORMED])
def test_a_malformed_record_is_refused_with_the_place_named(edit, message):
    with pytest.raises(ValueError, match=message) as refused:
        check_record(edited(edit))
    assert str(refused.value).startswith(RECORD_FILE)


@pytest.mark.parametrize("record, message", [
    ([VALID], "the record must be an object, got a list"),
    ("{}", "the record must be an object, got a string"),
    (None, "the record must be an object, got null"),
])
def test_a_record_that_is_not_an_object_is_refused(record, message):
    with pytest.raises(ValueError, match=message):
        check_record(record)


def test_the_source_prefixes_every_message():
    with pytest.raises(ValueError, match=r"^/some/folder/shrinklib.json: structure\[3\] has no 'fqn'$"):
        check_record(edited(_delete(["structure", 3, "fqn"])), source="/some/folder/shrinklib.json")


def test_load_refuses_a_malformed_file_before_building_anything(tmp_path):
    folder = shrinklib.save(zoo.tiny_lstm(), tmp_path / "m")
    record = json.loads((folder / RECORD_FILE).read_text())
    for broken, message in [
        ({**record, "structure": [{"op": "module", "fqn": "classifier"}]}, r"structure\[0\] has no 'class'"),
        ({**record, "base": [record["base"]]}, "base must be an object, got a list"),
        ({**record, "structure": [{"op": "chmod", "fqn": "classifier"}]}, r"structure\[0\] has unknown op 'chmod'"),
    ]:
        (folder / RECORD_FILE).write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=f"{re.escape(str(folder / RECORD_FILE))}: {message}"):
            shrinklib.load(folder)
    (folder / RECORD_FILE).write_text("{'format': 1}")
    with pytest.raises(ValueError, match="shrinklib.json is not valid JSON"):
        shrinklib.load(folder)
