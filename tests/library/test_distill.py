"""course_lib.distill: closed forms against torch's kl_div / cross_entropy, the T^2 gradient scaling, properties."""

from __future__ import annotations

import copy
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from course_lib import distill  # noqa: E402
from course_lib.plots import distill as plots  # noqa: E402
from course_lib.widgets import distill as widgets  # noqa: E402

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _randn(*shape, seed=0, scale=1.0, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(device=device, dtype=dtype)


def _labels(*shape, classes, seed=0, device="cpu"):
    return torch.randint(0, classes, shape, generator=torch.Generator().manual_seed(seed)).to(device)


# ----------------------------------------------------------------------------------------------
# closed forms and independent references


@pytest.mark.parametrize("shape", [(8, 10), (3, 5, 17), (1, 2)])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0, 20.0])
def test_soft_target_loss_matches_kl_div_batchmean(device, shape, temperature):
    s, t = _randn(*shape, seed=1, scale=3, device=device), _randn(*shape, seed=2, scale=3, device=device)
    got = distill.soft_target_loss(s, t, temperature)
    c = shape[-1]
    ref = F.kl_div(F.log_softmax(s.reshape(-1, c) / temperature, -1), F.log_softmax(t.reshape(-1, c) / temperature, -1),
                   reduction="batchmean", log_target=True) * temperature**2
    assert got.shape == () and got.dtype == torch.float32 and got.device.type == device
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_soft_target_loss_by_hand_two_classes():
    # teacher p = (0.5, 0.5), student q = softmax(0, log 3) = (1/4, 3/4); KL = 0.5 ln 2 + 0.5 ln(2/3); T = 1
    s, t = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64)
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert distill.soft_target_loss(s, t, 1.0).item() == pytest.approx(expected, rel=1e-12)
    # at T = 2 the logits halve: q = softmax(0, ln 3 / 2) = (1, sqrt 3) / (1 + sqrt 3); times T^2 = 4
    q0 = 1 / (1 + math.sqrt(3))
    expected2 = 4 * (0.5 * math.log(0.5 / q0) + 0.5 * math.log(0.5 / (1 - q0)))
    assert distill.soft_target_loss(s, t, 2.0).item() == pytest.approx(expected2, rel=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_distillation_loss_closed_form(device, alpha):
    s, t = _randn(6, 7, 11, seed=3, device=device), _randn(6, 7, 11, seed=4, device=device)
    y = _labels(6, 7, classes=11, seed=5, device=device)
    got = distill.distillation_loss(s, t, y, 3.0, alpha)
    soft = F.kl_div(F.log_softmax(s.reshape(-1, 11) / 3, -1), F.softmax(t.reshape(-1, 11) / 3, -1),
                    reduction="batchmean") * 9
    hard = F.cross_entropy(s.reshape(-1, 11), y.reshape(-1))
    torch.testing.assert_close(got, alpha * soft + (1 - alpha) * hard, rtol=1e-5, atol=1e-6)


def test_zero_loss_when_student_equals_teacher(device):
    z = _randn(16, 4096, seed=6, scale=5, device=device)
    for temperature in (0.3, 1.0, 8.0):
        assert distill.soft_target_loss(z, z.clone(), temperature).item() == 0.0
    h = _randn(4, 9, 32, seed=7, device=device)
    assert distill.feature_distillation_loss(h, h.clone()).item() == 0.0
    # alpha = 1 with equal logits: the label term is gone too
    y = _labels(16, classes=4096, seed=8, device=device)
    assert distill.distillation_loss(z, z.clone(), y, 2.0, 1.0).item() == 0.0


def test_feature_loss_with_projection_matches_mse(device):
    torch.manual_seed(0)
    proj = torch.nn.Linear(16, 64).to(device)
    s, t = _randn(5, 3, 16, seed=9, device=device), _randn(5, 3, 64, seed=10, device=device)
    got = distill.feature_distillation_loss(s, t, proj)
    torch.testing.assert_close(got, F.mse_loss(proj(s), t), rtol=1e-6, atol=1e-7)
    got.backward()
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0


def test_teacher_gets_no_gradient():
    s = _randn(4, 10, seed=11).requires_grad_(True)
    t = _randn(4, 10, seed=12).requires_grad_(True)
    distill.distillation_loss(s, t, _labels(4, classes=10), 2.0, 0.5).backward()
    assert s.grad is not None and t.grad is None


def test_low_precision_logits_are_upcast(device):
    s, t = _randn(8, 10, seed=13, dtype=torch.bfloat16, device=device), _randn(8, 10, seed=14, device=device)
    got = distill.soft_target_loss(s, t, 2.0)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, distill.soft_target_loss(s.float(), t, 2.0))
    assert distill.soft_target_loss(s.double(), t.double(), 2.0).dtype == torch.float64


# ----------------------------------------------------------------------------------------------
# the T^2 factor: gradient magnitude roughly constant in T


def test_t_squared_keeps_gradient_magnitude(device):
    s, t = _randn(64, 10, seed=15, scale=2, device=device), _randn(64, 10, seed=16, scale=2, device=device)
    temps = [2.0, 4.0, 8.0, 16.0, 32.0]
    scaled = [distill.soft_target_grad_norm(s, t, T) for T in temps]
    plain = [distill.soft_target_grad_norm(s, t, T, times_t_squared=False) for T in temps]
    assert max(scaled) / min(scaled) < 1.5           # roughly constant over a 16x range of T
    assert plain[0] / plain[-1] > 100                # without T^2: falls like 1/T^2 (256x here)
    assert plain[-2] / plain[-1] == pytest.approx(4.0, rel=0.02)
    # the high-T limit: grad = (centered z_s - centered z_t) / (C * N), independent of T
    diff = (s - s.mean(-1, keepdim=True)) - (t - t.mean(-1, keepdim=True))
    limit = float((diff / (10 * 64)).double().norm())
    assert scaled[-1] == pytest.approx(limit, rel=0.01)


def test_gradient_is_p_student_minus_p_teacher_over_t():
    s, t = _randn(3, 6, seed=17, dtype=torch.float64).requires_grad_(True), _randn(3, 6, seed=18, dtype=torch.float64)
    T = 3.0
    distill.soft_target_loss(s, t, T).backward()
    expected = T * (torch.softmax(s.detach() / T, -1) - torch.softmax(t / T, -1)) / 3  # T^2 * (q - p) / T / N
    torch.testing.assert_close(s.grad, expected)


# ----------------------------------------------------------------------------------------------
# properties


@SETTINGS
@given(n=st.integers(1, 6), c=st.integers(2, 12), temperature=st.floats(0.1, 50.0), seed=st.integers(0, 1000),
       scale=st.floats(0.0, 30.0))
def test_soft_target_loss_nonnegative_and_matches_kl_div(n, c, temperature, seed, scale):
    s, t = _randn(n, c, seed=seed, scale=scale, dtype=torch.float64), _randn(n, c, seed=seed + 1, scale=scale,
                                                                         dtype=torch.float64)
    got = distill.soft_target_loss(s, t, temperature)
    ref = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), reduction="batchmean",
                   log_target=True) * temperature**2
    assert got.item() >= -1e-12
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)


@SETTINGS
@given(shift_s=st.floats(-100, 100), shift_t=st.floats(-100, 100), seed=st.integers(0, 1000))
def test_soft_target_loss_shift_invariant(shift_s, shift_t, seed):
    s, t = _randn(4, 8, seed=seed, dtype=torch.float64), _randn(4, 8, seed=seed + 7, dtype=torch.float64)
    a = distill.soft_target_loss(s, t, 2.5)
    b = distill.soft_target_loss(s + shift_s, t + shift_t, 2.5)
    torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10)


# ----------------------------------------------------------------------------------------------
# bad input

Z = torch.zeros(4, 10)
Y = torch.zeros(4, dtype=torch.long)
NAN = torch.full((4, 10), float("nan"))
BAD = [
    (distill.soft_target_loss, (Z, Z, 0.0), ValueError, "temperature"),
    (distill.soft_target_loss, (Z, Z, -2.0), ValueError, "temperature"),
    (distill.soft_target_loss, (Z, Z, float("inf")), ValueError, "temperature"),
    (distill.soft_target_loss, (Z, Z, "4"), TypeError, "temperature"),
    (distill.soft_target_loss, (Z, torch.zeros(4, 12), 2.0), ValueError, "classes"),
    (distill.soft_target_loss, (Z, torch.zeros(5, 10), 2.0), ValueError, "teacher_logits"),
    (distill.soft_target_loss, (NAN, Z, 2.0), ValueError, "student_logits"),
    (distill.soft_target_loss, (Z, NAN, 2.0), ValueError, "teacher_logits"),
    (distill.soft_target_loss, (torch.zeros(10), torch.zeros(10), 2.0), ValueError, "student_logits"),
    (distill.soft_target_loss, (torch.zeros(0, 10), torch.zeros(0, 10), 2.0), ValueError, "student_logits"),
    (distill.soft_target_loss, (Z.long(), Z, 2.0), TypeError, "student_logits"),
    (distill.soft_target_loss, ([[0.0]], Z, 2.0), TypeError, "student_logits"),
    (distill.distillation_loss, (Z, Z, Y, 2.0, 1.5), ValueError, "alpha"),
    (distill.distillation_loss, (Z, Z, Y, 2.0, -0.1), ValueError, "alpha"),
    (distill.distillation_loss, (Z, Z, Y, 2.0, float("nan")), ValueError, "alpha"),
    (distill.distillation_loss, (Z, Z, Y, 0.0, 0.5), ValueError, "temperature"),
    (distill.distillation_loss, (Z, Z, torch.zeros(5, dtype=torch.long), 2.0, 0.5), ValueError, "labels"),
    (distill.distillation_loss, (Z, Z, torch.full((4,), 10), 2.0, 0.5), ValueError, "labels"),
    (distill.distillation_loss, (Z, Z, Y.float(), 2.0, 0.5), TypeError, "labels"),
    (distill.distillation_loss, (Z, torch.zeros(4, 11), Y, 2.0, 0.5), ValueError, "classes"),
    (distill.feature_distillation_loss, (torch.zeros(4, 8), torch.zeros(4, 16)), ValueError, "projection"),
    (distill.feature_distillation_loss, (torch.zeros(4, 8), torch.zeros(5, 8)), ValueError, "teacher_hidden"),
    (distill.feature_distillation_loss, (torch.zeros(4, 8), torch.zeros(4, 16), torch.nn.Linear(8, 12)),
     ValueError, "projection"),
    (distill.feature_distillation_loss, (torch.zeros(4, 8), torch.zeros(4, 16), "linear"), TypeError, "projection"),
    (distill.feature_distillation_loss, (torch.full((4, 8), float("nan")), torch.zeros(4, 8)), ValueError,
     "student_hidden"),
    (distill.make_mlp, ([0],), ValueError, "widths"),
    (distill.set_weight_bits, (torch.nn.Sequential(), 1), ValueError, "bits"),
    (distill.make_student_lm, (), {"hidden": 100, "heads": 3}, ValueError, "heads"),
]


@pytest.mark.parametrize("case", BAD, ids=[f"{b[0].__name__}-{i}" for i, b in enumerate(BAD)])
def test_bad_input(case):
    if len(case) == 5:
        fn, args, kwargs, exc, mentions = case
    else:
        (fn, args, exc, mentions), kwargs = case, {}
    with pytest.raises(exc, match=mentions):
        fn(*args, **kwargs)


def test_train_lm_rejects_other_vocabulary():
    small = distill.make_student_lm(vocab_size=64, hidden=16, layers=1, heads=2, intermediate=32)
    other = distill.make_student_lm(vocab_size=80, hidden=16, layers=1, heads=2, intermediate=32)
    with pytest.raises(ValueError, match="vocabulary"):
        distill.train_lm(small, torch.zeros(8, 6, dtype=torch.long), teacher=other, progress=False)


# ----------------------------------------------------------------------------------------------
# quantized students, training, plots, widget


def test_quant_linear_forward_is_rtn_and_backward_is_straight_through(device):
    from course_lib.granularity import fake_quantize_weight

    layer = distill.QuantLinear(12, 5, bits=3).to(device)
    x = _randn(7, 12, seed=19, device=device)
    expected = F.linear(x, fake_quantize_weight(layer.weight.detach(), 3, symmetric=True), layer.bias)
    out = layer(x)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    torch.testing.assert_close(layer.weight.grad, torch.ones(7, 5, device=device).T @ x)  # identity STE
    layer.bits = None
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
    with pytest.raises(ValueError, match="bits"):
        layer.bits = 9


def test_distillation_teaches_digits_with_few_labels():
    from course_lib.data import load_digits
    from course_lib.evaluate import accuracy

    torch.set_num_threads(1)
    X, y, Xt, yt = load_digits(0)
    teacher = distill.make_mlp([64], seed=0)
    distill.train_classifier(teacher, X, y, steps=300, progress=False)
    assert accuracy(teacher, Xt, yt) > 0.95
    rows = distill.student_vs_distilled(teacher, X, y, Xt, yt, widths=[16], seeds=[0, 1], n_train=150,
                                        steps=300, progress=False)
    assert all(r["distilled"] > r["alone"] for r in rows)
    # alpha = 1 needs no labels; a 2-bit student recovers from the float model alone
    q = distill.set_weight_bits(copy.deepcopy(teacher), 2)
    before = accuracy(q, Xt, yt)
    distill.train_classifier(q, X[:128], None, teacher=teacher, alpha=1.0, steps=150, lr=3e-3, progress=False)
    assert accuracy(q, Xt, yt) > before + 0.05


def test_student_lm_shares_vocabulary_and_learns():
    torch.manual_seed(0)
    teacher = distill.make_student_lm(vocab_size=50, hidden=32, layers=1, heads=2, intermediate=48, seed=1)
    student = distill.make_student_lm(vocab_size=50, hidden=16, layers=1, heads=2, intermediate=32, seed=2)
    windows = torch.randint(0, 50, (32, 12), generator=torch.Generator().manual_seed(0))
    losses = distill.train_lm(student, windows, teacher=teacher, batch_size=4, progress=False)
    assert len(losses) == 8 and all(math.isfinite(v) for v in losses) and not student.training


def test_mean_std():
    assert distill.mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert distill.mean_std([5]) == (5.0, 0.0)


def test_plots_return_figures():
    figs = [
        plots.plot_soft_targets(_randn(10, seed=20, scale=4), image=torch.rand(64)),
        plots.plot_gradient_vs_temperature([1, 2, 4], [1.0, 1.1, 1.2], [1.0, 0.3, 0.07]),
        plots.plot_seed_pairs({"a": [{"alone": 0.9, "distilled": 0.95}, {"alone": 0.92, "distilled": 0.91}]}),
        plots.plot_accuracy_dots({"ptq": [0.6, 0.7], "qat": [0.95, 0.96]}),
        plots.plot_loss_curves({"x": [3.0, 2.0, 1.5]}),
    ]
    assert all(isinstance(f, plt.Figure) for f in figs)
    plt.close("all")


def test_widget_updates_without_a_browser():
    logits = _randn(5, 10, seed=21, scale=6)
    box = widgets.temperature_explorer(logits, images=torch.rand(5, 64), labels=torch.arange(5))
    first = box.update()
    assert 0 <= first["entropy_bits"] <= math.log2(10)
    box.temperature.value = 20.0  # the observer redraws: a hotter softmax has more entropy
    assert box.last["entropy_bits"] > first["entropy_bits"] and box.last["top_prob"] < first["top_prob"]
    box.example.value = 3
    assert box.last["top"] == int(logits[3].argmax())
    assert "entropy" in box.readout.value
    plt.close("all")
