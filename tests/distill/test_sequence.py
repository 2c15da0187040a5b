import pytest
import torch

import shrinklib  # noqa: F401  (first: it sets TRITON_INTERPRET before transformers can load triton)
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from shrinklib import zoo
from shrinklib.distill.logits import check_same_vocabulary
from shrinklib.distill.sequence import (generate_corpus, lm_dataloader, lm_student, token_distillation_loss,
                                        word_level_distillation)
from shrinklib.train import TrainConfig, fit

EOS = 2


def reference_kd(student, teacher, mask, t):
    """T^2 * mean over real positions of sum_v p_v (log p_v - log q_v), written as a loop."""
    total, count = 0.0, 0
    for b in range(student.shape[0]):
        for i in range(student.shape[1]):
            if mask is None or mask[b, i] == 1:
                p = torch.softmax(teacher[b, i].double() / t, -1)
                q = torch.softmax(student[b, i].double() / t, -1)
                total += float((p * (p.log() - q.log())).sum())
                count += 1
    return t * t * total / count


def test_token_distillation_loss_is_the_per_position_kl_over_real_positions():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(3, 5, 7, generator=g), torch.randn(3, 5, 7, generator=g) * 2
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])  # left- and right-padded rows
    for t in (1.0, 3.0):
        value = token_distillation_loss(student, teacher, mask, t)
        assert value.item() == pytest.approx(reference_kd(student, teacher, mask, t), rel=1e-5)
        assert token_distillation_loss(student, teacher, temperature=t).item() == pytest.approx(
            reference_kd(student, teacher, None, t), rel=1e-5)
    # Padded positions do not count, whatever their logits.
    noisy = student.clone()
    noisy[mask == 0] = 100 * torch.randn(int((mask == 0).sum()), 7, generator=g)
    assert torch.allclose(token_distillation_loss(noisy, teacher, mask),
                          token_distillation_loss(student, teacher, mask))
    assert not torch.allclose(token_distillation_loss(noisy, teacher), token_distillation_loss(student, teacher))
    # Zero when the distributions agree (a constant shift of the logits changes nothing).
    assert token_distillation_loss(teacher + 4.0, teacher, mask, 2.0).abs() < 1e-6


def test_token_distillation_loss_scales_by_t_squared_and_has_the_kd_gradient():
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(2, 3, 11, generator=g), torch.randn(2, 3, 11, generator=g)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    # KL at temperature T of logits (T s, T t) is the KL at 1 of (s, t): the loss is T^2 times it.
    t = 4.0
    assert token_distillation_loss(t * student, t * teacher, mask, t).item() == pytest.approx(
        t * t * token_distillation_loss(student, teacher, mask).item(), rel=1e-5)
    # d/ds of T^2 KL is T (q - p) at each real position, over their number; 0 on padding.
    s = student.clone().requires_grad_(True)
    token_distillation_loss(s, teacher, mask, t).backward()
    expected = t * (torch.softmax(student / t, -1) - torch.softmax(teacher / t, -1)) / mask.sum()
    expected[mask == 0] = 0
    assert torch.allclose(s.grad, expected, atol=1e-6)


def test_mismatched_vocabularies_are_refused(unchanged):
    with pytest.raises(ValueError, match="vocabular.*64.*80"):
        token_distillation_loss(torch.zeros(2, 3, 64), torch.zeros(2, 3, 80))
    check_same_vocabulary(lm_student(zoo.tiny_llama(), hidden_size=16, num_layers=1), zoo.tiny_llama())
    student, teacher = zoo.tiny_llama(vocab_size=64), zoo.tiny_llama(vocab_size=80)
    batch = {"input_ids": torch.randint(0, 64, (2, 5)), "attention_mask": torch.ones(2, 5, dtype=torch.long)}
    with unchanged(teacher):
        with pytest.raises(ValueError, match="different vocabularies"):
            word_level_distillation(teacher)(student, batch, student(**batch))


def test_word_level_term_is_the_loss_on_the_teacher_logits_and_leaves_the_teacher_alone(tokenizer, peaked_llama):
    teacher = peaked_llama()
    student = lm_student(teacher, hidden_size=16, num_layers=1, num_heads=2)
    batch = next(iter(lm_dataloader(["w1 w2 w3 w4 w5", "w9 w8", "w3 w3 w7"], tokenizer, batch_size=3)))
    assert (batch["attention_mask"] == 0).any()
    outputs = student(**batch)
    value = word_level_distillation(teacher, temperature=2.0, weight=0.5)(student, batch, outputs)
    with torch.no_grad():
        teacher_logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = 0.5 * reference_kd(outputs.logits.detach(), teacher_logits, batch["attention_mask"], 2.0)
    assert value.item() == pytest.approx(expected, rel=1e-5)
    value.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.model.embed_tokens.weight.grad is not None


def test_lm_student_keeps_the_teachers_vocabulary_tokens_and_positions(tmp_path):
    config = LlamaConfig(vocab_size=70, hidden_size=24, intermediate_size=40, num_hidden_layers=3,
                         num_attention_heads=3, num_key_value_heads=1, bos_token_id=3, eos_token_id=5,
                         pad_token_id=0, max_position_embeddings=300, rms_norm_eps=1e-5,
                         rope_parameters={"rope_theta": 500.0, "rope_type": "default"}, tie_word_embeddings=False)
    torch.manual_seed(0)
    teacher = LlamaForCausalLM(config).eval()
    student = lm_student(teacher, hidden_size=12, num_layers=2, num_heads=2)
    c = student.config
    assert type(student) is LlamaForCausalLM
    assert (c.vocab_size, c.bos_token_id, c.eos_token_id, c.pad_token_id) == (70, 3, 5, 0)
    assert (c.max_position_embeddings, c.rms_norm_eps, c.rope_parameters["rope_theta"]) == (300, 1e-5, 500.0)
    widths = (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim)
    assert widths == (12, 2, 2, 2, 6)
    assert c.intermediate_size == 20  # the teacher's ratio 40 / 24
    assert c.tie_word_embeddings and student.lm_head.weight is student.model.embed_tokens.weight
    assert len(student.model.layers) == 2
    ids = torch.randint(0, 70, (2, 9))
    assert student(input_ids=ids).logits.shape == (2, 9, 70)
    grouped = lm_student(teacher, hidden_size=12, num_layers=2, num_heads=2, num_kv_heads=1)
    assert grouped.config.num_key_value_heads == 1
    # Seeded, and it round-trips through save_pretrained.
    again = lm_student(teacher, hidden_size=12, num_layers=2, num_heads=2)
    assert torch.equal(again.model.embed_tokens.weight, student.model.embed_tokens.weight)
    other = lm_student(teacher, hidden_size=12, num_layers=2, num_heads=2, seed=1)
    assert not torch.equal(other.model.embed_tokens.weight, student.model.embed_tokens.weight)
    student.save_pretrained(tmp_path)
    loaded = LlamaForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded(input_ids=ids).logits, student(input_ids=ids).logits)


def greedy_by_hand(model, tokenizer, prompt, steps):
    ids = tokenizer(prompt)["input_ids"]
    for _ in range(steps):
        with torch.no_grad():
            nxt = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
        ids.append(nxt)
        if nxt == EOS:
            break
    return tokenizer.decode(ids, skip_special_tokens=True)


def test_generate_corpus_greedy_is_the_argmax_loop_for_every_prompt_in_padded_batches(tokenizer, peaked_llama):
    teacher = peaked_llama()
    prompts = ["w1 w2 w3 w4", "w9", "w7 w8 w5", "[PAD] w3"]  # lengths 4, 1, 3, 2; the last holds the pad id
    texts = generate_corpus(teacher, tokenizer, prompts, max_new_tokens=7, batch_size=3, progress=False)
    assert len(texts) == len(prompts)
    assert texts[:3] == [greedy_by_hand(teacher, tokenizer, p, 7) for p in prompts[:3]]
    assert texts[3] == "[PAD] " + greedy_by_hand(teacher, tokenizer, prompts[3], 7)
    assert len(set(texts[0].split()[4:])) > 1  # the teacher does not just repeat a token
    assert all(text.startswith(p) and len(text) > len(p) for text, p in zip(texts, prompts))
    # The prompt is kept as written even where decoding would respell it.
    spaced = generate_corpus(teacher, tokenizer, ["w7  w8   w5"], max_new_tokens=7, progress=False)[0]
    assert spaced == "w7  w8   w5" + texts[2][len("w7 w8 w5"):]


def test_generate_corpus_sampling_is_seeded_and_beams_run(tokenizer, peaked_llama):
    teacher = peaked_llama()
    prompts = ["w1 w2", "w3", "w4 w5 w6"]
    kwargs = dict(max_new_tokens=6, do_sample=True, temperature=2.0, batch_size=2, progress=False)
    first = generate_corpus(teacher, tokenizer, prompts, seed=3, **kwargs)
    assert generate_corpus(teacher, tokenizer, prompts, seed=3, **kwargs) == first
    assert generate_corpus(teacher, tokenizer, prompts, seed=4, **kwargs) != first
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    generate_corpus(teacher, tokenizer, prompts, seed=3, **kwargs)
    assert torch.equal(torch.rand(1), before)  # the caller's RNG is left as it was
    beams = generate_corpus(teacher, tokenizer, prompts, max_new_tokens=6, num_beams=3, progress=False)
    assert len(beams) == 3 and all(b.startswith(p) for b, p in zip(beams, prompts))


def test_lm_dataloader_labels_are_minus_100_exactly_on_padding(tokenizer):
    texts = ["w1 w2 w3", "w4 [PAD] w5 w6 w7 w8 w9 w10 w11", "w12 w13", "w1 w1 w1 w1 w1"]
    loader = lm_dataloader(texts, tokenizer, block_size=6, batch_size=3)
    batches = list(loader)
    assert [b["input_ids"].shape for b in batches] == [(3, 6), (1, 5)]
    rows = [r for b in batches for r, m in zip(b["input_ids"], b["attention_mask"]) for r in [r[m == 1].tolist()]]
    assert rows == [tokenizer(t)["input_ids"][:6] for t in texts]  # one row a text, truncated to block_size
    for b in batches:
        assert torch.equal(b["labels"] == -100, b["attention_mask"] == 0)
        assert torch.equal(b["labels"][b["attention_mask"] == 1], b["input_ids"][b["attention_mask"] == 1])
    assert batches[0]["labels"][1, 1] == tokenizer.pad_token_id  # a real token with the pad id keeps its label
    one = [b["input_ids"].tolist() for b in lm_dataloader(texts, tokenizer, batch_size=2, shuffle=True, seed=5)]
    assert one == [b["input_ids"].tolist() for b in lm_dataloader(texts, tokenizer, batch_size=2, shuffle=True, seed=5)]


def test_fit_trains_a_student_with_the_word_level_term_and_the_term_falls(tokenizer, peaked_llama):
    teacher = peaked_llama()
    corpus = generate_corpus(teacher, tokenizer, ["w1 w2", "w3", "w4 w5 w6", "w7", "w8 w9"], max_new_tokens=8,
                             progress=False)
    loader = lm_dataloader(corpus, tokenizer, batch_size=3)
    student = lm_student(teacher, hidden_size=16, num_layers=1, num_heads=2)
    before = [p.detach().clone() for p in student.parameters()]
    term = word_level_distillation(teacher, temperature=2.0)
    result = fit(student, loader, TrainConfig(max_steps=2, lr=1e-3, progress=False), extra_losses={"kd": term})
    assert result.steps == 2 and result.history[-1]["loss_kd"] > 0 and result.history[-1]["loss_task"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))

    # Plain torch: 20 steps on the KD term alone bring it down.
    student = lm_student(teacher, hidden_size=16, num_layers=1, num_heads=2).train()
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
    batch = next(iter(loader))
    values = []
    for _ in range(20):
        value = term(student, batch, student(**batch))
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        values.append(value.item())
    assert values[-1] < 0.5 * values[0]


def test_bad_input(tokenizer, unchanged):
    llama = zoo.tiny_llama()
    with pytest.raises(ValueError, match="temperature must be a number > 0"):
        token_distillation_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), temperature=0)
    with pytest.raises(ValueError, match=r"student_logits must be \(batch, length, vocab\)"):
        token_distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="must have one shape"):
        token_distillation_loss(torch.zeros(1, 2, 3), torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match=r"attention_mask must be \(batch, length\)"):
        token_distillation_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.ones(1, 3))
    with pytest.raises(ValueError, match="attention_mask has no real position"):
        token_distillation_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.zeros(1, 2))
    with pytest.raises(TypeError, match="teacher_logits must be a torch.Tensor"):
        token_distillation_loss(torch.zeros(1, 2, 3), [[0.0]])
    with unchanged(llama):
        with pytest.raises(ValueError, match="weight must be a number >= 0"):
            word_level_distillation(llama, weight=-1)
    with unchanged(llama):
        with pytest.raises(ValueError, match="temperature must be a number > 0"):
            word_level_distillation(llama, temperature=-2)
    with pytest.raises(TypeError, match="teacher must be an nn.Module"):
        word_level_distillation("smollm2")
    with unchanged(llama):
        with pytest.raises(ValueError, match=r"hidden_size \(30\) must be divisible by num_heads \(4\)"):
            lm_student(llama, hidden_size=30, num_heads=4)
    with unchanged(llama):
        with pytest.raises(ValueError, match="must be even for rotary embeddings"):
            lm_student(llama, hidden_size=12, num_heads=4)
    with unchanged(llama):
        with pytest.raises(ValueError, match=r"num_heads \(4\) must be divisible by num_kv_heads \(3\)"):
            lm_student(llama, hidden_size=16, num_heads=4, num_kv_heads=3)
    with unchanged(llama):
        with pytest.raises(ValueError, match="num_layers must be an int >= 1, got 0"):
            lm_student(llama, num_layers=0)
    with pytest.raises(ValueError, match="Llama-style config.*num_key_value_heads"):
        lm_student(zoo.tiny_bert())
    with unchanged(llama):
        with pytest.raises(ValueError, match="prompts must not be empty"):
            generate_corpus(llama, tokenizer, [])
    with unchanged(llama):
        with pytest.raises(TypeError, match="prompts must be a sequence of str"):
            generate_corpus(llama, tokenizer, "w1 w2")
    with unchanged(llama):
        with pytest.raises(ValueError, match="gives no token to continue from"):
            generate_corpus(llama, tokenizer, ["w1", ""])
    with unchanged(llama):
        with pytest.raises(ValueError, match=r"top_p must be a number in \(0, 1\], got 0"):
            generate_corpus(llama, tokenizer, ["w1"], top_p=0)
    with unchanged(llama):
        with pytest.raises(ValueError, match="num_beams must be an int >= 1"):
            generate_corpus(llama, tokenizer, ["w1"], num_beams=0)
    with pytest.raises(TypeError, match="teacher must be a Hugging Face generative model"):
        generate_corpus(zoo.tiny_lstm(), tokenizer, ["w1"])
    with pytest.raises(ValueError, match="texts must not be empty"):
        lm_dataloader([], tokenizer)
    with pytest.raises(ValueError, match="block_size must be an int >= 2, got 1"):
        lm_dataloader(["w1 w2"], tokenizer, block_size=1)
    with pytest.raises(ValueError, match=r"texts\[1\] = 'w3' gives 1 token\(s\)"):
        lm_dataloader(["w1 w2", "w3"], tokenizer)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        lm_dataloader(["w1 w2"], tokenizer, batch_size=0)


# ----------------------------------------------------------------------------------
# The text helpers top_k shares

from shrinklib.distill.sequence import check_texts, token_lists  # noqa: E402


def test_check_texts_and_token_lists(tokenizer):
    texts = ("w1 w2 w3", "w4", "w5 w6")
    assert check_texts("texts", texts) == list(texts)
    expected = [tokenizer(t)["input_ids"] for t in texts]
    assert token_lists(tokenizer, list(texts)) == expected == [[5, 6, 7], [8], [9, 10]]
    assert token_lists(tokenizer, ["w1 w2 w3 w4"], truncation=True, max_length=2) == [[5, 6]]


def test_check_texts_and_token_lists_bad_input(tokenizer):
    with pytest.raises(TypeError, match=r"prompts must be a sequence of str \(a list\), got str"):
        check_texts("prompts", "w1 w2")
    with pytest.raises(ValueError, match="texts must not be empty"):
        check_texts("texts", [])
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str, got int"):
        check_texts("texts", ["w1", 3])
    with pytest.raises(TypeError, match="tokenizer must be a Hugging Face tokenizer, got str"):
        token_lists("gpt2", ["w1"])


def test_a_token_the_teacher_masks_adds_nothing_even_where_the_student_masks_it_too():
    """0 log(0 / q) = 0, also for q = 0: the positions where both give a token -inf are recomputed
    with safe_log_probs and agree with the reference that drops the token; the gradient is finite."""
    g = torch.Generator().manual_seed(2)
    student, teacher = torch.randn(2, 4, 9, generator=g), torch.randn(2, 4, 9, generator=g)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    teacher[..., 3] = float("-inf")  # masked by the teacher everywhere
    student[0, 1, 3] = student[1, 2, 3] = float("-inf")  # and by the student at two positions
    s = student.clone().requires_grad_(True)
    value = token_distillation_loss(s, teacher, mask, 2.0)
    keep = [v for v in range(9) if v != 3]
    total, count = 0.0, 0
    for b in range(2):
        for i in range(4):
            if mask[b, i]:
                p = torch.softmax(teacher[b, i, keep].double() / 2, -1)
                log_q = torch.log_softmax(student[b, i].double() / 2, -1)[keep]
                total, count = total + float((p * (p.log() - log_q)).sum()), count + 1
    assert torch.isfinite(value) and value.item() == pytest.approx(4 * total / count, rel=1e-5)
    value.backward()
    assert torch.isfinite(s.grad).all()
