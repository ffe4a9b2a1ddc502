"""course_lib.bitnet: closed-form values, the BitNet reference formulas, transformers' BitNet layers, properties."""

from __future__ import annotations

import copy

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from course_lib import bitnet  # noqa: E402
from course_lib.plots import bitnet as plots  # noqa: E402
from course_lib.widgets import bitnet as widgets  # noqa: E402

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _randn(*shape, seed=0, scale=1.0, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype)


def _ternary(rows, cols, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-1, 2, (rows, cols), generator=g).to(device=device, dtype=torch.int8)


# ----------------------------------------------------------------------------------------------
# the BitNet reference code (microsoft/BitNet training-tips note), written independently


def _ref_weight_quant(w):
    scale = 1.0 / w.abs().mean().clamp_(min=1e-5)
    return (w * scale).round().clamp_(-1, 1) / scale


def _ref_activation_quant(x):
    scale = 127.0 / x.abs().max(dim=-1, keepdim=True).values.clamp_(min=1e-5)
    return (x * scale).round().clamp_(-128, 127) / scale


# ----------------------------------------------------------------------------------------------
# quantizers


def test_absmean_closed_form(device):
    w = torch.tensor([[1.0, -1.0, 0.2, -0.2], [0.6, -0.29, 0.31, 0.0]], device=device)
    codes, gamma = bitnet.absmean_ternary(w)
    assert gamma.dtype == torch.float32 and gamma.dim() == 0
    assert gamma.item() == pytest.approx(w.abs().mean().item())
    # |w| / gamma: 1/0.45 -> 1, 0.2/0.45 = 0.44 -> 0, 0.6/0.45 -> 1, 0.29/0.45 = 0.64 -> 1 (rounds to 1), 0.31 -> 1
    assert codes.tolist() == [[1, -1, 0, 0], [1, -1, 1, 0]]
    assert codes.dtype == torch.int8 and codes.device.type == device


def test_absmean_zero_and_constant(device):
    codes, gamma = bitnet.absmean_ternary(torch.zeros(3, 4, device=device))
    assert gamma.item() == pytest.approx(1e-5) and not codes.any()
    codes, gamma = bitnet.absmean_ternary(torch.full((2, 2), -3.0, device=device))
    assert gamma.item() == 3.0 and (codes == -1).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_absmean_matches_reference_code(device, dtype):
    w = _randn(64, 48, seed=1, scale=0.02, device=device, dtype=dtype)
    codes, gamma = bitnet.absmean_ternary(w)
    ref = _ref_weight_quant(w.float())
    torch.testing.assert_close(codes.float() * gamma, ref, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(bitnet.fake_quant_weight(w), ref.to(dtype), rtol=1e-6, atol=1e-9)


def test_gaussian_zero_share():
    """For a Gaussian, the zero band |w| < mean|w| / 2 = 0.399 sigma holds erf(0.282) = 31.0% of the weights."""
    codes, _ = bitnet.absmean_ternary(_randn(1_000_000, seed=2))
    assert (codes == 0).float().mean().item() == pytest.approx(0.3101, abs=0.003)


def test_absmax_closed_form(device):
    x = torch.tensor([[2.0, -1.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]], device=device)
    codes, delta = bitnet.absmax_int8(x)
    assert codes.tolist() == [[127, -64, 32, 0], [0, 0, 0, 0]]  # 63.5 and 31.75 round to 64 and 32
    assert codes.dtype == torch.int8 and delta.shape == (2, 1) and delta.dtype == torch.float32
    assert delta[0, 0].item() == pytest.approx(2 / 127)
    assert delta[1, 0].item() == pytest.approx(1e-5 / 127)


@pytest.mark.parametrize("shape", [(5, 16), (2, 3, 8), (33,)])
def test_absmax_matches_reference_code(device, shape):
    x = _randn(*shape, seed=3, scale=3.0, device=device)
    x.view(-1)[0] = 500.0  # an outlier in the first token only
    codes, delta = bitnet.absmax_int8(x)
    ref = _ref_activation_quant(x)
    torch.testing.assert_close(codes.float() * delta, ref, rtol=1e-6, atol=1e-7)
    # the codes are exactly the reference's round(x * 127 / amax)
    amax = x.abs().amax(-1, keepdim=True).clamp(min=1e-5)
    assert torch.equal(codes, (x * (127.0 / amax)).round().clamp(-128, 127).to(torch.int8))


def test_per_token_scales_are_independent():
    x = _randn(3, 32, seed=4)
    loud = x.clone()
    loud[0] *= 1000
    assert torch.equal(bitnet.absmax_int8(x)[0][1:], bitnet.absmax_int8(loud)[0][1:])


@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False, width=32), min_size=1, max_size=64))
@SETTINGS
def test_quantizer_properties(values):
    w = torch.tensor(values)
    codes, gamma = bitnet.absmean_ternary(w)
    assert set(codes.unique().tolist()) <= {-1, 0, 1} and gamma.item() > 0
    # a weight becomes 0 exactly when |w| / gamma rounds to 0
    assert torch.equal(codes == 0, (w * (1.0 / gamma)).round() == 0)
    xc, delta = bitnet.absmax_int8(w)
    assert int(xc.abs().max()) == (127 if w.abs().max() > 1e-5 else int(xc.abs().max()))
    assert ((xc.float() * delta - w).abs() <= delta / 2 * (1 + 1e-5) + 1e-12).all()


# ----------------------------------------------------------------------------------------------
# BitLinear and the STE


def test_bitlinear_forward_equals_formula(device):
    x, w, g = _randn(4, 7, 32, seed=5, device=device), _randn(16, 32, seed=6, scale=0.1, device=device), \
        1 + _randn(32, seed=7, scale=0.1, device=device)
    rms = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * g
    expected = _ref_activation_quant(rms) @ _ref_weight_quant(w).T
    torch.testing.assert_close(bitnet.bitlinear_forward(x, w, g), expected, rtol=1e-5, atol=1e-5)
    layer = bitnet.BitLinear(32, 16).to(device)
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.norm_weight.copy_(g)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_rms_norm_matches_llama(device):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    x = _randn(3, 5, 24, seed=8, device=device)
    norm = LlamaRMSNorm(24, eps=1e-6).to(device)
    with torch.no_grad():
        norm.weight.copy_(_randn(24, seed=9, device=device))
    assert torch.equal(bitnet.rms_norm(x, norm.weight, 1e-6), norm(x))


def test_ste_gradients_are_the_identity(device):
    x = _randn(6, 32, seed=10, device=device).requires_grad_(True)
    w = _randn(8, 32, seed=11, device=device).requires_grad_(True)
    g = (1 + _randn(32, seed=12, device=device, scale=0.1)).requires_grad_(True)
    up = _randn(6, 8, seed=13, device=device)
    (bitnet.bitlinear_forward(x, w, g) * up).sum().backward()
    # the same computation with both quantized values as constants in the place of the identity
    x2, g2 = x.detach().clone().requires_grad_(True), g.detach().clone().requires_grad_(True)
    w_q = _ref_weight_quant(w.detach())
    x_n = bitnet.rms_norm(x2, g2)
    x_q_const = _ref_activation_quant(x_n.detach())
    (F.linear(x_n + (x_q_const - x_n.detach()), w_q) * up).sum().backward()
    torch.testing.assert_close(w.grad, up.T @ x_q_const, rtol=1e-5, atol=1e-5)  # dL/dW as if quant(W) = W
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-5)            # through RMSNorm, quantizer = identity
    torch.testing.assert_close(g.grad, g2.grad, rtol=1e-5, atol=1e-5)


def test_without_ste_round_blocks_the_gradient():
    w = _randn(4, 8, seed=14).requires_grad_(True)
    codes_path = (w * 3).round()
    codes_path.sum().backward()
    assert not w.grad.any()


def test_ste_forward_is_exactly_the_quantized_value_in_bfloat16():
    w = _randn(256, 256, seed=30, scale=0.02, dtype=torch.bfloat16).requires_grad_(True)
    x = _randn(64, 256, seed=31, dtype=torch.bfloat16)
    w_q = bitnet.fake_quant_weight(w.detach())
    # the old form, x + (q - x).detach(), rounds twice: in bfloat16 it misses q for about 2% of the weights
    old = w.detach() + (w_q - w.detach())
    assert 0.01 < (old != w_q).float().mean().item() < 0.03
    out = bitnet.ste(w, w_q)
    assert out.dtype == torch.bfloat16 and torch.equal(out, w_q)
    out.float().sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # the identity's gradient
    # the whole training forward equals the product of the two fake-quantized tensors, bit for bit
    x_q = bitnet.fake_quant_activation(bitnet.rms_norm(x))
    assert torch.equal(bitnet.bitlinear_forward(x, w), F.linear(x_q, w_q))


def test_quantization_switches():
    layer = bitnet.BitLinear(8, 4, quantize_weights=False, quantize_activations=False)
    x = _randn(3, 8, seed=15)
    torch.testing.assert_close(layer(x), F.linear(bitnet.rms_norm(x, layer.norm_weight), layer.weight))
    bitnet.set_quantization(torch.nn.Sequential(layer), True, False)
    torch.testing.assert_close(layer(x), F.linear(bitnet.rms_norm(x, layer.norm_weight), _ref_weight_quant(layer.weight)))


def test_matches_transformers_autobitlinear(device):
    from transformers.integrations.bitnet import AutoBitLinear

    ours = bitnet.BitLinear(64, 32).to(device)
    x = _randn(5, 64, seed=16, device=device)
    with torch.compiler.set_stance("force_eager"), torch.no_grad():
        hf = AutoBitLinear(64, 32, bias=False, online_quant=True, use_rms_norm=True, rms_norm_eps=1e-6).to(device)
        hf.weight.copy_(ours.weight)
        torch.testing.assert_close(ours(x), hf(x), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# packing and the addition-only matmul


def test_pack_layout_closed_form(device):
    w = torch.tensor([[-1, 0, 1, 0, 1, 1, -1, 0]], dtype=torch.int8, device=device)
    packed = bitnet.pack_ternary(w)
    # codes 0,1,2,1 -> 0 + 1*4 + 2*16 + 1*64 = 100; codes 2,2,0,1 -> 2 + 8 + 0 + 64 = 74
    assert packed.tolist() == [[100, 74]] and packed.dtype == torch.uint8 and packed.shape == (1, 2)


@given(st.integers(1, 6), st.integers(1, 12), st.integers(0, 2**31 - 1))
@SETTINGS
def test_pack_unpack_round_trip(rows, groups, seed):
    w = _ternary(rows, 4 * groups, seed)
    packed = bitnet.pack_ternary(w)
    assert packed.shape == (rows, groups)
    assert torch.equal(bitnet.unpack_ternary(packed, 4 * groups), w)
    # bit by bit: element 4j + k is in bits 2k, 2k+1 of byte j
    for j in range(groups):
        for k in range(4):
            assert ((packed[:, j].int() >> (2 * k)) & 3).tolist() == (w[:, 4 * j + k].int() + 1).tolist()


def test_pack_round_trip_on_device(device):
    w = _ternary(33, 64, seed=17, device=device)
    packed = bitnet.pack_ternary(w.to(torch.int64))
    assert packed.device.type == device
    assert torch.equal(bitnet.unpack_ternary(packed, 64), w)


def test_transformers_packing_holds_the_same_codes():
    from transformers.integrations.bitnet import pack_weights, unpack_weights

    w = _ternary(16, 12, seed=18)
    theirs = pack_weights(w.clone())
    with torch.compiler.set_stance("force_eager"):
        assert torch.equal(unpack_weights(theirs, torch.int8), w)
    ours = bitnet.pack_ternary(w)
    assert ours.numel() == theirs.numel() and ours.shape == (16, 3) and theirs.shape == (4, 12)


@pytest.mark.parametrize("shape", [(5, 16, 8), (1, 64, 3), (2, 3, 40, 7)])
def test_ternary_matmul_equals_dense(device, shape):
    *lead, k, n = shape
    x = _randn(*lead, k, seed=19, device=device)
    w = _ternary(n, k, seed=20, device=device)
    scale = torch.tensor(0.037, device=device)
    got = bitnet.ternary_matmul(x, bitnet.pack_ternary(w), scale)
    expected = x.double() @ (scale.double() * w.double()).T
    assert got.shape == (*lead, n) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_ternary_matmul_int8_is_exact(device):
    g = torch.Generator().manual_seed(21)
    x = torch.randint(-128, 128, (9, 256), generator=g).to(device=device, dtype=torch.int8)
    w = _ternary(17, 256, seed=22, device=device)
    got = bitnet.ternary_matmul(x, bitnet.pack_ternary(w), 1.0)
    assert torch.equal(got.cpu(), (x.cpu().long() @ w.cpu().long().T).float())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_ternary_matmul_dtypes(dtype):
    x = _randn(4, 32, seed=23, dtype=dtype)
    w = _ternary(6, 32, seed=24)
    got = bitnet.ternary_matmul(x, bitnet.pack_ternary(w), 0.5)
    assert got.dtype == dtype
    tol = {torch.float64: 1e-12, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(got.double(), x.double() @ (0.5 * w.double()).T, rtol=tol, atol=tol)


def test_ternary_matmul_chunks_agree():
    x, w = _randn(50, 64, seed=25), _ternary(30, 64, seed=26)
    p = bitnet.pack_ternary(w)
    torch.testing.assert_close(bitnet.ternary_matmul(x, p, 1.0, max_elements=100), bitnet.ternary_matmul(x, p, 1.0))


def test_packed_bitlinear_matches_fake_quant(device):
    layer = bitnet.BitLinear(128, 24).to(device)
    x = _randn(3, 10, 128, seed=27, device=device)
    packed = bitnet.PackedBitLinear.from_bitlinear(layer)
    torch.testing.assert_close(packed(x), layer(x).detach(), rtol=1e-5, atol=1e-5)
    model = bitnet.pack_model(torch.nn.Sequential(copy.deepcopy(layer)))
    assert isinstance(model[0], bitnet.PackedBitLinear) and model[0].packed.dtype == torch.uint8


def test_transformers_packed_bitlinear_matches(device):
    from transformers.integrations.bitnet import BitLinear as HFBitLinear, pack_weights

    layer = bitnet.BitLinear(64, 32).to(device)
    x = _randn(4, 64, seed=28, device=device)
    codes, gamma = bitnet.absmean_ternary(layer.weight.detach())
    with torch.compiler.set_stance("force_eager"), torch.no_grad():
        hf = HFBitLinear(64, 32, bias=False, dtype=torch.float32, use_rms_norm=True, rms_norm_eps=1e-6).to(device)
        hf.weight.copy_(pack_weights(codes.clone()))
        hf.weight_scale.fill_(1 / gamma.item())
        torch.testing.assert_close(bitnet.PackedBitLinear.from_bitlinear(layer)(x), hf(x), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# bad input (one table)

T = torch.tensor
BAD = [
    (bitnet.absmean_ternary, (T([1, 2, 3]),), TypeError, "w"),
    (bitnet.absmean_ternary, (T([1.0, float("nan")]),), ValueError, "w"),
    (bitnet.absmean_ternary, (torch.zeros(0),), ValueError, "w"),
    (bitnet.absmean_ternary, (T([1.0]), 0.0), ValueError, "eps"),
    (bitnet.absmax_int8, (T([[1, 2]]),), TypeError, "x"),
    (bitnet.absmax_int8, (T([[float("inf"), 1.0]]),), ValueError, "x"),
    (bitnet.absmax_int8, (T(1.0),), ValueError, "x"),
    (bitnet.bitlinear_forward, (torch.ones(2, 8), torch.ones(4, 6)), ValueError, "in_features"),
    (bitnet.bitlinear_forward, (torch.ones(2, 8), torch.ones(4, 8), torch.ones(5)), ValueError, "norm_weight"),
    (bitnet.bitlinear_forward, (torch.ones(2, 8, dtype=torch.int32), torch.ones(4, 8)), TypeError, "x"),
    (bitnet.pack_ternary, (torch.zeros(2, 6, dtype=torch.int8),), ValueError, "in_features"),
    (bitnet.pack_ternary, (torch.zeros(2, 8),), TypeError, "w_ternary"),
    (bitnet.pack_ternary, (torch.full((2, 8), 2, dtype=torch.int8),), ValueError, "w_ternary"),
    (bitnet.pack_ternary, (torch.zeros(8, dtype=torch.int8),), ValueError, "w_ternary"),
    (bitnet.unpack_ternary, (torch.zeros(2, 3, dtype=torch.uint8), 8), ValueError, "packed"),
    (bitnet.unpack_ternary, (torch.zeros(2, 2, dtype=torch.uint8), 6), ValueError, "in_features"),
    (bitnet.unpack_ternary, (torch.zeros(2, 2, dtype=torch.int8), 8), TypeError, "packed"),
    (bitnet.unpack_ternary, (torch.full((2, 2), 0b11, dtype=torch.uint8), 8), ValueError, "code 3"),
    (bitnet.ternary_matmul, (torch.ones(2, 8), torch.zeros(3, 3, dtype=torch.uint8), 1.0), ValueError, "packed"),
    (bitnet.ternary_matmul, (torch.ones(2, 6), torch.zeros(3, 1, dtype=torch.uint8), 1.0), ValueError, "multiple of 4"),
    (bitnet.ternary_matmul, (T([[float("nan"), 0, 0, 0]]), torch.zeros(3, 1, dtype=torch.uint8), 1.0), ValueError, "x"),
    (bitnet.ternary_matmul, (torch.ones(2, 4, dtype=torch.uint8), torch.zeros(3, 1, dtype=torch.uint8), 1.0), TypeError, "x"),
    (bitnet.ternary_matmul, (torch.ones(2, 4), torch.zeros(3, 1, dtype=torch.int8), 1.0), TypeError, "packed"),
    (bitnet.ternary_matmul, (torch.ones(2, 4), torch.zeros(3, 1, dtype=torch.uint8), -1.0), ValueError, "scale"),
    (bitnet.ternary_matmul, (torch.ones(2, 4), torch.zeros(3, 1, dtype=torch.uint8), T([1.0, 2.0])), ValueError, "scale"),
    (bitnet.ternary_matmul, (torch.ones(2, 4), torch.zeros(3, 1, dtype=torch.uint8), "1"), TypeError, "scale"),
    (bitnet.ternary_matmul, (torch.ones(2, 4), torch.full((3, 1), 0xFF, dtype=torch.uint8), 1.0), ValueError, "code 3"),
    (bitnet.BitLinear, (0, 4), ValueError, "in_features"),
    (bitnet.set_quantization, (torch.nn.Linear(2, 2), True, True), ValueError, "BitLinear"),
    (bitnet.tq2_0_quantize, (torch.zeros(2, 320),), ValueError, "block size 256"),
    (bitnet.tq2_0_quantize, (torch.zeros(128),), ValueError, "block size 256"),
    (bitnet.tq2_0_quantize, (torch.zeros(256, dtype=torch.int8),), TypeError, "x"),
    (bitnet.tq2_0_quantize, (T([float("nan")] * 256),), ValueError, "x"),
    (bitnet.tq2_0_dequantize, (torch.zeros(2, 70, dtype=torch.uint8),), ValueError, "66 bytes"),
    (bitnet.tq2_0_dequantize, (torch.zeros(66),), TypeError, "blocks"),
    (bitnet.to_bitlinear, (torch.nn.Linear(2, 2),), TypeError, "model"),
]


@pytest.mark.parametrize("fn, args, exc, mentions", BAD, ids=[f"{b[0].__name__}-{i}" for i, b in enumerate(BAD)])
def test_bad_input(fn, args, exc, mentions):
    with pytest.raises(exc, match=mentions):
        fn(*args)


# ----------------------------------------------------------------------------------------------
# models, training, plots, widget


def test_twins_share_shape_and_initial_weights():
    a, b = bitnet.make_digits_mlp(True, seed=3), bitnet.make_digits_mlp(False, seed=3)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb and torch.equal(pa, pb)
    lm = bitnet.make_tiny_lm(True, vocab_size=64, hidden=16, layers=1, heads=2, intermediate=32)
    names = [n for n, _ in bitnet.bitlinear_layers(lm)]
    assert len(names) == 7 and all(n.startswith("model.layers.0.") for n in names)  # q k v o gate up down


def test_bitnet_learns_digits():
    from course_lib.data import load_digits
    from course_lib.evaluate import accuracy

    X, y, Xt, yt = load_digits()
    model = bitnet.make_digits_mlp(True, hidden=64)
    losses = bitnet.train_classifier(model, X, y, steps=120, lr=5e-3, progress=False)
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    assert accuracy(model, Xt, yt) > 0.85
    packed = bitnet.pack_model(copy.deepcopy(model))
    assert accuracy(packed, Xt, yt) == pytest.approx(accuracy(model, Xt, yt), abs=0.005)


def test_tiny_lm_trains():
    ids = torch.arange(2000) % 50  # a periodic sequence: easy to predict
    model = bitnet.make_tiny_lm(True, vocab_size=64, hidden=32, layers=1, heads=2, intermediate=64)
    losses = bitnet.train_lm(model, ids, steps=30, seq_len=16, batch_size=4, lr=1e-2, progress=False)
    assert losses[-1] < losses[0] - 1.0


def test_bits_per_weight():
    b = bitnet.bits_per_weight()
    assert b["log2(3)"] == pytest.approx(1.58496, abs=1e-5) and b["base-3, 5 per byte"] == 1.6
    assert b["2-bit, 4 per byte"] == 2.0


def test_plots_return_figures():
    w = _randn(64, 64, seed=29)
    figs = [plots.plot_ternary_histogram(w, {"absmean": w.abs().mean().item(), "absmax": w.abs().max().item()}),
            plots.plot_loss_curves({"a": {"x": [3.0, 2.0, 1.0] * 10, "y": [2.0] * 30}}),
            plots.plot_packing_layout([-1, 0, 1, 0, 1, 1, -1, 0]),
            plots.plot_bits_per_weight({"fp16": 16, **bitnet.bits_per_weight()})]
    assert all(isinstance(f, plt.Figure) for f in figs)
    plt.close("all")


def test_widget_updates_without_a_browser():
    box = widgets.ternary_explorer()
    first = box.update()
    assert first["gamma"] > 0 and 0.25 < first["zeros"] < 0.37
    box.multiplier.value = 3.0  # the observer redraws
    assert box.last["zeros"] > 0.7 and box.last["rel_mse"] > first["rel_mse"]
    box.distribution.value = widgets.DISTRIBUTIONS[2]
    assert box.last["best_multiplier"] > 0
    assert "zeros" in box.readout.value
    plt.close("all")


# ----------------------------------------------------------------------------------------------
# llama.cpp's TQ2_0 and TQ1_0: gguf.quants (llama.cpp's own Python package) as the reference, bit for bit


def _gguf_quants():
    gguf = pytest.importorskip("gguf")
    return gguf, gguf.quants, gguf.GGMLQuantizationType


def test_ternary_layouts_match_gguf_block_sizes():
    gguf, _, QT = _gguf_quants()
    for name, layout in bitnet.TERNARY_GGUF_LAYOUTS.items():
        assert (layout.block_size, layout.block_bytes) == gguf.GGML_QUANT_SIZES[QT[name]], name
    assert bitnet.TERNARY_GGUF_LAYOUTS["TQ2_0"].bits_per_weight == 2.0625   # 66 bytes / 256
    assert bitnet.TERNARY_GGUF_LAYOUTS["TQ1_0"].bits_per_weight == 1.6875   # 54 bytes / 256


def _tq_blocks(seed=0):
    """[3, 1024]: ordinary weights, a BitNet weight (gamma * codes), an all-zero block, ties at x/d = +-0.5,
    a constant block, one outlier, and tiny values."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 1024, generator=g) * 0.05
    x[1, :256] = 0.0375 * torch.randint(-1, 2, (256,), generator=g)
    x[1, 256:512] = 0
    x[1, 512:768:2], x[1, 513:768:2] = 0.5, -1.0          # x / d = -0.5 and 0.5 ties (round away from zero)
    x[2, :256] = -0.2
    x[2, 300] = 40.0
    x[2, 512:768] *= 1e-6
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_tq2_0_bytes_and_values_match_gguf(dtype):
    _, quants, QT = _gguf_quants()
    x = _tq_blocks().to(dtype)
    ours = bitnet.tq2_0_quantize(x)
    theirs = quants.quantize(x.float().numpy(), QT.TQ2_0)
    assert ours.dtype == torch.uint8 and tuple(ours.shape) == (3, 4 * 66)
    assert np.array_equal(ours.numpy(), theirs)
    back = bitnet.tq2_0_dequantize(ours)
    assert back.dtype == torch.float32 and back.shape == x.shape
    assert np.array_equal(back.numpy(), quants.dequantize(theirs, QT.TQ2_0))


def test_tq2_0_random_bytes_decode_like_gguf():
    """Any bytes (finite fp16 scales, code 3 included) decode to gguf's values."""
    _, quants, QT = _gguf_quants()
    raw = torch.randint(0, 256, (5, 2 * 66), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    raw[:, 65] &= 0x3F  # the fp16 scales' high bytes: finite values
    raw[:, 131] &= 0x3F
    assert np.array_equal(bitnet.tq2_0_dequantize(raw).numpy(), quants.dequantize(raw.numpy(), QT.TQ2_0))


def test_tq2_0_keeps_bitnet_codes_and_leading_dimensions():
    """A weight that is already gamma * {-1, 0, 1} keeps its codes; only gamma is rounded to fp16."""
    codes, gamma = bitnet.absmean_ternary(_randn(2, 3, 512, seed=40, scale=0.02))
    q = bitnet.tq2_0_quantize(codes.float() * gamma)
    assert tuple(q.shape) == (2, 3, 2 * 66)
    assert torch.equal(bitnet.tq2_0_dequantize(q), codes.float() * gamma.to(torch.float16).float())
    zero = bitnet.tq2_0_quantize(torch.zeros(256))
    assert torch.equal(zero[:64], torch.full((64,), 0b01010101, dtype=torch.uint8))   # every code 1: weight 0
    assert torch.equal(zero[64:], torch.zeros(2, dtype=torch.uint8))                  # d = 0
    assert torch.equal(bitnet.tq2_0_dequantize(zero), torch.zeros(256))


def test_tq2_0_layout_puts_weights_32_apart_in_a_byte():
    x = torch.zeros(256)
    x[0], x[32], x[64], x[96], x[128] = 1.0, -1.0, 1.0, 0.0, -1.0   # byte 0: codes 2, 0, 2, 1; byte 32: code 0 first
    q = bitnet.tq2_0_quantize(x)
    assert int(q[0]) == 2 | 0 << 2 | 2 << 4 | 1 << 6 and int(q[32]) == 0 | 1 << 2 | 1 << 4 | 1 << 6
    assert float(q[64:].view(torch.float16)) == 1.0


# ----------------------------------------------------------------------------------------------
# ternary fine-tuning of a trained LM


def _tiny_llama(seed=0):
    from course_lib.distill import make_student_lm

    return make_student_lm(vocab_size=64, hidden=32, layers=2, heads=2, intermediate=48, max_positions=32, seed=seed)


def test_to_bitlinear_converts_every_block_linear_and_keeps_the_weights():
    model = _tiny_llama()
    originals = {n: m.weight.detach().clone() for n, m in model.model.layers.named_modules()
                 if isinstance(m, torch.nn.Linear)}
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(5))
    converted = bitnet.to_bitlinear(model, quantize_weights=False, quantize_activations=False)
    assert converted is model and isinstance(model.lm_head, torch.nn.Linear)
    layers = dict(bitnet.bitlinear_layers(model.model.layers))
    assert set(layers) == set(originals) and len(layers) == 14            # 7 per block
    for name, layer in layers.items():
        assert torch.equal(layer.weight, originals[name]) and not layer.quantize_weights
    # quantizers off: the original block with an RMSNorm (gain 1) in front of every projection
    block = model.model.layers[0]
    x = _randn(2, 12, 32, seed=6)
    ref = F.linear(bitnet.rms_norm(x, None, bitnet.RMS_EPS), originals["0.self_attn.q_proj"])
    torch.testing.assert_close(block.self_attn.q_proj(x), ref)
    assert model(input_ids=ids).logits.shape == (2, 12, 64)
    biased = torch.nn.Sequential()
    biased.model = torch.nn.Module()
    biased.model.layers = torch.nn.ModuleList([torch.nn.Sequential(torch.nn.Linear(4, 4))])
    with pytest.raises(ValueError, match="bias"):
        bitnet.to_bitlinear(biased)


def test_ternary_finetune_distills_without_touching_the_teacher():
    teacher = _tiny_llama()
    before = copy.deepcopy(teacher.state_dict())
    windows = torch.randint(0, 64, (40, 16), generator=torch.Generator().manual_seed(7))
    student, losses = bitnet.ternary_finetune(teacher, windows, steps=4, batch_size=2, lr=3e-3, seed=1, progress=False)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    layers = bitnet.bitlinear_layers(student)
    assert len(layers) == 14 and all(m.quantize_weights and m.quantize_activations for _, m in layers)
    assert len(losses) == 4 and not student.training
    # the first step's loss is T**2 KL(teacher || untrained ternary student) on the first batch of the seeded order,
    # computed here with torch's kl_div
    first = windows[:8][torch.randperm(8, generator=torch.Generator().manual_seed(1))[:2]]
    fresh = bitnet.to_bitlinear(copy.deepcopy(teacher))
    with torch.no_grad():
        s_logp = F.log_softmax(fresh(input_ids=first).logits[:, :-1].reshape(-1, 64), -1)
        t_logp = F.log_softmax(teacher(input_ids=first).logits[:, :-1].reshape(-1, 64), -1)
    expected = F.kl_div(s_logp, t_logp, log_target=True, reduction="batchmean")
    assert losses[0] == pytest.approx(expected.item(), rel=1e-5)
    # distilling on one repeated batch drives the KL down
    same = windows[:2].repeat(20, 1)
    _, fit = bitnet.ternary_finetune(teacher, same, steps=20, batch_size=2, lr=3e-3, progress=False)
    assert fit[-1] < 0.5 * fit[0]
    # cross-entropy only: no teacher in the loss (one step on windows[:2]: the ternary student's next-token CE)
    _, ce = bitnet.ternary_finetune(teacher, windows, steps=1, batch_size=2, use_teacher=False, progress=False)
    with torch.no_grad():
        expected_ce = F.cross_entropy(fresh(input_ids=windows[:2]).logits[:, :-1].reshape(-1, 64),
                                      windows[:2, 1:].reshape(-1))
    assert ce[0] == pytest.approx(expected_ce.item(), rel=1e-5)
    with pytest.raises(ValueError, match="steps \\* batch_size"):
        bitnet.ternary_finetune(teacher, windows, steps=30, batch_size=2, progress=False)
    with pytest.raises(ValueError, match="alpha"):
        bitnet.ternary_finetune(teacher, windows, steps=1, alpha=2.0, progress=False)


def test_tq2_0_on_device(device):
    x = _tq_blocks().to(device)
    q = bitnet.tq2_0_quantize(x)
    assert q.device == x.device and torch.equal(q.cpu(), bitnet.tq2_0_quantize(x.cpu()))
    assert torch.equal(bitnet.tq2_0_dequantize(q).cpu(), bitnet.tq2_0_dequantize(q.cpu()))
