"""CPU latency and MACs of MiniLM-L6 and a BiLSTM classifier against sequence length.

The longer run behind chapter 1's "Where the cost is": more repeats than the notebook
can afford, batch sizes 1 and 8, lengths 16 to 512. Writes
``results/cost_vs_seq_len.csv`` (a rerun replaces the rows of the same model, batch size
and length); every row records the device, the library versions, the date and the commit. Run it on a quiet machine:

    python benchmarks/cost_vs_seq_len.py [--repeats 30] [--threads 2]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tqdm import tqdm

from shrinklib import measure, results, zoo
from shrinklib.utils import seed_everything

OUT = Path(__file__).resolve().parents[1] / "results" / "cost_vs_seq_len.csv"
SEQ_LENS = (16, 32, 64, 128, 256, 512)
BATCH_SIZES = (1, 8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    seed_everything(0)
    encoder, tokenizer = zoo.encoder(num_labels=2)  # timing does not depend on the weights' values
    models = {"MiniLM-L6": encoder, "BiLSTM": zoo.bilstm(tokenizer, embed_dim=300, hidden_size=300)}
    stamp = measure.provenance()
    rows = []
    grid = [(name, b, t) for name in models for b in BATCH_SIZES for t in SEQ_LENS]
    for name, batch, seq_len in tqdm(grid, desc="cost vs sequence length"):
        model = models[name]
        timing = measure.latency(model, batch_size=batch, seq_len=seq_len, repeats=args.repeats, threads=args.threads)
        rows.append({
            "model": name, "batch_size": batch, "seq_len": seq_len,
            "median_ms": timing.median_ms, "q25_ms": timing.q25_ms, "q75_ms": timing.q75_ms,
            "iqr_ms": timing.iqr_ms, "repeats": timing.repeats, "threads": timing.threads,
            "gmacs": measure.macs(model, batch_size=batch, seq_len=seq_len) / 1e9,
            "params": measure.count_parameters(model), **stamp,
        })
    total = results.upsert(OUT, rows, ["model", "batch_size", "seq_len"])
    print(f"wrote {len(rows)} rows to {OUT} ({total} in all; torch threads: {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
