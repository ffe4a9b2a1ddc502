"""benchmarks/decode.py at its smallest, on the CPU: it runs end to end and the two NF4 contenders agree.

bitsandbytes' Linear4bit and course_lib's NF4Linear hold the same NF4 codes and absmax, so on a tiny random
Llama in float32 their greedy tokens are the same; the dense model's differ (4-bit weights change the logits
of a random model more than its near-tied top tokens are apart), so it is only required to run.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _decode_module():
    spec = importlib.util.spec_from_file_location("decode_benchmark", ROOT / "benchmarks" / "decode.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smallest_configuration_runs_and_nf4_contenders_agree(tmp_path):
    pytest.importorskip("bitsandbytes")
    pytest.importorskip("transformers")
    decode = _decode_module()
    args = decode.parse_args(["--device", "cpu", "--layers", "1", "--hidden", "128", "--intermediate", "256",
                              "--heads", "2", "--kv-heads", "1", "--vocab", "256", "--prompt", "4",
                              "--new-tokens", "6", "--batches", "1,2", "--repeats", "1", "--linear-reps", "1",
                              "--out", str(tmp_path / "decode.md")])
    rows, facts = decode.run(args)
    assert [(r["batch"], r["key"]) for r in rows] == [(b, c) for b in (1, 2) for c in ("fp16", "bnb", "ours")]
    assert all(r["mode"] == "eager" and r["tok_s"] > 0 and r["linear_ms"] > 0 for r in rows)  # timings: no bounds
    for batch in (1, 2):
        ours, theirs = facts["tokens"]["ours", batch, "eager"], facts["tokens"]["bnb", batch, "eager"]
        assert ours.shape == (batch, 6) and (ours == theirs).all(), f"batch {batch}: {ours} vs {theirs}"
    text = decode.report(rows, facts, args, ["--device", "cpu"])
    assert "| 1 | ours | eager |" in text and "vs fp32" in text
