"""A teacher is only read: every public function of shrinklib.distill that takes one leaves it
bit-identical when it succeeds too (issue 17, section 3): its weights, config, hooks and modes.

The teachers of ``distill_kit`` are in train mode, so a call that left one in eval mode (as
the terms did before: now each call runs the teacher in eval mode and gives its modes back)
would be caught. Building a student, scoring the teacher's neurons (which makes a Hugging
Face classifier set ``config.problem_type``), running a term, labelling or generating text:
none leaves a trace.
"""
import pytest
import torch
from torch.utils.data import DataLoader

from shrinklib import distill
from shrinklib.distill.logits import run_teacher, teacher_term
from shrinklib.train import TrainConfig


def _inputs(kit):
    return {k: v for k, v in kit.batch.items() if k != "labels"}


def _intermediate(kit):
    with distill.IntermediateDistillation(kit.teacher, kit.student, weights={"hidden": 1.0, "attention": 0.0,
                                                                             "minilm_value": 1.0}) as term:
        batch = _inputs(kit)
        term(kit.student, batch, kit.student(**batch))


def _llama_student(kit):
    return distill.lm_student(kit.llama, hidden_size=16, num_layers=1, num_heads=2)


CALLS = {
    "student_from_teacher": lambda kit: distill.student_from_teacher(kit.teacher, [0, 2]),
    "bert_student": lambda kit: distill.bert_student(kit.teacher, num_layers=1, hidden_size=8, num_heads=2,
                                                     intermediate_size=8),
    "bilstm_student": lambda kit: distill.bilstm_student(kit.teacher, kit.tokenizer, hidden_size=4),
    "student_with_pruned_ffn": lambda kit: distill.student_with_pruned_ffn(kit.teacher, [0, 1], [kit.batch]),
    "run_teacher": lambda kit: run_teacher(kit.teacher, kit.batch),
    "teacher_term": lambda kit: teacher_term(kit.teacher, lambda s, t, b: (s - t).pow(2).mean())(
        kit.student, kit.batch, kit.student(**_inputs(kit))),
    "logit_distillation": lambda kit: distill.logit_distillation(kit.teacher)(
        kit.student, kit.batch, kit.student(**_inputs(kit))),
    "multi_teacher_distillation": lambda kit: distill.multi_teacher_distillation([kit.teacher, kit.teacher])(
        kit.student, kit.batch, kit.student(**_inputs(kit))),
    "distill": lambda kit: distill.distill(kit.student, kit.teacher, DataLoader([kit.batch], batch_size=None),
                                           TrainConfig(max_steps=1, progress=False)),
    "IntermediateDistillation (used, then removed)": _intermediate,
    "WordNeighbours": lambda kit: distill.WordNeighbours(kit.tokenizer, kit.teacher.get_input_embeddings(), k=3),
    "augment": lambda kit: distill.augment(["w1 w2 w3"], kit.tokenizer, kit.teacher.get_input_embeddings(),
                                           distill.AugmentConfig(p_mask=0, p_replace=1, copies=1)),
    "teacher_labelled": lambda kit: distill.teacher_labelled(kit.teacher, kit.tokenizer, ["w1 w2", "w3"]),
    "word_level_distillation": lambda kit: distill.word_level_distillation(kit.llama)(
        _llama_student(kit), _inputs(kit), _llama_student(kit)(**_inputs(kit))),
    "lm_student": _llama_student,
    "generate_corpus": lambda kit: distill.generate_corpus(kit.llama, kit.tokenizer, ["w1 w2"], max_new_tokens=2,
                                                           progress=False),
    "teacher_top_k": lambda kit: distill.teacher_top_k(kit.llama, kit.tokenizer, ["w1 w2 w3"], k=3, progress=False),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_successful_call_leaves_the_teacher_bit_identical(call, distill_kit, unchanged):
    # transformers installs its output-capturing hooks (and a flag saying so) on a model the first
    # time a forward pass asks for hidden states, whoever calls it: its own one-time set-up, done here first
    with torch.no_grad():
        distill_kit.teacher(**_inputs(distill_kit), output_hidden_states=True)
    with unchanged(distill_kit.teacher), unchanged(distill_kit.llama):
        CALLS[call](distill_kit)
    assert distill_kit.teacher.training and distill_kit.llama.training


def test_the_teacher_runs_in_eval_mode_all_the_same(distill_kit):
    """Giving the modes back must not mean running the teacher with dropout: the term's value is
    the one of the teacher in eval mode, whatever mode it is kept in."""
    kit = distill_kit
    outputs = kit.student(**_inputs(kit))
    with torch.no_grad():
        value = distill.logit_distillation(kit.teacher)(kit.student, kit.batch, outputs)
        kit.teacher.eval()
        expected = distill.soft_target_loss(outputs.logits, kit.teacher(**_inputs(kit)).logits)
    assert torch.equal(value, 1.0 * expected)
