#!/usr/bin/env python
"""Build, validate and time course_lib.kernels' CUDA kernels next to cuBLAS fp16 and bitsandbytes.

    python benchmarks/kernels.py                 # full table (GPU machine), markdown to stdout
    python benchmarks/kernels.py --out FILE.md   # also write the table with the machine and versions
    python benchmarks/kernels.py --quick         # one shape, for a smoke test
    python benchmarks/kernels.py --sweep / --floor / --profile   # the experiments (benchmarks/csrc/, sm_90)
    python benchmarks/kernels.py --sweep-v10     # v10's configurations next to cuBLAS, v7, v8 (any sm_80+ GPU)

Method: every contender runs on the same shapes and the same weights (NF4 via course_lib.nf4, which
is byte-identical to bitsandbytes' quantize_4bit). Each timing replays a CUDA graph of R calls, each
on a different copy of the weights (R chosen so the copies exceed 4x the L2 cache, so no call finds
its weights in L2), timed with CUDA events; the median over repeats, divided by R, is reported.
Graphs remove the Python launch overhead, which would otherwise dominate a 10-40 us kernel; where a
contender cannot be captured it is timed eagerly (column "mode"). Bandwidth = bytes that must be
read once (weights, scales, activations) and written (output) / time; "% copy" compares it with the
measured device-to-device copy bandwidth (bytes read + written / time).

"ours" rows call the custom ops (torch.ops.course_lib.*) with an explicit version: the kernels themselves.
The "public API" table times what a user calls, course_lib.kernels.gemv_nf4 with its argument checks and
default version, inside a CUDA graph (it must be within 5% of the op in a graph) and eagerly (it must be
no slower than bitsandbytes' eager call), side by side in this process.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import course_lib  # noqa: E402,F401  (silences bitsandbytes' import warning)
from benchmarks.provenance import git_commit  # noqa: E402
from course_lib import kernels as K  # noqa: E402
from course_lib.bitnet import pack_ternary  # noqa: E402
from course_lib.nf4 import quantize_nf4  # noqa: E402

OPS = torch.ops.course_lib

# (N = out_features, K = in_features): Llama-3-8B's and Llama-2-7B's projections, and a square 8192
SHAPES = [(4096, 4096), (8192, 8192), (14336, 4096), (4096, 14336), (11008, 4096), (4096, 11008)]
BATCHES = [1, 4, 16]
PUBLIC_GRAPH_TOLERANCE = 1.05  # the public function in a graph: at most 5% over the op in a graph


def load_experiments(verbose: bool = False):
    """Build (first time) or load benchmarks/csrc/kernel_experiments.cu: v8's sweep configurations, the
    bulk-copy kernel and the read-floor probe (sm_90 only; the learner's build does not include them)."""
    from torch.utils import cpp_extension

    if torch.cuda.get_device_capability() < (9, 0):
        raise RuntimeError("the kernel experiments (bulk copy, programmatic dependent launch) need an sm_90 GPU")
    K.load_extension("cuda")  # the course's ops, which the experiments are compared with
    src = ROOT / "benchmarks" / "csrc" / "kernel_experiments.cu"
    build = K.cache_dir() / "benchmarks" / f"torch{torch.__version__}".replace("+", "_")
    build.mkdir(parents=True, exist_ok=True)
    # arch.cu: the product's v8 launch asks which architecture's code runs (course_kernels::current_arch).
    # The namespace is renamed here: with the course's extension loaded in the same process, a template
    # instance both libraries hold (launch_v8<__half, 1, 4, 2, 1>) would otherwise resolve to the course's copy,
    # whose kernel this library never registered ("invalid argument" at its launch).
    sources = [str(src), str(K.CSRC / "arch.cu")]
    rename = "-Dcourse_kernels=course_kernels_experiments"
    return cpp_extension.load(name="course_kernel_experiments", sources=sources, build_directory=str(build),
                              extra_include_paths=[str(K.CSRC)], extra_cflags=[rename],
                              extra_cuda_cflags=["-O3", "-lineinfo", rename], verbose=verbose)


def copy_bandwidth(nbytes: int = 1 << 30, repeats: int = 20) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read + written."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src)
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    del src, dst
    return 2 * nbytes / statistics.median(times)


def time_calls(calls, repeats: int = 30, eager: bool = False) -> tuple[float, str]:
    """Median seconds per call of a list of zero-argument callables (one per weight copy); in a CUDA graph
    unless ``eager`` or the calls cannot be captured."""
    for fn in calls:  # warm-up (also builds lazy state)
        fn()
    torch.cuda.synchronize()
    mode = "graph"
    try:
        if eager:
            raise RuntimeError("eager timing asked for")
        graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for fn in calls:
                fn()
            torch.cuda.synchronize()
            with torch.cuda.graph(graph, stream=stream):
                for fn in calls:
                    fn()
        torch.cuda.current_stream().wait_stream(stream)
        run = graph.replay
        run()
    except Exception:  # not capturable: eager back-to-back calls
        mode = "eager"
        torch.cuda.synchronize()

        def run():
            for fn in calls:
                fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        run()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1e3 / len(calls))
    return statistics.median(times), mode


def time_after_writer(calls, x: torch.Tensor) -> float:
    """Median seconds per call when each call follows a kernel that writes its input x (x.mul_(1.0), exact),
    as a GEMV follows a norm in a decoder. time_calls runs the same kernel back to back, so a kernel launched
    with programmatic dependent launch overlaps its own previous launch there; here the kernel before it is
    an ordinary one, and the writer's own time (measured alone) is subtracted."""
    def writer():
        x.mul_(1.0)
    alone, _ = time_calls([writer] * len(calls))
    pair, _ = time_calls([lambda fn=fn: (writer(), fn()) for fn in calls])
    return pair - alone


def copies_for(nbytes: int) -> int:
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    return max(2, min(64, math.ceil(4 * l2 / max(nbytes, 1))))


def validate(dtype=torch.float16) -> list[str]:
    """Each CUDA kernel against the reference on a few shapes; returns failure messages."""
    failures = []
    gen = torch.Generator().manual_seed(0)
    for n, k in [(256, 512), (4096, 4096), (37, 128), (8192, 1024)]:  # 8192 rows: v8 and v9 at batch 1 prefetch x
        w = torch.randn(n, k, generator=gen) * 0.02
        packed, absmax = (t.cuda() for t in quantize_nf4(w, 64))
        p4, s4, z4 = (t.cuda() for t in K.pack_int4(w, 128 if k % 128 == 0 else 32))
        g4 = 128 if k % 128 == 0 else 32
        t = pack_ternary(torch.randint(-1, 2, (n, k), generator=gen)).cuda()
        for b in (1, 3, 16):
            x = torch.randn(b, k, generator=gen).to(dtype).cuda()
            nf4_ref = K.gemv_nf4(x, packed, absmax, n, backend="torch")
            checks = {f"nf4 v{v}": (K.gemv_nf4(x, packed, absmax, n, backend="cuda", version=v), nf4_ref)
                      for v in (1, 3, 4, 5, 6, 7, 8, 9, 10) + ((2,) if b == 1 else ())}
            checks["nf4 default"] = (K.gemv_nf4(x, packed, absmax, n, backend="cuda"), nf4_ref)
            checks.update({
                "int4": (K.gemv_int4(x, p4, s4, z4, g4, backend="cuda"), K.gemv_int4(x, p4, s4, z4, g4, backend="torch")),
                "ternary": (K.gemv_ternary(x, t, 0.1, backend="cuda"), K.gemv_ternary(x, t, 0.1, backend="torch")),
            })
            for name, (out, ref) in checks.items():
                err = (out.float() - ref.float()).abs().max().item()
                scale = ref.float().abs().max().item() + 1e-6
                if not err <= 2e-2 * scale + 1e-3:
                    failures.append(f"{name} n={n} k={k} b={b}: max error {err:.3g} (output scale {scale:.3g})")
        xq = torch.randn(64, k, generator=gen).to(dtype).cuda()
        q, a = K.quantize_rows_int8(xq, backend="cuda")
        qr, ar = K.quantize_rows_int8(xq, backend="torch")
        if not (torch.equal(q, qr) and torch.equal(a, ar)):
            failures.append(f"int8 rows k={k}: {(q != qr).sum().item()} codes differ")
    return failures


# also timed after a writer of x
AFTER_WRITER = ("cuBLAS fp16", "ours NF4 default", "ours NF4 v8 byte-table", "ours NF4 v9 early weights",
                "bitsandbytes NF4")


def bench_gemv(bnb, copy_bw: float, shapes, batches, dtype=torch.float16) -> list[dict]:
    rows = []
    for n, k in shapes:
        w = torch.randn(n, k, device="cuda", dtype=dtype) * 0.02
        nf4_bytes = n * k // 2 + (n * k // 64) * 4
        fp16_bytes = n * k * 2
        int4_bytes = n * k // 2 + (n * k // 128) * 5
        tern_bytes = n * k // 4
        r_fp16, r_nf4 = copies_for(fp16_bytes), copies_for(nf4_bytes)
        fp16_ws = [w.clone() for _ in range(r_fp16)]
        packed, absmax = quantize_nf4(w.float(), 64)
        nf4_ws = [(packed.clone(), absmax.clone()) for _ in range(r_nf4)]
        p4, s4, z4 = K.pack_int4(w.float(), 128)
        int4_ws = [(p4.clone(), s4.clone(), z4.clone()) for _ in range(r_nf4)]
        tern = pack_ternary(torch.randint(-1, 2, (n, k), device="cuda"))
        tern_ws = [tern.clone() for _ in range(copies_for(tern_bytes))]
        bnb_ws = []
        if bnb is not None:
            for _ in range(r_nf4):
                qw, state = bnb.functional.quantize_4bit(w, blocksize=64, quant_type="nf4")
                bnb_ws.append((qw, state))
        del w
        for b in batches:
            x = torch.randn(b, k, device="cuda", dtype=dtype)
            io = b * k * 2 + b * n * 2
            contenders = {
                "cuBLAS fp16": (fp16_bytes, [lambda w=w: x @ w.t() for w in fp16_ws]),
                # what gemv_nf4 runs when no version is given (the op's dispatch for this GPU, shape and batch)
                "ours NF4 default": (nf4_bytes, [lambda p=p, a=a: OPS.gemv_nf4(x, p, a, n, 64, 0) for p, a in nf4_ws]),
                "ours NF4 v10 tc": (nf4_bytes, [lambda p=p, a=a: OPS.gemv_nf4(x, p, a, n, 64, 10) for p, a in nf4_ws]),
                "ours NF4 v8 byte-table": (nf4_bytes, [lambda p=p, a=a: OPS.gemv_nf4(x, p, a, n, 64, 8) for p, a in nf4_ws]),
                "ours NF4 v7 mma": (nf4_bytes, [lambda p=p, a=a: OPS.gemv_nf4(x, p, a, n, 64, 7) for p, a in nf4_ws]),
                "ours NF4 v6 persistent": (nf4_bytes, [lambda p=p, a=a: OPS.gemv_nf4(x, p, a, n, 64, 6) for p, a in nf4_ws]),
                "ours NF4 v4 block": (nf4_bytes, [lambda p=p, a=a: OPS.gemv_nf4(x, p, a, n, 64, 4) for p, a in nf4_ws]),
                "ours NF4 v5 block8": (nf4_bytes, [lambda p=p, a=a: OPS.gemv_nf4(x, p, a, n, 64, 5) for p, a in nf4_ws]),
                "ours NF4 v3 fused": (nf4_bytes, [lambda p=p, a=a: OPS.gemv_nf4(x, p, a, n, 64, 3) for p, a in nf4_ws]),
                "ours int4 g128 v6": (int4_bytes, [lambda p=p, s=s, z=z: OPS.gemv_int4(x, p, s, z, 128, 6) for p, s, z in int4_ws]),
                "ours int4 g128 v4": (int4_bytes, [lambda p=p, s=s, z=z: OPS.gemv_int4(x, p, s, z, 128, 4) for p, s, z in int4_ws]),
                "ours ternary": (tern_bytes, [lambda t=t: OPS.gemv_ternary(x, t, 0.1) for t in tern_ws]),
            }
            if b == 1:
                contenders["ours NF4 v9 early weights"] = (nf4_bytes, [lambda p=p, a=a: OPS.gemv_nf4(x, p, a, n, 64, 9) for p, a in nf4_ws])
                contenders["ours NF4 v2 warp"] = (nf4_bytes, [lambda p=p, a=a: OPS.gemv_nf4(x, p, a, n, 64, 2) for p, a in nf4_ws])
                if n * k <= 4096 * 4096:
                    contenders["ours NF4 v1 naive"] = (nf4_bytes, [lambda p=p, a=a: OPS.gemv_nf4(x, p, a, n, 64, 1) for p, a in nf4_ws[:2]])
            if bnb_ws:
                contenders["bitsandbytes NF4"] = (nf4_bytes, [lambda q=q, st=st: bnb.matmul_4bit(x, q.t(), quant_state=st) for q, st in bnb_ws])
            fp16_time = None
            for name, (wbytes, calls) in contenders.items():
                try:
                    seconds, mode = time_calls(calls)
                except Exception as exc:  # report, keep going
                    rows.append({"shape": f"{n}x{k}", "batch": b, "kernel": name, "error": str(exc)[:80]})
                    continue
                if name == "cuBLAS fp16":
                    fp16_time = seconds
                bw = (wbytes + io) / seconds
                after = time_after_writer(calls, x) * 1e6 if b == 1 and name in AFTER_WRITER else None
                rows.append({"shape": f"{n}x{k}", "batch": b, "kernel": name, "us": seconds * 1e6,
                             "after writer us": after,
                             "GB/s": bw / 1e9, "% copy": 100 * bw / copy_bw, "floor us": (wbytes + io) / copy_bw * 1e6,
                             "vs fp16": (fp16_time / seconds) if fp16_time else None, "mode": mode})
        del fp16_ws, nf4_ws, int4_ws, tern_ws, bnb_ws
        torch.cuda.empty_cache()
    return rows


def bench_public_api(bnb, shapes, dtype=torch.float16) -> tuple[list[dict], list[str]]:
    """Batch 1: course_lib.kernels.gemv_nf4 (what a user calls: checks, default version) against the op it calls,
    both in a CUDA graph, and eagerly against bitsandbytes' eager call. Returns rows and target failures."""
    rows, failures = [], []
    for n, k in shapes:
        w = torch.randn(n, k, device="cuda", dtype=dtype) * 0.02
        packed, absmax = quantize_nf4(w.float(), 64)
        r = copies_for(n * k // 2 + n * k // 16)
        nf4_ws = [(packed.clone(), absmax.clone()) for _ in range(r)]
        bnb_ws = [bnb.functional.quantize_4bit(w, blocksize=64, quant_type="nf4") for _ in range(r)] if bnb else []
        del w
        x = torch.randn(1, k, device="cuda", dtype=dtype)
        op_calls = [lambda p=p, a=a: OPS.gemv_nf4(x, p, a, n, 64, 0) for p, a in nf4_ws]
        public_calls = [lambda p=p, a=a: K.gemv_nf4(x, p, a, n) for p, a in nf4_ws]
        if not torch.equal(public_calls[0](), op_calls[0]()):
            failures.append(f"{n}x{k}: the public function and the op disagree")
        op_graph, _ = time_calls(op_calls)
        public_graph, mode = time_calls(public_calls)
        public_eager, _ = time_calls(public_calls, eager=True)
        row = {"shape": f"{n}x{k}", "op, graph us": op_graph * 1e6, "public, graph us": public_graph * 1e6,
               "public / op (graph)": public_graph / op_graph, "public, eager us": public_eager * 1e6,
               "bitsandbytes, eager us": None, "public / bitsandbytes (eager)": None}
        if mode != "graph":
            failures.append(f"{n}x{k}: the public function could not be captured in a CUDA graph")
        elif public_graph > PUBLIC_GRAPH_TOLERANCE * op_graph:
            failures.append(f"{n}x{k}: public function in a graph {public_graph / op_graph:.3f}x the op's time")
        if bnb_ws:
            bnb_eager, _ = time_calls([lambda q=q, st=st: bnb.matmul_4bit(x, q.t(), quant_state=st)
                                       for q, st in bnb_ws], eager=True)
            row["bitsandbytes, eager us"] = bnb_eager * 1e6
            row["public / bitsandbytes (eager)"] = public_eager / bnb_eager
            if public_eager > bnb_eager:
                failures.append(f"{n}x{k}: public function eager {public_eager * 1e6:.1f} us > bitsandbytes' "
                                f"{bnb_eager * 1e6:.1f} us")
        rows.append(row)
        print(row, flush=True)
        del nf4_ws, bnb_ws
        torch.cuda.empty_cache()
    return rows, failures


def public_markdown(rows: list[dict]) -> str:
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join("-" if r[c] is None else f"{r[c]:.2f}x" if "/" in c else
                                     f"{r[c]:.1f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    return "\n".join(out)


def bench_int8_rows(copy_bw: float, dtype=torch.float16) -> list[dict]:
    rows = []
    for m, k in [(4096, 4096), (8192, 8192), (16, 8192)]:
        nbytes = m * k * 2 + m * k + m * 4
        xs = [torch.randn(m, k, device="cuda", dtype=dtype) for _ in range(copies_for(nbytes))]
        # the reference as a user calls it (its NaN check synchronizes, so it runs eagerly)
        for name, fn in {"ours int8 rows": lambda x: OPS.quantize_rows_int8(x),
                         "torch reference": lambda x: K.quantize_rows_int8(x, backend="torch")}.items():
            seconds, mode = time_calls([lambda x=x: fn(x) for x in xs], eager=name == "torch reference")
            bw = nbytes / seconds
            rows.append({"shape": f"{m}x{k}", "batch": m, "kernel": name, "us": seconds * 1e6, "GB/s": bw / 1e9,
                         "% copy": 100 * bw / copy_bw, "floor us": nbytes / copy_bw * 1e6, "vs fp16": None, "mode": mode})
        del xs
    return rows


V8_VARIANTS = {0: "R4 U1 no_allocate", 1: "R4 U1 ldg", 2: "R4 U1 ldcs", 3: "R4 U1 no_allocate+L2::256B",
               4: "R4 U2 no_allocate", 5: "R2 U1 no_allocate", 6: "R2 U2 no_allocate", 7: "R8 U1 no_allocate",
               8: "R2 U4 no_allocate", 9: "R1 U4 no_allocate", 10: "bulk (cp.async.bulk 8-row tiles, 4 stages)",
               11: "bulk, 2 stages", 12: "R4 U1 x prefetched", 13: "R4 U2 x prefetched",
               14: "R4 U2 PDL (waits before any read)", 15: "R4 U2 PDL (first weights before the wait)",
               16: "R4 U1 x prefetched + PDL (first weights before the wait)", 17: "R8 U1 x prefetched",
               18: "R2 U1 x prefetched", 19: "R4 U1 x prefetched + PDL (waits before any read)",
               20: "R8 U1 x prefetched + PDL (waits before any read)",
               21: "R2 U1 x prefetched + PDL (waits before any read)", 22: "R4 U1 PDL (waits before any read)",
               23: "R4 U1 x prefetched + PDL (first weights before the wait), 3 blocks per SM in registers",
               24: "R4 U1 x prefetched, 3 blocks per SM in registers",
               25: "R8 U1 x prefetched + PDL (first weights before the wait), 2 blocks per SM in registers",
               26: "R4 U1 PDL (waits before any read), registers free (min blocks 1)",
               27: "R4 U1 no_allocate, registers free (min blocks 1)",
               28: "R8 U1 PDL (waits before any read), registers free (min blocks 1)"}


def sweep_v8(exp, shapes=SHAPES) -> str:
    """v8's configurations (rows per warp R, steps in flight U, weight load kind) against v4; markdown."""
    lines = ["| shape | batch | dtype | kernel | us | us after a writer of x | rel. error |",
             "|---|---|---|---|---|---|---|"]
    for n, k in shapes:
        w = torch.randn(n, k, device="cuda") * 0.02
        packed, absmax = quantize_nf4(w, 64)
        wref = K.dequantize_nf4(packed, absmax, (n, k), 64, backend="torch")
        ws = [(packed.clone(), absmax.clone()) for _ in range(copies_for(n * k // 2 + n * k // 16))]
        del w
        for dtype in (torch.float16, torch.bfloat16):
            for b in (1, 2, 3, 4):
                x = torch.randn(b, k, device="cuda").to(dtype)
                ref = (x.float() @ wref.T)
                cands = {"v4": lambda p, a: OPS.gemv_nf4(x, p, a, n, 64, 4),
                         "v8 default": lambda p, a: OPS.gemv_nf4(x, p, a, n, 64, 8)}
                if b == 1 and dtype == torch.float16:
                    for v, name in V8_VARIANTS.items():
                        cands[f"v8 {name}"] = lambda p, a, v=v: exp.gemv_nf4_v8_variant(x, p, a, n, 64, v)
                for name, fn in cands.items():
                    out = fn(*ws[0]).float()
                    err = ((out - ref).norm() / ref.norm()).item()
                    if not err < 5e-3:  # fp16 output rounding alone gives ~5e-4
                        raise RuntimeError(f"v8 sweep: {name} on {n}x{k} batch {b} {dtype}: relative error {err:.2e}")
                    calls = [lambda p=p, a=a, fn=fn: fn(p, a) for p, a in ws]
                    seconds, _ = time_calls(calls)
                    after = time_after_writer(calls, x)
                    lines.append(f"| {n}x{k} | {b} | {str(dtype)[6:]} | {name} | {seconds * 1e6:.1f} | "
                                 f"{after * 1e6:.1f} | {err:.1e} |")
                    print(lines[-1], flush=True)
        del ws, wref
        torch.cuda.empty_cache()
    return "\n".join(lines)


# v10's development configurations (torch.ops.course_lib.gemv_nf4_v10_config; float16): NT n-tiles of 8 batch rows,
# TB 16-row tiles per block, D weight slots in flight per lane, "minb2": __launch_bounds__ asks for 2 blocks per SM
# (at most 128 registers), "pdl": programmatic dependent launch (sm_90; the table is built while the previous kernel
# ends), "pfP": an L2 prefetch of the weights P items ahead. Keys: (config, warps per block: 8 unless named, at most one per 128-wide chunk of K).
V10_CONFIGS = {(0, 8): "NT1 TB2 D2", (0, 4): "NT1 TB2 D2, 4 warps", (1, 8): "NT1 TB4 D2",
               (1, 4): "NT1 TB4 D2, 4 warps", (2, 8): "NT1 TB8 D2", (3, 16): "NT1 TB2 D2, 16 warps",
               (4, 8): "NT1 TB2 D2 pf4", (4, 4): "NT1 TB2 D2 pf4, 4 warps", (5, 8): "NT1 TB4 D2 pf4",
               (11, 8): "NT1 TB2 D2 pdl",
               (6, 8): "NT2 TB2 D2", (6, 4): "NT2 TB2 D2, 4 warps", (7, 8): "NT2 TB4 D2 minb2",
               (7, 4): "NT2 TB4 D2 minb2, 4 warps", (8, 8): "NT2 TB8 D2", (9, 16): "NT2 TB2 D2, 16 warps",
               (10, 8): "NT2 TB2 D2 pf4", (10, 4): "NT2 TB2 D2 pf4, 4 warps", (12, 8): "NT2 TB2 D2 pdl"}
V10_SHAPES = SHAPES
V10_BATCHES = (1, 2, 4, 8, 16)
V10_BF16_BATCHES = (1, 2, 4)  # bf16: v4 and v8 (the default without tensor cores), v10 and the default
V10_MAX_ERROR = 5e-3  # relative error against the fp32 reference (fp16 output rounding alone gives ~5e-4)


def sweep_v10(shapes=V10_SHAPES, batches=V10_BATCHES, configs: bool = True) -> tuple[str, str, list[str]]:
    """v10 (default and each development configuration) next to cuBLAS fp16, v7 and v8, fp16, in one process.

    Every configuration is first checked against the fp32 reference on the same inputs (relative error below
    V10_MAX_ERROR, all outputs finite); one that fails is reported and not timed. Returns (the full table, a summary
    with the ratios, failure messages)."""
    lines = ["| shape | batch | kernel | us | vs cuBLAS fp16 | vs v7 | rel. error |", "|---|---|---|---|---|---|---|"]
    summary = ["| shape | batch | cuBLAS fp16 us | v7 us | v8 us | default us | v10 us | best v10 configuration | "
               "best us | default / cuBLAS | v10 / cuBLAS | best / cuBLAS | v10 / v7 |",
               "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    failures = []
    for n, k in shapes:
        w = torch.randn(n, k, device="cuda") * 0.02
        packed, absmax = quantize_nf4(w, 64)
        wref = K.dequantize_nf4(packed, absmax, (n, k), 64, backend="torch")
        nf4_ws = [(packed.clone(), absmax.clone()) for _ in range(copies_for(n * k // 2 + n * k // 16))]
        fp16_ws = [w.half() for _ in range(copies_for(n * k * 2))]
        del w
        for b in batches:
            x = torch.randn(b, k, device="cuda").half()
            ref = x.float() @ wref.T
            cands = {"cuBLAS fp16": (lambda p, a, w: x @ w.t(), "fp16"),
                     "v7": (lambda p, a, w: OPS.gemv_nf4(x, p, a, n, 64, 7), "nf4"),
                     "default": (lambda p, a, w: OPS.gemv_nf4(x, p, a, n, 64, 0), "nf4"),
                     "v10": (lambda p, a, w: OPS.gemv_nf4(x, p, a, n, 64, 10), "nf4")}
            if b <= 4:
                cands["v8"] = (lambda p, a, w: OPS.gemv_nf4(x, p, a, n, 64, 8), "nf4")
            if configs:
                for (cfg, warps), name in V10_CONFIGS.items():
                    if (name.startswith("NT1") and b <= 8) or (name.startswith("NT2") and b >= 8):
                        cands[f"v10 {name}"] = (lambda p, a, w, cfg=cfg, warps=warps:
                                                OPS.gemv_nf4_v10_config(x, p, a, n, 64, cfg, warps), "nf4")
            times = {}
            for name, (fn, kind) in cands.items():
                out = fn(*nf4_ws[0], fp16_ws[0]).float()
                err = ((out - ref).norm() / ref.norm()).item()
                if not (bool(torch.isfinite(out).all()) and err < V10_MAX_ERROR):
                    if kind == "nf4":
                        failures.append(f"{name} {n}x{k} batch {b}: relative error {err:.2e}")
                        lines.append(f"| {n}x{k} | {b} | {name} | FAILED | - | - | {err:.1e} |")
                        print(lines[-1], flush=True)
                        continue
                calls = ([lambda w=w, fn=fn: fn(None, None, w) for w in fp16_ws] if kind == "fp16" else
                         [lambda p=p, a=a, fn=fn: fn(p, a, None) for p, a in nf4_ws])
                times[name], _ = time_calls(calls)
                vs_fp16 = times["cuBLAS fp16"] / times[name]
                vs_v7 = f"{times['v7'] / times[name]:.2f}x" if "v7" in times else "-"
                lines.append(f"| {n}x{k} | {b} | {name} | {times[name] * 1e6:.1f} | {vs_fp16:.2f}x | {vs_v7} | {err:.1e} |")
                print(lines[-1], flush=True)
            v10s = {nm: t for nm, t in times.items() if nm.startswith("v10")}
            best = min(v10s, key=v10s.get) if v10s else None
            us = lambda nm: f"{times[nm] * 1e6:.1f}" if nm in times else "-"
            ratio = lambda nm, base="cuBLAS fp16": f"{times[base] / times[nm]:.2f}x" if nm in times and base in times else "-"
            summary.append(f"| {n}x{k} | {b} | {us('cuBLAS fp16')} | {us('v7')} | {us('v8')} | {us('default')} | "
                           f"{us('v10')} | {best or '-'} | {us(best) if best else '-'} | {ratio('default')} | "
                           f"{ratio('v10')} | {ratio(best) if best else '-'} | {ratio('v10', 'v7') if 'v10' in times else '-'} |")
            print(summary[-1], flush=True)
        for b in V10_BF16_BATCHES if configs else ():
            x = torch.randn(b, k, device="cuda").bfloat16()
            ref = x.float() @ wref.T
            for v in (4, 8, 10, 0):
                name = f"bf16 {'default' if v == 0 else f'v{v}'}"
                out = OPS.gemv_nf4(x, *nf4_ws[0], n, 64, v).float()
                err = ((out - ref).norm() / ref.norm()).item()
                if not (bool(torch.isfinite(out).all()) and err < 2 * V10_MAX_ERROR):  # bf16 codes: ~2.5e-3
                    failures.append(f"{name} {n}x{k} batch {b}: relative error {err:.2e}")
                    continue
                seconds, _ = time_calls([lambda p=p, a=a, v=v: OPS.gemv_nf4(x, p, a, n, 64, v) for p, a in nf4_ws])
                lines.append(f"| {n}x{k} | {b} | {name} | {seconds * 1e6:.1f} | - | - | {err:.1e} |")
                print(lines[-1], flush=True)
        del nf4_ws, fp16_ws, wref
        torch.cuda.empty_cache()
    return "\n".join(lines), "\n".join(summary), failures


def read_floor(exp, copy_bw: float) -> str:
    """The read floor: time to stream N bytes once (exp.stream_read, v8's loads, no decode) next to torch's
    own int32 sum, on the NF4 weight sizes of the benchmark shapes and around them; then the fit
    t = t0 + bytes / BW. Markdown."""
    sizes = {"4096x4096 NF4": 4096 * 4096 * 9 // 16, "8192x8192 NF4": 8192 * 8192 * 9 // 16,
             "14336x4096 NF4": 14336 * 4096 * 9 // 16, "8192x8192 fp16": 8192 * 8192 * 2}
    for mb in (4, 8, 16, 64, 256, 512):
        sizes[f"{mb} MiB"] = mb << 20
    lines = ["| bytes | MB | reader | us | TB/s | % copy |", "|---|---|---|---|---|---|"]
    fits = {}
    for label, nbytes in sorted(sizes.items(), key=lambda kv: kv[1]):
        nbytes = nbytes // 16 * 16
        bufs = [torch.randint(0, 256, (nbytes,), dtype=torch.uint8, device="cuda") for _ in range(copies_for(nbytes))]
        got = exp.stream_read(bufs[0], 4).to(torch.int64).sum().item() & 0xFFFFFFFF
        want = bufs[0].view(torch.int32).to(torch.int64).sum().item() & 0xFFFFFFFF
        if got != want:
            raise RuntimeError(f"stream_read's sum {got} != torch's {want} on {nbytes} bytes")
        readers = {f"stream_read U={u}": (lambda b, u=u: exp.stream_read(b, u)) for u in (1, 4, 8)}
        readers["torch int32 sum"] = lambda b: b.view(torch.int32).sum()
        for name, fn in readers.items():
            seconds, _ = time_calls([lambda b=b, fn=fn: fn(b) for b in bufs])
            fits.setdefault(name, []).append((nbytes, seconds))
            lines.append(f"| {label} | {nbytes / 1e6:.1f} | {name} | {seconds * 1e6:.1f} | {nbytes / seconds / 1e12:.2f} | "
                         f"{100 * nbytes / seconds / copy_bw:.0f} |")
            print(lines[-1], flush=True)
        del bufs
        torch.cuda.empty_cache()
    lines += ["", "| reader | t0 (us) | BW (TB/s) | fitted on |", "|---|---|---|---|"]
    for name, pts in fits.items():
        pts = [(b, t) for b, t in pts if 8 << 20 <= b <= 256 << 20]
        n = len(pts)
        mb, mt = sum(b for b, _ in pts) / n, sum(t for _, t in pts) / n
        slope = sum((b - mb) * (t - mt) for b, t in pts) / sum((b - mb) ** 2 for b, _ in pts)
        lines.append(f"| {name} | {(mt - slope * mb) * 1e6:.2f} | {1 / slope / 1e12:.2f} | {n} sizes, 8-256 MiB |")
    return "\n".join(lines)


def markdown(rows: list[dict]) -> str:
    cols = ["shape", "batch", "kernel", "us", "after writer us", "floor us", "GB/s", "% copy", "vs fp16", "mode"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['shape']} | {r['batch']} | {r['kernel']} | error: {r['error']} |" + " |" * (len(cols) - 4))
            continue
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append("-" if v is None else (f"{v:.1f}" if isinstance(v, float) and c != "vs fp16" else
                                                 f"{v:.2f}x" if c == "vs fp16" else str(v)))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="run NF4 v4, v8 and v8's bulk-copy kernel once on 8192x8192, batch 1 (for ncu), and exit")
    parser.add_argument("--sweep", action="store_true",
                        help="time v8's configurations against v4 at batch 1-4 (fp16 and bf16), and exit")
    parser.add_argument("--shape", action="append", default=None, metavar="NxK",
                        help="with --sweep: only this shape (repeatable)")
    parser.add_argument("--sweep-v10", action="store_true",
                        help="validate, then time v10 (default and its development configurations) next to cuBLAS "
                             "fp16, v7 and v8 at six shapes and batch 1, 4, 8, 16 (fp16), print the tables, and exit")
    parser.add_argument("--no-configs", action="store_true", help="with --sweep-v10: only the default v10")
    parser.add_argument("--floor", action="store_true",
                        help="time the read floor (stream the bytes once, no decode) on several sizes, and exit")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("No CUDA GPU: this benchmark runs on a GPU machine (the CPU forms are in benchmarks/kernels_cpu.py).")
        return 0
    start = time.perf_counter()
    K.load_extension("cuda")
    exp = load_experiments() if (args.profile or args.sweep or args.floor) else None
    if args.profile:
        w = torch.randn(8192, 8192, device="cuda") * 0.02
        packed, absmax = quantize_nf4(w, 64)
        x = torch.randn(1, 8192, device="cuda", dtype=torch.float16)
        for version in (4, 8):
            OPS.gemv_nf4(x, packed, absmax, 8192, 64, version)
        exp.gemv_nf4_v8_variant(x, packed, absmax, 8192, 64, 10)  # v8's bulk-copy kernel
        torch.cuda.synchronize()
        return 0
    print(f"CUDA extension ready in {time.perf_counter() - start:.1f} s; {K.cuda_arch()}")
    if args.sweep_v10:
        props = torch.cuda.get_device_properties(0)
        print(f"{props.name}, {props.multi_processor_count} SMs; torch {torch.__version__}; commit {git_commit()}")
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shape] if args.shape else V10_SHAPES
        full, summary, failures = sweep_v10(shapes, configs=not args.no_configs)
        text = (f"GPU: {props.name}; commit {git_commit()}; fp16, NF4 blocksize 64; graph timing, weights rotated past "
                f"L2\n\n{full}\n\nSummary:\n\n{summary}\n")
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text)
        print("\nSummary:\n\n" + summary)
        print("validation:", "every configuration matches the reference" if not failures else
              "\n  ".join(["FAILED"] + failures))
        return 1 if failures else 0
    if args.sweep:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shape] if args.shape else SHAPES
        print(sweep_v8(exp, shapes))
        return 0
    if args.floor:
        copy_bw = copy_bandwidth()
        print(f"copy bandwidth {copy_bw / 1e12:.2f} TB/s (read + write)")
        print(read_floor(exp, copy_bw))
        return 0
    failures = validate()
    print("validation:", "all kernels match the reference" if not failures else "\n  ".join(["FAILED"] + failures))
    try:
        import bitsandbytes as bnb
    except ImportError:
        bnb = None
    props = torch.cuda.get_device_properties(0)
    copy_bw = copy_bandwidth()
    header = [
        f"- GPU: {props.name}, {props.multi_processor_count} SMs, L2 {props.L2_cache_size / 2**20:.0f} MiB; "
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, bitsandbytes {getattr(bnb, '__version__', 'not installed')}; "
        f"host {platform.node() or 'unknown'}; commit {git_commit()}",
        f"- measured device-to-device copy bandwidth: {copy_bw / 1e12:.2f} TB/s (read + write)",
        "- activations float16; NF4 blocksize 64 with float32 absmax (bitsandbytes' layout); int4 group 128",
        "- us: the same kernel back to back in a CUDA graph (weights rotated past L2); after writer us (batch 1): "
        "each call follows a kernel that writes x (x.mul_(1.0), as a norm would), whose own time is subtracted",
    ]
    shapes = SHAPES[1:2] if args.quick else SHAPES
    batches = [1] if args.quick else BATCHES
    rows = bench_gemv(bnb, copy_bw, shapes, batches)
    public_rows, public_failures = bench_public_api(bnb, shapes)
    int8_rows = bench_int8_rows(copy_bw)
    public_verdict = ("all targets met" if not public_failures else "NOT MET: " + "; ".join(public_failures))
    text = "\n".join(header) + "\n\n### GEMV / small-batch GEMM, y = x @ W.T\n\n" + markdown(rows) + \
        "\n\n### Public API, batch 1: course_lib.kernels.gemv_nf4 against the op (graph) and bitsandbytes (eager)\n\n" + \
        f"Targets: public in a graph within {PUBLIC_GRAPH_TOLERANCE - 1:.0%} of the op in a graph; public eager no " \
        f"slower than bitsandbytes eager. Verdict: {public_verdict}.\n\n" + public_markdown(public_rows) + \
        "\n\n### Row-wise int8 quantization (fp16 in, int8 + float32 absmax out)\n\n" + markdown(int8_rows) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 1 if failures or public_failures else 0


if __name__ == "__main__":
    sys.exit(main())
