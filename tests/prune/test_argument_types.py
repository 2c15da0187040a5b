"""Every public function of ``shrinklib.prune`` refuses an argument of the wrong type up front.

A string or an int where a model, a list of batches or a mapping belongs must raise a
``TypeError`` that names the argument, not an ``AttributeError`` from deep inside, and a
model handed over with a wrong-typed companion argument must come out bit-identical.
"""
import pytest
import torch
from torch import nn

from shrinklib import prune, zoo
from shrinklib.calibration import lm_batches

BATCHES = lm_batches(torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0)), 2)


def _enter(context):
    with context:
        pass


#: ``name: call(model)`` for every public function that takes a model (or a layer) first.
TAKES_A_MODEL = {
    "set_mask_": lambda m: prune.set_mask_(m, torch.ones(2, dtype=torch.bool)),
    "masks": prune.masks,
    "param_masks": prune.param_masks,
    "apply_masks_": prune.apply_masks_,
    "keep_masks": prune.keep_masks,
    "make_permanent_": prune.make_permanent_,
    "magnitude_": lambda m: prune.magnitude_(m, 0.5),
    "magnitude_masks": lambda m: prune.magnitude_masks(m, 0.5),
    "prunable_weights": prune.prunable_weights,
    "nm_": prune.nm_,
    "block_": lambda m: prune.block_(m, 0.5, block=(4, 4)),
    "sparsify_24_": prune.sparsify_24_,
    "GradualMagnitude": lambda m: prune.GradualMagnitude(m, 0.5, start_step=0, end_step=10),
    "gate_importance": lambda m: prune.gate_importance(m, {"x": (nn.Linear(2, 2), 2)}, BATCHES),
    "head_importance": lambda m: prune.head_importance(m, BATCHES),
    "prune_heads_": lambda m: prune.prune_heads_(m, {0: [0]}),
    "neuron_importance": lambda m: prune.neuron_importance(m, BATCHES),
    "prune_neurons_": lambda m: prune.prune_neurons_(m, {0: [0]}),
    "drop_layers_": lambda m: prune.drop_layers_(m, [0]),
    "layer_drop": lambda m: _enter(prune.layer_drop(m, 0.5)),
    "wanda_": lambda m: prune.wanda_(m, BATCHES),
    "sparsegpt_": lambda m: prune.sparsegpt_(m, BATCHES),
    "see_prune_": prune.see_prune_,
    "weight_classes": prune.weight_classes,
    "find_lottery_ticket": lambda m: prune.find_lottery_ticket(m, lambda model, r: None, final_sparsity=0.5, rounds=1),
    "rewind_": lambda m: prune.rewind_(m, {}),
    "snapshot": prune.snapshot,
    "movement_": prune.movement_,
    "movement_layers": prune.movement_layers,
    "MovementSchedule": lambda m: prune.MovementSchedule(m, 0.5, start_step=0, end_step=10),
    "finalize_movement_": prune.finalize_movement_,
    "soft_movement_penalty": lambda m: prune.soft_movement_penalty(m, 0.1),
}


@pytest.mark.parametrize("bad", ["bert", 3], ids=["str", "int"])
@pytest.mark.parametrize("name", sorted(TAKES_A_MODEL))
def test_a_model_that_is_not_a_module_is_refused_by_name(name, bad):
    with pytest.raises(TypeError, match=f"model must be a torch.nn.Module, got {type(bad).__name__}"):
        TAKES_A_MODEL[name](bad)


#: ``(call(model), message)``: a wrong type for an argument other than the model; the model must not change.
WRONG_ARGUMENT = {
    "set_mask_ name": (lambda m: prune.set_mask_(m.classifier, torch.ones(2, 32, dtype=torch.bool), name=0),
                       "name must be a str, got int"),
    "select_smallest scores": (lambda m: prune.select_smallest([torch.ones(3)], 0.5, "layer"),
                               r"scores must be a mapping \(a dict\), got list"),
    "select_smallest scores values": (lambda m: prune.select_smallest({"w": [1.0, 2.0]}, 0.5, "layer"),
                                      r"scores\['w'\] must be a torch.Tensor, got list"),
    "nm_mask weight": (lambda m: prune.nm_mask([[1.0, 2.0, 3.0, 4.0]]), "weight must be a torch.Tensor, got list"),
    "is_nm_sparse weight": (lambda m: prune.is_nm_sparse("w"), "weight must be a torch.Tensor, got str"),
    "block_scores weight": (lambda m: prune.block_scores(3, (1, 1)), "weight must be a torch.Tensor, got int"),
    "expand_blocks block_mask": (lambda m: prune.expand_blocks([[True]], (2, 2)), "block_mask must be a torch.Tensor, got list"),
    "gate_importance sites": (lambda m: prune.gate_importance(m, [m.classifier], BATCHES), r"sites must be a mapping \(a dict\)"),
    "gate_importance site": (lambda m: prune.gate_importance(m, {"c": m.classifier}, BATCHES),
                             r"sites\['c'\] must be a \(module, units\) pair"),
    "gate_importance batches": (lambda m: prune.gate_importance(m, {"c": (m.classifier, 2)}, 3),
                                "batches must be an iterable of batches .*, got int"),
    "lowest_units scores": (lambda m: prune.lowest_units(3, 0.5), "scores must be a list of 1-D tensors, one per layer, got int"),
    "lowest_units score": (lambda m: prune.lowest_units([[0.1, 0.2]], 0.5), r"scores\[0\] must be a torch.Tensor, got list"),
    "head_importance batches": (lambda m: prune.head_importance(m, "text"), "batches must be an iterable of batches .*, got str"),
    "head_importance batch": (lambda m: prune.head_importance(m, ["text"]), r"batches\[0\] must be a mapping \(a dict\), got str"),
    "neuron_importance batches": (lambda m: prune.neuron_importance(m, 3), "batches must be an iterable of batches .*, got int"),
    "prune_heads_ heads": (lambda m: prune.prune_heads_(m, [(0, [1])]), r"heads must be a mapping \(a dict\), got list"),
    "prune_heads_ heads[0]": (lambda m: prune.prune_heads_(m, {0: 1}), r"heads\[0\] must be an iterable of head numbers, got int"),
    "prune_neurons_ keep": (lambda m: prune.prune_neurons_(m, 5), r"keep must be a mapping \(a dict\), got int"),
    "prune_neurons_ keep[0]": (lambda m: prune.prune_neurons_(m, {0: "12"}), r"keep\[0\] must be an iterable of neuron numbers, got str"),
    "drop_layers_ layers": (lambda m: prune.drop_layers_(m, 1), "layers must be an iterable of layer indices, got int"),
    "wanda_ batches": (lambda m: prune.wanda_(m, "some text"), "batches must be an iterable of batches .*, got str"),
    "wanda_ batch": (lambda m: prune.wanda_(m, [3]), r"batches\[0\] must be a mapping \(a dict\), got int"),
    "wanda_ sequential batch": (lambda m: prune.wanda_(m, [3], sequential=True), r"batches\[0\] must be a mapping"),
    "wanda_ filter_fn": (lambda m: prune.wanda_(m, BATCHES, filter_fn="query"), "filter_fn must be callable"),
    "sparsegpt_ batches": (lambda m: prune.sparsegpt_(m, 3), "batches must be an iterable of batches .*, got int"),
    "wanda_mask weight": (lambda m: prune.wanda_mask([[1.0]], torch.ones(1), 0.5), "weight must be a torch.Tensor, got list"),
    "wanda_scores sq_norm": (lambda m: prune.wanda_scores(torch.ones(1, 2), [1.0, 1.0]), "sq_norm must be a torch.Tensor, got list"),
    "sparsegpt_prune weight": (lambda m: prune.sparsegpt_prune("w", torch.eye(2), 0.5), "weight must be a torch.Tensor, got str"),
    "sparsegpt_prune gram": (lambda m: prune.sparsegpt_prune(torch.ones(2, 2), [[1.0, 0.0], [0.0, 1.0]], 0.5),
                             "gram must be a torch.Tensor, got list"),
    "precomputed_statistics modules": (lambda m: prune.precomputed_statistics(BATCHES, None, [m.classifier]),
                                       r"modules must be a mapping \(a dict\), got list"),
    "check_one_shot_layers modules": (lambda m: prune.check_one_shot_layers("q_proj"), r"modules must be a mapping \(a dict\), got str"),
    "find_lottery_ticket rewind_state": (lambda m: prune.find_lottery_ticket(m, lambda model, r: None, final_sparsity=0.5, rounds=1,
                                                                             rewind_state=[]), r"state must be a mapping \(a dict\), got list"),
    "rewind_ state": (lambda m: prune.rewind_(m, "state.pt"), r"state must be a mapping \(a dict\), got str"),
    "weight_classes filter_fn": (lambda m: prune.weight_classes(m, filter_fn=3), "filter_fn must be callable"),
    "sparsify_24_ filter_fn": (lambda m: prune.sparsify_24_(m, filter_fn="encoder"), "filter_fn must be callable"),
}


@pytest.mark.parametrize("name", sorted(WRONG_ARGUMENT))
def test_a_wrong_type_is_refused_by_name_and_the_model_is_left_as_it_was(name, unchanged):
    call, message = WRONG_ARGUMENT[name]
    model = zoo.tiny_bert()
    with unchanged(model), pytest.raises(TypeError, match=message):
        call(model)
