import pytest
import torch

from shrinklib import prune, zoo


def test_round_sparsities_prune_the_same_share_of_what_remains():
    s = prune.round_sparsities(0.875, 3)
    assert s == pytest.approx([0.5, 0.75, 0.875])


def test_ticket_is_the_rewind_state_under_nested_masks():
    model = zoo.tiny_bert(seed=4)
    start = prune.snapshot(model)
    calls = []

    def train(m, r):  # stands in for fine-tuning: moves every weight the masks let move
        calls.append(r)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        prune.apply_masks_(m)

    history = prune.find_lottery_ticket(model, train, final_sparsity=0.875, rounds=3)
    assert calls == [1, 2, 3]
    assert [round(h["sparsity"], 3) for h in history] == [0.5, 0.75, 0.875]
    masks = prune.masks(model)
    for fqn, mask in masks.items():
        weight = model.get_submodule(fqn).weight
        assert torch.equal(weight[mask], start[f"{fqn}.weight"][mask])  # survivors are rewound
        assert torch.all(weight[~mask] == 0)
    assert torch.equal(model.classifier.weight, start["classifier.weight"])  # head rewound, never pruned


def test_rounds_only_add_zeros():
    model = zoo.tiny_bert(seed=5)
    seen = []

    def train(m, r):
        seen.append({k: v.clone() for k, v in prune.masks(m).items()})

    prune.find_lottery_ticket(model, train, final_sparsity=0.75, rounds=2)
    before, final = seen[1], prune.masks(model)
    for fqn in before:
        assert not torch.any(final[fqn] & ~before[fqn])


def test_bad_input():
    model = zoo.tiny_bert()
    with pytest.raises(ValueError, match="rounds must be a positive int"):
        prune.find_lottery_ticket(model, lambda m, r: None, final_sparsity=0.5, rounds=0)
    with pytest.raises(TypeError, match="train must be callable"):
        prune.find_lottery_ticket(model, None, final_sparsity=0.5, rounds=2)
    with pytest.raises(ValueError, match="the rewind state lacks parameters"):
        prune.rewind_(model, {})
