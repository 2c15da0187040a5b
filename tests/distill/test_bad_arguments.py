"""Every public function of shrinklib.distill refuses a bad argument up front, naming it, and
leaves the student and the teacher exactly as they were (issue 17, sections 3 and 4).

Two tables: wrong types (a string or an int where a model, a tensor, a batch list, a
tokenizer or a mapping belongs: ``TypeError``; a malformed choice or count: ``ValueError``),
and non-finite numbers (nan, inf, -inf) for every float option (``ValueError``). Each case
runs inside ``unchanged`` for every model the call could reach. The models are put in train
mode first, so a call that switched one to eval mode before failing would be caught too.
"""
import math

import pytest
import torch
from torch import nn

import shrinklib  # noqa: F401  (first: it sets TRITON_INTERPRET before transformers can load triton)
from datasets import Dataset  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from shrinklib import distill
from shrinklib.distill.intermediate_losses import check_attention_mask
from shrinklib.distill.logits import check_logits, run_teacher, safe_log_probs, teacher_term
from shrinklib.distill.sequence import check_texts, token_lists
from shrinklib.train import TrainConfig

VOCAB = 64  # the word-level tokenizer of tests/distill/conftest.py (and distill_kit's models)


def _run(m, unchanged, call, error, match):
    with unchanged(m.student), unchanged(m.teacher), unchanged(m.llama):
        with pytest.raises(error, match=match):
            call(m)


# ----------------------------------------------------------------------------------
# Wrong types: a string or an int where a model, tensor, batch list, tokenizer or mapping belongs

TYPES = {
    # logits
    "soft_target_loss student": (lambda m: distill.soft_target_loss("z", m.logits), TypeError,
                                 "student_logits must be a torch.Tensor, got str"),
    "soft_target_loss teacher": (lambda m: distill.soft_target_loss(m.logits, [[0.0, 1.0]]), TypeError,
                                 "teacher_logits must be a torch.Tensor, got list"),
    "check_logits": (lambda m: check_logits(m.logits, None), TypeError, "teacher_logits must be a torch.Tensor"),
    "safe_log_probs": (lambda m: safe_log_probs(m.logits, "q"), TypeError, "log_q_student must be a torch.Tensor"),
    "logit_mse_loss": (lambda m: distill.logit_mse_loss(m.logits, 3), TypeError,
                       "teacher_logits must be a torch.Tensor, got int"),
    "logit_distillation": (lambda m: distill.logit_distillation(5), TypeError, "teacher must be an nn.Module, got int"),
    "stored_logit_distillation batch": (lambda m: distill.stored_logit_distillation()(m.student, 5, None), TypeError,
                                        r"batch must be a mapping \(a dict\), got int"),
    "teacher_term teacher": (lambda m: teacher_term("bert", distill.soft_target_loss), TypeError,
                             "teacher must be an nn.Module, got str"),
    "teacher_term loss": (lambda m: teacher_term(m.teacher, "kl"), TypeError,
                          "loss_of_logits must be callable"),
    "run_teacher teacher": (lambda m: run_teacher("bert", m.batch), TypeError, "teacher must be an nn.Module, got str"),
    "run_teacher batch": (lambda m: run_teacher(m.teacher, [m.batch]), TypeError, "batch must be a mapping"),
    "check_same_vocabulary student": (lambda m: distill.check_same_vocabulary(5, m.teacher), TypeError,
                                      "student must be an nn.Module, got int"),
    "check_same_vocabulary teacher": (lambda m: distill.check_same_vocabulary(m.student, "bert"), TypeError,
                                      "teacher must be an nn.Module, got str"),
    "distill student": (lambda m: distill.distill("student", m.teacher, m.data), TypeError,
                        "student must be an nn.Module, got str"),
    "distill teacher": (lambda m: distill.distill(m.student, 7, m.data), TypeError,
                        "teacher must be an nn.Module, got int"),
    "distill train_data": (lambda m: distill.distill(m.student, m.teacher, 5), TypeError,
                           "train_data must be a datasets.Dataset or a DataLoader, got int"),
    "distill config": (lambda m: distill.distill(m.student, m.teacher, m.data, {"lr": 1e-3}), TypeError,
                       "config must be a TrainConfig, got dict"),
    "distill loss": (lambda m: distill.distill(m.student, m.teacher, m.data, alpha=0, loss="ce"), ValueError,
                     "loss must be one of 'kl', 'mse', got 'ce'"),
    # teachers
    "ensemble_soft_targets logits": (lambda m: distill.ensemble_soft_targets(5, 2.0), TypeError,
                                     "teacher_logits must be a sequence of tensors"),
    "ensemble_soft_targets weights": (lambda m: distill.ensemble_soft_targets([m.logits], 2.0, 1.0), TypeError,
                                      "weights must be a sequence of 1 numbers, got float"),
    "multi_teacher_distillation teachers": (lambda m: distill.multi_teacher_distillation(5), TypeError,
                                            "teachers must be a sequence of nn.Modules, got int"),
    "multi_teacher_distillation teacher str": (lambda m: distill.multi_teacher_distillation("bert"), TypeError,
                                               r"teachers\[0\] must be an nn.Module, got str"),
    "multi_teacher_distillation teacher_weights": (
        lambda m: distill.multi_teacher_distillation([m.teacher], teacher_weights=1.0), TypeError,
        "teacher_weights must be a sequence of 1 numbers, got float"),
    # layer maps
    "layer_map student_layers": (lambda m: distill.layer_map("6", 12), ValueError,
                                 "student_layers must be a positive int, got '6'"),
    "layer_map strategy": (lambda m: distill.layer_map(2, 4, ["uniform"]), ValueError,
                           r"strategy must be one of 'uniform', 'last', 'first', got \['uniform'\]"),
    "check_layer_map mapping": (lambda m: distill.check_layer_map(5, 2, 4), TypeError,
                                "layer_map must be a tuple or list of ints, got int"),
    # students
    "student_from_teacher teacher": (lambda m: distill.student_from_teacher("bert", [0]), TypeError,
                                     "teacher must be a BERT-like Hugging Face model"),
    "student_from_teacher layers": (lambda m: distill.student_from_teacher(m.teacher, "01"), TypeError,
                                    "layers must be a sequence of ints, got str"),
    "bert_student teacher": (lambda m: distill.bert_student(m.llama, num_layers=1, hidden_size=8, num_heads=2,
                                                            intermediate_size=8), TypeError,
                             "teacher must be a BERT-like Hugging Face model"),
    "bert_student size": (lambda m: distill.bert_student(m.teacher, num_layers="2", hidden_size=8, num_heads=2,
                                                         intermediate_size=8), ValueError,
                          "num_layers must be a positive int, got '2'"),
    "bilstm_student teacher": (lambda m: distill.bilstm_student("bert", m.tokenizer), TypeError,
                               r"teacher must be a model with get_input_embeddings\(\), got str"),
    "bilstm_student tokenizer": (lambda m: distill.bilstm_student(m.teacher, "bert-base-uncased"), TypeError,
                                 r"tokenizer must be a Hugging Face tokenizer, got str \(it lacks pad_token_id\)"),
    "student_with_pruned_ffn batches": (lambda m: distill.student_with_pruned_ffn(m.teacher, [0, 1], 5), TypeError,
                                        "batches must be an iterable of batches"),
    "student_with_pruned_ffn batch str": (lambda m: distill.student_with_pruned_ffn(m.teacher, [0, 1], "batches"),
                                          TypeError, "batches must be an iterable of batches .*got str"),
    # found while scoring, the teacher's hooks and mode already set: both must be given back
    "student_with_pruned_ffn batch item": (lambda m: distill.student_with_pruned_ffn(m.teacher, [0, 1], [m.batch, "b"]),
                                           TypeError, r"batches\[1\] must be a mapping \(a dict\), got str"),
    "student_with_pruned_ffn no labels": (
        lambda m: distill.student_with_pruned_ffn(m.teacher, [0, 1],
                                                  [{k: v for k, v in m.batch.items() if k != "labels"}]),
        ValueError, "importance needs batches with 'labels'"),
    "student_with_pruned_ffn max_batches": (
        lambda m: distill.student_with_pruned_ffn(m.teacher, [0, 1], [m.batch], max_batches="1"), ValueError,
        "max_batches must be an int >= 1, got '1'"),
    # intermediate terms
    "IntermediateDistillation weights": (lambda m: distill.IntermediateDistillation(m.teacher, m.student,
                                                                                    weights=["hidden"]),
                                         TypeError, r"weights must be a mapping \(a dict\), got list"),
    "IntermediateDistillation student": (lambda m: distill.IntermediateDistillation(m.teacher, "student",
                                                                                    weights={"hidden": 1.0}),
                                         TypeError, "student must be a BERT-like Hugging Face model"),
    "IntermediateDistillation same model": (lambda m: distill.IntermediateDistillation(m.teacher, m.teacher,
                                                                                       weights={"hidden": 1.0}),
                                            ValueError, "two models, got the same one twice"),
    "IntermediateDistillation layer_map": (lambda m: distill.IntermediateDistillation(
        m.teacher, m.student, weights={"hidden": 1.0}, layer_map="13"), TypeError, "layer_map must be a tuple or list"),
    "IntermediateDistillation relation_heads": (lambda m: distill.IntermediateDistillation(
        m.teacher, m.student, weights={"minilm_value": 1.0}, relation_heads="2"), ValueError,
        "relation_heads must be a positive int, got '2'"),
    # intermediate losses
    "hidden_cosine_loss": (lambda m: distill.hidden_cosine_loss("h", m.hidden, m.mask), TypeError,
                           "student_hidden must be a torch.Tensor, got str"),
    "pkd_loss": (lambda m: distill.pkd_loss("cls", [m.logits]), TypeError, "student_cls must be a list or tuple"),
    "hidden_mse_loss projection": (lambda m: distill.hidden_mse_loss(m.hidden, m.hidden, m.mask, "linear"), TypeError,
                                   "projection must be an nn.Linear or None, got str"),
    "attention_mse_loss": (lambda m: distill.attention_mse_loss(5, 5, m.mask), TypeError,
                           "student_attention must be a torch.Tensor, got int"),
    "minilm_attention_loss": (lambda m: distill.minilm_attention_loss(m.hidden, m.hidden, m.hidden, [1], m.mask, 2),
                              TypeError, "teacher_k must be a torch.Tensor, got list"),
    "minilm_value_loss": (lambda m: distill.minilm_value_loss(m.hidden, m.hidden, "mask", 2), TypeError,
                          "attention_mask must be a torch.Tensor, got str"),
    "check_attention_mask": (lambda m: check_attention_mask([[1, 1]], 1, 2), TypeError,
                             "attention_mask must be a torch.Tensor, got list"),
    # data
    "AugmentConfig copies": (lambda m: distill.AugmentConfig(copies="2"), ValueError,
                             "AugmentConfig.copies must be a positive int, got '2'"),
    "WordNeighbours tokenizer": (lambda m: distill.WordNeighbours("bert", m.embeddings), TypeError,
                                 "tokenizer must be a Hugging Face tokenizer, got str"),
    "WordNeighbours words int": (lambda m: distill.WordNeighbours(m.tokenizer, m.embeddings, words=5), TypeError,
                                 r"words must be an iterable of words \(str\), got int"),
    "WordNeighbours words item": (lambda m: distill.WordNeighbours(m.tokenizer, m.embeddings, words=["w1", 3]),
                                  TypeError, r"words\[1\] must be a str, got int"),
    "WordNeighbours embeddings": (lambda m: distill.WordNeighbours(m.tokenizer, "glove"), TypeError,
                                  "embeddings must be a 2-D tensor"),
    "augment texts": (lambda m: distill.augment(5, m.tokenizer, m.embeddings), TypeError,
                      "texts must be a list of str, got int"),
    "augment tokenizer": (lambda m: distill.augment(["w1 w2"], 5, m.embeddings), TypeError,
                          r"tokenizer must be a Hugging Face tokenizer, got int \(it lacks mask_token\)"),
    "augment config": (lambda m: distill.augment(["w1"], m.tokenizer, m.embeddings, {"copies": 2}), TypeError,
                       "config must be an AugmentConfig, got dict"),
    "unlabelled_sentences source": (lambda m: distill.unlabelled_sentences(["bbc"], 3), ValueError,
                                    "source must be one of 'bbc', 'hamlet'"),
    "unlabelled_sentences n": (lambda m: distill.unlabelled_sentences("hamlet", "3"), ValueError,
                               "n must be a positive int, got '3'"),
    "teacher_labelled teacher": (lambda m: distill.teacher_labelled("bert", m.tokenizer, ["w1"]), TypeError,
                                 "teacher must be an nn.Module, got str"),
    "teacher_labelled tokenizer": (lambda m: distill.teacher_labelled(m.teacher, 5, ["w1"]), TypeError,
                                   "tokenizer must be a Hugging Face tokenizer, got int"),
    "teacher_labelled texts": (lambda m: distill.teacher_labelled(m.teacher, m.tokenizer, "w1 w2"), TypeError,
                               "texts must be a list of str, got str"),
    "transfer_sets teacher": (lambda m: distill.transfer_sets(nn.Linear(2, 2), m.tokenizer, m.data, teacher_key="t"),
                              TypeError, r"teacher must be a model with get_input_embeddings\(\), got Linear"),
    "transfer_sets tokenizer": (lambda m: distill.transfer_sets(m.teacher, "bert", m.data, teacher_key="t"),
                                TypeError, "tokenizer must be a Hugging Face tokenizer, got str"),
    "transfer_sets train": (lambda m: distill.transfer_sets(m.teacher, m.tokenizer, ["w1"], teacher_key="t"),
                            TypeError, "train must be a datasets.Dataset, got list"),
    "transfer_sets train columns": (lambda m: distill.transfer_sets(m.teacher, m.tokenizer,
                                                                     Dataset.from_dict({"sentence": ["w1"]}),
                                                                     teacher_key="t"),
                                    ValueError, "train must have a 'text' column"),
    "transfer_sets teacher_key": (lambda m: distill.transfer_sets(m.teacher, m.tokenizer, m.data, teacher_key=3),
                                  TypeError, "teacher_key must be a non-empty str naming the teacher, got int"),
    "transfer_sets copies": (lambda m: distill.transfer_sets(m.teacher, m.tokenizer, m.data, teacher_key="t",
                                                             copies=0), ValueError,
                             "copies must be a positive int, got 0"),
    "transfer_sets seed": (lambda m: distill.transfer_sets(m.teacher, m.tokenizer, m.data, teacher_key="t", seed="0"),
                           ValueError, "seed must be a non-negative int"),
    # sequence
    "token_distillation_loss teacher": (lambda m: distill.token_distillation_loss(m.seq, "z"), TypeError,
                                        "teacher_logits must be a torch.Tensor, got str"),
    "token_distillation_loss mask": (lambda m: distill.token_distillation_loss(m.seq, m.seq, [[1, 1]]), TypeError,
                                     "attention_mask must be a torch.Tensor or None, got list"),
    "word_level_distillation": (lambda m: distill.word_level_distillation("smollm2"), TypeError,
                                "teacher must be an nn.Module, got str"),
    "lm_student teacher": (lambda m: distill.lm_student("smollm2"), TypeError,
                           "teacher must be a Hugging Face model with a config, got str"),
    "lm_student size": (lambda m: distill.lm_student(m.llama, hidden_size="16"), ValueError,
                        "hidden_size must be an int >= 1, got '16'"),
    "generate_corpus teacher": (lambda m: distill.generate_corpus(m.teacher, m.tokenizer, ["w1"]), TypeError,
                                "teacher must be a Hugging Face generative model"),
    "generate_corpus tokenizer": (lambda m: distill.generate_corpus(m.llama, "gpt2", ["w1"]), TypeError,
                                  "tokenizer must be a Hugging Face tokenizer, got str"),
    "generate_corpus prompts": (lambda m: distill.generate_corpus(m.llama, m.tokenizer, 5), TypeError,
                                "prompts must be a sequence of str"),
    "generate_corpus progress": (lambda m: distill.generate_corpus(m.llama, m.tokenizer, ["w1"], progress="no"),
                                 TypeError, "progress must be True or False, got 'no'"),
    "lm_dataloader texts": (lambda m: distill.lm_dataloader("w1 w2", m.tokenizer), TypeError,
                            "texts must be a sequence of str"),
    "lm_dataloader tokenizer": (lambda m: distill.lm_dataloader(["w1 w2"], 5), TypeError,
                                "tokenizer must be a Hugging Face tokenizer, got int"),
    "lm_dataloader top_k": (lambda m: distill.lm_dataloader(["w1 w2"], m.tokenizer,
                                                            top_k=[{"ids": [[1], [2]], "logits": [[0.0], [0.0]]}]),
                            TypeError, r"top_k\[0\] must be a dict with 'ids' and 'logits' tensors"),
    "check_texts": (lambda m: check_texts("texts", 5), TypeError, "texts must be a sequence of str"),
    "token_lists": (lambda m: token_lists(5, ["w1"]), TypeError, "tokenizer must be a Hugging Face tokenizer, got int"),
    # top-k
    "top_k_token_distillation_loss student": (lambda m: distill.top_k_token_distillation_loss("z", m.ids, m.top),
                                              TypeError, "student_logits must be a torch.Tensor, got str"),
    "top_k_token_distillation_loss logits": (lambda m: distill.top_k_token_distillation_loss(m.seq, m.ids, [0.0]),
                                             TypeError, "top_logits must be a torch.Tensor, got list"),
    "top_k_token_distillation_loss mask": (lambda m: distill.top_k_token_distillation_loss(m.seq, m.ids, m.top, "m"),
                                           TypeError, "attention_mask must be a torch.Tensor or None, got str"),
    "teacher_top_k teacher": (lambda m: distill.teacher_top_k("smollm2", m.tokenizer, ["w1 w2"]), TypeError,
                              "teacher must be an nn.Module, got str"),
    "teacher_top_k tokenizer": (lambda m: distill.teacher_top_k(m.llama, 5, ["w1 w2"]), TypeError,
                                "tokenizer must be a Hugging Face tokenizer, got int"),
    "teacher_top_k texts": (lambda m: distill.teacher_top_k(m.llama, m.tokenizer, "w1 w2"), TypeError,
                            "texts must be a sequence of str"),
    "teacher_top_k k": (lambda m: distill.teacher_top_k(m.llama, m.tokenizer, ["w1 w2"], k=VOCAB + 1), ValueError,
                        rf"k \({VOCAB + 1}\) must be at most the teacher's vocabulary size \({VOCAB}\)"),
    "teacher_top_k progress": (lambda m: distill.teacher_top_k(m.llama, m.tokenizer, ["w1 w2"], progress=None),
                               TypeError, "progress must be True or False, got None"),
    "top_k_mass": (lambda m: distill.top_k_mass([0.0, 1.0], 1), TypeError,
                   "teacher_logits must be a torch.Tensor, got list"),
    "stored_word_level_distillation batch": (lambda m: distill.stored_word_level_distillation()(m.llama, [1], None),
                                             TypeError, r"batch must be a mapping \(a dict\), got list"),
}


@pytest.mark.parametrize("case", sorted(TYPES))
def test_a_wrong_type_is_refused_by_name_and_no_model_changes(case, distill_kit, unchanged):
    _run(distill_kit, unchanged, *TYPES[case])


# ----------------------------------------------------------------------------------
# Non-finite numbers for every float option

FLOATS = {
    "soft_target_loss temperature": (lambda m, x: distill.soft_target_loss(m.logits, m.logits, x), "temperature"),
    "logit_distillation temperature": (lambda m, x: distill.logit_distillation(m.teacher, temperature=x),
                                       "temperature"),
    "logit_distillation weight": (lambda m, x: distill.logit_distillation(m.teacher, weight=x), "weight"),
    "stored_logit_distillation temperature": (lambda m, x: distill.stored_logit_distillation(temperature=x),
                                              "temperature"),
    "stored_logit_distillation weight": (lambda m, x: distill.stored_logit_distillation(weight=x), "weight"),
    "distill temperature": (lambda m, x: distill.distill(m.student, m.teacher, m.data, temperature=x), "temperature"),
    "distill temperature at alpha 0": (lambda m, x: distill.distill(m.student, m.teacher, m.data, alpha=0,
                                                                    temperature=x), "temperature"),
    "distill alpha": (lambda m, x: distill.distill(m.student, m.teacher, m.data, alpha=x), "alpha"),
    "ensemble_soft_targets temperature": (lambda m, x: distill.ensemble_soft_targets([m.logits], x), "temperature"),
    "ensemble_soft_targets weights": (lambda m, x: distill.ensemble_soft_targets([m.logits, m.logits], 2.0, [1.0, x]),
                                      "weights"),
    "multi_teacher_distillation temperature": (lambda m, x: distill.multi_teacher_distillation([m.teacher],
                                                                                             temperature=x),
                                               "temperature"),
    "multi_teacher_distillation weight": (lambda m, x: distill.multi_teacher_distillation([m.teacher], weight=x),
                                          "weight"),
    "multi_teacher_distillation teacher_weights": (
        lambda m, x: distill.multi_teacher_distillation([m.teacher], teacher_weights=[x]), "teacher_weights"),
    "IntermediateDistillation weights": (
        lambda m, x: distill.IntermediateDistillation(m.teacher, m.student, weights={"hidden": x}),
        r"weights\['hidden'\]"),
    "student_with_pruned_ffn keep": (lambda m, x: distill.student_with_pruned_ffn(m.teacher, [0], [m.batch], keep=x),
                                     "keep"),
    "AugmentConfig p_mask": (lambda m, x: distill.AugmentConfig(p_mask=x), r"AugmentConfig\.p_mask"),
    "AugmentConfig p_replace": (lambda m, x: distill.AugmentConfig(p_replace=x), r"AugmentConfig\.p_replace"),
    "AugmentConfig p_ngram": (lambda m, x: distill.AugmentConfig(p_ngram=x), r"AugmentConfig\.p_ngram"),
    "token_distillation_loss temperature": (lambda m, x: distill.token_distillation_loss(m.seq, m.seq, temperature=x),
                                            "temperature"),
    "word_level_distillation temperature": (lambda m, x: distill.word_level_distillation(m.llama, temperature=x),
                                            "temperature"),
    "word_level_distillation weight": (lambda m, x: distill.word_level_distillation(m.llama, weight=x), "weight"),
    "generate_corpus temperature": (lambda m, x: distill.generate_corpus(m.llama, m.tokenizer, ["w1"], do_sample=True,
                                                                         temperature=x), "temperature"),
    "generate_corpus top_p": (lambda m, x: distill.generate_corpus(m.llama, m.tokenizer, ["w1"], do_sample=True,
                                                                   top_p=x), "top_p"),
    "top_k_token_distillation_loss temperature": (
        lambda m, x: distill.top_k_token_distillation_loss(m.seq, m.ids, m.top, temperature=x), "temperature"),
    "top_k_mass temperature": (lambda m, x: distill.top_k_mass(m.seq, 2, temperature=x), "temperature"),
    "stored_word_level_distillation temperature": (lambda m, x: distill.stored_word_level_distillation(temperature=x),
                                                   "temperature"),
    "stored_word_level_distillation weight": (lambda m, x: distill.stored_word_level_distillation(weight=x), "weight"),
}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("case", sorted(FLOATS))
def test_a_non_finite_number_is_refused_by_name_and_no_model_changes(case, value, distill_kit, unchanged):
    call, name = FLOATS[case]
    _run(distill_kit, unchanged, lambda m: call(m, value), ValueError, rf"^{name} must be .*, got -?(nan|inf)$")


# ----------------------------------------------------------------------------------
# Failures found only part-way: nothing of what was done before them stays


def test_intermediate_distillation_refused_at_its_last_check_attaches_nothing(distill_kit, unchanged):
    m = distill_kit
    """The last check (each hooked Linear layer is found) comes after the widths, maps and heads are
    checked: the student's config flag and the hooks on both models are set only after it."""
    m.student.bert.encoder.layer[-1].attention.self.value = nn.Identity()
    with unchanged(m.student), unchanged(m.teacher):
        with pytest.raises(TypeError, match="student's layer 1 has no attention.self.value Linear layer"):
            distill.IntermediateDistillation(m.teacher, m.student, weights={"hidden": 1.0, "minilm_value": 1.0})
    assert not m.student.config.output_hidden_states


def test_distill_gives_the_student_its_weights_back_when_training_fails_part_way(distill_kit, unchanged):
    m = distill_kit
    """Step 1 trains; step 2's batch has no labels, so fit raises there: the student must come back
    bit-identical (weights, buffers, modes) and the teacher keep its train mode."""
    good = dict(m.batch)
    bad = {k: v for k, v in m.batch.items() if k != "labels"}
    loader = DataLoader([good, bad], batch_size=None)
    before = m.student.classifier.weight.detach().clone()
    seen = []  # the classifier's weight at each forward pass: step 2 must see step 1's update
    handle = m.student.classifier.register_forward_hook(
        lambda module, args, out: seen.append(module.weight.detach().clone()))
    try:
        with unchanged(m.student), unchanged(m.teacher):
            with pytest.raises(ValueError, match="the model returned no loss"):
                distill.distill(m.student, m.teacher, loader, TrainConfig(max_steps=2, lr=1e-1, progress=False))
    finally:
        handle.remove()
    assert len(seen) == 2 and not torch.equal(seen[1], before)  # it did train before it failed
    assert torch.equal(m.student.classifier.weight, before) and m.student.training and m.teacher.training
