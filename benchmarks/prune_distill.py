#!/usr/bin/env python
"""Pruning the course LM, then recovering: one-shot or gradual pruning, fine-tuned by distillation from the dense model.

    python benchmarks/prune_distill.py                 # print the table
    python benchmarks/prune_distill.py --out FILE.md   # also write it, with the machine and versions
                                                       # (default file: benchmarks/results/prune_distill_cpu.md)

For each pattern (50% and 70% unstructured, 2:4) every Linear of every block is pruned (course_lib.prune.prune_model;
embedding and lm_head dense) on a fresh copy of the model, and perplexity is measured on the first --eval-tokens tokens
of the evaluation split (course_lib.evaluate.perplexity):

- ``no recovery``: one-shot magnitude, Wanda and SparseGPT (calibrated on --n-calib windows of 128 tokens);
- ``one-shot + distill``: the one-shot model fine-tuned for --steps AdamW steps with its masks fixed, distilled from
  the dense model (course_lib.prune.distill_with_masks: KL to the dense model's next-token distribution, T = 1);
- ``gradual + distill``: pruned in --stages stages along Zhu and Gupta's cubic schedule (course_lib.prune.gradual_targets;
  2:4 goes through 3:4 first), each stage followed by --steps / --stages of the same fine-tuning steps: the same
  windows and the same number of steps as one-shot;
- ``one-shot + CE``: Wanda only, the same steps on the next-token cross-entropy alone (no teacher): what the teacher adds.

Fine-tuning windows: --steps x --batch-size windows of --seq-len tokens from the calibration split (seed 1), never the
evaluation text. One seed for everything (calibration windows seed 0, training windows seed 1, window order seed 0):
differences of a few percent between two columns are within what another seed could change. Notebook 12 runs a
shorter version within its time budget and prints this table.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# this folder's kernels.py would shadow the `kernels` package that transformers imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))

from benchmarks.provenance import machine_line, write_results  # noqa: E402
from course_lib import prune  # noqa: E402
from course_lib.data import corpus_text  # noqa: E402
from course_lib.evaluate import format_table, perplexity  # noqa: E402
from course_lib.lm_quant import calibration_ids  # noqa: E402
from course_lib.models import load_causal_lm  # noqa: E402

PATTERNS = {"50%": 0.5, "2:4": (2, 4), "70%": 0.7}
DISTILLED = ("magnitude", "wanda")  # the methods fine-tuned; SparseGPT is measured without recovery only
COLUMNS = ("no recovery", "one-shot + distill", "gradual + distill", "one-shot + CE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "prune_distill_cpu.md"))
    parser.add_argument("--patterns", default=",".join(PATTERNS), help=f"subset of {','.join(PATTERNS)}".replace("%", "%%"))  # argparse formats help with %
    parser.add_argument("--eval-tokens", type=int, default=16384)
    parser.add_argument("--n-calib", type=int, default=32)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--stages", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    if args.steps % args.stages:
        parser.error("--steps must be a multiple of --stages (every stage gets the same number of steps)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    text = corpus_text("eval")
    teacher, tok = load_causal_lm(device=device)
    calib = calibration_ids(tok, args.n_calib, 128, seed=0)
    windows = calibration_ids(tok, args.steps * args.batch_size, args.seq_len, seed=1)
    settings = dict(tokenizer=tok, calib_ids=calib, batch_size=args.batch_size, lr=args.lr)

    def evaluate(model) -> float:
        return perplexity(model, tok, text, max_tokens=args.eval_tokens)

    def run(target, method, column) -> float:
        model = copy.deepcopy(teacher)
        if column == "no recovery":
            prune.prune_model(model, tok, 0.5 if isinstance(target, tuple) else target, method,
                              nm=target if isinstance(target, tuple) else None, calib_ids=calib)
        else:
            targets = prune.gradual_targets(target, args.stages) if column == "gradual + distill" else [target]
            if column == "gradual + distill" and len(targets) > 1 and args.steps % len(targets):
                raise SystemExit(f"--steps must be a multiple of the {len(targets)} stages of {target}")
            prune.prune_and_distill(model, None if column == "one-shot + CE" else teacher, windows, targets, method,
                                    **settings)
        return evaluate(model)

    start, cpu_start = time.perf_counter(), time.process_time()
    dense = evaluate(teacher)
    rows = [{"pattern": "dense", "method": "-", "no recovery": dense}]
    for label in args.patterns.split(","):
        target = PATTERNS[label]
        for method in prune.METHODS:
            columns = COLUMNS if method == "wanda" else COLUMNS[:3] if method in DISTILLED else COLUMNS[:1]
            row = {"pattern": label, "method": method}
            for column in columns:
                row[column] = run(target, method, column)
            if "one-shot + distill" in row:
                row["share recovered"] = (row["no recovery"] - row["one-shot + distill"]) / (row["no recovery"] - dense)
            rows.append(row)
            print(f"{label:<4} {method:<9} " + "  ".join(f"{c} {row[c]:8.2f}" for c in columns), flush=True)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    table = format_table(rows, ["pattern", "method", *COLUMNS, "share recovered"])
    print(table)
    load = os.getloadavg()[0]
    shared = ": other jobs shared the machine" if load > torch.get_num_threads() + 0.5 else ""
    stages = ", ".join(f"{s:.4f}" for s in prune.gradual_targets(0.5, args.stages))
    header = (
        "# Course LM: pruning, then recovery by distillation from the dense model (one-shot vs gradual)\n\n"
        f"{machine_line(device)}; {seconds:.0f} s for the table, {cpu_seconds:.0f} s of CPU time; load average "
        f"{load:.1f} on {os.cpu_count()} cores when it ended{shared}.\n\n"
        f"Command: `python benchmarks/prune_distill.py --steps {args.steps} --stages {args.stages} "
        f"--batch-size {args.batch_size} --seq-len {args.seq_len} --eval-tokens {args.eval_tokens} --n-calib {args.n_calib}`\n\n"
        f"Perplexity on the first {args.eval_tokens} tokens of the evaluation split. Wanda and SparseGPT calibrated on "
        f"{args.n_calib} windows of 128 tokens (seed 0). Fine-tuning: {args.steps} AdamW steps (lr {args.lr:g}, cosine, "
        f"no weight decay) of {args.batch_size} windows of {args.seq_len} tokens from the calibration split (seed 1), "
        "masks fixed; distillation: KL to the dense model at T = 1 (alpha 1); CE: next-token cross-entropy, no teacher. "
        f"Gradual: {args.stages} stages of {args.steps // args.stages} steps along the cubic schedule (to 50%: {stages}); "
        f"2:4 in 2 stages of {args.steps // 2} steps (3:4, then 2:4). share recovered = (no recovery - one-shot + "
        "distill) / (no recovery - dense). One seed.\n\n")
    write_results(args.out, header + table + "\n")


if __name__ == "__main__":
    main()
