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


# ----------------------------------------------------------------------------------
# MSE on logits (Tang et al. 2019), stored logits, one vocabulary, distill

import dataclasses  # noqa: E402

from datasets import Dataset  # noqa: E402
from torch import nn  # noqa: E402

from shrinklib import train  # noqa: E402
from shrinklib.distill.logits import (  # noqa: E402
    check_same_vocabulary,
    distill,
    logit_mse_loss,
    stored_logit_distillation,
)
from shrinklib.arch import vocab_size  # noqa: E402
from shrinklib.train import TrainConfig, fit  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    """The teacher's (MiniLM's) real WordPiece tokenizer: cheap to load, no model."""
    from transformers import AutoTokenizer

    from shrinklib import assets

    return AutoTokenizer.from_pretrained(assets.minilm_folder())


def _no_dropout(model):
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return model


def test_logit_mse_loss_matches_a_loop_over_entries():
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(5, 3, generator=g), 3 * torch.randn(5, 3, generator=g)
    total = sum((student[i, c] - teacher[i, c]) ** 2 for i in range(5) for c in range(3))
    assert torch.allclose(logit_mse_loss(student, teacher), total / 15, atol=1e-6)
    assert logit_mse_loss(teacher, teacher) == 0
    # the MSE sees the logits' scale, the KL only their softmax
    assert soft_target_loss(teacher + 4.0, teacher).abs() < 1e-5 and logit_mse_loss(teacher + 4.0, teacher) > 15


def test_logit_distillation_mse_and_kl_terms(padded_batch):
    teacher, student = zoo.tiny_bert(vocab_size=50, seed=1), zoo.tiny_bert(vocab_size=50, num_labels=2, seed=2)
    batch = padded_batch()
    outputs = student(**batch)
    z_t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    mse = logit_distillation(teacher, weight=0.3, loss="mse")(student, batch, outputs)
    assert torch.allclose(mse, 0.3 * ((outputs.logits - z_t) ** 2).mean(), atol=1e-6)
    kl = logit_distillation(teacher, temperature=3.0, loss="kl")(student, batch, outputs)
    assert torch.allclose(kl, soft_target_loss(outputs.logits, z_t, 3.0), atol=1e-6)


def test_stored_logit_distillation_reads_the_batch_and_equals_running_the_teacher(padded_batch):
    teacher, student = zoo.tiny_bert(vocab_size=50, seed=1), zoo.tiny_bert(vocab_size=50, seed=2)
    batch = padded_batch()
    outputs = student(**batch)
    stored = dict(batch, teacher_logits=teacher(**{k: v for k, v in batch.items() if k != "labels"}).logits.detach())
    for loss in ("kl", "mse"):
        live = logit_distillation(teacher, temperature=1.5, weight=0.7, loss=loss)(student, batch, outputs)
        # the live term must ignore a 'teacher_logits' key, and the stored term needs no teacher
        live_too = logit_distillation(teacher, temperature=1.5, weight=0.7, loss=loss)(student, stored, outputs)
        from_batch = stored_logit_distillation(temperature=1.5, weight=0.7, loss=loss)(student, stored, outputs)
        assert torch.allclose(live, from_batch, atol=1e-6) and torch.allclose(live, live_too, atol=1e-6)
    as_list = dict(batch, teacher_logits=stored["teacher_logits"].tolist())
    assert torch.allclose(stored_logit_distillation()(student, as_list, outputs),
                          stored_logit_distillation()(student, stored, outputs))


def test_vocabulary_size_of_bert_lstm_and_plain_modules():
    assert vocab_size(zoo.tiny_bert(vocab_size=77)) == 77
    assert vocab_size(zoo.tiny_lstm(vocab_size=91)) == 91  # BiLSTM: its .embedding
    assert vocab_size(nn.Linear(3, 2)) is None
    check_same_vocabulary(zoo.tiny_lstm(vocab_size=50), zoo.tiny_bert(vocab_size=50))
    check_same_vocabulary(nn.Linear(3, 2), zoo.tiny_bert(vocab_size=50))  # unknown: nothing to compare


def test_mismatched_vocabularies_are_refused(padded_batch, unchanged):
    teacher = zoo.tiny_bert(vocab_size=60)
    for student in (zoo.tiny_bert(vocab_size=50), zoo.tiny_lstm(vocab_size=50)):
        batch = padded_batch(vocab=50)
        term = logit_distillation(teacher)
        with pytest.raises(ValueError, match=r"different vocabular.*\(50 and 60 tokens\)"):
            term(student, batch, student(**batch))
        with unchanged(teacher), unchanged(student):
            with pytest.raises(ValueError, match="vocabular"):
                distill(student, teacher, Dataset.from_dict({"text": ["a"], "label": [0]}))


def test_a_bilstm_student_learns_from_a_bert_teacher_with_mse(tokenizer):
    teacher = zoo.tiny_bert(vocab_size=len(tokenizer), seed=3)
    student = zoo.bilstm(tokenizer, embed_dim=8, hidden_size=6, dropout=0.0)
    texts = ["a fine film", "dull", "an utterly wonderful and moving story , truly", "bad", "ok I guess",
             "great", "boring and long", "superb acting"]
    data = Dataset.from_dict({"text": texts, "label": [1, 0, 1, 0, 1, 1, 0, 1]})
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    term = logit_distillation(teacher, loss="mse")
    with torch.no_grad():
        before = term(student, dict(batch), student(**batch)).item()
    weights = student.classifier.weight.detach().clone()
    result = fit(student, data, TrainConfig(max_steps=2, batch_size=8, lr=2e-2, task_loss_weight=0.0, progress=False),
                 tokenizer=tokenizer, extra_losses={"kd": term})
    with torch.no_grad():
        after = term(student, dict(batch), student(**batch)).item()
    assert result.steps == 2 and not torch.equal(weights, student.classifier.weight)
    assert after < before and "loss_kd" in result.history[-1] and "loss_task" not in result.history[-1]


def test_distill_passes_hintons_mix_to_fit(monkeypatch, padded_batch):
    teacher, student = zoo.tiny_bert(vocab_size=50, seed=1), zoo.tiny_bert(vocab_size=50, seed=2)
    seen = {}

    def fake_fit(model, data, config, **kwargs):
        seen.update(model=model, data=data, config=config, **kwargs)
        return train.TrainResult(steps=0)

    monkeypatch.setattr(train, "fit", fake_fit)
    config = TrainConfig(max_steps=3, lr=1e-3, progress=False)
    distill(student, teacher, "DATA", config, tokenizer="TOK", eval_data="EVAL", temperature=3.0, alpha=0.25, loss="kl")
    assert seen["config"] == dataclasses.replace(config, task_loss_weight=0.75)
    assert (seen["model"], seen["data"], seen["tokenizer"], seen["eval_data"]) == (student, "DATA", "TOK", "EVAL")
    batch = padded_batch()
    outputs = student(**batch)
    z_t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(seen["extra_losses"]["kd"](student, batch, outputs),
                          0.25 * soft_target_loss(outputs.logits, z_t, 3.0), atol=1e-6)
    distill(student, teacher, "DATA", config, alpha=0)
    assert seen["extra_losses"] == {} and seen["config"].task_loss_weight == 1.0
    distill(student, teacher, "DATA", config, alpha=1, loss="mse")
    assert seen["config"].task_loss_weight == 0.0
    assert torch.allclose(seen["extra_losses"]["kd"](student, batch, outputs), logit_mse_loss(outputs.logits, z_t))


def test_distill_first_step_loss_is_the_written_out_mix():
    """One batch holding all the data: step 1's logged terms are the formula at the initial weights."""
    teacher, student = zoo.tiny_bert(vocab_size=50, seed=1), _no_dropout(zoo.tiny_bert(vocab_size=50, seed=2))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 50, (12, 9), generator=g)
    labels = torch.randint(0, 2, (12,), generator=g)
    data = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist(),
                              "label": labels.tolist()})
    with torch.no_grad():
        z_s, z_t = student(input_ids=ids).logits, teacher(input_ids=ids).logits
        hard = nn.functional.cross_entropy(z_s, labels)
        soft = soft_target_loss(z_s, z_t, 2.5)

    class Pad:
        def pad(self, examples, return_tensors="pt"):
            return {k: torch.tensor([e[k] for e in examples]) for k in examples[0]}

    result = distill(student, teacher, data, TrainConfig(max_steps=1, batch_size=12, progress=False),
                     tokenizer=Pad(), temperature=2.5, alpha=0.3)
    row = result.history[0]
    assert row["loss_task"] == pytest.approx(0.7 * hard.item(), rel=1e-5)
    assert row["loss_kd"] == pytest.approx(0.3 * soft.item(), rel=1e-5)
    assert row["loss"] == pytest.approx(row["loss_task"] + row["loss_kd"], rel=1e-6)


def test_bad_input_of_the_new_functions(padded_batch, unchanged):
    bert = zoo.tiny_bert(vocab_size=50)
    with pytest.raises(ValueError, match="must have one shape"):
        logit_mse_loss(torch.zeros(2, 3), torch.zeros(3, 2))
    with unchanged(bert):
        with pytest.raises(ValueError, match="loss must be one of 'kl', 'mse', got 'l1'"):
            logit_distillation(bert, loss="l1")
    with pytest.raises(ValueError, match="loss must be one of"):
        stored_logit_distillation(loss="KL")
    with pytest.raises(ValueError, match="temperature must be a number > 0"):
        stored_logit_distillation(temperature=-1)
    with pytest.raises(ValueError, match="weight must be a number >= 0"):
        stored_logit_distillation(weight=-0.1)
    batch = padded_batch()
    with pytest.raises(ValueError, match="the batch has no 'teacher_logits'.*teacher_labelled"):
        stored_logit_distillation()(bert, batch, bert(**batch))
    with pytest.raises(ValueError, match="must have one shape"):
        stored_logit_distillation()(bert, dict(batch, teacher_logits=torch.zeros(5, 3)), bert(**batch))
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        vocab_size("bert")
    # check_same_vocabulary now names its own argument (issue 17), not vocab_size's "model"
    with unchanged(bert):
        with pytest.raises(TypeError, match="teacher must be an nn.Module, got NoneType"):
            check_same_vocabulary(bert, None)
    with unchanged(bert):
        with pytest.raises(TypeError, match=r"teachers\[2\] must be an nn.Module, got str"):
            check_same_vocabulary(bert, "bert", teacher_name="teachers[2]")
    other = zoo.tiny_bert(vocab_size=50, seed=1)
    data = Dataset.from_dict({"text": ["a"], "label": [0]})
    for alpha in (-0.1, 1.5, True, "0.5"):
        with unchanged(bert), unchanged(other):
            with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\]"):
                distill(bert, other, data, alpha=alpha)
    with unchanged(bert), unchanged(other):
        with pytest.raises(ValueError, match="leave TrainConfig.task_loss_weight at 1.0, got 0.5"):
            distill(bert, other, data, TrainConfig(task_loss_weight=0.5))
    with unchanged(bert), unchanged(other):
        with pytest.raises(TypeError, match="config must be a TrainConfig"):
            distill(bert, other, data, {"lr": 1e-3})
    with unchanged(bert):
        with pytest.raises(TypeError, match="teacher must be an nn.Module"):
            distill(bert, "teacher", data)
    with unchanged(bert):
        with pytest.raises(ValueError, match="the same one twice"):
            distill(bert, bert, data)
    with unchanged(bert), unchanged(other):
        with pytest.raises(ValueError, match="loss must be one of"):
            distill(bert, other, data, loss="ce")


# ----------------------------------------------------------------------------------
# run_teacher: the one way a live teacher reads a batch

from shrinklib.distill.logits import run_teacher  # noqa: E402


def test_run_teacher_gives_the_teachers_logits_on_the_model_inputs_without_gradient(padded_batch):
    teacher = zoo.tiny_bert(vocab_size=50, num_labels=3)
    batch = padded_batch(vocab=50)
    batch["teacher_logits"] = torch.zeros(5, 3)  # a stored target: BERT's forward would refuse this keyword
    logits = run_teacher(teacher, batch)
    with torch.no_grad():
        expected = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.equal(logits, expected) and not logits.requires_grad
    assert set(batch) == {"input_ids", "attention_mask", "labels", "teacher_logits"}  # the batch is left as it was


def test_run_teacher_bad_input():
    with pytest.raises(TypeError, match="batch must be a mapping of input names to tensors, got list"):
        run_teacher(zoo.tiny_bert(), [torch.zeros(2, 3, dtype=torch.long)])


# ----------------------------------------------------------------------------------
# A masked class (teacher logit -inf, probability 0) adds 0 to the KL

from shrinklib.distill.logits import safe_log_probs  # noqa: E402


def _kl_without(student, teacher, masked, t):
    """T^2 KL with the masked classes dropped from the sum (the teacher gives them 0), the student's
    log-probabilities still those of its softmax over every class: the reference."""
    keep = [c for c in range(teacher.shape[-1]) if c not in masked]
    p = torch.softmax(teacher[:, keep].double() / t, -1)  # = the full softmax on the kept classes
    log_q = torch.log_softmax(student.double() / t, -1)[:, keep]
    return t * t * (p * (p.log() - log_q)).sum(-1).mean()


@pytest.mark.parametrize("t", [1.0, 2.5])
def test_soft_target_loss_gives_a_masked_class_nothing_and_a_finite_gradient(t):
    g = torch.Generator().manual_seed(4)
    student, teacher = torch.randn(5, 6, generator=g), torch.randn(5, 6, generator=g)
    teacher[:, 2] = float("-inf")  # class 2 masked in every row, class 4 in one row only
    teacher[3, 4] = float("-inf")
    s = student.clone().requires_grad_(True)
    loss = soft_target_loss(s, teacher, t)
    expected = sum(_kl_without(student[i:i + 1], teacher[i:i + 1], {2, 4} if i == 3 else {2}, t) for i in range(5)) / 5
    assert torch.isfinite(loss) and loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert torch.isfinite(s.grad).all()
    # d/dz_s of T^2 KL is T (q - p) / rows, and p = 0 on a masked class
    p = torch.softmax(teacher / t, -1)
    assert torch.allclose(s.grad, t * (torch.softmax(student / t, -1) - p) / 5, atol=1e-6)
    # a student that masks the class too: still 0 from it, still a finite gradient, same value
    both = student.clone()
    both[:, 2] = float("-inf")
    both.requires_grad_(True)
    value = soft_target_loss(both, teacher, t)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(both.grad).all()
    assert value.item() == pytest.approx(
        sum(_kl_without(both.detach()[i:i + 1], teacher[i:i + 1], {2, 4} if i == 3 else {2}, t) for i in range(5)).item()
        / 5, rel=1e-5)


def test_a_masked_class_changes_nothing_else():
    """Valid logits give the same bits as before (F.kl_div on the plain log-softmaxes), and a
    teacher's masked class equals a class whose logit is so low its probability underflows to 0."""
    g = torch.Generator().manual_seed(5)
    student, teacher = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    log_q, log_p = torch.log_softmax(student / 2, -1), torch.log_softmax(teacher / 2, -1)
    plain = 4 * torch.nn.functional.kl_div(log_q, log_p, log_target=True, reduction="batchmean")
    assert torch.equal(soft_target_loss(student, teacher, 2.0), plain)
    masked, low = teacher.clone(), teacher.clone()
    masked[:, 0], low[:, 0] = float("-inf"), -1e4
    assert torch.allclose(soft_target_loss(student, masked, 2.0), soft_target_loss(student, low, 2.0), atol=1e-6)
    a, b = safe_log_probs(log_p, log_q)
    assert torch.equal(a, log_p) and torch.equal(b, log_q)  # nothing masked: returned bit for bit
