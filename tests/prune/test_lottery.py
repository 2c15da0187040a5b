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


def _bad_states(model):
    """Rewind states that fail only on a parameter late in the model, with the (error, message) each must give."""
    state = prune.snapshot(model)
    last = list(state)[-1]
    return [
        ({}, ValueError, "the rewind state lacks parameters"),
        ({**state, last: torch.zeros(3)}, ValueError, rf"state\['{last}'\] has shape \(3,\), the parameter \(2,\)"),
        ({**state, "extra.weight": torch.zeros(1)}, ValueError, r"holds parameters this model does not have: \['extra.weight'\]"),
        ({**state, last: [0.0, 0.0]}, TypeError, rf"state\['{last}'\] must be a torch.Tensor, got list"),
        (list(state.values()), TypeError, "state must be a mapping"),
    ]


def test_bad_input(unchanged):
    model = prune.magnitude_(zoo.tiny_bert(), 0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # the model has moved away from every state below
    calls = []
    with unchanged(model), pytest.raises(ValueError, match="rounds must be a positive int"):
        prune.find_lottery_ticket(model, lambda m, r: None, final_sparsity=0.5, rounds=0)
    with unchanged(model), pytest.raises(TypeError, match="train must be callable"):
        prune.find_lottery_ticket(model, None, final_sparsity=0.5, rounds=2)
    with unchanged(model), pytest.raises(ValueError, match="scope must be one of"):
        prune.find_lottery_ticket(model, lambda m, r: calls.append(r), final_sparsity=0.5, rounds=2, scope="row")
    with unchanged(model), pytest.raises(ValueError, match="no prunable layer"):
        prune.find_lottery_ticket(model, lambda m, r: calls.append(r), final_sparsity=0.5, rounds=2,
                                  filter_fn=lambda m, fqn: False)
    with unchanged(model), pytest.raises(ValueError, match=r"final_sparsity|sparsity must be a number in \[0, 1\), got nan"):
        prune.find_lottery_ticket(model, lambda m, r: calls.append(r), final_sparsity=float("nan"), rounds=2)
    for state, error, message in _bad_states(zoo.tiny_bert()):
        with unchanged(model), pytest.raises(error, match=message):
            prune.rewind_(model, state)
        with unchanged(model), pytest.raises(error, match=message):
            prune.find_lottery_ticket(model, lambda m, r: calls.append(r), final_sparsity=0.5, rounds=2,
                                      rewind_state=state)
    assert calls == []  # every bad option was refused before the first round of training
