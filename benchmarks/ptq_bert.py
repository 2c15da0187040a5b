"""Post-training quantization of the running example's teacher: accuracy, size and CPU latency.

The teacher (MiniLM-L6 fine-tuned on Rotten Tomatoes) against its post-training
quantized versions, all measured in one run on this machine:

* torch's own dynamic int8 quantization (``torch.ao.quantization.quantize_dynamic`` of
  every Linear), the trusted peer;
* shrinklib dynamic int8 (``Int8Dynamic``: int8 weights per channel, int8 activations
  per token), with and without int8 embeddings;
* shrinklib static int8 (``Int8Static``) with the activation ranges calibrated on 512
  training sentences by min-max, percentile (99.99) and entropy, with int8 embeddings;
* weight-only int4 with groups of 32, 64 and 128 (affine, RTN), with int8 embeddings.

Test accuracy on the 1,500 test sentences with a bootstrap 95% interval; size is the
``model.safetensors`` that ``shrinklib.save`` writes; latency is the median over
``--rounds`` rounds in which every model is timed in turn (so that a noisy spell of the
shared machine hits all of them), at batch 1 x 64 and 8 x 64 tokens on 2 threads.
Latency is measured under OpenMP's default wait policy, as a deployed model runs: the
script drops the ``OMP_WAIT_POLICY=PASSIVE`` the Makefile exports (two notebooks share two
cores there). With passive waiting every parallel operation pays to wake the sleeping
threads, which costs the int8 path, a dozen small elementwise passes per layer around
``torch._int_mm``, far more than fp32 (1.3x instead of 2x at batch 8 on this machine).
Writes ``results/ptq_bert.csv`` (device, versions, date and commit on every row; a rerun
replaces the rows of the models it measures):

    python benchmarks/ptq_bert.py [--rounds 5] [--repeats 10]
"""
from __future__ import annotations

import os

os.environ.pop("OMP_WAIT_POLICY", None)  # OpenMP's default, as deployed (see above); before torch loads OpenMP

import argparse  # noqa: E402
import copy  # noqa: E402
import statistics  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from shrinklib import data, measure, quant, results, zoo  # noqa: E402
from shrinklib.utils import seed_everything  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "results" / "ptq_bert.csv"
LATENCY_SHAPES = ((1, 64), (8, 64))


def torch_dynamic(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao announces its own deprecation
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def variants(teacher, calibration):
    """``(name, linear layers, embeddings, model)`` for every model of the comparison."""
    yield "fp32 teacher", "fp32", "fp32", teacher
    yield "torch.ao dynamic int8", "torch.ao dynamic int8", "fp32", torch_dynamic(copy.deepcopy(teacher))
    yield "dynamic int8", "dynamic int8", "fp32", quant.quantize_(copy.deepcopy(teacher), quant.Int8Dynamic())
    model = quant.quantize_(copy.deepcopy(teacher), quant.Int8Dynamic())
    yield "dynamic int8 + int8 embeddings", "dynamic int8", "int8", quant.quantize_embeddings_(model)
    for method in ("minmax", "percentile", "entropy"):
        model = quant.quantize_(copy.deepcopy(teacher), quant.Int8Static(method))
        quant.calibrate_(model, calibration)
        yield f"static int8 ({method}) + int8 embeddings", f"static int8 ({method})", "int8", \
            quant.quantize_embeddings_(model)
    for group in (32, 64, 128):
        model = quant.quantize_(copy.deepcopy(teacher), quant.WeightOnly(4, group, symmetric=False))
        yield f"int4 weights, group {group} + int8 embeddings", f"weight-only int4 g{group}", "int8", \
            quant.quantize_embeddings_(model)


def size_mb(model) -> float:
    try:
        return measure.size_on_disk(model) / 1e6
    except TypeError:  # torch.ao's packed layers are not tensors shrinklib.save can store
        return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per model per round")
    parser.add_argument("--calibration-sentences", type=int, default=512)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    torch.set_num_threads(2)
    seed_everything(0)
    teacher, tokenizer = zoo.teacher("rt")
    teacher.eval()
    splits = data.rotten_tomatoes()
    calibration = list(data.dataloader(splits["train"].select(range(args.calibration_sentences)), tokenizer,
                                       batch_size=32))
    models, rows = [], []
    for name, linears, embeddings, model in variants(teacher, calibration):
        model.eval()
        acc = measure.accuracy(model, splits["test"], tokenizer, progress=False)
        rows.append({"name": name, "linears": linears, "embeddings": embeddings, **results.accuracy_columns(acc),
                     "size_mb": size_mb(model)})
        models.append(model)
        print(f"{name:45s} {acc}  {rows[-1]['size_mb']:.1f} MB", flush=True)

    timings = {(i, shape): [] for i in range(len(models)) for shape in LATENCY_SHAPES}
    for _ in range(args.rounds):
        for shape in LATENCY_SHAPES:
            for i, model in enumerate(models):
                timing = measure.latency(model, batch_size=shape[0], seq_len=shape[1], repeats=args.repeats, threads=2)
                timings[(i, shape)].append(timing.median_ms)
    stamp = measure.provenance()
    for i, row in enumerate(rows):
        for batch, tokens in LATENCY_SHAPES:
            ms = statistics.median(timings[(i, (batch, tokens))])
            base = statistics.median(timings[(0, (batch, tokens))])
            row[f"ms_b{batch}_t{tokens}"] = ms
            row[f"speedup_b{batch}_t{tokens}"] = base / ms
        row["size_ratio"] = rows[0]["size_mb"] / row["size_mb"]
        row.update({"omp_wait_policy": "default", "rounds": args.rounds, "repeats": args.repeats, "calibration_sentences": args.calibration_sentences,
                    **stamp})
        print(f"{row['name']:45s} b1 {row['ms_b1_t64']:6.1f} ms ({row['speedup_b1_t64']:.2f}x)  "
              f"b8 {row['ms_b8_t64']:6.1f} ms ({row['speedup_b8_t64']:.2f}x)  {row['size_ratio']:.2f}x smaller")
    total = results.upsert(args.out, rows, ["name"])
    print(f"wrote {len(rows)} rows to {args.out} ({total} in all)")


if __name__ == "__main__":
    main()
