"""course_lib.awq: closed forms, folding invariance, the search's guarantees, bad input, the course LM."""

from __future__ import annotations

import copy
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch import nn  # noqa: E402

from course_lib import awq, granularity, lm_quant  # noqa: E402
from course_lib.plots import awq as plots  # noqa: E402

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _randn(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def _outlier_inputs(tokens=512, channels=64, salient=(3, 17), factor=30.0, seed=0):
    """Activations with a few large channels, as in an LLM."""
    x = _randn(tokens, channels, seed=seed)
    x[:, list(salient)] *= factor
    return x


def _linear(w, device):
    lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(w)
    return lin.to(device)


@pytest.fixture(scope="module")
def course_lm():
    from course_lib.models import load_causal_lm
    return load_causal_lm()


# ----------------------------------------------------------------------------------------------
# the private quantizer is granularity's, bit for bit


@SETTINGS
@given(bits=st.integers(2, 8), group=st.sampled_from([None, 4, 8, 16]), rows=st.integers(1, 6),
       seed=st.integers(0, 10_000), shift=st.floats(-2, 2))
def test_fast_quantizer_matches_granularity(bits, group, rows, seed, shift):
    w = _randn(rows, 32, seed=seed) + shift
    assert torch.equal(awq._fake_quantize(w, bits, group), granularity.fake_quantize_weight(w, bits, group))


def test_fast_quantizer_zero_and_constant(device):
    for w in (torch.zeros(3, 8, device=device), torch.full((2, 8), 0.7, device=device)):
        assert torch.equal(awq._fake_quantize(w, 4, 8), granularity.fake_quantize_weight(w, 4, 8))


def _llm_awq_style_quantize(w, bits, group):
    """llm-awq's group quantizer, written from its description: the raw min and max of each group (not widened to
    contain 0), (max - min) clamped at 1e-5, an integer zero point."""
    g = w.reshape(-1, group)
    qmax = 2**bits - 1
    lo, hi = g.amin(dim=1, keepdim=True), g.amax(dim=1, keepdim=True)
    step = (hi - lo).clamp(min=1e-5) / qmax
    zero = (-torch.round(lo / step)).clamp(0, qmax)
    return ((torch.round(g / step) + zero).clamp(0, qmax) - zero).mul(step).reshape(w.shape)


def test_quantizer_range_against_llm_awq(course_lm):
    """The course widens each group's range to contain 0 (granularity's RTN, so that ratio 0 is exactly the RTN
    baseline); llm-awq does not. Groups with both signs quantize bit for bit the same, and every group of 128 (and
    64) of the course LM has both signs. On one-signed groups they differ either way: near 0 llm-awq's tighter range
    is finer; far from 0 its zero point, clamped to the code range, clips the group's top."""
    mixed = _randn(64, 128, seed=40, scale=0.02)
    for bits in (3, 4):
        assert torch.equal(awq._fake_quantize(mixed, bits, 128), _llm_awq_style_quantize(mixed, bits, 128))

    def mse_ratio(shift):  # course / llm-awq, 3 bits, weights of size 0.02 shifted away from 0
        w = _randn(64, 128, seed=41, scale=0.02).abs() + shift * 0.02
        return ((awq._fake_quantize(w, 3, 128) - w).pow(2).mean() / (_llm_awq_style_quantize(w, 3, 128) - w).pow(2).mean()).item()

    assert mse_ratio(0.1) > 1.03 and mse_ratio(2.0) < 0.5
    for group in (64, 128):
        for name, lin in lm_quant.linear_layers(course_lm[0]).items():
            g = lin.weight.detach().reshape(-1, group)
            assert bool(((g.amin(dim=1) < 0) & (g.amax(dim=1) > 0)).all()), f"{name}: a one-signed group of {group}"


# ----------------------------------------------------------------------------------------------
# activation_scales, awq_scales, scaled_fake_quantize


def test_activation_scales_closed_form(device):
    x = torch.tensor([[1.0, -2.0, 0.0], [3.0, 4.0, 0.0]], device=device)
    out = awq.activation_scales(x)
    assert out.dtype == torch.float32 and out.device.type == device
    assert out.tolist() == [2.0, 3.0, 0.0]
    x3 = _randn(2, 5, 6).to(device)
    assert torch.allclose(awq.activation_scales(x3), awq.activation_scales(x3.reshape(10, 6)))
    assert torch.allclose(awq.activation_scales(x3.half()), awq.activation_scales(x3.half().float()))


def test_awq_scales_closed_form(device):
    act = torch.tensor([1.0, 4.0], device=device)
    assert torch.equal(awq.awq_scales(act, 0.0), torch.ones(2, device=device))
    s = awq.awq_scales(act, 0.5)  # [1, 2] / sqrt(2)
    assert torch.allclose(s, torch.tensor([2**-0.5, 2**0.5], device=device))
    s = awq.awq_scales(torch.tensor([0.0, 1.0], device=device), 0.5)  # clamp at 1e-4: [1e-4, 1] / 1e-2
    assert torch.allclose(s, torch.tensor([1e-2, 1e2], device=device))


@SETTINGS
@given(seed=st.integers(0, 10_000), ratio=st.floats(0, 1))
def test_awq_scales_are_balanced(seed, ratio):
    act = _randn(40, seed=seed).abs() * 5
    s = awq.awq_scales(act, ratio)
    assert bool((s > 0).all())
    assert math.isclose((s.max() * s.min()).item(), 1.0, rel_tol=1e-5)
    # monotone in act: a larger activation never gets a smaller scale
    order = torch.argsort(act)
    assert bool((s[order].diff() >= -1e-6).all())


def test_scaled_fake_quantize_unit_and_power_of_two_scales(device):
    w = _randn(8, 32, seed=1).to(device)
    rtn = granularity.fake_quantize_weight(w, 4, 16)
    assert torch.equal(awq.scaled_fake_quantize(w, torch.ones(32, device=device), 4, 16), rtn)
    # one power of two per group: min-max quantization is scale-equivariant, exactly
    s = torch.tensor([2.0] * 16 + [0.25] * 16, device=device)
    assert torch.equal(awq.scaled_fake_quantize(w, s, 4, 16), rtn)
    assert awq.scaled_fake_quantize(w.half(), s, 4, 16).dtype == torch.float16


def test_scaling_protects_a_salient_column(device):
    """Scaling a column up shrinks its relative rounding error (the paper's argument)."""
    w = _randn(64, 32, seed=2).to(device)
    s = torch.ones(32, device=device)
    s[5] = 2.0
    err_rtn = (granularity.fake_quantize_weight(w, 3, None) - w)[:, 5].abs().mean()
    err_awq = (awq.scaled_fake_quantize(w, s, 3, None) - w)[:, 5].abs().mean()
    assert err_awq < err_rtn


# ----------------------------------------------------------------------------------------------
# search_scale


def test_search_scale_uniform_activations_pick_ratio_zero(device):
    """mean|x| equal in every channel: every ratio gives s = 1, all losses tie, ratio 0 wins."""
    signs = torch.randint(0, 2, (256, 32), generator=torch.Generator().manual_seed(3)) * 2.0 - 1.0
    lin = _linear(_randn(16, 32, seed=4), device)
    scales, ratio, losses = awq.search_scale(lin, [lin], signs.to(device), 3, 16)
    assert ratio == 0.0
    assert len(losses) == 20 and len(set(losses)) == 1
    assert torch.equal(scales, torch.ones(32, device=device))


def test_search_scale_loss_never_worse_than_rtn(device):
    x = _outlier_inputs().to(device)
    w = _randn(48, 64, seed=5).to(device)
    lin = _linear(w, device)
    scales, ratio, losses = awq.search_scale(lin, [lin], x, 3, 32)
    rtn_loss = (x @ granularity.fake_quantize_weight(w, 3, 32).T - x @ w.T).pow(2).mean().item()
    assert math.isclose(losses[0], rtn_loss, rel_tol=1e-4)
    assert min(losses) <= losses[0]
    assert ratio > 0 and losses[round(ratio * 20)] == min(losses) < 0.7 * rtn_loss  # outliers: scaling helps a lot
    assert torch.allclose(scales, awq.awq_scales(awq.activation_scales(x), ratio))
    assert torch.equal(lin.weight, w)  # restored


def test_search_scale_group_and_module(device):
    """A group of two linears inside an MLP-like module; loss on the module's output."""
    x = _outlier_inputs(channels=32, salient=(1,)).to(device)
    mlp = nn.Sequential(nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 32)).to(device)
    before = copy.deepcopy(mlp.state_dict())
    _, ratio, losses = awq.search_scale(mlp, [mlp[0]], x, 4, 16, n_grid=10)
    assert len(losses) == 10 and min(losses) <= losses[0]
    assert all(torch.equal(before[k], v) for k, v in mlp.state_dict().items())


# ----------------------------------------------------------------------------------------------
# fold_scales: the fp model is unchanged


def test_fold_scales_into_linear_and_norm(device):
    torch.manual_seed(0)
    x = _randn(10, 16, seed=6).to(device)
    for prev in (nn.LayerNorm(16), nn.Linear(16, 16)):
        prev = prev.to(device)
        with torch.no_grad():
            for p in prev.parameters():
                p.add_(torch.randn_like(p) * 0.3)
        fcs = [nn.Linear(16, 8).to(device), nn.Linear(16, 5).to(device)]
        ref = [fc(prev(x)) for fc in fcs]
        s = torch.rand(16, generator=torch.Generator().manual_seed(7)).to(device) * 4 + 0.1
        awq.fold_scales(prev, fcs, s)
        for fc, r in zip(fcs, ref):
            assert torch.allclose(fc(prev(x)), r, atol=1e-5, rtol=1e-5)


def test_fold_scales_leave_a_course_lm_block_unchanged(course_lm, device):
    model, tok = course_lm
    block = copy.deepcopy(lm_quant.decoder_blocks(model)[1]).to(device)
    ids = lm_quant.calibration_ids(tok, 2, 32)
    (hidden, kwargs), = lm_quant.capture_block_inputs(model, ids)
    hidden = hidden.to(device)
    kwargs = {k: (tuple(t.to(device) for t in v) if isinstance(v, tuple) else
                  v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
    ref = lm_quant.run_block(block, [(hidden, kwargs)])[0][0]
    gen = torch.Generator().manual_seed(8)
    groups = awq.scale_groups(block)
    assert [g.name for g in groups] == ["input_layernorm -> q, k, v", "v_proj -> o_proj",
                                        "post_attention_layernorm -> gate, up", "up_proj -> down_proj"]
    for g in groups:
        n = g.linears[0].in_features
        awq.fold_scales(g.prev, g.linears, (torch.rand(n, generator=gen) * 8 + 0.125).to(device))
    out = lm_quant.run_block(block, [(hidden, kwargs)])[0][0]
    assert (out - ref).abs().max().item() <= 1e-4 * ref.abs().max().item()


def test_scale_groups_skip_v_o_with_grouped_query_attention():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer
    cfg = LlamaConfig(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2)
    names = [g.name for g in awq.scale_groups(LlamaDecoderLayer(cfg, 0))]
    assert "v_proj -> o_proj" not in names and len(names) == 3


# ----------------------------------------------------------------------------------------------
# search_clip, apply_clip


def test_apply_clip_closed_form(device):
    w = torch.tensor([[1.0, -3.0, 2.0, 0.5]], device=device)
    out = awq.apply_clip(w, torch.tensor([[1.5, 0.25]], device=device), 2)
    assert out.tolist() == [[1.0, -1.5, 0.25, 0.25]]


def _group_errors(w, x, q, group):
    xg = x.reshape(x.shape[0], -1, group)
    ref = torch.einsum("tng,ong->otn", xg, w.reshape(w.shape[0], -1, group))
    return (torch.einsum("tng,ong->otn", xg, q.reshape(w.shape[0], -1, group)) - ref).pow(2).mean(1)


def test_search_clip_never_worse_than_no_clip(device):
    w = _randn(24, 64, seed=9).to(device)
    w[0, 3] = 8.0  # an outlier weight: clipping should shrink its group
    x = _randn(300, 64, seed=10).to(device)
    m = awq.search_clip(w, x, 3, 32)
    full = w.abs().reshape(24, 2, 32).amax(-1)
    assert m.shape == (24, 2) and m.dtype == torch.float32
    assert bool((m <= full + 1e-6).all()) and bool((m >= full * 0.55 - 1e-6).all())
    assert m[0, 0] < full[0, 0]
    xs = x[:: max(1, x.shape[0] // awq.CLIP_TOKENS)]
    err_clip = _group_errors(w, xs, granularity.fake_quantize_weight(awq.apply_clip(w, m, 32), 3, 32), 32)
    err_none = _group_errors(w, xs, granularity.fake_quantize_weight(w, 3, 32), 32)
    assert bool((err_clip <= err_none * (1 + 1e-5) + 1e-9).all())
    assert err_clip.sum() < err_none.sum()


def test_search_clip_per_channel_and_no_shrink(device):
    w, x = _randn(6, 16, seed=11).to(device), _randn(40, 16, seed=12).to(device)
    m = awq.search_clip(w, x, 4, None, max_shrink=0.0)
    assert torch.equal(m, w.abs().amax(dim=1, keepdim=True))


def test_clip_errors_against_a_loop(device):
    """clip_errors against a direct computation: one channel and group at a time, each clamped alone and
    quantized by granularity.fake_quantize_weight, on the strided token subsample."""
    w, x = _randn(5, 24, seed=13).to(device), _randn(3, 70, 24, seed=14).to(device)
    max_val = (w.abs().reshape(5, 3, 8).amax(-1) * torch.linspace(0.5, 1.0, 15).reshape(5, 3).to(device))
    got = awq.clip_errors(w, x, max_val, 3, 8, n_tokens=50)
    tokens = x.reshape(-1, 24)[:: 210 // 50]
    assert got.shape == (5, 3) and got.dtype == torch.float32 and got.device == w.device
    for o in range(5):
        for n in range(3):
            cols = slice(8 * n, 8 * n + 8)
            clamped = w.clone()
            clamped[o, cols] = w[o, cols].clamp(-max_val[o, n].item(), max_val[o, n].item())
            q = granularity.fake_quantize_weight(clamped, 3, 8)
            want = (tokens[:, cols].double() @ (q[o, cols] - w[o, cols]).double()).pow(2).mean()
            assert abs(got[o, n].item() - want.item()) <= 1e-5 * want.item() + 1e-9, (o, n)


def test_search_clip_minimizes_clip_errors_over_the_grid(device):
    """search_clip's choice is the grid point with the smallest clip_errors (ties: the larger range)."""
    w, x = _randn(12, 64, seed=15).to(device), _randn(400, 64, seed=16).to(device)
    x[:, 32:] = 0.0  # the second group's outputs are 0 whatever the range: a tie, no clipping kept
    m = awq.search_clip(w, x, 3, 32)
    full = w.abs().reshape(12, 2, 32).amax(-1)
    grid = [full * (1 - i / 20) for i in range(10)]
    errs = torch.stack([awq.clip_errors(w, x, g, 3, 32) for g in grid])  # [10, O, G]
    best = errs.argmin(dim=0)
    assert torch.equal(m, torch.stack(grid).gather(0, best[None])[0])
    assert torch.equal(m[:, 1], full[:, 1])
    assert bool((awq.clip_errors(w, x, m, 3, 32) <= errs[0]).all())


# ----------------------------------------------------------------------------------------------
# whole model


def test_quantize_model_awq_small_run(course_lm):
    model, tok = course_lm
    m = copy.deepcopy(model)
    ids = lm_quant.calibration_ids(tok, 4, 32)
    awq.quantize_model_awq(m, tok, 3, 128, calib_ids=ids, n_grid=4, progress=False)
    for name, lin in lm_quant.linear_layers(m).items():
        groups = lin.weight.detach().reshape(lin.out_features, -1, 128)
        distinct = max(len(torch.unique(groups[r, gi])) for r in range(0, lin.out_features, 37)
                       for gi in range(groups.shape[1]))
        assert distinct <= 8, name  # 3-bit: at most 8 values per group
        assert not torch.equal(lin.weight, lm_quant.linear_layers(model)[name].weight)
    assert torch.equal(m.lm_head.weight, model.lm_head.weight) or m.lm_head.weight is m.model.embed_tokens.weight
    # folded norms changed, embeddings did not
    assert torch.equal(m.model.embed_tokens.weight, model.model.embed_tokens.weight)
    assert not torch.equal(m.model.layers[0].input_layernorm.weight, model.model.layers[0].input_layernorm.weight)


def test_awq_beats_rtn_on_the_course_lm(course_lm):
    """The notebook's claim at 3 bits, group 128, on a short evaluation."""
    from course_lib.data import corpus_text
    from course_lib.evaluate import perplexity
    model, tok = course_lm
    text = corpus_text("eval")
    rtn = lm_quant.quantize_model_rtn(copy.deepcopy(model), 3, 128)
    ours = awq.quantize_model_awq(copy.deepcopy(model), tok, 3, 128, n_samples=8, progress=False)
    assert perplexity(ours, tok, text, max_tokens=4096) < perplexity(rtn, tok, text, max_tokens=4096)


def test_collect_activation_scales_and_keep_channels(course_lm):
    model, tok = course_lm
    ids = lm_quant.calibration_ids(tok, 4, 32)
    acts = awq.collect_activation_scales(model, ids, batch_size=3)
    (hidden, _), = lm_quant.capture_block_inputs(model, ids)
    x = model.model.layers[0].input_layernorm(hidden)
    assert torch.allclose(acts["model.layers.0.self_attn.q_proj"], awq.activation_scales(x), rtol=1e-5)
    assert "lm_head" not in acts and len(acts) == 28
    top = awq.salient_channels(acts["model.layers.0.mlp.down_proj"], 0.01)
    assert top.numel() == 3 and torch.equal(top, torch.topk(acts["model.layers.0.mlp.down_proj"], 3).indices)
    m = awq.quantize_model_keep_channels(copy.deepcopy(model), 3, 128, {"model.layers.0.mlp.down_proj": top})
    w0, w1 = model.model.layers[0].mlp.down_proj.weight, m.model.layers[0].mlp.down_proj.weight
    assert torch.equal(w1[:, top], w0[:, top])
    others = torch.ones(w0.shape[1], dtype=torch.bool)
    others[top] = False
    assert torch.equal(w1[:, others], granularity.fake_quantize_weight(w0, 3, 128)[:, others])


def test_salient_channels_closed_form():
    a = torch.tensor([0.1, 5.0, 0.2, 3.0])
    assert awq.salient_channels(a, 0.5).tolist() == [1, 3]
    assert awq.salient_channels(a, 0.01).tolist() == [1]  # at least one channel


# ----------------------------------------------------------------------------------------------
# bad input


_W, _X = _randn(8, 32), _randn(20, 32)
_LIN = _linear(_W, "cpu")


def _nan(t):
    t = t.clone()
    t[0, 0] = float("nan")
    return t


BAD = [
    (awq.activation_scales, (torch.ones(4),), "x"),                          # 1-D
    (awq.activation_scales, (_nan(_X),), "x"),                               # NaN in calibration
    (awq.activation_scales, (torch.ones(3, 4, dtype=torch.int32),), "x"),
    (awq.awq_scales, (torch.ones(4), 1.5), "ratio"),
    (awq.awq_scales, (-torch.ones(4), 0.5), "act_scale"),
    (awq.scaled_fake_quantize, (_W, torch.zeros(32), 4, 16), "scales"),      # scales non-positive
    (awq.scaled_fake_quantize, (_W, torch.ones(31), 4, 16), "scales"),
    (awq.scaled_fake_quantize, (_W, torch.ones(32), 9, 16), "bits"),         # bits out of range
    (awq.scaled_fake_quantize, (_W, torch.ones(32), 4, 12), "group_size"),   # group not dividing
    (awq.search_scale, (_LIN, [_LIN], _X, 1, 16), "bits"),
    (awq.search_scale, (_LIN, [_LIN], _X, 4, 10), "group_size"),
    (awq.search_scale, (_LIN, [_LIN], _nan(_X), 4, 16), "x"),
    (awq.search_scale, (_LIN, [_LIN], _X, 4, 16, 0), "n_grid"),
    (awq.search_scale, (_LIN, [nn.ReLU()], _X, 4, 16), "linears"),
    (awq.search_scale, (_LIN, [_LIN], _randn(20, 16), 4, 16), "in_features"),
    (awq.fold_scales, (nn.LayerNorm(32), [_LIN], -torch.ones(32)), "scales"),
    (awq.fold_scales, (nn.LayerNorm(32), [_LIN], torch.ones(16)), "scales"),
    (awq.fold_scales, (nn.LayerNorm(16), [_LIN], torch.ones(32)), "prev"),
    (awq.fold_scales, (nn.ReLU(), [_LIN], torch.ones(32)), "prev"),
    (awq.search_clip, (_W, _X, 4, 12), "group_size"),
    (awq.search_clip, (_W, _X, 0, 16), "bits"),
    (awq.search_clip, (_W, _randn(20, 16), 4, 16), "x"),
    (awq.search_clip, (_W, _nan(_X), 4, 16), "x"),
    (awq.search_clip, (_W, _X, 4, 16, 20, 1.0), "max_shrink"),
    (awq.clip_errors, (_W, _X, torch.ones(8, 3), 4, 16), "max_val"),
    (awq.clip_errors, (_W, _X, -torch.ones(8, 2), 4, 16), "max_val"),
    (awq.clip_errors, (_W, _X, torch.ones(8, 2), 4, 12), "group_size"),
    (awq.apply_clip, (_W, torch.ones(8, 3), 16), "max_val"),
    (awq.salient_channels, (torch.ones(4), 0.0), "fraction"),
]


@pytest.mark.parametrize("fn, args, mentions", BAD, ids=[f"{f.__name__}-{i}" for i, (f, _, _) in enumerate(BAD)])
def test_bad_input(fn, args, mentions):
    with pytest.raises((TypeError, ValueError), match=mentions):
        fn(*args)


def test_bad_input_model(course_lm):
    model, tok = course_lm
    m = copy.deepcopy(model)
    with pytest.raises(ValueError, match="group_size"):
        awq.quantize_model_awq(m, tok, 4, 100, progress=False)
    with pytest.raises(ValueError, match="bits"):
        awq.quantize_model_awq(m, tok, 9, 128, progress=False)
    with pytest.raises(ValueError, match="calib_ids"):
        awq.quantize_model_awq(m, tok, 4, 128, calib_ids=torch.zeros(2, 8), progress=False)
    with pytest.raises(TypeError, match="causal LM"):
        awq.quantize_model_awq(nn.Linear(4, 4), tok, 4, None, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), model.state_dict().values()))


# ----------------------------------------------------------------------------------------------
# plots and widget


def test_plots_return_figures():
    x = _outlier_inputs()
    w = _randn(16, 64)
    act = awq.activation_scales(x)
    figs = [
        plots.plot_channel_magnitudes(act, w, awq.salient_channels(act, 0.05)),
        plots.plot_salient_experiment({"RTN": 30.0, "keep 1%": 26.0}, fp=25.0),
        plots.plot_ratio_search({"a": [1.0, 0.8, 0.9], "b": [2.0, 2.0, 1.0]}),
        plots.plot_clip_shrink({"o_proj": torch.rand(8, 2) * 0.5 + 0.5}),
        plots.plot_method_comparison([{"method": "RTN", "bits": 4, "group_size": 128, "perplexity": 26.0},
                                      {"method": "AWQ", "bits": 4, "group_size": 128, "perplexity": 25.5}], fp=25.0),
    ]
    assert all(isinstance(f, plt.Figure) for f in figs)
    plt.close("all")


def test_widget_update_changes_output():
    from course_lib.widgets.awq import awq_explorer
    box = awq_explorer(_randn(16, 64, seed=13), _outlier_inputs(tokens=256), bits=3, group_size=None)
    first = box.last
    box.ratio.value = 0.0
    at_zero = box.last
    assert at_zero["ratio"] == 0.0 and at_zero["loss"] == at_zero["rtn_loss"] != first["loss"]
    assert "RTN" in box.readout.value
    box.bits.value = 6
    assert box.last["rtn_loss"] < at_zero["rtn_loss"]
    box.group.value = "64"
    assert box.update()["best_loss"] <= box.last["rtn_loss"]
    plt.close("all")
