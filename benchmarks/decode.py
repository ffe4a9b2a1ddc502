#!/usr/bin/env python
"""Greedy decoding tokens/s of a Llama-architecture model: fp16 vs bitsandbytes NF4 vs course_lib's NF4Linear.

    python benchmarks/decode.py                       # GPU machine: Llama-3-8B's shapes, print the table
    python benchmarks/decode.py --out FILE.md         # also write it, with the machine and versions
    python benchmarks/decode.py --device cpu --layers 2 --hidden 256 --intermediate 512 --heads 4 \\
        --kv-heads 2 --vocab 512 --prompt 8 --new-tokens 8 --batches 1,2 --repeats 1   # CPU smoke test

The model is transformers' ``LlamaForCausalLM`` built from a ``LlamaConfig`` with random weights (speed does
not depend on the values): by default Llama-3-8B's shapes (hidden 4096, intermediate 14336, 32 layers, 32
heads and 8 KV heads, vocabulary 128256, untied output layer). Contenders, each in one process on one card:

- ``fp16``: the model as built (``fp32`` on the CPU, where half-precision matmuls are slow);
- ``bnb``: every linear layer of the decoder replaced by bitsandbytes' ``Linear4bit`` (NF4, blocksize 64,
  no double quantization, compute dtype = the model's);
- ``ours``: every linear layer of the decoder replaced by ``course_lib.kernels.NF4Linear``
  (``replace_linears_nf4``: the same codes and absmax as bitsandbytes').

Both NF4 contenders keep ``lm_head`` and the embeddings in the model's dtype (transformers' default for
bitsandbytes). Each run: a prompt of ``--prompt`` random tokens (prefill), then ``--new-tokens`` greedy steps
with transformers' ``StaticCache``; tokens/s = batch x new tokens / decode time (prefill excluded), the median
of ``--repeats`` runs. A decode step runs as one CUDA graph replay ("graph"), the same with the norms and MLPs
compiled by ``torch.compile`` ("compile"), or eagerly ("eager", where neither works); the table has a row per
contender and mode and says why a mode failed. The linear layers' share of a step: the model's linear layers alone, each called
once on a decode-step input and timed as one CUDA graph, over the decode step's time.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import inspect
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# This folder's kernels.py would shadow the `kernels` package that transformers looks for: leave it off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))

from benchmarks.provenance import git_commit  # noqa: E402
from course_lib.kernels import NF4Linear, replace_linears_nf4  # noqa: E402

CONTENDERS = ("fp16", "bnb", "ours")
MODES = ("graph", "compile", "eager")


# ----------------------------------------------------------------------------------------------
# the model and its contenders


def build_model(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """A random ``LlamaForCausalLM`` with the requested shapes, built directly in ``dtype`` on ``device``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                         num_hidden_layers=args.layers, num_attention_heads=args.heads,
                         num_key_value_heads=args.kv_heads, max_position_embeddings=args.prompt + args.new_tokens + 8,
                         rope_theta=500000.0, tie_word_embeddings=False, bos_token_id=0, eos_token_id=None,
                         pad_token_id=None)
    config._attn_implementation = "sdpa"
    torch.manual_seed(args.seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    return model.eval().requires_grad_(False)


def to_bnb(model: torch.nn.Module, dtype: torch.dtype, blocksize: int) -> torch.nn.Module:
    """Replace (in place) every ``nn.Linear`` but ``lm_head`` by bitsandbytes' NF4 ``Linear4bit``."""
    import bitsandbytes as bnb

    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is not torch.nn.Linear or child_name == "lm_head":
                continue
            layer = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=dtype, compress_statistics=False, quant_type="nf4",
                                      device="meta")
            layer.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, quant_type="nf4",
                                             blocksize=blocksize, compress_statistics=False)
            if child.bias is not None:
                layer.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
            setattr(module, child_name, layer.to(child.weight.device))  # .to quantizes, on that device
    return model


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of parameters and buffers, plus bitsandbytes' quantization state (absmax) held outside them."""
    total = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if state is not None:
            total += state.absmax.numel() * state.absmax.element_size()
    return total


def _is_linear(module: torch.nn.Module) -> bool:
    return isinstance(module, (torch.nn.Linear, NF4Linear))  # bitsandbytes' Linear4bit is an nn.Linear


# ----------------------------------------------------------------------------------------------
# decoding


class Decoder:
    """Prefill and greedy decode steps of one model with a ``StaticCache`` and static input buffers.

    ``step()`` reads the last tokens from ``ids`` and the position from ``pos``, appends to the cache, and
    writes the next tokens back into ``ids`` and ``pos + 1`` into ``pos``: all on the device, so the same
    step can be captured once in a CUDA graph and replayed.
    """

    def __init__(self, model: torch.nn.Module, batch: int, args: argparse.Namespace, device: torch.device):
        from transformers import StaticCache

        self.model, self.batch, self.device = model, batch, device
        self.cache = StaticCache(config=model.config, max_cache_len=args.prompt + args.new_tokens + 1)
        gen = torch.Generator().manual_seed(args.seed + batch)
        self.prompt = torch.randint(0, args.vocab, (batch, args.prompt), generator=gen).to(device)
        self.ids = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.pos = torch.zeros(1, dtype=torch.long, device=device)
        self.positions = torch.arange(args.prompt, device=device)
        self.run_step = self.step
        # transformers >= 5.2x takes `cache` and positions alone (the static layers count their own length);
        # earlier 5.x takes `past_key_values` and `cache_position`
        self.new_api = "cache" in inspect.signature(model.forward).parameters

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        kwargs = dict(input_ids=ids, position_ids=positions[None], use_cache=True)
        if self.new_api:
            kwargs.update(cache=self.cache)
        else:
            kwargs.update(past_key_values=self.cache, cache_position=positions)
        return self.model(**kwargs).logits

    def prefill(self) -> None:
        """Empty the cache, run the prompt, leave its greedy next tokens in ``ids``."""
        self.cache.reset()
        logits = self._forward(self.prompt, self.positions)
        self.ids.copy_(logits[:, -1].argmax(-1)[:, None])
        self.pos.fill_(self.prompt.shape[1])

    def step(self) -> torch.Tensor:
        logits = self._forward(self.ids, self.pos)
        nxt = logits[:, -1].argmax(-1)
        self.ids.copy_(nxt[:, None])
        self.pos.add_(1)
        return nxt

    def use_graph(self) -> None:
        """Capture one decode step in a CUDA graph (after warm-up steps on a side stream)."""
        self.prefill()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self.step()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self.step()

        def replay() -> torch.Tensor:
            graph.replay()
            return out

        self.graph = graph
        self.run_step = replay

    def generate(self, new_tokens: int) -> tuple[torch.Tensor, float]:
        """(tokens [batch, new_tokens], decode seconds): prefill, then ``new_tokens`` timed decode steps."""
        tokens = torch.empty(self.batch, new_tokens, dtype=torch.long, device=self.device)
        self.prefill()
        _sync(self.device)
        start = time.perf_counter()
        for i in range(new_tokens):
            tokens[:, i].copy_(self.run_step())
        _sync(self.device)
        return tokens, time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: Modules that ``compile`` mode compiles: the norms and the MLP (gate, up, SiLU x up, down); each class's
#: instances share one compiled graph (their parameters are graph inputs). The attention block is left out: its
#: layer index is a Python int, which would compile it once per layer.
COMPILED_BLOCKS = ("LlamaRMSNorm", "LlamaMLP")


def compile_blocks(model: torch.nn.Module, on: bool) -> None:
    """Compile (``on``) or restore the eager forward of the model's norms and MLPs, in place."""
    for module in model.modules():
        if type(module).__name__ in COMPILED_BLOCKS:
            if on:
                module.compile(dynamic=False)
            else:
                module._compiled_call_impl = None


def time_calls(fn, device: torch.device, reps: int) -> float:
    """Seconds per call of ``fn``: on CUDA one CUDA graph of it replayed ``reps`` times, else eager calls."""
    fn()
    fn()
    _sync(device)
    if device.type == "cuda":
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        graph.replay()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            graph.replay()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / reps
    start_s = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start_s) / reps


def linear_seconds(model: torch.nn.Module, batch: int, device: torch.device, dtype: torch.dtype,
                   reps: int) -> dict[str, float]:
    """Seconds that the model's linear layers take for one decode step, run alone, each once on a
    ``[batch, 1, in_features]`` input: ``{"decoder": all but lm_head, "lm_head": lm_head}``."""
    groups: dict[str, list[torch.nn.Module]] = {"decoder": [], "lm_head": []}
    for name, module in model.named_modules():
        if _is_linear(module):
            groups["lm_head" if name.endswith("lm_head") else "decoder"].append(module)
    out = {}
    with torch.no_grad():
        for part, layers in groups.items():
            inputs = {m.in_features: torch.randn(batch, 1, m.in_features, device=device, dtype=dtype) for m in layers}
            out[part] = time_calls(lambda: [m(inputs[m.in_features]) for m in layers], device, reps) if layers else 0.0
    return out


# ----------------------------------------------------------------------------------------------
# the table


def _prefix_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over rows of the length of the common prefix of two token sequences, as a share of their length."""
    same = (a == b).int().cumprod(dim=1)
    return float(same.sum()) / a.numel()


def run(args: argparse.Namespace) -> tuple[list[dict], dict]:
    """Every contender at every batch size; returns (rows, facts about the run)."""
    device = torch.device(args.device)
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[args.dtype]
    dense_label = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]
    modes = [m for m in args.modes.split(",") if m]
    if device.type != "cuda":
        modes = [m for m in modes if m == "eager"] or ["eager"]
    for limit in ("cache_size_limit", "recompile_limit"):  # a graph per shape and contender
        if hasattr(torch._dynamo.config, limit):
            setattr(torch._dynamo.config, limit, 64)
    base = build_model(args, device, dtype)
    models = {}
    for name in args.contenders.split(","):
        if name == "fp16":
            models[name] = base
        elif name == "bnb":
            models[name] = to_bnb(copy.deepcopy(base), dtype, args.blocksize)
        elif name == "ours":
            models[name] = replace_linears_nf4(copy.deepcopy(base), args.blocksize)
        else:
            raise ValueError(f"--contenders: unknown contender {name!r} (choose from {CONTENDERS})")
    rows, failures, tokens = [], [], {}
    for batch in [int(b) for b in args.batches.split(",")]:
        for name, model in models.items():
            linear = linear_seconds(model, batch, device, dtype, args.linear_reps) if args.linear_reps else None
            measured = 0
            for mode in modes if "eager" in modes else [*modes, "eager"]:
                if mode == "eager" and measured and "eager" not in modes:
                    break  # eager only as the last resort
                decoder = Decoder(model, batch, args, device)
                try:
                    if mode == "compile":
                        compile_blocks(model, True)
                    if mode in ("graph", "compile"):
                        decoder.use_graph()
                    decoder.generate(min(4, args.new_tokens))  # warm-up
                    times = []
                    for _ in range(args.repeats):
                        generated, seconds = decoder.generate(args.new_tokens)
                        times.append(seconds)
                except Exception as exc:  # a mode that does not work for this contender: say why
                    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
                    failures.append(f"{name} batch {batch}: {mode} failed ({type(exc).__name__}: {text})")
                    continue
                finally:
                    compile_blocks(model, False)
                    del decoder
                    _sync(device)
                measured += 1
                tokens[name, batch, mode] = generated.cpu()
                step = statistics.median(times) / args.new_tokens
                rows.append(dict(batch=batch, contender=name if name != "fp16" else dense_label, key=name, mode=mode,
                                 gb=weight_bytes(model) / 1e9, step_ms=step * 1e3, tok_s=batch / step,
                                 linear_ms=None if linear is None else linear["decoder"] * 1e3,
                                 head_ms=None if linear is None else linear["lm_head"] * 1e3,
                                 share=None if linear is None else linear["decoder"] / step,
                                 head=None if linear is None else linear["lm_head"] / step))
                print(rows[-1], flush=True)
    for row in rows:  # ratios within one batch size and one mode
        by = {r["key"]: r for r in rows if r["batch"] == row["batch"] and r["mode"] == row["mode"]}
        row["vs_dense"] = row["tok_s"] / by["fp16"]["tok_s"] if "fp16" in by else None
        row["vs_bnb"] = row["tok_s"] / by["bnb"]["tok_s"] if "bnb" in by else None
        ref = tokens.get(("bnb", row["batch"], row["mode"]))
        row["agree_bnb"] = None if ref is None else _prefix_agreement(tokens[row["key"], row["batch"], row["mode"]], ref)
    facts = dict(failures=failures, dense=dense_label, tokens=tokens)
    return rows, facts


def _fmt(value, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def table(rows: list[dict], dense: str) -> str:
    lines = [f"| batch | contender | mode | weights GB | ms / step | tokens/s | vs {dense} | vs bnb | "
             "decoder linears ms (share) | lm_head ms (share) | same tokens as bnb |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["batch"], MODES.index(r["mode"]), CONTENDERS.index(r["key"]))):
        lines.append(f"| {r['batch']} | {r['contender']} | {r['mode']} | {r['gb']:.2f} | {r['step_ms']:.2f} | "
                     f"{r['tok_s']:.1f} | {_fmt(r['vs_dense'], '.2f', 'x')} | {_fmt(r['vs_bnb'], '.2f', 'x')} | "
                     f"{_fmt(r['linear_ms'], '.2f')} ({_fmt(r['share'], '.0%')}) | "
                     f"{_fmt(r['head_ms'], '.2f')} ({_fmt(r['head'], '.0%')}) | {_fmt(r['agree_bnb'], '.0%')} |")
    return "\n".join(lines)


def _versions() -> str:
    import transformers

    parts = [f"torch {torch.__version__}"]
    if torch.version.cuda:
        parts.append(f"CUDA {torch.version.cuda}")
    parts.append(f"transformers {transformers.__version__}")
    try:
        import bitsandbytes

        parts.append(f"bitsandbytes {bitsandbytes.__version__}")
    except ImportError:
        pass
    return ", ".join(parts)


def report(rows: list[dict], facts: dict, args: argparse.Namespace, argv: list[str]) -> str:
    device = torch.device(args.device)
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "CPU")
    command = " ".join(["python benchmarks/decode.py", *argv])
    lines = [
        f"# Greedy decoding: {facts['dense']} vs bitsandbytes NF4 vs course_lib NF4Linear on {machine} "
        f"({datetime.date.today()})",
        "",
        f"Generated by `{command}`.",
        "",
        f"- machine: {machine}; {_versions()}; code of commit {args.commit or git_commit()}",
        f"- model: transformers LlamaForCausalLM, random weights (seed {args.seed}): hidden {args.hidden}, "
        f"intermediate {args.intermediate}, {args.layers} layers, {args.heads} heads / {args.kv_heads} KV heads, "
        f"vocabulary {args.vocab}, untied lm_head; activations {args.dtype}; sdpa attention",
        f"- NF4: blocksize {args.blocksize}, float32 absmax, no double quantization, in both NF4 contenders; "
        "lm_head and the embeddings stay dense (transformers' default skip for bitsandbytes)",
        f"- run: prompt {args.prompt} random tokens, then {args.new_tokens} greedy steps with a StaticCache; "
        f"tokens/s = batch x {args.new_tokens} / decode time (prefill excluded), median of {args.repeats} runs; "
        "ms / step = decode time / steps",
        "- mode: graph = each decode step one CUDA graph replay of transformers' eager modules; compile = the "
        "same, with the RMSNorms and MLPs (gate, up, SiLU x up, down) compiled by torch.compile (attention is "
        "not: its layer index would compile it once per layer); eager = plain PyTorch, only where no other "
        "mode ran; ratios compare rows of one batch size and one mode",
        "- decoder linears ms / lm_head ms: the model's linear layers alone, each called once on a [batch, 1, "
        "in_features] input, " + ("timed as one CUDA graph" if device.type == "cuda" else "timed eagerly")
        + f" (median of {args.linear_reps} replays); share = that time / the decode step's time",
        "- same tokens as bnb: the greedy sequences' common prefix with bitsandbytes', mean over the batch "
        "(both NF4 models hold the same codes; random weights give near-ties, so low-order differences in "
        "the sums can flip a token, after which the sequences part)",
        "",
        table(rows, facts["dense"]),
        "",
    ]
    if facts["failures"]:
        lines += ["Modes that failed:", ""]
        lines += [f"- {f}" for f in facts["failures"]] + [""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="also write the report to this Markdown file")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=("float16", "bfloat16", "float32"),
                        help="the dense model's dtype (default: float16 on CUDA, float32 on the CPU)")
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--intermediate", type=int, default=14336)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--blocksize", type=int, default=64)
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--prompt", type=int, default=16, help="prompt tokens")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--linear-reps", type=int, default=20,
                        help="replays timing the linear layers alone (0: don't)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--modes", default="graph,compile",
                        help=f"modes to measure, from {MODES} (eager also runs where none of them works; "
                             "graph and compile need CUDA)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--commit", default=None, help="the commit the code comes from (default: git rev-parse)")
    args = parser.parse_args(argv)
    if args.dtype is None:
        args.dtype = "float16" if args.device.startswith("cuda") else "float32"
    for name in ("layers", "hidden", "intermediate", "heads", "kv_heads", "vocab", "prompt", "new_tokens",
                 "repeats", "linear_reps"):
        if getattr(args, name) < (0 if name == "linear_reps" else 1):
            parser.error(f"--{name.replace('_', '-')} must be >= {0 if name == 'linear_reps' else 1}")
    if args.hidden % args.heads or args.heads % args.kv_heads:
        parser.error("--hidden must be a multiple of --heads, and --heads of --kv-heads")
    unknown = set(args.modes.split(",")) - set(MODES) - {""}
    if unknown:
        parser.error(f"--modes: unknown {sorted(unknown)} (choose from {MODES})")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    rows, facts = run(args)
    text = report(rows, facts, args, argv)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
