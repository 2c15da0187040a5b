"""What the BiLSTM student learns from: the transfer set and the teacher. The runs behind notebooks 4.4 and 4.5.

Every row is the BiLSTM student of ``distill_students.py`` (one layer, H=300, over the
teacher's WordPieces, embeddings from the teacher; Tang et al. 2019) trained on stored
targets alone (logit MSE, lr 1e-3) for ``--epochs`` passes' worth of optimizer steps over
the 10,252 training sentences (6 by default: 1,926 steps of 32), like that script's ``KD +
augmentation`` rows, which are the reference these rows are read with.

``--only transfer`` (notebook 4.4) changes the sentences, the teacher (MiniLM-L6
fine-tuned on Rotten Tomatoes) labelling all of them:

* ``train``: the training sentences alone, no gold label used;
* ``train + unlabelled``: plus ``--unlabelled`` sentences nobody labelled for this task,
  1,500 sentences of Hamlet and the rest from BBC News (:func:`shrinklib.distill.unlabelled_sentences`),
  as many as the augmented copies of ``distill_students.py``, so the set is as large;
* ``train + augmentation + unlabelled``: both the augmented copies and those sentences.

``--only teachers`` (notebook 4.5) keeps ``train + augmentation`` (the training sentences
and two augmented copies of each) and changes who labels it:

* ``4L assistant``: a teacher assistant (Mirzadeh et al. 2020): four of the teacher's six
  layers (``--assistant-layers``, DistilBERT's initialization), itself distilled on the
  transfer set (soft targets at T = 2, lr 1e-4, ``--assistant-epochs``), then labelling it;
* ``two teachers``: the average of the logits of two teachers, the running example and the
  same recipe fine-tuned with seed 1 (the MSE student's analogue of averaged soft targets);
* ``second teacher``: the seed-1 teacher alone, to tell the averaging from the new teacher.

Labelled sets, the assistant and the second teacher are built once and kept in the
shrinklib cache. Rows go to ``results/distill_transfer.csv`` keyed by student, transfer
set, teacher, seed and epochs (a rerun replaces its own rows); the assistant and the
second teacher get rows of their own. The two parts can run side by side, one thread each:

    python benchmarks/distill_transfer.py --only transfer --threads 1 &
    python benchmarks/distill_transfer.py --only teachers --threads 1
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch
from datasets import concatenate_datasets, load_from_disk

from shrinklib import data, distill, measure, results, serialize, zoo
from shrinklib.cache import cached_folder
from shrinklib.train import TrainConfig, epoch_steps, fit
from shrinklib.utils import comma_list, seed_everything

RESULTS = Path(__file__).resolve().parents[1] / "results"
PARTS = ("transfer", "teachers")
TRANSFERS = ("train", "train + unlabelled", "train + augmentation + unlabelled")
TEACHERS = ("4L assistant", "two teachers", "second teacher")
KEY = ["student", "transfer", "teacher", "seed", "epochs"]
HAMLET = 1500  # of its 1,536 distinct sentences


def digest(*parts) -> str:
    return hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:12]


def labelled_by(model, tokenizer, texts, name: str):
    """``texts`` labelled by ``model`` (logits and argmax), kept in the cache under ``name`` and the texts."""
    def build(folder: Path) -> None:
        distill.teacher_labelled(model, tokenizer, texts).save_to_disk(folder / "set")

    return load_from_disk(cached_folder(f"distill-labelled-{name}-{digest(list(texts))}", build) / "set")


def unlabelled_texts(count: int) -> list[str]:
    """``HAMLET`` sentences of Hamlet, then BBC News sentences up to ``count`` (seed 0)."""
    hamlet = distill.unlabelled_sentences("hamlet", min(HAMLET, count), seed=0)
    return hamlet + distill.unlabelled_sentences("bbc", count - len(hamlet), seed=0)


def transfer_row(name, transfer_name, seed, model, tokenizer, splits, result=None, **extra) -> dict:
    """``distill_students.py``'s row (:func:`shrinklib.results.classifier_row`), the transfer set for the training."""
    label = f"{name:>7} {transfer_name:>20} seed {seed}"
    measured = results.classifier_row(model, tokenizer, splits["test"], result, label=label)
    return {"student": name, "seed": seed, **measured, **extra, "transfer": transfer_name}


def train_bilstm(args, seed, transfer, teacher, tokenizer):
    seed_everything(seed)
    student = distill.bilstm_student(teacher, tokenizer, hidden_size=300)  # as distill_students.py's BiLSTM
    config = TrainConfig(max_steps=args.steps, batch_size=args.batch_size, lr=args.lstm_lr, seed=seed,
                         select_best=False, task_loss_weight=0.0)
    term = distill.stored_logit_distillation(loss="mse")
    return student, fit(student, transfer, config, tokenizer=tokenizer, extra_losses={"kd": term})


def assistant(args, teacher, tokenizer, augmented):
    """The 4-layer teacher assistant, distilled on the transfer set and cached: (model, its training record)."""
    layers = [int(i) for i in args.assistant_layers.split(",")]
    steps = epoch_steps(args.assistant_epochs, args.n_train, args.batch_size)

    def build(folder: Path) -> None:
        model = distill.student_from_teacher(teacher, layers)
        config = TrainConfig(max_steps=steps, batch_size=args.batch_size, lr=args.lr, seed=0, select_best=False,
                             task_loss_weight=0.0)
        result = fit(model, augmented, config, tokenizer=tokenizer,
                     extra_losses={"kd": distill.stored_logit_distillation(temperature=args.temperature)})
        serialize.save(model, folder / "model", tokenizer=tokenizer)
        (folder / "training.json").write_text(json.dumps({"layers": layers, "steps": result.steps,
                                                          "seconds": round(result.seconds, 1)}))

    folder = cached_folder(f"distill-assistant-{digest(layers, steps, args.lr, args.temperature, len(augmented))}",
                           build)
    return serialize.load(folder / "model").eval(), json.loads((folder / "training.json").read_text())


def averaged(first, second):
    """``first`` with each row's logits replaced by the mean of both sets' logits, and its argmax as label."""
    mean = (torch.tensor(first["teacher_logits"]) + torch.tensor(second["teacher_logits"])) / 2
    out = first.remove_columns(["label", "teacher_logits"])
    out = out.add_column("label", mean.argmax(dim=1).tolist(), feature=first.features["label"])
    return out.add_column("teacher_logits", mean.tolist(), feature=first.features["teacher_logits"])


def teacher_sets(args, names, teacher, tokenizer, splits, augmented, settings) -> dict:
    """The transfer set labelled by each of ``names`` (from TEACHERS); the assistant's and the
    second teacher's own test rows go to the CSV on the way."""
    texts, sets, rows = augmented["text"], {}, []
    if "4L assistant" in names:
        helper, info = assistant(args, teacher, tokenizer, augmented)
        sets["4L assistant"] = labelled_by(helper, tokenizer, texts, f"assistant-{digest(info)}")
        rows.append(transfer_row("4L assistant", "train + augmentation", 0, helper, tokenizer, splits,
                                 teacher="teacher", layers=str(info["layers"]), assistant_steps=info["steps"],
                                 **settings))
    if {"two teachers", "second teacher"} & set(names):
        second, _ = zoo.teacher("rt", recipe=zoo.SECOND_TEACHER)
        sets["second teacher"] = labelled_by(second, tokenizer, texts, f"teacher-{zoo.SECOND_TEACHER.key()}")
        sets["two teachers"] = averaged(augmented, sets["second teacher"])
        rows.append(transfer_row("second teacher", "train", 1, second, tokenizer, splits, teacher="gold labels",
                                 **settings))
    results.upsert(args.out, rows, KEY)
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    parser.add_argument("--transfers", default=",".join(TRANSFERS), help=f"subset of {TRANSFERS}")
    parser.add_argument("--teachers", default=",".join(TEACHERS), help=f"subset of {TEACHERS}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=float, default=6.0, help="optimizer steps, in epochs of the training split")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lstm-lr", type=float, default=1e-3)
    parser.add_argument("--lr", type=float, default=1e-4, help="rate of the assistant")
    parser.add_argument("--temperature", type=float, default=2.0, help="of the assistant's soft targets")
    parser.add_argument("--unlabelled", type=int, default=20504, help="unlabelled sentences added")
    parser.add_argument("--assistant-layers", default="0,2,3,5", help="the teacher layers the assistant keeps")
    parser.add_argument("--assistant-epochs", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "distill_transfer.csv")
    args = parser.parse_args()
    parts, transfers, teachers = comma_list(args.only), comma_list(args.transfers), comma_list(args.teachers)
    unknown = sorted(set(parts) - set(PARTS)) + sorted(set(transfers) - set(TRANSFERS))
    unknown += sorted(set(teachers) - set(TEACHERS))
    if unknown:
        parser.error(f"unknown parts, transfer sets or teachers {unknown}; choose from {PARTS}, {TRANSFERS}, {TEACHERS}")
    seeds = [int(s) for s in args.seeds.split(",")]

    torch.set_num_threads(args.threads)
    seed_everything(0)
    teacher, tokenizer = zoo.teacher("rt")  # in eval mode
    splits = data.rotten_tomatoes()
    args.n_train = len(splits["train"])
    args.steps = epoch_steps(args.epochs, args.n_train, args.batch_size)
    _, augmented = distill.transfer_sets(teacher, tokenizer, splits["train"], teacher_key=zoo.teacher_folder("rt").name,
                                         copies=2, seed=0)
    train = augmented.select(range(args.n_train))  # the training sentences, labelled by the teacher
    settings = {"epochs": args.epochs, "lstm_lr": args.lstm_lr, "threads": args.threads, **measure.provenance()}

    runs = []
    if "transfer" in parts:
        sets = {"train": train}
        if any("unlabelled" in name for name in transfers):
            extra = labelled_by(teacher, tokenizer, unlabelled_texts(args.unlabelled), "teacher")
            sets["train + unlabelled"] = concatenate_datasets([train, extra])
            sets["train + augmentation + unlabelled"] = concatenate_datasets([augmented, extra])
        runs += [(name, "teacher", sets[name]) for name in transfers]
    if "teachers" in parts:
        sets = teacher_sets(args, teachers, teacher, tokenizer, splits, augmented, settings)
        runs += [("train + augmentation", name, sets[name]) for name in teachers]
    for transfer_name, teacher_name, transfer in runs:
        for seed in seeds:
            student, result = train_bilstm(args, seed, transfer, teacher, tokenizer)
            results.upsert(args.out, [transfer_row("BiLSTM", transfer_name, seed, student, tokenizer, splits, result,
                                                   teacher=teacher_name, transfer_size=len(transfer), **settings)],
                           KEY)


if __name__ == "__main__":
    main()
