import math
from types import SimpleNamespace

import pytest
import torch

from shrinklib import zoo
from shrinklib.distill.logits import logit_distillation
from shrinklib.distill.teachers import ensemble_soft_targets, multi_teacher_distillation


def _softmax_by_hand(row, t):
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def test_ensemble_soft_targets_is_the_weighted_average_written_out():
    g = torch.Generator().manual_seed(0)
    logits = [3 * torch.randn(5, 3, generator=g) for _ in range(3)]
    weights, t = [0.5, 2.0, 0.0], 1.7
    got = ensemble_soft_targets(logits, t, weights)
    for i in range(5):
        probs = [_softmax_by_hand(z[i].tolist(), t) for z in logits]
        for c in range(3):
            expected = sum(w * p[c] for w, p in zip(weights, probs)) / sum(weights)
            assert got[i, c].item() == pytest.approx(expected, abs=1e-6)
    assert torch.allclose(got.sum(-1), torch.ones(5))
    # equal weights by default; an average of probabilities, not of logits
    plain = ensemble_soft_targets(logits, t)
    assert torch.allclose(plain, sum(torch.softmax(z / t, -1) for z in logits) / 3, atol=1e-6)
    assert not torch.allclose(plain, torch.softmax(sum(logits) / 3 / t, -1), atol=1e-3)
    # one teacher: its own softened probabilities; any rank of input
    z = torch.randn(2, 3, 7, generator=g)
    assert torch.allclose(ensemble_soft_targets([z], 2.0, [4.0]), torch.softmax(z / 2, -1), atol=1e-6)


def test_one_teacher_equals_logit_distillation(padded_batch):
    teacher, student = zoo.tiny_bert(vocab_size=50, seed=1), zoo.tiny_bert(vocab_size=50, seed=2)
    batch = padded_batch()
    outputs = student(**batch)
    one = multi_teacher_distillation([teacher], temperature=3.0, weight=0.4)(student, batch, outputs)
    assert torch.allclose(one, logit_distillation(teacher, temperature=3.0, weight=0.4)(student, batch, outputs),
                          atol=1e-6)


def test_two_teachers_kl_written_out_and_no_teacher_gradient(padded_batch):
    teachers = [zoo.tiny_bert(vocab_size=50, num_labels=3, seed=s) for s in (1, 2)]
    student = zoo.tiny_bert(vocab_size=50, num_labels=3, seed=3)
    batch = padded_batch(rows=6, width=5)
    outputs = SimpleNamespace(logits=30 * student(**batch).logits)  # a tiny BERT's logits are ~0.1: make KL sizeable
    t, weights = 2.0, [1.0, 3.0]
    value = multi_teacher_distillation(teachers, temperature=t, weight=0.5, teacher_weights=weights)(
        student, batch, outputs)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        z = [teacher(**inputs).logits for teacher in teachers]
    kl = 0.0
    for i in range(6):
        p = [(weights[0] * a + weights[1] * b) / 4 for a, b in
             zip(_softmax_by_hand(z[0][i].tolist(), t), _softmax_by_hand(z[1][i].tolist(), t))]
        q = _softmax_by_hand(outputs.logits[i].tolist(), t)
        kl += sum(pc * (math.log(pc) - math.log(qc)) for pc, qc in zip(p, q))
    # the library's float32 KL sums terms p log p and p log q a few hundred times larger than the KL
    # itself, so float32 rounding (1e-7 of each) reaches a few 1e-5 of it (1.3e-5 seen under
    # ATEN_CPU_CAPABILITY=default): rel=1e-4
    assert value.item() > 1e-3 and value.item() == pytest.approx(0.5 * t * t * kl / 6, rel=1e-4)
    value.backward()
    assert all(p.grad is None for teacher in teachers for p in teacher.parameters())
    assert student.classifier.weight.grad is not None


def test_every_teacher_must_share_the_students_vocabulary(padded_batch):
    student = zoo.tiny_bert(vocab_size=50)
    batch = padded_batch()
    term = multi_teacher_distillation([zoo.tiny_bert(vocab_size=50), zoo.tiny_lstm(vocab_size=50)])
    term(student, batch, student(**batch))  # a BiLSTM teacher with the same vocabulary is fine
    with pytest.raises(ValueError, match=r"teachers\[0\] have different vocabular"):
        multi_teacher_distillation([zoo.tiny_bert(vocab_size=60)] * 2)(student, batch, student(**batch))
    with pytest.raises(ValueError, match=r"the teachers have different vocabular.*\{0: 50, 1: 60\}"):
        multi_teacher_distillation([zoo.tiny_bert(vocab_size=50), zoo.tiny_bert(vocab_size=60)])


def test_bad_input(padded_batch, unchanged):
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="teacher_logits must hold at least one"):
        ensemble_soft_targets([], 2.0)
    with pytest.raises(TypeError, match="teacher_logits must be a sequence of tensors"):
        ensemble_soft_targets(z, 2.0)
    with pytest.raises(TypeError, match="teacher_logits must hold tensors, got a list"):
        ensemble_soft_targets([[0.0, 1.0]], 2.0)
    with pytest.raises(ValueError, match=r"one shape, got shapes \[\(2, 3\), \(2, 4\)\]"):
        ensemble_soft_targets([z, torch.zeros(2, 4)], 2.0)
    with pytest.raises(ValueError, match="temperature must be a number > 0"):
        ensemble_soft_targets([z], 0.0)
    with pytest.raises(ValueError, match=r"one number per teacher \(2\), got 1"):
        ensemble_soft_targets([z, z], 2.0, [1.0])
    with pytest.raises(ValueError, match="weights must be finite numbers >= 0"):
        ensemble_soft_targets([z, z], 2.0, [1.0, -1.0])
    with pytest.raises(ValueError, match="weights must sum to more than 0"):
        ensemble_soft_targets([z, z], 2.0, [0, 0])
    with pytest.raises(TypeError, match="weights must be a sequence"):
        ensemble_soft_targets([z, z], 2.0, "11")
    bert = zoo.tiny_bert(vocab_size=50)
    with pytest.raises(ValueError, match="teachers must hold at least one teacher"):
        multi_teacher_distillation([])
    with unchanged(bert):
        with pytest.raises(TypeError,
                           match="teachers must be a sequence of nn.Modules, got BertForSequenceClassification"):
            multi_teacher_distillation(bert)
    with unchanged(bert):
        with pytest.raises(TypeError, match=r"teachers\[1\] must be an nn.Module, got str"):
            multi_teacher_distillation([bert, "bert"])
    with unchanged(bert):
        with pytest.raises(ValueError, match="weight must be a number >= 0"):
            multi_teacher_distillation([bert], weight=-1)
    with unchanged(bert):
        with pytest.raises(ValueError, match="temperature must be a number > 0"):
            multi_teacher_distillation([bert], temperature="2")
    with unchanged(bert):
        with pytest.raises(ValueError, match="weights must sum to more than 0"):
            multi_teacher_distillation([bert], teacher_weights=[0.0])
    student = zoo.tiny_bert(vocab_size=50, num_labels=3)
    batch = padded_batch()
    with unchanged(bert):
        with pytest.raises(ValueError, match="student and teacher logits must have one shape"):
            multi_teacher_distillation([bert])(student, batch, student(**batch))


def test_a_class_no_teacher_allows_adds_nothing_even_where_the_student_masks_it(padded_batch):
    class Fixed(torch.nn.Module):
        """A teacher whose logits are given: class 1 masked (-inf)."""

        def __init__(self, logits):
            super().__init__()
            self.logits = logits
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def forward(self, **inputs):
            return SimpleNamespace(logits=self.logits)

    g = torch.Generator().manual_seed(6)
    z = [torch.randn(5, 3, generator=g) for _ in range(2)]
    for logits in z:
        logits[:, 1] = float("-inf")
    student = torch.randn(5, 3, generator=g)
    student[:, 1] = float("-inf")
    s = student.clone().requires_grad_(True)
    value = multi_teacher_distillation([Fixed(z[0]), Fixed(z[1])], temperature=2.0)(
        torch.nn.Linear(1, 1), padded_batch(), SimpleNamespace(logits=s))
    p = ensemble_soft_targets([x[:, [0, 2]] for x in z], 2.0).double()
    log_q = torch.log_softmax(student.double() / 2, -1)[:, [0, 2]]
    assert torch.isfinite(value) and value.item() == pytest.approx(4 * (p * (p.log() - log_q)).sum().item() / 5,
                                                                   rel=1e-5)
    value.backward()
    assert torch.isfinite(s.grad).all()
