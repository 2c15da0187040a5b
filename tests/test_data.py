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


# The output of distill.unlabelled_sentences before its corpus code moved into data.sentences
# (commit 64da623, shrinklib/distill/augment.py, sources "bbc" and "hamlet"): how many distinct
# sentences each source has, the sha256 of "\n".join of them sorted, and of the 300 sentences
# drawn with seeds 0 and 2, in their order.
SENTENCES_BEFORE_THE_MOVE = {
    "bbc_news": (26_675, "4e89f3ae6f42c3f61fea2e479a4db31797fdc7c576aed7dc9f91dc053e86b307",
                 {0: "0c197036e5656a71322ab301136f4ccdc61ee59918f3930a5e51e2ab03853e98",
                  2: "10b64bff91dca92e5179ea2966ccd1b3056b6af785adf24a4154d4aa11a65295"}),
    "hamlet": (1_536, "b2a8c5813b7f0a500caaa18d73222415a839e1667e17e152a98ca05728c518cf",
               {0: "4393fda4d36637cb3c6827a6f24fedba52705cfc3a3eb0e682b116e04d552203",
                2: "6cef508b476845d4e6abbc8450149e65c71f6910cb3e16d0af4cd3beea649102"}),
}


def _sha256(lines) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


@pytest.mark.parametrize("source", data.SENTENCE_SOURCES)
def test_sentences_are_the_ones_drawn_before_the_move(source):
    size, pool_sha, picks_sha = SENTENCES_BEFORE_THE_MOVE[source]
    everything = data.sentences(source, size, seed=0)
    assert len(set(everything)) == size and _sha256(sorted(everything)) == pool_sha
    with pytest.raises(ValueError, match=f"n={size + 1} is more than the {size} distinct sentences of '{source}'"):
        data.sentences(source, size + 1)
    for seed, expected in picks_sha.items():
        assert _sha256(data.sentences(source, 300, seed=seed)) == expected


def test_sentences_are_whole_clean_sentences_of_their_corpus():
    hamlet = data.lm_text("hamlet")
    picked = data.sentences("hamlet", 200, seed=3)
    assert picked == data.sentences("hamlet", 200, seed=3) != data.sentences("hamlet", 200, seed=4)
    for s in picked:
        assert data.MIN_WORDS <= len(s.split()) <= data.MAX_WORDS and s == " ".join(s.split())
        assert s.split()[-1] in " ".join(hamlet.split())
        assert s.split()[0] not in {"HAMLET", "HORATIO", "OPHELIA", "Ghost"}  # no speaker names
    assert data.sentences("hamlet", 5, seed=0)[0] == "What have you done, my lord, with the dead body?"
    bbc = " ".join(" ".join(data.bbc_news()["train"]["text"]).split())
    assert all(s in bbc for s in data.sentences("bbc_news", 50, seed=3))


@pytest.mark.parametrize("call, error, message", [
    (lambda: data.sentences("bbc", 10), ValueError, "unknown source 'bbc'; choose one of 'bbc_news', 'hamlet'"),
    (lambda: data.sentences("hamlet", 0), ValueError, "n must be a positive int, got 0"),
    (lambda: data.sentences("hamlet", True), ValueError, "n must be a positive int, got True"),
    (lambda: data.sentences("hamlet", 10, seed=-1), ValueError, "seed must be a non-negative int, got -1"),
])
def test_sentences_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


class _Pads:
    """A tokenizer that can only pad (for already tokenized data); not callable on text."""

    def pad(self, examples, return_tensors="pt"):
        return {k: torch.tensor([e[k] for e in examples]) for k in examples[0]}


def _tokenized():
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": [[5, 6, 7], [8, 9, 4]], "label": [0, 1]})


@pytest.mark.parametrize("call, error, message", [
    (lambda: data.rotten_tomatoes(seed=-1), ValueError, "seed must be a non-negative int, got -1"),
    (lambda: data.bbc_news(seed="0"), ValueError, "seed must be a non-negative int, got '0'"),
    (lambda: data.tokenize(["a text"], str.split), TypeError, "dataset must be a datasets.Dataset or DatasetDict, got list"),
    (lambda: data.tokenize(_tokenized(), 3), TypeError, r"tokenizer must be a tokenizer \(callable on texts\), got int"),
    (lambda: data.tokenize(_tokenized(), str.split, max_length=0), ValueError, "max_length must be an int >= 1, got 0"),
    (lambda: data.collate("bert-base-uncased"), TypeError, "tokenizer must be a tokenizer with a pad method, got str"),
    (lambda: data.LengthGroupedSampler(7, 2), TypeError, r"lengths must be an iterable of lengths \(ints\), got int"),
    (lambda: data.LengthGroupedSampler([1.5, 2.0], 2), TypeError, "lengths must be an iterable of ints"),
    (lambda: data.LengthGroupedSampler([1, 2], 0), ValueError, "batch_size must be an int >= 1, got 0"),
    (lambda: data.LengthGroupedSampler([1, 2], 2, megabatch=0), ValueError, "megabatch must be an int >= 1, got 0"),
    (lambda: data.dataloader({"input_ids": [[1]]}, _Pads()), TypeError, "dataset must be a datasets.Dataset"),
    (lambda: data.dataloader(_tokenized(), _Pads(), batch_size=0), ValueError, "batch_size must be an int >= 1, got 0"),
    (lambda: data.dataloader(_tokenized(), _Pads(), shuffle=1), TypeError, "shuffle must be True or False, got 1"),
    (lambda: data.dataloader(_tokenized(), None), TypeError, "tokenizer must be a tokenizer with a pad method, got NoneType"),
    (lambda: data.lm_blocks(["some", "text"], str.split), TypeError, "text must be a str, got list"),
    (lambda: data.lm_blocks("some text", str.split, block_size=4, max_blocks=0), ValueError, "max_blocks must be an int >= 1, got 0"),
])
def test_data_arguments_of_the_wrong_type_or_range_are_refused_by_name(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_a_tokenizer_that_only_pads_is_enough_for_tokenized_data():
    batch = next(iter(data.dataloader(_tokenized(), _Pads(), batch_size=2)))
    assert batch["labels"].tolist() == [0, 1]
    assert list(data.LengthGroupedSampler([3, 2, 5], 2, seed=1)) != [] and len(data.LengthGroupedSampler([], 2)) == 0
