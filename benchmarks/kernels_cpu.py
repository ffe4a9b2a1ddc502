#!/usr/bin/env python
"""Time course_lib.kernels' C++ extension against the PyTorch reference on this machine's CPU.

    python benchmarks/kernels_cpu.py                # table to stdout
    python benchmarks/kernels_cpu.py --out FILE.md  # also write it, with the machine and versions

Both forms run in one process on the same inputs, one after the other, median of repeated calls
(course_lib.evaluate.measure_latency). The reference decodes the whole weight matrix to float32
with tensor operations and then calls torch's matmul; the C++ form decodes in a per-row buffer
and multiplies as it goes, on torch's own thread pool.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from course_lib.env import cpu_name  # noqa: E402
from course_lib import kernels as K  # noqa: E402
from course_lib.bitnet import pack_ternary  # noqa: E402
from course_lib.evaluate import measure_latency  # noqa: E402
from course_lib.nf4 import quantize_nf4  # noqa: E402




def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--size", type=int, default=4096, help="N = K of the weight matrix")
    args = parser.parse_args(argv)
    K.load_extension("cpp")
    n = k = args.size
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(n, k, generator=gen) * 0.02
    packed, absmax = quantize_nf4(w, 64)
    p4, s4, z4 = K.pack_int4(w, 128)
    tern = pack_ternary(torch.randint(-1, 2, (n, k), generator=gen))
    x_rows = torch.randn(256, k, generator=gen)
    cases = {
        "int8 rows 256x%d" % k: lambda b: K.quantize_rows_int8(x_rows, backend=b),
        "NF4 dequantize": lambda b: K.dequantize_nf4(packed, absmax, (n, k), backend=b),
        "int4 dequantize": lambda b: K.dequantize_int4(p4, s4, z4, 128, backend=b),
    }
    for batch in (1, 4):
        x = torch.randn(batch, k, generator=gen)
        cases[f"NF4 GEMV batch {batch}"] = lambda b, x=x: K.gemv_nf4(x, packed, absmax, n, backend=b)
        cases[f"int4 GEMV batch {batch}"] = lambda b, x=x: K.gemv_int4(x, p4, s4, z4, 128, backend=b)
        cases[f"ternary GEMV batch {batch}"] = lambda b, x=x: K.gemv_ternary(x, tern, 0.1, backend=b)
    lines = [
        f"- CPU: {cpu_name()}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}; "
        f"torch {torch.__version__}; weight {n}x{k}",
        "",
        "| operation | PyTorch reference ms | C++ extension ms | speed-up |",
        "|---|---|---|---|",
    ]
    for name, fn in cases.items():
        ref = measure_latency(fn, "torch", warmup=1, repeats=5)["median"]
        cpp = measure_latency(fn, "cpp", warmup=1, repeats=5)["median"]
        lines.append(f"| {name} | {ref * 1e3:.2f} | {cpp * 1e3:.2f} | {ref / cpp:.1f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
