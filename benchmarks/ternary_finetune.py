#!/usr/bin/env python
"""Ternary fine-tuning of the course LM: how much perplexity distillation from the fp model recovers in a CPU budget.

    python benchmarks/ternary_finetune.py                 # print the table
    python benchmarks/ternary_finetune.py --out FILE.md   # also write it (and FILE.json), with the machine and versions
                                                          # (default: benchmarks/results/ternary_finetune_cpu.md)

Rows: the course LM in fp32; post-training ternarization of its block weights (absmean per tensor, activations
float: notebook 10's section 5); the model converted to BitLinear (course_lib.bitnet.to_bitlinear: an RMSNorm in
front of every block Linear) with the quantizers off and on (W1.58 A8, no training); then the BitLinear model
fine-tuned by course_lib.bitnet.ternary_finetune for each number of steps (each run from the fp model, with its own
cosine schedule), distilled from the fp model (KL, temperature 1) and, for comparison, on next-token
cross-entropy alone. Training windows come from the calibration split (course_lib.lm_quant.calibration_ids, seed
0), perplexity from the evaluation split (course_lib.evaluate.perplexity, disjoint windows). One seed: the
window order and the windows are fixed by --seed. Notebook 10 runs 4 steps live and prints this table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# this folder's kernels.py would shadow the `kernels` package that transformers imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))
from benchmarks.provenance import git_commit  # noqa: E402

from course_lib import bitnet, lm_quant  # noqa: E402
from course_lib.data import corpus_text  # noqa: E402
from course_lib.env import cpu_name  # noqa: E402
from course_lib.evaluate import format_table, perplexity  # noqa: E402
from course_lib.models import load_causal_lm  # noqa: E402

MODES = {"distillation (KL)": True, "cross-entropy only": False}


def ternarize_weights(model: torch.nn.Module) -> torch.nn.Module:
    """Post-training ternarization as notebook 10's section 5 does it: every block Linear's weight replaced by its
    absmean ternary value (gamma * codes), activations left in float, no norm added."""
    with torch.no_grad():
        for block in lm_quant.decoder_blocks(model):
            for module in block.modules():
                if isinstance(module, torch.nn.Linear):
                    module.weight.copy_(bitnet.fake_quant_weight(module.weight))
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ternary_finetune_cpu.md"))
    parser.add_argument("--steps", default="50,100,200,400", help="comma-separated numbers of fine-tuning steps")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from: {', '.join(MODES)}")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-length", type=int, default=128, help="perplexity window (tokens)")
    parser.add_argument("--max-tokens", type=int, default=None, help="evaluation tokens (default: all)")
    args = parser.parse_args()
    steps_list = [int(s) for s in args.steps.split(",")]
    modes = [m.strip() for m in args.modes.split(",")]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; choose from {list(MODES)}")
    torch.manual_seed(args.seed)
    text = corpus_text("eval")
    teacher, tok = load_causal_lm()

    def evaluate(model) -> float:
        return perplexity(model, tok, text, max_length=args.eval_length, max_tokens=args.max_tokens)

    start = time.perf_counter()
    rows = []

    def add(label: str, steps: int, ppl: float, seconds: float | None = None, loss: float | None = None) -> None:
        rows.append({"model": label, "steps": steps, "perplexity": round(ppl, 2),
                     "final train loss": None if loss is None else round(loss, 3),
                     "train s": None if seconds is None else round(seconds, 1)})
        print(f"{label:<50} steps {steps:>4}  perplexity {ppl:9.2f}", flush=True)

    fp_ppl = evaluate(teacher)
    add("fp32 (the course LM)", 0, fp_ppl)
    add("PTQ: ternary weights (absmean), float activations", 0, evaluate(ternarize_weights(copy.deepcopy(teacher))))
    add("BitLinear, quantizers off (added RMSNorms only)", 0,
        evaluate(bitnet.to_bitlinear(copy.deepcopy(teacher), False, False)))
    add("PTQ: BitLinear W1.58 A8, no training", 0, evaluate(bitnet.to_bitlinear(copy.deepcopy(teacher))))
    windows = lm_quant.calibration_ids(tok, n_samples=max(steps_list) * args.batch_size, seq_len=args.seq_len,
                                       seed=args.seed)
    calib_tokens = len(tok(corpus_text("calib"))["input_ids"])
    for mode in modes:
        for steps in steps_list:
            t0 = time.perf_counter()
            student, losses = bitnet.ternary_finetune(teacher, windows, steps, use_teacher=MODES[mode],
                                                      batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                                      progress=False)
            seconds = time.perf_counter() - t0
            tail = losses[-min(10, len(losses)):]
            add(f"fine-tuned BitLinear W1.58 A8, {mode}", steps, evaluate(student), seconds, sum(tail) / len(tail))
    for row in rows:
        row["vs fp32"] = round(row["perplexity"] / fp_ppl, 2)
    total = time.perf_counter() - start
    table = format_table(rows, ["model", "steps", "perplexity", "vs fp32", "final train loss", "train s"])
    print(table)
    threads = torch.get_num_threads()
    machine = f"{cpu_name()} ({os.cpu_count()} cores), {threads} thread{'s' if threads > 1 else ''}"
    setup = (f"fine-tuning: AdamW lr {args.lr:g} (cosine to 0, no weight decay), {args.batch_size} windows of "
             f"{args.seq_len} tokens per step from the calibration split, window seed {args.seed}; every parameter "
             f"trained (latent weights through the STE, embedding, norms); the KL rows use the fp32 model as teacher "
             f"(temperature 1, alpha 1); perplexity on {'all' if args.max_tokens is None else args.max_tokens} "
             f"tokens of the evaluation split in disjoint windows of {args.eval_length}; the calibration split has "
             f"{calib_tokens:,} tokens, so {max(steps_list)} steps read it "
             f"{max(steps_list) * args.batch_size * args.seq_len / calib_tokens:.1f} times over")
    header = (f"# Course LM: ternary fine-tuning (BitLinear W1.58 A8) with distillation from the fp32 model\n\n"
              f"Machine: {machine}; torch {torch.__version__}; code of commit {git_commit()}; {total:.0f} s in all "
              f"(\"train s\": wall time of each run, on a machine shared with other jobs).\n\n"
              f"Command: `python benchmarks/ternary_finetune.py` ({setup}). One seed.\n\n"
              f"\"final train loss\": mean of the last 10 steps' training loss (KL for distillation, cross-entropy "
              f"otherwise: not comparable between the two).\n\n")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + table + "\n")
    meta = {"machine": machine, "torch": torch.__version__, "commit": git_commit(), "seconds": round(total),
            "setup": setup, "seed": args.seed, "lr": args.lr, "batch_size": args.batch_size, "seq_len": args.seq_len,
            "calibration_tokens": calib_tokens, "eval_length": args.eval_length, "max_tokens": args.max_tokens,
            "rows": rows}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"written to {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
