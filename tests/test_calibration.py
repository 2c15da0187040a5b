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


def _linears(model, *names):
    return {fqn: m for fqn, m in model.named_modules() if isinstance(m, torch.nn.Linear) and any(n in fqn for n in names)}


@pytest.mark.parametrize("failing", ["second layer", "outside the stack"])
def test_a_failure_part_way_through_sequential_calibration_puts_every_changed_module_back(failing, unchanged):
    """``change_fn`` changes each layer's modules every way a method could (weights in place, a new mask
    buffer, a replaced parameter, requires_grad) and then fails on a later call: the model must be as before."""
    from shrinklib import prune

    model = zoo.tiny_bert(num_layers=2)
    modules = _linears(model, "encoder.layer", "pooler")  # the pooler lies outside the stack: changed last
    batches = [{"input_ids": torch.randint(0, 1000, (2, 7), generator=torch.Generator().manual_seed(0))}]
    calls = []

    def change_fn(stats):
        calls.append(sorted(stats))
        if (failing == "second layer" and len(calls) == 2) or (failing == "outside the stack" and len(calls) == 3):
            raise RuntimeError("boom")
        for fqn in stats:
            module = modules[fqn]
            prune.set_mask_(module, torch.rand(module.weight.shape) > 0.5)
            module.weight.data.mul_(2)
            module.bias = torch.nn.Parameter(torch.zeros_like(module.bias))
            module.weight.requires_grad_(False)

    with unchanged(model), pytest.raises(RuntimeError, match="boom"):
        calibration.sequential_statistics(model, batches, modules, change_fn)
    assert len(calls) == (2 if failing == "second layer" else 3)
    assert calls[-1] == (["bert.pooler.dense"] if failing == "outside the stack" else sorted(_linears(model, "layer.1.")))


def test_sequential_calibration_that_succeeds_keeps_its_changes():
    model = zoo.tiny_bert(num_layers=2)
    modules = _linears(model, "encoder.layer")
    batches = [{"input_ids": torch.randint(0, 1000, (2, 7), generator=torch.Generator().manual_seed(0))}]

    def change_fn(stats):
        for fqn in stats:
            modules[fqn].weight.data.zero_()

    calibration.sequential_statistics(model, batches, modules, change_fn)
    assert all(torch.all(m.weight == 0) for m in modules.values())


BATCH = {"input_ids": torch.zeros(1, 4, dtype=torch.long)}


@pytest.mark.parametrize("call, error, message", [
    (lambda m, q: calibration.input_statistics("bert", [BATCH], {"q": q}), TypeError, "model must be a torch.nn.Module, got str"),
    (lambda m, q: calibration.input_statistics(m, "text", {"q": q}), TypeError, "batches must be an iterable of batches .*, got str"),
    (lambda m, q: calibration.input_statistics(m, 3, {"q": q}), TypeError, "batches must be an iterable of batches .*, got int"),
    (lambda m, q: calibration.input_statistics(m, [3], {"q": q}), TypeError, r"batches\[0\] must be a mapping \(a dict\), got int"),
    (lambda m, q: calibration.input_statistics(m, [BATCH], [q]), TypeError, r"modules must be a mapping \(a dict\), got list"),
    (lambda m, q: calibration.input_statistics(m, [BATCH], {"q": "query"}), TypeError, r"modules\['q'\] must be a torch.nn.Module"),
    (lambda m, q: calibration.input_statistics(m, [BATCH], {"n": m.bert.embeddings.LayerNorm}), TypeError,
     r"modules\['n'\] is a LayerNorm without an int in_features"),
    (lambda m, q: calibration.input_statistics(m, [BATCH], {}), ValueError, "no module to calibrate"),
    (lambda m, q: calibration.input_statistics(m, [BATCH], {"q": q}, max_batches=0), ValueError,
     "max_batches must be an int >= 1, got 0"),
    (lambda m, q: calibration.sequential_statistics(m, [BATCH], {"q": q}, 3), TypeError, "change_fn must be callable"),
    (lambda m, q: calibration.sequential_statistics(m, 3, {"q": q}, print), TypeError, "batches must be an iterable"),
    (lambda m, q: calibration.sequential_statistics(m, [BATCH], "q", print), TypeError, r"modules must be a mapping"),
    (lambda m, q: calibration.run_batches(m, [BATCH], 3), TypeError, "step must be callable"),
    (lambda m, q: calibration.run_batches(torch.nn.ReLU(), [BATCH], print), ValueError, "ReLU has no parameter"),
    (lambda m, q: calibration.is_cache(3, None), TypeError, "name must be a str, got int"),
    (lambda m, q: calibration.without_cache(["use_cache"]), TypeError, r"kwargs must be a mapping \(a dict\), got list"),
    (lambda m, q: calibration.recording_inputs([q]).__enter__(), TypeError, r"modules must be a mapping \(a dict\), got list"),
    (lambda m, q: calibration.inverse_hessian_cholesky(torch.eye(3), float("nan")), ValueError,
     "percdamp must be a finite number >= 0, got nan"),
    (lambda m, q: calibration.inverse_hessian_cholesky([[1.0]]), TypeError, "gram must be a torch.Tensor, got list"),
    (lambda m, q: calibration.inverse_hessian_cholesky(torch.eye(3) * float("nan")), ValueError, "gram must be a finite"),
    (lambda m, q: calibration.lm_batches([[1, 2]]), TypeError, "token_blocks must be a torch.Tensor, got list"),
    (lambda m, q: calibration.lm_batches(torch.zeros(2, 3), batch_size=0), ValueError, "batch_size must be an int >= 1, got 0"),
])
def test_bad_arguments_are_refused_by_name_before_anything_runs(call, error, message, unchanged):
    model = zoo.tiny_bert()
    query = model.bert.encoder.layer[0].attention.self.query
    with unchanged(model), pytest.raises(error, match=message):
        call(model, query)


def test_run_batches_puts_back_each_modules_own_mode():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.1)).eval()
    model[1].train()  # a mixed model: the root in eval, one child in train
    seen = []

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x):
            seen.append([m.training for m in self.modules()])
            return self.net(x)

    wrapper = Wrapper()
    calibration.run_batches(wrapper, [{"x": torch.ones(1, 2)}], lambda batch: wrapper(**batch))
    assert seen == [[False, False, False, False]]  # everything in eval inside
    assert [m.training for m in model] == [False, True]
