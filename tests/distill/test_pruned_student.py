import pytest
import torch

import shrinklib  # noqa: F401  (first: it sets TRITON_INTERPRET before transformers can load triton)
from shrinklib import prune, zoo
from shrinklib.distill.pruned_student import student_with_pruned_ffn
from shrinklib.distill.student import student_from_teacher


def _teacher():
    return zoo.tiny_bert(vocab_size=50, num_layers=4, intermediate_size=37, num_labels=3)


def _batches():
    g = torch.Generator().manual_seed(1)
    mask = torch.tensor([[1] * 9, [1] * 6 + [0] * 3, [1] * 4 + [0] * 5])
    return [{"input_ids": torch.randint(0, 50, (3, 9), generator=g), "attention_mask": mask,
             "labels": torch.tensor([0, 2, 1])} for _ in range(2)]


def test_each_layer_keeps_the_teachers_highest_scoring_neurons_in_order():
    teacher, batches, layers = _teacher(), _batches(), [0, 3]
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = student_with_pruned_ffn(teacher, layers, batches, keep=0.4)
    scores = prune.neuron_importance(teacher, batches)
    for i, layer in enumerate(layers):
        kept = sorted(torch.argsort(scores[layer], descending=True)[:round(0.4 * 37)].tolist())  # 15 of 37
        source, pruned = teacher.bert.encoder.layer[layer], student.bert.encoder.layer[i]
        assert pruned.intermediate.dense.out_features == 15 == len(kept)
        assert torch.equal(pruned.intermediate.dense.weight, source.intermediate.dense.weight[kept])
        assert torch.equal(pruned.intermediate.dense.bias, source.intermediate.dense.bias[kept])
        assert torch.equal(pruned.output.dense.weight, source.output.dense.weight[:, kept])
        assert torch.equal(pruned.attention.self.query.weight, source.attention.self.query.weight)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())


def test_a_pruned_student_computes_the_layers_student_with_the_other_neurons_silenced():
    teacher, batches = _teacher(), _batches()
    student = student_with_pruned_ffn(teacher, [1, 2], batches, keep=0.5)
    silenced = student_from_teacher(teacher, [1, 2])
    scores = prune.neuron_importance(teacher, batches)
    with torch.no_grad():
        for i, layer in enumerate([1, 2]):
            dropped = torch.argsort(scores[layer], descending=True)[round(0.5 * 37):]
            silenced.bert.encoder.layer[i].output.dense.weight[:, dropped] = 0
    batch = {k: v for k, v in batches[0].items() if k != "labels"}
    with torch.no_grad():
        torch.testing.assert_close(student(**batch).logits, silenced(**batch).logits)


def test_keep_one_is_the_unpruned_student():
    teacher, batches = _teacher(), _batches()
    student, full = student_with_pruned_ffn(teacher, [0, 2], batches, keep=1.0), student_from_teacher(teacher, [0, 2])
    batch = {k: v for k, v in batches[0].items() if k != "labels"}
    assert student.bert.encoder.layer[0].intermediate.dense.out_features == 37
    with torch.no_grad():
        torch.testing.assert_close(student(**batch).logits, full(**batch).logits)


@pytest.mark.parametrize("keep", [0, -0.5, 1.5, True, "half"])
def test_a_bad_keep_share_is_refused(keep, unchanged):
    teacher = _teacher()
    with unchanged(teacher):
        with pytest.raises(ValueError, match="keep must be the share of FFN neurons to keep"):
            student_with_pruned_ffn(teacher, [0, 1], _batches(), keep=keep)


def test_a_layer_past_the_teachers_depth_is_refused_before_any_scoring(unchanged):
    teacher = _teacher()
    with unchanged(teacher):
        with pytest.raises(ValueError, match="the teacher has 4 layers"):
            student_with_pruned_ffn(teacher, [0, 4], _batches())


def test_scoring_leaves_the_teacher_bit_identical_whether_it_succeeds_or_fails(unchanged):
    """The teacher's loss is differentiated to score its neurons: hooks go on, the mode goes to eval
    and a Hugging Face classifier sets config.problem_type. None of it stays, and a batch refused
    half-way (the second one has no labels) leaves nothing either."""
    teacher = _teacher().train()
    good = _batches()
    with unchanged(teacher):
        student_with_pruned_ffn(teacher, [0, 3], good, keep=0.5)
    bad = {k: v for k, v in good[1].items() if k != "labels"}
    with unchanged(teacher):
        with pytest.raises(ValueError, match="importance needs batches with 'labels'"):
            student_with_pruned_ffn(teacher, [0, 3], [good[0], bad])
    assert teacher.training and teacher.config.problem_type is None
