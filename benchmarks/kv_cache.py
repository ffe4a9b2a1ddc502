#!/usr/bin/env python
"""The course LM's KV cache quantized: quality of every pair of axes at 4 and 2 bits, against the float32 cache.

    python benchmarks/kv_cache.py                 # print the table
    python benchmarks/kv_cache.py --out FILE.md   # also write it (default file: benchmarks/results/kv_cache_cpu.md)

Notebook 13 (section 7) measures a few caches on a little text within its time budget and reads this file for the
fuller study: fp16, int8 per token (``course_lib.kv_cache.Int8KVCache``) and ``QuantizedKVCache`` at 4 and 2 bits
with each of the four pairs (keys per channel or per token) x (values per channel or per token), KIVI's pair (keys
per channel, values per token) first. Groups of 32, recent tokens in float16 until 32 of them can be quantized
together (KIVI's released example: group 32, residual 32), statistics in float16; every forward pass attends with its
own tokens' keys and values unquantized (the prefill too), as KIVI does.

- teacher forcing (``kv_cache.compare_decoding``): ``--stretches`` disjoint stretches of ``--prefill`` +
  ``--decode`` tokens of the eval split, each prefilled with its first ``--prefill`` tokens, then fed its own
  tokens one per step; perplexity of the fed tokens, KL(float32 cache || this cache) per position and the share of
  positions where the greedy choice is the float32 cache's, over all stretches, and the range of the last two over
  the batches of ``--batch`` stretches (to show how much of a difference is noise);
- free-running greedy generation (``kv_cache.greedy_match``): the first ``--prompt`` tokens of the first
  ``--prompts`` stretches, ``--new-tokens`` tokens each; share of tokens equal to the float32 cache's at the same
  position, and the mean number of tokens before the first difference.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# benchmarks/kernels.py would shadow the `kernels` package that transformers probes for: leave this folder out
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

from benchmarks.provenance import git_commit  # noqa: E402
from course_lib import kv_cache  # noqa: E402
from course_lib.data import corpus_text  # noqa: E402
from course_lib.env import cpu_name  # noqa: E402
from course_lib.evaluate import format_table  # noqa: E402
from course_lib.models import load_causal_lm  # noqa: E402

GROUP, RESIDUAL = 32, 32
PAIRS = (("channel", "token"), ("token", "token"), ("channel", "channel"), ("token", "channel"))


def caches() -> dict:
    """The caches measured, by name (the notebook reads these names)."""
    table = {"fp16": lambda: kv_cache.KVCache(torch.float16), "int8 per token": kv_cache.Int8KVCache}
    for bits in (4, 2):
        for key_axis, value_axis in PAIRS:
            name = f"int{bits} K per {key_axis}, V per {value_axis}" + (" (KIVI)" if (key_axis, value_axis) == PAIRS[0]
                                                                         else "")
            table[name] = (lambda b=bits, k=key_axis, v=value_axis:
                           kv_cache.QuantizedKVCache(b, GROUP, RESIDUAL, key_axis=k, value_axis=v))
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "kv_cache_cpu.md")
    parser.add_argument("--no-write", action="store_true", help="only print")
    parser.add_argument("--stretches", type=int, default=32)
    parser.add_argument("--prefill", type=int, default=192)
    parser.add_argument("--decode", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    start = time.perf_counter()
    model, tokenizer = load_causal_lm()
    length = args.prefill + args.decode
    ids = tokenizer(corpus_text("eval"), return_tensors="pt")["input_ids"][0]
    if ids.numel() < args.stretches * length:
        raise SystemExit(f"the eval split has {ids.numel()} tokens, fewer than {args.stretches} x {length}")
    stretches = ids[:args.stretches * length].reshape(args.stretches, length)
    table = caches()

    per_batch = []  # compare_decoding's rows, one list per batch
    for b in range(0, args.stretches, args.batch):
        per_batch.append(kv_cache.compare_decoding(model, stretches[b:b + args.batch], table, args.prefill))
    free = kv_cache.greedy_match(model, stretches[:args.prompts, :args.prompt], table, args.new_tokens)

    rows = []
    for i, name in enumerate(["fp32", *table]):
        runs = [batch[i] for batch in per_batch]
        kl, agree = [r["KL vs fp32"] for r in runs], [r["greedy agreement"] for r in runs]
        rows.append({
            "cache": name, "bytes/token": runs[0]["bytes/token"],
            "perplexity": math.exp(sum(math.log(r["perplexity"]) for r in runs) / len(runs)),
            "KL vs fp32": sum(kl) / len(kl), "KL range over batches": f"{min(kl):.4f}-{max(kl):.4f}",
            "greedy agreement": sum(agree) / len(agree),
            "agreement range": f"{min(agree):.3f}-{max(agree):.3f}",
            "free-running same tokens": free[i - 1]["same tokens"] if i else 1.0,
            "first difference": free[i - 1]["first difference"] if i else float(args.new_tokens),
        })
    total = time.perf_counter() - start
    cfg = model.config
    machine = (f"{cpu_name()}, {os.cpu_count()} cores visible, torch {torch.__version__} "
               f"({torch.get_num_threads()} threads), Python {platform.python_version()}")
    text = "\n".join([
        "# The course LM's KV cache, quantized",
        "",
        f"Machine: {machine}. Code: commit {git_commit()}. Whole run: {total:.0f} s.",
        "",
        f"Model: the course LM ({cfg.num_hidden_layers} layers, {cfg.num_key_value_heads} KV heads of "
        f"{cfg.hidden_size // cfg.num_attention_heads} channels), float32. Text: the first {args.stretches} x "
        f"{length} tokens of the eval split, {args.stretches} stretches, each prefilled with {args.prefill} tokens "
        f"then fed its next {args.decode} tokens one per step ({args.stretches * args.decode} scored positions; "
        f"batches of {args.batch} stretches). Free-running: {args.prompts} prompts of {args.prompt} tokens, "
        f"{args.new_tokens} new tokens each. Quantized caches: groups of {GROUP}, recent tokens in float16 until "
        f"{RESIDUAL} of them are quantized together "
        "(keys and values alike), scales and minimums in float16; each forward pass attends with its own tokens "
        "unquantized; bytes/token over a long context (the recent tokens left out).",
        "",
        "Command: `python benchmarks/kv_cache.py`",
        "",
        format_table(rows),
        "",
    ])
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text + ("" if args.no_write else f"\nwritten to {args.out}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
