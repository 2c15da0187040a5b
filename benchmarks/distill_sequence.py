"""Word-level against sequence-level distillation of SmolLM2 into a small decoder: the runs behind notebook 4.7.

Kim & Rush (2016, "Sequence-Level Knowledge Distillation"). The teacher is SmolLM2-135M
(``zoo.decoder()``); the text is the Rotten Tomatoes plot synopses
(``data.lm_text("rt_plots")``), one synopsis per row, the ``calibration`` half for
training and the ``evaluation`` half for measuring. The student is
:func:`shrinklib.distill.lm_student` (``--layers`` layers of width ``--width``, random
initialization, the teacher's tokenizer), trained for ``--steps`` steps of ``--batch-size``
rows of at most ``--block-size`` tokens at lr ``--lr``, four ways:

* ``real text``: cross-entropy on the training synopses (no teacher);
* ``word-level``: the teacher's next-token distribution at every position of the same
  synopses, alone (T = 1), from its ``--top-k`` largest logits, computed once per text
  (:func:`shrinklib.distill.teacher_top_k`, :func:`shrinklib.distill.stored_word_level_distillation`);
* ``sequence-level``: cross-entropy on the teacher's text, its greedy continuation
  (``--new-tokens`` tokens) of the first ``--prompt-words`` words of each training synopsis
  (:func:`shrinklib.distill.generate_corpus`);
* ``sequence + word``: the teacher's text, with the word-level term added (weight 1).

Measured on ``--eval`` evaluation synopses:

* ``real_ppl``: the student's perplexity on the real synopses;
* ``teacher_text_ppl``: its perplexity on the teacher's greedy continuations of their
  first words (how well it models what the teacher would write);
* ``greedy_agreement``: the share of the first ``--agreement-tokens`` tokens of the
  student's greedy continuation equal, position by position, to the teacher's;
* ``teacher_ppl_of_student``: the teacher's perplexity on the student's greedy
  continuations (their fluency, judged by the teacher).

Rows go to ``results/distill_sequence.csv`` keyed by training and seed (a rerun replaces
its own rows); the teacher's text is generated once and kept in the shrinklib cache.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from shrinklib import data, distill, measure, results, zoo
from shrinklib.cache import cached_folder
from shrinklib.train import TrainConfig, fit
from shrinklib.utils import comma_list, seed_everything

RESULTS = Path(__file__).resolve().parents[1] / "results"
TRAININGS = ("real text", "word-level", "sequence-level", "sequence + word")
KEY = ["training", "seed"]


def synopses(part: str, count: int | None = None) -> list[str]:
    texts = [t.strip() for t in data.lm_text("rt_plots", part).split("\n\n") if len(t.split()) >= 8]
    return texts[:count] if count else texts


def prompt_of(text: str, words: int) -> str:
    return " ".join(text.split()[:words])


def teacher_text(teacher, tokenizer, prompts: list[str], new_tokens: int) -> list[str]:
    """The teacher's greedy continuations of ``prompts``, generated once and cached."""
    key = hashlib.sha1(json.dumps([prompts, new_tokens]).encode()).hexdigest()[:12]

    def build(folder: Path) -> None:
        texts = distill.generate_corpus(teacher, tokenizer, prompts, max_new_tokens=new_tokens, batch_size=16)
        (folder / "texts.json").write_text(json.dumps(texts))

    return json.loads((cached_folder(f"distill-seqkd-{key}", build) / "texts.json").read_text())


def continuation_ids(model, tokenizer, prompts: list[str], new_tokens: int) -> list[list[int]]:
    """Greedy new token ids of ``model`` after each prompt (batch 16, left padding)."""
    out = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.eval()
    with torch.no_grad():
        for start in range(0, len(prompts), 16):
            rows = [tokenizer(p)["input_ids"] for p in prompts[start:start + 16]]
            width = max(map(len, rows))
            ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
            generated = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                                       pad_token_id=pad, eos_token_id=None)
            out += [g[width:] for g in generated.tolist()]
    return out


def nll_of_continuations(model, tokenizer, prompts: list[str], continuations: list[list[int]]) -> float:
    """exp(mean NLL) of ``model`` on each continuation's tokens given its prompt."""
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for prompt, new in zip(prompts, continuations):
            head = tokenizer(prompt)["input_ids"]
            ids = torch.tensor([head + new])
            logits = model(input_ids=ids).logits[0, len(head) - 1:-1].float()
            total += float(torch.nn.functional.cross_entropy(logits, torch.tensor(new), reduction="sum"))
            count += len(new)
    return math.exp(total / count)


def stored_top_k(teacher, tokenizer, texts: list[str], args) -> list[dict]:
    """The teacher's top-k logits on ``texts``, computed once and cached as safetensors (no pickle):
    text ``i``'s ``{"ids", "logits"}`` are stored as ``"{i}.ids"`` and ``"{i}.logits"``."""
    key = hashlib.sha1(json.dumps([texts, args.top_k, args.block_size]).encode()).hexdigest()[:12]

    def build(folder: Path) -> None:
        rows = distill.teacher_top_k(teacher, tokenizer, texts, k=args.top_k, block_size=args.block_size)
        save_file({f"{i}.{name}": t.contiguous() for i, row in enumerate(rows) for name, t in row.items()},
                  str(folder / "top_k.safetensors"))

    stored = load_file(str(cached_folder(f"distill-topk-st-{key}", build) / "top_k.safetensors"))
    return [{"ids": stored[f"{i}.ids"], "logits": stored[f"{i}.logits"]} for i in range(len(texts))]


def train(args, training, seed, teacher, tokenizer, texts_of, top_k_of):
    student = distill.lm_student(teacher, hidden_size=args.width, num_layers=args.layers, num_heads=args.heads,
                                 seed=seed)
    source = "real" if training in ("real text", "word-level") else "teacher"
    word = training in ("word-level", "sequence + word")
    loader = distill.lm_dataloader(texts_of[source], tokenizer, block_size=args.block_size,
                                   batch_size=args.batch_size, shuffle=True, seed=seed,
                                   top_k=top_k_of[source] if word else None)
    config = TrainConfig(max_steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=seed, select_best=False)
    extra = {}
    if word:
        extra["kd"] = distill.stored_word_level_distillation()
    if training == "word-level":
        config = dataclasses.replace(config, task_loss_weight=0.0)
    return student, fit(student, loader, config, extra_losses=extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainings", default=",".join(TRAININGS), help=f"subset of {TRAININGS}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--train", type=int, default=None, help="training synopses (all by default)")
    parser.add_argument("--eval", type=int, default=200, help="evaluation synopses")
    parser.add_argument("--prompt-words", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=96, help="tokens the teacher writes after each prompt")
    parser.add_argument("--agreement-tokens", type=int, default=16)
    parser.add_argument("--top-k", type=int, default=64, help="teacher logits kept per position")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "distill_sequence.csv")
    args = parser.parse_args()
    trainings = comma_list(args.trainings)
    if set(trainings) - set(TRAININGS):
        parser.error(f"unknown trainings {sorted(set(trainings) - set(TRAININGS))}; choose from {TRAININGS}")
    seeds = [int(s) for s in args.seeds.split(",")]

    torch.set_num_threads(args.threads)
    seed_everything(0)
    teacher, tokenizer = zoo.decoder()
    real = synopses("calibration", args.train)
    evaluation = synopses("evaluation", args.eval)
    generated = teacher_text(teacher, tokenizer, [prompt_of(t, args.prompt_words) for t in real], args.new_tokens)
    eval_prompts = [prompt_of(t, args.prompt_words) for t in evaluation]
    eval_teacher = teacher_text(teacher, tokenizer, eval_prompts, args.new_tokens)
    teacher_greedy = continuation_ids(teacher, tokenizer, eval_prompts, args.agreement_tokens)
    texts_of = {"real": real, "teacher": generated}
    needed = {"real": "word-level" in trainings, "teacher": "sequence + word" in trainings}
    top_k_of = {source: stored_top_k(teacher, tokenizer, texts, args) if needed[source] else None
                for source, texts in texts_of.items()}
    stamp = {"top_k": args.top_k, "steps": args.steps, "width": args.width, "layers": args.layers,
             "train_texts": len(real), "eval_texts": len(evaluation), "threads": args.threads, **measure.provenance()}

    def scores(model) -> dict:
        greedy = continuation_ids(model, tokenizer, eval_prompts, args.agreement_tokens)
        same = [a == b for s, t in zip(greedy, teacher_greedy) for a, b in zip(s, t)]
        return {"real_ppl": measure.perplexity(model, tokenizer, "\n\n".join(evaluation), block_size=args.block_size,
                                               progress=False),
                "teacher_text_ppl": measure.perplexity(model, tokenizer, "\n\n".join(eval_teacher),
                                                       block_size=args.block_size, progress=False),
                "greedy_agreement": sum(same) / len(same),
                "teacher_ppl_of_student": nll_of_continuations(teacher, tokenizer, eval_prompts, greedy),
                "params": measure.count_parameters(model)}

    results.upsert(args.out, [{"training": "teacher", "seed": 0, **scores(teacher), **stamp}], KEY)
    for training in trainings:
        for seed in seeds:
            student, result = train(args, training, seed, teacher, tokenizer, texts_of, top_k_of)
            out = {"training": training, "seed": seed, **scores(student), "train_seconds": round(result.seconds, 1),
                   **stamp}
            print(f"{training:>16} seed {seed}: real ppl {out['real_ppl']:.1f}, agreement "
                  f"{out['greedy_agreement']:.3f}", flush=True)
            results.upsert(args.out, [out], KEY)


if __name__ == "__main__":
    main()
