import re

import pytest
import torch
from torch.nn import functional as F

from shrinklib import data, zoo
from shrinklib.data import MAX_WORDS, MIN_WORDS
from shrinklib.distill.augment import (
    AugmentConfig,
    WordNeighbours,
    augment,
    teacher_labelled,
    transfer_sets,
    unlabelled_sentences,
)
from shrinklib.distill.logits import stored_logit_distillation
from shrinklib.train import TrainConfig, fit

PLANTED = {"great": 0.05, "fine": 0.2, "nice": 0.4}  # neighbours of "good" and the noise that moves them off it
DECOYS = ["[CLS]", "[MASK]", "##ing", "[unused3]", "!", "1995"]  # planted on "good" too, but never candidates


@pytest.fixture(scope="module")
def tokenizer():
    """The teacher's (MiniLM's) real WordPiece tokenizer: cheap to load, no model."""
    from transformers import AutoTokenizer

    from shrinklib import assets

    return AutoTokenizer.from_pretrained(assets.minilm_folder())


@pytest.fixture(scope="module")
def embeddings(tokenizer):
    """Random 16-d rows, with "great", "fine", "nice" (and the decoys) planted next to "good"."""
    g = torch.Generator().manual_seed(0)
    matrix = torch.randn(len(tokenizer), 16, generator=g)
    vocab = tokenizer.get_vocab()
    good = torch.zeros(16)
    good[0] = 5.0
    matrix[vocab["good"]] = good
    for word, noise in PLANTED.items():
        matrix[vocab[word]] = good + noise * torch.randn(16, generator=g)
    for token in DECOYS:
        matrix[vocab[token]] = good
    return matrix


def _whole_words(tokenizer, start=2000, count=400):
    """``count`` vocabulary words that the tokenizer keeps as one token."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    words = [t for t, _ in vocab[start:] if t.isalpha() and t.islower() and tokenizer.tokenize(t) == [t]]
    return words[:count]


def test_neighbours_are_the_planted_words_in_order(tokenizer, embeddings):
    table = WordNeighbours(tokenizer, embeddings, k=3)
    vocab = tokenizer.get_vocab()
    cos = {w: F.cosine_similarity(embeddings[vocab["good"]], embeddings[vocab[w]], dim=0).item() for w in PLANTED}
    assert table.neighbours("good") == tuple(sorted(PLANTED, key=cos.get, reverse=True))
    assert table.neighbours("Good") == table.neighbours("good")  # an uncased tokenizer
    assert table.neighbours("unbelievably") == () and "unbelievably" not in table  # four pieces
    assert table.neighbours("[CLS]") == () and table.neighbours("") == ()
    assert "good" in table and len(table) > 20_000


def test_neighbours_match_a_brute_force_reference(tokenizer, embeddings):
    special = set(tokenizer.all_special_tokens)
    items = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    candidates = [(t, i) for t, i in items if t not in special and not t.startswith("##")
                  and not (t.startswith("[") and t.endswith("]")) and any(c.isalpha() for c in t)]
    ids = torch.tensor([i for _, i in candidates])
    words = ["movie", "the", "running", "paris", "x"]
    restricted = WordNeighbours(tokenizer, embeddings, k=5, words=words + ["unbelievably"])
    assert len(restricted) == len(words)  # "unbelievably" is not one token
    for word in words:
        own = tokenizer.get_vocab()[word]
        cos = F.cosine_similarity(embeddings[own].unsqueeze(0), embeddings[ids], dim=1)
        order = [candidates[j][0] for j in cos.argsort(descending=True).tolist() if candidates[j][1] != own]
        assert restricted.neighbours(word) == tuple(order[:5])
    # a word outside the precomputed ones is computed when asked, and agrees with the full table
    assert restricted.neighbours("good") == WordNeighbours(tokenizer, embeddings, k=5, words=["good"]).neighbours("good")
    assert len(restricted) == len(words) + 1


def test_augment_is_reproducible_and_shaped(tokenizer, embeddings):
    texts = ["A three-hour cinema master class.", "good", "It's always fascinating to watch Marker at work."]
    config = AugmentConfig(copies=5)
    first = augment(texts, tokenizer, embeddings, config, seed=0)
    assert len(first) == 15 and first == augment(texts, tokenizer, embeddings, config, seed=0)
    assert first != augment(texts, tokenizer, embeddings, config, seed=1)
    table = WordNeighbours(tokenizer, embeddings, k=config.neighbours)
    assert augment(texts, tokenizer, table, config, seed=0) == first  # a prebuilt table gives the same
    nothing = AugmentConfig(p_mask=0, p_replace=0, p_ngram=0, copies=2)
    assert augment([" a  b c "], tokenizer, embeddings, nothing) == ["a b c", "a b c"]


def test_mask_and_replace_rates(tokenizer, embeddings):
    words = _whole_words(tokenizer)
    assert len(words) == 400
    texts = [" ".join(words[i:i + 100]) for i in range(0, 400, 100)]
    config = AugmentConfig(p_mask=0.2, p_replace=0.3, p_ngram=0, copies=1, neighbours=4)
    table = WordNeighbours(tokenizer, embeddings, k=4, words=words)
    out = augment(texts, tokenizer, table, config, seed=3)
    masked = replaced = 0
    for text, variant in zip(texts, out):
        for before, after in zip(text.split(), variant.split(), strict=True):
            if after == "[MASK]":
                masked += 1
            elif after != before:
                assert after in table.neighbours(before)
                replaced += 1
    # expected 80 and 120 of 400 (sd 8 and 9): bounds 4 sd wide, and 0 if an operation were skipped
    assert 48 <= masked <= 112 and 84 <= replaced <= 156


def test_punctuation_and_case_survive_a_replacement(tokenizer, embeddings):
    one = AugmentConfig(p_mask=0, p_replace=1, p_ngram=0, copies=1, neighbours=1)
    first, second = augment(["Good, GOOD good."], tokenizer, embeddings, one)[0].split()[:2]
    assert first == "Great," and second == "GREAT"
    masked = augment(["(Good) film."], tokenizer, embeddings, AugmentConfig(p_mask=1, p_replace=0, p_ngram=0, copies=1))
    assert masked == ["([MASK]) [MASK]."]


def test_ngrams_are_contiguous_pieces_of_the_input(tokenizer, embeddings):
    texts = ["one", "a b c", "the film is a long , slow and dull affair", "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12"]
    config = AugmentConfig(p_mask=0, p_replace=0, p_ngram=1, max_ngram=4, copies=30)
    out = augment(texts, tokenizer, embeddings, config, seed=0)
    for k, text in enumerate(texts):
        words = text.split()
        variants = [v.split() for v in out[30 * k:30 * (k + 1)]]
        for v in variants:
            assert 1 <= len(v) <= min(4, len(words)) if len(words) > 4 else len(v) <= len(words)
            assert any(words[s:s + len(v)] == v for s in range(len(words) - len(v) + 1))
        if len(words) > 4:
            assert len({len(v) for v in variants}) == 4 and len({v[0] for v in variants}) > 3
    half = augment([texts[-1]], tokenizer, embeddings, AugmentConfig(p_mask=0, p_replace=0, p_ngram=0.5, copies=200))
    cut = sum(len(v.split()) < 12 for v in half)
    assert 60 <= cut <= 140  # expected 100 (sd 7)


def test_unlabelled_sentences():
    for source in ("bbc", "hamlet"):
        picked = unlabelled_sentences(source, 300, seed=0)
        assert picked == unlabelled_sentences(source, 300, seed=0) != unlabelled_sentences(source, 300, seed=1)
        assert len(set(picked)) == 300
        for s in picked:
            assert MIN_WORDS <= len(s.split()) <= MAX_WORDS and "\n" not in s and s == " ".join(s.split())
    corpus = " ".join(" ".join(data.bbc_news()["train"]["text"]).split())
    assert all(s in corpus for s in unlabelled_sentences("bbc", 50, seed=2))
    hamlet = data.lm_text("hamlet")
    speakers = re.compile(r"^(HAMLET|HORATIO|KING CLAUDIUS|First Clown|Ghost)\b")
    for s in unlabelled_sentences("hamlet", 300, seed=2):
        assert s.split()[-1].strip(".,;:!?'-") in hamlet and not speakers.match(s)


def test_teacher_labels_are_the_argmax_of_its_logits(tokenizer):
    teacher = zoo.tiny_bert(vocab_size=len(tokenizer), num_labels=3, seed=0)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # at BERT's init (std 0.02) every sentence gets one class; larger weights differ
        for module in teacher.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0, 0.3, generator=g)
    texts = ["a fine film", "dull", "an utterly wonderful and moving story , truly a gem of a film", "bad",
             "ok I guess", "great", "boring and long"]
    labelled = teacher_labelled(teacher, tokenizer, texts, batch_size=3, max_length=8)
    assert labelled.column_names == ["text", "label", "teacher_logits"] and labelled["text"] == texts
    assert labelled.features["label"].names == ["LABEL_0", "LABEL_1", "LABEL_2"]
    with torch.no_grad():
        one_by_one = torch.cat([teacher(**tokenizer(t, truncation=True, max_length=8, return_tensors="pt")).logits
                                for t in texts])
    stored = torch.tensor(labelled["teacher_logits"])
    assert torch.allclose(stored, one_by_one, atol=1e-5)
    assert labelled["label"] == stored.argmax(1).tolist() == one_by_one.argmax(1).tolist()
    assert len(set(labelled["label"])) > 1  # not a constant: the test can fail


def test_stored_logits_train_a_bilstm_through_fit_on_the_labelled_dataset(tokenizer):
    teacher = zoo.tiny_bert(vocab_size=len(tokenizer), seed=4)
    labelled = teacher_labelled(teacher, tokenizer, unlabelled_sentences("hamlet", 16, seed=0))
    student = zoo.bilstm(tokenizer, embed_dim=8, hidden_size=6)
    seen_keys, forward = [], student.forward

    def spy(**inputs):  # the stored logits are for the loss term, not for the model
        seen_keys.append(set(inputs))
        return forward(**inputs)

    student.forward = spy
    before = student.classifier.weight.detach().clone()
    result = fit(student, labelled, TrainConfig(max_steps=2, batch_size=8, lr=1e-2, task_loss_weight=0.0,
                                                progress=False),
                 tokenizer=tokenizer, extra_losses={"kd": stored_logit_distillation(loss="mse")})
    assert result.steps == 2 and result.history[-1]["loss_kd"] > 0
    assert not torch.equal(before, student.classifier.weight)
    assert seen_keys and all("teacher_logits" not in keys and "input_ids" in keys for keys in seen_keys)


def test_bad_input(tokenizer, embeddings, unchanged):
    for kwargs, message in [({"p_mask": 1.5}, "p_mask must be a probability in"),
                            ({"p_replace": -0.1}, "p_replace must be a probability"),
                            ({"p_ngram": True}, "p_ngram must be a probability"),
                            ({"p_mask": 0.6, "p_replace": 0.5}, "p_mask \\+ p_replace must be at most 1"),
                            ({"max_ngram": 2.0}, "max_ngram must be a positive int"),
                            ({"copies": 0}, "copies must be a positive int"),
                            ({"neighbours": -3}, "neighbours must be a positive int")]:
        with pytest.raises(ValueError, match=message):
            AugmentConfig(**kwargs)
    with pytest.raises(ValueError, match="texts is empty"):
        augment([], tokenizer, embeddings)
    with pytest.raises(TypeError, match="texts must be a list of str, got str"):
        augment("a film", tokenizer, embeddings)
    with pytest.raises(TypeError, match="texts must hold str, got a int at index 1"):
        augment(["a", 3], tokenizer, embeddings)
    with pytest.raises(TypeError, match="config must be an AugmentConfig"):
        augment(["a"], tokenizer, embeddings, {"copies": 2})
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        augment(["a"], tokenizer, embeddings, seed=-1)
    with pytest.raises(TypeError, match="embeddings must be a 2-D tensor .* or an nn.Embedding, got str"):
        augment(["a"], tokenizer, "glove")
    with pytest.raises(ValueError, match=r"embeddings must be a 2-D tensor \(vocabulary, dim\), got shape \(5,\)"):
        augment(["a"], tokenizer, torch.zeros(5))

    class NoMask:
        mask_token = None

    with pytest.raises(ValueError, match="no mask token, so p_mask must be 0"):
        augment(["a"], NoMask(), embeddings)
    with pytest.raises(ValueError, match=r"a row per token of the tokenizer \(30522\), got 100 rows"):
        WordNeighbours(tokenizer, torch.zeros(100, 4))
    with pytest.raises(ValueError, match="k must be a positive int"):
        WordNeighbours(tokenizer, embeddings, k=0)
    with pytest.raises(TypeError, match="tokenizer must be a Hugging Face tokenizer"):
        WordNeighbours("bert", embeddings)
    with pytest.raises(TypeError, match="words must be an iterable of words, got a str"):
        WordNeighbours(tokenizer, embeddings, words="good")
    with pytest.raises(TypeError, match="word must be a str"):
        WordNeighbours(tokenizer, embeddings, words=["good"]).neighbours(3)
    # The choice goes through shrinklib._checks.check_choice (issue 17): its one message shape names
    # the argument, and a list (unhashable) is refused the same way instead of "unhashable type".
    with pytest.raises(ValueError, match="source must be one of 'bbc', 'hamlet', got 'imdb'"):
        unlabelled_sentences("imdb", 10)
    with pytest.raises(ValueError, match=r"source must be one of 'bbc', 'hamlet', got \['bbc'\]"):
        unlabelled_sentences(["bbc"], 10)
    with pytest.raises(ValueError, match="n must be a positive int, got 0"):
        unlabelled_sentences("hamlet", 0)
    with pytest.raises(ValueError, match=r"n=1000000 is more than the \d+ distinct sentences of 'hamlet'"):
        unlabelled_sentences("hamlet", 10**6)
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        unlabelled_sentences("hamlet", 10, seed=1.5)
    teacher = zoo.tiny_bert(vocab_size=len(tokenizer))
    with pytest.raises(TypeError, match="teacher must be an nn.Module, got str"):
        teacher_labelled("bert", tokenizer, ["a"])
    with unchanged(teacher):
        with pytest.raises(ValueError, match="texts is empty"):
            teacher_labelled(teacher, tokenizer, [])
    with unchanged(teacher):
        with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
            teacher_labelled(teacher, tokenizer, ["a"], batch_size=0)


def test_transfer_sets_are_labelled_by_the_teacher_once_and_cached(tokenizer, tmp_path, monkeypatch):
    from datasets import Dataset

    monkeypatch.setenv("SHRINKLIB_CACHE", str(tmp_path))
    teacher = zoo.tiny_bert(vocab_size=len(tokenizer), seed=4)
    texts = ["a fine film", "dull and long", "an utterly wonderful story", "bad"]
    train = Dataset.from_dict({"text": texts, "label": [1, 0, 1, 0]})
    with_logits, augmented = transfer_sets(teacher, tokenizer, train, teacher_key="tiny", copies=1, seed=0)
    scored = teacher_labelled(teacher, tokenizer, texts)
    assert with_logits["text"] == texts and with_logits["label"] == [1, 0, 1, 0]  # gold labels kept
    assert torch.allclose(torch.tensor(with_logits["teacher_logits"]), torch.tensor(scored["teacher_logits"]))
    variants = augment(texts, tokenizer, teacher.get_input_embeddings(), AugmentConfig(copies=1), seed=0)
    assert augmented["text"] == texts + variants
    relabelled = teacher_labelled(teacher, tokenizer, texts + variants)
    assert augmented["label"] == relabelled["label"]  # the teacher's labels, on every sentence
    other = zoo.tiny_bert(vocab_size=len(tokenizer), seed=5)  # same key: the cached sets, the teacher not run
    again = transfer_sets(other, tokenizer, train, teacher_key="tiny", copies=1, seed=0)
    assert again[1]["teacher_logits"] == augmented["teacher_logits"]
    with pytest.raises(ValueError, match="teacher_key must be a non-empty str naming the teacher, got ''"):
        transfer_sets(teacher, tokenizer, train, teacher_key="")
