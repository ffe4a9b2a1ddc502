#!/usr/bin/env python
"""Time int8 linear layers against floating point: is LLM.int8() faster than fp32 / fp16 here?

    python benchmarks/int8_speed.py --threads 1 --out benchmarks/results/int8_speed_cpu.md   # the CPU
    python benchmarks/int8_speed.py --device cuda --out FILE.md                              # a GPU

For each layer shape (in_features K -> out_features N) and number of tokens M, one process times, on the same
input, the median of repeated calls (course_lib.evaluate.measure_latency, which synchronizes the GPU; the methods
take turns, one call each per round, so that other jobs on a shared machine slow them alike) of:

- ``fp32``, ``bf16``, ``fp16``: ``torch.nn.functional.linear`` with weight and input in that dtype (on a GPU,
  fp32 without TF32);
- ``int8 GEMM only``: ``torch._int_mm`` on int8 codes prepared beforehand (no quantization, no dequantization:
  the LLM.int8() paper's "Int8 without overhead" row; PyTorch's kernel, which bitsandbytes 0.50.2 also calls on
  AVX-512 CPUs; on a GPU it needs M > 16);
- ``bnb Linear8bitLt``: bitsandbytes' LLM.int8() layer (threshold 6.0, int8 weights only, float16 input);
- ``course Int8Linear llm.int8`` and ``course Int8Linear vectorwise`` (CPU only): ``course_lib.llm_int8.Int8Linear``
  (float32 input), the course's reference implementation, written for reading rather than for speed (on the CPU
  its integer products go through a float32 GEMM that gives the int32 results exactly, for K <= 1024; beyond, they
  go through PyTorch's int32 matmul, which takes minutes at these sizes, so those shapes are not timed).

The input holds 4 outlier columns (values 50 times the rest, as notebook 06 grows them), so the LLM.int8() layers
send 4 columns through floating point. Speeds are reported relative to fp32 (above 1: faster).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.provenance import git_commit  # noqa: E402
import course_lib  # noqa: E402,F401  (silences bitsandbytes' import warning)
from course_lib.env import cpu_name  # noqa: E402
from course_lib.evaluate import measure_latency  # noqa: E402
from course_lib.llm_int8 import FLOAT32_EXACT_INNER_DIM, Int8Linear, vectorwise_quant  # noqa: E402

#: (K, N): the course LM's gate_proj, MiniLM's feed-forward, the first feed-forward layer of GPT-3 XL and of a
#: 4096-wide model (model dimension d -> 4d, the layer of the LLM.int8() paper's Table 5).
SHAPES = ((256, 384), (384, 1536), (2048, 8192), (4096, 16384))
TOKENS = (1, 16, 256)
GPU_TOKENS = (1, 16, 256, 2048)
OUTLIER_COLUMNS, OUTLIER_SCALE = (1, 7, 11, 13), 50.0


def _methods(k: int, n: int, m: int, bnb, device: str) -> dict:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(n, k, generator=gen) * k**-0.5
    x = torch.randn(m, k, generator=gen)
    x[:, list(OUTLIER_COLUMNS)] *= OUTLIER_SCALE
    linear = torch.nn.Linear(k, n, bias=False)
    with torch.no_grad():
        linear.weight.copy_(w)
    codes_x, _ = vectorwise_quant(x)
    codes_w, _ = vectorwise_quant(w)
    x, w, codes_x, codes_w = (t.to(device) for t in (x, w, codes_x, codes_w))
    methods = {"fp32": (torch.nn.functional.linear, x, w)}
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        methods[name] = (torch.nn.functional.linear, x.to(dtype), w.to(dtype))
    methods["int8 GEMM only"] = (torch._int_mm, codes_x, codes_w.T)
    if bnb is not None:
        layer = bnb.nn.Linear8bitLt(k, n, bias=False, has_fp16_weights=False, threshold=6.0)
        layer.load_state_dict(linear.state_dict())
        layer = layer.to(device).eval()
        methods["bnb Linear8bitLt"] = (layer, x.half())
    if device == "cpu" and k <= FLOAT32_EXACT_INNER_DIM:
        methods["course Int8Linear llm.int8"] = (Int8Linear.from_linear(linear), x)
        methods["course Int8Linear vectorwise"] = (Int8Linear.from_linear(linear, mode="vectorwise"), x)
    return methods


def run(shapes, tokens, repeats: int, device: str = "cpu") -> list[dict]:
    """Every method of a (shape, tokens) cell timed in turns, one call each per round (a machine shared with other
    jobs then slows every method alike), after 2 warm-up calls; the median of ``repeats`` rounds."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        bnb = None
    rows = []
    for k, n in shapes:
        for m in tokens:
            methods = {}
            with torch.inference_mode():
                for name, (fn, *args) in _methods(k, n, m, bnb, device).items():
                    try:
                        measure_latency(fn, *args, warmup=2, repeats=1)
                        methods[name] = (fn, args)
                    except RuntimeError as error:  # e.g. torch._int_mm on a GPU with M <= 16
                        print(f"{k}x{n} M={m} {name}: not timed ({str(error).splitlines()[0]})", file=sys.stderr)
                times = {name: [] for name in methods}
                for _ in range(repeats):
                    for name, (fn, args) in methods.items():
                        times[name].append(measure_latency(fn, *args, warmup=0, repeats=1)["median"])
            fp32 = statistics.median(times["fp32"])
            for name, ts in times.items():
                t = statistics.median(ts)
                rows.append({"shape": f"{k}->{n}", "tokens": m, "method": name, "ms": t * 1e3, "vs_fp32": fp32 / t})
                print(f"{k:>5}->{n:<6} M={m:<4} {name:<30} {t * 1e3:9.3f} ms  {fp32 / t:5.2f}x fp32", flush=True)
    return rows


def _machine(device: str) -> str:
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        return (f"GPU: {p.name}, {p.multi_processor_count} SMs, torch {torch.__version__}, CUDA {torch.version.cuda}, "
                f"fp32 without TF32")
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next((line for line in f if line.startswith("flags")), ":").split(":", 1)[1].split())
    except OSError:
        pass
    matrix = [f for f in ("avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8") if f in flags]
    matrix_flags = " ".join(matrix) or "none of avx512_vnni, avx512_bf16, avx512_fp16, amx_bf16, amx_int8"
    return (f"CPU: {cpu_name()}, {os.cpu_count()} cores visible, flags {matrix_flags}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()})")


def markdown(rows: list[dict], seconds: float, repeats: int, device: str, command: str) -> str:
    import bitsandbytes

    methods = list(dict.fromkeys(r["method"] for r in rows))
    keys = list(dict.fromkeys((r["shape"], r["tokens"]) for r in rows))
    table = {(r["shape"], r["tokens"], r["method"]): r for r in rows}
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?", "?", "?")
    lines = [
        f"# int8 linear layers against floating point ({'GPU' if device == 'cuda' else 'CPU'})",
        "",
        f"{_machine(device)}; bitsandbytes {bitsandbytes.__version__}, Python {platform.python_version()}; course_lib of "
        f"commit {git_commit()}; {time.strftime('%Y-%m-%d')}; host load average {load[0]:.1f} at the end; whole run "
        f"{seconds:.0f} s.",
        "",
        f"Command: `{command}`. Median of {repeats} "
        "rounds after 2 warm-up calls; in each round every method runs once, in turn, on the same input (M tokens x K "
        f"features with {len(OUTLIER_COLUMNS)} outlier columns). Each cell: milliseconds, and in brackets the speed "
        "relative to fp32 (above 1: faster than fp32).",
        "",
        "| K -> N | tokens | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for shape, m in keys:
        cells = []
        for method in methods:
            r = table.get((shape, m, method))
            cells.append("-" if r is None else f"{r['ms']:.3g} ({r['vs_fp32']:.2f}x)")
        lines.append(f"| {shape} | {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="also write the table (markdown) to this file")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--quick", action="store_true", help="the two smallest shapes only")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    start = time.perf_counter()
    rows = run(SHAPES[:2] if args.quick else SHAPES, GPU_TOKENS if args.device == "cuda" else TOKENS, args.repeats,
               args.device)
    command = "python benchmarks/int8_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = markdown(rows, time.perf_counter() - start, args.repeats, args.device, command.strip())
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
