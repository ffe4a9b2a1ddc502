"""course_lib.models: MiniLM and the course LM load offline, embed like sentence-transformers,
and load by hub id (from a local hub cache) or by path with the same weights."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from course_lib import models
from course_lib.data import sentence_pairs
from course_lib.evaluate import embedding_cosine, spearman

REPO = Path(__file__).resolve().parents[2]
LM_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


@pytest.fixture(scope="module")
def minilm():
    return models.load_minilm()


@pytest.fixture(scope="module")
def pair_embeddings(minilm):
    model, tok = minilm
    pairs = sentence_pairs()
    a = models.embed(model, tok, [p[0] for p in pairs])
    b = models.embed(model, tok, [p[1] for p in pairs])
    return a, b, torch.tensor([p[2] for p in pairs])


# --------------------------------------------------------------------------------------
# MiniLM
# --------------------------------------------------------------------------------------
def test_minilm_is_the_real_pretrained_encoder(minilm):
    model, tok = minilm
    assert sum(p.numel() for p in model.parameters()) == 22_713_216
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 37
    assert model.config.hidden_size == 384 and model.config.num_hidden_layers == 6
    assert not model.training and next(model.parameters()).dtype == torch.float32


def test_minilm_returns_fresh_copies(minilm):
    model, _ = minilm
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.zero_()
    again, _ = models.load_minilm()
    assert again is not model
    assert float(again.embeddings.word_embeddings.weight.detach().abs().sum()) > 0
    with torch.no_grad():  # put the fixture back for the other tests
        model.embeddings.word_embeddings.weight.copy_(again.embeddings.word_embeddings.weight)


def test_embed_matches_sentence_transformers(minilm):
    st_mod = pytest.importorskip("sentence_transformers")
    model, tok = minilm
    sentences = [p[0] for p in sentence_pairs()[:20]] + ["word " * 400, "x"]  # one is truncated at 256 tokens
    ours = models.embed(model, tok, sentences, batch_size=6)
    reference = st_mod.SentenceTransformer(str(models.minilm_path()), device="cpu")
    theirs = reference.encode(sentences, convert_to_tensor=True, batch_size=6).cpu()
    assert ours.shape == (22, 384) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-5)
    torch.testing.assert_close(ours.norm(dim=1), torch.ones(22), rtol=0, atol=1e-5)


def test_paraphrases_are_closer_than_unrelated_pairs(pair_embeddings):
    a, b, score = pair_embeddings
    cos = embedding_cosine(a, b)
    paraphrase = cos[score >= 4.5]
    unrelated = cos[score <= 0.5]
    assert len(paraphrase) >= 8 and len(unrelated) >= 8
    assert float(paraphrase.min()) > float(unrelated.max())
    assert float(paraphrase.mean()) - float(unrelated.mean()) > 0.5


def test_minilm_spearman_on_course_set(pair_embeddings):
    a, b, score = pair_embeddings
    rho = spearman(embedding_cosine(a, b), score)
    assert rho > 0.5, rho


def test_embed_on_device_matches_cpu(minilm, device):
    model, tok = minilm
    sentences = ["A cat sleeps on the sofa.", "Quantization maps floats to integers."]
    cpu = models.embed(model, tok, sentences)
    on_device, tok2 = models.load_minilm(device=device)
    got = models.embed(on_device, tok2, sentences)
    assert got.device.type == "cpu"
    torch.testing.assert_close(got, cpu, rtol=0, atol=1e-4)


def test_embed_argument_errors(minilm):
    model, tok = minilm
    assert models.embed(model, tok, "one sentence").shape == (1, 384)
    with pytest.raises(ValueError, match="sentences"):
        models.embed(model, tok, [])
    with pytest.raises(TypeError, match=r"sentences\[1\]"):
        models.embed(model, tok, ["ok", 3])
    with pytest.raises(ValueError, match="batch_size"):
        models.embed(model, tok, ["ok"], batch_size=0)


# --------------------------------------------------------------------------------------
# The course LM
# --------------------------------------------------------------------------------------
def test_course_lm_architecture():
    model, tok = models.load_causal_lm()
    cfg = model.config
    assert cfg.model_type == "llama"
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size) == (256, 4, 4, 384)
    assert cfg.vocab_size == len(tok) == 4096
    assert sum(p.numel() for p in model.parameters()) == 3_279_104
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 4 * 7 + 1
    for m in linears:  # group-128 quantization (GPTQ/AWQ exercises) needs this
        assert m.in_features % 128 == 0 and m.out_features % 128 == 0
    assert not model.training and next(model.parameters()).dtype == torch.float32
    summary = json.loads((models.COURSE_LM_DIR / "training_summary.json").read_text())
    assert summary["eval_perplexity"] < summary["eval_unigram_perplexity"] / 10


def test_course_lm_fresh_copies_and_dtype():
    model, _ = models.load_causal_lm()
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.zero_()
    again, _ = models.load_causal_lm()
    assert float(again.model.layers[0].mlp.down_proj.weight.detach().abs().sum()) > 0
    half, _ = models.load_causal_lm(dtype=torch.float16)
    assert {p.dtype for p in half.parameters()} == {torch.float16}
    torch.testing.assert_close(half.lm_head.weight.float(), again.lm_head.weight, rtol=1e-3, atol=1e-4)


def test_course_lm_on_device_matches_cpu(device):
    cpu_model, tok = models.load_causal_lm()
    model, _ = models.load_causal_lm(device=device)
    assert next(model.parameters()).device.type == device
    ids = tok("for key, value in mapping.items():", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(model(ids.to(device)).logits.cpu(), cpu_model(ids).logits, rtol=1e-3, atol=1e-3)


def test_load_causal_lm_from_local_path(tmp_path):
    folder = tmp_path / "my-lm"
    folder.mkdir()
    for name in LM_FILES:
        shutil.copy(models.COURSE_LM_DIR / name, folder / name)
    bundled, tok = models.load_causal_lm()
    by_path, tok2 = models.load_causal_lm(str(folder))
    by_pathlib, _ = models.load_causal_lm(folder)
    ids = tok("import os", return_tensors="pt").input_ids
    assert tok2("import os", return_tensors="pt").input_ids.tolist() == ids.tolist()
    with torch.no_grad():
        ref = bundled(ids).logits
        assert torch.equal(by_path(ids).logits, ref)
        assert torch.equal(by_pathlib(ids).logits, ref)


def test_load_causal_lm_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        models.load_causal_lm(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        models.load_causal_lm(str(tmp_path / "missing"))
    with pytest.raises(TypeError, match="name"):
        models.load_causal_lm(42)
    with pytest.raises(TypeError, match="dtype"):
        models.load_causal_lm(dtype="float16")
    with pytest.raises(ValueError, match="dtype"):
        models.load_causal_lm(dtype=torch.int8)
    with pytest.raises(ValueError, match="device"):
        models.load_causal_lm(device="tpu-9000")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            models.load_causal_lm(device="cuda")


# --------------------------------------------------------------------------------------
# Offline by construction: a fresh interpreter, a hub cache that holds only our files.
# --------------------------------------------------------------------------------------
def test_load_by_hub_id_from_offline_cache_and_quiet_stderr(tmp_path):
    """The hub code path, offline: "course/tiny-lm" resolves through a local hub cache.

    The same interpreter checks that importing course_lib.models and loading both models write
    nothing to stderr (nbgrader scores a test cell with stderr output 0).
    """
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--course--tiny-lm"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    for name in LM_FILES:
        shutil.copy(models.COURSE_LM_DIR / name, snapshot / name)
    script = textwrap.dedent("""
        import os, sys, torch
        assert "HF_HUB_OFFLINE" not in os.environ
        import course_lib.models as m
        assert os.environ["HF_HUB_OFFLINE"] == "1", "importing course_lib.models must default to offline"
        from course_lib.evaluate import perplexity
        model, tok = m.load_causal_lm("course/tiny-lm")
        bundled, tok0 = m.load_causal_lm()
        ids = tok0("def f(x): return x", return_tensors="pt").input_ids
        with torch.no_grad():
            assert torch.equal(model(ids).logits, bundled(ids).logits), "hub copy differs"
        perplexity(model, tok, "x = 1\\n" * 400, max_length=64)
        enc, etok = m.load_minilm()
        m.embed(enc, etok, ["a sentence"])
        try:
            m.load_causal_lm("course/not-in-cache")
        except OSError as exc:
            assert "allow_download=True" in str(exc)
        else:
            raise AssertionError("a missing hub id must raise OSError")
        print("OK")
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_HUB_CACHE=str(tmp_path / "hub"), HF_HOME=str(tmp_path / "home"),
               PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "OK"
    assert proc.stderr == "", proc.stderr[-3000:]


def test_import_keeps_an_explicit_hub_offline_setting(monkeypatch):
    import importlib

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    importlib.reload(models)  # re-runs the module's set-up with the variable already set
    assert os.environ["HF_HUB_OFFLINE"] == "0"
