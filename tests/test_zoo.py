"""The models of the book. The teacher and decoder tests use the cache that `make prepare`
(python -m shrinklib prepare) fills; on an empty cache they build it first."""
import dataclasses
import subprocess
import sys

import pytest
import torch

from shrinklib import data, measure, zoo


def test_tiny_models_are_small_seeded_and_of_the_right_class():
    from transformers import BertForSequenceClassification

    a, b = zoo.tiny_bert(seed=1), zoo.tiny_bert(seed=1)
    assert isinstance(a, BertForSequenceClassification) and measure.count_parameters(a) < 100_000
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    lstm = zoo.tiny_lstm(num_labels=3)
    assert lstm(torch.randint(0, 1000, (2, 5))).logits.shape == (2, 3)
    with pytest.raises(ValueError, match=r"hidden_size \(30\) must be divisible by num_heads \(4\)"):
        zoo.tiny_bert(hidden_size=30, num_heads=4)


def test_encoder_loads_offline():
    model, tokenizer = zoo.encoder()
    assert type(model).__name__ == "BertModel" and model.config.hidden_size == 384
    assert measure.count_parameters(model) == 22_713_216  # all-MiniLM-L6-v2, pooler included
    assert tokenizer.tokenize("Unbelievably good") == ["un", "##bel", "##ie", "##va", "##bly", "good"]
    classifier, _ = zoo.encoder(num_labels=3)
    assert classifier.classifier.out_features == 3


def test_a_local_folder_can_replace_the_default():
    from shrinklib import assets

    default, _ = zoo.encoder(num_labels=2)
    local, tokenizer = zoo.encoder(assets.minilm_folder(), num_labels=2)
    assert torch.equal(default.bert.embeddings.word_embeddings.weight, local.bert.embeddings.word_embeddings.weight)
    assert len(tokenizer) == 30_522


def test_bilstm_matches_the_tokenizer():
    _, tokenizer = zoo.encoder()
    lstm = zoo.bilstm(tokenizer, embed_dim=8, hidden_size=6)
    assert lstm.embedding.num_embeddings == len(tokenizer) and lstm.classifier.in_features == 12


@pytest.mark.parametrize("call, error, message", [
    (lambda: zoo.encoder("/no/such/folder"), ValueError, r"could not load model '/no/such/folder' \(not a local folder, nor a hub id"),
    (lambda: zoo.encoder(num_labels=0), ValueError, "num_labels must be a positive int"),
    (lambda: zoo.teacher("imdb"), ValueError, "unknown teacher task 'imdb'; choose one of 'rt'"),
    (lambda: zoo.teacher("rt", recipe={"lr": 1}), TypeError, "recipe must be a TeacherRecipe"),
])
def test_bad_names_give_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_teacher_meets_the_bar_and_reloads_exactly():
    teacher, tokenizer = zoo.teacher("rt")
    training = zoo.teacher_training("rt")
    assert training["test_accuracy"] >= 0.84
    assert training["validation_accuracy"] == max(h["eval_accuracy"] for h in training["history"] if "eval_accuracy" in h)
    splits = data.rotten_tomatoes()
    assert measure.accuracy(teacher, splits["test"], tokenizer).value == training["test_accuracy"]
    assert teacher.config.id2label == {0: "negative", 1: "positive"}


def test_teacher_recipe_key_changes_with_the_recipe():
    assert zoo.TeacherRecipe().key() == zoo.TeacherRecipe().key()
    assert zoo.TeacherRecipe(dataclasses.replace(zoo.TEACHER_TRAINING, lr=3e-5)).key() != zoo.TeacherRecipe().key()


def test_the_prepared_teachers_keep_their_cache_folders():
    # Computed by the code before TeacherRecipe held a TrainConfig (commit 64da623, where the
    # recipe listed fit's options field by field): zoo.TeacherRecipe().key() and
    # zoo.TeacherRecipe(seed=1).key(). The teachers `make prepare` trained live in these folders;
    # a new name would train them again (20 minutes each).
    assert zoo.teacher_cache_name("rt") == "teacher-rt-minilm-fa6e487ba6"
    assert zoo.teacher_cache_name("rt", recipe=zoo.SECOND_TEACHER) == "teacher-rt-minilm-7254e751a1"
    assert zoo.SECOND_TEACHER == zoo.TeacherRecipe(dataclasses.replace(zoo.TEACHER_TRAINING, seed=1))


def test_teacher_recipe_holds_the_train_config_that_fit_gets():
    from shrinklib.train import TrainConfig

    recipe = zoo.TeacherRecipe()
    assert recipe.training == TrainConfig(epochs=3.0, batch_size=32, lr=5e-5, warmup_ratio=0.1, weight_decay=0.01,
                                          max_length=64, eval_every=100, seed=0) and recipe.threads == 2
    # Every option that changes the weights changes the key, the new ones too; the progress bar does not.
    for change in ({"max_steps": 10}, {"grad_clip": None}, {"param_lrs": {"classifier.weight": 1e-3}},
                   {"eval_every": 50}, {"seed": 2}):
        assert zoo.TeacherRecipe(dataclasses.replace(recipe.training, **change)).key() != recipe.key(), change
    assert zoo.TeacherRecipe(dataclasses.replace(recipe.training, progress=False)).key() == recipe.key()
    assert zoo.TeacherRecipe(threads=1).key() != recipe.key()
    assert zoo.teacher_cache_name("rt", name="some/local folder") == f"teacher-rt-some-local-folder-{recipe.key()}"


@pytest.mark.parametrize("call, error, message", [
    (lambda: zoo.TeacherRecipe({"lr": 1e-4}), TypeError, "TeacherRecipe.training must be a TrainConfig, got dict"),
    (lambda: zoo.TeacherRecipe(threads=0), ValueError, "TeacherRecipe.threads must be an int >= 1, got 0"),
    (lambda: zoo.teacher_cache_name("imdb"), ValueError, "unknown teacher task 'imdb'; choose one of 'rt'"),
    (lambda: zoo.teacher_cache_name("rt", recipe=zoo.TEACHER_TRAINING), TypeError,
     "recipe must be a TeacherRecipe, got TrainConfig"),
])
def test_teacher_recipe_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_decoder_is_a_plain_fp32_llama_with_sane_perplexity():
    model, tokenizer = zoo.decoder()
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    assert not hasattr(model.config, "quantization_config")
    assert measure.count_parameters(model) == 134_515_008
    assert model.lm_head.weight is model.model.embed_tokens.weight
    ppl = measure.perplexity(model, tokenizer, data.lm_text("hamlet", "evaluation"), block_size=128, max_blocks=4)
    # Shakespeare in 128-token windows is hard for a 135M model (about 100); an untrained
    # model would score near the vocabulary size, 49,152.
    assert 10 < ppl < 200, ppl


def test_cli_usage_error():
    result = subprocess.run([sys.executable, "-m", "shrinklib", "nonsense"], capture_output=True, text=True)
    assert result.returncode == 2 and "usage: python -m shrinklib {prepare,install-assets}" in result.stderr
