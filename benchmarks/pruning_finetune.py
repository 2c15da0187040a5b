"""Pruning with fine-tuning on the running example: the long runs behind chapter 2.

Every run fine-tunes on the Rotten Tomatoes training split with the task loss plus
soft-target distillation from the cached teacher (MiniLM-L6; Hinton et al.), as Sanh et
al. (2020) do. Movement and magnitude pruning start, as in Sanh et al., from the
*pre-trained* MiniLM and prune while fine-tuning: movement scores need weights that
fine-tuning moves, and a converged teacher's gradients are mostly noise. 2:4 and
structured pruning prune the fine-tuned teacher and fine-tune to recover. Test accuracy
(1,500 sentences, bootstrap 95% interval) is measured at the end; no checkpoint is
picked on the way, so a model never goes back to a less sparse step.

Experiments (``--only`` picks some):

* ``movement`` / ``magnitude``: hard movement pruning against gradual magnitude pruning,
  both layer-wise on the encoder's linear layers, on the same cubic schedule, at
  50/80/90/95% sparsity (``--sparsities``).
* ``nm24``: 2:4 semi-structured masks chosen once by magnitude, then fine-tuned with
  the masks held.
* ``structured``: heads and FFN neurons ranked by gradient importance (Michel et al.)
  and removed, then fine-tuned; CPU latency against the teacher in the same run.

Writes ``results/pruning_finetune.csv`` (a rerun replaces the rows of the same experiment,
method and sparsity); every row records device, versions, date and commit:

    python benchmarks/pruning_finetune.py [--only movement,magnitude] [--epochs 2]
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from shrinklib import data, measure, prune, results, zoo
from shrinklib.distill import logit_distillation
from shrinklib.train import TrainConfig, fit
from shrinklib.utils import comma_list, encoder_linears, seed_everything

OUT = Path(__file__).resolve().parents[1] / "results" / "pruning_finetune.csv"
EXPERIMENTS = ("teacher", "movement", "magnitude", "nm24", "structured")
BATCH_SIZE = 32
KEY = ["experiment", "method", "target_sparsity"]  # a rerun replaces the rows with the same key
LATENCY_SHAPES = ((1, 64), (8, 64))  # (batch, tokens): one sentence, and a small serving batch


def _config(args, lr: float | None = None, **overrides) -> TrainConfig:
    return TrainConfig(epochs=args.epochs, batch_size=BATCH_SIZE, lr=lr or args.lr, select_best=False, seed=0, **overrides)


def _finetune(args, student, teacher, tokenizer, splits, config, callbacks=()):
    distill = logit_distillation(teacher, temperature=args.temperature)
    return fit(student, splits["train"], config, tokenizer=tokenizer, extra_losses={"kd": distill},
               callbacks=list(callbacks))


def _row(experiment, method, model, tokenizer, splits, *, target=None, result=None, **extra) -> dict:
    acc = measure.accuracy(model, splits["test"], tokenizer, progress=False)
    row = {"experiment": experiment, "method": method, "target_sparsity": target,
           "sparsity": measure.sparsity(model, encoder_linears),
           **results.accuracy_columns(acc),
           "params": measure.count_parameters(model), "nonzero_params": measure.nonzero_parameters(model),
           "steps": result.steps if result else 0, "train_seconds": round(result.seconds, 1) if result else 0.0,
           **extra}
    print(f"{experiment:>10} {method:>22} sparsity {row['sparsity']:.3f}  test {acc}", flush=True)
    return row


def _pretrained():
    seed_everything(0)  # the classifier head is initialized at random: the same head for every run
    model, _ = zoo.encoder(num_labels=2)
    return model


def _schedule(args, splits) -> tuple[int, int]:
    """(start, end) steps: dense for the first ``dense_fraction`` of the run, cubic ramp to ``ramp_end``, then held.

    Movement scores are only as good as the movement they have summed: Sanh et al. train
    dense for a tenth of a ten-epoch budget first. With two or three epochs, the dense
    phase must be a larger share (one epoch by default) or the first masks are noise.
    """
    total = round(args.epochs * -(-len(splits["train"]) // BATCH_SIZE))
    return max(1, round(args.dense_fraction * total)), max(2, round(args.ramp_end * total))


def run_movement(args, teacher, tokenizer, splits):
    rows = []
    start, end = _schedule(args, splits)
    for sparsity in args.sparsities:
        student = prune.movement_(_pretrained(), method="hard", score_update=args.score_update)
        score_lrs = {"scores": args.scores_lr} if args.score_update == "optimizer" else {}
        config = _config(args, args.pretrained_lr, param_lrs=score_lrs)
        result = _finetune(args, student, teacher, tokenizer, splits, config,
                           [prune.MovementSchedule(student, sparsity, start_step=start, end_step=end)])
        prune.finalize_movement_(student)
        method = "hard movement" + (" (summed scores)" if args.score_update == "sum" else "")
        rows.append(_row("movement", method, student, tokenizer, splits, target=sparsity, result=result))
    return rows


def run_magnitude(args, teacher, tokenizer, splits):
    rows = []
    start, end = _schedule(args, splits)
    for sparsity in args.sparsities:
        student = _pretrained()
        schedule = prune.GradualMagnitude(student, sparsity, start_step=start, end_step=end, every=10, scope="layer")
        result = _finetune(args, student, teacher, tokenizer, splits, _config(args, args.pretrained_lr),
                           [schedule])
        rows.append(_row("magnitude", "gradual magnitude", student, tokenizer, splits, target=sparsity, result=result))
    return rows


def run_nm24(args, teacher, tokenizer, splits):
    student = prune.nm_(copy.deepcopy(teacher), 2, 4)
    rows = [_row("nm24", "2:4 one-shot", student, tokenizer, splits, target=0.5)]
    result = _finetune(args, student, teacher, tokenizer, splits, _config(args), [prune.keep_masks(student)])
    assert all(prune.is_nm_sparse(m.weight, 2, 4) for _, m in prune.prunable_weights(student).items())
    rows.append(_row("nm24", "2:4 + fine-tuning", student, tokenizer, splits, target=0.5, result=result))
    return rows


def _latencies(model, prefix: str, repeats: int) -> dict:
    out = {}
    for batch, tokens in LATENCY_SHAPES:
        timing = measure.latency(model, batch_size=batch, seq_len=tokens, repeats=repeats, threads=2)
        out[f"{prefix}_ms_b{batch}_t{tokens}"] = timing.median_ms
    return out


def run_structured(args, teacher, tokenizer, splits):
    batches = list(data.dataloader(splits["train"].select(range(512)), tokenizer, batch_size=32))
    head_scores = prune.head_importance(teacher, batches)
    neuron_scores = prune.neuron_importance(teacher, batches)
    student = copy.deepcopy(teacher)
    removed_heads = prune.lowest_units(head_scores, args.heads_fraction)
    prune.prune_heads_(student, dict(enumerate(removed_heads)))
    removed_neurons = prune.lowest_units(neuron_scores, args.neurons_fraction)
    prune.prune_neurons_(student, {i: sorted(set(range(len(s))) - set(r))
                                   for i, (s, r) in enumerate(zip(neuron_scores, removed_neurons))})
    label = f"heads -{args.heads_fraction:.0%}, neurons -{args.neurons_fraction:.0%}"
    # Teacher and student timed in the same run, interleaved, so that the ratio is fair.
    timing = {**_latencies(teacher, "teacher", args.repeats), **_latencies(student, "pruned", args.repeats)}
    speedups = {f"speedup_b{b}_t{t}": timing[f"teacher_ms_b{b}_t{t}"] / timing[f"pruned_ms_b{b}_t{t}"]
                for b, t in LATENCY_SHAPES}
    rows = [_row("structured", f"{label}, one-shot", student, tokenizer, splits, **timing, **speedups)]
    result = _finetune(args, student, teacher, tokenizer, splits, _config(args))
    rows.append(_row("structured", f"{label} + fine-tuning", student, tokenizer, splits, result=result,
                     **timing, **speedups))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(EXPERIMENTS), help=f"comma-separated subset of {EXPERIMENTS}")
    parser.add_argument("--sparsities", default="0.5,0.8,0.9,0.95")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--pretrained-lr", type=float, default=1e-4,
                        help="rate of the weights when a run starts from the pre-trained model")
    parser.add_argument("--score-update", choices=prune.SCORE_UPDATES, default="optimizer",
                        help="movement scores trained by Adam (Sanh et al.'s code) or summed exactly")
    parser.add_argument("--scores-lr", type=float, default=1e-2, help="Adam rate of the movement scores (Sanh et al.)")
    parser.add_argument("--dense-fraction", type=float, default=0.4,
                        help="share of the steps before pruning starts (movement, magnitude)")
    parser.add_argument("--ramp-end", type=float, default=0.75, help="share of the steps when the final sparsity is reached")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--heads-fraction", type=float, default=0.5)
    parser.add_argument("--neurons-fraction", type=float, default=0.6)
    parser.add_argument("--repeats", type=int, default=50, help="latency repeats (structured)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads; two 1-thread runs side by side get more done on 2 cores than one run")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.sparsities = [float(s) for s in args.sparsities.split(",")]
    chosen = comma_list(args.only)
    unknown = sorted(set(chosen) - set(EXPERIMENTS))
    if unknown:
        parser.error(f"unknown experiments {unknown}; choose from {EXPERIMENTS}")

    torch.set_num_threads(args.threads)
    seed_everything(0)
    teacher, tokenizer = zoo.teacher("rt")
    splits = data.rotten_tomatoes()
    stamp = measure.provenance()
    runners = {"movement": run_movement, "magnitude": run_magnitude, "nm24": run_nm24, "structured": run_structured}
    new = []
    for experiment in chosen:
        seed_everything(0)
        if experiment == "teacher":
            new.append(_row("teacher", "teacher (dense)", teacher, tokenizer, splits))
        else:
            start = "pre-trained" if experiment in ("movement", "magnitude") else "teacher"
            lr = args.pretrained_lr if start == "pre-trained" else args.lr
            schedule = {"dense_fraction": args.dense_fraction, "ramp_end": args.ramp_end} if start == "pre-trained" else {}
            new += [{**r, "start": start, "epochs": args.epochs, "lr": lr, "temperature": args.temperature, **schedule}
                    for r in runners[experiment](args, teacher, tokenizer, splits)]
    total = results.upsert(args.out, new, KEY, stamp=stamp)
    print(f"wrote {len(new)} new rows to {args.out} ({total} in all)")


if __name__ == "__main__":
    main()
