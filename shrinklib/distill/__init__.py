"""Knowledge distillation (chapter 4): train a small student on what a teacher predicts.

* :mod:`~shrinklib.distill.logits` - soft-target (logit) distillation of Hinton et al.
"""
from shrinklib.distill.logits import logit_distillation, soft_target_loss

__all__ = ["soft_target_loss", "logit_distillation"]
