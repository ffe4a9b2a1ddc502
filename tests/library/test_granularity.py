"""course_lib.granularity: closed-form values, PyTorch and bitsandbytes as independent references, properties."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import course_lib  # noqa: E402,F401  (silences bitsandbytes' import warning)
from course_lib import affine, evaluate, granularity as G  # noqa: E402
from course_lib.plots import granularity as plots  # noqa: E402
from course_lib.widgets import granularity as widgets  # noqa: E402

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _randn(*shape, seed=0, scale=1.0, dtype=torch.float32, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen) * scale).to(dtype).to(device)


# ----------------------------------------------------------------------------------------------
# scale_zero_point


def test_scale_zero_point_closed_form():
    x = torch.tensor([[-1.0, 0.0, 2.0], [0.5, 1.0, 1.5], [0.0, 0.0, 0.0]])
    s, z = G.scale_zero_point(x, 2, dim=1)
    assert s.shape == (3, 1) and z.shape == (3, 1) and s.dtype == torch.float32 and z.dtype == torch.int32
    assert torch.allclose(s.flatten(), torch.tensor([1.0, 0.5, affine.SCALE_EPS]))
    assert z.flatten().tolist() == [1, 0, 0]  # -round(-1 / 1) = 1; all-positive row: 0; zero row: 0
    s, z = G.scale_zero_point(x, 8, dim=1, symmetric=True)
    assert torch.allclose(s.flatten(), torch.tensor([2 / 127, 1.5 / 127, affine.SCALE_EPS]))
    assert z.flatten().tolist() == [128, 128, 128]
    s, z = G.scale_zero_point(x, 4)  # per tensor: range [-1, 2]
    assert s.shape == (1, 1) and s.item() == pytest.approx(3 / 15) and z.item() == 5


@pytest.mark.parametrize("dim, shape", [(None, (1, 1, 1)), (0, (1, 3, 4)), (-1, (2, 3, 1)), ((0, 2), (1, 3, 1)),
                                        ((2, -3), (1, 3, 1)), ([1], (2, 1, 4))])
def test_scale_zero_point_keepdim_shapes(dim, shape, device):
    x = _randn(2, 3, 4, device=device)
    s, z = G.scale_zero_point(x, 4, dim=dim)
    assert s.shape == shape and z.shape == shape
    assert s.device.type == z.device.type == torch.device(device).type
    # the scales broadcast: quantize-dequantize keeps x's shape
    assert G.quantize_dequantize(x, s, z, 4).shape == x.shape


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_per_tensor_matches_affine(bits, device):
    x = _randn(50, 7, seed=bits, scale=3, device=device) + 0.4
    s, z = G.scale_zero_point(x, bits)
    s_ref, z_ref = affine.compute_scale_zero_point(x.min(), x.max(), 0, 2**bits - 1)
    assert torch.equal(s.reshape(()), s_ref) and torch.equal(z.reshape(()), z_ref)
    assert torch.equal(G.quantize_dequantize(x, s, z, bits), affine.fake_quantize(x, s_ref, z_ref, 0, 2**bits - 1))


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("group_size", [None, 16])
@pytest.mark.parametrize("symmetric", [False, True])
def test_matches_weight_scale_zero_point(bits, group_size, symmetric, device):
    w = _randn(12, 64, seed=bits, scale=0.05, device=device)
    s_ref, z_ref = G.weight_scale_zero_point(w, bits, group_size, symmetric)
    g = w.shape[1] if group_size is None else group_size
    s, z = G.scale_zero_point(w.reshape(12, -1, g), bits, dim=-1, symmetric=symmetric)
    assert torch.equal(s.squeeze(-1), s_ref) and torch.equal(z.squeeze(-1), z_ref)


def test_observer_parameters_match_torch():
    """PerChannelMinMaxObserver is an independent implementation of the per-channel min-max rule."""
    from torch.ao.quantization import PerChannelMinMaxObserver

    w = _randn(32, 48, seed=3, scale=0.1)
    for ch_axis, dim in ((0, 1), (1, 0)):
        obs = PerChannelMinMaxObserver(ch_axis=ch_axis, dtype=torch.quint8, qscheme=torch.per_channel_affine)
        obs(w)
        t_s, t_z = obs.calculate_qparams()
        s, z = G.scale_zero_point(w, 8, dim=dim)
        assert torch.equal(t_s, s.flatten()) and torch.equal(t_z.to(torch.int32), z.flatten())
    obs = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                   quant_min=-127, quant_max=127)
    obs(w)
    t_s, _ = obs.calculate_qparams()
    s, _ = G.scale_zero_point(w, 8, dim=1, symmetric=True)
    assert torch.equal(t_s, s.flatten())


# ----------------------------------------------------------------------------------------------
# quantize_dequantize: PyTorch's fake quantizers bit for bit


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("dim, axis", [(1, 0), (0, 1)])
def test_matches_fake_quantize_per_channel_affine(bits, dim, axis, device):
    w = _randn(64, 96, seed=bits + axis, scale=0.05, device=device)
    w[3] = 0.0  # an all-zero row: scale at the floor
    w[:, 5] *= 30  # an outlier column
    s, z = G.scale_zero_point(w, bits, dim=dim)
    theirs = torch.fake_quantize_per_channel_affine(w, s.flatten(), z.flatten(), axis, 0, 2**bits - 1)
    assert torch.equal(G.quantize_dequantize(w, s, z, bits), theirs)


def test_matches_fake_quantize_per_tensor_affine():
    x = _randn(1000, seed=5, scale=2) + 0.3
    for bits in (3, 8):
        s, z = G.scale_zero_point(x, bits)
        theirs = torch.fake_quantize_per_tensor_affine(x, s.item(), int(z), 0, 2**bits - 1)
        assert torch.equal(G.fake_quantize(x, bits, "tensor"), theirs)


def test_per_group_matches_torch_per_channel_on_reshaped_groups(device):
    w = _randn(16, 128, seed=6, scale=0.05, device=device)
    g = 32
    rows = w.reshape(-1, g)  # [16 * 4, 32]: one "channel" per group
    s, z = G.scale_zero_point(rows, 4, dim=1)
    theirs = torch.fake_quantize_per_channel_affine(rows, s.flatten(), z.flatten(), 0, 0, 15).reshape(w.shape)
    assert torch.equal(G.fake_quantize_per_group(w, 4, g), theirs)


def test_per_token_matches_bitsandbytes_vectorwise():
    import bitsandbytes.functional as bnbf

    x = _randn(40, 96, seed=7, scale=2)
    x[:, 11] *= 20
    codes, row_absmax, _ = bnbf.int8_vectorwise_quant(x.clone(), threshold=0.0)
    s, z = G.scale_zero_point(x, 8, dim=-1, symmetric=True)
    ours = (torch.round(x * (1.0 / s)) + z).clamp(0, 255).to(torch.int32) - z
    assert torch.equal(row_absmax, x.abs().amax(dim=1))
    assert (codes.to(torch.int32) != ours).sum() <= 1  # both round x*127/absmax; a tie could differ in the last bit


def test_gptq_style_quantizer_agrees_except_on_ties():
    w = _randn(64, 256, seed=8, scale=0.05)
    for bits, gs in ((4, None), (4, 64), (3, 32), (8, 128)):
        ours = G.fake_quantize(w, bits, "group" if gs else "channel", gs)
        gptq = G.fake_quantize_weight(w, bits, gs)
        differ = ours != gptq
        assert differ.float().mean() < 1e-4
        scale = G.weight_scale_zero_point(w, bits, gs)[0]
        step = scale.repeat_interleave(w.shape[1] // scale.shape[1], dim=1)
        assert torch.allclose((ours - gptq).abs()[differ], step[differ], rtol=1e-5)  # one step apart at most


def test_quantize_dequantize_keeps_dtype(device):
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        x = _randn(8, 16, seed=9, dtype=dtype, device=device)
        s, z = G.scale_zero_point(x, 4, dim=1)
        out = G.quantize_dequantize(x, s, z, 4)
        assert out.dtype == dtype and out.shape == x.shape


# ----------------------------------------------------------------------------------------------
# properties

shapes = st.tuples(st.integers(1, 6), st.integers(1, 4)).map(lambda t: (t[0], t[1] * 8))
layouts = st.sampled_from([("tensor", None), ("channel", None), ("input_channel", None), ("group", 4), ("group", 8)])


@st.composite
def matrices(draw):
    rows, cols = draw(shapes)
    values = draw(st.lists(st.floats(-100, 100, allow_nan=False, width=32), min_size=rows * cols,
                           max_size=rows * cols))
    return torch.tensor(values, dtype=torch.float32).reshape(rows, cols)


def _broadcast_scale(x, bits, gran, g, symmetric):
    if gran == "group":
        s, _ = G.scale_zero_point(x.reshape(x.shape[0], -1, g), bits, dim=-1, symmetric=symmetric)
        return s.expand(-1, -1, g).reshape(x.shape)
    dim = {"tensor": None, "channel": -1, "input_channel": 0}[gran]
    return G.scale_zero_point(x, bits, dim=dim, symmetric=symmetric)[0].expand_as(x)


@SETTINGS
@given(x=matrices(), bits=st.integers(2, 8), layout=layouts, symmetric=st.booleans())
def test_error_at_most_half_a_step(x, bits, layout, symmetric):
    """Min-max ranges cover every value, so nothing clips: |x - fq(x)| <= scale / 2 (plus float rounding)."""
    gran, g = layout
    fq = G.fake_quantize(x, bits, gran, g, symmetric)
    scale = _broadcast_scale(x, bits, gran, g, symmetric)
    assert bool(((x - fq).abs() <= scale / 2 * (1 + 1e-5) + 1e-6).all())


@SETTINGS
@given(x=matrices(), bits=st.integers(2, 8), layout=layouts)
def test_idempotent_with_fixed_parameters(x, bits, layout):
    gran, g = layout
    if gran == "group":
        x = x.reshape(x.shape[0], -1, g)
        dim = -1
    else:
        dim = {"tensor": None, "channel": -1, "input_channel": 0}[gran]
    s, z = G.scale_zero_point(x, bits, dim=dim)
    once = G.quantize_dequantize(x, s, z, bits)
    assert torch.equal(G.quantize_dequantize(once, s, z, bits), once)


@SETTINGS
@given(x=matrices(), bits=st.integers(2, 8), layout=layouts)
def test_refitting_to_quantized_values_changes_little(x, bits, layout):
    """Re-fitting min-max to already quantized values gives (nearly) the same grid: at most one step moves."""
    gran, g = layout
    once = G.fake_quantize(x, bits, gran, g)
    twice = G.fake_quantize(once, bits, gran, g)
    scale = _broadcast_scale(x, bits, gran, g, False)
    assert bool(((twice - once).abs() <= scale * (1 + 1e-4) + 1e-6).all())


@SETTINGS
@given(x=matrices(), bits=st.integers(2, 8))
def test_nested_groups_have_smaller_scales(x, bits):
    """A group's range lies inside its row's: its scale (and so its worst-case error s/2) is never larger."""
    s_row = _broadcast_scale(x, bits, "channel", None, False)
    for g in (4, 8):
        s_group = _broadcast_scale(x, bits, "group", g, False)
        assert bool((s_group <= s_row * (1 + 1e-6)).all())


def test_smaller_groups_are_not_always_better():
    """The grids are not nested, so a finer granularity can lose: the notebook's counterexample."""
    row = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    per_channel = G.fake_quantize(row, 2, "channel")
    per_group = G.fake_quantize(row, 2, "group", 2)
    assert torch.equal(per_channel, row)
    assert (per_group - row).pow(2).sum().item() == pytest.approx(1 / 9, rel=1e-5)


def test_groups_win_on_average():
    w = _randn(256, 512, seed=10, scale=0.05)
    errs = [(G.fake_quantize(w, 4, *lay) - w).pow(2).mean().item()
            for lay in (("tensor", None), ("channel", None), ("group", 128), ("group", 32))]
    assert errs == sorted(errs, reverse=True)


def test_zero_is_exact_and_zeros_stay_zero(device):
    w = _randn(8, 32, seed=11, device=device)
    w[:, ::3] = 0.0
    w[2] = 0.0
    for gran, g in (("tensor", None), ("channel", None), ("group", 8), ("input_channel", None)):
        for sym in (False, True):
            fq = G.fake_quantize(w, 3, gran, g, sym)
            assert bool((fq[w == 0] == 0).all()) and bool(torch.isfinite(fq).all())


# ----------------------------------------------------------------------------------------------
# quantized_linear


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantized_linear_equals_fake_quant_product(bits, device):
    x = _randn(17, 200, seed=12, scale=2, device=device)
    w = _randn(9, 200, seed=13, scale=0.05, device=device)
    y = G.quantized_linear(x, w, bits)
    fake = G.fake_quantize(x, bits, "token", symmetric=True) @ G.fake_quantize(w, bits, "channel", symmetric=True).T
    assert y.dtype == torch.float32 and y.shape == (17, 9)
    assert torch.allclose(y, fake, rtol=1e-4, atol=1e-5)


def test_quantized_linear_8bit_close_to_float():
    x = _randn(32, 384, seed=14)
    w = _randn(64, 384, seed=15, scale=0.05)
    y, ref = G.quantized_linear(x, w), x @ w.T
    assert ((y - ref).pow(2).sum() / ref.pow(2).sum()).item() < 1e-3


def test_quantized_linear_zero_token():
    x = _randn(3, 16, seed=16)
    x[1] = 0
    y = G.quantized_linear(x, _randn(4, 16, seed=17))
    assert torch.equal(y[1], torch.zeros(4))


# ----------------------------------------------------------------------------------------------
# effective_bits


def test_effective_bits_closed_form():
    assert G.effective_bits((4096, 4096), 4, "group", 128) == 4.125  # fp16 per 128 weights: +0.125
    assert G.effective_bits((4096, 4096), 4, "group", 128, zero_bits=4) == 4.15625
    assert G.effective_bits((4096, 4096), 4, "group", 64, scale_bits=32) == 4.5  # bitsandbytes NF4 without DQ
    assert G.effective_bits((384, 1536), 4, "channel") == 4 + 16 / 1536
    assert G.effective_bits((384, 1536), 4, "input_channel") == 4 + 16 / 384
    assert G.effective_bits((384, 1536), 8, "tensor") == 8 + 16 / (384 * 1536)
    assert G.effective_bits(torch.Size([2, 16, 64]), 8, "token") == 8 + 16 / 64
    # seed 001: 4096 x 4096 with group size 128 has 4096 * 32 = 131072 scales
    assert (G.effective_bits((4096, 4096), 4, "group", 128) - 4) * 4096 * 4096 / 16 == 131072


def test_effective_bits_matches_stored_tensors():
    """Count the bits of the actual scale and zero tensors the quantizer produces."""
    w = _randn(48, 96, seed=18)
    for gran, g, dim in (("channel", None, 1), ("input_channel", None, 0), ("tensor", None, None)):
        s, z = G.scale_zero_point(w, 4, dim=dim)
        stored = w.numel() * 4 + s.numel() * 16 + z.numel() * 4
        assert G.effective_bits(tuple(w.shape), 4, gran, g, zero_bits=4) == pytest.approx(stored / w.numel())
    s, z = G.weight_scale_zero_point(w, 4, group_size=16)
    assert G.effective_bits(tuple(w.shape), 4, "group", 16, zero_bits=4) == pytest.approx(
        (w.numel() * 4 + s.numel() * 16 + z.numel() * 4) / w.numel())


# ----------------------------------------------------------------------------------------------
# bad input: one table

X = _randn(4, 8)
NAN = torch.tensor([[1.0, float("nan")]])
BAD = [
    (G.scale_zero_point, (X, 9), {}, ValueError, "bits"),
    (G.scale_zero_point, (X, 1), {}, ValueError, "bits"),
    (G.scale_zero_point, (X, 4.0), {}, TypeError, "bits"),
    (G.scale_zero_point, (NAN, 4), {}, ValueError, "x"),
    (G.scale_zero_point, (torch.zeros(0, 3), 4), {}, ValueError, "x"),
    (G.scale_zero_point, (torch.ones(2, 2, dtype=torch.int32), 4), {}, TypeError, "x"),
    (G.scale_zero_point, ([1.0, 2.0], 4), {}, TypeError, "x"),
    (G.scale_zero_point, (X, 4), {"dim": 2}, ValueError, "dim"),
    (G.scale_zero_point, (X, 4), {"dim": (0, 0)}, ValueError, "dim"),
    (G.scale_zero_point, (X, 4), {"dim": ()}, TypeError, "dim"),
    (G.scale_zero_point, (X, 4), {"dim": 1.0}, TypeError, "dim"),
    (G.scale_zero_point, (X, 4), {"symmetric": 1}, TypeError, "symmetric"),
    (G.scale_zero_point, (torch.tensor([-3e38, 3e38]), 4), {}, ValueError, "overflows"),
    (G.quantize_dequantize, (X, torch.ones(4, 1), torch.zeros(4, 1, dtype=torch.int32), 9), {}, ValueError, "bits"),
    (G.quantize_dequantize, (X, torch.ones(3, 1), torch.zeros(4, 1, dtype=torch.int32), 4), {}, ValueError, "scale"),
    (G.quantize_dequantize, (X, torch.ones(4, 1), torch.zeros(4, 1), 4), {}, TypeError, "zero"),
    (G.quantize_dequantize, (X, torch.zeros(4, 1), torch.zeros(4, 1, dtype=torch.int32), 4), {}, ValueError, "scale"),
    (G.quantize_dequantize, (X, torch.ones(4, 1), torch.full((4, 1), 16, dtype=torch.int32), 4), {}, ValueError,
     "zero"),
    (G.quantize_dequantize, (X, torch.ones(4, 8, 2), torch.zeros(1, dtype=torch.int32), 4), {}, ValueError, "scale"),
    (G.quantize_dequantize, (NAN, torch.ones(1), torch.zeros(1, dtype=torch.int32), 4), {}, ValueError, "x"),
    (G.fake_quantize_per_group, (X, 4, 0), {}, ValueError, "group_size"),
    (G.fake_quantize_per_group, (X, 4, -2), {}, ValueError, "group_size"),
    (G.fake_quantize_per_group, (X, 4, 3), {}, ValueError, "group_size"),
    (G.fake_quantize_per_group, (X, 4, 2.0), {}, TypeError, "group_size"),
    (G.fake_quantize_per_group, (X, 0, 4), {}, ValueError, "bits"),
    (G.fake_quantize_per_group, (NAN, 4, 2), {}, ValueError, "x"),
    (G.fake_quantize_per_group, (X.to(torch.int64), 4, 2), {}, TypeError, "x"),
    (G.quantized_linear, (X, _randn(3, 5)), {}, ValueError, "w"),
    (G.quantized_linear, (X, _randn(3, 8), 9), {}, ValueError, "bits"),
    (G.quantized_linear, (_randn(8), _randn(3, 8)), {}, ValueError, "x"),
    (G.quantized_linear, (X.to(torch.int32), _randn(3, 8)), {}, TypeError, "x"),
    (G.quantized_linear, (X, NAN), {}, ValueError, "w"),
    (G.fake_quantize, (X, 4, "row"), {}, ValueError, "granularity"),
    (G.fake_quantize, (X, 4, "group"), {}, ValueError, "group_size"),
    (G.fake_quantize, (X, 4, "channel", 4), {}, ValueError, "group_size"),
    (G.fake_quantize, (_randn(8), 4, "input_channel"), {}, ValueError, "input_channel"),
    (G.fake_quantize, (X, 4, None), {}, TypeError, "granularity"),
    (G.effective_bits, ((384, 1536), 4, "group", 100), {}, ValueError, "group_size"),
    (G.effective_bits, ((384, 1536), 4, "group", 0), {}, ValueError, "group_size"),
    (G.effective_bits, ((384, 1536), 4, "group"), {}, ValueError, "group_size"),
    (G.effective_bits, ((384, 1536), 0, "tensor"), {}, ValueError, "bits"),
    (G.effective_bits, ((384, 1536), 33, "tensor"), {}, ValueError, "bits"),
    (G.effective_bits, ((384, 1536), 4, "per-row"), {}, ValueError, "granularity"),
    (G.effective_bits, ((384, 0), 4, "tensor"), {}, ValueError, "shape"),
    (G.effective_bits, ((), 4, "tensor"), {}, TypeError, "shape"),
    (G.effective_bits, ((384, 1536), 4, "tensor"), {"scale_bits": -1}, ValueError, "scale_bits"),
    (G.effective_bits, ((384, 1536), 4, "tensor"), {"zero_bits": 1.5}, TypeError, "zero_bits"),
    (G.effective_bits, ((1536,), 4, "input_channel"), {}, ValueError, "input_channel"),
    (G.linear_weights, ("model",), {}, TypeError, "model"),
    # the RTN weight quantizer of the later notebooks
    (G.weight_scale_zero_point, (X, 4, 3), {}, ValueError, "group_size"),
    (G.weight_scale_zero_point, (X, 9), {}, ValueError, "bits"),
    (G.weight_scale_zero_point, (NAN, 4), {}, ValueError, "w"),
    (G.fake_quantize_weight, (_randn(8), 4), {}, ValueError, "w"),
]


@pytest.mark.parametrize("fn, args, kwargs, error, mentions", BAD,
                         ids=[f"{b[0].__name__}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_is_rejected_clearly(fn, args, kwargs, error, mentions):
    with pytest.raises(error, match=mentions):
        fn(*args, **kwargs)


# ----------------------------------------------------------------------------------------------
# the RTN weight quantizer (used by GPTQ, AWQ, HQQ): round trip and shapes


@pytest.mark.parametrize("group_size", [None, 8])
@pytest.mark.parametrize("symmetric", [False, True])
def test_weight_quantizer_round_trip(group_size, symmetric, device):
    w = _randn(6, 32, seed=19, scale=0.1, device=device)
    s, z = G.weight_scale_zero_point(w, 4, group_size, symmetric)
    q = G.quantize_weight(w, s, z, 4, group_size)
    assert q.dtype == torch.int32 and int(q.min()) >= 0 and int(q.max()) <= 15
    deq = G.dequantize_weight(q, s, z, group_size)
    assert torch.equal(deq.to(w.dtype), G.fake_quantize_weight(w, 4, group_size, symmetric))
    step = s.repeat_interleave(32 // s.shape[1], dim=1)
    assert bool(((w - deq).abs() <= step / 2 * (1 + 1e-5) + 1e-7).all())


# ----------------------------------------------------------------------------------------------
# whole models


def _tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))


def test_quantized_linears_restores_and_reports():
    model = _tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = _randn(5, 16, seed=20)
    y_fp = model(x)
    with G.quantized_linears(model, 3, "group", 8) as stats:
        y_q = model(x)
        w0 = model[0].weight.detach().clone()
    assert torch.equal(w0, G.fake_quantize(before["0.weight"], 3, "group", 8))
    assert not torch.equal(y_q, y_fp)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    numel = 16 * 32 + 32 * 8
    assert stats["numel"] == numel
    sse = sum(float((G.fake_quantize(before[k], 3, "group", 8) - before[k]).double().pow(2).sum())
              for k in ("0.weight", "2.weight"))
    assert stats["sse"] == pytest.approx(sse, rel=1e-6)
    assert stats["effective_bits"] == pytest.approx(3 + (16 + 3) / 8)


def test_quantized_linears_restores_after_an_error():
    model = _tiny_model()
    before = model[0].weight.detach().clone()
    with pytest.raises(RuntimeError, match="boom"):
        with G.quantized_linears(model, 4):
            raise RuntimeError("boom")
    assert torch.equal(model[0].weight, before)


def test_granularity_sweep_on_minilm():
    from course_lib.models import load_minilm

    model, tok = load_minilm()
    sentences = ["A cat sits on the mat.", "Quantization stores numbers in fewer bits."]
    rows = evaluate.granularity_sweep(model, tok, sentences, [(8, "channel", None), (3, "tensor", None)],
                                      progress=False)
    assert [r["label"] for r in rows] == ["per-channel", "per-tensor"]
    assert rows[0]["cosine"] > 0.999 > rows[1]["cosine"]
    assert rows[0]["rel_error"] < rows[1]["rel_error"]
    assert len(G.linear_weights(model)) == 37


# ----------------------------------------------------------------------------------------------
# QuantLinear and replace_linears


def _linear(n_in, n_out, bias=True, seed=0, dtype=torch.float32, device="cpu"):
    layer = torch.nn.Linear(n_in, n_out, bias=bias, dtype=dtype, device=device)
    with torch.no_grad():
        layer.weight.copy_(_randn(n_out, n_in, seed=seed, scale=0.1, dtype=dtype, device=device))
        if bias:
            layer.bias.copy_(_randn(n_out, seed=seed + 1, scale=0.1, dtype=dtype, device=device))
    return layer


@pytest.mark.parametrize("bits, group_size", [(2, 8), (3, None), (4, 16), (4, 1), (8, 64)])
def test_quantlinear_matches_torch_observer_and_fake_quantizer(bits, group_size, device):
    """PyTorch as the independent reference: PerChannelMinMaxObserver's scales and zero points on the groups (rows of
    the weight reshaped to [out * n_groups, group_size]), fake_quantize_per_channel_affine's values, F.linear."""
    from torch.ao.quantization import PerChannelMinMaxObserver

    layer = _linear(64, 6, seed=bits, device=device)
    q = G.QuantLinear.from_float(layer, bits, group_size)
    g = 64 if group_size is None else group_size
    rows = layer.weight.detach().reshape(-1, g)
    obs = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.quint8, qscheme=torch.per_channel_affine,
                                   quant_min=0, quant_max=2**bits - 1).to(device)
    obs(rows)
    t_scale, t_zero = obs.calculate_qparams()
    assert torch.equal(q.scales.flatten(), t_scale.to(device)) and torch.equal(q.zeros.flatten().long(), t_zero.to(device).long())
    w_hat = torch.fake_quantize_per_channel_affine(rows, t_scale.to(device), t_zero.to(device).int(), 0, 0,
                                                   2**bits - 1).reshape(6, 64)
    assert torch.equal(q.dequantized_weight(), w_hat)
    x = _randn(3, 5, 64, seed=9, device=device)
    assert torch.equal(q(x), torch.nn.functional.linear(x, w_hat, layer.bias))
    # the codes: (qweight - zeros) * scales is w_hat, and every code and zero point is on the grid
    assert q.qweight.dtype == q.zeros.dtype == torch.uint8 and q.scales.dtype == torch.float32
    assert int(q.qweight.max()) <= 2**bits - 1 and int(q.zeros.max()) <= 2**bits - 1


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_quantlinear_equals_the_fake_quantized_linear(symmetric, dtype, device):
    layer = _linear(32, 10, seed=3, dtype=dtype, device=device)
    q = G.QuantLinear.from_float(layer, 4, 8, symmetric=symmetric)
    fake = _linear(32, 10, seed=3, dtype=dtype, device=device)
    with torch.no_grad():
        fake.weight.copy_(G.fake_quantize(layer.weight, 4, "group", 8, symmetric=symmetric))
    for x in (_randn(4, 32, seed=5, dtype=dtype, device=device), _randn(32, seed=6, dtype=dtype, device=device),
              torch.zeros(0, 32, dtype=dtype, device=device)):
        out = q(x)
        assert out.dtype == dtype and out.device.type == torch.device(device).type
        assert torch.equal(out, fake(x))
    if symmetric:  # the restricted grid: codes 1 .. 15 around the zero point 8
        assert bool((q.zeros == 8).all()) and int(q.qweight.min()) >= 1


def test_quantlinear_stores_codes_not_floats():
    layer = _linear(256, 16, seed=11)
    w_before = layer.weight.detach().clone()
    q = G.QuantLinear.from_float(layer, 4, 128)
    assert torch.equal(layer.weight, w_before)  # the source layer is untouched
    assert not list(q.parameters())
    buffers = dict(q.named_buffers())
    assert {k: (tuple(v.shape), v.dtype) for k, v in buffers.items()} == {
        "qweight": ((16, 256), torch.uint8), "scales": ((16, 2), torch.float32), "zeros": ((16, 2), torch.uint8),
        "bias": ((16,), torch.float32)}
    stored = sum(v.numel() * v.element_size() for v in buffers.values())
    assert stored == 16 * 256 + 16 * 2 * (4 + 1) + 16 * 4  # one byte per code, 5 bytes per group, the bias
    # state_dict carries everything: a module built from it computes the same
    state = q.state_dict()
    again = G.QuantLinear(state["qweight"], state["scales"], state["zeros"], state["bias"], bits=4)
    x = _randn(2, 256, seed=12)
    assert torch.equal(again(x), q(x))
    assert "group_size=128" in repr(q) and q.group_size == 128 and (q.in_features, q.out_features) == (256, 16)


def test_quantlinear_all_zero_and_constant_rows():
    layer = _linear(16, 3, seed=13)
    with torch.no_grad():
        layer.weight[0] = 0.0
        layer.weight[1] = -0.37
    q = G.QuantLinear.from_float(layer, 3, 8)
    w_hat = q.dequantized_weight()
    assert torch.equal(w_hat[0], torch.zeros(16)) and bool(torch.isfinite(w_hat).all())
    assert torch.allclose(w_hat[1], torch.full((16,), -0.37), atol=1e-6)


@pytest.mark.parametrize("make, error, mentions", [
    (lambda: G.QuantLinear.from_float(torch.nn.LayerNorm(8)), TypeError, "linear"),
    (lambda: G.QuantLinear.from_float(_linear(16, 4), 4, 5), ValueError, "group_size"),
    (lambda: G.QuantLinear.from_float(_linear(16, 4), 9), ValueError, "bits"),
    (lambda: G.QuantLinear.from_float(_linear(16, 4), 4, symmetric=1), TypeError, "symmetric"),
    (lambda: G.QuantLinear(torch.zeros(4, 16), torch.ones(4, 2), torch.zeros(4, 2, dtype=torch.uint8)), TypeError, "qweight"),
    (lambda: G.QuantLinear(torch.zeros(4, 16, dtype=torch.uint8), torch.ones(4, 3), torch.zeros(4, 3, dtype=torch.uint8)),
     ValueError, "scales"),
    (lambda: G.QuantLinear(torch.full((4, 16), 20, dtype=torch.uint8), torch.ones(4, 2), torch.zeros(4, 2, dtype=torch.uint8)),
     ValueError, "qweight"),
    (lambda: G.QuantLinear.from_float(_linear(16, 4))(torch.zeros(2, 8)), ValueError, "in_features"),
])
def test_quantlinear_rejects_bad_input(make, error, mentions):
    with pytest.raises(error, match=mentions):
        make()


class _Tower(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.heads = torch.nn.ModuleDict({"a": _linear(8, 8, seed=1), "b": _linear(8, 8, bias=False, seed=2)})
        self.stack = torch.nn.ModuleList([_linear(8, 8, seed=3), torch.nn.ReLU(),
                                          torch.nn.Sequential(torch.nn.LayerNorm(8), _linear(8, 8, seed=4))])
        self.out = _linear(8, 2, seed=5)

    def forward(self, x):
        x = self.heads["a"](x) + self.heads["b"](x)
        for module in self.stack:
            x = module(x)
        return self.out(x)


def test_replace_linears_walks_every_depth_and_keeps_skipped():
    tower = _Tower()
    x = _randn(3, 8, seed=6)
    fake = _Tower()
    with torch.no_grad():
        for name, module in fake.named_modules():
            if isinstance(module, torch.nn.Linear) and name != "heads.b":
                module.weight.copy_(G.fake_quantize(module.weight, 4, "group", 4))
    seen = []

    def factory(linear):
        seen.append(linear)
        return G.QuantLinear.from_float(linear, 4, 4)

    assert G.replace_linears(tower, factory, skip=["heads.b"]) is tower
    assert len(seen) == 4
    kinds = {name: type(m).__name__ for name, m in tower.named_modules() if name.count(".") <= 2 and name}
    assert kinds["heads.a"] == kinds["stack.0"] == kinds["stack.2.1"] == kinds["out"] == "QuantLinear"
    assert kinds["heads.b"] == "Linear" and kinds["stack.2.0"] == "LayerNorm"
    with torch.no_grad():
        assert torch.equal(tower(x), fake(x))


def test_replace_linears_does_not_walk_replacements_and_handles_a_linear_root():
    model = torch.nn.Sequential(_linear(4, 4, seed=1), torch.nn.Sequential(_linear(4, 4, seed=2)))
    calls = []

    def wrap(linear):  # a replacement that contains the original Linear
        calls.append(linear)
        return torch.nn.Sequential(linear, torch.nn.Identity())

    G.replace_linears(model, wrap)
    assert len(calls) == 2 and isinstance(model[0], torch.nn.Sequential) and isinstance(model[1][0][0], torch.nn.Linear)
    root = _linear(4, 4)
    assert isinstance(G.replace_linears(root, lambda linear: torch.nn.Identity()), torch.nn.Identity)
    assert G.replace_linears(root, lambda linear: torch.nn.Identity(), skip=("",)) is root


def test_replace_linears_on_minilm_equals_the_fake_quantized_model():
    from course_lib.models import embed, load_minilm

    model, tok = load_minilm()
    quantized, _ = load_minilm()
    G.replace_linears(quantized, lambda linear: G.QuantLinear.from_float(linear, 4, 64), skip=("pooler.dense",))
    layers = [m for m in quantized.modules() if isinstance(m, G.QuantLinear)]
    assert len(layers) == 36 and isinstance(quantized.pooler.dense, torch.nn.Linear)
    sentences = ["A cat sits on the mat.", "Quantization stores numbers in fewer bits."]
    with G.quantized_linears(model, 4, "group", 64):
        expected = embed(model, tok, sentences)
    assert torch.equal(embed(quantized, tok, sentences), expected)


@pytest.mark.parametrize("call, error, mentions", [
    (lambda m: G.replace_linears([m], lambda linear: linear), TypeError, "model"),
    (lambda m: G.replace_linears(m, "QuantLinear"), TypeError, "factory"),
    (lambda m: G.replace_linears(m, lambda linear: linear, skip="out"), TypeError, "skip"),
    (lambda m: G.replace_linears(m, lambda linear: linear, skip=("stack.1",)), ValueError, "skip"),
    (lambda m: G.replace_linears(m, lambda linear: linear, skip=("outt",)), ValueError, "skip"),
    (lambda m: G.replace_linears(m, lambda linear: linear.weight), TypeError, "factory"),
])
def test_replace_linears_rejects_bad_input(call, error, mentions):
    with pytest.raises(error, match=mentions):
        call(_Tower())


# ----------------------------------------------------------------------------------------------
# plots and widget


def test_plots_return_figures():
    w = _randn(32, 64, seed=21, scale=0.05)
    w[:, 3] *= 30
    rows = [{"bits": b, "label": lab, "granularity": gr, "effective_bits": b + e, "rel_error": r, "cosine": c}
            for b, lab, gr, e, r, c in [(4, "per-tensor", "tensor", 0.0, 0.2, 0.5), (4, "per-channel", "channel", 0.04, 0.02, 0.94),
                                        (4, "group 128", "group", 0.16, 0.01, 0.96), (8, "per-channel", "channel", 0.05, 1e-4, 0.9997)]]
    figs = [plots.plot_scale_layout(), plots.plot_channel_ranges(w, "w"), plots.plot_codes_used(w, 4),
            plots.plot_group_size_curve(w, (4,), (8, 16)), plots.plot_pareto(rows),
            plots.plot_outlier_errors({"a": {"per-tensor": 1.0, "group 32": 0.1}}, 4),
            plots.plot_activation_ranges(w)]
    for fig in figs:
        assert isinstance(fig, plt.Figure)
        plt.close(fig)
    with pytest.raises(ValueError, match="group_size"):
        plots.plot_scale_layout((4, 10), 4)


def test_widget_update_changes_output():
    box = widgets.granularity_explorer(bits=4)
    first = box.last
    text = box.readout.value
    assert first["effective_bits"] == pytest.approx(4 + 20 / 256)  # per-channel: fp16 scale + 4-bit zero per row of 256
    box.granularity.value = "per-tensor"
    assert box.last["rel_error"] > first["rel_error"] and box.readout.value != text
    box.granularity.value = "per-group"
    assert box.last["effective_bits"] == pytest.approx(4 + 20 / box.group_size.value)
    box.bits.value = 8
    assert box.last["rel_error"] < first["rel_error"]
    box.symmetric.value = True
    assert box.last["effective_bits"] == pytest.approx(8 + 16 / box.group_size.value)
    box.layer.value = "synthetic, one outlier column"
    stats = box.update()
    assert stats is box.last and math.isfinite(stats["sqnr_db"])
    plt.close("all")


def test_widget_rejects_bad_weights():
    with pytest.raises(ValueError, match="2-D"):
        widgets.granularity_explorer({"v": torch.ones(3)})
