"""Pruning (chapter 2): remove weights, neurons, heads or layers a model can do without.

* :mod:`~shrinklib.prune.masks` - masks as ``weight_mask`` buffers, kept through training.
* :mod:`~shrinklib.prune.magnitude` - unstructured magnitude pruning, layer-wise or global.
* :mod:`~shrinklib.prune.schedule` - gradual pruning on the cubic schedule of Zhu & Gupta.
* :mod:`~shrinklib.prune.nm` - N:M semi-structured sparsity (2:4).
* :mod:`~shrinklib.prune.block` - block pruning (whole tiles of a weight).
* :mod:`~shrinklib.prune.sparse_linear` - 2:4 layers stored compressed, run by the Triton kernel.
"""
from shrinklib.prune.block import CRITERIA, block_, block_scores, expand_blocks
from shrinklib.prune.magnitude import SCOPES, magnitude_, magnitude_masks, prunable_weights, select_smallest
from shrinklib.prune.masks import MASK, apply_masks_, keep_masks, make_permanent_, masks, set_mask_
from shrinklib.prune.nm import is_nm_sparse, nm_, nm_mask
from shrinklib.prune.schedule import GradualMagnitude, cubic_sparsity
from shrinklib.prune.sparse_linear import SparseLinear, sparsify_24_

__all__ = [
    "MASK", "set_mask_", "masks", "apply_masks_", "keep_masks", "make_permanent_",
    "SCOPES", "magnitude_", "magnitude_masks", "prunable_weights", "select_smallest",
    "nm_", "nm_mask", "is_nm_sparse", "CRITERIA", "block_", "block_scores", "expand_blocks",
    "cubic_sparsity", "GradualMagnitude", "SparseLinear", "sparsify_24_",
]
