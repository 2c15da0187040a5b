"""Students of the running example's teacher, trained with and without it: the runs behind chapter 4.

Five students of the MiniLM-L6 teacher (fine-tuned on Rotten Tomatoes):

* ``3L``: 3 of the teacher's 6 layers (the 1st, 3rd and 6th), with its embeddings, pooler
  and classifier: DistilBERT's initialization (Sanh et al. 2019);
* ``3L half-FFN``: the same, with each feed-forward block cut to the 768 of its 1,536
  neurons that matter most to the teacher (first-order Taylor importance, chapter 2's
  ``prune.neuron_importance``, on 256 training sentences) before training: distillation
  and structured pruning combined;
* ``2L``: 2 of them (the 1st and 4th), the same way;
* ``1L``: the teacher's first layer alone, the same way;
* ``BiLSTM``: a one-layer BiLSTM over the teacher's WordPiece vocabulary (Tang et al.
  2019), its embeddings initialized from the teacher's input embeddings in place of
  Tang et al.'s word2vec vectors.

Each is trained three ways, for the same number of optimizer steps (``--epochs`` of the
10,252 training sentences, 1 by default):

* ``labels``: the task loss on the gold labels alone;
* ``KD``: Hinton et al.'s mix, half gold-label loss and half soft targets of the teacher
  (KL at T = 2; MSE between logits for the BiLSTM, as Tang et al.), on the same sentences;
* ``KD + augmentation``: soft targets alone on a transfer set of the training sentences
  plus ``--copies`` perturbed copies of each (masking, embedding-neighbour replacement,
  n-grams: Tang et al., TinyBERT), every sentence labelled by the teacher once.

``--seeds`` seeds each (the student's data order and, for the BiLSTM, its initialization).
Test accuracy on the 1,500 test sentences with a bootstrap 95% interval; the ``KD +
augmentation`` 3- and 2-layer students are also measured after dynamic int8 quantization
(``3L int8``, ``3L half-FFN int8``, ``2L int8``). Rows go to
``results/distill_students.csv`` (a rerun replaces the rows of the same student, training
and seed). ``--only latency`` times every student, and the 4-layer teacher assistant of
``distill_transfer.py``, against the teacher, interleaved over ``--rounds`` rounds, at batch
1 and 8 x 64 tokens on 2 threads, under OpenMP's default wait policy (see ``ptq_bert.py``),
into ``results/distill_latency.csv``, after any training of the same process; run it alone
on a quiet machine. A plain run does everything (about two hours on 2 cores); the training
parts can run side by side, one thread each:

    python benchmarks/distill_students.py --only 3L,2L --threads 1 &
    python benchmarks/distill_students.py --only 1L,BiLSTM --threads 1
    python benchmarks/distill_students.py --only latency
"""
from __future__ import annotations

import os

os.environ.pop("OMP_WAIT_POLICY", None)  # latency as deployed; before torch loads OpenMP (see ptq_bert.py)

import argparse  # noqa: E402
import copy  # noqa: E402
import dataclasses  # noqa: E402
import statistics  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from shrinklib import data, distill, measure, quant, results, zoo  # noqa: E402
from shrinklib.train import TrainConfig, epoch_steps, fit  # noqa: E402
from shrinklib.utils import comma_list, seed_everything  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"
STUDENTS = ("3L", "3L half-FFN", "2L", "1L", "BiLSTM")
TRAININGS = ("labels", "KD", "KD + augmentation")
KEY = ["student", "training", "seed", "epochs"]
LATENCY_SHAPES = ((1, 64), (8, 64))
TEACHER_LAYERS = {"3L": [0, 2, 5], "3L half-FFN": [0, 2, 5], "2L": [0, 3], "1L": [0]}
HALF_FFN = ("3L half-FFN",)  # keeps the half of each FFN's neurons the teacher needs most (chapter 2)
IMPORTANCE_SENTENCES = 256  # training sentences the neurons' importance is measured on
INT8 = ("3L", "3L half-FFN", "2L")  # also measured after dynamic int8 quantization
LATENCY_ONLY = {"4L": [0, 2, 3, 5]}  # timed here, trained as the teacher assistant of distill_transfer.py


def build_student(name: str, teacher, tokenizer, seed: int):
    if name in HALF_FFN:
        return half_ffn_student(teacher, tokenizer, TEACHER_LAYERS[name])
    if name in TEACHER_LAYERS:
        return distill.student_from_teacher(teacher, TEACHER_LAYERS[name])
    seed_everything(seed)
    return distill.bilstm_student(teacher, tokenizer, hidden_size=300)


def half_ffn_student(teacher, tokenizer, layers: list[int]):
    """The teacher's ``layers`` (DistilBERT's initialization), each FFN cut to the half of its neurons that matter most.

    ``distill.student_with_pruned_ffn``: the neurons' first-order Taylor importance in the
    *teacher*, on the first ``IMPORTANCE_SENTENCES`` training sentences.
    """
    sentences = data.rotten_tomatoes()["train"].select(range(IMPORTANCE_SENTENCES))
    batches = list(data.dataloader(sentences, tokenizer, batch_size=32))
    return distill.student_with_pruned_ffn(teacher, layers, batches, keep=0.5)


def train_student(args, name, training, seed, teacher, tokenizer, splits, sets):
    student = build_student(name, teacher, tokenizer, seed)
    steps = epoch_steps(args.epochs, len(splits["train"]), args.batch_size)
    lr = args.lstm_lr if name == "BiLSTM" else args.lr
    loss = "mse" if name == "BiLSTM" else "kl"
    base = TrainConfig(max_steps=steps, batch_size=args.batch_size, lr=lr, seed=seed, select_best=False)
    with_logits, augmented = sets
    if training == "labels":
        result = fit(student, splits["train"], base, tokenizer=tokenizer)
    elif training == "KD":
        term = distill.stored_logit_distillation(temperature=args.temperature, weight=0.5, loss=loss)
        config = dataclasses.replace(base, task_loss_weight=0.5)
        result = fit(student, with_logits, config, tokenizer=tokenizer, extra_losses={"kd": term})
    else:
        term = distill.stored_logit_distillation(temperature=args.temperature, loss=loss)
        config = dataclasses.replace(base, task_loss_weight=0.0)
        result = fit(student, augmented, config, tokenizer=tokenizer, extra_losses={"kd": term})
    return student, result, lr, loss


def row(name, training, seed, model, tokenizer, splits, result=None, **extra) -> dict:
    label = f"{name:>7} {training:>20} seed {seed}"
    return {"student": name, "training": training, "seed": seed,
            **results.classifier_row(model, tokenizer, splits["test"], result, label=label), **extra}


def run_latency(args, teacher, tokenizer) -> list[dict]:
    models = {"teacher": teacher, **{name: build_student(name, teacher, tokenizer, 0) for name in STUDENTS}}
    models.update({name: distill.student_from_teacher(teacher, layers) for name, layers in LATENCY_ONLY.items()})
    for name in INT8:
        models[f"{name} int8"] = quant.quantize_embeddings_(quant.quantize_(copy.deepcopy(models[name]),
                                                                            quant.Int8Dynamic()))
    times = {(name, shape): [] for name in models for shape in LATENCY_SHAPES}
    for _ in range(args.rounds):
        for shape in LATENCY_SHAPES:
            for name, model in models.items():
                timing = measure.latency(model.eval(), batch_size=shape[0], seq_len=shape[1], repeats=args.repeats,
                                         threads=2)
                times[(name, shape)].append(timing.median_ms)
    rows = []
    for name, model in models.items():
        out = {"model": name, "params": measure.count_parameters(model), "size_mb": measure.size_on_disk(model) / 1e6}
        for batch, tokens in LATENCY_SHAPES:
            ms = statistics.median(times[(name, (batch, tokens))])
            out[f"ms_b{batch}_t{tokens}"] = ms
            out[f"speedup_b{batch}_t{tokens}"] = statistics.median(times[("teacher", (batch, tokens))]) / ms
        print(f"{name:>8} b1 {out['speedup_b1_t64']:.2f}x  b8 {out['speedup_b8_t64']:.2f}x", flush=True)
        rows.append({**out, "omp_wait_policy": "default", "rounds": args.rounds, "repeats": args.repeats})
    return rows


def train_students(args, students, trainings, seeds, teacher, tokenizer, stamp) -> None:
    splits = data.rotten_tomatoes()
    if args.limit:
        splits["train"] = splits["train"].select(range(args.limit))
    sets = distill.transfer_sets(teacher, tokenizer, splits["train"], teacher_key=zoo.teacher_folder("rt").name,
                                 copies=args.copies, seed=0)
    results.upsert(args.out, [{**row("teacher", "fine-tuned", 0, teacher, tokenizer, splits), "epochs": args.epochs,
                               **stamp}], KEY)
    for name in students:
        for training in trainings:
            for seed in seeds:
                student, result, lr, loss = train_student(args, name, training, seed, teacher, tokenizer, splits, sets)
                settings = {"lr": lr, "kd_loss": loss if training != "labels" else "", "epochs": args.epochs,
                            "temperature": args.temperature, "copies": args.copies, "threads": args.threads, **stamp}
                rows = [row(name, training, seed, student, tokenizer, splits, result, **settings)]
                if name in INT8 and training == "KD + augmentation":
                    int8 = quant.quantize_embeddings_(quant.quantize_(student, quant.Int8Dynamic()))
                    rows.append(row(f"{name} int8", training, seed, int8, tokenizer, splits, result, **settings))
                results.upsert(args.out, rows, KEY)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(STUDENTS + ("latency",)),
                        help=f"comma-separated subset of {STUDENTS + ('latency',)}")
    parser.add_argument("--trainings", default=",".join(TRAININGS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=float, default=1.0, help="optimizer steps, in epochs of the training split")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4, help="rate of the BERT students")
    parser.add_argument("--lstm-lr", type=float, default=1e-3)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--copies", type=int, default=2, help="augmented copies of each training sentence")
    parser.add_argument("--rounds", type=int, default=15, help="latency rounds (the 3L int8 student sits near 4x)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per model per latency round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="first N training sentences only (a quick check)")
    parser.add_argument("--out", type=Path, default=RESULTS / "distill_students.csv")
    parser.add_argument("--latency-out", type=Path, default=RESULTS / "distill_latency.csv")
    args = parser.parse_args()
    chosen, trainings = comma_list(args.only), comma_list(args.trainings)
    unknown = sorted(set(chosen) - set(STUDENTS) - {"latency"}) + sorted(set(trainings) - set(TRAININGS))
    if unknown:
        parser.error(f"unknown students or trainings {unknown}; choose from {STUDENTS} + ('latency',) and {TRAININGS}")
    seeds = [int(s) for s in args.seeds.split(",")]

    torch.set_num_threads(args.threads)
    seed_everything(0)
    teacher, tokenizer = zoo.teacher("rt")  # in eval mode
    stamp = measure.provenance()
    students = [name for name in chosen if name != "latency"]
    if students:
        train_students(args, students, trainings, seeds, teacher, tokenizer, stamp)
    if "latency" in chosen:  # last, after the training runs of this process
        results.upsert(args.latency_out, run_latency(args, teacher, tokenizer), ["model"], stamp=stamp)


if __name__ == "__main__":
    main()
