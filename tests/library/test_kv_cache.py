"""course_lib.kv_cache: a hand-written KV cache against transformers' own generation and cache, KIVI's quantizer
against a loop written from its formulas, and the quantized caches' memory against their layout."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib import kv_cache
from course_lib.data import corpus_text
from course_lib.evaluate import perplexity
from course_lib.models import load_causal_lm


@pytest.fixture(scope="module")
def course_lm():
    return load_causal_lm()


@pytest.fixture(scope="module")
def eval_ids(course_lm):
    _, tokenizer = course_lm
    return tokenizer(corpus_text("eval")[:4000], return_tensors="pt")["input_ids"][0]


@pytest.fixture(scope="module")
def gqa_lm():
    """A random Llama with grouped-query attention (4 heads share 2 KV heads); weights large enough that the
    greedy choices are not near-ties."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         initializer_range=0.3)
    return LlamaForCausalLM(config).eval()


def _hf_generate(model, ids, n):
    with torch.no_grad():
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                              eos_token_id=None, pad_token_id=0)


def _hf_cache(model, ids):
    """The keys and values the model caches itself, one forward pass over ``ids``."""
    with torch.no_grad():
        out = model(ids, use_cache=True)
    cache = out["cache"] if "cache" in out else out["past_key_values"]
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [(cache[i][0], cache[i][1]) for i in range(len(cache))]


def test_greedy_generate_is_the_models_generate_and_its_cache_the_models(course_lm, eval_ids):
    model, _ = course_lm
    prompts = [eval_ids[None, :16], torch.stack([eval_ids[100:112], eval_ids[300:312]]), eval_ids[None, 500:501]]
    for ids in prompts:
        tokens, cache = kv_cache.greedy_generate(model, ids, 10)
        assert torch.equal(tokens, _hf_generate(model, ids, 10))
        theirs = _hf_cache(model, tokens[:, :-1])  # the last token is never run
        assert len(cache) == len(theirs) == model.config.num_hidden_layers
        for (k, v), (k_ref, v_ref) in zip(cache, theirs):
            assert k.shape == (ids.shape[0], 4, ids.shape[1] + 9, 64)
            torch.testing.assert_close(k, k_ref, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(v, v_ref, atol=1e-5, rtol=1e-5)
        # the prefill's first-block keys are the model's own, bit for bit (same modules, same input)
        assert torch.equal(cache[0][0][:, :, :ids.shape[1]], _hf_cache(model, ids)[0][0])


def test_grouped_query_attention_repeats_kv_heads(gqa_lm):
    ids = torch.randint(0, 96, (2, 7), generator=torch.Generator().manual_seed(1))
    tokens, cache = kv_cache.greedy_generate(gqa_lm, ids, 12)
    assert torch.equal(tokens, _hf_generate(gqa_lm, ids, 12))
    assert cache[0][0].shape == (2, 2, 18, 16)


def test_cached_logits_equal_the_full_forward(course_lm, eval_ids):
    model, _ = course_lm
    ids = eval_ids[None, :48]
    with torch.no_grad():
        full = model(ids).logits.float()
    for prefill in (1, 40):
        got = kv_cache.decode_logits(model, ids, prefill=prefill)
        assert got.shape == (1, 48 - prefill, model.config.vocab_size)
        # logits reach about 20: 1e-5 relative; token by token the sums run in another order than in one pass
        torch.testing.assert_close(got, full[:, prefill - 1:-1], atol=1e-5, rtol=1e-5)


def test_perplexity_through_the_cache_is_evaluate_perplexity(course_lm):
    model, tokenizer = course_lm
    text = corpus_text("eval")[:2000]
    ids = tokenizer(text, return_tensors="pt")["input_ids"][:, :64]
    logits = kv_cache.decode_logits(model, ids, kv_cache.KVCache(), prefill=1)
    ours = math.exp(float(torch.nn.functional.cross_entropy(logits[0], ids[0, 1:])))
    assert ours == pytest.approx(perplexity(model, tokenizer, text, max_tokens=64), rel=1e-4)


def test_plumbing_is_one_block_of_the_model(course_lm, eval_ids):
    """embed -> (block_qkv, attention, block_output) x layers -> lm_logits is the model's forward pass."""
    model, _ = course_lm
    ids = eval_ids[None, :20]
    hidden = kv_cache.embed_tokens(model, ids)
    positions = torch.arange(20)
    for layer in range(model.config.num_hidden_layers):
        q, k, v = kv_cache.block_qkv(model, layer, hidden, positions)
        scores = (q @ k.transpose(-1, -2)) / 8.0 + torch.full((20, 20), float("-inf")).triu(1)
        hidden = kv_cache.block_output(model, layer, hidden, torch.softmax(scores, -1) @ v)
    with torch.no_grad():
        torch.testing.assert_close(kv_cache.lm_logits(model, hidden), model(ids).logits, atol=1e-4, rtol=1e-5)


def test_generation_rejects_bad_arguments(course_lm, eval_ids):
    model, _ = course_lm
    ids = eval_ids[None, :8]
    with pytest.raises(ValueError, match="max_new_tokens"):
        kv_cache.greedy_generate(model, ids, 0)
    with pytest.raises(ValueError, match="input_ids"):
        kv_cache.generate(model, ids[0], 3)
    with pytest.raises(ValueError, match="input_ids"):
        kv_cache.generate(model, ids + 5000, 3)
    used = kv_cache.KVCache()
    kv_cache.generate(model, ids, 2, used)
    with pytest.raises(ValueError, match="cache"):
        kv_cache.generate(model, ids, 2, used)
    with pytest.raises(ValueError, match="prefill"):
        kv_cache.decode_logits(model, ids, prefill=8)
    with pytest.raises(ValueError, match="layer"):
        kv_cache.block_qkv(model, 4, kv_cache.embed_tokens(model, ids), torch.arange(8))
    with pytest.raises(ValueError, match="positions"):
        kv_cache.block_qkv(model, 0, kv_cache.embed_tokens(model, ids), torch.arange(7))
    with pytest.raises(ValueError, match="attn"):
        kv_cache.block_output(model, 0, kv_cache.embed_tokens(model, ids), torch.zeros(1, 4, 8, 32))
    with pytest.raises(TypeError, match="model"):
        kv_cache.generate(torch.nn.Linear(2, 2), ids, 2)


# ----------------------------------------------------------------------------------------------
# KIVI's quantizer


def _loop_quantize(x: torch.Tensor, bits: int, group: int, dim: int):
    """quantize_groups written as a loop over groups, from the formulas (an independent reference)."""
    moved = x.float().movedim(dim, -1).contiguous()
    flat = moved.reshape(-1, moved.shape[-1])
    codes = torch.empty_like(flat, dtype=torch.uint8)
    n_groups = flat.shape[1] // group
    scale, minimum = torch.empty(flat.shape[0], n_groups), torch.empty(flat.shape[0], n_groups)
    levels = 2 ** bits - 1
    for r in range(flat.shape[0]):
        for g in range(n_groups):
            vals = flat[r, g * group:(g + 1) * group]
            lo, hi = float(vals.min()), float(vals.max())
            s = (torch.tensor(hi) - torch.tensor(lo)) / levels  # float32, as the formula computes it
            scale[r, g], minimum[r, g] = s, lo
            if s > 0:
                q = torch.round((vals - lo) / s).clamp(0, levels)
            else:
                q = torch.zeros_like(vals)
            codes[r, g * group:(g + 1) * group] = q.to(torch.uint8)
    shape = moved.shape
    back = lambda t, last: t.reshape(*shape[:-1], last).movedim(-1, dim)  # noqa: E731
    return back(codes, shape[-1]), back(scale, n_groups), back(minimum, n_groups)


@pytest.mark.parametrize("bits, group, dim", [(4, 8, -2), (4, 16, -1), (2, 3, 1), (8, 32, -1), (1, 2, 0)])
def test_quantize_groups_equals_the_loop(bits, group, dim):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(bits + group))
    x[0, 1] *= 10.0
    got = kv_cache.quantize_groups(x, bits, group, dim)
    expected = _loop_quantize(x, bits, group, dim)
    assert got[0].dtype == torch.uint8 and got[1].dtype == got[2].dtype == torch.float32
    for g, e in zip(got, expected):
        assert torch.equal(g, e)


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(1, 8), group=st.sampled_from([1, 2, 4, 8]), dim=st.sampled_from([0, 1, -1]),
       seed=st.integers(0, 10_000), scale=st.sampled_from([1e-3, 1.0, 1e3]))
def test_codes_in_range_and_error_at_most_half_a_step(bits, group, dim, seed, scale):
    x = torch.randn(8, 4, 8, generator=torch.Generator().manual_seed(seed)) * scale
    codes, step, minimum = kv_cache.quantize_groups(x, bits, group, dim)
    assert int(codes.max()) <= 2 ** bits - 1
    x_hat = kv_cache.dequantize_groups(codes, step, minimum, group, dim)
    bound = step.repeat_interleave(group, dim=dim) / 2
    assert bool(((x_hat - x).abs() <= bound * (1 + 1e-4) + 1e-6 * scale).all())


def test_constant_groups_do_not_divide_by_zero():
    x = torch.full((2, 4, 8, 16), -3.5)
    x[1] = 0.0
    for dim in (-1, -2):
        codes, step, minimum = kv_cache.quantize_groups(x, 4, 8, dim)
        assert int(codes.max()) == 0 and float(step.abs().max()) == 0.0
        assert torch.equal(kv_cache.dequantize_groups(codes, step, minimum, 8, dim), x)


def test_per_channel_codes_of_a_channel_depend_on_that_channel_only():
    """Keys per channel (dim=-2): scaling one channel by 8 (exact in floating point) leaves every code as it
    was; values per token (dim=-1): the same scaling changes the codes of the other channels of its groups."""
    k = torch.randn(1, 2, 32, 64, generator=torch.Generator().manual_seed(5))
    scaled = k.clone()
    scaled[..., 10] *= 8.0
    per_channel, _, _ = kv_cache.quantize_groups(k, 4, 32, -2)
    per_channel_scaled, _, _ = kv_cache.quantize_groups(scaled, 4, 32, -2)
    assert torch.equal(per_channel, per_channel_scaled)
    per_token, _, _ = kv_cache.quantize_groups(k, 4, 32, -1)
    per_token_scaled, _, _ = kv_cache.quantize_groups(scaled, 4, 32, -1)
    changed = per_token != per_token_scaled
    changed[..., 10] = False
    assert bool(changed[..., :32].any()) and not bool(changed[..., 32:].any())


def test_quantizer_rejects_bad_arguments():
    x = torch.randn(4, 30)
    with pytest.raises(ValueError, match="group_size"):
        kv_cache.quantize_groups(x, 4, 32, -1)
    with pytest.raises(ValueError, match="bits"):
        kv_cache.quantize_groups(x, 9, 10, -1)
    with pytest.raises(ValueError, match="dim"):
        kv_cache.quantize_groups(x, 4, 10, 2)
    with pytest.raises(TypeError, match="x"):
        kv_cache.quantize_groups(x.to(torch.int32), 4, 10, -1)
    codes, s, m = kv_cache.quantize_groups(x, 4, 10, -1)
    with pytest.raises(ValueError, match="scale"):
        kv_cache.dequantize_groups(codes, s[:, :2], m, 10, -1)


# ----------------------------------------------------------------------------------------------
# caches


def _fill(cache, steps, heads=2, dim=64, seed=0):
    """Prefill 70 tokens, then ``steps`` single tokens, into block 0; return everything appended (float32)."""
    gen = torch.Generator().manual_seed(seed)
    chunks = [torch.randn(1, heads, 70, dim, generator=gen)] + [torch.randn(1, heads, 1, dim, generator=gen)
                                                                 for _ in range(steps)]
    for c in chunks:
        cache.update(0, c, -c)
    return torch.cat(chunks, dim=2)


def _float16_tail(got: torch.Tensor, stored: torch.Tensor) -> int:
    """How many of the last tokens the cache holds as their float16 copy (the rest it quantized)."""
    same = (got == stored.half().float()).flatten(3).all(dim=-1).all(dim=0).all(dim=0)
    return int(same.flip(0).int().cumprod(0).sum())


def test_kivi_keeps_the_recent_tokens_in_float16():
    for residual, group, singles, tail in ((32, 16, 0, 6), (32, 16, 26, 0), (0, 16, 1, 7), (32, 32, 3, 9)):
        cache = kv_cache.QuantizedKVCache(4, group_size=group, residual=residual)
        x = _fill(cache, singles)  # 70 tokens at once, then one at a time
        (k, v), = cache.contents()
        assert _float16_tail(k, x) == _float16_tail(v, -x) == tail, (residual, group, singles)
        assert float((k - x).abs().amax()) < 1.0  # 4 bits of a standard normal: a coarse copy, not garbage


def test_each_forward_pass_attends_with_its_own_tokens_unquantized():
    cache = kv_cache.QuantizedKVCache(2, group_size=16, residual=16)
    x = torch.randn(1, 2, 40, 64, generator=torch.Generator().manual_seed(9))
    keys, values = cache.update(0, x, -x)  # a prefill: read in full precision
    assert torch.equal(keys, x) and torch.equal(values, -x)
    new = torch.randn(1, 2, 1, 64, generator=torch.Generator().manual_seed(10))
    keys, _ = cache.update(0, new, -new)  # the next step: the prompt as stored (32 quantized, 8 in float16)
    assert torch.equal(keys[:, :, -1:], new) and _float16_tail(keys[:, :, :40], x) == 8


@pytest.mark.parametrize("make, per_head", [
    (lambda: kv_cache.KVCache(), 64 * 4),
    (lambda: kv_cache.KVCache(torch.float16), 64 * 2),
    (kv_cache.Int8KVCache, 64 + 4),
    (lambda: kv_cache.QuantizedKVCache(4, 32, 32), 64 / 2 + 4 * 64 / 32),
    (lambda: kv_cache.QuantizedKVCache(2, 16, 0), 64 / 4 + 4 * 64 / 16),
    (lambda: kv_cache.QuantizedKVCache(2, 16, 16, key_axis="token", value_axis="channel"), 64 / 4 + 4 * 64 / 16),
])
def test_bytes_follow_the_layout(make, per_head):
    cache = make()
    assert cache.bytes_per_token(4, 2, 64) == 2 * 4 * 2 * per_head
    _fill(cache, 26)  # 96 tokens
    before = cache.nbytes()
    _fill(cache2 := make(), 26 + 64)  # 64 tokens more: whole groups, the same number of recent tokens
    assert cache2.nbytes() - before == pytest.approx(64 * 2 * 2 * per_head)  # 1 layer, 2 heads, keys and values


def test_int8_cache_is_quantize_rows_int8_per_vector():
    from course_lib import kernels

    cache = kv_cache.Int8KVCache()
    x = _fill(cache, 3)
    q, absmax = kernels.quantize_rows_int8(x.reshape(-1, 64), backend="torch")
    torch.testing.assert_close(cache.contents()[0][0], kernels.dequantize_rows_int8(q, absmax).reshape(x.shape),
                               atol=0, rtol=0)


def test_caches_reject_bad_arguments():
    with pytest.raises(ValueError, match="residual"):
        kv_cache.QuantizedKVCache(4, 32, 48)
    with pytest.raises(ValueError, match="key_axis"):
        kv_cache.QuantizedKVCache(4, key_axis="head")
    with pytest.raises(ValueError, match="bits"):
        kv_cache.QuantizedKVCache(0)
    cache = kv_cache.QuantizedKVCache(4, 24, 24, value_axis="token")
    with pytest.raises(ValueError, match="head_dim"):
        cache.update(0, torch.zeros(1, 2, 3, 64), torch.zeros(1, 2, 3, 64))
    cache = kv_cache.KVCache()
    with pytest.raises(ValueError, match="layer"):
        cache.update(1, torch.zeros(1, 2, 3, 8), torch.zeros(1, 2, 3, 8))
    cache.update(0, torch.zeros(1, 2, 3, 8), torch.zeros(1, 2, 3, 8))
    with pytest.raises(ValueError, match="k"):
        cache.update(0, torch.zeros(2, 2, 1, 8), torch.zeros(2, 2, 1, 8))


def test_measurements_against_the_float32_cache(gqa_lm):
    ids = torch.randint(0, 96, (2, 24), generator=torch.Generator().manual_seed(3))
    caches = {"fp32 again": kv_cache.KVCache, "int2": lambda: kv_cache.QuantizedKVCache(2, 4, 4)}
    fp32, again, int2 = kv_cache.compare_decoding(gqa_lm, ids, caches, prefill=8)
    assert fp32["name"] == "fp32" and fp32["KL vs fp32"] == 0.0 and fp32["greedy agreement"] == 1.0
    assert again["KL vs fp32"] == 0.0 and again["perplexity"] == fp32["perplexity"]
    assert int2["KL vs fp32"] > 0 and int2["bytes/token"] == 2 * 2 * 2 * (16 / 4 + 4 * 16 / 4)
    logits = kv_cache.decode_logits(gqa_lm, ids, prefill=8)
    assert fp32["perplexity"] == pytest.approx(math.exp(float(torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), ids[:, 8:].flatten()))), rel=1e-6)
    again, int2 = kv_cache.greedy_match(gqa_lm, ids[:, :8], caches, 10)
    assert again == {"name": "fp32 again", "same tokens": 1.0, "first difference": 10.0}
    assert 0.0 <= int2["same tokens"] <= 1.0 and 0.0 <= int2["first difference"] <= 10.0
    with pytest.raises(TypeError, match="caches"):
        kv_cache.compare_decoding(gqa_lm, ids, {"x": 3}, prefill=8)
