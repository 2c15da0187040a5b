import importlib

import pytest
import torch

import shrinklib
from shrinklib import prune, zoo
from shrinklib.calibration import input_statistics, lm_batches


@pytest.mark.parametrize("method", ["wanda_", "sparsegpt_"])
def test_one_shot_pruning_of_a_decoder(method, tmp_path):
    model = zoo.tiny_llama()
    blocks = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(0))
    head = model.lm_head.weight.clone()
    getattr(prune, method)(model, lm_batches(blocks, 4), 0.5)
    masks = prune.masks(model)
    assert len(masks) == 2 * 7 and "lm_head" not in masks  # q, k, v, o, gate, up, down per layer
    assert sum(int((~m).sum()) for m in masks.values()) == sum(round(0.5 * m.numel()) for m in masks.values())
    assert torch.equal(model.lm_head.weight, head)
    loaded = shrinklib.load(shrinklib.save(model, tmp_path / "m"))
    x = blocks[:2]
    assert torch.equal(loaded(x).logits, model(x).logits)


def _layer_by_layer(model, batches, sparsity, method):
    """Reference for ``sequential=True``, by hand: layer i is calibrated by a full forward pass of the
    model whose layers before i are already pruned, with hooks on layer i's Linears only.
    Returns the model and the statistics each layer was pruned with."""
    seen = {}
    for index, layer in enumerate(model.model.layers):
        modules = {fqn: m for fqn, m in layer.named_modules() if isinstance(m, torch.nn.Linear)}
        stats = input_statistics(model, batches, modules, gram=method == "sparsegpt_")
        for fqn, m in modules.items():
            if method == "wanda_":
                prune.set_mask_(m, prune.wanda_mask(m.weight, stats[fqn].sq_norm, sparsity))
            else:
                weight, keep = prune.sparsegpt_prune(m.weight, stats[fqn].gram, sparsity)
                m.weight.data.copy_(weight)
                prune.set_mask_(m, keep)
        seen.update({f"model.layers.{index}.{fqn}": s for fqn, s in stats.items()})
    return model, seen


def _recording_sequential_statistics(monkeypatch, method):
    """Make ``method``'s module record the statistics its sequential path prunes each layer with."""
    from shrinklib import calibration

    module = importlib.import_module(getattr(prune, method).__module__)
    seen = {}

    def recording(model, batches, modules, change_fn, **kwargs):
        def record_then_prune(stats):
            seen.update(stats)
            change_fn(stats)

        return calibration.sequential_statistics(model, batches, modules, record_then_prune, **kwargs)

    monkeypatch.setattr(module, "sequential_statistics", recording)
    return seen


def _assert_same_masks_up_to_ties(a, b, weight, stats, fqn):
    """Two masks from statistics that agree to float rounding: equal, except where a score ties.

    Wanda's masks may differ only at entries whose score lies within a relative 1e-5 of the
    row's threshold (the largest pruned score). SparseGPT picks column by column inside a
    block and compensates the rest of the row, so one tie can move a few later choices of
    its row: at most 0.5% of the entries may differ.
    """
    differ = a != b
    if not differ.any():
        return
    if stats.gram is None:
        scores = prune.wanda_scores(weight, stats.sq_norm)
        threshold = torch.where(b, torch.full_like(scores, -torch.inf), scores).amax(1, keepdim=True)
        near = (scores - threshold).abs() <= 1e-5 * threshold
        assert bool(near[differ].all()), f"{fqn}: masks differ away from the threshold"
    else:
        assert float(differ.float().mean()) <= 0.005, f"{fqn}: {int(differ.sum())} of {differ.numel()} entries differ"


@pytest.mark.parametrize("method", ["wanda_", "sparsegpt_"])
def test_sequential_calibration_is_the_layer_by_layer_loop_and_differs_from_one_pass(method, monkeypatch):
    blocks = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(0))
    batches = lm_batches(blocks, 4)
    one_pass = getattr(prune, method)(zoo.tiny_llama(), batches, 0.5)
    dense = {fqn: m.weight.detach().clone() for fqn, m in zoo.tiny_llama().named_modules()
             if isinstance(m, torch.nn.Linear)}
    seen = _recording_sequential_statistics(monkeypatch, method)
    sequential = getattr(prune, method)(zoo.tiny_llama(), iter(batches), 0.5, sequential=True)  # one pass over batches
    by_hand, seen_by_hand = _layer_by_layer(zoo.tiny_llama(), batches, 0.5, method)
    seq, ref, one = prune.masks(sequential), prune.masks(by_hand), prune.masks(one_pass)
    assert seq.keys() == ref.keys() == one.keys() == seen.keys() == seen_by_hand.keys() and len(seq) == 14
    # each layer was pruned with the statistics of the partly pruned model's full forward pass
    for fqn in seq:
        mine, theirs = seen[fqn], seen_by_hand[fqn]
        assert mine.tokens == theirs.tokens == blocks.numel(), fqn
        assert torch.allclose(mine.sq_norm, theirs.sq_norm, rtol=1e-6, atol=1e-9), fqn
        if method == "sparsegpt_":
            assert torch.allclose(mine.gram, theirs.gram, rtol=1e-6, atol=1e-9), fqn
        _assert_same_masks_up_to_ties(seq[fqn], ref[fqn], dense[fqn], theirs, fqn)
    tied = {f"{fqn}.weight" for fqn in seq if not torch.equal(seq[fqn], ref[fqn])}  # compensated differently
    for (name, a), b in zip(sequential.named_parameters(), by_hand.parameters()):
        assert name in tied or torch.allclose(a, b, atol=1e-6), name
    # the first layer sees the dense model's inputs either way; the second sees pruned ones
    first = [fqn for fqn in seq if ".layers.0." in fqn]
    second = [fqn for fqn in seq if ".layers.1." in fqn]
    for fqn in first:
        _assert_same_masks_up_to_ties(seq[fqn], one[fqn], dense[fqn], seen[fqn], fqn)
    assert not all(torch.equal(seq[fqn], one[fqn]) for fqn in second)


def test_sequential_calibration_of_an_encoder():
    """BERT's layers take the mask positionally; the pooler lies outside the stack and is calibrated last."""
    from shrinklib import zoo
    from shrinklib.arch import blocks

    model = zoo.tiny_bert()
    batch = {"input_ids": torch.randint(0, 1000, (4, 12), generator=torch.Generator().manual_seed(0)),
             "attention_mask": torch.ones(4, 12, dtype=torch.long), "labels": torch.zeros(4, dtype=torch.long)}
    batch["attention_mask"][:2, 8:] = 0
    assert blocks(model) is model.bert.encoder.layer
    before = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    body_and_pooler = lambda m, fqn: isinstance(m, torch.nn.Linear) and "classifier" not in fqn  # noqa: E731
    prune.wanda_(model, [batch], 0.5, sequential=True, filter_fn=body_and_pooler)
    masks = prune.masks(model)
    assert len(masks) == 2 * 6 + 1 and "bert.pooler.dense" in masks
    assert all(int((~m).sum()) == round(0.5 * m.numel()) for m in masks.values())
    assert not torch.allclose(model(**{k: v for k, v in batch.items() if k != "labels"}).logits, before)


@pytest.mark.parametrize("call, message", [
    (lambda: prune.sparsegpt_prune(torch.zeros(3, 4), torch.eye(5), 0.5), r"gram must be \(4, 4\)"),
    (lambda: prune.sparsegpt_prune(torch.zeros(3, 4), torch.eye(4), 1.0), r"sparsity must be a number in \[0, 1\)"),
    (lambda: prune.sparsegpt_prune(torch.zeros(3, 4), torch.eye(4), 0.5, percdamp=float("nan")),
     "percdamp must be a finite number >= 0, got nan"),
    (lambda: prune.sparsegpt_prune(torch.zeros(3, 4), torch.eye(4) * float("inf"), 0.5), "gram must be a finite"),
    (lambda: prune.sparsegpt_prune(torch.zeros(3, 4), torch.eye(4), 0.5, blocksize=0), "blocksize must be an int >= 1, got 0"),
    (lambda: prune.wanda_mask(torch.zeros(3, 4), torch.ones(5), 0.5), r"sq_norm \(in,\), got shapes \(3, 4\) and \(5,\)"),
    (lambda: prune.wanda_mask(torch.zeros(3, 4), torch.ones(4), 0.5, nm=2), r"nm must be an \(n, m\) pair"),
    (lambda: lm_batches(torch.zeros(5)), "token_blocks must be"),
])
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


BATCHES = lm_batches(torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0)), 4)


@pytest.mark.parametrize("call, error, message", [
    (lambda m: prune.wanda_(m, [], 0.5), ValueError, "no calibration batch"),
    (lambda m: prune.sparsegpt_(m, [], 0.5, sequential=True), ValueError, "no calibration batch"),
    (lambda m: prune.wanda_(m, BATCHES, float("nan")), ValueError, r"sparsity must be a number in \[0, 1\), got nan"),
    (lambda m: prune.sparsegpt_(m, BATCHES, percdamp=float("inf")), ValueError, "percdamp must be a finite number >= 0, got inf"),
    (lambda m: prune.sparsegpt_(m, BATCHES, percdamp=-0.1, sequential=True), ValueError, "percdamp must be a finite number >= 0"),
    (lambda m: prune.sparsegpt_(m, BATCHES, blocksize=0), ValueError, "blocksize must be an int >= 1, got 0"),
    (lambda m: prune.sparsegpt_(m, BATCHES, nm=(2, 4), blocksize=6), ValueError, r"blocksize \(6\) must be a multiple of m=4"),
    (lambda m: prune.wanda_(m, BATCHES, nm=(2, 4, 8), sequential=True), ValueError, r"nm must be an \(n, m\) pair"),
    (lambda m: prune.wanda_(m, BATCHES, max_batches=0), ValueError, "max_batches must be an int >= 1, got 0"),
    (lambda m: prune.wanda_(m, BATCHES, sequential="yes"), TypeError, "sequential must be True or False"),
    (lambda m: prune.wanda_(m, BATCHES, filter_fn=lambda mod, fqn: "norm" in fqn), TypeError, "Wanda and SparseGPT prune Linear layers"),
])
def test_bad_input_leaves_the_model_as_it_was(call, error, message, unchanged):
    model = zoo.tiny_llama()
    with unchanged(model), pytest.raises(error, match=message):
        call(model)


@pytest.mark.parametrize("method", ["wanda_", "sparsegpt_"])
def test_a_later_layer_that_does_not_fit_nm_is_refused_before_the_first_is_pruned(method, unchanged):
    """Layer 1's down_proj has 50 inputs, no multiple of 4; layer 0's (also 50) is left out, so layer 0 alone would prune."""
    model = zoo.tiny_llama(intermediate_size=50)
    pick = lambda m, fqn: isinstance(m, torch.nn.Linear) and fqn != "model.layers.0.mlp.down_proj" and "lm_head" not in fqn  # noqa: E731
    with unchanged(model), pytest.raises(ValueError, match=r"model.layers.1.mlp.down_proj: the input dimension \(50\) "
                                                           "must be a multiple of m=4 for 2:4 sparsity"):
        getattr(prune, method)(model, BATCHES, nm=(2, 4), sequential=True, filter_fn=pick)
    layer_0 = lambda m, fqn: pick(m, fqn) and ".layers.0." in fqn  # noqa: E731
    assert len(prune.masks(getattr(prune, method)(model, BATCHES, nm=(2, 4), sequential=True, filter_fn=layer_0))) == 6


def test_a_singular_gram_matrix_in_a_later_layer_puts_the_pruned_layers_back(unchanged, monkeypatch):
    """40 distinct tokens: layer 0's q_proj (32 inputs) has a positive definite Gram matrix and is pruned;
    layer 1's down_proj (48 inputs) cannot have one, and with percdamp=0 its Cholesky factorization fails."""
    model = zoo.tiny_llama()
    batches = [{"input_ids": torch.randperm(64, generator=torch.Generator().manual_seed(0))[None, :40]}]
    pick = lambda m, fqn: fqn in ("model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj")  # noqa: E731
    pruned = []
    import shrinklib.prune.sparsegpt as module

    def recording(weight, gram, *args, **kwargs):
        result = prune.sparsegpt_prune(weight, gram, *args, **kwargs)
        pruned.append(weight.shape)
        return result

    monkeypatch.setattr(module, "sparsegpt_prune", recording)
    with unchanged(model), pytest.raises(torch.linalg.LinAlgError, match="not positive-definite"):
        prune.sparsegpt_(model, batches, 0.5, percdamp=0.0, sequential=True, filter_fn=pick)
    assert pruned == [(32, 32)]  # layer 0 was pruned, then put back
    prune.sparsegpt_(model, batches, 0.5, sequential=True, filter_fn=pick)  # damped: both layers prune
    assert len(prune.masks(model)) == 2


@pytest.mark.parametrize("method, options", [
    ("wanda_", {}), ("wanda_", {"nm": (2, 4)}),
    ("sparsegpt_", {}), ("sparsegpt_", {"nm": (2, 4), "blocksize": 8, "percdamp": 0.1}),
    ("sparsegpt_", {"blocksize": 24, "percdamp": 0.0}),
])
def test_precomputed_stats_prune_exactly_as_the_batches_they_were_read_from(method, options):
    batches = lm_batches(torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(0)), 4)
    attention = lambda m, fqn: isinstance(m, torch.nn.Linear) and "self_attn" in fqn  # noqa: E731
    dense = zoo.tiny_llama()
    stats = input_statistics(dense, batches, prune.prunable_weights(dense, attention), gram=True)
    from_batches = getattr(prune, method)(zoo.tiny_llama(), batches, 0.3, filter_fn=attention, **options)
    from_stats = getattr(prune, method)(zoo.tiny_llama(), sparsity=0.3, stats=stats, filter_fn=attention, **options)
    assert prune.masks(from_stats).keys() == prune.masks(from_batches).keys() and len(prune.masks(from_stats)) == 8
    for (name, a), (other, b) in zip(from_stats.state_dict().items(), from_batches.state_dict().items()):
        assert name == other and torch.equal(a, b), name
    assert not torch.equal(from_stats.model.layers[0].self_attn.q_proj.weight, dense.model.layers[0].self_attn.q_proj.weight)


def _stats_of(model, gram=True):
    batches = lm_batches(torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(1)), 4)
    return input_statistics(model, batches, prune.prunable_weights(model), gram=gram)


def _with(stats, fqn, **changes):
    import dataclasses

    return {**stats, fqn: dataclasses.replace(stats[fqn], **changes)}


Q = "model.layers.0.self_attn.q_proj"


@pytest.mark.parametrize("call, error, message", [
    (lambda m, s: prune.wanda_(m, sparsity=0.5), ValueError, "give calibration batches or precomputed stats, exactly one"),
    (lambda m, s: prune.sparsegpt_(m), ValueError, "give calibration batches or precomputed stats, exactly one"),
    (lambda m, s: prune.wanda_(m, [{"input_ids": torch.zeros(1, 4, dtype=torch.long)}], stats=s), ValueError,
     "exactly one of them"),
    (lambda m, s: prune.wanda_(m, stats=s, sequential=True), ValueError, "sequential=True .* needs batches"),
    (lambda m, s: prune.sparsegpt_(m, stats=s, max_batches=2), ValueError, "with precomputed stats it must be None, got 2"),
    (lambda m, s: prune.wanda_(m, stats=[s]), TypeError, "stats must be a dict of InputStats by module name, got list"),
    (lambda m, s: prune.wanda_(m, stats={k: v for k, v in s.items() if k != Q}), ValueError,
     r"exactly the modules to prune: missing \['model.layers.0.self_attn.q_proj'\], not pruned \[\]"),
    (lambda m, s: prune.wanda_(m, stats={**s, "lm_head": s[Q]}), ValueError, r"missing \[\], not pruned \['lm_head'\]"),
    (lambda m, s: prune.wanda_(m, stats={**s, Q: s[Q].sq_norm}), TypeError,
     r"stats\['model.layers.0.self_attn.q_proj'\] must be an InputStats, got Tensor"),
    (lambda m, s: prune.wanda_(m, stats=_with(s, Q, sq_norm=torch.ones(5))), ValueError,
     r"sq_norm must have shape \(32,\) for model.layers.0.self_attn.q_proj's 32 inputs, got \(5,\)"),
    (lambda m, s: prune.wanda_(m, stats=_with(s, Q, tokens=0)), ValueError, "saw no token"),
    (lambda m, s: prune.sparsegpt_(m, stats=_with(s, Q, gram=None)), ValueError,
     r"has no Gram matrix: SparseGPT needs input_statistics\(..., gram=True\)"),
    (lambda m, s: prune.sparsegpt_(m, stats=_with(s, Q, gram=torch.eye(3))), ValueError,
     r"gram must have shape \(32, 32\), got \(3, 3\)"),
])
def test_bad_precomputed_stats_are_refused_before_any_layer_changes(call, error, message, unchanged):
    model = zoo.tiny_llama()
    stats = _stats_of(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with unchanged(model), pytest.raises(error, match=message):
        call(model, stats)
    assert prune.masks(model) == {}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_wanda_needs_no_gram_matrix():
    model = zoo.tiny_llama()
    stats = _stats_of(model, gram=False)
    expected = prune.wanda_(zoo.tiny_llama(), sparsity=0.5, stats=_stats_of(zoo.tiny_llama()))
    assert all(torch.equal(a, b) for a, b in zip(prune.wanda_(model, sparsity=0.5, stats=stats).state_dict().values(),
                                                 expected.state_dict().values()))
    assert prune.precomputed_statistics([], None, prune.prunable_weights(model)) is None
