"""course_lib.capstone: exact sizes (closed forms, evaluate.model_size_bytes, bitsandbytes' packed NF4, prune's
sparse formats), recipes applied layer by layer (GPTQ, AWQ and SparseGPT layers against the course's functions run
on the inputs each layer really sees), the held-out text, the Pareto front (hypothesis, brute force), the greedy
allocator, the grader and its hidden part: the greedy RTN/HQQ recipes fail, the three documented strategies pass."""

from __future__ import annotations

import copy
import functools
import itertools
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks.capstone_strategies import HIDDEN_OFFSET, HIDDEN_TARGET  # noqa: E402  (the hidden test's literals)
from course_lib import capstone, prune  # noqa: E402
from course_lib.evaluate import model_size_bytes, perplexity  # noqa: E402
from course_lib.granularity import fake_quantize_weight  # noqa: E402
from course_lib.hqq import hqq_quantize_weight  # noqa: E402
from course_lib.llm_int8 import Int8Linear  # noqa: E402
from course_lib.nf4 import fake_quantize_4bit  # noqa: E402
from course_lib.plots import capstone as plots  # noqa: E402

SETTINGS = settings(max_examples=60, deadline=None)


def tiny(device="cpu", seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(96, 40), nn.ReLU(), nn.Linear(40, 7, bias=False)).to(device)


@functools.lru_cache(maxsize=1)
def _course_lm():
    from course_lib.models import load_causal_lm

    return load_causal_lm()


@pytest.fixture(scope="module")
def lm():
    return _course_lm()


# ----------------------------------------------------------------------------------------------
# sizes


def test_layer_size_bytes_closed_forms():
    assert capstone.layer_size_bytes((256, 256), ("rtn", 4, 128)) == (65536 * 4 + 512 * 32) // 8 == 34816
    assert capstone.layer_size_bytes((256, 256), ("gptq", 4, 128)) == 34816                # GPTQ stores RTN's format
    assert capstone.layer_size_bytes((256, 384), ("awq", 3, None)) == (98304 * 3 + 256 * 32 + 384 * 16) // 8
    # 2:4: the kept half, each with its 2-bit position (prune.sparse_bits_per_weight), + the dense shape's groups
    assert capstone.layer_size_bytes((256, 256), ("hqq", 4, 128, "2:4")) == (32768 * 6 + 512 * 32) // 8
    assert capstone.layer_size_bytes((8, 16), ("gptq", 6, None, "2:4")) == \
        (128 * prune.sparse_bits_per_weight(0.5, 6, "nm", 4) + 8 * 32) / 8
    assert capstone.layer_size_bytes((4096, 256), ("rtn", 8, None)) == 4096 * 256 + 4096 * 4  # an int8-per-row embedding
    assert capstone.layer_size_bytes((256, 256), ("hqq", 3, None)) == (65536 * 3 + 256 * 32) // 8
    assert capstone.layer_size_bytes((7, 40), ("nf4", 4, 64)) == math.ceil((280 * 4 + 5 * 32) / 8) == 160  # ragged
    assert capstone.layer_size_bytes((7, 40), ("nf4", 4)) == 160                       # None -> block 64
    assert capstone.layer_size_bytes((384, 256), ("int8", 8)) == 98304 + 384 * 4
    assert capstone.layer_size_bytes((3, 5), ("fp", 16)) == 30
    assert capstone.layer_size_bytes((1, 3), ("rtn", 3, 3)) == math.ceil((9 + 32) / 8)  # rounded up per matrix
    assert capstone.layer_size_bytes(torch.Size([4, 8]), capstone.LayerSpec("rtn", 2, 4)) == (64 + 8 * 32) // 8


@pytest.mark.parametrize("method", ["rtn", "hqq"])
@pytest.mark.parametrize("bits,group", [(4, 128), (3, None), (2, 64), (8, 32)])
def test_uniform_recipe_size_equals_model_size_bytes(lm, method, bits, group):
    model, _ = lm
    assert capstone.recipe_size_bytes(model, {"*": (method, bits, group)}) == model_size_bytes(
        model, bits_per_param=bits, group_size=group, scale_bits=32)


def test_empty_and_fp32_recipes_are_the_stored_size(lm):
    model, _ = lm
    assert capstone.recipe_size_bytes(model, {}) == capstone.recipe_size_bytes(model, {"*": ("fp", 32)}) == model_size_bytes(model)
    assert capstone.recipe_size_bytes(model, {"*": ("fp", 16)}) == model_size_bytes(model) - 2 * sum(
        lin.weight.numel() for lin in capstone._linear_layers(model).values())


def test_the_tied_embedding_is_a_target_counted_once(lm):
    """The course LM ties lm_head to the embedding: one tensor, one recipe target, its bytes counted once."""
    model, _ = lm
    targets = capstone.recipe_targets(model)
    assert list(targets)[0] == "model.embed_tokens" and len(targets) == 29 and "lm_head" not in targets
    assert model.lm_head.weight is targets["model.embed_tokens"].weight
    emb = targets["model.embed_tokens"].weight
    assert capstone.unquantized_bytes(model) == model_size_bytes(model) - 4 * (
        emb.numel() + sum(lin.weight.numel() for lin in capstone._linear_layers(model).values()))
    int4 = capstone.recipe_size_bytes(model, {"model.embed_tokens": ("rtn", 4, None)})
    assert model_size_bytes(model) - int4 == 4 * emb.numel() - (emb.numel() // 2 + emb.shape[0] * 4)
    # "*" means every Linear: the embedding is named exactly, never matched by a wildcard
    assert capstone.resolve_recipe(model, {"*": ("rtn", 3, 128)})["model.embed_tokens"] == ("fp", 32, None, None)


def test_mixed_recipe_size_is_the_sum_of_its_layers():
    m = tiny()
    recipe = {"*": ("nf4", 4, 64), "2": ("int8", 8)}
    rest = sum(p.numel() * 4 for n, p in m.named_parameters() if not n.endswith("weight"))
    assert capstone.unquantized_bytes(m) == rest == 40 * 4
    assert capstone.recipe_size_bytes(m, recipe) == rest + capstone.layer_size_bytes((40, 96), ("nf4", 4)) + \
        capstone.layer_size_bytes((7, 40), ("int8", 8))


def test_nf4_size_matches_bitsandbytes_packed_state_dict(lm):
    """Independent reference: bitsandbytes' Linear4bit really packs the weights; its state dict holds our bytes
    plus, per layer, the 16-entry float32 codebook (quant_map) and the serialized quantization state."""
    pytest.importorskip("bitsandbytes")
    from course_lib import nf4

    model, _ = lm
    q = nf4.bnb_linear4bit_model(copy.deepcopy(model), "nf4", 64, compress_statistics=False, skip=("lm_head",))
    constants = sum(t.numel() * t.element_size() for k, t in q.state_dict().items()
                    if k.endswith("quant_map") or ".quant_state." in k)
    assert model_size_bytes(q) - constants == capstone.recipe_size_bytes(model, {"*": ("nf4", 4, 64)})


# ----------------------------------------------------------------------------------------------
# resolving and applying recipes


def test_later_entries_win_and_unmatched_layers_stay_float(lm):
    model, _ = lm
    specs = capstone.resolve_recipe(model, {"*.mlp.*": ("rtn", 3, 128), "model.layers.1.*": ("hqq", 4, 64),
                                            "*.up_proj": ("gptq", 4, None, "2:4")})
    assert len(specs) == 29
    assert specs["model.layers.0.mlp.gate_proj"] == ("rtn", 3, 128, None)
    assert specs["model.layers.1.mlp.gate_proj"] == ("hqq", 4, 64, None)
    assert specs["model.layers.1.mlp.up_proj"] == ("gptq", 4, None, "2:4")
    assert specs["model.layers.0.self_attn.q_proj"] == ("fp", 32, None, None)
    assert capstone.resolve_recipe(model, {"*": ("nf4", 4)})["model.layers.3.mlp.down_proj"] == ("nf4", 4, 64, None)


BAD_RECIPES = [
    (["*", ("rtn", 4)], TypeError, "recipe"),
    ({3: ("rtn", 4)}, TypeError, "recipe keys"),
    ({"": ("rtn", 4)}, TypeError, "recipe keys"),
    ({"*.q_pro": ("rtn", 4)}, ValueError, "matches no"),
    ({"*": ("spqr", 4)}, ValueError, "method"),
    ({"*": ("gptq", 9)}, ValueError, "bits"),
    ({"*": ("awq", 4, 96)}, ValueError, "must divide"),
    ({"*": ("rtn", 4, 128, "1:4")}, ValueError, "sparsity"),
    ({"*": ("nf4", 4, 64, "2:4")}, ValueError, "combines only"),
    ({"*": ("int8", 8, None, "2:4")}, ValueError, "combines only"),
    ({"model.embed_tokens": ("gptq", 4, 128)}, ValueError, "embedding"),
    ({"model.embed_tokens": ("int8", 8)}, ValueError, "embedding"),
    ({"model.embed_tokens": ("rtn", 4, 128, "2:4")}, ValueError, "embedding"),
    ({"model.embed_*": ("rtn", 4)}, ValueError, "named exactly"),
    ({"*": ("rtn", 1)}, ValueError, "bits"),
    ({"*": ("rtn", 9, 128)}, ValueError, "bits"),
    ({"*": ("hqq", 4.0)}, TypeError, "bits"),
    ({"*": ("rtn", True)}, TypeError, "bits"),
    ({"*": ("nf4", 3)}, ValueError, "bits"),
    ({"*": ("int8", 4)}, ValueError, "bits"),
    ({"*": ("fp", 8)}, ValueError, "bits"),
    ({"*": ("fp", 16, 64)}, ValueError, "group_size"),
    ({"*": ("int8", 8, 128)}, ValueError, "group_size"),
    ({"*": ("rtn", 4, 100)}, ValueError, "must divide"),
    ({"*": ("rtn", 4, 0)}, ValueError, "group_size"),
    ({"*": ("rtn", 4, True)}, TypeError, "group_size"),
    ({"*": "rtn"}, TypeError, "spec"),
    ({"*": ("rtn", 4, 128, "2:4", 1)}, TypeError, "spec"),
]


@pytest.mark.parametrize("recipe,exc,mention", BAD_RECIPES)
def test_bad_recipes_raise_clear_errors(lm, recipe, exc, mention):
    model, _ = lm
    with pytest.raises(exc, match=mention):
        capstone.recipe_size_bytes(model, recipe)


@pytest.mark.parametrize("call", [
    lambda: capstone.resolve_recipe("model", {}),
    lambda: capstone.layer_size_bytes((0, 4), ("rtn", 4)),
    lambda: capstone.layer_size_bytes((4,), ("rtn", 4)),
    lambda: capstone.layer_size_bytes((4, 6), ("rtn", 4, 4)),
    lambda: capstone.extrapolate_sensitivity({}, 2),
    lambda: capstone.extrapolate_sensitivity({"a": float("nan")}, 2),
    lambda: capstone.extrapolate_sensitivity({"a": 1.0}, 1),
    lambda: capstone.extrapolate_sensitivity({"a": 1.0}, 2, options=(1,)),
    lambda: capstone.bits_recipe({}),
    lambda: capstone.eval_text(1),
    lambda: capstone.heldout_text(0),
    lambda: capstone.heldout_text(offset=1.0),
    lambda: capstone.heldout_text(offset=-0.1),
    lambda: capstone.evaluate_recipe(_course_lm()[0], _course_lm()[1], {}, keep_model="yes"),
    lambda: capstone.recipe_targets("model"),
    lambda: capstone.calibration_windows(None, 0),
    lambda: capstone.recipe_latency(tiny(), {}, device="cpu"),
    lambda: capstone.recipe_latency(tiny(), {}, batch=0),
    lambda: capstone.apply_recipe(tiny(), {"0": ("gptq", 4, 32)}, calib_ids=torch.zeros(2, 8, dtype=torch.long)),
    lambda: capstone.apply_recipe(copy.deepcopy(_course_lm()[0]), {"*": ("gptq", 4, 128)}),       # no tokenizer, no windows
    lambda: capstone.apply_recipe(copy.deepcopy(_course_lm()[0]), {"*": ("awq", 4, 128)}, calib_ids=torch.zeros(2, 8)),
])
def test_bad_arguments_raise(call):
    with pytest.raises((TypeError, ValueError)):
        call()


def test_apply_recipe_quantizes_each_layer_as_its_spec_says(device):
    m = tiny(device)
    w0, w2 = m[0].weight.detach().clone(), m[2].weight.detach().clone()
    out = capstone.apply_recipe(m, {"0": ("rtn", 3, 32), "2": ("hqq", 4, 8)})
    assert out is m
    torch.testing.assert_close(m[0].weight.detach(), fake_quantize_weight(w0, 3, 32), rtol=0, atol=0)
    torch.testing.assert_close(m[2].weight.detach(), hqq_quantize_weight(w2, 4, 8), rtol=0, atol=0)
    m = tiny(device)
    capstone.apply_recipe(m, {"0": ("nf4", 4), "2": ("fp", 16)})
    torch.testing.assert_close(m[0].weight.detach(), fake_quantize_4bit(w0, "nf4", 64), rtol=0, atol=0)
    torch.testing.assert_close(m[2].weight.detach(), w2.half().float(), rtol=0, atol=0)
    m = tiny(device)
    capstone.apply_recipe(m, {"0": ("int8", 8)})
    assert isinstance(m[0], Int8Linear) and isinstance(m[2], nn.Linear)
    torch.testing.assert_close(m[2].weight.detach(), w2, rtol=0, atol=0)  # unmatched: untouched
    x = torch.randn(5, 96, device=device)
    ref = nn.functional.linear(x, w0, tiny(device)[0].bias)
    assert (m[0](x) - ref).abs().max() < 0.05 * ref.abs().max()


def test_evaluate_recipe_leaves_the_model_alone(lm):
    model, tokenizer = lm
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = capstone.evaluate_recipe(model, tokenizer, {"*": ("rtn", 2, 128)}, max_tokens=256)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    fp = capstone.evaluate_recipe(model, tokenizer, {}, max_tokens=256)
    assert fp["perplexity"] == perplexity(model, tokenizer, capstone.eval_text(None), max_tokens=256)
    assert r["perplexity"] > fp["perplexity"] and r["size_bytes"] == capstone.recipe_size_bytes(model, {"*": ("rtn", 2, 128)})
    assert r["size_mb"] == r["size_bytes"] / 1e6 and "model" not in r
    kept = capstone.evaluate_recipe(model, tokenizer, {"*": ("rtn", 2, 128)}, max_tokens=256, keep_model=True)
    assert kept["model"] is not model and perplexity(kept["model"], tokenizer, capstone.eval_text(None),
                                                     max_tokens=256) == kept["perplexity"] == r["perplexity"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_eval_text_prefix_gives_the_same_tokens(lm):
    _, tokenizer = lm
    full = tokenizer(capstone.eval_text(None))["input_ids"]
    for n in (2, 512, 1024, 2048):
        assert tokenizer(capstone.eval_text(n))["input_ids"][:n] == full[:n]


def test_embedding_recipe_on_minilm():
    from course_lib.models import load_minilm

    model, tokenizer = load_minilm()
    sentences = capstone._sentences()[:8]
    fp = capstone.evaluate_embedding_recipe(model, tokenizer, {}, sentences=sentences)
    assert fp["cosine"] == pytest.approx(1.0, abs=1e-6) and fp["size_bytes"] == model_size_bytes(model)
    q = capstone.evaluate_embedding_recipe(model, tokenizer, {"*": ("rtn", 3, 128)}, sentences=sentences)
    assert 0.3 < q["cosine"] < 0.999
    assert q["size_bytes"] == model_size_bytes(model, bits_per_param=3, group_size=128, scale_bits=32)


# ----------------------------------------------------------------------------------------------
# Pareto front


def brute_front(pts):
    keep = [i for i, p in enumerate(pts) if not any(q[0] <= p[0] and q[1] <= p[1] and tuple(q) != tuple(p) for q in pts)]
    return sorted(keep, key=lambda i: (pts[i][0], pts[i][1], i))


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)) | st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3)),
                max_size=30))
def test_pareto_front_is_the_set_of_non_dominated_points(pts):
    front = capstone.pareto_front(pts)
    assert front == brute_front(pts)
    ys = [pts[i][1] for i in front]
    assert all(a >= b for a, b in zip(ys, ys[1:]))          # along the front the loss never increases


def test_pareto_front_examples_and_tensor_input():
    assert capstone.pareto_front([(1, 5), (2, 3), (3, 4), (4, 1)]) == [0, 1, 3]
    assert capstone.pareto_front([(2, 2), (1, 3), (2, 2), (3, 3)]) == [1, 0, 2]
    assert capstone.pareto_front([]) == []
    assert capstone.pareto_front(torch.tensor([[1.0, 2.0], [0.5, 3.0], [2.0, 2.0]])) == [1, 0]


@pytest.mark.parametrize("pts", [[(1.0, float("nan"))], [(float("inf"), 1.0)], [(1.0, 2.0, 3.0)], [(1.0,)],
                                 [("a", 1.0)], "points", torch.zeros(3, 3)])
def test_pareto_front_rejects_bad_points(pts):
    with pytest.raises((TypeError, ValueError), match="points"):
        capstone.pareto_front(pts)


# ----------------------------------------------------------------------------------------------
# allocation


def test_extrapolate_sensitivity_is_4x_per_bit():
    t = capstone.extrapolate_sensitivity({"a": 8.0, "b": -0.1}, 2, (3, 4, 8))
    assert t["a"] == {3: 2.0, 4: 0.5, 8: 8.0 / 4 ** 6}
    assert t["b"] == {3: 0.0, 4: 0.0, 8: 0.0}


def test_choose_bits_toy_case_and_errors():
    sens = {"a": {2: 4.0, 4: 1.0}, "b": {2: 1.0, 4: 0.5}, "c": {2: 9.0, 4: 0.1}}
    size = {"a": {2: 10, 4: 20}, "b": {2: 10, 4: 20}, "c": {2: 10, 4: 20}}
    assert capstone.choose_bits(sens, size, 50) == {"a": 4, "b": 2, "c": 4}
    assert capstone.choose_bits(sens, size, 30) == {"a": 2, "b": 2, "c": 2}
    assert capstone.choose_bits(sens, size, 60) == {"a": 4, "b": 4, "c": 4}
    with pytest.raises(ValueError, match="budget"):
        capstone.choose_bits(sens, size, 29)
    with pytest.raises(ValueError, match="same layers"):
        capstone.choose_bits(sens, {"a": size["a"]}, 100)
    with pytest.raises(ValueError, match="same options"):
        capstone.choose_bits({"a": {2: 1.0}}, {"a": {4: 1}}, 100)
    with pytest.raises(ValueError, match="finite"):
        capstone.choose_bits({"a": {2: float("nan")}}, {"a": {2: 1}}, 100)
    with pytest.raises(ValueError, match=">= 0"):
        capstone.choose_bits({"a": {2: 1.0}}, {"a": {2: -1}}, 100)
    with pytest.raises(TypeError, match="budget_bytes"):
        capstone.choose_bits({"a": {2: 1.0}}, {"a": {2: 1}}, None)
    with pytest.raises(ValueError, match="choice"):
        capstone.predicted_increase(sens, {"a": 2})


@SETTINGS
@given(st.integers(1, 7), st.integers(0, 10_000), st.data())
def test_choose_bits_fits_and_stops_only_when_no_upgrade_fits(n_layers, seed, data):
    gen = torch.Generator().manual_seed(seed)
    opts = (2, 3, 4, 8)
    sens = {f"l{i}": {b: float(torch.rand(1, generator=gen)) * 4.0 ** (2 - b) for b in opts} for i in range(n_layers)}
    size = {f"l{i}": {b: int(torch.randint(10, 100, (1,), generator=gen)) * b + 8 for b in opts} for i in range(n_layers)}
    low, high = sum(min(s.values()) for s in size.values()), sum(max(s.values()) for s in size.values())
    budget = data.draw(st.integers(low, high + 10))
    choice = capstone.choose_bits(sens, size, budget)
    used = sum(size[n][o] for n, o in choice.items())
    assert used <= budget
    for n, cur in choice.items():  # maximal: no single improving upgrade still fits
        for o in opts:
            assert not (sens[n][o] < sens[n][cur] and used - size[n][cur] + size[n][o] <= budget)
    if budget >= high:
        assert choice == {n: min(opts, key=lambda o, n=n: sens[n][o]) for n in sens}


@SETTINGS
@given(st.integers(1, 8), st.integers(0, 10_000), st.data())
def test_choose_bits_is_optimal_when_every_upgrade_costs_the_same(n_layers, seed, data):
    """Two options per layer, equal costs: greedy by gain per byte is exact (checked by brute force)."""
    gen = torch.Generator().manual_seed(seed)
    sens = {f"l{i}": {3: 1.0 + float(torch.rand(1, generator=gen)), 4: float(torch.rand(1, generator=gen))}
            for i in range(n_layers)}
    size = {n: {3: 30, 4: 40} for n in sens}
    budget = data.draw(st.integers(30 * n_layers, 40 * n_layers))
    got = capstone.predicted_increase(sens, capstone.choose_bits(sens, size, budget))
    best = min(sum(sens[n][b] for n, b in zip(sens, bits))
               for bits in itertools.product((3, 4), repeat=n_layers)
               if sum(size[n][b] for n, b in zip(sens, bits)) <= budget)
    assert got == pytest.approx(best, abs=1e-12)


# ----------------------------------------------------------------------------------------------
# the capstone's numbers: reference recipe, target, grader


@pytest.fixture(scope="module")
def probe(lm):
    model, tokenizer = lm
    return capstone.layer_sensitivity(model, tokenizer, ("rtn", 2, 128), max_tokens=512, progress=False)


def test_layer_sensitivity_matches_quantizing_one_layer(lm, probe):
    model, tokenizer = lm
    assert len(probe) == 29 and max(probe.values()) > 1.0
    assert list(probe)[0] == "model.embed_tokens" and probe["model.embed_tokens"] == max(probe.values())
    name = max((n for n in probe if n != "model.embed_tokens"), key=probe.get)
    q = copy.deepcopy(model)
    lin = capstone._linear_layers(q)[name]
    with torch.no_grad():
        lin.weight.copy_(fake_quantize_weight(lin.weight, 2, 128))
    text = capstone.eval_text(512)
    expected = perplexity(q, tokenizer, text, max_tokens=512) - perplexity(model, tokenizer, text, max_tokens=512)
    assert probe[name] == pytest.approx(expected, rel=1e-9)
    some = capstone.layer_sensitivity(model, tokenizer, ("rtn", 2, 128), layers=["*.0.self_attn.v_proj"],
                                      max_tokens=512, progress=False)
    assert list(some) == ["model.layers.0.self_attn.v_proj"]
    assert some["model.layers.0.self_attn.v_proj"] == pytest.approx(probe["model.layers.0.self_attn.v_proj"], rel=1e-9)


# The capstone's task and the recipes of benchmarks/capstone_strategies.py (benchmarks/results/capstone_strategies_cpu.md),
# kept out of course_lib so that no learner can call them. The greedy allocation of notebook 14 priced per row (2-bit
# RTN probe, 4x-per-bit, choose_bits over all 29 matrices) gives the embedding 4 bits and three layers 4 bits; filled
# in with HQQ or RTN it misses the target, filled in with GPTQ (strategy A) it passes. Strategy B prices AWQ's stored
# scales into the same allocation, which leaves room for two 4-bit layers. Strategy C stores the embedding with
# groups of 128 and the layer least sensitive to the probe (layers.1.k_proj) at 2 bits with groups of 64, which
# leaves room for two 4-bit layers. Notebook 14's section 5 shows the allocation priced
# with groups of 128 instead (the embedding at 3 bits), filled in with RTN and HQQ; its GPTQ twin passes
# check_recipe's text but not the hidden part.
_EMBED4 = ("hqq", 4, None)


def _allocation(method, four=("model.layers.0.self_attn.v_proj", "model.layers.0.self_attn.o_proj",
                                "model.layers.3.mlp.gate_proj")) -> dict:
    return {"*": (method, 3, None), **{name: (method, 4, None) for name in four}, "model.embed_tokens": _EMBED4}


GREEDY_HQQ = _allocation("hqq")
GREEDY_RTN = _allocation("rtn")
STRATEGY_A = _allocation("gptq")
STRATEGY_B = _allocation("awq", four=("model.layers.0.self_attn.v_proj", "model.layers.0.self_attn.o_proj"))
STRATEGY_C = {"*": ("gptq", 3, None), "model.layers.0.self_attn.v_proj": ("gptq", 4, None),
              "model.layers.0.self_attn.o_proj": ("gptq", 4, None), "model.layers.1.self_attn.k_proj": ("gptq", 2, 64),
              "model.embed_tokens": ("hqq", 4, 128)}
#: notebook 14's section-5 allocation (priced with groups of 128): 11 Linear layers at 4 bits, the embedding at 3
_G128_FOUR = ("0.self_attn.v_proj", "0.self_attn.o_proj", "0.mlp.down_proj", "1.self_attn.o_proj", "2.self_attn.v_proj",
              "2.self_attn.o_proj", "2.mlp.down_proj", "3.self_attn.k_proj", "3.self_attn.o_proj", "3.mlp.gate_proj",
              "3.mlp.down_proj")
GPTQ_TWIN_G128 = {"*": ("gptq", 3, 128), **{f"model.layers.{n}": ("gptq", 4, 128) for n in _G128_FOUR},
                  "model.embed_tokens": ("hqq", 3, 128)}


def _hidden_perplexity(quantized, tokenizer) -> float:
    return perplexity(quantized, tokenizer, capstone.heldout_text(offset=HIDDEN_OFFSET), max_tokens=4096)


def test_the_task_is_what_the_notebook_grades():
    """Notebook 14's test cell states the budget, the target, the held-out tokens and its hidden part's excerpts and
    target as literal numbers; the benchmark that set them uses the same (HIDDEN_OFFSET, HIDDEN_TARGET are its)."""
    nbformat = pytest.importorskip("nbformat")  # the GPU machine has none
    from nbgrader_course import solution_path

    assert (capstone.BUDGET_MB, capstone.TARGET_PERPLEXITY, capstone.HELDOUT_TOKENS, capstone.CALIB_SEED) == \
        (1.45, 35.5, 4096, 0)
    cell = next(c.source for c in nbformat.read(solution_path("14_capstone"), as_version=4).cells
                if c.metadata.get("nbgrader", {}).get("grade_id") == "test_my_recipe")
    visible, hidden = cell.split("### BEGIN HIDDEN TESTS")
    assert "budget_mb=1.45, target=35.5, max_tokens=4096" in visible
    assert f"capstone.heldout_text(offset={HIDDEN_OFFSET}), max_tokens=4096" in hidden
    assert f"hidden <= {HIDDEN_TARGET}," in hidden and "offset" not in visible


def test_the_notebooks_greedy_allocation_is_the_benchmarks(lm, probe):
    """The greedy recipes the tests grade are what notebook 14's tools produce (the probe, the extrapolation,
    choose_bits, bits_recipe), priced per row and with groups of 128 (section 5), and the strategies spend the
    same bytes."""
    model, _ = lm
    table = capstone.extrapolate_sensitivity(probe, 2, (3, 4, 8))
    left = capstone.BUDGET_MB * 1e6 - capstone.unquantized_bytes(model)
    choice = capstone.choose_bits(table, capstone.layer_bytes_table(model, (3, 4, 8), "hqq", None), left)
    assert capstone.resolve_recipe(model, capstone.bits_recipe(choice, "hqq", None)) == \
        capstone.resolve_recipe(model, GREEDY_HQQ)
    g128 = capstone.choose_bits(table, capstone.layer_bytes_table(model, (3, 4, 8), "rtn", 128), left)
    assert g128["model.embed_tokens"] == 3
    twin = {n: ("hqq" if n == "model.embed_tokens" else "gptq", b, 128) for n, b in g128.items()}
    assert capstone.resolve_recipe(model, twin) == capstone.resolve_recipe(model, GPTQ_TWIN_G128)
    for recipe in (GREEDY_HQQ, STRATEGY_A, STRATEGY_B, STRATEGY_C, GPTQ_TWIN_G128):
        assert capstone.BUDGET_MB * 1e6 - 8000 < capstone.recipe_size_bytes(model, recipe) <= capstone.BUDGET_MB * 1e6


@pytest.mark.slow
def test_the_greedy_recipes_fail_and_three_strategies_pass(lm):
    """The capstone's promise (issue 23), graded as test_my_recipe grades (calibration seed 0): the greedy RTN/HQQ
    allocations miss the targets, strategies A (GPTQ), B (AWQ) and C (GPTQ, the embedding in groups of 128) reach
    both, with margins (the margins over calibration seeds 0-4 are in the benchmark's results file).
    Uniform GPTQ 3-bit and the GPTQ twin of section 5's recipe pass check_recipe's text, not the hidden part."""
    model, tokenizer = lm
    greedy = capstone.evaluate_recipe(model, tokenizer, GREEDY_HQQ, text=capstone.heldout_text(), max_tokens=4096)
    assert greedy["perplexity"] >= capstone.TARGET_PERPLEXITY + 0.5
    with pytest.raises(AssertionError, match="above the target"):
        capstone.check_recipe(GREEDY_RTN, model, tokenizer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for recipe in (STRATEGY_A, STRATEGY_B, STRATEGY_C):
        result = capstone.check_recipe(recipe, model, tokenizer)
        assert result["perplexity"] <= capstone.TARGET_PERPLEXITY - 0.3 and result["size_mb"] <= capstone.BUDGET_MB
        assert perplexity(result["model"], tokenizer, capstone.heldout_text(), max_tokens=4096) == result["perplexity"]
        assert _hidden_perplexity(result["model"], tokenizer) <= HIDDEN_TARGET - 0.3
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    for recipe in ({"*": ("gptq", 3, None), "model.embed_tokens": _EMBED4}, GPTQ_TWIN_G128):
        result = capstone.check_recipe(recipe, model, tokenizer)
        assert _hidden_perplexity(result["model"], tokenizer) >= HIDDEN_TARGET + 0.3
    with pytest.raises(AssertionError, match="over the budget"):
        capstone.check_recipe({"*": ("gptq", 3, 128), "model.embed_tokens": _EMBED4}, model, tokenizer)
    with pytest.raises(AssertionError, match="not valid"):
        capstone.check_recipe({"*": ("spqr", 4)}, model, tokenizer)
    with pytest.raises(AssertionError, match="quantizes no layer"):
        capstone.check_recipe({"*": ("fp", 32)}, model, tokenizer, budget_mb=100.0)


@pytest.mark.slow
def test_the_greedy_allocations_miss_the_hidden_target(lm):
    """The hidden part alone fails the greedy allocations too, per row and with groups of 128 (RTN and HQQ)."""
    model, tokenizer = lm
    for method in ("rtn", "hqq"):
        for recipe in (_allocation(method), {n: (method, b, g) for n, (_, b, g) in GPTQ_TWIN_G128.items()}):
            q = capstone.apply_recipe(copy.deepcopy(model), recipe)
            assert _hidden_perplexity(q, tokenizer) >= HIDDEN_TARGET + 0.5, recipe


# ----------------------------------------------------------------------------------------------
# calibrated recipes: each layer as its method computes it on the inputs it would really see


def _block0_inputs(model, ids):
    """The input of block 0's q/k/v (the first norm of the embedding), computed directly."""
    with torch.no_grad():
        x = model.model.layers[0].input_layernorm(model.model.embed_tokens(ids))
    return x.reshape(-1, x.shape[-1])


def _mismatch(a, b, atol=1e-5):
    """Share of elements that differ by more than atol (GPTQ's rounding may flip a tie when a Hessian is summed
    in another order)."""
    return float(((a - b).abs() > atol).float().mean())


def test_gptq_and_2_4_layers_are_computed_on_their_calibration_inputs(lm):
    from course_lib import gptq

    model, tokenizer = lm
    ids = capstone.calibration_windows(tokenizer, 4, 32)
    q_name, k_name = "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj"
    got = capstone.apply_recipe(copy.deepcopy(model), {q_name: ("gptq", 3, 128), k_name: ("rtn", 4, 128, "2:4")},
                                calib_ids=ids)
    H = gptq.hessian_from_inputs(_block0_inputs(model, ids))
    expected = gptq.gptq_quantize_weight(model.get_submodule(q_name).weight.detach(), H, 3, 128).weight
    assert _mismatch(got.get_submodule(q_name).weight.detach(), expected) < 1e-3
    pruned, mask = prune.sparsegpt_prune(model.get_submodule(k_name).weight.detach(), H, nm=(2, 4))
    sparse = got.get_submodule(k_name).weight.detach()
    assert _mismatch(sparse, fake_quantize_weight(pruned, 4, 128) * mask) < 1e-3
    assert int((sparse.reshape(-1, 4) != 0).sum(dim=1).max()) <= 2                 # 2 of every 4 kept
    untouched = "model.layers.0.self_attn.v_proj"
    assert torch.equal(got.get_submodule(untouched).weight, model.get_submodule(untouched).weight)


def test_awq_layer_searches_its_scales_on_its_own_output(lm):
    from course_lib import awq

    model, tokenizer = lm
    ids = capstone.calibration_windows(tokenizer, 4, 32)
    name = "model.layers.0.self_attn.q_proj"  # q and k: no clip search (llm-awq's rule)
    got = capstone.apply_recipe(copy.deepcopy(model), {name: ("awq", 3, 64)}, calib_ids=ids)
    lin = copy.deepcopy(model.get_submodule(name))
    x = _block0_inputs(model, ids)
    scales, _, _ = awq.search_scale(lin, [lin], x, 3, 64)
    expected = awq.scaled_fake_quantize(lin.weight.detach(), scales, 3, 64)
    assert _mismatch(got.get_submodule(name).weight.detach(), expected) < 1e-3


def test_later_layers_are_calibrated_on_what_is_already_quantized(lm):
    """o_proj's GPTQ Hessian comes from the outputs of the quantized q/k/v (GPTQ's sequential order), measured here
    with a hook on a whole-model forward pass of a copy whose q/k/v are quantized."""
    from course_lib import gptq

    model, tokenizer = lm
    ids = capstone.calibration_windows(tokenizer, 4, 32)
    qkv = {"*.0.self_attn.[qkv]_proj": ("rtn", 2, 128)}
    o_name = "model.layers.0.self_attn.o_proj"
    got = capstone.apply_recipe(copy.deepcopy(model), {**qkv, o_name: ("gptq", 3, 128)}, calib_ids=ids)
    ref = capstone.apply_recipe(copy.deepcopy(model), qkv)
    seen = []
    handle = ref.get_submodule(o_name).register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    with torch.no_grad():
        ref(ids, use_cache=False)
    handle.remove()
    H = gptq.hessian_from_inputs(torch.cat(seen).reshape(-1, seen[0].shape[-1]))
    expected = gptq.gptq_quantize_weight(model.get_submodule(o_name).weight.detach(), H, 3, 128).weight
    assert _mismatch(got.get_submodule(o_name).weight.detach(), expected) < 1e-3
    float_h = capstone.apply_recipe(copy.deepcopy(model), {o_name: ("gptq", 3, 128)}, calib_ids=ids)
    assert not torch.equal(float_h.get_submodule(o_name).weight, got.get_submodule(o_name).weight)


def test_embedding_recipes_quantize_the_tied_table_once(lm):
    model, _ = lm
    q = capstone.apply_recipe(copy.deepcopy(model), {"model.embed_tokens": ("rtn", 4, None)})
    w = model.model.embed_tokens.weight.detach()
    torch.testing.assert_close(q.model.embed_tokens.weight.detach(), fake_quantize_weight(w, 4, None), rtol=0, atol=0)
    assert q.lm_head.weight is q.model.embed_tokens.weight                           # still tied: lm_head too
    assert torch.equal(q.model.layers[0].self_attn.q_proj.weight, model.model.layers[0].self_attn.q_proj.weight)


def test_heldout_text_is_the_second_half_and_no_tool_reads_it(lm):
    from course_lib.data import corpus_text

    _, tokenizer = lm
    dev, half = capstone.eval_text(None), capstone.heldout_text(None)
    assert dev + "\n" + half == corpus_text("eval")
    pieces = capstone.heldout_text().split("\n")
    assert all(piece in half for piece in pieces)
    assert len(tokenizer(capstone.heldout_text())["input_ids"]) >= capstone.HELDOUT_TOKENS
    assert capstone.heldout_text(offset=0) == capstone.heldout_text()
    graded, others = capstone.heldout_text(), capstone.heldout_text(offset=HIDDEN_OFFSET)  # the hidden part's excerpts:
    assert all(piece in half for piece in others.split("\n"))          # the same half, no stretch of check_recipe's
    assert not any(others[i:i + 200] in graded for i in range(0, len(others) - 200, 50))  # (short lines repeat)
    assert len(tokenizer(others)["input_ids"]) >= capstone.HELDOUT_TOKENS


def test_each_layer_gets_the_kernel_of_its_storage():
    """recipe_latency's choice (checked here without a GPU): int4 for 4-bit grouped codes, nf4, else cuBLAS fp16."""
    kernel = capstone._kernel_for
    assert [kernel(capstone.LayerSpec(m, 4, 128), 256) for m in ("rtn", "hqq", "gptq", "awq")] == ["int4"] * 4
    assert kernel(capstone.LayerSpec("rtn", 4, None), 384) == "int4"                 # one group per row of 384
    assert kernel(capstone.LayerSpec("rtn", 4, 16), 256) == "fp16"                   # the CUDA kernel needs 32 | group
    assert kernel(capstone.LayerSpec("nf4", 4, 64), 256) == "nf4"
    for spec in (("rtn", 3, 128), ("gptq", 8, None), ("int8", 8), ("fp", 16), ("hqq", 4, 128, "2:4")):
        assert kernel(capstone.LayerSpec(*spec), 256) == "fp16", spec


@pytest.mark.gpu
def test_recipe_latency_times_the_course_kernels(lm):
    if not torch.cuda.is_available():
        pytest.skip("recipe_latency needs a CUDA GPU")
    model, _ = lm
    int4 = capstone.recipe_latency(model, {"*": ("rtn", 4, 128)}, repeats=20)
    assert set(int4["kernels"].values()) == {"int4"} and int4["without_kernel"] == 0 and int4["microseconds"] > 0
    mixed = capstone.recipe_latency(model, {"*": ("nf4", 4), "*.mlp.*": ("gptq", 3, None)}, repeats=20)
    assert sorted(set(mixed["kernels"].values())) == ["fp16", "nf4"] and mixed["without_kernel"] == 12


def test_uniform_points_rows(lm):
    model, tokenizer = lm
    emb = ("rtn", 4, None)
    rows = capstone.uniform_points(model, tokenizer, max_tokens=256, settings=((4, 128),), calibrated=(), embedding=emb,
                                   progress=False)
    assert [r["method"] for r in rows] == ["fp32", "fp16", "int8", "NF4", "RTN", "HQQ"]
    assert rows[0]["size_mb"] * 1e6 == model_size_bytes(model)
    saved = model_size_bytes(model) - capstone.recipe_size_bytes(model, {"model.embed_tokens": emb})
    assert rows[4]["size_mb"] * 1e6 == model_size_bytes(model, bits_per_param=4, group_size=128, scale_bits=32) - saved
    assert [r["size_mb"] * 1e6 for r in rows[1:4]] == [capstone.recipe_size_bytes(model, {"*": spec, "model.embed_tokens": emb})
                                                       for spec in (("fp", 16), ("int8", 8), ("nf4", 4, 64))]
    assert rows[1]["perplexity"] > rows[0]["perplexity"] and rows[4]["perplexity"] > rows[1]["perplexity"]


# ----------------------------------------------------------------------------------------------
# plots and widget


def test_plots_return_figures():
    rows = [{"method": "fp32", "bits": 32, "group_size": None, "perplexity": 27.0, "size_mb": 13.0},
            {"method": "RTN", "bits": 4, "group_size": 128, "perplexity": 28.0, "size_mb": 5.4},
            {"method": "RTN", "bits": 3, "group_size": 128, "perplexity": 32.0, "size_mb": 5.1}]
    fig = plots.plot_pareto(rows, budget_mb=5.25, target=29.0, zoom=(5.0, 5.6),
                            highlight=[{"method": "mine", "perplexity": 28.5, "size_mb": 5.2, "label": "mine"}])
    assert isinstance(fig, matplotlib.figure.Figure)
    sens = {f"model.layers.{b}.mlp.{k}": float(b) for b in range(2) for k in ("up_proj", "down_proj")}
    for fig in (plots.plot_sensitivity(sens), plots.plot_allocation({k: 3 for k in sens}),
                plots.plot_allocation({k: ("rtn", 4, 128) for k in sens})):
        assert isinstance(fig, matplotlib.figure.Figure)
    plt.close("all")


def test_widget_updates_without_a_browser(lm):
    from course_lib.widgets import capstone as widgets

    model, tokenizer = lm
    box = widgets.recipe_explorer(model, tokenizer, max_tokens=256, reference=27.0, guide=30.0)
    first = box.last
    assert first["fits"] and "MB" in box.readout.value and "guide 30.00" in box.readout.value
    assert first["recipe"]["model.embed_tokens"] == ("hqq", 4, None)
    box.attn_bits.value = 8
    assert not box.last["fits"] and "over the budget" in box.readout.value
    box.attn_bits.value = 2
    assert box.last["perplexity"] > first["perplexity"] and box.last["size_mb"] < first["size_mb"]
    box.embedding.value = "float32"
    result = box.update()
    assert result is box.last and "model.embed_tokens" not in result["recipe"] and not result["fits"]
    assert result["recipe"]["*.mlp.*"] == ("rtn", 3, None)
    plt.close("all")


def test_the_student_notebook_shows_no_passing_recipe(lm):
    """The release evaluates recipes (to show how) but none that passes, nor one a word away: every recipe written
    in a visible code cell misses the budget or the target, and the greedy allocation it fills in with RTN and HQQ is
    priced with groups of 128 (the embedding at 3 bits), whose GPTQ twin misses the hidden part (checked above);
    the per-row allocation of strategy A is never built."""
    import ast

    nbformat = pytest.importorskip("nbformat")  # the GPU machine has none
    from nbgrader_course import release_path

    model, tokenizer = lm
    release = nbformat.read(release_path("14_capstone"), as_version=4)
    recipes, filled, priced = [], [], []
    for cell in release.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or meta.get("solution") or meta.get("grade"):
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Dict) and node.keys and all(isinstance(k, ast.Constant) and isinstance(k.value, str)
                                                                and ("*" in k.value or k.value.startswith("model."))
                                                                for k in node.keys):
                recipes.append(ast.literal_eval(node))
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "bits_recipe":
                filled.append((ast.unparse(node.args[0]), *map(ast.literal_eval, node.args[1:])))
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "choose_bits":
                priced.append(ast.unparse(node))
    assert filled == [("allocation", "rtn", 128), ("allocation", "hqq", 128)], filled
    assert priced == ["capstone.choose_bits(sensitivity, layer_bytes_g128, layer_budget)"], priced
    source = "\n".join(c.source for c in release.cells if c.cell_type == "code")
    assert 'layer_bytes_g128 = capstone.layer_bytes_table(model, OPTIONS, "rtn", 128)' in source
    text = "\n".join(c.source for c in release.cells if c.cell_type == "markdown")
    assert "capstone_strategies" not in text + source and "REFERENCES" not in text + source
    checked = 0
    for recipe in recipes:
        try:
            capstone.resolve_recipe(model, recipe)
        except ValueError:  # section 6's recipes are MiniLM's, not the course LM's
            continue
        with pytest.raises(AssertionError, match="over the budget|above the target"):
            capstone.check_recipe(recipe, model, tokenizer)
        checked += 1
    assert checked >= 5, recipes
