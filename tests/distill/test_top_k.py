"""Word-level distillation from stored top-k teacher logits, against the live word-level loss."""
import pytest
import torch

import shrinklib  # noqa: F401  (first: it sets TRITON_INTERPRET before transformers can load triton)
from shrinklib.distill.sequence import lm_dataloader, lm_student, token_distillation_loss, word_level_distillation
from shrinklib.distill.top_k import (stored_word_level_distillation, teacher_top_k, top_k_mass,
                                     top_k_token_distillation_loss)
from shrinklib.train import TrainConfig, fit

TEXTS = ["w1 w2 w3 w4", "w5 w6", "w7 w8 w9 w10 w11 w12 w13", "w14 w15 w16", "w3 w3 w3"]


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_with_k_the_vocabulary_the_loss_is_the_full_word_level_loss(temperature):
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(3, 5, 11, generator=g), torch.randn(3, 5, 11, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    values, ids = teacher.topk(11, dim=-1)
    full = token_distillation_loss(student, teacher, mask, temperature)
    assert torch.allclose(top_k_token_distillation_loss(student, ids, values, mask, temperature), full, atol=1e-6)
    # Order of the stored tokens does not matter.
    perm = torch.randperm(11, generator=g)
    assert torch.allclose(top_k_token_distillation_loss(student, ids[..., perm], values[..., perm], mask, temperature),
                          full, atol=1e-6)


def test_with_fewer_tokens_it_is_the_kl_to_the_renormalized_top_k_by_hand():
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(2, 4, 9, generator=g, requires_grad=True), torch.randn(2, 4, 9, generator=g)
    values, ids = teacher.topk(3, dim=-1)
    loss = top_k_token_distillation_loss(student, ids, values)
    expected = 0.0
    for b in range(2):
        for t in range(4):
            p = torch.softmax(values[b, t], -1)
            log_q = torch.log_softmax(student[b, t], -1)[ids[b, t]]
            expected += float((p * (p.log() - log_q)).sum().detach())
    assert loss.item() == pytest.approx(expected / 8, rel=1e-5)
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    # The loss is 0 when the student's distribution restricted to the top k matches and puts no mass elsewhere.
    matched = torch.full((2, 4, 9), -1e4)
    matched.scatter_(-1, ids, values)
    assert top_k_token_distillation_loss(matched, ids, values).item() == pytest.approx(0.0, abs=1e-5)


def test_teacher_top_k_is_the_top_k_of_each_text_alone(tokenizer, peaked_llama):
    teacher = peaked_llama()
    stored = teacher_top_k(teacher, tokenizer, TEXTS, k=5, block_size=6, batch_size=2, progress=False)
    assert len(stored) == len(TEXTS)
    for text, entry in zip(TEXTS, stored):
        ids = torch.tensor([tokenizer(text)["input_ids"][:6]])
        with torch.no_grad():
            values, top = teacher(input_ids=ids).logits[0].topk(5, dim=-1)
        assert entry["ids"].shape == (ids.shape[1], 5) and entry["ids"].dtype == torch.int64
        assert torch.equal(entry["ids"], top) and torch.allclose(entry["logits"], values, atol=1e-5)
    assert teacher.training is False
    mass = top_k_mass(torch.randn(4, 64), 64)
    assert torch.allclose(mass, torch.ones(4)) and (top_k_mass(torch.randn(4, 64), 5) < 1).all()


def test_the_loader_carries_each_rows_top_k_whatever_the_order(tokenizer, peaked_llama):
    teacher = peaked_llama()
    stored = teacher_top_k(teacher, tokenizer, TEXTS, k=4, block_size=6, progress=False)
    loader = lm_dataloader(TEXTS, tokenizer, block_size=6, batch_size=2, shuffle=True, seed=3, top_k=stored)
    rows = {tuple(tokenizer(t)["input_ids"][:6]): entry for t, entry in zip(TEXTS, stored)}
    seen = 0
    for batch in loader:
        assert batch["teacher_top_ids"].shape == batch["teacher_top_logits"].shape == (*batch["input_ids"].shape, 4)
        for ids, mask, top_ids, top_logits in zip(batch["input_ids"], batch["attention_mask"],
                                                  batch["teacher_top_ids"], batch["teacher_top_logits"]):
            entry = rows[tuple(ids[mask == 1].tolist())]
            n = int(mask.sum())
            assert torch.equal(top_ids[:n], entry["ids"]) and torch.equal(top_logits[:n], entry["logits"])
            assert (top_ids[n:] == 0).all() and (top_logits[n:] == 0).all()
            seen += 1
    assert seen == len(TEXTS)


def test_one_step_on_stored_full_targets_equals_one_step_on_the_live_teacher(tokenizer, peaked_llama):
    teacher = peaked_llama()
    vocab = teacher.config.vocab_size
    stored = teacher_top_k(teacher, tokenizer, TEXTS, k=vocab, block_size=8, progress=False)
    config = TrainConfig(max_steps=2, lr=1e-2, batch_size=2, seed=0, progress=False, task_loss_weight=0.0)
    live_student = lm_student(teacher, hidden_size=16, num_layers=1, num_heads=2, seed=4)
    fit(live_student, lm_dataloader(TEXTS, tokenizer, block_size=8, batch_size=2), config,
        extra_losses={"kd": word_level_distillation(teacher, temperature=2.0)})
    stored_student = lm_student(teacher, hidden_size=16, num_layers=1, num_heads=2, seed=4)
    result = fit(stored_student, lm_dataloader(TEXTS, tokenizer, block_size=8, batch_size=2, top_k=stored), config,
                 extra_losses={"kd": stored_word_level_distillation(temperature=2.0)})
    assert result.steps == 2 and result.history[-1]["loss_kd"] > 0
    for a, b in zip(live_student.parameters(), stored_student.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_bad_input(tokenizer, peaked_llama, unchanged):
    teacher = peaked_llama()
    stored = teacher_top_k(teacher, tokenizer, TEXTS, k=3, block_size=6, progress=False)
    with pytest.raises(ValueError, match="one entry per text"):
        lm_dataloader(TEXTS[:3], tokenizer, block_size=6, top_k=stored)
    with pytest.raises(ValueError, match="same tokenizer and block_size"):
        lm_dataloader(TEXTS, tokenizer, block_size=4, top_k=stored)
    with pytest.raises(TypeError, match="sequence of dicts"):
        lm_dataloader(TEXTS, tokenizer, block_size=6, top_k=stored[0])
    with unchanged(teacher):
        with pytest.raises(ValueError, match="k must be an int >= 1"):
            teacher_top_k(teacher, tokenizer, TEXTS, k=0)
    with unchanged(teacher):
        with pytest.raises(ValueError, match=r"k \(65\) must be at most the teacher's vocabulary size \(64\)"):
            teacher_top_k(teacher, tokenizer, TEXTS, k=65, progress=False)
    with pytest.raises(ValueError, match="temperature must be a number > 0"):
        stored_word_level_distillation(temperature=0)
    with pytest.raises(ValueError, match="weight must be a number >= 0"):
        stored_word_level_distillation(weight=-1)
    with pytest.raises(ValueError, match="must share one vocabulary"):
        top_k_token_distillation_loss(torch.zeros(1, 2, 5), torch.full((1, 2, 3), 7), torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match=r"must be \(batch, length, k\)"):
        top_k_token_distillation_loss(torch.zeros(1, 2, 5), torch.zeros(1, 3, 3, dtype=torch.long), torch.zeros(1, 3, 3))
    with pytest.raises(TypeError, match="integer token ids"):
        top_k_token_distillation_loss(torch.zeros(1, 2, 5), torch.zeros(1, 2, 3), torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="no real position"):
        top_k_token_distillation_loss(torch.zeros(1, 2, 5), torch.zeros(1, 2, 3, dtype=torch.long),
                                      torch.zeros(1, 2, 3), torch.zeros(1, 2))
    batch = {"input_ids": torch.ones(1, 3, dtype=torch.long), "attention_mask": torch.ones(1, 3, dtype=torch.long)}
    with pytest.raises(KeyError, match="teacher_top_ids"):
        stored_word_level_distillation()(teacher, batch, teacher(**batch))


def test_a_stored_minus_inf_logit_adds_nothing():
    """k larger than the tokens a teacher allows stores -inf logits: they add 0 (they gave nan)."""
    g = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(2, 3, 8, generator=g), torch.randn(2, 3, 8, generator=g)
    teacher[..., 5:] = float("-inf")  # the teacher allows 5 tokens
    values, ids = teacher.topk(7, dim=-1)  # two of the stored 7 are -inf
    assert torch.isneginf(values).any()
    s = student.clone().requires_grad_(True)
    loss = top_k_token_distillation_loss(s, ids, values, temperature=1.5)
    reference = token_distillation_loss(student, teacher, temperature=1.5)  # all 8 tokens, 3 of them masked
    assert torch.isfinite(loss) and loss.item() == pytest.approx(reference.item(), rel=1e-5)
    loss.backward()
    assert torch.isfinite(s.grad).all()
