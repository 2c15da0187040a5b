"""The allow-list of shrinklib.load: which classes it builds, which change kinds it replays,
which modules it may import, and that the lists match the source."""
import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from torch import nn

from shrinklib import rebuild, zoo
from shrinklib.rebuild import (
    CHANGE_PROVIDERS, PROVIDER_MODULES, TORCH_MODULE_ARGS, change_applier, class_path, is_known_change, may_build,
    model_class, module_class, module_spec, record_change, recorded_changes, register_module,
)

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {".".join(p.relative_to(ROOT).with_suffix("").parts): p.read_text()
           for p in (ROOT / "shrinklib").rglob("*.py")}


def test_the_provider_modules_are_exactly_those_that_register():
    registering = {name for name, text in SOURCES.items()
                   if "@register_module" in text or "@register_change(" in text}
    registering.discard("shrinklib.rebuild")
    assert registering == PROVIDER_MODULES
    kinds = {kind: name for name, text in SOURCES.items() for kind in re.findall(r'@register_change\("(\w+)"\)', text)}
    assert kinds == CHANGE_PROVIDERS


def test_every_shrinklib_module_class_with_rebuild_kwargs_is_registered():
    with_rebuild = {name for name, text in SOURCES.items() if "def rebuild_kwargs" in text}
    assert with_rebuild <= PROVIDER_MODULES
    for name in sorted(with_rebuild):
        module = importlib.import_module(name)
        for cls in vars(module).values():
            if inspect.isclass(cls) and issubclass(cls, nn.Module) and cls.__module__ == name and hasattr(cls, "rebuild_kwargs"):
                assert module_class(class_path(cls)) is cls, f"{class_path(cls)} is not registered"


def test_torch_layers_and_registered_classes_resolve():
    for cls in TORCH_MODULE_ARGS:
        assert module_class(class_path(cls)) is cls and may_build(class_path(cls))
    assert module_class("shrinklib.lstm:BiLSTMClassifier") is zoo.BiLSTMClassifier
    assert module_spec(nn.Linear(3, 2, bias=False)) == {
        "class": "torch.nn.modules.linear:Linear", "kwargs": {"in_features": 3, "out_features": 2, "bias": False}}
    assert module_spec(nn.Conv1d(1, 1, 1)) is None  # a torch layer load does not know


@pytest.mark.parametrize("path", ["os:system", "subprocess:Popen", "builtins:eval", "shrinklib.__main__:main",
                                  "shrinklib.lstm:torch", "shrinklib.lstm:nn", "torch.nn:Module", "", 3, None])
def test_module_class_refuses_what_is_not_allow_listed(path):
    with pytest.raises(ValueError, match="is not one shrinklib.load may build"):
        module_class(path)


def test_model_class_takes_exported_model_classes_by_name_only():
    from transformers import BertForSequenceClassification, LlamaForCausalLM

    assert model_class("transformers.models.bert.modeling_bert:BertForSequenceClassification") is BertForSequenceClassification
    assert model_class("transformers:LlamaForCausalLM") is LlamaForCausalLM
    for path in ["transformers:pipeline", "transformers:AutoConfig", "transformers:AutoModel", "transformers:PreTrainedModel",
                 "transformers:BertConfig", "transformers:_LazyModule", "transformers:os", "os:BertModel",
                 "transformers_evil:BertModel", "transformers:NoSuchModel", "transformers", 7]:
        with pytest.raises(ValueError, match="is not a Hugging Face model class that the transformers package exports"):
            model_class(path)


def test_change_appliers_come_from_the_registry_or_the_table():
    assert is_known_change("attention_heads") and not is_known_change("nope") and not is_known_change(["x"])
    assert callable(change_applier("attention_heads"))
    for kind in ("nope", "", None):
        with pytest.raises(ValueError, match="no applier for it is registered; import the module that registers it"):
            change_applier(kind)


def test_register_module_refuses_what_load_could_not_rebuild():
    with pytest.raises(TypeError, match="register_module takes a subclass of torch.nn.Module, got <function"):
        register_module(lambda: None)
    with pytest.raises(TypeError, match="register_module takes a subclass of torch.nn.Module, got <class 'int'>"):
        register_module(int)

    class NoKwargs(nn.Module):
        pass

    with pytest.raises(TypeError, match="NoKwargs has no rebuild_kwargs"):
        register_module(NoKwargs)


def test_an_unregistered_class_with_rebuild_kwargs_gets_no_spec_and_a_reason():
    class Mine(nn.Linear):
        def rebuild_kwargs(self):
            return {"in_features": 2, "out_features": 2}

    assert module_spec(Mine(2, 2)) is None
    assert "not registered with shrinklib.rebuild.register_module" in rebuild.cannot_build(Mine(2, 2))
    assert rebuild.cannot_build(nn.Conv1d(1, 1, 1)) == "has no rebuild_kwargs() method to say how to build it"


def test_record_change_refuses_unknown_kinds_reserved_keys_and_non_json(unchanged):
    model = zoo.tiny_bert()
    with unchanged(model):
        with pytest.raises(ValueError, match="no change of kind 'nope' is registered"):
            record_change(model, "nope")
    with unchanged(model):
        with pytest.raises(ValueError, match="may not use the keys 'kind' and 'provider'"):
            record_change(model, "attention_heads", provider="evil", fqn="x", num_heads=1)
    with unchanged(model):
        with pytest.raises(TypeError, match="must be JSON-serializable"):
            record_change(model, "attention_heads", fqn=object(), num_heads=1)
    assert recorded_changes(model) == []


def test_the_allow_list_imports_no_module_it_is_not_given(tmp_path):
    """A module named by a path is imported only if it is one of shrinklib's providers."""
    (tmp_path / "hostile_named.py").write_text(f"open({str(tmp_path / 'MARKER')!r}, 'w').close()\nclass X: pass\n")
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "from shrinklib import rebuild\n"
        "for call, arg in [(rebuild.module_class, 'hostile_named:X'), (rebuild.model_class, 'hostile_named:X'),\n"
        "                  (rebuild.model_class, 'transformers.hostile_named:X'), (rebuild.change_applier, 'hostile_named')]:\n"
        "    try:\n"
        "        call(arg)\n"
        "    except ValueError:\n"
        "        pass\n"
        "    else:\n"
        "        raise SystemExit('accepted ' + repr(arg))\n"
        "assert not rebuild.may_build('hostile_named:X') and not rebuild.is_known_change('hostile_named')\n"
        "print(sorted(m for m in sys.modules if 'hostile' in m))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert not (tmp_path / "MARKER").exists()

