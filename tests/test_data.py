import hashlib

import pytest
import torch

from shrinklib import data, zoo


@pytest.fixture(scope="module")
def rt():
    return data.rotten_tomatoes()


def _fingerprint(ds) -> str:
    return hashlib.sha1("\n".join(f"{t}\t{l}" for t, l in zip(ds["text"], ds["label"])).encode()).hexdigest()[:12]


def test_rotten_tomatoes_sizes_and_columns(rt):
    assert {k: len(v) for k, v in rt.items()} == data.RT_SIZES
    assert rt["train"].features["label"].names == ["negative", "positive"]
    assert set(rt["test"]["label"]) == {0, 1}


def test_rotten_tomatoes_splits_are_disjoint_and_balanced_like_the_corpus(rt):
    texts = [set(rt[s]["text"]) for s in rt]
    assert sum(map(len, texts)) == len(set.union(*texts)) == 12_752
    for split in rt.values():
        share = sum(split["label"]) / len(split)
        assert 0.54 < share < 0.62  # 7,403 fresh of 12,808 = 0.578


def test_split_is_stable_across_runs_and_seeds_differ(rt):
    # pinned fingerprints: the split must not drift between runs, machines or versions
    assert _fingerprint(rt["test"]) == _fingerprint(data.rotten_tomatoes()["test"])
    assert _fingerprint(rt["test"]) == PINNED_TEST_FINGERPRINT
    assert _fingerprint(data.rotten_tomatoes(seed=1)["test"]) != _fingerprint(rt["test"])


PINNED_TEST_FINGERPRINT = "8975fe1596b1"


def test_bbc_news_has_five_classes_of_long_documents():
    bbc = data.bbc_news()
    assert {k: len(v) for k, v in bbc.items()} == {"train": 1489, "validation": 213, "test": 425}
    assert bbc["train"].features["label"].names == list(data.BBC_LABELS)
    assert set(bbc["train"]["label"]) == set(range(5))
    lengths = [len(t.split()) for t in bbc["test"]["text"]]
    assert sorted(lengths)[len(lengths) // 2] > 300  # long documents: median over 300 words


@pytest.mark.parametrize("name", data.LM_TEXTS)
def test_lm_text_parts_are_disjoint_halves(name):
    whole = data.lm_text(name)
    cal, ev = data.lm_text(name, "calibration"), data.lm_text(name, "evaluation")
    assert cal + ev == whole and abs(len(cal) - len(ev)) < 0.01 * len(whole) + 200
    assert len(whole) > 100_000


def test_hamlet_is_hamlet():
    assert "To be, or not to be" in data.lm_text("hamlet")


@pytest.mark.parametrize("call, message", [
    (lambda: data.lm_text("wikipedia"), "unknown lm_text name 'wikipedia'; choose one of 'hamlet'"),
    (lambda: data.lm_text("hamlet", "train"), "unknown part 'train'"),
])
def test_unknown_names_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_dataloader_pads_per_batch_and_carries_labels(rt):
    _, tokenizer = zoo.encoder()
    small = rt["test"].select(range(10))
    batch = next(iter(data.dataloader(small, tokenizer, batch_size=4, max_length=16)))
    assert batch["input_ids"].shape[0] == 4 and batch["input_ids"].shape[1] <= 16
    assert batch["attention_mask"].shape == batch["input_ids"].shape
    assert batch["labels"].tolist() == small["label"][:4]
    longest = max(len(tokenizer(t, truncation=True, max_length=16)["input_ids"]) for t in small["text"][:4])
    assert batch["input_ids"].shape[1] == longest  # padded to the longest, not to max_length


def test_lm_blocks():
    _, tokenizer = zoo.encoder()
    blocks = data.lm_blocks(data.lm_text("hamlet")[:5000], tokenizer, block_size=64, max_blocks=3)
    assert blocks.shape == (3, 64) and blocks.dtype == torch.long
    with pytest.raises(ValueError, match="shorter than one block"):
        data.lm_blocks("too short", tokenizer, block_size=64)
    with pytest.raises(ValueError, match="block_size must be >= 2"):
        data.lm_blocks("x", tokenizer, block_size=1)


def test_model_inputs_keeps_what_the_forward_takes():
    batch = {"input_ids": 1, "attention_mask": 2, "labels": 3, "teacher_logits": 4, "teacher_top_ids": 5,
             "teacher_top_logits": 6}
    assert data.model_inputs(batch) == {"input_ids": 1, "attention_mask": 2}
    assert data.model_inputs(batch, labels=True) == {"input_ids": 1, "attention_mask": 2, "labels": 3}
    assert "labels" in batch  # a new dict; the batch is untouched
    with pytest.raises(TypeError, match="batch must be a mapping"):
        data.model_inputs([1, 2])
