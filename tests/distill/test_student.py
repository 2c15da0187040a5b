import pytest
import torch

import shrinklib  # noqa: F401  (first: it sets TRITON_INTERPRET before transformers can load triton)
from transformers import BertForSequenceClassification, BertModel  # noqa: E402

from shrinklib import zoo
from shrinklib.distill.student import bert_student, bilstm_student, student_from_teacher


def _batch(vocab=60):
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, vocab, (3, 7), generator=g)
    attention_mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 3 + [0] * 4])
    return input_ids, attention_mask


def _by_hand(teacher, layers, input_ids, attention_mask):
    """The teacher's embeddings, then the chosen layers one by one, the pooler and the classifier."""
    base = teacher.base_model
    hidden = base.embeddings(input_ids=input_ids)
    additive = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    for i in layers:
        hidden = base.encoder.layer[i](hidden, additive)
    if base is teacher:
        return hidden
    return teacher.classifier(base.pooler(hidden))


def test_student_from_teacher_runs_the_chosen_layers_of_the_teacher_exactly():
    teacher = zoo.tiny_bert(vocab_size=60, num_layers=5, num_labels=3)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = student_from_teacher(teacher, [0, 2, 4])
    assert type(student) is type(teacher)
    assert student.config.num_hidden_layers == 3 and len(student.bert.encoder.layer) == 3
    assert teacher.config.num_hidden_layers == 5 and len(teacher.bert.encoder.layer) == 5
    assert not student.training
    input_ids, mask = _batch()
    with torch.no_grad():
        assert torch.equal(student(input_ids=input_ids, attention_mask=mask).logits,
                           _by_hand(teacher, [0, 2, 4], input_ids, mask))
        # a different choice of layers gives a different model
        other = student_from_teacher(teacher, [1, 2, 3])
        assert not torch.allclose(other(input_ids=input_ids, attention_mask=mask).logits,
                                  student(input_ids=input_ids, attention_mask=mask).logits)
    # deep copies: training the student leaves the teacher as it was
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_student_from_teacher_round_trips_through_save_pretrained(tmp_path):
    teacher = zoo.tiny_bert(vocab_size=60, num_layers=4)
    student = student_from_teacher(teacher, [1, 3])
    student.save_pretrained(tmp_path)
    loaded = BertForSequenceClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.num_hidden_layers == 2
    input_ids, mask = _batch()
    with torch.no_grad():
        expected = _by_hand(teacher, [1, 3], input_ids, mask)
        assert torch.equal(loaded(input_ids=input_ids, attention_mask=mask).logits, expected)


def test_student_from_teacher_takes_any_bert_like_class():
    teacher = BertModel(zoo.tiny_bert(vocab_size=60, num_layers=3).config).eval()
    student = student_from_teacher(teacher, [2])
    input_ids, mask = _batch()
    with torch.no_grad():
        assert torch.equal(student(input_ids=input_ids, attention_mask=mask).last_hidden_state,
                           _by_hand(teacher, [2], input_ids, mask))


def test_bert_student_has_its_own_shape_and_the_teachers_vocabulary_and_labels():
    teacher = zoo.tiny_bert(vocab_size=60, num_layers=4, num_labels=3)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    student = bert_student(teacher, num_layers=3, hidden_size=24, num_heads=3, intermediate_size=40, seed=1)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is untouched
    c, t = student.config, teacher.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (3, 24, 3, 40)
    assert (c.vocab_size, c.max_position_embeddings, c.type_vocab_size, c.num_labels) == \
           (t.vocab_size, t.max_position_embeddings, t.type_vocab_size, t.num_labels)
    assert t.hidden_size == 32 and t.num_hidden_layers == 4  # the teacher's config is not changed
    assert type(student) is type(teacher) and not student.training
    assert student.bert.embeddings.word_embeddings.weight.shape == (60, 24)
    assert student.classifier.weight.shape == (3, 24)
    input_ids, mask = _batch()
    assert student(input_ids=input_ids, attention_mask=mask).logits.shape == (3, 3)
    again = bert_student(teacher, num_layers=3, hidden_size=24, num_heads=3, intermediate_size=40, seed=1)
    other = bert_student(teacher, num_layers=3, hidden_size=24, num_heads=3, intermediate_size=40, seed=2)
    assert torch.equal(again.classifier.weight, student.classifier.weight)
    assert not torch.equal(other.classifier.weight, student.classifier.weight)


def test_bad_input(unchanged):
    teacher = zoo.tiny_bert(vocab_size=60, num_layers=3)
    with pytest.raises(TypeError, match="teacher must be a BERT-like Hugging Face model"):
        student_from_teacher(zoo.tiny_llama(), [0])
    with pytest.raises(TypeError, match="teacher must be a BERT-like Hugging Face model"):
        student_from_teacher(torch.nn.Linear(2, 2), [0])
    with unchanged(teacher):
        with pytest.raises(ValueError, match=r"in 0\.\.2 \(the teacher has 3 layers\), got \[0, 3\]"):
            student_from_teacher(teacher, [0, 3])
    with unchanged(teacher):
        with pytest.raises(ValueError, match="strictly increasing, got \\[2, 1\\]"):
            student_from_teacher(teacher, [2, 1])
    with unchanged(teacher):
        with pytest.raises(ValueError, match="strictly increasing"):
            student_from_teacher(teacher, [1, 1])
    with unchanged(teacher):
        with pytest.raises(ValueError, match="at least one teacher layer"):
            student_from_teacher(teacher, [])
    with unchanged(teacher):
        with pytest.raises(TypeError, match="layers must hold ints"):
            student_from_teacher(teacher, [0.0])
    with unchanged(teacher):
        with pytest.raises(TypeError, match="layers must be a sequence of ints"):
            student_from_teacher(teacher, 2)
    sizes = dict(num_layers=2, hidden_size=24, num_heads=2, intermediate_size=48)
    with pytest.raises(TypeError, match="teacher must be a BERT-like"):
        bert_student(zoo.tiny_lstm(), **sizes)
    with unchanged(teacher):
        with pytest.raises(ValueError, match="num_layers must be a positive int, got 0"):
            bert_student(teacher, **{**sizes, "num_layers": 0})
    with unchanged(teacher):
        with pytest.raises(ValueError, match="intermediate_size must be a positive int"):
            bert_student(teacher, **{**sizes, "intermediate_size": 4.5})
    with unchanged(teacher):
        with pytest.raises(ValueError, match=r"hidden_size \(24\) must be divisible by num_heads \(5\)"):
            bert_student(teacher, **{**sizes, "num_heads": 5})
    with unchanged(teacher):
        with pytest.raises(ValueError, match="seed must be a non-negative int"):
            bert_student(teacher, **sizes, seed=-1)


def test_bilstm_student_starts_from_a_copy_of_the_teachers_embeddings(tokenizer, unchanged):
    teacher = zoo.tiny_bert(vocab_size=len(tokenizer), hidden_size=32)
    torch.manual_seed(0)
    student = bilstm_student(teacher, tokenizer, hidden_size=6)
    torch.manual_seed(0)
    reference = zoo.bilstm(tokenizer, embed_dim=32, hidden_size=6)  # the same model before the copy
    embeddings = teacher.get_input_embeddings().weight
    assert torch.equal(student.embedding.weight, embeddings)
    assert student.embedding.weight.data_ptr() != embeddings.data_ptr()  # a copy: training it leaves the teacher
    assert torch.equal(student.classifier.weight, reference.classifier.weight)
    assert student.lstm.hidden_size == 6 and student.lstm.bidirectional and student.lstm.num_layers == 1
    batch = tokenizer(["w1 w2 w3", "w4"], padding=True, return_tensors="pt")
    assert student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.shape == (2, 2)
    with unchanged(teacher):
        with pytest.raises(ValueError, match="hidden_size must be a positive int, got 0"):
            bilstm_student(teacher, tokenizer, hidden_size=0)
    with pytest.raises(TypeError, match="teacher must be a model with get_input_embeddings\\(\\), got Linear"):
        bilstm_student(torch.nn.Linear(2, 2), tokenizer)
    with pytest.raises(ValueError, match="the tokenizer's 64 tokens do not match the teacher's 60 embeddings"):
        bilstm_student(zoo.tiny_bert(vocab_size=60), tokenizer)
