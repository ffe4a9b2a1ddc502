#!/usr/bin/env python
"""Perplexity, size and quantization time of the course LM under every weight-quantization method.

    python benchmarks/quant_methods.py                 # print the table
    python benchmarks/quant_methods.py --out FILE.md   # also write it, with the machine and versions
                                                       # (default file: benchmarks/results/quant_methods_cpu.md)

Methods: RTN (course_lib.lm_quant) and GPTQ (course_lib.gptq, 128 calibration windows of 128 tokens),
plus AWQ (course_lib.awq.quantize_model_awq) and HQQ (course_lib.hqq.quantize_model_hqq) when those
modules exist; each at 4 and 3 bits, per output channel and with groups of 128, through
course_lib.evaluate.quantization_table (a fresh copy of the model per row, perplexity on the
evaluation split). The notebooks show smaller versions of this table within their time budget.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from course_lib.env import cpu_name  # noqa: E402
from course_lib.evaluate import TABLE_SETTINGS, format_table, quantization_table  # noqa: E402
from course_lib.gptq import quantize_model_gptq  # noqa: E402
from course_lib.lm_quant import quantize_model_rtn  # noqa: E402

#: Optional methods: (name, module, function), each fn(model, tokenizer, bits, group_size).
OPTIONAL = (("AWQ", "course_lib.awq", "quantize_model_awq"), ("HQQ", "course_lib.hqq", "quantize_model_hqq"))




def methods(n_samples: int) -> dict:
    table = {
        "RTN": lambda m, tok, bits, group: quantize_model_rtn(m, bits, group),
        "GPTQ": lambda m, tok, bits, group: quantize_model_gptq(m, tok, bits, group, n_samples=n_samples,
                                                                progress=False),
    }
    for name, module, fn in OPTIONAL:
        if importlib.util.find_spec(module) is None:
            continue
        found = getattr(importlib.import_module(module), fn, None)
        if callable(found):
            table[name] = lambda m, tok, bits, group, _fn=found: _fn(m, tok, bits, group)
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quant_methods_cpu.md")
    parser.add_argument("--no-write", action="store_true", help="only print")
    parser.add_argument("--max-tokens", type=int, default=None, help="evaluate on the first N tokens (default: all)")
    parser.add_argument("--n-samples", type=int, default=128, help="GPTQ calibration windows")
    args = parser.parse_args(argv)

    chosen = methods(args.n_samples)
    start = time.perf_counter()
    rows, failed = [], []
    for k, (name, fn) in enumerate(chosen.items()):
        try:  # one method that fails (a module still in progress) must not lose the others' rows
            rows += quantization_table({name: fn}, TABLE_SETTINGS, max_tokens=args.max_tokens, include_fp=k == 0)
        except Exception as exc:  # noqa: BLE001
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
            print(f"{name} failed: {exc}", file=sys.stderr)
    chosen = {name: fn for name, fn in chosen.items() if not any(f.startswith(name + ":") for f in failed)}
    total = time.perf_counter() - start
    table = format_table(rows, ["method", "bits", "group_size", "perplexity", "size_mb", "seconds"])
    machine = (f"{cpu_name()}, {os.cpu_count()} cores visible, torch {torch.__version__} "
               f"({torch.get_num_threads()} threads), Python {platform.python_version()}")
    text = "\n".join([
        "# Weight-only quantization of the course LM",
        "",
        f"Machine: {machine}.",
        f"Methods: {', '.join(chosen)}; GPTQ calibrated on {args.n_samples} windows of 128 tokens from the calib "
        f"split; perplexity on {'all of' if args.max_tokens is None else f'the first {args.max_tokens} tokens of'} "
        f"the eval split; `seconds` is the wall time of the quantization call; `size_mb` counts packed codes plus "
        f"an fp16 scale and zero point per group. Whole run: {total:.0f} s.",
        "",
        "Command: `python benchmarks/quant_methods.py`",
        "",
        table,
        "",
    ] + ([f"Failed: {'; '.join(failed)}", ""] if failed else []))
    print(text)
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
