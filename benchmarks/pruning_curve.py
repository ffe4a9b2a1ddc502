#!/usr/bin/env python
"""Sparsity against perplexity of the course LM: magnitude vs Wanda vs SparseGPT, unstructured and N:M.

    python benchmarks/pruning_curve.py                 # print the table
    python benchmarks/pruning_curve.py --out FILE.md   # also write it, with the machine and versions
                                                       # (default file: benchmarks/results/pruning_curve_cpu.md)

Every Linear of every block pruned (course_lib.prune.prune_model; embedding and lm_head dense), a fresh copy
of the model per row; Wanda and SparseGPT calibrated block by block on the same 128 windows of 128 tokens
(SparseGPT: blocks of 128 columns, dampening 0.01); perplexity on the evaluation split (--max-tokens, default
all of it). Notebook 12 shows a smaller version within its time budget and prints this table.
"""

from __future__ import annotations

import argparse
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
from course_lib.models import load_causal_lm  # noqa: E402


METHODS = ("magnitude", "wanda", "sparsegpt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pruning_curve_cpu.md"))
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--n-samples", type=int, default=128)
    parser.add_argument("--sparsities", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8")
    args = parser.parse_args()
    text = corpus_text("eval")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sparsities = [float(s) for s in args.sparsities.split(",")]

    def evaluate(model, tok):
        return perplexity(model, tok, text, max_tokens=args.max_tokens)

    model, tok = load_causal_lm(device=device)
    dense = evaluate(model, tok)
    rows = [{"pattern": "dense", "sparsity": 0.0, **{method: dense for method in METHODS}}]
    settings = [(f"{s:.0%} unstructured", s, None) for s in sparsities] + [("2:4", 0.5, (2, 4)), ("4:8", 0.5, (4, 8))]
    start = time.perf_counter()
    for label, s, nm in settings:
        row = {"pattern": label, "sparsity": s}
        for method in METHODS:
            model, tok = load_causal_lm(device=device)
            prune.prune_model(model, tok, s, method, nm=nm, n_samples=args.n_samples)
            row[method] = evaluate(model, tok)
        row["wanda / magnitude"] = row["wanda"] / row["magnitude"]
        row["sparsegpt / wanda"] = row["sparsegpt"] / row["wanda"]
        rows.append(row)
        print(f"{label:<18} " + "  ".join(f"{method} {row[method]:9.2f}" for method in METHODS), flush=True)
    table = format_table(rows, ["pattern", "sparsity", *METHODS, "wanda / magnitude", "sparsegpt / wanda"])
    print(table)
    header = (f"# Course LM: sparsity vs perplexity, magnitude vs Wanda vs SparseGPT\n\n"
              f"{machine_line(device)}; "
              f"perplexity on {'all' if args.max_tokens is None else args.max_tokens} tokens of the evaluation split; "
              f"Wanda and SparseGPT calibrated on the same {args.n_samples} windows of 128 tokens; "
              f"{time.perf_counter() - start:.0f} s for the sweep.\n\n"
              f"Command: `python benchmarks/pruning_curve.py`\n\n"
              "Published reference (Wanda paper, Table 3, Llama-2-7B, WikiText-2, 50% unstructured): dense 5.12, "
              "magnitude 14.89, SparseGPT 6.51, Wanda 6.42 (theirs, not measured here).\n\n")
    write_results(args.out, header + table + "\n")


if __name__ == "__main__":
    main()
