"""course_lib.gptq: closed forms, a transcription of the original algorithm, blocked == unblocked,
output error below RTN's on held-out inputs, the whole course LM, bad input."""

from __future__ import annotations

import importlib.util

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from course_lib import gptq  # noqa: E402
from course_lib.granularity import fake_quantize_weight, weight_scale_zero_point  # noqa: E402
from course_lib.plots import gptq as plots  # noqa: E402
from course_lib.widgets import gptq as widgets  # noqa: E402

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def correlated_layer(out_features=48, in_features=96, tokens=1024, seed=0, dtype=torch.float32, device="cpu"):
    """A weight and calibration inputs with correlated, unevenly scaled features."""
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(out_features, in_features, generator=gen, dtype=torch.float64)
    mix = torch.randn(in_features, in_features, generator=gen, dtype=torch.float64) / in_features**0.5
    scale = torch.exp(torch.randn(in_features, generator=gen, dtype=torch.float64))
    X = (torch.randn(tokens, in_features, generator=gen, dtype=torch.float64) @ mix
         + 0.3 * torch.randn(tokens, in_features, generator=gen, dtype=torch.float64)) * scale
    return W.to(device, dtype), X.to(device, dtype)


def original_sym_params(x, bits):
    """The symmetric grid of IST-DASLab/gptq ``quant.py`` (``Quantizer.find_params``, ``sym=True``), per row,
    re-derived in closed form: ``amax = max(|min(x, 0)|, max(x, 0))``, ``xmin = -amax`` where the row has a
    negative entry (else 0), ``[-1, 1]`` for an all-zero row; ``scale = (amax - xmin) / maxq``,
    ``zero = (maxq + 1) / 2``. Float32, ``[rows, 1]``."""
    x = x.float()
    maxq = 2**bits - 1
    amax = x.abs().amax(dim=1, keepdim=True)
    xmin = torch.where(x.amin(dim=1, keepdim=True) < 0, -amax, torch.zeros_like(amax))
    dead = amax == 0
    xmax, xmin = torch.where(dead, 1.0, amax), torch.where(dead, -1.0, xmin)
    scale = (xmax - xmin) / maxq
    return scale, torch.full_like(scale, (maxq + 1) / 2)


def original_fasterquant(W, H, bits, groupsize=-1, blocksize=128, percdamp=0.01, actorder=False, sym=False,
                         find_params=None, return_codes=False):
    """A line-by-line transcription of IST-DASLab/gptq ``GPTQ.fasterquant`` (static_groups off),
    with the course's min-max quantizer (asymmetric) or :func:`original_sym_params` (``sym=True``)
    in place of the repository's ``Quantizer``; ``find_params(x) -> (scale, zero)`` overrides both.

    Kept deliberately close to the original, including its fitting of a group that starts inside
    a block on ``W`` as it was at the block start. ``return_codes``: ``(Q, codes, scales)``, the
    integer codes in the input order and the scales ``[out, n_groups]`` in the order they were fitted.
    """
    W = W.clone().float()
    H = H.clone().float()
    columns = W.shape[1]
    qmax = 2**bits - 1
    if find_params is None:
        def find_params(x):
            if sym:
                return original_sym_params(x, bits)
            s, z = weight_scale_zero_point(x, bits)
            return s, z.float()
    scales = []

    scale, zero = find_params(W)
    if groupsize == -1:
        scales.append(scale)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    if actorder:
        perm = torch.argsort(torch.diag(H), descending=True, stable=True)
        W = W[:, perm]
        H = H[perm][:, perm]
        invperm = torch.argsort(perm)
    Q = torch.zeros_like(W)
    codes = torch.zeros_like(W)
    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(columns)
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    Hinv = torch.linalg.cholesky(H, upper=True)
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if groupsize != -1 and (i1 + i) % groupsize == 0:
                scale, zero = find_params(W[:, (i1 + i):(i1 + i + groupsize)])
                scales.append(scale)
            q = torch.clamp(torch.round(w.unsqueeze(1) / scale) + zero, 0, qmax)
            codes[:, i1 + i] = q.flatten()
            q = (scale * (q - zero)).flatten()
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        Q[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    if actorder:
        Q, codes = Q[:, invperm], codes[:, invperm]
    return (Q, codes, torch.cat(scales, dim=1)) if return_codes else Q


# ----------------------------------------------------------------------------------------------
# the Hessian


def test_accumulate_hessian_over_batches_is_two_over_n_xtx(device):
    _, X = correlated_layer(tokens=300, dtype=torch.float64, device=device)
    H, n = torch.zeros(96, 96, dtype=torch.float64, device=device), 0
    for chunk in (X[:7], X[7:100].reshape(3, 31, 96), X[100:101], X[101:].reshape(1, 199, 96)):
        H, n = gptq.accumulate_hessian(H, n, chunk)
    assert n == 300
    torch.testing.assert_close(H, 2 / 300 * X.T @ X, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gptq.hessian_from_inputs(X), H, rtol=1e-12, atol=1e-12)


def test_accumulate_hessian_does_not_modify_its_input_and_computes_in_float32():
    H0 = torch.zeros(4, 4)
    x = torch.ones(2, 3, 4, dtype=torch.float16)
    H, n = gptq.accumulate_hessian(H0, 0, x)
    assert torch.equal(H0, torch.zeros(4, 4)) and H.dtype == torch.float32 and n == 6
    torch.testing.assert_close(H, torch.full((4, 4), 2.0))  # (2/6) * 6 * 1 * 1


@given(st.lists(st.integers(1, 40), min_size=1, max_size=6), st.integers(0, 1000))
@SETTINGS
def test_accumulate_hessian_any_batch_split(sizes, seed):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(sum(sizes), 8, generator=gen, dtype=torch.float64)
    H, n, start = torch.zeros(8, 8, dtype=torch.float64), 0, 0
    for m in sizes:
        H, n = gptq.accumulate_hessian(H, n, X[start:start + m])
        start += m
    torch.testing.assert_close(H, 2 / n * X.T @ X, rtol=1e-10, atol=1e-12)


def test_hessian_inverse_cholesky_is_gptqs_hinv(device):
    _, X = correlated_layer(dtype=torch.float64, device=device)
    H = gptq.hessian_from_inputs(X)
    U = gptq.hessian_inverse_cholesky(H, 0.01)
    Hd = H + 0.01 * torch.diagonal(H).mean() * torch.eye(96, dtype=torch.float64, device=device)
    assert torch.equal(U, torch.triu(U)) and bool((torch.diagonal(U) > 0).all())
    torch.testing.assert_close(U.T @ U, torch.linalg.inv(Hd), rtol=1e-8, atol=1e-10)
    # GPTQ's identity: row i of U / U_ii is the first row of inv(Hd[i:, i:]) / its first entry
    for i in (0, 5, 50, 95):
        sub_inv = torch.linalg.inv(Hd[i:, i:])
        torch.testing.assert_close(U[i, i:] / U[i, i], sub_inv[0] / sub_inv[0, 0], rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(U[i, i] ** 2, sub_inv[0, 0], rtol=1e-8, atol=0)


def test_dead_inputs_get_unit_diagonal_and_zero_weights():
    W, X = correlated_layer(dtype=torch.float64)
    X[:, [3, 17]] = 0
    H = gptq.hessian_from_inputs(X)
    assert torch.linalg.cholesky_ex(H).info > 0  # a zero row: not positive definite without the fix
    U0 = gptq.hessian_inverse_cholesky(H, percdamp=0.0)  # the fix alone makes it positive definite
    assert torch.isfinite(U0).all() and U0[3, 3] == 1 and U0[3].count_nonzero() == 1
    res = gptq.gptq_quantize_weight(W, H, 4)
    assert torch.equal(res.weight[:, [3, 17]], torch.zeros(W.shape[0], 2, dtype=torch.float64))


# ----------------------------------------------------------------------------------------------
# one layer: closed forms and references


@pytest.mark.parametrize("group_size", [None, 32])
def test_diagonal_hessian_gives_rtn_exactly(device, group_size):
    """With uncorrelated inputs (diagonal H) there is nothing to compensate: GPTQ is RTN."""
    W, _ = correlated_layer(device=device)
    H = torch.diag(torch.rand(96, generator=torch.Generator().manual_seed(1)) + 0.5).to(device)
    for bits in (3, 4, 8):
        res = gptq.gptq_quantize_weight(W, H, bits, group_size)
        assert torch.equal(res.weight, fake_quantize_weight(W, bits, group_size))


@pytest.mark.parametrize("blocksize", [1, 5, 32, 96, 128])
@pytest.mark.parametrize("group_size,act_order,symmetric", [(None, False, False), (None, True, False),
                                                            (16, False, False), (32, True, False),
                                                            (48, True, True), (96, False, True)])
def test_blocked_equals_unblocked_float64(device, blocksize, group_size, act_order, symmetric):
    W, X = correlated_layer(dtype=torch.float64, device=device)
    H = gptq.hessian_from_inputs(X)
    for bits in (3, 4):
        ref = gptq.gptq_quantize_weight_unblocked(W, H, bits, group_size, act_order=act_order, symmetric=symmetric)
        res = gptq.gptq_quantize_weight(W, H, bits, group_size, blocksize, act_order=act_order, symmetric=symmetric)
        torch.testing.assert_close(res.weight, ref.weight, rtol=0, atol=1e-12)
        assert torch.equal(res.zero, ref.zero) and torch.equal(res.g_idx, ref.g_idx)


@pytest.mark.parametrize("group_size,act_order", [(None, False), (None, True), (32, False), (32, True)])
def test_blocked_equals_unblocked_float32(device, group_size, act_order):
    W, X = correlated_layer(device=device)
    H = gptq.hessian_from_inputs(X)
    ref = gptq.gptq_quantize_weight_unblocked(W, H, 4, group_size, act_order=act_order)
    for blocksize in (7, 128):
        res = gptq.gptq_quantize_weight(W, H, 4, group_size, blocksize, act_order=act_order)
        # float32 sums in another order: the same codes, scales equal to a few ulps
        torch.testing.assert_close(res.weight, ref.weight, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(res.scale, ref.scale, rtol=1e-5, atol=0)


@pytest.mark.parametrize("group_size,act_order", [(None, False), (None, True), (128, False), (128, True),
                                                  (256, True)])
def test_equals_the_original_algorithm_when_groups_start_at_blocks(group_size, act_order):
    W, X = correlated_layer(64, 256, 2048, seed=3)
    H = gptq.hessian_from_inputs(X)
    ours = gptq.gptq_quantize_weight(W, H, 3, group_size, 128, act_order=act_order).weight
    theirs = original_fasterquant(W, H, 3, group_size or -1, 128, actorder=act_order)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_symmetric_grid_is_the_originals_closed_form(bits):
    """gptq_scale_zero_point(symmetric=True) == quant.py's sym grid, bit for bit: 2**bits levels, zero 2**(bits-1)."""
    gen = torch.Generator().manual_seed(bits)
    w = torch.randn(64, 40, generator=gen) * torch.exp(torch.randn(64, 1, generator=gen))
    w[3] = 0  # all-zero row: the original's [-1, 1]
    scale, zero = gptq.gptq_scale_zero_point(w, bits, symmetric=True)
    ref_scale, ref_zero = original_sym_params(w, bits)
    assert scale.dtype == torch.float32 and zero.dtype == torch.int32 and scale.shape == zero.shape == (64, 1)
    assert torch.equal(scale, ref_scale) and torch.equal(zero.float(), ref_zero)
    assert torch.equal(scale[:, 0], 2 * w.abs().amax(1).where(w.abs().amax(1) > 0, 1.0) / (2**bits - 1))
    # not the restricted grid of notebooks 02-03: its step is (2**bits - 1) / (2**bits - 2) times larger
    restricted, _ = weight_scale_zero_point(w, bits, symmetric=True)
    keep = torch.arange(64) != 3
    torch.testing.assert_close(restricted[keep] / scale[keep], torch.full((63, 1), (2**bits - 1) / (2**bits - 2)))
    # the asymmetric grid is the course's min-max grid
    for a, b in zip(gptq.gptq_scale_zero_point(w, bits), weight_scale_zero_point(w, bits)):
        assert torch.equal(a, b)


def test_symmetric_row_without_a_negative_weight_is_not_clipped():
    """The documented difference: the original keeps xmin = 0 for such a row and clips at (2**(b-1) - 1) / maxq."""
    w = torch.tensor([[0.0, 0.5, 1.0, 2.0, 3.5, 7.0]])
    scale, zero = gptq.gptq_scale_zero_point(w, 3, symmetric=True)
    assert scale.item() == 2.0 and zero.item() == 4  # [-7, 7] like any row with max |w| = 7
    top = (torch.clamp(torch.round(w / scale) + zero, 0, 7) - zero) * scale
    assert top.max().item() == 6.0  # half a step below 7, as for every row
    o_scale, o_zero = original_sym_params(w, 3)
    assert o_scale.item() == 1.0 and o_zero.item() == 4  # the original: step 1, codes up to 3 above zero
    assert ((torch.clamp(torch.round(w / o_scale) + o_zero, 0, 7) - o_zero) * o_scale).max().item() == 3.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_symmetric_gptq_has_the_originals_codes_and_lower_error_than_the_restricted_grid(seed):
    """symmetric=True on random layers: codes and scales of the original (transcribed), per channel and g128,
    with and without act-order; and its output error is below that of GPTQ on the restricted grid at 3 bits."""
    W, X = correlated_layer(64, 256, 2048, seed=seed)
    H = gptq.hessian_from_inputs(X)
    for group_size, act_order in ((None, False), (128, False), (128, True)):
        res = gptq.gptq_quantize_weight(W, H, 3, group_size, 128, act_order=act_order, symmetric=True)
        Q, codes, scales = original_fasterquant(W, H, 3, group_size or -1, 128, actorder=act_order, sym=True,
                                                return_codes=True)
        gi = res.g_idx.long()
        ours = torch.round(res.weight / res.scale[:, gi]) + res.zero[:, gi]
        assert torch.equal(ours, codes) and torch.equal(res.scale, scales) and torch.equal(res.weight, Q)
        assert torch.equal(res.zero, torch.full_like(res.zero, 4))

        def restricted(x):
            s, z = weight_scale_zero_point(x, 3, symmetric=True)
            return s, z.float()

        Q_restricted = original_fasterquant(W, H, 3, group_size or -1, 128, actorder=act_order,
                                            find_params=restricted)
        e_ours, e_restricted = (gptq.layer_output_error(W, Qx, X) for Qx in (res.weight, Q_restricted))
        assert e_ours < 0.9 * e_restricted, (group_size, act_order, e_ours, e_restricted)


def test_original_fits_groups_inside_a_block_on_stale_weights():
    """group 32 < block 128: the original's result depends on the block size; ours does not."""
    W, X = correlated_layer(64, 256, 2048, seed=3)
    H = gptq.hessian_from_inputs(X)
    orig_128 = original_fasterquant(W, H, 3, 32, 128)
    orig_32 = original_fasterquant(W, H, 3, 32, 32)  # groups start at blocks: up to date
    ours_128 = gptq.gptq_quantize_weight(W, H, 3, 32, 128).weight
    assert not torch.allclose(orig_128, orig_32, atol=1e-4)
    torch.testing.assert_close(ours_128, orig_32, rtol=1e-5, atol=1e-5)


def test_weights_lie_on_the_stored_grid_and_g_idx_follows_act_order():
    W, X = correlated_layer(seed=4)
    H = gptq.hessian_from_inputs(X)
    res = gptq.gptq_quantize_weight(W, H, 3, 16, 40, act_order=True)
    assert res.scale.shape == (48, 6) and res.zero.dtype == torch.int32 and res.g_idx.dtype == torch.int32
    assert torch.bincount(res.g_idx.long()).tolist() == [16] * 6
    perm = torch.argsort(torch.diagonal(H), descending=True, stable=True)
    assert torch.equal(res.g_idx[perm].long(), torch.arange(96) // 16)  # groups follow the permuted order
    gi = res.g_idx.long()
    codes = torch.round(res.weight / res.scale[:, gi]) + res.zero[:, gi]
    assert codes.min() >= 0 and codes.max() <= 7
    torch.testing.assert_close(gptq.dequantize_gptq(codes.to(torch.int32), res.scale, res.zero, res.g_idx),
                               res.weight, rtol=0, atol=1e-6)


@given(st.integers(2, 8), st.sampled_from([None, 4, 8, 24]), st.integers(1, 30), st.booleans(),
       st.integers(0, 10_000))
@SETTINGS
def test_properties_float64(bits, group_size, blocksize, act_order, seed):
    W, X = correlated_layer(12, 24, 200, seed=seed, dtype=torch.float64)
    H = gptq.hessian_from_inputs(X)
    res = gptq.gptq_quantize_weight(W, H, bits, group_size, blocksize, act_order=act_order)
    ref = gptq.gptq_quantize_weight_unblocked(W, H, bits, group_size, act_order=act_order)
    torch.testing.assert_close(res.weight, ref.weight, rtol=0, atol=1e-12)
    gi = res.g_idx.long()
    codes = res.weight / res.scale[:, gi].double() + res.zero[:, gi]
    assert torch.allclose(codes, codes.round(), atol=1e-6) and codes.min() > -1e-6 and codes.max() < 2**bits - 1 + 1e-6
    assert res.weight.dtype == torch.float64 and res.weight.shape == W.shape


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_compute_in_float32(dtype):
    W, X = correlated_layer()
    H = gptq.hessian_from_inputs(X)
    res = gptq.gptq_quantize_weight(W.to(dtype), H, 4)
    assert res.weight.dtype == dtype
    ref = gptq.gptq_quantize_weight(W.to(dtype).float(), H, 4).weight.to(dtype)
    assert torch.equal(res.weight, ref)


# ----------------------------------------------------------------------------------------------
# the point of it: output error on held-out inputs, a real layer of the course LM


@pytest.fixture(scope="module")
def lm():
    from course_lib.models import load_causal_lm
    return load_causal_lm()


def _layer_inputs(model, layer, ids):
    xs = []
    handle = layer.register_forward_pre_hook(lambda _m, args: xs.append(args[0].detach()))
    with torch.no_grad():
        model(ids)
    handle.remove()
    return torch.cat([x.reshape(-1, x.shape[-1]) for x in xs])


@pytest.mark.parametrize("name", ["model.layers.1.self_attn.q_proj", "model.layers.2.mlp.down_proj"])
def test_output_error_below_rtn_on_held_out_inputs(lm, name):
    from course_lib.lm_quant import calibration_ids, linear_layers
    model, tok = lm
    layer = linear_layers(model)[name]
    X_cal = _layer_inputs(model, layer, calibration_ids(tok, 32, 128, seed=0))
    X_test = _layer_inputs(model, layer, calibration_ids(tok, 16, 128, seed=123))
    H = gptq.hessian_from_inputs(X_cal)
    W = layer.weight.detach()
    for bits in (4, 3):
        for group_size in (None, 128):
            e_rtn = gptq.layer_output_error(W, fake_quantize_weight(W, bits, group_size), X_test)
            e_gptq = gptq.layer_output_error(W, gptq.gptq_quantize_weight(W, H, bits, group_size).weight, X_test)
            assert e_gptq < 0.9 * e_rtn, (name, bits, group_size, e_gptq, e_rtn)


def test_layer_output_error_closed_form():
    W = torch.eye(2)
    Q = torch.tensor([[1.0, 0.0], [0.0, 0.5]])
    x = torch.tensor([[1.0, 1.0], [2.0, 0.0]])
    # outputs x W^T = [[1,1],[2,0]], x Q^T = [[1,.5],[2,0]]: error 0.25 / 6
    assert gptq.layer_output_error(W, Q, x) == pytest.approx(0.25 / 6)


# ----------------------------------------------------------------------------------------------
# the whole model


def test_sequential_groups_of_a_llama_block(lm):
    from course_lib.lm_quant import calibration_ids, capture_block_inputs, decoder_blocks
    model, tok = lm
    inputs = capture_block_inputs(model, calibration_ids(tok, 2, 16))
    assert gptq.sequential_groups(decoder_blocks(model)[0], inputs) == [
        ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ["self_attn.o_proj"],
        ["mlp.gate_proj", "mlp.up_proj"], ["mlp.down_proj"]]


def test_quantize_model_gptq_beats_rtn_and_leaves_the_head():
    from course_lib.data import corpus_text
    from course_lib.evaluate import perplexity
    from course_lib.lm_quant import calibration_ids, linear_layers, quantize_model_rtn
    from course_lib.models import load_causal_lm

    text = corpus_text("eval")
    m_gptq, tok = load_causal_lm()
    m_rtn, _ = load_causal_lm()
    embed = m_gptq.get_input_embeddings().weight.detach().clone()
    ids = calibration_ids(tok, 16, 128)
    out = gptq.quantize_model_gptq(m_gptq, tok, 3, 128, calib_ids=ids, progress=False)
    assert out is m_gptq
    quantize_model_rtn(m_rtn, 3, 128)
    assert torch.equal(m_gptq.get_input_embeddings().weight, embed)
    for name, lin in linear_layers(m_gptq).items():  # every weight on a 3-bit grid of its groups
        W = lin.weight.detach()
        assert not torch.equal(W, dict(linear_layers(m_rtn))[name].weight), name
        g = W.reshape(W.shape[0], -1, 128)
        assert all(len(torch.unique(row)) <= 8 for row in g.reshape(-1, 128)[:20]), name
    p_gptq, p_rtn = (perplexity(m, tok, text, max_tokens=4000) for m in (m_gptq, m_rtn))
    assert p_gptq < p_rtn, (p_gptq, p_rtn)


def test_quantize_model_gptq_nan_in_calibration_is_a_clear_error():
    from course_lib.lm_quant import calibration_ids
    from course_lib.models import load_causal_lm

    model, tok = load_causal_lm()
    ids = calibration_ids(tok, 4, 32)
    with torch.no_grad():
        model.get_input_embeddings().weight[ids[0, 3]] = float("nan")
    with pytest.raises(ValueError, match="calibration inputs of layers.0"):
        gptq.quantize_model_gptq(model, tok, 4, calib_ids=ids, progress=False)


@pytest.mark.parametrize("kwargs,mentions", [
    ({"bits": 1}, "bits"), ({"bits": 9}, "bits"), ({"group_size": 100}, "group_size"),
    ({"percdamp": -0.1}, "percdamp"), ({"blocksize": 0}, "blocksize"),
    ({"calib_ids": torch.zeros(2, 8)}, "calib_ids")])
def test_quantize_model_gptq_bad_input(lm, kwargs, mentions):
    model, tok = lm
    args = {"bits": 4, **kwargs}
    bits = args.pop("bits")
    with pytest.raises((ValueError, TypeError), match=mentions):
        gptq.quantize_model_gptq(model, tok, bits, progress=False, **args)


# ----------------------------------------------------------------------------------------------
# bad input, one layer

_W = torch.randn(8, 16)
_H = gptq.hessian_from_inputs(torch.randn(64, 16))
_RANK_DEFICIENT = gptq.hessian_from_inputs(torch.randn(4, 16))  # 4 tokens, 16 inputs: singular
_INDEFINITE = torch.diag(torch.tensor([1.0] * 15 + [-30.0]))


@pytest.mark.parametrize("fn,args,kwargs,error,mentions", [
    (gptq.gptq_quantize_weight, (_W, _H, 1), {}, ValueError, "bits"),
    (gptq.gptq_quantize_weight, (_W, _H, 9), {}, ValueError, "bits"),
    (gptq.gptq_quantize_weight, (_W, _H, 4.0), {}, TypeError, "bits"),
    (gptq.gptq_quantize_weight, (_W, _H, 4, 5), {}, ValueError, "group_size"),
    (gptq.gptq_quantize_weight, (_W, _H, 4, 0), {}, ValueError, "group_size"),
    (gptq.gptq_quantize_weight, (_W, _H, 4), {"blocksize": 0}, ValueError, "blocksize"),
    (gptq.gptq_quantize_weight, (_W, _H, 4), {"percdamp": -1.0}, ValueError, "percdamp"),
    (gptq.gptq_quantize_weight, (_W, _H, 4), {"percdamp": float("nan")}, ValueError, "percdamp"),
    (gptq.gptq_quantize_weight, (_W, _H, 4), {"act_order": 1}, TypeError, "act_order"),
    (gptq.gptq_quantize_weight, (_W.T, _H, 4), {}, ValueError, "H"),
    (gptq.gptq_quantize_weight, (_W.int(), _H, 4), {}, TypeError, "W"),
    (gptq.gptq_quantize_weight, (torch.full((8, 16), float("nan")), _H, 4), {}, ValueError, "W"),
    (gptq.gptq_quantize_weight, (_W, _H + torch.triu(torch.ones(16, 16), 1), 4), {}, ValueError, "symmetric"),
    (gptq.gptq_quantize_weight, (_W, _RANK_DEFICIENT, 4), {"percdamp": 0.0}, ValueError, "calibration data"),
    (gptq.gptq_quantize_weight, (_W, _INDEFINITE, 4), {}, ValueError, "percdamp"),
    (gptq.gptq_quantize_weight_unblocked, (_W, _H, 4, 3), {}, ValueError, "group_size"),
    (gptq.hessian_inverse_cholesky, (_INDEFINITE,), {}, ValueError, "not positive definite"),
    (gptq.hessian_inverse_cholesky, (_H, "0.01"), {}, TypeError, "percdamp"),
    (gptq.hessian_inverse_cholesky, (torch.ones(3, 4),), {}, ValueError, "square"),
    (gptq.accumulate_hessian, (torch.zeros(16, 16), 0, torch.full((2, 16), float("nan"))), {}, ValueError, "x"),
    (gptq.accumulate_hessian, (torch.zeros(16, 16), 0, torch.ones(2, 15)), {}, ValueError, "in_features"),
    (gptq.accumulate_hessian, (torch.zeros(16, 16), -1, torch.ones(2, 16)), {}, ValueError, "n_seen"),
    (gptq.accumulate_hessian, (torch.zeros(16, 16), 0, torch.ones(0, 16)), {}, ValueError, "empty"),
])
def test_bad_input(fn, args, kwargs, error, mentions):
    with pytest.raises(error, match=mentions):
        fn(*args, **kwargs)


def test_rank_deficient_hessian_is_fine_with_dampening():
    res = gptq.gptq_quantize_weight(_W, _RANK_DEFICIENT, 4)
    assert torch.isfinite(res.weight).all()


# ----------------------------------------------------------------------------------------------
# gptqmodel (optional: it pins a newer torch, so the course cannot require it)


@pytest.mark.skipif(importlib.util.find_spec("gptqmodel") is None,
                    reason="gptqmodel is not installed (optional; gptqmodel 7.7 requires torch>=2.14.1, which would replace the course's torch)")
def test_same_layer_result_as_gptqmodel():
    W, X = correlated_layer(64, 256, 2048, seed=5)
    H = gptq.hessian_from_inputs(X)
    for group_size, act_order in ((128, False), (None, False), (128, True), (None, True)):
        theirs = gptq.gptqmodel_quantize_weight(W, X, 4, group_size, act_order=act_order)
        ours = gptq.gptq_quantize_weight(W, H, 4, group_size, act_order=act_order).weight
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    # groups of 32 start inside blocks of 128: gptqmodel keeps the original's fit on the block-start weights
    theirs = gptq.gptqmodel_quantize_weight(W, X, 4, 32)
    torch.testing.assert_close(theirs, original_fasterquant(W, H, 4, 32, 128), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# plots and widget


def test_plots_return_figures():
    _, X = correlated_layer()
    H = gptq.hessian_from_inputs(X)
    for fig in (plots.plot_hessian(H), plots.plot_layer_errors(["a", "b"], {"RTN": [1e-2, 2e-2], "GPTQ": [5e-3, 1e-2]}),
                plots.plot_column_errors({"RTN": torch.rand(10), "GPTQ": torch.rand(10)})):
        assert isinstance(fig, plt.Figure)
        plt.close(fig)


def test_widget_updates_without_a_browser():
    box = widgets.gptq_explorer(bits=3)
    first = dict(box.last)
    assert first["GPTQ"] < first["RTN"]
    box.correlation.value = 0.0  # independent inputs: nothing for GPTQ to exploit
    second = box.last
    assert second != first and second["RTN"] / second["GPTQ"] < first["RTN"] / first["GPTQ"]
    box.bits.value = 8
    assert box.last["RTN"] < second["RTN"] and "RTN" in box.readout.value
    plt.close("all")


# ----------------------------------------------------------------------------------------------
# the paper's setting (notebook 07's HUB_MODEL switch), run on local copies of the hub's files
# ----------------------------------------------------------------------------------------------
def _write_jsonl_gz(path, texts):
    import gzip
    import json

    with gzip.open(path, "wt", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t, "url": "-"}) + "\n")


def test_paper_table_runs_the_papers_recipe_on_a_local_opt_model(tmp_path):
    """An OPT-architecture model saved to a folder stands in for facebook/opt-125m, JSON-lines copies for C4 and
    WikiText-2: the fp32 row is the perplexity of the joined test text in disjoint seq_len windows, and the GPTQ
    row is quantize_model_gptq with the paper's options on windows of the calibration text."""
    from transformers import AutoTokenizer, OPTConfig, OPTForCausalLM

    from course_lib.data import corpus_text, hub_text
    from course_lib.evaluate import perplexity
    from course_lib.lm_quant import calibration_ids
    from course_lib.models import COURSE_LM_DIR, load_causal_lm

    tok = AutoTokenizer.from_pretrained(COURSE_LM_DIR, local_files_only=True)
    torch.manual_seed(0)
    config = OPTConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=2,
                       max_position_embeddings=64, word_embed_proj_dim=32)
    model_dir = tmp_path / "opt-tiny"
    OPTForCausalLM(config).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    docs = [p for p in corpus_text("calib").split("\n\n") if p.strip()][:200]
    test_docs = [p for p in corpus_text("eval").split("\n\n") if p.strip()][:20]
    _write_jsonl_gz(tmp_path / "c4.json.gz", docs)
    (tmp_path / "wiki.jsonl").write_text("".join(__import__("json").dumps({"text": t}) + "\n" for t in test_docs))

    assert hub_text("c4-train", path=tmp_path / "c4.json.gz", max_documents=50) == "\n\n".join(docs[:50])
    rows = gptq.paper_table(str(model_dir), [(4, None)], n_samples=8, seq_len=32, c4_documents=50,
                            calib_path=tmp_path / "c4.json.gz", eval_path=tmp_path / "wiki.jsonl", progress=False)
    assert [(r["method"], r["bits"]) for r in rows] == [("fp32", None), ("RTN", 4), ("GPTQ", 4)]
    model, tokenizer = load_causal_lm(str(model_dir))
    joined = "\n\n".join(test_docs)
    assert rows[0]["perplexity"] == pytest.approx(perplexity(model, tokenizer, joined, max_length=32), rel=1e-6)
    calib = calibration_ids(tokenizer, 8, 32, seed=0, text="\n\n".join(docs[:50]))
    gptq.quantize_model_gptq(model, tokenizer, 4, calib_ids=calib, true_sequential=False, progress=False)
    assert rows[2]["perplexity"] == pytest.approx(perplexity(model, tokenizer, joined, max_length=32), rel=1e-6)
    assert rows[2]["perplexity"] != rows[1]["perplexity"]


def test_hub_text_offline_says_how_to_get_the_file(tmp_path):
    from course_lib.data import hub_text

    with pytest.raises(OSError, match="allow_download=True"):
        hub_text("wikitext2-test", allow_download=False)
    with pytest.raises(ValueError, match="name must be one of"):
        hub_text("wikitext103")
    with pytest.raises(ValueError, match="max_documents"):
        hub_text("c4-train", max_documents=0, path=tmp_path / "x.jsonl")
    with pytest.raises(FileNotFoundError, match="no such file"):
        hub_text("c4-train", path=tmp_path / "missing.jsonl")
