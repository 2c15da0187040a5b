"""Two-layer students of the teacher: which layers to keep, and which intermediate losses help.

The runs behind notebooks 4.2 (DistilBERT-style students) and 4.3 (intermediate-layer
distillation). Every student keeps two of the MiniLM-L6 teacher's six layers, with its
embeddings, pooler and classifier (DistilBERT's initialization, Sanh et al. 2019), and is
trained for the same number of optimizer steps (``--epochs`` of the 10,252 training
sentences, batch 32, lr 1e-4), as in ``distill_students.py``, whose ``2L`` rows (layers 0
and 3, trained on ``labels`` and with ``KD``) are the baseline these rows are read with.

``--only layers``: the student built from each pair in ``--layer-sets`` (0-based teacher
layers), trained on the gold labels alone: how much of the teacher a choice of layers keeps.

``--only losses``: the 0-and-3 student, trained with Hinton's mix (half gold labels, half
soft targets at T = 2, stored from the teacher) plus one intermediate loss on the live
teacher (:class:`shrinklib.distill.IntermediateDistillation`, uniform layer map: student
layers 1 and 2 against teacher layers 3 and 6):

* ``DistilBERT``: the cosine between last hidden states (Sanh et al. 2019), weight 1;
* ``PKD``: Patient KD's normalized [CLS] distance, student layer 1 against teacher layer 3
  (Sun et al. 2019), weight ``--pkd-weight``;
* ``TinyBERT``: embedding, hidden-state and attention-score MSE (Jiao et al. 2020), weight 1 each;
* ``MiniLM``: the last layers' attention and value relations (Wang et al. 2020), weight 1 each;
* ``TinyBERT two-stage``: TinyBERT's recipe, the intermediate losses alone for the first
  half of the steps, then the prediction layer's soft targets alone for the second half.

Rows go to ``results/distill_intermediate.csv`` keyed by student, training, seed and
epochs (a rerun replaces its own rows). Test accuracy is on the 1,500 test sentences with a
bootstrap 95% interval. The two parts can run side by side, one thread each:

    python benchmarks/distill_intermediate.py --only layers --threads 1 &
    python benchmarks/distill_intermediate.py --only losses --threads 1
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from shrinklib import data, distill, measure, results, zoo
from shrinklib.train import TrainConfig, epoch_steps, fit
from shrinklib.utils import comma_list, seed_everything

RESULTS = Path(__file__).resolve().parents[1] / "results"
PARTS = ("layers", "losses")
BASE_LAYERS = (0, 3)
INTERMEDIATE = {
    "DistilBERT": {"cosine": 1.0},
    "PKD": {"pkd": None},  # weight from --pkd-weight
    "TinyBERT": {"embedding": 1.0, "hidden": 1.0, "attention": 1.0},
    "MiniLM": {"minilm_attention": 1.0, "minilm_value": 1.0},
}
TRAININGS = tuple(INTERMEDIATE) + ("TinyBERT two-stage",)
KEY = ["student", "training", "seed", "epochs"]


def row(name, training, seed, model, tokenizer, splits, result, **extra) -> dict:
    """A row of the CSV: ``distill_students.py``'s columns (:func:`shrinklib.results.classifier_row`)."""
    label = f"{name:>7} {training:>20} seed {seed}"
    return {"student": name, "training": training, "seed": seed,
            **results.classifier_row(model, tokenizer, splits["test"], result, label=label), **extra}


def student_name(layers) -> str:
    return f"2L {list(layers)}"


def parse_layer_sets(text: str) -> list[tuple[int, ...]]:
    return [tuple(int(i) for i in chunk.split(",")) for chunk in text.split(";") if chunk.strip()]


def train_layers(args, layers, seed, teacher, tokenizer, splits):
    student = distill.student_from_teacher(teacher, layers)
    config = TrainConfig(max_steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=seed, select_best=False)
    return student, fit(student, splits["train"], config, tokenizer=tokenizer)


def train_losses(args, training, seed, teacher, tokenizer, with_logits):
    student = distill.student_from_teacher(teacher, BASE_LAYERS)
    soft = distill.stored_logit_distillation(temperature=args.temperature, weight=0.5)
    base = TrainConfig(max_steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=seed, select_best=False,
                       task_loss_weight=0.5)
    if training != "TinyBERT two-stage":
        weights = {name: (args.pkd_weight if w is None else w) for name, w in INTERMEDIATE[training].items()}
        with distill.IntermediateDistillation(teacher, student, weights=weights) as term:
            result = fit(student, with_logits, base, tokenizer=tokenizer, extra_losses={"kd": soft, "intermediate": term})
        return student, result
    half = max(1, args.steps // 2)
    stage1 = dataclasses.replace(base, max_steps=half, task_loss_weight=0.0)
    with distill.IntermediateDistillation(teacher, student, weights=INTERMEDIATE["TinyBERT"]) as term:
        first = fit(student, with_logits, stage1, tokenizer=tokenizer, extra_losses={"intermediate": term})
    stage2 = dataclasses.replace(base, max_steps=args.steps - half, task_loss_weight=0.0, seed=seed + 1000)
    prediction = distill.stored_logit_distillation(temperature=args.temperature)
    second = fit(student, with_logits, stage2, tokenizer=tokenizer, extra_losses={"kd": prediction})
    return student, dataclasses.replace(second, steps=first.steps + second.steps, seconds=first.seconds + second.seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    parser.add_argument("--layer-sets", default="0,1;0,5;4,5;2,3", help="';'-separated pairs of teacher layers")
    parser.add_argument("--trainings", default=",".join(TRAININGS), help=f"subset of {TRAININGS}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=float, default=1.0, help="optimizer steps, in epochs of the training split")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--pkd-weight", type=float, default=100.0, help="Patient KD's beta")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "distill_intermediate.csv")
    args = parser.parse_args()
    parts, trainings = comma_list(args.only), comma_list(args.trainings)
    unknown = sorted(set(parts) - set(PARTS)) + sorted(set(trainings) - set(TRAININGS))
    if unknown:
        parser.error(f"unknown parts or trainings {unknown}; choose from {PARTS} and {TRAININGS}")
    seeds = [int(s) for s in args.seeds.split(",")]

    torch.set_num_threads(args.threads)
    seed_everything(0)
    teacher, tokenizer = zoo.teacher("rt")  # in eval mode
    splits = data.rotten_tomatoes()
    args.steps = epoch_steps(args.epochs, len(splits["train"]), args.batch_size)
    stamp = measure.provenance()
    settings = {"lr": args.lr, "epochs": args.epochs, "temperature": args.temperature, "threads": args.threads, **stamp}
    if "layers" in parts:
        for layers in parse_layer_sets(args.layer_sets):
            for seed in seeds:
                student, result = train_layers(args, layers, seed, teacher, tokenizer, splits)
                results.upsert(args.out, [row(student_name(layers), "labels", seed, student, tokenizer, splits, result,
                                              **settings)], KEY)
    if "losses" in parts:
        with_logits, _ = distill.transfer_sets(teacher, tokenizer, splits["train"],
                                               teacher_key=zoo.teacher_folder("rt").name, copies=2, seed=0)
        for training in trainings:
            for seed in seeds:
                student, result = train_losses(args, training, seed, teacher, tokenizer, with_logits)
                results.upsert(args.out, [row(student_name(BASE_LAYERS), training, seed, student, tokenizer, splits,
                                              result, pkd_weight=args.pkd_weight if training == "PKD" else "",
                                              **settings)], KEY)


if __name__ == "__main__":
    main()
