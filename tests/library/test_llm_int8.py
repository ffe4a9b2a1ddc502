"""course_lib.llm_int8: bitsandbytes as the independent reference, closed forms, properties, bad input."""

from __future__ import annotations

import copy
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.figure  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import course_lib  # noqa: E402,F401  (silences bitsandbytes' import warning)
from course_lib import llm_int8 as L  # noqa: E402
from course_lib.affine import int32_matmul  # noqa: E402
from course_lib.plots import llm_int8 as plots  # noqa: E402
from course_lib.widgets import llm_int8 as widgets  # noqa: E402



@pytest.fixture(scope="module")
def bnb():
    """bitsandbytes, the independent reference (its tests are skipped where it is not installed)."""
    return pytest.importorskip("bitsandbytes")

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
BNB_DEQUANT_CONST = 6.200124e-05  # bitsandbytes' PyTorch fallback (int8_mm_dequant, "default" kernel)


def _randn(*shape, seed=0, scale=1.0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen) * scale).to(dtype)


def _with_outliers(m, k, seed, cols=(3, 17), size=9.0, dtype=torch.float32):
    x = _randn(m, k, seed=seed, scale=1.5)
    for c in cols:
        if c < k:
            x[::2, c] *= size
    return x.to(dtype)


# ----------------------------------------------------------------------------------------------
# bitsandbytes: int8_vectorwise_quant, bit for bit


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("threshold", [0.0, 2.5, 6.0, 100.0])
@pytest.mark.parametrize("shape", [(1, 40), (2, 3), (33, 70), (128, 256)])
def test_int8_vectorwise_quant_equals_bitsandbytes(bnb, dtype, threshold, shape):
    bnbF = bnb.functional
    for seed in range(3):
        x = _with_outliers(*shape, seed=seed, dtype=dtype)
        codes, stats, cols = bnbF.int8_vectorwise_quant(x.clone(), threshold=threshold)
        ours = L.int8_vectorwise_quant(x, threshold)
        cols = torch.empty(0, dtype=torch.int64) if cols is None else cols
        assert torch.equal(ours[0], codes), (ours[0] != codes).sum()
        assert torch.equal(ours[1], stats)
        assert torch.equal(ours[2], cols) and ours[2].dtype == cols.dtype == torch.int64
        if threshold == 0:
            assert torch.equal(L.vectorwise_quant(x)[0], codes) and torch.equal(L.vectorwise_quant(x)[1], stats)


def test_outlier_columns_equal_bitsandbytes(bnb):
    bnbF = bnb.functional
    x = _with_outliers(64, 96, seed=5, cols=(0, 40, 95), size=5.0)
    x[10, 50] = 6.0  # exactly the threshold counts (|x| >= threshold)
    _, _, cols = bnbF.int8_vectorwise_quant(x.clone(), threshold=6.0)
    assert torch.equal(L.outlier_columns(x, 6.0), cols)
    assert 50 in L.outlier_columns(x, 6.0).tolist()


def test_linear8bitlt_reproduced_exactly_from_the_building_blocks(bnb):
    """bnb's Linear8bitLt on CPU = fp16 casts + its constant + dequantized int8 weights for outlier columns."""
    lin = torch.nn.Linear(64, 48)
    with torch.no_grad():
        lin.weight.copy_(_randn(48, 64, seed=1, scale=0.1))
    x = _with_outliers(10, 64, seed=2, cols=(3, 30), size=8.0)
    for threshold in (0.0, 6.0):
        layer = bnb.nn.Linear8bitLt(64, 48, has_fp16_weights=False, threshold=threshold)
        layer.load_state_dict(lin.state_dict())
        layer = layer.to("cpu").eval()
        with torch.no_grad():
            theirs = layer(x)
        cx, sx, cols = L.int8_vectorwise_quant(x.half(), threshold)
        cw, sw = L.vectorwise_quant(lin.weight.detach().half())
        y = int32_matmul(cx, cw.T).float() * (sx[:, None] * sw[None, :]) * BNB_DEQUANT_CONST + lin.bias.detach()
        if cols.numel():
            y = y.addmm(x[:, cols], (cw[:, cols] * sw[:, None] * 7.874015718698502e-3).T)
        assert (threshold > 0) == (cols.numel() > 0)
        assert torch.equal(theirs, y)
        # and the course's module is close to it (its differences: no fp16 casts, exact 1/127^2, fp outlier weights)
        ours = L.Int8Linear.from_linear(lin, threshold=threshold)(x)
        exact = lin(x).detach()
        assert (ours - theirs).abs().max() < 0.05 * exact.abs().max()
        bnb_like = L.Int8Linear.from_linear(lin, threshold=threshold, outlier_weights="int8")(x)
        assert (bnb_like - theirs).abs().max() < 0.02 * exact.abs().max()


def test_bitsandbytes_dequant_constant_is_not_exactly_one_over_127_squared():
    assert BNB_DEQUANT_CONST / (1 / 127**2) - 1 == pytest.approx(1.8e-5, rel=0.02)


# ----------------------------------------------------------------------------------------------
# closed forms


def test_vectorwise_quant_closed_form():
    x = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [3.0, 3.0, -3.0], [1e-40, -1e-40, 0.0]])
    codes, stats = L.vectorwise_quant(x)
    # 127 * 1 / 2 = 63.5 -> 64 (half to even); 127 * 0.5 / 2 = 31.75 -> 32
    assert codes.tolist() == [[64, -127, 32], [0, 0, 0], [127, 127, -127], [127, -127, 0]]
    assert codes.dtype == torch.int8 and stats.dtype == torch.float32
    assert stats[:3].tolist() == [2.0, 0.0, 3.0] and stats[3].item() > 0
    deq = L.vectorwise_dequant(codes, stats)
    assert torch.allclose(deq[2], x[2]) and torch.equal(deq[1], torch.zeros(3))


def test_int8_matmul_dequant_closed_form():
    cx = torch.tensor([[127, 0], [-127, 64]], dtype=torch.int8)
    cw = torch.tensor([[127, 127], [1, -1]], dtype=torch.int8)
    out = L.int8_matmul_dequant(cx, torch.tensor([2.0, 1.0]), cw, torch.tensor([0.5, 127.0]))
    acc = torch.tensor([[127 * 127, 127], [-127 * 127 + 64 * 127, -127 - 64]], dtype=torch.float32)
    expected = acc * torch.tensor([[1.0, 254.0], [0.5, 127.0]]) / 127**2
    assert torch.allclose(out, expected, rtol=1e-6, atol=0) and out.dtype == torch.float32
    assert out[0, 0].item() == pytest.approx(1.0)  # 127 * 127 * 2 * 0.5 / 127^2


def test_outlier_columns_closed_form():
    x = torch.tensor([[1.0, -6.0, 5.99, 0.0], [0.0, 0.0, 0.0, 7.0]])
    assert L.outlier_columns(x, 6.0).tolist() == [1, 3]
    assert L.outlier_columns(x, 5.99).tolist() == [1, 2, 3]
    assert L.outlier_columns(x, 0.0).tolist() == [] and L.outlier_columns(x, math.inf).tolist() == []
    assert L.outlier_columns(x).tolist() == [1, 3]  # default threshold 6.0


def test_int8_vectorwise_quant_zeroes_outlier_columns_and_ignores_outliers_in_row_stats():
    x = torch.tensor([[1.0, 8.0, -2.0], [0.5, 4.0, 0.25]])
    codes, stats, cols = L.int8_vectorwise_quant(x, 6.0)
    assert cols.tolist() == [1]
    assert stats.tolist() == [2.0, 4.0]  # bnb's rule: only |x| >= threshold is left out (the 4.0 counts)
    assert codes[:, 1].tolist() == [0, 0]
    assert codes.tolist() == [[64, 0, -127], [16, 0, 8]]


def test_llm_int8_matmul_decomposition():
    x = _with_outliers(16, 32, seed=3, cols=(2, 9), size=10.0)
    w = _randn(8, 32, seed=4, scale=0.2)
    cols = L.outlier_columns(x, 6.0)
    regular = x.clone()
    regular[:, cols] = 0  # the paper's int8 part: the outlier columns leave the product and the row statistics
    cw, sw = L.vectorwise_quant(w)
    expected = L.int8_matmul_dequant(*L.vectorwise_quant(regular), cw, sw) + x[:, cols] @ w[:, cols].T
    assert cols.numel() == 2
    assert torch.allclose(L.llm_int8_matmul(x, w), expected, rtol=1e-6, atol=1e-6)
    # closed form of the int8 part: row statistics = max |x| over the regular columns only
    sx = x.abs().index_fill(1, cols, 0).amax(dim=1)
    _, bnb_sx, _ = L.int8_vectorwise_quant(x, 6.0)
    assert torch.equal(L.vectorwise_quant(regular)[1], sx) and bool((sx <= bnb_sx).all()) and bool((sx < bnb_sx).any())
    # no outliers: plain vector-wise; every column an outlier: the float product itself
    vw = L.int8_matmul_dequant(*L.vectorwise_quant(x), cw, sw)
    assert torch.equal(L.llm_int8_matmul(x, w, 0.0), vw) and torch.equal(L.llm_int8_matmul(x, w, math.inf), vw)
    assert torch.allclose(L.llm_int8_matmul(x.abs() + 1, w, 1.0), (x.abs() + 1) @ w.T, rtol=1e-6, atol=1e-6)
    assert torch.equal(L.absmax_int8_matmul(x, w, "vector"), vw)


def test_llm_int8_matmul_uses_the_pieces_it_is_given():
    """The pieces are parameters: a notebook passes its own exercises' functions; each one is used."""
    x = _with_outliers(12, 24, seed=13, cols=(1, 7), size=10.0)
    w = _randn(5, 24, seed=14, scale=0.3)
    exact = x @ w.T
    every = L.llm_int8_matmul(x, w, find_outliers=lambda x, threshold: torch.arange(x.shape[1]))
    assert torch.allclose(every, exact, rtol=1e-5, atol=1e-5)  # every column in floating point: the float product
    none = L.llm_int8_matmul(x, w, find_outliers=lambda x, threshold: torch.empty(0, dtype=torch.int64))
    assert torch.equal(none, L.absmax_int8_matmul(x, w, "vector"))
    doubled = L.llm_int8_matmul(x, w, 0.0, matmul=lambda *a: 2 * L.int8_matmul_dequant(*a))
    assert torch.equal(doubled, 2 * none)

    def coarse(m):  # a valid quantizer with twice the statistic: codes within +-64
        stats = 2 * m.float().abs().amax(dim=1)
        return torch.round(m.float() * (127 / stats)[:, None]).to(torch.int8), stats
    y = L.llm_int8_matmul(x, w, 0.0, quantize=coarse)
    assert not torch.equal(y, none) and torch.allclose(y, exact, rtol=0.1, atol=0.1 * float(exact.abs().max()))
    with pytest.raises(TypeError, match="quantize"):
        L.llm_int8_matmul(x, w, quantize=None)


def test_outliers_hurt_naive_int8_but_not_llm_int8():
    x = _randn(64, 256, seed=6)
    x[:, [5, 100, 200]] *= 60  # systematic outlier features in every token
    w = _randn(128, 256, seed=7) / 16
    exact = x.double() @ w.double().T

    def err(y):
        return float((y.double() - exact).norm() / exact.norm())

    e_tensor, e_vector = err(L.absmax_int8_matmul(x, w, "tensor")), err(L.absmax_int8_matmul(x, w, "vector"))
    e_llm = err(L.llm_int8_matmul(x, w))
    assert e_llm < e_vector / 5 and e_vector < e_tensor
    assert e_llm < 0.01


def test_int32_overflow_limit():
    assert L.MAX_INNER_DIM == (2**31 - 1) // 127**2
    k = L.MAX_INNER_DIM + 1
    ones = torch.ones(1, k, dtype=torch.int8)
    with pytest.raises(ValueError, match="int32"):
        L.int8_matmul_dequant(ones, torch.ones(1), ones, torch.ones(1))


# ----------------------------------------------------------------------------------------------
# properties

matrices = st.tuples(st.integers(1, 12), st.integers(1, 40), st.integers(0, 10_000), st.floats(1e-3, 1e3))


@SETTINGS
@given(spec=matrices)
def test_vectorwise_roundtrip_error_is_at_most_half_a_step(spec):
    m, k, seed, scale = spec
    x = _randn(m, k, seed=seed, scale=scale)
    codes, stats = L.vectorwise_quant(x)
    assert int(codes.abs().max()) == 127  # every nonzero row uses its largest code
    err = (L.vectorwise_dequant(codes, stats) - x).abs()
    step = stats[:, None] / 127
    assert bool((err <= step / 2 * (1 + 1e-5) + 1e-30).all())


@SETTINGS
@given(spec=matrices, power=st.integers(-20, 20))
def test_vectorwise_codes_do_not_depend_on_a_row_scale(spec, power):
    m, k, seed, scale = spec
    x = _randn(m, k, seed=seed, scale=scale)
    factor = torch.tensor(2.0**power)  # a power of two scales exactly
    row_factors = factor ** torch.arange(m).remainder(3)[:, None]
    c1, s1 = L.vectorwise_quant(x)
    c2, s2 = L.vectorwise_quant(x * row_factors)
    assert torch.equal(c1, c2) and torch.equal(s2, s1 * row_factors[:, 0])


@SETTINGS
@given(spec=matrices, threshold=st.floats(0.1, 50.0))
def test_int8_vectorwise_quant_invariants(spec, threshold):
    m, k, seed, scale = spec
    x = _randn(m, k, seed=seed, scale=scale)
    codes, stats, cols = L.int8_vectorwise_quant(x, threshold)
    assert bool((stats < threshold).all())  # outliers never set a row's scale
    assert bool((codes[:, cols] == 0).all()) and bool((codes.abs() <= 127).all())
    regular = torch.ones(k, dtype=torch.bool)
    regular[cols] = False
    assert bool((x[:, regular].abs() < threshold).all())
    assert torch.equal(cols, torch.unique(cols))


@SETTINGS
@given(spec=matrices, n=st.integers(1, 9), threshold=st.floats(0.5, 20.0))
def test_llm_int8_error_bound(spec, n, threshold):
    """|error| <= sum_k |x||dw| + |dx||w| + |dx||dw| over the int8 columns (half a step each)."""
    m, k, seed, scale = spec
    x = _randn(m, k, seed=seed, scale=scale)
    w = _randn(n, k, seed=seed + 1)
    y = L.llm_int8_matmul(x, w, threshold).double()
    exact = x.double() @ w.double().T
    _, sx, cols = L.int8_vectorwise_quant(x, threshold)
    _, sw = L.vectorwise_quant(w)
    mask = torch.ones(k, dtype=torch.float64)
    mask[cols] = 0
    dx = (sx.double() / 254)[:, None] * mask
    dw = (sw.double() / 254)[:, None].expand(n, k)
    bound = (x.double().abs() * mask) @ dw.T + dx @ w.double().abs().T + dx @ dw.T
    float_rounding = 1e-5 * (x.double().abs() @ w.double().abs().T + 1)  # float32 sums
    assert bool(((y - exact).abs() <= bound * (1 + 1e-4) + float_rounding).all())


# ----------------------------------------------------------------------------------------------
# every device


def test_same_results_on_every_device(device):
    x = _with_outliers(40, 96, seed=8, cols=(1, 50))
    w = _randn(24, 96, seed=9, scale=0.1)
    for fn, args in [(L.vectorwise_quant, (x,)), (L.int8_vectorwise_quant, (x, 6.0)), (L.outlier_columns, (x, 6.0)),
                     (L.llm_int8_matmul, (x, w)), (L.absmax_int8_matmul, (x, w))]:
        cpu = fn(*args)
        dev = fn(*[a.to(device) if isinstance(a, torch.Tensor) else a for a in args])
        cpu, dev = (cpu, dev) if isinstance(cpu, tuple) else ((cpu,), (dev,))
        for c, d in zip(cpu, dev):
            assert d.device.type == device
            if c.is_floating_point() and fn in (L.llm_int8_matmul, L.absmax_int8_matmul):
                assert torch.allclose(d.cpu(), c, rtol=1e-5, atol=1e-5)
            else:
                assert torch.equal(d.cpu(), c)
    layer = L.Int8Linear.from_linear(torch.nn.Linear(96, 24)).to(device)
    assert layer(x.to(device)[None]).shape == (1, 40, 24)


# ----------------------------------------------------------------------------------------------
# bad input


X = _randn(4, 8, seed=0)
W = _randn(3, 8, seed=1)
NAN_X = X.clone()
NAN_X[1, 2] = float("nan")
BAD = [
    (L.llm_int8_matmul, (X, W, -1.0), ValueError, "threshold"),
    (L.llm_int8_matmul, (X, W, float("nan")), ValueError, "threshold"),
    (L.llm_int8_matmul, (X, W, True), TypeError, "threshold"),
    (L.llm_int8_matmul, (X, W, "6"), TypeError, "threshold"),
    (L.llm_int8_matmul, (X.to(torch.int32), W), TypeError, "x"),
    (L.llm_int8_matmul, (X, W.to(torch.int8)), TypeError, "w"),
    (L.llm_int8_matmul, (NAN_X, W), ValueError, "x"),
    (L.llm_int8_matmul, (X, W.T.contiguous()), ValueError, "w"),
    (L.llm_int8_matmul, (X[0], W), ValueError, "x"),
    (L.llm_int8_matmul, (torch.empty(0, 8), W), ValueError, "x"),
    (L.llm_int8_matmul, ([[1.0]], W), TypeError, "x"),
    (L.outlier_columns, (X, -0.5), ValueError, "threshold"),
    (L.outlier_columns, (NAN_X,), ValueError, "x"),
    (L.int8_vectorwise_quant, (X.half(), -6.0), ValueError, "threshold"),
    (L.vectorwise_quant, (X.to(torch.int8),), TypeError, "x"),
    (L.vectorwise_quant, (torch.full((2, 2), float("inf")),), ValueError, "x"),
    (L.int8_matmul_dequant, (X, torch.ones(4), W, torch.ones(3)), TypeError, "codes_x"),
    (L.int8_matmul_dequant, (X.to(torch.int8), torch.ones(4), W.T.contiguous().to(torch.int8), torch.ones(8)),
     ValueError, "codes_w"),
    (L.int8_matmul_dequant, (X.to(torch.int8), torch.ones(5), W.to(torch.int8), torch.ones(3)), ValueError, "row_stats"),
    (L.int8_matmul_dequant, (X.to(torch.int8), torch.ones(4), W.to(torch.int8), torch.ones(3).double()),
     TypeError, "col_stats"),
    (L.absmax_int8_matmul, (X, W, "group"), ValueError, "granularity"),
]


@pytest.mark.parametrize("fn, args, error, word", BAD, ids=[f"{b[0].__name__}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_is_rejected_with_a_clear_error(fn, args, error, word):
    with pytest.raises(error, match=word):
        fn(*args)


def test_int8linear_rejects_bad_input():
    layer = L.Int8Linear.from_linear(torch.nn.Linear(8, 3))
    with pytest.raises(ValueError, match="in_features"):
        layer(torch.ones(2, 5))
    with pytest.raises(TypeError, match="x"):
        layer(torch.ones(2, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="x"):
        layer(NAN_X)
    with pytest.raises(ValueError, match="mode"):
        L.Int8Linear.from_linear(torch.nn.Linear(8, 3), mode="int4")
    with pytest.raises(ValueError, match="threshold"):
        L.Int8Linear.from_linear(torch.nn.Linear(8, 3), threshold=-1)
    with pytest.raises(TypeError, match="linear"):
        L.Int8Linear.from_linear(torch.nn.Conv1d(8, 3, 1))


# ----------------------------------------------------------------------------------------------
# the module and whole models


@pytest.mark.parametrize("mode", ["llm.int8", "vectorwise", "tensor"])
def test_int8linear_matches_the_functions(mode):
    lin = torch.nn.Linear(32, 12)
    x = _with_outliers(2 * 5, 32, seed=11, cols=(4,), size=10.0).reshape(2, 5, 32)
    layer = L.Int8Linear.from_linear(lin, mode=mode)
    y = layer(x)
    x2 = x.reshape(10, 32)
    w = lin.weight.detach()
    expected = {"llm.int8": L.llm_int8_matmul(x2, w), "vectorwise": L.absmax_int8_matmul(x2, w, "vector"),
                "tensor": L.absmax_int8_matmul(x2, w, "tensor")}[mode] + lin.bias.detach()
    assert y.shape == (2, 5, 12) and torch.allclose(y.reshape(10, 12), expected, rtol=1e-5, atol=1e-6)
    if mode == "llm.int8":
        assert layer.outlier_cols_seen == 1 and layer.cols_seen == 32
    assert layer(torch.empty(0, 32)).shape == (0, 12)
    assert layer(x.half()).dtype == torch.float16
    assert mode in repr(layer)


def test_int8linear_static_clips_at_the_calibrated_range_and_quantizes_like_a_row():
    """mode "static": one fixed scale act_absmax / 127 for every token, values beyond act_absmax clipped; the codes
    are those of a row whose absmax is act_absmax (round(x * 127 / act_absmax), half to even)."""
    lin = torch.nn.Linear(16, 6)
    w = lin.weight.detach()
    x = _randn(9, 16, seed=21, scale=2.0)
    x[0, 3], x[4, 7] = 40.0, -25.0  # beyond the calibrated range: clipped
    layer = L.Int8Linear.from_linear(lin, mode="static", act_absmax=5.0)
    x_clip = x.clamp(-5.0, 5.0).double()
    codes_x = torch.round(x_clip * (127 / 5.0))
    codes_w, col_stats = L.vectorwise_quant(w)
    expected = (codes_x @ codes_w.double().T) * (5.0 / 127) * (col_stats.double() / 127) + lin.bias.detach().double()
    assert torch.allclose(layer(x).double(), expected, rtol=1e-5, atol=1e-5)
    assert "act_absmax=5" in repr(layer) and layer.act_absmax == 5.0
    # a range as large as the input's own absmax gives per-tensor int8 of the activations (no clipping)
    per_tensor = L.Int8Linear.from_linear(lin, mode="static", act_absmax=x.abs().max())
    codes, stat = L._per_tensor(x)
    expected = L.int8_matmul_dequant(codes, stat.expand(9), codes_w, col_stats) + lin.bias.detach()
    assert torch.allclose(per_tensor(x), expected, rtol=1e-6, atol=1e-6)
    for bad, error in ((None, TypeError), (0.0, ValueError), (float("inf"), ValueError), (-1.0, ValueError)):
        with pytest.raises(error, match="act_absmax"):
            L.Int8Linear.from_linear(lin, mode="static", act_absmax=bad)


def test_int8_gemm_is_exact_on_both_paths():
    """The CPU's float32 GEMM of int8 codes (K <= 1024) gives the int32 accumulator's integers exactly, at the worst
    case (every product 128**2 = 2**14, the sum 2**24) and on random codes; beyond K = 1024 the int32 path runs."""
    assert L.FLOAT32_EXACT_INNER_DIM == 1024
    gen = torch.Generator().manual_seed(3)
    worst = torch.full((2, 1024), -128, dtype=torch.int8)
    assert L._int8_gemm(worst, worst)[0, 0].item() == 2**24 == int32_matmul(worst, worst.T)[0, 0].item()
    for k in (1, 255, 1024, 1025, 3000):
        a = torch.randint(-128, 128, (7, k), dtype=torch.int8, generator=gen)
        b = torch.randint(-128, 128, (5, k), dtype=torch.int8, generator=gen)
        got = L._int8_gemm(a, b)
        assert got.dtype == torch.float32 and torch.equal(got.to(torch.int32), int32_matmul(a, b.T))


def test_quantize_model_int8_static_needs_a_range_for_every_layer():
    model = _tiny_llama()
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"]
    ranges = {name: torch.rand(8, generator=torch.Generator().manual_seed(i)) + 1.0 for i, name in enumerate(names)}
    with pytest.raises(TypeError, match="act_absmax"):
        L.quantize_model_int8(copy.deepcopy(model), mode="static")
    with pytest.raises(ValueError, match="act_absmax"):
        L.quantize_model_int8(copy.deepcopy(model), mode="static", act_absmax={n: ranges[n] for n in names[1:]})
    q = L.quantize_model_int8(copy.deepcopy(model), mode="static", act_absmax=ranges)
    layers = L.int8_layers(q)
    assert len(layers) == 14 and all(layer.act_absmax == pytest.approx(float(ranges[n].max())) for n, layer in layers.items())


def _tiny_llama():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def test_quantize_model_int8_replaces_every_linear_but_lm_head():
    model = _tiny_llama()
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(ids).logits
        L.quantize_model_int8(model)
        after = model(ids).logits
    layers = L.int8_layers(model)
    assert len(layers) == 2 * 7 and isinstance(model.lm_head, torch.nn.Linear)
    assert not any(isinstance(m, torch.nn.Linear) for n, m in model.named_modules() if n != "lm_head")
    assert (after - before).abs().max() < 0.05 * before.abs().max()


def test_inject_outlier_features_keeps_the_function_and_grows_outliers():
    model = _tiny_llama()
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    captured = {}
    handle = model.model.layers[1].self_attn.q_proj.register_forward_pre_hook(
        lambda mod, inp: captured.__setitem__("x", inp[0].detach()))
    with torch.no_grad():
        before = model(ids).logits
        small = captured["x"].abs().amax(dim=(0, 1))
        L.inject_outlier_features(model, [3, 20], 50.0)
        after = model(ids).logits
    handle.remove()
    big = captured["x"].abs().amax(dim=(0, 1))
    assert torch.allclose(after, before, rtol=1e-4, atol=1e-4)
    assert torch.allclose(big[[3, 20]], small[[3, 20]] * 50, rtol=1e-4)
    assert torch.allclose(big[[0, 1, 2]], small[[0, 1, 2]], rtol=1e-4)
    for bad in ([], [3, 3], [32], [1.5]):
        with pytest.raises(ValueError, match="dims"):
            L.inject_outlier_features(model, bad, 2.0)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="scale"):
            L.inject_outlier_features(model, [1], bad)


# ----------------------------------------------------------------------------------------------
# plots and widget


def test_plots_return_figures():
    x, w = widgets.default_data()
    fig = plots.plot_column_absmax(x, 6.0)
    assert isinstance(fig, matplotlib.figure.Figure) and fig.n_outliers == 3
    fig = plots.plot_threshold_sweep(x, w, [0.0, 1.0, 6.0, 100.0], mark=6.0)
    assert isinstance(fig, matplotlib.figure.Figure)
    rows = fig.rows
    assert rows[0]["outlier_cols"] == 0 and rows[-1]["outlier_cols"] == 0
    assert rows[2]["outlier_cols"] == 3 and rows[2]["rel_error"] < rows[0]["rel_error"] / 5
    fig = plots.plot_method_bars({"fp32": 20.0, "int8": 30.0, "LLM.int8()": 20.1}, reference="fp32")
    assert isinstance(fig, matplotlib.figure.Figure)
    plt.close("all")


def test_widget_updates_without_a_browser():
    pytest.importorskip("ipywidgets")
    box = widgets.threshold_explorer()
    first = box.last
    assert first["outlier_cols"] == 3 and "columns in floating point" in box.readout.value
    box.threshold.value = 0.0
    none = box.last
    assert none["outlier_cols"] == 0 and none["rel_error"] == pytest.approx(none["rel_error_vectorwise"])
    assert none["rel_error"] > 5 * first["rel_error"]
    box.threshold.value = 2.0
    assert box.update()["outlier_cols"] > 3
    plt.close("all")
