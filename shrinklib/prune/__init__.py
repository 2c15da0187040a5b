"""Pruning (chapter 2): remove weights, neurons, heads or layers a model can do without.

* :mod:`~shrinklib.prune.masks` - masks as ``weight_mask`` buffers, kept through training.
* :mod:`~shrinklib.prune.magnitude` - unstructured magnitude pruning, layer-wise or global.
* :mod:`~shrinklib.prune.schedule` - gradual pruning on the cubic schedule of Zhu & Gupta.
* :mod:`~shrinklib.prune.nm` - N:M semi-structured sparsity (2:4).
* :mod:`~shrinklib.prune.block` - block pruning (whole tiles of a weight).
* :mod:`~shrinklib.prune.sparse_linear` - 2:4 layers stored compressed, run by the Triton kernel.
* :mod:`~shrinklib.prune.gates` - gradient importance of heads and neurons.
* :mod:`~shrinklib.prune.heads`, :mod:`~shrinklib.prune.neurons`, :mod:`~shrinklib.prune.layers` -
  structured pruning that makes the model physically smaller.
* :mod:`~shrinklib.prune.wanda`, :mod:`~shrinklib.prune.sparsegpt` - one-shot pruning of a decoder
  with calibration data (:mod:`shrinklib.calibration`), read from batches or handed over
  once as statistics (:mod:`~shrinklib.prune.oneshot`).
* :mod:`~shrinklib.prune.recurrent` - the class-blind/uniform/distribution schemes of See et al. for LSTMs.
* :mod:`~shrinklib.prune.lottery` - lottery tickets: iterative magnitude pruning with rewinding.
* :mod:`~shrinklib.prune.movement` - movement pruning (hard and soft) with learned scores.
"""
from shrinklib.prune.block import CRITERIA, block_, block_scores, expand_blocks
from shrinklib.prune.gates import gate_importance, lowest_units
from shrinklib.prune.heads import head_importance, prune_heads_
from shrinklib.prune.layers import STRATEGIES, drop_layers_, layer_drop, layers_to_drop
from shrinklib.prune.lottery import find_lottery_ticket, rewind_, round_sparsities, snapshot
from shrinklib.prune.magnitude import SCOPES, magnitude_, magnitude_masks, prunable_weights, select_smallest
from shrinklib.prune.masks import MASK, SUFFIX, apply_masks_, keep_masks, make_permanent_, masks, param_masks, set_mask_
from shrinklib.prune.movement import (
    METHODS,
    SCORE_UPDATES,
    MovementLinear,
    MovementSchedule,
    finalize_movement_,
    movement_,
    movement_layers,
    soft_movement_penalty,
)
from shrinklib.prune.neurons import neuron_importance, prune_neurons_
from shrinklib.prune.nm import check_nm, check_nm_pair, is_nm_sparse, nm_, nm_mask
from shrinklib.prune.oneshot import check_one_shot_layers, precomputed_statistics
from shrinklib.prune.recurrent import SCHEMES, see_prune_, weight_classes
from shrinklib.prune.schedule import GradualMagnitude, cubic_sparsity
from shrinklib.prune.sparse_linear import SparseLinear, sparsify_24_
from shrinklib.prune.sparsegpt import sparsegpt_, sparsegpt_prune
from shrinklib.prune.wanda import wanda_, wanda_mask, wanda_scores

__all__ = [
    "MASK", "SUFFIX", "set_mask_", "masks", "param_masks", "apply_masks_", "keep_masks", "make_permanent_",
    "SCOPES", "magnitude_", "magnitude_masks", "prunable_weights", "select_smallest",
    "nm_", "nm_mask", "is_nm_sparse", "check_nm", "check_nm_pair", "CRITERIA", "block_", "block_scores", "expand_blocks",
    "cubic_sparsity", "GradualMagnitude", "SparseLinear", "sparsify_24_",
    "gate_importance", "lowest_units", "head_importance", "prune_heads_",
    "neuron_importance", "prune_neurons_", "STRATEGIES", "layers_to_drop",
    "drop_layers_", "layer_drop", "wanda_", "wanda_mask", "wanda_scores",
    "sparsegpt_", "sparsegpt_prune", "check_one_shot_layers", "precomputed_statistics", "SCHEMES", "see_prune_", "weight_classes",
    "find_lottery_ticket", "rewind_", "round_sparsities", "snapshot",
    "METHODS", "SCORE_UPDATES", "MovementLinear", "MovementSchedule", "finalize_movement_", "movement_", "movement_layers",
    "soft_movement_penalty",
]
