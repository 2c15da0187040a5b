import pytest
import torch

from shrinklib import zoo
from shrinklib.distill import logit_distillation, soft_target_loss


def test_soft_target_loss_matches_the_written_out_formula():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    t = 3.0
    p, q = torch.softmax(teacher / t, -1), torch.softmax(student / t, -1)
    expected = t * t * (p * (p.log() - q.log())).sum(-1).mean()
    assert torch.allclose(soft_target_loss(student, teacher, t), expected, atol=1e-6)
    assert soft_target_loss(teacher, teacher, t).abs() < 1e-6


def test_logit_distillation_term_runs_the_teacher_without_labels_or_gradient():
    teacher, student = zoo.tiny_bert(vocab_size=50), zoo.tiny_bert(vocab_size=50)
    batch = {"input_ids": torch.randint(0, 50, (4, 6)), "attention_mask": torch.ones(4, 6, dtype=torch.long),
             "labels": torch.tensor([0, 1, 0, 1])}
    outputs = student(**batch)
    value = logit_distillation(teacher, temperature=2.0, weight=0.5)(student, batch, outputs)
    expected = 0.5 * soft_target_loss(outputs.logits, teacher(**{k: v for k, v in batch.items() if k != "labels"}).logits)
    assert torch.allclose(value, expected)
    value.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.classifier.weight.grad is not None


def test_bad_input():
    with pytest.raises(ValueError, match="temperature must be a number > 0"):
        soft_target_loss(torch.zeros(2, 3), torch.zeros(2, 3), 0)
    with pytest.raises(ValueError, match="must have one shape"):
        soft_target_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="weight must be a number >= 0"):
        logit_distillation(zoo.tiny_bert(), weight=-1)
    with pytest.raises(TypeError, match="teacher must be an nn.Module"):
        logit_distillation("bert")
