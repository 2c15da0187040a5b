import pytest
import torch
from torch import nn

import shrinklib
from shrinklib import prune, zoo


def _lstm():
    return zoo.tiny_lstm(vocab_size=97, embed_dim=10, hidden_size=14, seed=3)


def _weights(model):
    return {k: getattr(m, n).detach().clone() for k, (m, n) in prune.weight_classes(model).items()}


def test_classes_are_the_weight_matrices():
    assert list(prune.weight_classes(_lstm())) == [
        "embedding.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.weight_ih_l0_reverse",
        "lstm.weight_hh_l0_reverse", "classifier.weight"]


@pytest.mark.parametrize("scheme", prune.SCHEMES)
def test_each_scheme_prunes_the_share_its_rule_says(scheme):
    model = _lstm()
    before = _weights(model)
    prune.see_prune_(model, 0.6, scheme=scheme)
    masks = prune.param_masks(model)
    assert masks.keys() == before.keys()
    total = sum(w.numel() for w in before.values())
    if scheme == "class-uniform":
        for key, mask in masks.items():
            assert int((~mask).sum()) == round(0.6 * mask.numel()), key
    else:
        assert sum(int((~m).sum()) for m in masks.values()) == round(0.6 * total)
        score = {k: w.abs() / (w.std() if scheme == "class-distribution" else 1) for k, w in before.items()}
        pruned = torch.cat([score[k][~masks[k]] for k in masks])
        kept = torch.cat([score[k][masks[k]] for k in masks])
        assert pruned.max() <= kept.min()
    for key, mask in masks.items():
        module, name = prune.weight_classes(model)[key]
        assert torch.all(getattr(module, name)[~mask] == 0)


def test_class_blind_and_class_distribution_differ_from_uniform():
    shares = {}
    for scheme in prune.SCHEMES:
        masks = prune.param_masks(prune.see_prune_(_lstm(), 0.6, scheme=scheme))
        shares[scheme] = {k: float((~m).float().mean()) for k, m in masks.items()}
    assert len({round(v, 3) for v in shares["class-blind"].values()}) > 1  # classes lose different shares
    assert shares["class-blind"] != shares["class-distribution"]


def test_pruned_lstm_trains_with_zeros_held_and_reloads(tmp_path):
    from datasets import Dataset

    from shrinklib.train import TrainConfig, fit

    model = prune.see_prune_(_lstm(), 0.5)
    ids = torch.randint(1, 97, (64, 7), generator=torch.Generator().manual_seed(0))
    data = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist(),
                              "label": (ids[:, 0] > 48).long().tolist()})

    class Pad:
        def pad(self, examples, return_tensors="pt"):
            return {k: torch.tensor([e[k] for e in examples]) for k in examples[0]}

    fit(model, data, TrainConfig(max_steps=5, batch_size=8, lr=1e-2, progress=False), tokenizer=Pad(),
        callbacks=[prune.keep_masks(model)])
    for key, mask in prune.param_masks(model).items():
        module, name = prune.weight_classes(model)[key]
        assert torch.all(getattr(module, name)[~mask] == 0), key
    loaded = shrinklib.load(shrinklib.save(model.eval(), tmp_path / "m"))
    assert prune.param_masks(loaded).keys() == prune.param_masks(model).keys()
    assert torch.equal(loaded(ids[:3]).logits, model(ids[:3]).logits)
    prune.make_permanent_(loaded)
    assert prune.param_masks(loaded) == {}


def test_bad_input(unchanged):
    model = prune.see_prune_(_lstm(), 0.3)  # already pruned once: its masks must survive a failed call
    with unchanged(model), pytest.raises(ValueError, match="scheme must be one of"):
        prune.see_prune_(model, 0.5, scheme="class-random")
    with pytest.raises(ValueError, match="no prunable weight matrix"):
        prune.see_prune_(nn.Sequential(nn.ReLU()), 0.5)
    with unchanged(model), pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)"):
        prune.see_prune_(model, 1.2)
    with unchanged(model), pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\), got nan"):
        prune.see_prune_(model, float("nan"))
    with unchanged(model), pytest.raises(TypeError, match="filter_fn must be callable"):
        prune.see_prune_(model, 0.5, filter_fn="lstm")


@pytest.mark.parametrize("sparsity", [0.3, 0.7])
def test_filter_fn_picks_the_modules_whose_matrices_are_pruned_class_blind_as_torch_would(sparsity):
    import torch.nn.utils.prune as torch_prune

    model = _lstm()
    reference = _lstm()
    before = _weights(model)
    prune.see_prune_(model, sparsity, filter_fn=lambda module, fqn: fqn == "lstm")
    masks = prune.param_masks(model)
    assert list(masks) == ["lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.weight_ih_l0_reverse", "lstm.weight_hh_l0_reverse"]
    assert torch.equal(model.embedding.weight, before["embedding.weight"])  # not picked: untouched
    assert torch.equal(model.classifier.weight, before["classifier.weight"])
    names = [key.split(".", 1)[1] for key in masks]
    torch_prune.global_unstructured([(reference.lstm, name) for name in names],
                                    pruning_method=torch_prune.L1Unstructured, amount=sparsity)
    for key, name in zip(masks, names):
        assert torch.equal(masks[key], getattr(reference.lstm, name + "_mask").bool()), key
    assert list(prune.weight_classes(model, filter_fn=lambda module, fqn: fqn == "lstm")) == list(masks)
    with pytest.raises(ValueError, match="no prunable weight matrix in this BiLSTMClassifier"):
        prune.see_prune_(_lstm(), 0.5, filter_fn=lambda module, fqn: False)
