"""Knowledge distillation (chapter 4): train a small student on what a teacher computes.

* :mod:`~shrinklib.distill.logits` - soft targets and Hinton's mix (Hinton et al. 2015),
  the logit MSE of Tang et al. (2019), stored teacher logits, and :func:`distill`, the
  one call that also chains a teacher assistant (Mirzadeh et al. 2020);
* :mod:`~shrinklib.distill.teachers` - several teachers, averaged soft targets;
* :mod:`~shrinklib.distill.layer_map` - which teacher layer each student layer learns from;
* :mod:`~shrinklib.distill.student` - students from the teacher's layers (DistilBERT) or
  of their own width;
* :mod:`~shrinklib.distill.intermediate_losses` - DistilBERT, Patient KD, TinyBERT and
  MiniLM losses (pure functions on tensors), and :mod:`~shrinklib.distill.intermediate_term`
  the ``fit`` term that runs the teacher and combines them;
* :mod:`~shrinklib.distill.pruned_student` - a student from the teacher's layers with its FFNs
  pruned to the neurons the teacher needs most (distillation and structured pruning);
* :mod:`~shrinklib.distill.augment` - data for the student: augmentation (Tang et al.,
  TinyBERT) and unlabelled sentences (:func:`shrinklib.data.sentences`) labelled by the teacher,
  and the cached transfer sets;
* :mod:`~shrinklib.distill.sequence` - word- and sequence-level distillation of a
  language model (Kim & Rush 2016), and :mod:`~shrinklib.distill.top_k` word-level
  distillation from the teacher's stored top-k logits.
"""
from shrinklib.distill.augment import (
    AugmentConfig,
    WordNeighbours,
    augment,
    teacher_labelled,
    transfer_sets,
    unlabelled_sentences,
)
from shrinklib.distill.intermediate_losses import (
    attention_mse_loss,
    hidden_cosine_loss,
    hidden_mse_loss,
    minilm_attention_loss,
    minilm_value_loss,
    pkd_loss,
)
from shrinklib.distill.intermediate_term import IntermediateDistillation
from shrinklib.distill.layer_map import check_layer_map, layer_map
from shrinklib.distill.logits import (
    check_same_vocabulary,
    distill,
    logit_distillation,
    logit_mse_loss,
    soft_target_loss,
    stored_logit_distillation,
    teacher_term,
)
from shrinklib.distill.sequence import (
    generate_corpus,
    lm_dataloader,
    lm_student,
    token_distillation_loss,
    word_level_distillation,
)
from shrinklib.distill.student import bert_student, bilstm_student, student_from_teacher
from shrinklib.distill.pruned_student import student_with_pruned_ffn
from shrinklib.distill.teachers import ensemble_soft_targets, multi_teacher_distillation
from shrinklib.distill.top_k import (
    stored_word_level_distillation,
    teacher_top_k,
    top_k_mass,
    top_k_token_distillation_loss,
)

__all__ = [
    "soft_target_loss", "logit_mse_loss", "logit_distillation", "stored_logit_distillation", "distill",
    "check_same_vocabulary", "teacher_term",
    "ensemble_soft_targets", "multi_teacher_distillation",
    "layer_map", "check_layer_map",
    "student_from_teacher", "bert_student", "bilstm_student", "student_with_pruned_ffn",
    "hidden_cosine_loss", "pkd_loss", "hidden_mse_loss", "attention_mse_loss", "minilm_attention_loss",
    "minilm_value_loss", "IntermediateDistillation",
    "AugmentConfig", "WordNeighbours", "augment", "unlabelled_sentences", "teacher_labelled", "transfer_sets",
    "token_distillation_loss", "word_level_distillation", "lm_student", "generate_corpus", "lm_dataloader",
    "top_k_token_distillation_loss", "teacher_top_k", "top_k_mass", "stored_word_level_distillation",
]
