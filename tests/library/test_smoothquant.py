"""course_lib.smoothquant: closed forms, smooth.py's formula, folding invariance, calibration, whole models."""

from __future__ import annotations

import copy

import matplotlib

matplotlib.use("Agg")
import matplotlib.figure  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch import nn  # noqa: E402

from course_lib import llm_int8, smoothquant as sq  # noqa: E402
from course_lib.plots import llm_int8 as plots  # noqa: E402

SETTINGS = settings(max_examples=25, deadline=None)


def _randn(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def _tiny_llama(seed=0):
    """A 2-block Llama with random norm weights and two outlier channels grown at the attention norm's input."""
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for block in model.model.layers:
            for norm in (block.input_layernorm, block.post_attention_layernorm):
                norm.weight.uniform_(0.5, 1.5)
    return llm_int8.inject_outlier_features(model, [3, 20], 40.0)


IDS = torch.randint(0, 64, (6, 16), generator=torch.Generator().manual_seed(5))


# ----------------------------------------------------------------------------------------------
# smoothing_factors


def test_smoothing_factors_closed_form():
    a = torch.tensor([4.0, 1.0, 9.0])
    w = torch.tensor([[1.0, -0.25, 0.5], [0.5, 0.5, -1.0]])  # column maxima 1, 0.5, 1
    assert torch.allclose(sq.smoothing_factors(a, w, 0.5), torch.tensor([2.0, 2**0.5, 3.0]))
    assert torch.allclose(sq.smoothing_factors(a, w, 1.0), a)                        # alpha 1: s = max|X_j|
    assert torch.allclose(sq.smoothing_factors(a, w, 0.0), torch.tensor([1.0, 2.0, 1.0]))  # alpha 0: 1 / max|W_j|
    assert torch.equal(sq.smoothing_factors(a, w), sq.smoothing_factors(a, w, sq.DEFAULT_ALPHA))
    assert sq.DEFAULT_ALPHA == 0.5
    assert sq.smoothing_factors(a.double(), w.half()).dtype == torch.float32


def test_zero_channels_get_one_and_nothing_divides_by_zero():
    a = torch.tensor([0.0, 3.0, 2.0, 0.0])
    w = torch.tensor([[1.0, 0.0, 2.0, 0.0], [-3.0, 0.0, 1.0, 0.0]])
    for alpha in (0.0, 0.3, 0.5, 1.0):
        s = sq.smoothing_factors(a, w, alpha)
        assert torch.isfinite(s).all() and s[0] == 1 and s[1] == 1 and s[3] == 1
        assert s[2] == pytest.approx(2.0**alpha / 2.0 ** (1 - alpha))


def _smooth_py_factors(act_scales, weights, alpha):
    """mit-han-lab/smoothquant's formula (smooth.py, smooth_ln_fcs): the weight's column maxima over every layer,
    floored at 1e-5, then act**alpha / w**(1 - alpha), floored at 1e-5."""
    w = torch.stack([fc.abs().amax(dim=0) for fc in weights]).amax(dim=0).clamp(min=1e-5)
    return (act_scales.pow(alpha) / w.pow(1 - alpha)).clamp(min=1e-5)


@SETTINGS
@given(seed=st.integers(0, 10_000), alpha=st.floats(0.0, 1.0), n=st.integers(1, 3))
def test_factors_equal_smooth_py_where_no_channel_is_zero(seed, alpha, n):
    weights = [_randn(4 + i, 12, seed=seed + i) for i in range(n)]
    act = _randn(12, seed=seed + 100).abs() * 10 + 1e-3
    ours = sq.smoothing_factors(act, torch.cat(weights), alpha)
    assert torch.allclose(ours, _smooth_py_factors(act, weights, alpha), rtol=1e-6)


@SETTINGS
@given(seed=st.integers(0, 10_000), alpha=st.floats(0.0, 1.0))
def test_smoothed_ranges_are_the_geometric_split(seed, alpha):
    """max|X_j| / s_j = (a_j w_j)**(1 - alpha) and max|W_j| s_j = (a_j w_j)**alpha: alpha splits the product."""
    w = _randn(6, 10, seed=seed)
    a = _randn(10, seed=seed + 1).abs() * 20 + 0.01
    s = sq.smoothing_factors(a, w, alpha).double()
    a, wmax = a.double(), w.abs().amax(dim=0).double()
    assert torch.allclose(a / s, (a * wmax) ** (1 - alpha), rtol=1e-5)
    assert torch.allclose(wmax * s, (a * wmax) ** alpha, rtol=1e-5)


def test_smoothing_factors_bad_input():
    a, w = torch.ones(4), torch.ones(2, 4)
    with pytest.raises(ValueError, match="alpha"):
        sq.smoothing_factors(a, w, 1.01)
    with pytest.raises(TypeError, match="alpha"):
        sq.smoothing_factors(a, w, True)
    with pytest.raises(ValueError, match="act_absmax"):
        sq.smoothing_factors(torch.ones(3), w)
    with pytest.raises(ValueError, match="act_absmax"):
        sq.smoothing_factors(-a, w)
    with pytest.raises(ValueError, match="weight"):
        sq.smoothing_factors(a, torch.ones(4))


# ----------------------------------------------------------------------------------------------
# fold_smoothing


@pytest.mark.parametrize("norm_kind", ["rmsnorm", "layernorm"])
def test_fold_keeps_every_output_and_moves_s_across(norm_kind, device):
    torch.manual_seed(0)
    if norm_kind == "rmsnorm":
        from transformers.models.llama.modeling_llama import LlamaRMSNorm
        norm = LlamaRMSNorm(24)
    else:
        norm = nn.LayerNorm(24)
    with torch.no_grad():
        for p in norm.parameters():
            p.add_(torch.rand_like(p))
    linears = [nn.Linear(24, n, bias=i == 1) for i, n in enumerate((24, 24, 10))]
    norm, linears = norm.to(device), [lin.to(device) for lin in linears]
    x = _randn(7, 24, seed=1, scale=3.0).to(device)
    s = sq.smoothing_factors(_randn(24, seed=2).abs().to(device) * 30, torch.cat([l.weight for l in linears]).detach())
    before = [lin(norm(x)).detach() for lin in linears]
    norm_w = norm.weight.detach().clone()
    norm_b = None if getattr(norm, "bias", None) is None else norm.bias.detach().clone()
    weights = [lin.weight.detach().clone() for lin in linears]
    biases = [None if lin.bias is None else lin.bias.detach().clone() for lin in linears]
    assert sq.fold_smoothing(norm, linears, s) is None
    assert torch.allclose(norm.weight, norm_w / s)
    if norm_b is not None:
        assert torch.allclose(norm.bias, norm_b / s)
    for lin, w0, b0, y0 in zip(linears, weights, biases, before):
        assert torch.allclose(lin.weight, w0 * s[None, :])
        assert (lin.bias is None) == (b0 is None) and (b0 is None or torch.equal(lin.bias, b0))
        assert torch.allclose(lin(norm(x)), y0, rtol=1e-4, atol=1e-5)


def test_fold_bad_input():
    norm = nn.LayerNorm(4)
    with pytest.raises(TypeError, match="norm"):
        sq.fold_smoothing(nn.Linear(3, 4), [nn.Linear(4, 2)], torch.ones(4))
    with pytest.raises(TypeError, match="linears"):
        sq.fold_smoothing(norm, [], torch.ones(4))
    with pytest.raises(TypeError, match=r"linears\[1\]"):
        sq.fold_smoothing(norm, [nn.Linear(4, 2), nn.ReLU()], torch.ones(4))
    with pytest.raises(ValueError, match=r"linears\[0\]"):
        sq.fold_smoothing(norm, [nn.Linear(5, 2)], torch.ones(4))
    with pytest.raises(ValueError, match="s"):
        sq.fold_smoothing(norm, [nn.Linear(4, 2)], torch.tensor([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="s"):
        sq.fold_smoothing(norm, [nn.Linear(4, 2)], torch.ones(3))
    weight = norm.weight.detach().clone()
    with pytest.raises(ValueError):
        sq.fold_smoothing(norm, nn.Linear(4, 2), -torch.ones(4))
    assert torch.equal(norm.weight, weight), "a rejected call changes nothing"


# ----------------------------------------------------------------------------------------------
# calibration and whole models


def test_activation_absmax_is_the_largest_input_magnitude_per_channel():
    model = _tiny_llama()
    stats = sq.activation_absmax(model, IDS, batch_size=4)  # two batches: 4 + 2 samples
    assert len(stats) == 2 * 7 and "lm_head" not in stats
    with torch.no_grad():  # the first block's q, k, v read input_layernorm(embeddings), computed here directly
        h = model.model.embed_tokens(IDS)
        x = model.model.layers[0].input_layernorm(h)
    expected = x.abs().reshape(-1, 32).amax(dim=0)
    for name in ("q_proj", "k_proj", "v_proj"):
        assert torch.allclose(stats[f"model.layers.0.self_attn.{name}"], expected, rtol=1e-6)
    one_batch = sq.activation_absmax(model, IDS, batch_size=64)
    assert all(torch.equal(one_batch[n], stats[n]) for n in stats)
    with pytest.raises(TypeError, match="ids"):
        sq.activation_absmax(model, IDS.float())


def test_smooth_model_keeps_the_function_and_its_statistics_are_the_smoothed_models():
    model = _tiny_llama()
    stats = sq.activation_absmax(model, IDS)
    groups = sq.smoothing_groups(model)
    assert list(groups) == [f"model.layers.{i}.{n}" for i in range(2)
                            for n in ("input_layernorm", "post_attention_layernorm")]
    assert [name.rsplit(".", 1)[1] for name in groups["model.layers.1.input_layernorm"][1]] == ["q_proj", "k_proj", "v_proj"]
    assert [name.rsplit(".", 1)[1] for name in groups["model.layers.0.post_attention_layernorm"][1]] == ["gate_proj", "up_proj"]
    smoothed = copy.deepcopy(model)
    new_stats = sq.smooth_model(smoothed, stats, alpha=0.5)
    with torch.no_grad():
        assert torch.allclose(smoothed(IDS).logits, model(IDS).logits, rtol=1e-4, atol=1e-4)
    recalibrated = sq.activation_absmax(smoothed, IDS)
    for name in stats:
        assert torch.allclose(new_stats[name], recalibrated[name], rtol=1e-4, atol=1e-6), name
        unchanged = name.endswith(("o_proj", "down_proj"))
        assert (new_stats[name] is stats[name]) == unchanged
    # alpha 0.5 gives the activations and the weights of a smoothed group the same per-channel range
    q = "model.layers.0.self_attn.q_proj"
    attn = smoothed.model.layers[0].self_attn
    w = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).detach().abs().amax(dim=0)
    assert torch.allclose(new_stats[q], w, rtol=1e-4)
    with pytest.raises(ValueError, match="alpha"):
        sq.smooth_model(copy.deepcopy(model), stats, alpha=2.0)
    with pytest.raises(ValueError, match="q_proj"):
        sq.smooth_model(copy.deepcopy(model), {})


def test_smoothquant_rescues_per_tensor_static_w8a8():
    """The method's claim on a model with outlier channels: static per-tensor W8A8 goes far off the float outputs,
    SmoothQuant's smoothing brings it close again."""
    model = _tiny_llama()
    stats = sq.activation_absmax(model, IDS)
    with torch.no_grad():
        reference = model(IDS).logits
        naive = llm_int8.quantize_model_int8(copy.deepcopy(model), mode="static", act_absmax=stats)(IDS).logits
        smoothed = copy.deepcopy(model)
        smoothed_stats = sq.smooth_model(smoothed, stats, 0.5)
        smooth = llm_int8.quantize_model_int8(smoothed, mode="static", act_absmax=smoothed_stats)(IDS).logits
    err_naive = ((naive - reference).norm() / reference.norm()).item()
    err_smooth = ((smooth - reference).norm() / reference.norm()).item()
    assert err_smooth < err_naive / 3, (err_naive, err_smooth)


def test_smoothing_groups_need_a_llama_style_model():
    with pytest.raises(TypeError, match="model"):
        sq.smoothing_groups(nn.Sequential(nn.Linear(2, 2)))


def test_plot_smoothing_ranges_returns_a_figure():
    a = _randn(32, seed=3).abs() + 0.1
    a[[2, 9]] = 50.0
    w = _randn(20, 32, seed=4)
    fig = plots.plot_smoothing_ranges(a, w, sq.smoothing_factors(a, w, 0.5), title="t")
    assert isinstance(fig, matplotlib.figure.Figure)
    assert fig.spread["activations after"] < fig.spread["activations before"] / 5
    assert fig.spread["activations after"] == pytest.approx(fig.spread["weights after"], rel=1e-4)
    plt.close("all")
