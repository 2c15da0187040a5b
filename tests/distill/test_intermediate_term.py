import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from shrinklib import zoo
from shrinklib.distill.intermediate_losses import (
    attention_mse_loss,
    hidden_cosine_loss,
    hidden_mse_loss,
    minilm_attention_loss,
    minilm_value_loss,
    pkd_loss,
)
from shrinklib.distill.intermediate_term import IntermediateDistillation
from shrinklib.distill.student import student_from_teacher

# Three sequences of 7 tokens: one full, one right-padded, one left-padded.
MASK = torch.tensor([[1, 1, 1, 1, 1, 1, 1],
                     [1, 1, 1, 1, 0, 0, 0],
                     [0, 0, 1, 1, 1, 1, 1]])
B, L = 3, 7


def _models(student_width=24, student_layers=2):
    teacher = zoo.tiny_bert(vocab_size=60, num_layers=4, hidden_size=32, num_heads=2, intermediate_size=64)
    student = zoo.tiny_bert(vocab_size=60, num_layers=student_layers, hidden_size=student_width, num_heads=2,
                            intermediate_size=48, seed=1)
    return teacher, student


def _tiny_batch():
    input_ids = torch.randint(0, 60, (B, L), generator=torch.Generator().manual_seed(0))
    return {"input_ids": input_ids, "attention_mask": MASK, "labels": torch.tensor([0, 1, 1])}


def _qkv(model, hidden_states):
    """The last layer's query/key/value outputs, computed from its input ``hidden_states[-2]``."""
    attention = model.bert.encoder.layer[-1].attention.self
    x = hidden_states[-2]
    return attention.query(x), attention.key(x), attention.value(x)


def test_term_equals_the_sum_of_the_losses_by_hand_across_widths():
    teacher, student = _models()
    weights = {"embedding": 0.5, "hidden": 1.0, "attention": 2.0, "minilm_attention": 3.0, "minilm_value": 0.25}
    term = IntermediateDistillation(teacher, student, weights=weights, relation_heads=4)
    assert term.layer_map == (2, 4)
    assert term.hidden_projections is not None and len(term.hidden_projections) == 2
    # the term's parameters are its projections, not the models'
    assert sum(p.numel() for p in term.parameters()) == 3 * (24 * 32 + 32)

    batch = _tiny_batch()
    outputs = student(**batch)  # what fit does: the config makes the plain call return the hidden states
    assert len(outputs.hidden_states) == 3
    assert student.config._attn_implementation == teacher.config._attn_implementation == "sdpa"  # left as they were
    value = term(student, batch, outputs)

    inputs = {"input_ids": batch["input_ids"], "attention_mask": MASK}
    for model in (teacher, student):
        model.set_attn_implementation("eager")  # SDPA returns no attention maps
    with torch.no_grad():
        t_out = teacher(**inputs, output_hidden_states=True, output_attentions=True)
        s_out = student(**inputs, output_hidden_states=True, output_attentions=True)
        hs_s, hs_t, at_s, at_t = s_out.hidden_states, t_out.hidden_states, s_out.attentions, t_out.attentions
        (qs, ks, vs), (qt, kt, vt) = _qkv(student, hs_s), _qkv(teacher, hs_t)
        proj = term.hidden_projections
        by_hand = {
            "embedding": hidden_mse_loss(hs_s[0], hs_t[0], MASK, term.embedding_projection),
            "hidden": (hidden_mse_loss(hs_s[1], hs_t[2], MASK, proj[0])
                       + hidden_mse_loss(hs_s[2], hs_t[4], MASK, proj[1])),
            "attention": attention_mse_loss(at_s[0], at_t[1], MASK) + attention_mse_loss(at_s[1], at_t[3], MASK),
            "minilm_attention": minilm_attention_loss(qs, ks, qt, kt, MASK, 4),
            "minilm_value": minilm_value_loss(vs, vt, MASK, 4),
        }
    expected = sum(weights[k] * v for k, v in by_hand.items())
    assert torch.allclose(value, expected, rtol=1e-5)
    assert term.last_terms.keys() == by_hand.keys()
    assert all(math.isclose(term.last_terms[k], by_hand[k].item(), rel_tol=1e-5) for k in by_hand)

    value.backward()
    assert all(p.grad is None for p in teacher.parameters())
    for projection in (term.embedding_projection, *term.hidden_projections):
        assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0
    assert student.bert.encoder.layer[-1].attention.self.key.weight.grad.abs().sum() > 0  # MiniLM reaches K
    term.remove()


def test_term_at_equal_widths_with_a_layer_map_of_its_own():
    teacher, student = _models(student_width=32, student_layers=3)
    weights = {"cosine": 1.0, "pkd": 2.0, "hidden": 0.5, "embedding": 1.0, "attention": 1.0}
    term = IntermediateDistillation(teacher, student, layer_map=(1, 3, 4), weights=weights)
    assert term.hidden_projections is None and term.embedding_projection is None
    assert len(list(term.parameters())) == 0
    batch = _tiny_batch()
    value = term(student, batch, student(**batch))
    teacher.set_attn_implementation("eager")
    student.set_attn_implementation("eager")
    with torch.no_grad():
        inputs = {"input_ids": batch["input_ids"], "attention_mask": MASK}
        hs_t = teacher(**inputs, output_hidden_states=True).hidden_states
        s_out = student(**inputs, output_hidden_states=True, output_attentions=True)
        at_t = teacher(**inputs, output_attentions=True).attentions
        hs_s, at_s = s_out.hidden_states, s_out.attentions
        expected = (hidden_cosine_loss(hs_s[3], hs_t[4], MASK)
                    + 2.0 * pkd_loss([hs_s[1][:, 0], hs_s[2][:, 0]], [hs_t[1][:, 0], hs_t[3][:, 0]])
                    + 0.5 * sum(hidden_mse_loss(hs_s[m], hs_t[g], MASK) for m, g in ((1, 1), (2, 3), (3, 4)))
                    + hidden_mse_loss(hs_s[0], hs_t[0], MASK)
                    + sum(attention_mse_loss(at_s[m], at_t[g], MASK) for m, g in ((0, 0), (1, 2), (2, 3))))
    assert torch.allclose(value, expected, rtol=1e-5)
    term.remove()


def test_term_is_zero_for_a_student_that_is_the_teacher():
    teacher, _ = _models()
    student = student_from_teacher(teacher, [0, 1, 2, 3])
    with IntermediateDistillation(teacher, student, weights={k: 1.0 for k in (
            "embedding", "hidden", "attention", "cosine", "pkd", "minilm_attention", "minilm_value")}) as term:
        batch = _tiny_batch()
        assert term(student, batch, student(**batch)).abs() < 1e-5
        assert all(abs(v) < 1e-5 for v in term.last_terms.values()) and len(term.last_terms) == 7


def test_a_few_optimizer_steps_lower_every_term():
    teacher, student = _models()
    with torch.no_grad():  # sharper attention than at initialisation, so the attention terms have something to learn
        for layer in teacher.bert.encoder.layer:
            for linear in (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value):
                linear.weight.mul_(30)
    weights = {"embedding": 1.0, "hidden": 1.0, "attention": 10.0, "minilm_attention": 1.0, "minilm_value": 1.0}
    term = IntermediateDistillation(teacher, student, weights=weights)
    optimizer = torch.optim.Adam([*student.parameters(), *term.parameters()], lr=1e-2)
    batch = _tiny_batch()
    history = []
    for _ in range(10):
        value = term(student, batch, student(**batch))
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        history.append(term.last_terms)
    assert all(history[-1][k] < 0.8 * history[0][k] for k in weights), (history[0], history[-1])
    assert all(p.grad is None for p in teacher.parameters())
    term.remove()


def test_attention_maps_are_taken_before_attention_dropout():
    """Eager attention returns the maps after dropout while training; the term compares the maps themselves."""
    teacher, student = _models()
    for module in student.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    for layer in student.bert.encoder.layer:
        layer.attention.self.dropout.p = 0.5
    batch = _tiny_batch()
    with IntermediateDistillation(teacher, student, weights={"attention": 1.0}) as term:
        evaluated = term(student, batch, student.eval()(**batch))
        torch.manual_seed(0)
        trained = term(student, batch, student.train()(**batch))
    assert torch.allclose(trained, evaluated, rtol=1e-6)
    student.set_attn_implementation("eager")
    dropped = student.train()(**batch, output_attentions=True).attentions[0]
    assert not torch.allclose(dropped, student.eval()(**batch, output_attentions=True).attentions[0])


def test_remove_undoes_the_configuration_and_the_hooks():
    teacher, student = _models()
    term = IntermediateDistillation(teacher, student, weights={"attention": 1.0, "minilm_value": 1.0, "hidden": 1.0})
    hooked = [*(layer.attention.self.query for layer in student.bert.encoder.layer),
              *(teacher.bert.encoder.layer[g - 1].attention.self.key for g in term.layer_map),
              teacher.bert.encoder.layer[-1].attention.self.value, student.bert.encoder.layer[-1].attention.self.value]
    assert all(len(module._forward_hooks) == 1 for module in hooked)
    assert len(teacher.bert.encoder.layer[0].attention.self.query._forward_hooks) == 0  # layer 1 is not mapped
    assert student.config.output_hidden_states
    term.remove()
    term.remove()  # idempotent
    assert all(len(module._forward_hooks) == 0 for module in hooked)
    assert not student.config.output_hidden_states
    assert student(**_tiny_batch()).hidden_states is None
    with pytest.raises(RuntimeError, match="was removed"):
        term(student, _tiny_batch(), student(**_tiny_batch()))


def test_bad_input_of_the_term(unchanged):
    teacher, student = _models()
    with unchanged(teacher), unchanged(student):
        with pytest.raises(ValueError, match="unknown loss 'logits' in weights"):
            IntermediateDistillation(teacher, student, weights={"logits": 1.0})
    with unchanged(teacher), unchanged(student):
        with pytest.raises(ValueError, match=r"weights\['hidden'\] must be a number >= 0, got -1"):
            IntermediateDistillation(teacher, student, weights={"hidden": -1})
    with unchanged(teacher), unchanged(student):
        with pytest.raises(ValueError, match="at least one loss"):
            IntermediateDistillation(teacher, student, weights={})
    with unchanged(teacher), unchanged(student):
        with pytest.raises(TypeError, match="weights must be a mapping"):
            IntermediateDistillation(teacher, student, weights=["hidden"])
    with unchanged(teacher):
        with pytest.raises(ValueError, match="vocabular"):
            IntermediateDistillation(teacher, zoo.tiny_bert(vocab_size=61), weights={"hidden": 1.0})
    with unchanged(teacher), unchanged(student):
        with pytest.raises(ValueError, match="past the teacher's depth"):
            IntermediateDistillation(teacher, student, layer_map=(2, 5), weights={"hidden": 1.0})
    with unchanged(teacher), unchanged(student):
        with pytest.raises(ValueError, match="'cosine' loss compares hidden states directly and needs equal widths"):
            IntermediateDistillation(teacher, student, weights={"cosine": 1.0})
    with unchanged(teacher), unchanged(student):
        with pytest.raises(ValueError, match="'pkd' loss .* needs equal widths"):
            IntermediateDistillation(teacher, student, weights={"pkd": 1.0})
    with unchanged(teacher):
        with pytest.raises(ValueError, match="needs a student of 2 or more layers, got 1"):
            IntermediateDistillation(teacher, zoo.tiny_bert(vocab_size=60, num_layers=1), weights={"pkd": 1.0})
    with unchanged(teacher):
        with pytest.raises(ValueError, match="as many heads in student and teacher, got 4 and 2"):
            IntermediateDistillation(teacher, zoo.tiny_bert(vocab_size=60, num_heads=4), weights={"attention": 1.0})
    with unchanged(teacher), unchanged(student):
        with pytest.raises(ValueError, match="0 is the embedding output"):
            IntermediateDistillation(teacher, student, layer_map=(0, 4), weights={"attention": 1.0})
    with unchanged(teacher), unchanged(student):
        with pytest.raises(ValueError, match=r"relation_heads \(5\) must divide the width 24"):
            IntermediateDistillation(teacher, student, weights={"minilm_value": 1.0}, relation_heads=5)
    with unchanged(teacher), unchanged(student):
        with pytest.raises(ValueError, match="relation_heads=4 is for the MiniLM losses"):
            IntermediateDistillation(teacher, student, weights={"hidden": 1.0}, relation_heads=4)
    with unchanged(teacher):
        with pytest.raises(TypeError, match="student must be a BERT-like"):
            IntermediateDistillation(teacher, zoo.tiny_llama(), weights={"hidden": 1.0})
    with IntermediateDistillation(teacher, student, weights={"hidden": 1.0, "minilm_value": 1.0}) as term:
        batch = _tiny_batch()
        student(**batch)
        with unchanged(student):
            with pytest.raises(ValueError,
                               match=r"outputs must hold the student's hidden_states \(3 tensors\), got none"):
                term(student, batch, SimpleNamespace(hidden_states=None))
        with pytest.raises(TypeError, match="batch must be a dict of tensors with 'input_ids'"):
            term(student, batch["input_ids"], student(**batch))
    with IntermediateDistillation(teacher, student, weights={"minilm_value": 1.0}) as term:
        with unchanged(student):
            with pytest.raises(ValueError, match="the student's attention value of layer 1 was not caught"):
                term(student, batch, SimpleNamespace())
