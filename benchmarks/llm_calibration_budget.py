"""How many calibration tokens do Wanda and SparseGPT need? SmolLM2-135M at 50% sparsity.

Chapter 2's one-shot sweep (``llm_oneshot_pruning.py``) calibrates on 32 blocks of 256
tokens (8k tokens); the papers use 128 sequences of 2,048 tokens (262k). This benchmark
prunes SmolLM2-135M to 50% unstructured sparsity with both methods from calibration
budgets of increasing size (``--budgets``, each ``BLOCKSxTOKENS``) taken from the
calibration half of the BBC news text, and measures perplexity on the same evaluation
blocks as the sweep, with the dense model in the same run. Both methods read their
statistics from the dense model in one pass (``sequential=False``), each its own pass over
the same blocks, so ``seconds`` is what one method takes from tokens to pruned model.

Writes ``results/llm_calibration_budget.csv`` after every model, one row per (method,
budget), with device, versions, date and commit:

    python benchmarks/llm_calibration_budget.py [--budgets 8x256 32x256 128x256 128x2048]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see llm_oneshot_pruning.py

import argparse  # noqa: E402
import copy  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from shrinklib import calibration, data, measure, prune, results, zoo  # noqa: E402
from shrinklib.utils import seed_everything  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "results" / "llm_calibration_budget.csv"
BUDGETS = ("8x256", "32x256", "128x256", "128x2048")
EVAL_CHARS = 400_000  # as llm_oneshot_pruning.py: the same evaluation tokens
KEY = ["method", "sparsity", "calibration_blocks", "calibration_block_size"]
PRUNE = {"wanda": prune.wanda_, "sparsegpt": prune.sparsegpt_}


def parse_budget(text: str) -> tuple[int, int]:
    """``"128x2048"`` -> ``(128, 2048)``: blocks and tokens per block."""
    try:
        blocks, tokens = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a budget is BLOCKSxTOKENS, like 32x256; got {text!r}") from None
    if blocks < 1 or tokens < 2:
        raise argparse.ArgumentTypeError(f"a budget needs >= 1 block of >= 2 tokens; got {text!r}")
    return blocks, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=parse_budget, nargs="+", default=[parse_budget(b) for b in BUDGETS])
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--eval-blocks", type=int, default=16)
    parser.add_argument("--eval-block-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    seed_everything(0)
    torch.set_num_threads(args.threads)
    dense, tokenizer = zoo.decoder()
    evaluation = data.lm_text("bbc_news", "evaluation")[:EVAL_CHARS]
    stamp = measure.provenance()
    rows = []

    def record(method: str, blocks: int, block_size: int, model, seconds: float) -> None:
        ppl = measure.perplexity(model, tokenizer, evaluation, block_size=args.eval_block_size,
                                 max_blocks=args.eval_blocks, progress=False)
        rows.append({"method": method, "sparsity": 0.0 if method == "dense" else args.sparsity,
                     "calibration_blocks": blocks, "calibration_block_size": block_size,
                     "calibration_tokens": blocks * block_size, "perplexity": ppl,
                     "eval_block_size": args.eval_block_size, "eval_blocks": args.eval_blocks,
                     "seconds": round(seconds, 1), "threads": args.threads, **stamp})
        print(f"{method:9s} calibration {blocks:4d} x {block_size:4d}: ppl {ppl:7.2f}  ({seconds:.0f} s)", flush=True)
        results.upsert(args.out, rows[-1:], KEY)  # after every model: a cut-short run keeps its rows

    record("dense", 0, 0, dense, 0.0)
    for blocks, block_size in args.budgets:
        start = time.perf_counter()
        tokens = data.lm_split(tokenizer, "bbc_news", block_size=block_size, calibration_blocks=blocks,
                               max_chars=None).calibration  # the whole calibration half: 128 x 2048 needs most of it
        batches = calibration.lm_batches(tokens, max(1, 1024 // block_size))  # about 1k tokens per forward pass
        tokenized = time.perf_counter() - start
        for method, prune_ in PRUNE.items():
            start = time.perf_counter()
            model = prune_(copy.deepcopy(dense), batches, args.sparsity, sequential=False)
            record(method, blocks, block_size, model, tokenized + time.perf_counter() - start)
    print(f"wrote {len(rows)} rows to {args.out}")


if __name__ == "__main__":
    main()
