"""course_lib.evaluate: perplexity bookkeeping, baselines, metrics, sizes and timing."""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import pytest
import torch

from course_lib import evaluate
from course_lib.data import corpus_text
from course_lib.evaluate import (
    accuracy,
    embedding_cosine,
    measure_latency,
    model_size_bytes,
    perplexity,
    spearman,
    unigram_perplexity,
)


# --------------------------------------------------------------------------------------
# A context-free toy LM: its prediction depends on the current token only (a bigram table),
# so every scored token has the same NLL whatever the window, and perplexity can be
# computed by hand for any max_length / stride.
# --------------------------------------------------------------------------------------
class BigramLM(torch.nn.Module):
    def __init__(self, vocab: int, max_positions: int = 16, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab, generator=g) * 2)
        self.config = SimpleNamespace(max_position_embeddings=max_positions)
        self.calls = []

    def forward(self, input_ids):
        assert input_ids.shape[1] <= self.config.max_position_embeddings
        self.calls.append(tuple(input_ids.shape))
        return SimpleNamespace(logits=self.table[input_ids])


class IdsTokenizer:
    """'Tokenizes' a string of digits into one id per character."""

    def __call__(self, text, return_tensors=None, verbose=True):
        return {"input_ids": torch.tensor([[int(c) for c in text]])}


def bigram_nll(model, ids, positions):
    logp = torch.log_softmax(model.table.detach().double(), dim=-1)
    return [-float(logp[ids[t - 1], ids[t]]) for t in positions]


TEXT = "31415926535897932384626433832795028841971693993751"  # 50 tokens


@pytest.mark.parametrize("max_length,stride", [(16, 1), (16, 5), (16, 8), (16, 15), (7, 3), (50, 10), (64, 64)])
def test_perplexity_scores_every_token_once_when_stride_is_below_max_length(max_length, stride):
    model, tok = BigramLM(10, max_positions=64), IdsTokenizer()
    ids = [int(c) for c in TEXT]
    expected = math.exp(sum(bigram_nll(model, ids, range(1, len(ids)))) / (len(ids) - 1))
    got = perplexity(model, tok, TEXT, max_length=max_length, stride=stride)
    assert got == pytest.approx(expected, rel=1e-6)


def test_perplexity_with_disjoint_windows_skips_each_window_start():
    model, tok = BigramLM(10), IdsTokenizer()
    ids = [int(c) for c in TEXT]
    # Windows [0,16) [16,32) [32,48) [48,50): position 0, 16, 32, 48 have no context.
    scored = [t for t in range(1, len(ids)) if t % 16 != 0]
    expected = math.exp(sum(bigram_nll(model, ids, scored)) / len(scored))
    assert perplexity(model, tok, TEXT, max_length=16) == pytest.approx(expected, rel=1e-6)
    # The default window is config.max_position_embeddings, and full windows are batched.
    model.calls.clear()
    perplexity(model, tok, TEXT, batch_size=2)
    assert model.calls == [(2, 16), (1, 16), (1, 2)]


def test_perplexity_max_tokens_truncates():
    model, tok = BigramLM(10), IdsTokenizer()
    assert perplexity(model, tok, TEXT, max_tokens=12, max_length=16) == \
        pytest.approx(perplexity(model, tok, TEXT[:12], max_length=16), rel=1e-9)


def test_perplexity_argument_errors():
    model, tok = BigramLM(10), IdsTokenizer()
    with pytest.raises(TypeError, match="text"):
        perplexity(model, tok, 123)
    with pytest.raises(ValueError, match="text"):
        perplexity(model, tok, "   ")
    with pytest.raises(ValueError, match="stride"):
        perplexity(model, tok, TEXT, max_length=8, stride=9)
    with pytest.raises(ValueError, match="max_length"):
        perplexity(model, tok, TEXT, max_length=1)
    with pytest.raises(ValueError, match="stride"):
        perplexity(model, tok, TEXT, stride=0)
    with pytest.raises(TypeError, match="max_tokens"):
        perplexity(model, tok, TEXT, max_tokens=2.5)
    with pytest.raises(ValueError, match="at least 2"):
        perplexity(model, tok, "7")
    with pytest.raises(TypeError, match="model"):
        perplexity("gpt2", tok, TEXT)


# --------------------------------------------------------------------------------------
# Real transformers models: the course LM and a GPT-2 (Conv1D) of random weights.
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def course_lm():
    from course_lib.models import load_causal_lm

    return load_causal_lm()


def test_perplexity_equals_exp_mean_nll_of_hf_loss(course_lm):
    model, tok = course_lm
    text = "The dictionary maps each key to a value; a list keeps its items in order."
    ids = tok(text, return_tensors="pt").input_ids
    assert 10 < ids.shape[1] < 512
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss  # mean NLL over the T-1 predictions
    assert perplexity(model, tok, text) == pytest.approx(math.exp(float(loss)), rel=1e-5)


def test_strided_perplexity_close_to_disjoint_and_not_higher(course_lm):
    model, tok = course_lm
    text = corpus_text("eval")
    disjoint = perplexity(model, tok, text, max_length=512, max_tokens=3000)
    strided = perplexity(model, tok, text, max_length=512, stride=256, max_tokens=3000)
    assert strided == pytest.approx(disjoint, rel=0.12)
    assert strided <= disjoint * 1.01  # more context per prediction does not hurt


def test_course_lm_beats_unigram_baseline(course_lm):
    model, tok = course_lm
    calib_ids = tok(corpus_text("calib")).input_ids
    eval_ids = tok(corpus_text("eval")).input_ids[:6000]
    uni = unigram_perplexity(calib_ids, eval_ids, len(tok))
    ppl = perplexity(model, tok, corpus_text("eval"), max_tokens=6000)
    assert 1.0 < ppl < 60.0, ppl
    assert ppl < uni / 10, (ppl, uni)
    assert ppl < len(tok) / 50


def test_perplexity_on_device_matches_cpu(course_lm, device):
    model, tok = course_lm
    text = corpus_text("eval")[:6000]
    cpu = perplexity(model, tok, text)
    moved = model.to(device) if device != "cpu" else model
    try:
        assert perplexity(moved, tok, text) == pytest.approx(cpu, rel=1e-3)
    finally:
        model.to("cpu")


def test_perplexity_works_with_gpt2_conv1d_model(course_lm):
    from transformers import GPT2Config, GPT2LMHeadModel

    _, tok = course_lm
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2)
    gpt2 = GPT2LMHeadModel(cfg).eval()
    text = corpus_text("eval")[:400]
    ids = tok(text, return_tensors="pt").input_ids[:, :64]
    with torch.no_grad():
        loss = gpt2(input_ids=ids, labels=ids).loss
    assert perplexity(gpt2, tok, text, max_tokens=64) == pytest.approx(math.exp(float(loss)), rel=1e-5)
    # Random weights: close to uniform over the vocabulary.
    assert 0.5 * len(tok) < perplexity(gpt2, tok, text, max_tokens=64) < 2 * len(tok)
    # Its Conv1D weights ([in, out]) are packable like nn.Linear: 4 bits + one fp16 scale per 32.
    packed = model_size_bytes(gpt2, bits_per_param=4, group_size=32)
    per_block = (32 * 96 + 32 * 32 + 32 * 128 + 128 * 32) // 2 + 2 * (96 + 32 + 128 + 4 * 32)
    stored = model_size_bytes(gpt2)
    conv_fp32 = 2 * 4 * (32 * 96 + 32 * 32 + 32 * 128 + 128 * 32)
    assert packed == stored - conv_fp32 + 2 * per_block


# --------------------------------------------------------------------------------------
# unigram baseline
# --------------------------------------------------------------------------------------
def test_unigram_perplexity_closed_form():
    # p = (count + 1) / (N + V): p0 = 3/6, p1 = 2/6, p2 = 1/6.
    assert unigram_perplexity([0, 0, 1], [0, 1, 2], 3) == pytest.approx(36 ** (1 / 3))
    # No training counts for any eval token beyond smoothing: uniform over V.
    assert unigram_perplexity(torch.tensor([0]), torch.tensor([1, 2, 3]), 4) == pytest.approx(5.0)


def test_unigram_perplexity_errors():
    with pytest.raises(ValueError, match="eval_ids"):
        unigram_perplexity([0, 1], [0, 5], 3)
    with pytest.raises(TypeError, match="train_ids"):
        unigram_perplexity(torch.tensor([0.5]), [0], 3)
    with pytest.raises(ValueError, match="eval_ids"):
        unigram_perplexity([0], [], 3)
    with pytest.raises(ValueError, match="vocab_size"):
        unigram_perplexity([0], [0], 0)


# --------------------------------------------------------------------------------------
# accuracy, cosine, spearman
# --------------------------------------------------------------------------------------
def test_accuracy_counts_argmax_hits(device):
    model = torch.nn.Linear(3, 3, bias=False).to(device)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3))
    model.train()
    X = torch.eye(3).repeat(5, 1)  # predictions 0,1,2,0,1,2,...
    y = torch.tensor([0, 1, 2] * 4 + [1, 1, 1])
    assert accuracy(model, X, y, batch_size=4) == pytest.approx(13 / 15)
    assert model.training  # mode restored


def test_accuracy_errors():
    model = torch.nn.Linear(3, 3)
    with pytest.raises(ValueError, match="same number of rows"):
        accuracy(model, torch.zeros(4, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="y"):
        accuracy(model, torch.zeros(3, 3), torch.zeros(3))
    with pytest.raises(TypeError, match="X"):
        accuracy(model, [[0.0] * 3], torch.zeros(1, dtype=torch.long))


def test_embedding_cosine_rowwise(device):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    got = embedding_cosine(a.to(device), b.to(device))
    assert got.shape == (7,)
    torch.testing.assert_close(got.cpu(), torch.nn.functional.cosine_similarity(a, b, dim=1), rtol=1e-5, atol=1e-6)
    assert float(embedding_cosine(torch.zeros(4), torch.ones(4))) == 0.0
    assert float(embedding_cosine(a[0], -2 * a[0])) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="same shape"):
        embedding_cosine(a, b[:3])
    with pytest.raises(TypeError, match="floating"):
        embedding_cosine(torch.ones(3, dtype=torch.long), torch.ones(3, dtype=torch.long))


@pytest.mark.parametrize("seed", range(6))
def test_spearman_matches_scipy_with_ties(seed):
    scipy_stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(seed)
    n = 5 + 7 * seed
    x = torch.randint(0, 4, (n,), generator=g).float()  # many ties
    y = x + torch.randn(n, generator=g) * (seed + 1)
    y[::3] = y[0]
    expected = scipy_stats.spearmanr(x.numpy(), y.numpy()).statistic
    assert spearman(x, y) == pytest.approx(float(expected), abs=1e-12)
    assert spearman(x.tolist(), y.numpy()) == pytest.approx(float(expected), abs=1e-12)


def test_spearman_edge_cases():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 1000]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="same length"):
        spearman([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2"):
        spearman([1], [1])
    with pytest.raises(ValueError, match="finite"):
        spearman([1, float("nan")], [1, 2])
    with pytest.raises(TypeError, match="x"):
        spearman(["a", "b"], [1, 2])


# --------------------------------------------------------------------------------------
# model size
# --------------------------------------------------------------------------------------
def small_net():
    return torch.nn.Sequential(torch.nn.Linear(256, 128), torch.nn.LayerNorm(128))


def test_model_size_bytes_closed_forms():
    net = small_net()
    n_weight, n_other = 256 * 128, 128 + 2 * 128
    assert model_size_bytes(net) == (n_weight + n_other) * 4
    assert model_size_bytes(net, dtype=torch.float16) == (n_weight + n_other) * 2
    assert model_size_bytes(net.half()) == (n_weight + n_other) * 2
    net = small_net()
    # 4-bit weights + one 16-bit scale per 64 inputs; bias and LayerNorm stay fp32.
    assert model_size_bytes(net, bits_per_param=4, group_size=64) == n_weight // 2 + 128 * 4 * 2 + n_other * 4
    # Per-channel (group_size None): one scale per output row; 16+4 bits for scale + zero-point.
    assert model_size_bytes(net, bits_per_param=3, scale_bits=20) == n_weight * 3 // 8 + 128 * 20 // 8 + n_other * 4
    # Fractional bits (ternary 1.58) round up to whole bytes; dtype applies to the rest.
    assert model_size_bytes(net, bits_per_param=1.58, dtype=torch.float16, scale_bits=0) == \
        math.ceil(n_weight * 1.58 / 8) + n_other * 2


def test_model_size_bytes_counts_tied_weights_once_and_buffers():
    emb = torch.nn.Embedding(100, 16)
    head = torch.nn.Linear(16, 100, bias=False)
    head.weight = emb.weight
    net = torch.nn.ModuleDict({"emb": emb, "lm_head": head})
    assert model_size_bytes(net) == 1600 * 4
    # lm_head is excluded by default, so the shared matrix stays fp32 when packing.
    assert model_size_bytes(net, bits_per_param=4) == 1600 * 4
    assert model_size_bytes(net, bits_per_param=4, exclude=()) == 800 + 100 * 2
    packed = torch.nn.Module()
    packed.register_buffer("qweight", torch.zeros(64, 32, dtype=torch.uint8))
    packed.register_buffer("scales", torch.zeros(64, 2, dtype=torch.float16))
    assert model_size_bytes(packed) == 64 * 32 + 64 * 2 * 2


def test_model_size_bytes_of_course_lm(course_lm):
    model, _ = course_lm
    n = sum(p.numel() for p in model.parameters())
    assert model_size_bytes(model) == 4 * n
    assert model_size_bytes(model, dtype=torch.bfloat16) == 2 * n
    # 4 layers x (4 x 256x256 + 3 x 256x384 weights at 4 bits + fp16 scales per 128 inputs + 2 norms),
    # the tied embedding (lm_head excluded) and the final norm in fp32.
    per_layer = (4 * 256 * 256 + 3 * 256 * 384) // 2 + 2 * (4 * 256 * 2 + 2 * 384 * 2 + 256 * 3) + 2 * 256 * 4
    assert model_size_bytes(model, bits_per_param=4, group_size=128) == 4 * per_layer + 4096 * 256 * 4 + 256 * 4


def test_model_size_bytes_errors():
    net = small_net()
    with pytest.raises(ValueError, match="bits_per_param"):
        model_size_bytes(net, bits_per_param=0)
    with pytest.raises(ValueError, match="group_size"):
        model_size_bytes(net, group_size=64)
    with pytest.raises(ValueError, match="group_size"):
        model_size_bytes(net, bits_per_param=4, group_size=0)
    with pytest.raises(ValueError, match="dtype"):
        model_size_bytes(net, dtype=torch.int8)
    with pytest.raises(TypeError, match="model"):
        model_size_bytes("net")


# --------------------------------------------------------------------------------------
# latency
# --------------------------------------------------------------------------------------
def test_measure_latency_times_calls():
    calls = []

    def fn(x, pause=0.0):
        calls.append(x)
        time.sleep(pause)

    stats = measure_latency(fn, 1, warmup=2, repeats=5, pause=0.003)
    assert len(calls) == 7 and stats["repeats"] == 5 and len(stats["times"]) == 5
    assert 0.003 <= stats["min"] <= stats["median"] <= stats["max"] < 1.0
    assert stats["min"] <= stats["mean"] <= stats["max"]
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(fn, 1, repeats=0)
    with pytest.raises(ValueError, match="warmup"):
        measure_latency(fn, 1, warmup=-1)
    with pytest.raises(TypeError, match="fn"):
        measure_latency(None)


def test_measure_latency_on_device(device):
    x = torch.randn(256, 256, device=device)
    stats = measure_latency(torch.matmul, x, x, warmup=1, repeats=3)
    assert stats["median"] > 0


def test_module_exports():
    for name in evaluate.__all__:
        assert callable(getattr(evaluate, name))
