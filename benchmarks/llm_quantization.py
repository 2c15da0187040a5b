"""Perplexity of SmolLM2-135M quantized by RTN, GPTQ, AWQ, SmoothQuant and LLM.int8().

The sweep behind chapter 3's "Quantizing a language model":

* weight-only round-to-nearest (RTN) at 8 bits per channel and 4 and 3 bits in groups of 128;
* GPTQ (layer by layer, as the paper's code) and AWQ at 4 and 3 bits, groups of 128, each
  plain and with the options of the papers' code: GPTQ with act-order (static groups) and
  a clipping search of every group's grid, AWQ with its clipping search;
* W8A8: naive dynamic int8 (per-token activations, per-channel weights), SmoothQuant
  (alpha 0.5) on the same int8 path, and LLM.int8() (threshold 6).

SmolLM2's 576-wide layers hold four groups of 128 and one of 64 per row. Perplexity is
measured on the start of the evaluation half of the BBC news text (``--eval-blocks`` blocks
of ``--block-size`` tokens), the calibration blocks come from the calibration half, which
never overlaps it. The shipped SmolLM2 weights were stored as Q4_1 GGUF (4-bit, groups of
32), so "fp32" is that rounding already made once. Writes ``results/llm_quantization.csv``
after every model (device, versions, date and commit on every row; a rerun replaces the
rows of the methods it runs), about 30 minutes on 2 CPU cores:

    python benchmarks/llm_quantization.py [--eval-blocks 16] [--calibration-blocks 32] [--only "GPTQ,AWQ + clip"]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see llm_oneshot_pruning.py

import argparse  # noqa: E402
import copy  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from shrinklib import calibration, data, measure, quant, results, zoo  # noqa: E402
from shrinklib.utils import comma_list, seed_everything  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "results" / "llm_quantization.csv"
EVAL_CHARS = 400_000  # as llm_oneshot_pruning.py: the same evaluation tokens (and calibration blocks)


def jobs(group: int):
    """``(method, weight bits, activation bits, group, quantize(model, batches))`` for each model of the sweep."""
    yield "fp32", 32, 32, None, lambda m, b: m
    yield "RTN", 8, 32, None, lambda m, b: quant.quantize_(m, quant.WeightOnly(8))
    for bits in (4, 3):
        config = quant.WeightOnly(bits, group, symmetric=False)
        yield "RTN", bits, 32, group, lambda m, b, c=config: quant.quantize_(m, c)
        yield "GPTQ", bits, 32, group, lambda m, b, c=config: quant.gptq_(m, b, c, sequential=True)
        yield "GPTQ act-order + clip", bits, 32, group, \
            lambda m, b, c=config: quant.gptq_(m, b, c, sequential=True, act_order=True, clip=True)
        yield "AWQ", bits, 32, group, lambda m, b, c=config: quant.awq_(m, b, c)
        yield "AWQ + clip", bits, 32, group, lambda m, b, c=config: quant.awq_(m, b, c, clip=True)
    yield "W8A8 dynamic", 8, 8, None, lambda m, b: quant.quantize_(m, quant.Int8Dynamic())
    yield "SmoothQuant", 8, 8, None, lambda m, b: quant.smoothquant_(m, b, quant.Int8Dynamic(), alpha=0.5)
    yield "LLM.int8()", 8, 8, None, lambda m, b: quant.quantize_(m, quant.LLMInt8(6.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block-size", type=int, default=256, help="evaluation and calibration block (tokens)")
    parser.add_argument("--eval-blocks", type=int, default=16)
    parser.add_argument("--calibration-blocks", type=int, default=32)
    parser.add_argument("--group-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default=None, help="comma-separated method names to run (default: all)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    seed_everything(0)
    torch.set_num_threads(args.threads)
    dense, tokenizer = zoo.decoder()
    calibration, evaluation = data.lm_split(tokenizer, "bbc_news", block_size=args.block_size,
                                            calibration_blocks=args.calibration_blocks, max_chars=EVAL_CHARS)
    batches = calibration.lm_batches(calibration, batch_size=4)
    stamp = measure.provenance()
    chosen = None if args.only is None else set(comma_list(args.only))
    known = {job[0] for job in jobs(args.group_size)}
    if chosen is not None and chosen - known:
        parser.error(f"unknown methods {sorted(chosen - known)}; choose from {sorted(known)}")
    rows = []
    for method, w_bits, a_bits, group, make in jobs(args.group_size):
        if chosen is not None and method not in chosen:
            continue
        start = time.perf_counter()
        model = make(dense if method == "fp32" else copy.deepcopy(dense), batches)
        seconds = time.perf_counter() - start
        ppl = measure.perplexity(model, tokenizer, evaluation, block_size=args.block_size, max_blocks=args.eval_blocks,
                                 progress=False)
        rows.append({"method": method, "weight_bits": w_bits, "activation_bits": a_bits, "group_size": group,
                     "perplexity": ppl, "size_mb": measure.size_on_disk(model) / 1e6, "quantize_seconds": seconds,
                     "text": "bbc_news", "eval_block_size": args.block_size, "eval_blocks": args.eval_blocks,
                     "calibration_tokens": calibration.numel() if method.startswith(("GPTQ", "AWQ", "SmoothQuant")) else 0,
                     "threads": args.threads, **stamp})
        print(f"{method:22s} W{w_bits:<2d} A{a_bits:<2d} g{group or '-':<4} ppl {ppl:8.2f}  "
              f"{rows[-1]['size_mb']:6.1f} MB  ({seconds:.0f} s)", flush=True)
        total = results.upsert(args.out, rows[-1:], ["method", "weight_bits", "activation_bits"])  # after every model
    print(f"wrote {len(rows)} rows to {args.out} ({total} in all)")


if __name__ == "__main__":
    main()
