"""course_lib.qat: the STE against torch.fake_quantize_per_tensor_affine's gradient, finite differences,
LSQ's gradients against the paper's closed form, torch's learnable fake quantization, finite differences and
gradcheck, the PTQ/QAT/LSQ accuracy claims of notebook 04 (fixed seeds), plots and widget."""

from __future__ import annotations

import functools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from course_lib import affine, observers, qat  # noqa: E402
from course_lib import data  # noqa: E402
from course_lib.data import load_digits  # noqa: E402
from course_lib.evaluate import accuracy  # noqa: E402
from course_lib.plots import qat as plots  # noqa: E402
from course_lib.widgets import qat as widgets  # noqa: E402

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _grads(fn, x, scale, zp, qmin, qmax, g):
    xg = x.clone().requires_grad_(True)
    y = fn(xg, scale, zp, qmin, qmax)
    y.backward(g)
    return y.detach(), xg.grad


def _torch_fq(x, scale, zp, qmin, qmax):
    return torch.fake_quantize_per_tensor_affine(x, float(scale), int(zp), qmin, qmax)


# ----------------------------------------------------------------------------------------------
# the straight-through estimator


@given(values=st.lists(st.floats(-100, 100, allow_nan=False, width=32), min_size=1, max_size=64),
       bits=st.integers(2, 8), signed=st.booleans(), shrink=st.floats(0.05, 1.5))
@SETTINGS
def test_ste_gradient_equals_torch_fake_quantize(values, bits, signed, shrink, device):
    x = torch.tensor(values, device=device)
    qmin, qmax = affine.qrange(bits, signed)
    lo, hi = x.min() * shrink, x.max() * shrink  # a range that may clip
    scale, zp = affine.compute_scale_zero_point(lo, hi, qmin, qmax)
    g = torch.linspace(-1, 2, x.numel(), device=device)
    y, grad = _grads(qat.fake_quantize_ste, x, scale, zp, qmin, qmax, g)
    y_t, grad_t = _grads(_torch_fq, x, scale, zp, qmin, qmax, g)
    assert torch.equal(y, y_t)
    assert torch.equal(grad, grad_t)  # exactly: same mask, same values


def test_ste_mask_closed_form():
    x = torch.tensor([-2.0, -1.0, -0.3, 0.0, 0.4, 1.0, 1.2, 5.0])
    scale, zp, qmin, qmax = 0.5, 0, -2, 2  # representable [-1, 1]; codes -2..2
    y, grad = _grads(qat.fake_quantize_ste, x, scale, zp, qmin, qmax, torch.ones(8))
    # code of 1.2 is round(2.4) = 2: inside; -0.3 -> round(-0.6) = -1; 5.0 -> 10: clipped
    assert grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    assert y.tolist() == [-1.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.0, 1.0]


def test_ste_mask_boundary_ties():
    # -1.25 / 0.5 = -2.5 rounds (half to even) to -2: inside; 1.25 -> 2.5 -> 2: inside; 1.26 -> 2.52 -> 3: clipped
    x = torch.tensor([-1.25, 1.25, 1.26, -1.26])
    _, grad = _grads(qat.fake_quantize_ste, x, 0.5, 0, -2, 2, torch.ones(4))
    _, grad_t = _grads(_torch_fq, x, 0.5, 0, -2, 2, torch.ones(4))
    assert grad.tolist() == grad_t.tolist() == [1.0, 1.0, 0.0, 0.0]


def test_ste_against_finite_differences():
    """Small steps see the staircase's true derivative (0); steps much larger than the scale see the
    slope of its trend, which the clipped STE takes: 1 inside the range, 0 outside."""
    scale, zp, qmin, qmax = 0.01, 0, -100, 100  # range [-1, 1]
    x = torch.tensor([-3.0, -0.5003, 0.2502, 0.7001, 2.5])
    _, grad = _grads(qat.fake_quantize_ste, x, scale, zp, qmin, qmax, torch.ones(5))

    def fd(h):
        f = functools.partial(affine.fake_quantize, scale=scale, zero_point=zp, qmin=qmin, qmax=qmax)
        return (f(x + h) - f(x - h)) / (2 * h)

    assert fd(1e-4).abs().max().item() == 0.0  # the staircase is flat between steps
    large = fd(0.2)
    assert torch.allclose(large, grad, atol=scale / 0.2)  # inside: slope within s/h of 1; outside: 0
    assert grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_ste_keeps_dtype_and_rejects_bad_input():
    x = torch.randn(10, dtype=torch.float64, requires_grad=True)
    y = qat.fake_quantize_ste(x, 0.1, 0, -8, 7)
    y.sum().backward()
    assert y.dtype == torch.float64 and x.grad.dtype == torch.float64
    for args, exc, word in [
        ((torch.arange(4), 0.1, 0, -8, 7), TypeError, "dtype"),
        ((torch.tensor([float("nan")]), 0.1, 0, -8, 7), ValueError, "finite"),
        ((torch.randn(4), 0.0, 0, -8, 7), ValueError, "scale"),
        ((torch.randn(4), 0.1, 9, -8, 7), ValueError, "zero_point"),
        ((torch.randn(4), 0.1, 0, 7, -8), ValueError, "qmin"),
        (([1.0], 0.1, 0, -8, 7), TypeError, "Tensor"),
    ]:
        with pytest.raises(exc, match=word):
            qat.fake_quantize_ste(*args)


# ----------------------------------------------------------------------------------------------
# LSQ: learned step size (Esser et al. 2020)


def _lsq_grads(x, step, qmin, qmax, g, grad_scale=None):
    xg, sg = x.clone().requires_grad_(True), step.clone().requires_grad_(True)
    y = qat.lsq_fake_quantize(xg, sg, qmin, qmax, grad_scale)
    y.backward(g)
    return y.detach(), xg.grad, sg.grad


def test_lsq_closed_form():
    # step 0.5, codes -4..3: v = x / 0.5 = [-6, -2.2, -0.6, 0, 0.52, 1.8, 2.8, 4]
    x = torch.tensor([-3.0, -1.1, -0.3, 0.0, 0.26, 0.9, 1.4, 2.0], dtype=torch.float64)
    y, gx, gs = _lsq_grads(x, torch.tensor(0.5, dtype=torch.float64), -4, 3, torch.ones(8, dtype=torch.float64), 1.0)
    assert y.tolist() == [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 1.5]
    assert gx.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    # d x_hat / d s: qmin, round(v) - v inside, qmax
    per_element = [-4.0, 0.2, -0.4, 0.0, 0.48, 0.2, 0.2, 3.0]
    assert gs.item() == pytest.approx(sum(per_element), abs=1e-12)
    # the default gradient scale is 1 / sqrt(N * qmax) with N = 8 elements per step
    _, _, gs_default = _lsq_grads(x, torch.tensor(0.5, dtype=torch.float64), -4, 3, torch.ones(8, dtype=torch.float64))
    assert gs_default.item() == pytest.approx(sum(per_element) / (8 * 3) ** 0.5, abs=1e-12)


def test_lsq_forward_equals_fake_quantization(device):
    x = torch.randn(6, 50, generator=torch.Generator().manual_seed(0)).to(device) * 2
    # a power-of-two step: x / s and x * (1 / s) are the same float, so the two rounding rules agree exactly
    y = qat.lsq_fake_quantize(x, torch.tensor(0.25, device=device), -8, 7)
    assert torch.equal(y, affine.fake_quantize(x, 0.25, 0, -8, 7))
    assert torch.equal(y, torch.fake_quantize_per_tensor_affine(x, 0.25, 0, -8, 7))
    # per output channel ([C, 1] steps) against torch's per-channel fake quantization; any other step: the
    # two rules may differ only where x / s lies next to a rounding tie
    steps = torch.tensor([0.1, 0.2, 0.3, 0.45, 0.05, 1.0], device=device)
    y = qat.lsq_fake_quantize(x, steps[:, None], 0, 3)
    y_t = torch.fake_quantize_per_channel_affine(x, steps, torch.zeros(6, dtype=torch.int32, device=device), 0, 0, 3)
    v = x / steps[:, None]
    near_tie = ((v - v.floor()) - 0.5).abs() < 1e-5
    assert torch.equal(y[~near_tie], y_t[~near_tie]) and int(near_tie.sum()) <= 2


def test_lsq_gradients_equal_torch_learnable_fake_quantize_away_from_the_range_ends():
    """torch._fake_quantize_learnable_per_channel_affine is PyTorch's LSQ. It decides inside/outside on the
    rounded code, the paper on v = x / s itself: the two differ only for v within half a step outside
    [qmin, qmax], so compare everywhere else, element by element (one step per element)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2000, generator=gen) * 3
    steps = torch.rand(2000, generator=gen) * 0.5 + 0.05  # torch's op takes float32 steps
    g = torch.randn(2000, generator=gen)
    v = x / steps
    # torch rounds x * (1 / s) in float32: leave out the few values next to a rounding tie
    clear = ((v - v.floor()) - 0.5).abs() > 1e-4
    for qmin, qmax in ((-8, 7), (0, 3), (-2, 1)):
        y, gx, gs = _lsq_grads(x, steps, qmin, qmax, g, 0.7)
        xt, st_ = x[:, None].clone().requires_grad_(True), steps.clone().requires_grad_(True)
        yt = torch._fake_quantize_learnable_per_channel_affine(xt, st_, torch.zeros(2000), 0, qmin, qmax, 0.7)
        yt.backward(g[:, None])
        band = ((v > qmin - 0.5) & (v <= qmin)) | ((v >= qmax) & (v < qmax + 0.5))
        assert 0 < int(band.sum()) < 400
        same = clear & ~band
        assert torch.allclose(y[clear], yt[clear, 0])
        assert torch.equal(gx[same], xt.grad[same, 0])
        assert torch.allclose(gs[same], st_.grad[same], rtol=1e-4, atol=1e-6)
        # in the band the paper clips: no gradient to x, the range end's code to the step
        assert bool((gx[band] == 0).all())
        ends = torch.where(v[band] > 0, float(qmax), float(qmin))
        assert torch.allclose(gs[band], 0.7 * g[band] * ends)


def test_lsq_step_gradient_against_finite_differences():
    """Between code changes x_hat = clamp(round(v)) * s is linear in s: a small finite difference sees
    clamp(round(v)), the true derivative. LSQ's gradient is that minus v inside the range (the STE's term
    through round), and equals it outside (x_hat = qmax * s or qmin * s there)."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(500, generator=gen, dtype=torch.float64) * 2
    s, h, qmin, qmax = 0.37, 1e-7, -4, 3
    v = x / s
    keep = (((v - v.floor()) - 0.5).abs() > 1e-3) & ((v - qmin).abs() > 1e-3) & ((v - qmax).abs() > 1e-3)
    x = x[keep]
    v = x / s
    _, _, grads = _lsq_grads(x, torch.full_like(x, s), qmin, qmax, torch.ones_like(x), 1.0)  # one step per element

    def x_hat(step):  # in float64, so that a step of 1e-7 is far above rounding noise
        return torch.round(x / step).clamp(qmin, qmax) * step

    fd = (x_hat(s + h) - x_hat(s - h)) / (2 * h)
    inside = (v > qmin) & (v < qmax)
    assert torch.allclose(fd, torch.round(v).clamp(qmin, qmax), atol=1e-5)
    assert torch.allclose(grads + v * inside, fd, atol=1e-5)
    assert torch.allclose(grads[~inside], fd[~inside], atol=1e-5)


def test_lsq_gradcheck_where_the_ste_is_exact():
    """Where every value is clipped, x_hat = qmin * s or qmax * s: LSQ's gradients (0 for x, the range end for
    s) are the true derivatives, and torch.autograd.gradcheck's finite differences agree."""
    x = torch.tensor([[-9.0, 5.0, 7.5], [-4.1, 3.3, -6.0]], dtype=torch.float64, requires_grad=True)
    for step in (torch.tensor(0.5, dtype=torch.float64), torch.tensor([[0.5], [0.4]], dtype=torch.float64)):
        step = step.requires_grad_(True)
        assert torch.autograd.gradcheck(lambda a, b: qat.lsq_fake_quantize(a, b, -4, 3, 1.0), (x, step))


def test_lsq_per_channel_gradient_is_the_per_row_sum():
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(4, 32, generator=gen)
    steps = torch.tensor([[0.2], [0.5], [0.1], [0.3]])
    g = torch.randn(4, 32, generator=gen)
    y, gx, gs = _lsq_grads(w, steps, -2, 1, g)
    assert gs.shape == (4, 1)
    for c in range(4):  # each row alone, per tensor, with the same N = 32 elements per step
        y_c, gx_c, gs_c = _lsq_grads(w[c], steps[c, 0], -2, 1, g[c])
        assert torch.equal(y[c], y_c) and torch.equal(gx[c], gx_c)
        assert torch.allclose(gs[c, 0], gs_c, rtol=1e-5)
    # one step per input column: [1, K] broadcasts too
    _, _, gs_cols = _lsq_grads(w, torch.full((1, 32), 0.25), -2, 1, g)
    assert gs_cols.shape == (1, 32)


def test_lsq_dtypes_devices_and_bad_input(device):
    x = torch.randn(10, dtype=torch.float64, device=device, requires_grad=True)
    step = torch.tensor(0.1, device=device, requires_grad=True)
    y = qat.lsq_fake_quantize(x, step, -8, 7)
    y.sum().backward()
    assert y.dtype == x.grad.dtype == torch.float64 and step.grad.dtype == torch.float32
    assert y.device.type == step.grad.device.type == device
    x = torch.randn(4, 8)
    for args, kwargs, exc, word in [
        ((x, torch.tensor(0.0), -8, 7), {}, ValueError, "step"),
        ((x, torch.tensor([0.1, -0.1, 0.1, 0.1])[:, None], -8, 7), {}, ValueError, "step"),
        ((x, torch.full((3,), 0.1), -8, 7), {}, ValueError, "step"),
        ((x, torch.full((2, 4, 8), 0.1), -8, 7), {}, ValueError, "step"),
        ((x, 0.1, -8, 7), {}, TypeError, "step"),
        ((x, torch.tensor(0.1), 1, 7), {}, ValueError, "qmin"),
        ((x, torch.tensor(0.1), -8, 0), {}, ValueError, "qmax"),
        ((x, torch.tensor(0.1), -8.0, 7), {}, TypeError, "qmin"),
        ((x, torch.tensor(0.1), -8, 7), {"grad_scale": 0.0}, ValueError, "grad_scale"),
        ((x, torch.tensor(float("nan")), -8, 7), {}, ValueError, "step"),
        ((torch.arange(4), torch.tensor(0.1), -8, 7), {}, TypeError, "x"),
    ]:
        with pytest.raises(exc, match=word):
            qat.lsq_fake_quantize(*args, **kwargs)


# ----------------------------------------------------------------------------------------------
# PTQ and QAT on the digits (the notebook's claims, fixed seeds)


@pytest.fixture(scope="module")
def digits_model():
    torch.manual_seed(0)
    Xtr, ytr, Xte, yte = load_digits(seed=0)
    model = qat.DigitsMLP(64, seed=0)
    qat.train_classifier(model, Xtr, ytr, epochs=30, lr=1e-2, progress=False)
    return model, Xtr, ytr, Xte, yte


def test_fp32_and_8_bit_ptq(digits_model):
    model, Xtr, ytr, Xte, yte = digits_model
    fp32 = accuracy(model, Xte, yte)
    assert fp32 > 0.96
    for name in observers.OBSERVERS:
        assert accuracy(qat.quantize_model(model, 8, name, Xtr[:256]), Xte, yte) >= fp32 - 0.01


def test_ptq_2_bit_min_max_collapses_and_mse_helps(digits_model):
    model, Xtr, ytr, Xte, yte = digits_model
    fp32 = accuracy(model, Xte, yte)
    mm = accuracy(qat.quantize_model(model, 2, "min-max", Xtr[:256]), Xte, yte)
    mse = accuracy(qat.quantize_model(model, 2, "MSE", Xtr[:256]), Xte, yte)
    assert mm < fp32 - 0.2
    assert mse > mm + 0.15


@pytest.mark.parametrize("bits,observer", [(2, "min-max"), (2, "MSE"), (4, "min-max")])
def test_qat_recovers_what_ptq_lost(digits_model, bits, observer):
    model, Xtr, ytr, Xte, yte = digits_model
    fp32 = accuracy(model, Xte, yte)
    qmodel = qat.quantize_model(model, bits, observer, Xtr[:256])
    ptq = accuracy(qmodel, Xte, yte)
    qat.qat_finetune(qmodel, Xtr, ytr, epochs=10, lr=1e-3, progress=False)
    after = accuracy(qmodel, Xte, yte)
    assert after >= ptq
    # 2-bit QAT from min-max lands at 0.90-0.93 here and 0.89 with torch 2.11 on the GPU machine's CPU:
    # the margin states the claim (most of the loss recovered), not one platform's last digits.
    assert after >= fp32 - (0.12 if bits == 2 else 0.015)
    if bits == 2 and observer == "min-max":
        assert after > ptq + 0.2


def test_lsq_qat_beats_frozen_ranges_from_min_max_at_2_bits(digits_model):
    """Notebook 04's claim: from 2-bit min-max ranges, learning the steps recovers more of PTQ's loss than the
    ranges set by rule, for each of three seeds of the batch order, and clearly on average. The size of the gain
    moves with the seed and the CPU's floating-point path: seeds 0, 1, 2 gave +0.05, +0.03, +0.04 on an Intel Xeon
    (AVX-512) and +0.009, +0.044, +0.033 on an AMD EPYC (AVX2)."""
    model, Xtr, ytr, Xte, yte = digits_model
    gains = []
    for seed in (0, 1, 2):
        frozen, learned = (qat.quantize_model(model, 2, "min-max", Xtr[:256]) for _ in range(2))
        qat.qat_finetune(frozen, Xtr, ytr, epochs=10, lr=1e-3, progress=False, seed=seed)
        steps_before = [layer.act_scale.item() for layer in learned.modules() if isinstance(layer, qat.QuantLinear)]
        qat.qat_finetune(learned, Xtr, ytr, epochs=10, lr=1e-3, progress=False, learn_steps=True, seed=seed)
        layers = [m for m in learned.modules() if isinstance(m, qat.QuantLinear)]
        assert all(layer.mode == "lsq" for layer in layers)
        assert [layer.act_step.item() for layer in layers] != steps_before  # the steps did learn
        gains.append(accuracy(learned, Xte, yte) - accuracy(frozen, Xte, yte))
    assert min(gains) >= 0, gains
    assert sum(gains) / len(gains) >= 0.015, gains


def test_learn_steps_starts_from_the_calibrated_grid(digits_model):
    model, Xtr, *_ = digits_model
    qmodel = qat.quantize_model(model, 3, "MSE", Xtr[:256])
    before = qmodel(Xtr[:64])
    for layer in qmodel.modules():
        if isinstance(layer, qat.QuantLinear):
            layer.learn_steps()
            layer.learn_steps()  # a second call keeps the learned steps
    # the same grids; x / s and x * (1 / s) may round differently at a tie, so compare nearly all outputs
    assert (qmodel(Xtr[:64]) - before).abs().le(1e-4).float().mean() > 0.99
    with pytest.raises(ValueError, match="calibrated"):
        qat.QuantLinear(torch.nn.Linear(4, 2), 4).learn_steps()


def test_quantize_model_leaves_the_original_alone(digits_model):
    model, Xtr, *_ = digits_model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    qmodel = qat.quantize_model(model, 4, "percentile", Xtr[:64])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    layers = [m for m in qmodel.modules() if isinstance(m, qat.QuantLinear)]
    assert len(layers) == 3 and all(layer.mode == "quantize" for layer in layers)
    # the first layer's input is the pixels in [0, 1]: its activation grid covers them
    lo, hi = affine.representable_range(layers[0].act_scale, layers[0].act_zero_point, 0, 15)
    assert lo == 0.0 and 0.9 < hi <= 1.0 + 1e-6


class _Nested(torch.nn.Module):
    """Linear layers in a ModuleList of Sequentials and a ModuleDict, beside a LayerNorm and a dropout; the
    shared head runs twice per forward pass."""

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng():  # the same weights every time, the global generator left alone
            torch.manual_seed(0)
            self.embed = torch.nn.Linear(6, 12)
            self.blocks = torch.nn.ModuleList([
                torch.nn.Sequential(torch.nn.LayerNorm(12), torch.nn.Linear(12, 12)),
                torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(12, 12, bias=False))])
            self.heads = torch.nn.ModuleDict({"shared": torch.nn.Linear(12, 12), "out": torch.nn.Linear(12, 3)})

    def forward(self, x):
        x = self.embed(x)
        for block in self.blocks:
            x = x + block(x)
        return self.heads["out"](self.heads["shared"](torch.relu(self.heads["shared"](x))))


@pytest.mark.parametrize("observer", ["min-max", "moving average", "MSE"])
def test_quantize_model_calibrates_every_linear_as_hooks_on_the_float_model_see_it(observer):
    """Notebook 04's exercise grades against quantize_model on nested models: every nn.Linear at any depth is swapped
    (other modules stay), and each layer's grid is what an observer at its input records while the calibration rows run
    through the float model in eval mode (no dropout), in batches of 64, both calls of a layer that runs twice
    included; computed here independently, with forward pre-hooks on the float model."""
    model = _Nested().train()
    X = torch.randn(150, 6, generator=torch.Generator().manual_seed(1))
    qmodel = qat.quantize_model(model, 4, observer, X)
    assert {n: type(m).__name__ for n, m in qmodel.named_modules()} == {
        n: "QuantLinear" if isinstance(m, torch.nn.Linear) else type(m).__name__ for n, m in model.named_modules()}
    assert model.training and isinstance(model.heads["shared"], torch.nn.Linear)  # the model passed in is left alone
    assert not qmodel.training
    float_model = _Nested().eval()
    seen = {}
    for name, module in float_model.named_modules():
        if isinstance(module, torch.nn.Linear):
            seen[name] = observers.make_observer(observer, bits=4)
            module.register_forward_pre_hook(lambda mod, args, obs=seen[name]: obs.observe(args[0]))
    with torch.no_grad():
        for start in range(0, len(X), 64):
            float_model(X[start:start + 64])
    for name, obs in seen.items():
        layer = qmodel.get_submodule(name)
        scale, zero_point = obs.qparams()
        assert layer.mode == "quantize"
        assert torch.equal(layer.act_scale, scale) and torch.equal(layer.act_zero_point, zero_point), name
    assert qmodel.get_submodule("heads.shared").act_observer.num_observed == 2 * 3  # 3 batches, two calls each


def test_quantize_model_without_calibration_data_leaves_float_layers():
    model = _Nested()
    qmodel = qat.quantize_model(model, 8)
    layers = [m for m in qmodel.modules() if isinstance(m, qat.QuantLinear)]
    assert len(layers) == 5 and all(layer.mode == "float" for layer in layers)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(2))
    assert torch.equal(qmodel(x), model.eval()(x))


def test_quant_linear_equals_fake_quantized_matmul():
    lin = torch.nn.Linear(8, 3)
    layer = qat.QuantLinear(lin, 4, "min-max")
    x = torch.rand(5, 8)
    layer.mode = "calibrate"
    layer(x)
    layer.freeze_activation_range()
    layer.mode = "quantize"
    s_a, z_a = layer.act_observer.qparams()
    s_w, z_w = affine.compute_scale_zero_point(lin.weight.min(), lin.weight.max(), -8, 7, symmetric=True)
    expected = (affine.fake_quantize(x, s_a, z_a, 0, 15) @ affine.fake_quantize(lin.weight, s_w, z_w, -8, 7).T
                + lin.bias)
    assert torch.allclose(layer(x), expected, atol=1e-6)


def test_qat_and_quant_bad_input(digits_model):
    model, Xtr, ytr, *_ = digits_model
    with pytest.raises(ValueError, match="bits"):
        qat.quantize_model(model, 1)
    with pytest.raises(ValueError, match="observer"):
        qat.quantize_model(model, 4, "max")
    with pytest.raises(ValueError, match="calibrated"):
        qat.qat_finetune(qat.quantize_model(model, 4), Xtr, ytr, epochs=1, progress=False)
    with pytest.raises(TypeError, match="learn_steps"):
        qat.qat_finetune(qat.quantize_model(model, 4, X_calib=Xtr[:64]), Xtr, ytr, epochs=1, progress=False,
                         learn_steps="yes")
    with pytest.raises(ValueError, match="QuantLinear"):
        qat.calibrate(model, Xtr)
    with pytest.raises(ValueError, match="same number of rows"):
        qat.train_classifier(qat.DigitsMLP(), Xtr, ytr[:10], progress=False)
    with pytest.raises(TypeError, match="dtype"):
        qat.train_classifier(qat.DigitsMLP(), Xtr, ytr.float(), progress=False)


def test_quantized_model_runs_on_device(device):
    torch.manual_seed(0)
    model = qat.DigitsMLP(16).to(device)
    X = torch.rand(32, 64, device=device)
    qmodel = qat.quantize_model(model, 4, "MSE", X)
    assert qmodel(X).device.type == device
    y = torch.randint(0, 10, (32,), device=device)
    losses = qat.qat_finetune(qmodel, X, y, epochs=2, progress=False)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))


# ----------------------------------------------------------------------------------------------
# plots and widget


def test_plots_return_figures():
    x = data.heavy_tailed_activation(5000)
    obs = observers.make_observer("MSE", bits=4)
    obs(x)
    ranges = {"MSE": obs.range(), "min-max": (x.min(), x.max())}
    for fig in [plots.plot_observer_ranges(x, ranges), plots.plot_clipping_curve(x, (4, 2), num=20, marks={4: ranges}),
                plots.plot_ste(0.25, 0, -4, 3, -2.0, 2.0, h_large=0.5),
                plots.plot_lsq_step_gradient(0.5, 0, 3, -0.5, 2.5, n=201),
                plots.plot_accuracy({"PTQ": {8: 0.9, 4: 0.8}, "QAT": {4: 0.95}}, 0.97),
                plots.plot_losses({"a": [1.0, 0.5]})]:
        assert isinstance(fig, plt.Figure)
        plt.close(fig)


def test_widget_updates_without_a_browser():
    box = widgets.observer_explorer(n=4000)
    first = box.last
    assert set(first) == set(observers.OBSERVERS)
    box.bits.value = 2  # observe() triggers update
    second = box.last
    assert second["MSE"]["hi"] < first["MSE"]["hi"]
    assert second["min-max"] == first["min-max"] or second["min-max"]["mse"] > first["min-max"]["mse"]
    box.df.value = 30
    assert box.last["min-max"]["hi"] < second["min-max"]["hi"]
    assert "MSE" in box.readout.value
    plt.close("all")
