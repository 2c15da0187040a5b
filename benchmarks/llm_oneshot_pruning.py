"""Perplexity of SmolLM2-135M pruned one-shot by magnitude, Wanda and SparseGPT.

The sweep behind chapter 2's "One-shot pruning of a language model": unstructured
sparsities 0.1 to 0.7 for the three methods, 2:4 for Wanda and SparseGPT, and the dense
model. Perplexity is measured on the start of the evaluation half of the BBC news text
(``--eval-blocks`` blocks of ``--block-size`` tokens); the calibration blocks come from
the calibration half, which never overlaps it.

Wanda and SparseGPT read their calibration statistics from the dense model in one pass
(``sequential=False``, the library's default), once, shared by every sparsity: the
library's ``wanda_``/``sparsegpt_`` take them as ``stats=``, which prunes exactly as
reading the batches each time would. SparseGPT's ``--blocksize`` and ``--percdamp`` are
passed through and recorded in SparseGPT's rows. At the
sparsities in ``--sequential`` they are also run as in the papers' code, calibrated and
pruned one decoder layer at a time on the outputs of the already-pruned layers
(``sequential=True``). The dense model and the 50% models are evaluated a second time
with longer blocks (``--long-block-size``, same number of tokens) to show how the
context length moves perplexity. Writes ``results/llm_oneshot_pruning.csv``, one row per
(method, pattern, sparsity, calibration, evaluation block size), after every model so a
cut-short run keeps what it measured; ``prune_seconds`` is the time to prune that model
(the first one-pass run also pays for the shared calibration pass). Every row records
the device, the library versions, the date and the commit. About half an hour on 2 CPU
cores:

    python benchmarks/llm_oneshot_pruning.py [--eval-blocks 16] [--calibration-blocks 32]
"""
from __future__ import annotations

import os

# Busy-waiting OpenMP threads make small matrix operations (SparseGPT's column loop, a
# shared CPU) many times slower; must be set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import copy  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from shrinklib import data, measure, prune, zoo  # noqa: E402
from shrinklib.calibration import input_statistics, lm_batches  # noqa: E402
from shrinklib.utils import seed_everything  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "results" / "llm_oneshot_pruning.csv"
SPARSITIES = (0.1, 0.3, 0.5, 0.6, 0.7)
METHODS = ("magnitude", "wanda", "sparsegpt")
PRUNE = {"wanda": prune.wanda_, "sparsegpt": prune.sparsegpt_}
EVAL_CHARS = 400_000  # the evaluation text's start: far more tokens than any protocol here reads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", default="bbc_news", choices=("bbc_news", "hamlet", "rt_plots"))
    parser.add_argument("--block-size", type=int, default=256, help="evaluation and calibration block (tokens)")
    parser.add_argument("--eval-blocks", type=int, default=16)
    parser.add_argument("--calibration-blocks", type=int, default=32)
    parser.add_argument("--long-block-size", type=int, default=1024, help="0 to skip the long-context evaluation")
    parser.add_argument("--sparsities", type=float, nargs="+", default=SPARSITIES)
    parser.add_argument("--sequential", type=float, nargs="*", default=[0.5],
                        help="sparsities also pruned with sequential (layer-by-layer) calibration")
    parser.add_argument("--no-nm", action="store_true", help="skip the 2:4 runs")
    parser.add_argument("--blocksize", type=int, default=128, help="SparseGPT's columns per mask block")
    parser.add_argument("--percdamp", type=float, default=0.01, help="SparseGPT's damping, a share of the mean diagonal")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    seed_everything(0)
    torch.set_num_threads(args.threads)
    dense, tokenizer = zoo.decoder()
    evaluation = data.lm_text(args.text, "evaluation")[:EVAL_CHARS]
    calibration = data.lm_blocks(data.lm_text(args.text, "calibration"), tokenizer, block_size=args.block_size,
                                 max_blocks=args.calibration_blocks)
    batches = lm_batches(calibration, batch_size=4)
    eval_tokens = args.eval_blocks * args.block_size
    protocols = [(args.block_size, args.eval_blocks)]
    if args.long_block_size:
        protocols.append((args.long_block_size, max(1, eval_tokens // args.long_block_size)))

    # (method, pattern, sparsity, calibration): the 50% runs first, so a cut-short run still answers the question
    order = sorted(args.sparsities, key=lambda s: (s != 0.5, s))
    jobs = [("dense", "dense", 0.0, "none")]
    jobs += [(m, "unstructured", s, "one-pass" if m != "magnitude" else "none") for s in order for m in METHODS]
    jobs[4:4] = [(m, "unstructured", s, "sequential") for s in args.sequential for m in ("wanda", "sparsegpt")]
    if not args.no_nm:
        jobs += [(m, "2:4", 0.5, "one-pass") for m in ("wanda", "sparsegpt")]

    stamp = measure.provenance()
    stats, rows = None, []
    for method, pattern, sparsity, calib in tqdm(jobs, desc="one-shot pruning of SmolLM2"):
        start = time.perf_counter()
        model = dense if method == "dense" else copy.deepcopy(dense)
        nm = (2, 4) if pattern == "2:4" else None
        options = {"blocksize": args.blocksize, "percdamp": args.percdamp} if method == "sparsegpt" else {}
        if method == "magnitude":
            prune.magnitude_(model, sparsity, scope="layer")
        elif calib == "sequential":
            PRUNE[method](model, batches, sparsity, sequential=True, **options)
        elif calib == "one-pass":
            if stats is None:  # the dense model's inputs, once for every one-pass run
                stats = input_statistics(dense, batches, prune.prunable_weights(dense), gram=True)
            PRUNE[method](model, sparsity=sparsity, stats=stats, nm=nm, **options)
        prune_seconds = time.perf_counter() - start
        masks = prune.masks(model)
        measured = sum(int((~m).sum()) for m in masks.values()) / max(1, sum(m.numel() for m in masks.values()))
        long_context = method == "dense" or (sparsity == 0.5 and pattern == "unstructured")
        for block_size, blocks in protocols if long_context else protocols[:1]:
            ppl = measure.perplexity(model, tokenizer, evaluation, block_size=block_size, max_blocks=blocks,
                                     progress=False)
            rows.append({
                "method": method, "pattern": pattern, "sparsity": sparsity, "calibration": calib,
                "perplexity": ppl, "measured_sparsity": measured, "text": args.text,
                "eval_block_size": block_size, "eval_blocks": blocks, "eval_tokens": block_size * blocks,
                "calibration_tokens": calibration.numel() if calib in ("one-pass", "sequential") else 0,
                "blocksize": options.get("blocksize"), "percdamp": options.get("percdamp"),
                "prune_seconds": prune_seconds, "threads": args.threads, **stamp,
            })
            tqdm.write(f"{method:9s} {pattern:12s} {sparsity:.1f} {calib:10s} block {block_size:4d}: ppl {ppl:8.2f}")
        OUT.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(OUT, index=False)  # after every model: a cut-short run keeps what it measured
    print(f"wrote {len(rows)} rows to {OUT}")


if __name__ == "__main__":
    main()
