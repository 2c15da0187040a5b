import pytest
import torch
from torch import nn

import shrinklib
from shrinklib import prune, zoo


def test_set_mask_checks_shapes(unchanged):
    layer = nn.Linear(4, 3)
    with unchanged(layer), pytest.raises(ValueError, match=r"mask shape \(2, 2\) does not match weight shape \(3, 4\)"):
        prune.set_mask_(layer, torch.ones(2, 2, dtype=torch.bool))
    with unchanged(layer), pytest.raises(TypeError, match="mask must be a torch.Tensor, got list"):
        prune.set_mask_(layer, [[True] * 4] * 3)
    with pytest.raises(TypeError, match="ReLU has no weight tensor to mask"):
        prune.set_mask_(nn.ReLU(), torch.ones(1))


def test_masks_survive_save_and_load(tmp_path):
    model = prune.magnitude_(zoo.tiny_bert(), 0.5)
    loaded = shrinklib.load(shrinklib.save(model, tmp_path / "m"))
    assert prune.masks(loaded).keys() == prune.masks(model).keys()
    for fqn, mask in prune.masks(model).items():
        assert torch.equal(prune.masks(loaded)[fqn], mask)
    x = torch.randint(0, 1000, (2, 9))
    assert torch.equal(model(x).logits, loaded(x).logits)


def test_make_permanent_drops_the_buffers_and_keeps_the_zeros():
    model = prune.magnitude_(zoo.tiny_bert(), 0.5)
    zeros = {fqn: ~m for fqn, m in prune.masks(model).items()}
    prune.make_permanent_(model)
    assert prune.masks(model) == {}
    for fqn, z in zeros.items():
        assert torch.all(model.get_submodule(fqn).weight[z] == 0)


def test_a_mask_of_the_wrong_shape_is_found_before_any_weight_changes(unchanged):
    model = prune.magnitude_(zoo.tiny_bert(), 0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # training moved every weight, the pruned ones too
    last = model.bert.encoder.layer[-1].output.dense
    last._buffers["weight_mask"] = last.weight_mask[:, :3]  # a mask broken by hand
    for fix in (prune.apply_masks_, prune.make_permanent_):
        with unchanged(model), pytest.raises(ValueError, match=r"layer.1.output.dense.weight_mask has shape \(32, 3\), weight \(32, 64\)"):
            fix(model)
