"""Quantization-aware training of the running example, 8 bits down to binary weights.

The runs behind chapter 3's "Quantization-aware training". Every run starts from the
fine-tuned teacher (MiniLM-L6 on Rotten Tomatoes), swaps the encoder's linear layers for
:class:`~shrinklib.quant.QATLinear` (8-bit per-token activations, the weight grid of the
experiment) and trains on the training split; the runs marked "+ KD" add soft-target
distillation from the float teacher (temperature 2), as TernaryBERT and BinaryBERT do.
Embeddings and the classifier head stay in floating point. Each run is compared with the
same grid applied to the teacher without training (rounded once), and measured on
the 1,500 test sentences (bootstrap 95% interval), after :func:`~shrinklib.quant.convert_qat_`
has turned it into integer layers. No checkpoint is picked on the way.

Experiments (``--only`` picks some):

* ``q8bert``: 8-bit symmetric weights, scale from max|w| at every step (Zafrir et al., 2019);
* ``lsq4`` / ``lsq2``: 4- and 2-bit weights with learned step size (Esser et al., 2020), + KD;
* ``ternary`` / ``ternary_kd``: TWN ternary weights, without and with distillation
  (Zhang et al., 2020);
* ``binary_kd``: BWN binary weights with distillation (the baseline of Bai et al., 2021).

Budgets (batches of 32): two epochs for the ternary runs, one for 2-bit and binary, half
an epoch for 8 and 4 bits, which barely lose anything when rounded once; about 70
minutes in all on 2 quiet CPU cores.

Rows go to ``results/qat_bert.csv`` after every run (a rerun replaces the experiment's
rows), with device, versions, date and commit. Two processes with disjoint ``--only`` and
``--threads 1`` side by side get done sooner on 2 cores than one:

    python benchmarks/qat_bert.py [--only ternary_kd,ternary] [--threads 1]
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from shrinklib import data, measure, quant, results, zoo
from shrinklib.distill import logit_distillation
from shrinklib.train import TrainConfig, fit
from shrinklib.utils import comma_list, seed_everything

OUT = Path(__file__).resolve().parents[1] / "results" / "qat_bert.csv"
BATCH_SIZE = 32
# name: (label, QATConfig, distill, epochs)
EXPERIMENTS = {
    "q8bert": ("8-bit (Q8BERT)", quant.QATConfig("minmax", 8, 8), False, 0.5),
    "lsq4": ("4-bit LSQ + KD", quant.QATConfig("lsq", 4, 8), True, 0.5),
    "lsq2": ("2-bit LSQ + KD", quant.QATConfig("lsq", 2, 8), True, 1.0),
    "ternary": ("ternary", quant.QATConfig("ternary", 2, 8), False, 2.0),
    "ternary_kd": ("ternary + KD (TernaryBERT)", quant.QATConfig("ternary", 2, 8), True, 2.0),
    "binary_kd": ("binary + KD (BinaryBERT baseline)", quant.QATConfig("binary", 2, 8), True, 1.0),
}
WEIGHT_BITS = {"minmax": None, "lsq": None, "ternary": 1.58, "binary": 1.0}  # None: config.bits


def _measure(model, tokenizer, splits) -> dict:
    return results.accuracy_columns(measure.accuracy(model, splits["test"], tokenizer, progress=False))


def run(name: str, args, teacher, tokenizer, splits) -> dict:
    label, config, distill, epochs = EXPERIMENTS[name]
    # Post-training: the same grid on the teacher's weights, no training (convert right away).
    seed_everything(0)
    ptq = quant.convert_qat_(quant.qat_(copy.deepcopy(teacher), config))
    before = _measure(ptq, tokenizer, splits)
    del ptq
    seed_everything(0)
    student = quant.qat_(copy.deepcopy(teacher), config)
    extra = {"kd": logit_distillation(teacher, temperature=args.temperature)} if distill else {}
    result = fit(student, splits["train"], TrainConfig(epochs=epochs * args.epoch_scale, batch_size=BATCH_SIZE,
                                                      lr=args.lr, select_best=False, seed=0),
                 tokenizer=tokenizer, extra_losses=extra)
    quant.convert_qat_(student)
    after = _measure(student, tokenizer, splits)
    row = {"experiment": name, "method": label, "weights": config.weights,
           "weight_bits": WEIGHT_BITS[config.weights] or config.bits, "activation_bits": config.activation_bits,
           "distillation": distill, **after, "ptq_accuracy": before["test_accuracy"],
           "size_mb": measure.size_on_disk(student) / 1e6, "steps": result.steps,
           "train_seconds": round(result.seconds, 1), "epochs": epochs * args.epoch_scale, "lr": args.lr,
           "temperature": args.temperature if distill else None, "threads": args.threads}
    print(f"{name:>10}: post-training {before['test_accuracy']:.3f} -> QAT {after['test_accuracy']:.3f} "
          f"[{after['test_low']:.3f}, {after['test_high']:.3f}] ({result.steps} steps, {result.seconds:.0f} s)",
          flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(EXPERIMENTS), help=f"comma-separated subset of {list(EXPERIMENTS)}")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--epoch-scale", type=float, default=1.0, help="multiplies every run's epochs (0.05: a smoke test)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    chosen = comma_list(args.only)
    unknown = sorted(set(chosen) - set(EXPERIMENTS))
    if unknown:
        parser.error(f"unknown experiments {unknown}; choose from {list(EXPERIMENTS)}")

    torch.set_num_threads(args.threads)
    teacher, tokenizer = zoo.teacher("rt")
    splits = data.rotten_tomatoes()
    stamp = measure.provenance()
    teacher_row = {"experiment": "teacher", "method": "teacher (fp32)", "weights": "float", "weight_bits": 32,
                   "activation_bits": 32, "distillation": False, **_measure(teacher, tokenizer, splits),
                   "size_mb": measure.size_on_disk(teacher) / 1e6, "steps": 0, **stamp}
    results.upsert(args.out, [teacher_row], ["experiment"])
    for name in chosen:
        total = results.upsert(args.out, [run(name, args, teacher, tokenizer, splits)], ["experiment"], stamp=stamp)
    print(f"wrote {len(chosen)} runs to {args.out} ({total} rows in all)")


if __name__ == "__main__":
    main()
