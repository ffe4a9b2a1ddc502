"""course_lib.prune: masks identical to torch.nn.utils.prune, exact counts, N:M properties, Wanda vs magnitude,
structured pruning keeps the kept channels' outputs, whole-LM pruning, fine-tuning keeps zeros, the cubic schedule
(exact rational arithmetic and properties), prune-then-distill keeps its masks, bad input."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.utils.prune as tprune  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch import nn  # noqa: E402

from course_lib import gptq, prune  # noqa: E402
from course_lib.granularity import fake_quantize_weight  # noqa: E402
from course_lib.plots import prune as plots  # noqa: E402
from course_lib.widgets import prune as widgets  # noqa: E402

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def randn(*shape, seed=0, dtype=torch.float32, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(device, dtype)


# ----------------------------------------------------------------------------------------------
# magnitude: the same masks as torch.nn.utils.prune
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.25, 0.5, 0.73, 0.9, 0.999])
@pytest.mark.parametrize("shape", [(16, 32), (7, 13), (1, 5), (3, 4, 5)])
def test_magnitude_mask_equals_l1_unstructured(device, sparsity, shape):
    w = randn(*shape, seed=sum(shape), device=device)
    lin = nn.Linear(1, 1).to(device)
    lin.weight = nn.Parameter(w.clone())
    tprune.l1_unstructured(lin, "weight", amount=sparsity)
    ours = prune.magnitude_mask(w, sparsity)
    assert ours.dtype == torch.bool and ours.device.type == device
    assert torch.equal(ours, lin.weight_mask.bool())
    assert int((~ours).sum()) == round(sparsity * w.numel())


@pytest.mark.parametrize("sparsity", [0.2, 0.5, 0.85])
def test_global_masks_equal_global_unstructured(device, sparsity):
    torch.manual_seed(0)  # the layers' random weights decide the per-layer sparsities checked below
    layers = [nn.Linear(16, 24), nn.Linear(24, 8), nn.Linear(8, 3)]
    for i, lin in enumerate(layers):  # layers of different scales: the global threshold treats them unequally
        with torch.no_grad():
            lin.weight.mul_(0.3 * (i + 1))
        lin.to(device)
    weights = [lin.weight.detach().clone() for lin in layers]
    tprune.global_unstructured([(lin, "weight") for lin in layers], tprune.L1Unstructured, amount=sparsity)
    ours = prune.global_magnitude_masks(weights, sparsity)
    for lin, mask in zip(layers, ours):
        assert torch.equal(mask, lin.weight_mask.bool())
    total = sum(w.numel() for w in weights)
    assert sum(int((~m).sum()) for m in ours) == round(sparsity * total)
    per_layer = [prune.sparsity_of(m) for m in ours]
    assert per_layer[0] > sparsity > per_layer[-1] or sparsity == 0  # small layers' weights go first


def test_magnitude_exact_count_with_ties(device):
    """Ties at the threshold: the number pruned is still exact; which tied weights go is topk's choice."""
    w = torch.tensor([[1.0, -1.0, 1.0, 2.0], [1.0, -2.0, 0.0, 1.0]], device=device)
    for sparsity in (0.125, 0.25, 0.375, 0.5, 0.75):
        mask = prune.magnitude_mask(w, sparsity)
        k = round(sparsity * 8)
        assert int((~mask).sum()) == k
        kept, pruned = w[mask].abs(), w[~mask].abs()
        if k:
            assert pruned.max() <= kept.min()  # never a larger weight pruned before a smaller one
    zeros = torch.zeros(10, 10, device=device)
    assert int((~prune.magnitude_mask(zeros, 0.37)).sum()) == 37


def test_magnitude_half_to_even_rounding():
    # round(0.5 * 5) = 2 in Python and in torch.nn.utils.prune (half to even), round(0.5 * 7) = 4
    assert int((~prune.magnitude_mask(randn(5), 0.5)).sum()) == 2
    assert int((~prune.magnitude_mask(randn(7), 0.5)).sum()) == 4


def test_magnitude_low_precision(device):
    w = randn(32, 64, seed=3, device=device)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        mask = prune.magnitude_mask(w.to(dtype), 0.5)
        assert int((~mask).sum()) == 1024
        assert w.to(dtype)[~mask].abs().max() <= w.to(dtype)[mask].abs().min()


# ----------------------------------------------------------------------------------------------
# N:M
@SETTINGS
@given(rows=st.integers(1, 6), groups=st.integers(1, 6), m=st.sampled_from([2, 4, 8]), data=st.data(),
       seed=st.integers(0, 10_000))
def test_nm_mask_properties(device, rows, groups, m, data, seed):
    n = data.draw(st.integers(1, m))
    w = randn(rows, groups * m, seed=seed, device=device)
    if seed % 3 == 0:  # many ties
        w = torch.round(w)
    mask = prune.nm_mask(w, n, m)
    assert mask.shape == w.shape and mask.dtype == torch.bool
    g_mask, g_abs = mask.reshape(-1, m), w.abs().reshape(-1, m)
    assert bool((g_mask.sum(1) == n).all())  # exactly n kept per group
    kept_min = torch.where(g_mask, g_abs, torch.inf).min(1).values
    dropped_max = torch.where(~g_mask, g_abs, -torch.inf).max(1).values
    assert bool((kept_min >= dropped_max).all())  # kept are the largest
    # ties: the earlier of equal magnitudes is kept
    for gm, ga in zip(g_mask.cpu(), g_abs.cpu()):
        for i in range(m):
            for j in range(i + 1, m):
                if ga[i] == ga[j] and gm[j]:
                    assert gm[i]


def test_nm_mask_closed_form(device):
    w = torch.tensor([[0.1, -3.0, 2.0, 0.5, 4.0, 4.0, -4.0, 1.0]], device=device)
    assert prune.nm_mask(w, 2, 4).tolist() == [[False, True, True, False, True, True, False, False]]
    assert prune.nm_mask(w, 4, 4).all()
    assert prune.nm_mask(w, 1, 8).tolist() == [[False, False, False, False, True, False, False, False]]
    assert prune.sparsity_of(prune.nm_mask(randn(64, 128), 2, 4)) == 0.5


def test_nm_on_course_lm_weight():
    """2:4 of a real weight: 50% zeros in the hardware pattern; it keeps less of the L2 mass than free 50%."""
    from course_lib.lm_quant import linear_layers
    from course_lib.models import load_causal_lm

    model, _ = load_causal_lm()
    w = linear_layers(model)["model.layers.0.mlp.up_proj"].weight.detach()
    kept24 = (w * prune.nm_mask(w, 2, 4)).norm()
    kept_free = (w * prune.magnitude_mask(w, 0.5)).norm()
    assert kept24 < kept_free <= w.norm()


# ----------------------------------------------------------------------------------------------
# Wanda
def test_wanda_equal_norms_is_per_row_magnitude(device):
    w = randn(12, 40, seed=5, device=device)
    for sparsity in (0.25, 0.5, 0.75):
        ours = prune.wanda_mask(w, torch.full((40,), 3.7, device=device), sparsity)
        per_row = torch.stack([prune.magnitude_mask(row, sparsity) for row in w])
        assert torch.equal(ours, per_row)
        assert bool(((~ours).sum(1) == int(40 * sparsity)).all())


def test_wanda_scores_and_mask_closed_form(device):
    w = torch.tensor([[1.0, -2.0, 3.0, -4.0], [4.0, 3.0, -2.0, 1.0]], device=device)
    norms = torch.tensor([10.0, 1.0, 1.0, 0.1], device=device)
    s = prune.wanda_scores(w, norms)
    assert torch.allclose(s, torch.tensor([[10.0, 2.0, 3.0, 0.4], [40.0, 3.0, 2.0, 0.1]], device=device))
    assert prune.wanda_mask(w, norms, 0.5).tolist() == [[True, False, True, False], [True, True, False, False]]
    # magnitude would have pruned the big-input weight 1.0 in row 0 and kept -4.0
    assert prune.magnitude_mask(w[0], 0.5).tolist() == [False, False, True, True]
    # invariant to scaling all norms; wanda_mask with int(): 0.3 * 4 = 1.2 -> 1 weight per row
    assert torch.equal(prune.wanda_mask(w, norms * 7, 0.5), prune.wanda_mask(w, norms, 0.5))
    assert bool(((~prune.wanda_mask(w, norms, 0.3)).sum(1) == 1).all())


def test_wanda_matches_original_code(device):
    """Transcription of Wanda's prune_wanda (unstructured and N:M branches) on one layer."""
    w = randn(24, 64, seed=7, device=device)
    X = randn(300, 64, seed=8, device=device) * torch.linspace(0.1, 5, 64, device=device)
    scaler_row = torch.zeros(64, device=device)
    nsamples = 0
    for xb in X.split(100):  # their running average of squared norms
        tmp = 1
        scaler_row *= nsamples / (nsamples + tmp)
        nsamples += tmp
        scaler_row += torch.norm(xb.t(), p=2, dim=1) ** 2 / nsamples
    W_metric = torch.abs(w) * torch.sqrt(scaler_row.reshape((1, -1)))
    W_mask = torch.zeros_like(W_metric) == 1
    indices = torch.sort(W_metric, dim=-1, stable=True)[1][:, :int(W_metric.shape[1] * 0.5)]
    W_mask.scatter_(1, indices, True)
    assert torch.equal(prune.wanda_mask(w, X.norm(dim=0), 0.5), ~W_mask)
    W_mask = torch.zeros_like(W_metric) == 1
    for ii in range(W_metric.shape[1]):
        if ii % 4 == 0:
            tmp = W_metric[:, ii:(ii + 4)].float()
            W_mask.scatter_(1, ii + torch.topk(tmp, 2, dim=1, largest=False)[1], True)
    assert torch.equal(prune.nm_mask(prune.wanda_scores(w, X.norm(dim=0)), 2, 4), ~W_mask)


# ----------------------------------------------------------------------------------------------
# SparseGPT
def outlier_layer(seed, rows=24, cols=64, tokens=512, device="cpu", dtype=torch.float64):
    """A random layer whose inputs have outlier features (every 8th feature 10x larger), and its Hessian."""
    X = randn(tokens, cols, seed=seed + 1, dtype=dtype, device=device)
    X[:, ::8] *= 10.0
    W = randn(rows, cols, seed=seed, dtype=dtype, device=device)
    return W, X, gptq.hessian_from_inputs(X)


def sparsegpt_original(W, H, sparsity, prunen=0, prunem=0, blocksize=128, percdamp=0.01, exact_count=True):
    """Transcription of IST-DASLab/sparsegpt ``SparseGPT.fasterprune`` (without the quantizer), returning
    ``(weight, kept mask)``. ``exact_count=True`` takes the threshold at index ``k - 1`` instead of ``k``, so
    that ``<= thresh`` prunes exactly ``k`` entries (the course's count); ``prunen`` counts the pruned."""
    W, H = W.clone(), H.clone()
    columns = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(columns, device=W.device)
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    Hinv = torch.linalg.cholesky(H, upper=True)
    pruned = torch.zeros_like(W, dtype=torch.bool)
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        W1 = W[:, i1:i2].clone()
        Q1, Err1 = torch.zeros_like(W1), torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        if prunen == 0:
            tmp = W1 ** 2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
            thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity) - int(exact_count)]
            mask1 = tmp <= thresh
        else:
            mask1 = torch.zeros_like(W1) == 1
        for i in range(i2 - i1):
            w, d = W1[:, i], Hinv1[i, i]
            if prunen != 0 and i % prunem == 0:
                tmp = W1[:, i:(i + prunem)] ** 2 / (torch.diag(Hinv1)[i:(i + prunem)].reshape((1, -1))) ** 2
                mask1.scatter_(1, i + torch.topk(tmp, prunen, dim=1, largest=False)[1], True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        W[:, i1:i2] = Q1
        pruned[:, i1:i2] = mask1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return W, ~pruned


@pytest.mark.parametrize("blocksize", [8, 16, 64, 128, 12])
def test_sparsegpt_matches_original_code(device, blocksize):
    """Unstructured and 2:4 against the original's fasterprune, float64 (no ties in random data)."""
    W, _, H = outlier_layer(0, device=device)
    for sparsity in (0.5, 0.3, 0.8):
        ours, mask = prune.sparsegpt_prune(W, H, sparsity, blocksize=blocksize)
        theirs, their_mask = sparsegpt_original(W, H, sparsity, blocksize=blocksize)
        assert torch.equal(mask, their_mask)
        torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=1e-10)
    if blocksize % 4 == 0:
        ours, mask = prune.sparsegpt_prune(W, H, nm=(2, 4), blocksize=blocksize)
        theirs, their_mask = sparsegpt_original(W, H, 0.5, prunen=2, prunem=4, blocksize=blocksize)
        assert torch.equal(mask, their_mask)
        torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=1e-10)
    # as written, the original prunes one more entry per block than int(sparsity * block size) (see course_lib.prune)
    _, their_mask = sparsegpt_original(W, H, 0.5, blocksize=blocksize, exact_count=False)
    n_blocks = -(-W.shape[1] // blocksize)
    assert int((~their_mask).sum()) == W.numel() // 2 + n_blocks


def sparsegpt_brute_force(W, H, sparsity, blocksize, nm=None, percdamp=0.01):
    """SparseGPT from its definition, with explicit inverses instead of Cholesky rows and no lazy blocks: column by
    column, F = the columns not yet processed, ``Hinv_F = inv(H_damped[F, F])``; a block's mask (or an N:M group's)
    from the saliency ``w_j^2 / [Hinv_F]_jj`` when it starts; every pruned ``w_j`` removed with the OBS update
    ``W[r, F] -= W[r, j] / [Hinv_F]_jj * [Hinv_F]_{j, F}``."""
    W = W.clone()
    n = W.shape[1]
    Hd = H + percdamp * torch.diagonal(H).mean() * torch.eye(n, dtype=H.dtype, device=H.device)
    hinv = [torch.linalg.inv(Hd[j:, j:]) for j in range(n)]  # hinv[j]: the inverse on F = {j, ..., n-1}
    mask = torch.ones_like(W, dtype=torch.bool)
    for j in range(n):
        if nm is None and j % blocksize == 0:
            cols = range(j, min(j + blocksize, n))
            sal = torch.stack([W[:, c] ** 2 / hinv[c][0, 0] for c in cols], dim=1)
            k = int(sparsity * sal.numel())
            order = torch.sort(sal.flatten(), stable=True).indices[:k]
            block = torch.ones_like(sal, dtype=torch.bool)
            block.view(-1)[order] = False
            mask[:, j:j + len(cols)] = block
        if nm is not None and j % nm[1] == 0:
            sal = torch.stack([W[:, c] ** 2 / hinv[c][0, 0] for c in range(j, j + nm[1])], dim=1)
            mask[:, j:j + nm[1]] = prune.nm_mask(sal, *nm)
        for r in range(W.shape[0]):
            if not mask[r, j]:
                W[r, j:] -= W[r, j] / hinv[j][0, 0] * hinv[j][0, :]
    W[~mask] = 0.0
    return W, mask


@pytest.mark.parametrize("blocksize,nm", [(4, None), (10, None), (3, None), (4, (2, 4)), (8, (1, 4))])
def test_sparsegpt_equals_brute_force_obs(device, blocksize, nm):
    W, X, H = outlier_layer(3, rows=5, cols=12, tokens=200, device=device)
    ours, mask = prune.sparsegpt_prune(W, H, 0.5, nm=nm, blocksize=blocksize)
    ref, ref_mask = sparsegpt_brute_force(W, H, 0.5, blocksize, nm)
    assert torch.equal(mask, ref_mask)
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-9)


def test_sparsegpt_single_pruned_weight_is_least_squares(device):
    """One row, one weight pruned (the first column, the only one whose saliency uses the full H^-1): the update is
    the least-squares refit of the other weights on the calibration inputs (OBS is exact for one removal)."""
    X = randn(300, 6, seed=4, dtype=torch.float64, device=device)
    w = torch.tensor([[0.01, 1.0, -2.0, 3.0, -1.5, 2.5]], dtype=torch.float64, device=device)
    H = gptq.hessian_from_inputs(X)
    ours, mask = prune.sparsegpt_prune(w, H, 1 / 6, blocksize=6, percdamp=0.0)
    assert mask.tolist() == [[False, True, True, True, True, True]]
    refit = torch.linalg.lstsq(X[:, 1:], X @ w[0]).solution
    torch.testing.assert_close(ours[0, 1:], refit, atol=1e-9, rtol=1e-9)
    assert ours[0, 0] == 0


def test_first_k_smallest_is_a_stable_sort(device):
    for seed in range(20):
        x = torch.round(randn(200, seed=seed, device=device) * 2)  # many ties
        for k in (1, 7, 100, 200):
            expected = torch.zeros(200, dtype=torch.bool, device=device)
            expected[torch.sort(x, stable=True).indices[:k]] = True
            assert torch.equal(prune._first_k_smallest(x, k), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_sparsegpt_exact_sparsity_and_patterns(device, dtype):
    W, X, H = outlier_layer(5, rows=32, cols=96, dtype=torch.float32, device=device)
    W = W.to(dtype)
    for sparsity, blocksize in ((0.5, 32), (0.5, 128), (0.7, 32)):
        out, mask = prune.sparsegpt_prune(W, H, sparsity, blocksize=blocksize)
        assert out.dtype == dtype and out.shape == W.shape and mask.dtype == torch.bool
        blocks = [mask[:, i:i + blocksize] for i in range(0, 96, blocksize)]
        assert [int((~b).sum()) for b in blocks] == [int(sparsity * b.numel()) for b in blocks]
        assert bool((out[~mask] == 0).all())
    assert prune.sparsity_of(prune.sparsegpt_prune(W, H, 0.5, blocksize=32)[1]) == 0.5
    for n, m in ((2, 4), (4, 8), (1, 4)):
        out, mask = prune.sparsegpt_prune(W, H, nm=(n, m), blocksize=32)
        assert bool((mask.reshape(-1, m).sum(1) == n).all())
        assert bool(((out != 0).reshape(-1, m).sum(1) <= n).all())
    out, mask = prune.sparsegpt_prune(W, H, 0.0)
    assert bool(mask.all()) and torch.equal(out, W)  # nothing pruned, nothing changed


def test_sparsegpt_dead_inputs(device):
    """An input that is always 0 (H_jj = 0): its weights are zeroed first and pruned first; the rest stays finite."""
    W, X, _ = outlier_layer(6, rows=8, cols=16, device=device)
    X[:, 3] = 0.0
    out, mask = prune.sparsegpt_prune(W, gptq.hessian_from_inputs(X), 0.5, blocksize=16)
    assert bool(torch.isfinite(out).all()) and bool((out[:, 3] == 0).all()) and not bool(mask[:, 3].any())


@pytest.mark.parametrize("seed", range(5))
def test_sparsegpt_output_error_below_wanda_and_magnitude(seed):
    """On random layers with outlier features, the layer's output error on the calibration data: SparseGPT's mask plus
    update is at most Wanda's and magnitude's (at 50% and 2:4); every method keeps the same number of weights."""
    W, X, H = outlier_layer(10 * seed, rows=32, cols=128, tokens=1024, dtype=torch.float32)
    norms = X.norm(dim=0)
    for nm in (None, (2, 4)):
        ours = prune.sparsegpt_prune(W, H, 0.5, nm=nm, blocksize=64)[0]
        wanda = prune.wanda_mask(W, norms, 0.5) if nm is None else prune.nm_mask(prune.wanda_scores(W, norms))
        magnitude = prune.magnitude_mask(W, 0.5) if nm is None else prune.nm_mask(W)
        err = gptq.layer_output_error(W, ours, X)
        assert err <= gptq.layer_output_error(W, W * wanda, X)
        assert err <= gptq.layer_output_error(W, W * magnitude, X)


# ----------------------------------------------------------------------------------------------
# structured
@pytest.mark.parametrize("bias", [True, False])
def test_prune_channels_keeps_outputs(device, bias):
    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(20, 48, bias=bias).to(device), nn.Linear(48, 7, bias=bias).to(device)
    x = randn(9, 20, seed=1, device=device)
    new1, new2 = prune.prune_channels(fc1, fc2, 0.25)
    assert (new1.in_features, new1.out_features, new2.in_features, new2.out_features) == (20, 36, 36, 7)
    scores = prune.channel_scores(fc1, fc2)
    keep = torch.sort(torch.topk(scores, 36).indices).values
    assert torch.equal(new1.weight, fc1.weight[keep]) and torch.equal(new2.weight, fc2.weight[:, keep])
    torch.testing.assert_close(new1(x), fc1(x)[:, keep], atol=1e-6, rtol=1e-6)  # kept channels: same outputs
    hidden_mask = torch.zeros(48, device=device)
    hidden_mask[keep] = 1
    torch.testing.assert_close(new2(torch.relu(new1(x))), fc2(torch.relu(fc1(x)) * hidden_mask))
    n_params = sum(p.numel() for p in (*new1.parameters(), *new2.parameters()))
    assert n_params == 36 * 20 + 36 * 7 + (36 + 7 if bias else 0)
    assert fc1.out_features == 48 and fc1.weight.shape == (48, 20)  # inputs untouched
    assert new1.weight.device.type == device and new2.weight.dtype == fc2.weight.dtype


def test_channel_scores_rescaling_invariant():
    fc1, fc2 = nn.Linear(6, 10), nn.Linear(10, 3)
    c = torch.linspace(0.1, 10, 10)
    g1, g2 = nn.Linear(6, 10), nn.Linear(10, 3)
    with torch.no_grad():
        g1.weight.copy_(fc1.weight * c[:, None])
        g2.weight.copy_(fc2.weight / c[None, :])
    torch.testing.assert_close(prune.channel_scores(g1, g2), prune.channel_scores(fc1, fc2))
    new1, _ = prune.prune_channels(fc1, fc2, 0.0)
    assert torch.equal(new1.weight, fc1.weight)


# ----------------------------------------------------------------------------------------------
# whole models
def test_prune_model_course_lm():
    from course_lib.data import corpus_text
    from course_lib.evaluate import perplexity
    from course_lib.lm_quant import linear_layers
    from course_lib.models import load_causal_lm

    text = corpus_text("eval")
    ppl = {}
    for method in ("magnitude", "wanda"):
        model, tok = load_causal_lm()
        masks = prune.prune_model(model, tok, 0.5, method, n_samples=8, seq_len=64)
        layers = linear_layers(model)
        assert set(masks) == set(layers) and len(masks) == 28
        for name, lin in layers.items():
            assert prune.sparsity_of(lin.weight) >= 0.5
            assert prune.sparsity_of(masks[name]) == 0.5
        ppl[method] = perplexity(model, tok, text, max_tokens=1024)
    model, tok = load_causal_lm()
    dense = perplexity(model, tok, text, max_tokens=1024)
    assert dense < ppl["wanda"] < ppl["magnitude"]
    masks = prune.prune_model(model, tok, method="wanda", nm=(2, 4), n_samples=4, seq_len=64)
    w = linear_layers(model)["model.layers.2.mlp.down_proj"].weight
    assert bool(((w.reshape(-1, 4) != 0).sum(1) <= 2).all())


def test_prune_model_sparsegpt_course_lm():
    """SparseGPT on the whole course LM: exact 50% per layer (the update keeps the zeros), 2:4 pattern, and a
    perplexity below Wanda's with the same calibration windows (as in the SparseGPT and Wanda papers)."""
    from course_lib.data import corpus_text
    from course_lib.evaluate import perplexity
    from course_lib.lm_quant import linear_layers
    from course_lib.models import load_causal_lm

    text = corpus_text("eval")
    ppl = {}
    for method in ("wanda", "sparsegpt"):
        model, tok = load_causal_lm()
        dense = {n: lin.weight.detach().clone() for n, lin in linear_layers(model).items()}
        masks = prune.prune_model(model, tok, 0.5, method, n_samples=8, seq_len=64)
        layers = linear_layers(model)
        assert set(masks) == set(layers) and len(masks) == 28
        for name, lin in layers.items():
            assert prune.sparsity_of(masks[name]) == 0.5 and bool((lin.weight[~masks[name]] == 0).all())
            if method == "sparsegpt":  # the kept weights were updated
                assert not torch.equal(lin.weight[masks[name]], dense[name][masks[name]])
        ppl[method] = perplexity(model, tok, text, max_tokens=1024)
    assert ppl["sparsegpt"] < ppl["wanda"]
    model, tok = load_causal_lm()
    prune.prune_model(model, tok, method="sparsegpt", nm=(2, 4), n_samples=4, seq_len=64)
    w = linear_layers(model)["model.layers.3.mlp.down_proj"].weight
    assert bool(((w.reshape(-1, 4) != 0).sum(1) <= 2).all())


def test_sensitivity_scan_restores_and_orders():
    torch.manual_seed(0)
    model = prune.DigitsMLP(32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = randn(50, 64, seed=2)
    ref = model(x).detach()

    def evaluate(m):
        return float(((m(x) - ref) ** 2).mean())

    res = prune.sensitivity_scan(model, evaluate, [0.0, 0.5, 0.9], progress=False)
    assert list(res) == ["fc1", "fc2", "fc3"]
    for values in res.values():
        assert values[0] == 0.0 and values[0] <= values[1] <= values[2]
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    grouped = prune.sensitivity_scan(model, evaluate, [0.5], groups={"all": ["fc1", "fc2", "fc3"]}, progress=False)
    assert grouped["all"][0] > max(v[1] for v in res.values())


def test_finetune_keeps_zeros_and_recovers(device):
    from course_lib.data import load_digits
    from course_lib.evaluate import accuracy

    Xtr, ytr, Xte, yte = load_digits()
    torch.manual_seed(0)
    model = prune.DigitsMLP(64).to(device)
    prune.train_classifier(model, Xtr, ytr, epochs=8, progress=False)
    dense = accuracy(model, Xte, yte)
    layers = {"fc1": model.fc1, "fc2": model.fc2, "fc3": model.fc3}
    masks = dict(zip(layers, prune.global_magnitude_masks([m.weight for m in layers.values()], 0.95)))
    prune.apply_masks(layers, masks)
    pruned = accuracy(model, Xte, yte)
    losses = prune.train_classifier(model, Xtr, ytr, epochs=5, masks=masks, progress=False)
    tuned = accuracy(model, Xte, yte)
    assert dense > 0.9 and tuned > pruned and losses[-1] < losses[0]
    for name, m in masks.items():
        assert bool((layers[name].weight[~m] == 0).all())


def test_pruning_then_quantization_keeps_zeros(device):
    w = randn(32, 128, seed=9, device=device) * prune.nm_mask(randn(32, 128, seed=9, device=device), 2, 4)
    for bits, group in ((4, None), (4, 64), (3, 32), (8, None)):
        for symmetric in (False, True):
            q = fake_quantize_weight(w, bits, group, symmetric)
            assert bool((q[w == 0] == 0).all())


def test_sparse_bits_per_weight():
    assert prune.sparse_bits_per_weight(0.5, 16, "dense") == 16
    assert prune.sparse_bits_per_weight(0.5, 16, "bitmask") == 9
    assert prune.sparse_bits_per_weight(0.5, 16, "nm") == 9  # 2 fp16 values + 2 x 2-bit indices per 4
    assert prune.sparse_bits_per_weight(0.5, 4, "nm") == 3
    assert prune.sparse_bits_per_weight(0.75, 8, "nm", m=8) == 0.25 * 11
    assert prune.sparse_bits_per_weight(0.0, 4, "bitmask") == 5


# ----------------------------------------------------------------------------------------------
# gradual pruning: Zhu and Gupta's cubic schedule; prune, then distill
def _cubic_exact(t, s_f, s_i, t0, n, dt):
    """The paper's schedule in exact rational arithmetic: the formula at the last pruning step reached."""
    from fractions import Fraction

    if t < t0:
        return Fraction(s_i)
    last = min(t0 + (t - t0) // dt * dt, t0 + n * dt)  # the last pruning step t0 + k dt <= t
    return Fraction(s_f) + (Fraction(s_i) - Fraction(s_f)) * (1 - Fraction(last - t0, n * dt)) ** 3


def test_cubic_sparsity_closed_form():
    # to 50% in 4 pruning steps: 0.5 (1 - (3/4)^3), 0.5 (1 - (1/2)^3), 0.5 (1 - (1/4)^3), 0.5
    assert [prune.cubic_sparsity(t, 0.5, n_prunings=4) for t in range(6)] == [0.0, 0.2890625, 0.4375, 0.4921875,
                                                                             0.5, 0.5]
    assert prune.gradual_targets(0.5, 4) == [0.2890625, 0.4375, 0.4921875, 0.5]
    assert prune.gradual_targets(0.8, 1) == [0.8]
    # half-way through, 7/8 of the way from s_i to s_f
    assert math.isclose(prune.cubic_sparsity(10, 0.9, 0.1, 0, 4, 5), 0.1 + 0.8 * 7 / 8, rel_tol=1e-12)
    assert prune.gradual_targets((2, 4)) == [(3, 4), (2, 4)]
    assert prune.gradual_targets((1, 8)) == [(7, 8), (6, 8), (5, 8), (4, 8), (3, 8), (2, 8), (1, 8)]
    assert prune.gradual_targets((4, 4)) == [(4, 4)]


@SETTINGS
@given(s_f=st.floats(0.0, 0.99), frac=st.floats(0.0, 1.0), t0=st.integers(0, 8), n=st.integers(1, 8),
       dt=st.integers(1, 5))
def test_cubic_sparsity_properties(s_f, frac, t0, n, dt):
    s_i = s_f * frac
    values = [prune.cubic_sparsity(t, s_f, s_i, t0, n, dt) for t in range(t0 + n * dt + 2 * dt + 3)]
    for t, v in enumerate(values):
        assert math.isclose(v, float(_cubic_exact(t, s_f, s_i, t0, n, dt)), rel_tol=1e-12, abs_tol=1e-12)
        assert s_i - 1e-12 <= v <= s_f
    assert all(b >= a - 1e-15 for a, b in zip(values, values[1:]))  # never un-prunes
    assert math.isclose(values[t0], s_i, abs_tol=1e-12) and values[t0 + n * dt] == s_f
    for k in range(n):  # held between two pruning steps
        assert len({values[t] for t in range(t0 + k * dt, t0 + (k + 1) * dt)}) == 1


@pytest.fixture(scope="module")
def course_lm_and_windows():
    """The course LM (the teacher, never modified), its tokenizer and 12 random windows of 32 tokens."""
    from course_lib.models import load_causal_lm

    teacher, tok = load_causal_lm()
    windows = torch.randint(0, teacher.config.vocab_size, (12, 32), generator=torch.Generator().manual_seed(3))
    return teacher, tok, windows


def _kl_to(teacher, model, ids):
    from course_lib.distill import soft_target_loss

    with torch.no_grad():
        return float(soft_target_loss(model(input_ids=ids).logits, teacher(input_ids=ids).logits, 1.0))


def test_distill_with_masks_keeps_the_masks_and_approaches_the_teacher(course_lm_and_windows):
    import copy

    from course_lib.lm_quant import linear_layers

    teacher, tok, windows = course_lm_and_windows
    student = copy.deepcopy(teacher)
    masks = prune.prune_model(student, tok, method="magnitude", nm=(2, 4))
    held_out = windows[8:]
    before = _kl_to(teacher, student, held_out)
    losses = prune.distill_with_masks(student, teacher, windows[:8], masks, batch_size=2, lr=1e-3)
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    assert _kl_to(teacher, student, held_out) < before  # closer to the dense model on windows it did not see
    layers = linear_layers(student)
    for name, mask in masks.items():
        w = layers[name].weight
        assert bool((w[~mask] == 0).all()) and not w._backward_hooks  # still pruned, hooks removed
        assert not torch.equal(w[mask], linear_layers(teacher)[name].weight[mask])  # the kept weights trained
    assert not any(p.grad is not None and p.grad.abs().sum() > 0 for p in teacher.parameters())


def test_prune_and_distill_gradual_and_cross_entropy(course_lm_and_windows):
    import copy

    from course_lib.lm_quant import linear_layers

    teacher, tok, windows = course_lm_and_windows
    calib = windows[:4]
    for targets, method, t in (([0.25, 0.5], "wanda", teacher), ([(3, 4), (2, 4)], "magnitude", None)):
        student = copy.deepcopy(teacher)
        masks = prune.prune_and_distill(student, t, windows[:4], targets, method, calib_ids=calib, batch_size=2)
        layers = linear_layers(student)
        assert set(masks) == set(layers)
        for name, mask in masks.items():
            assert prune.sparsity_of(mask) == 0.5 and bool((layers[name].weight[~mask] == 0).all())
            if isinstance(targets[-1], tuple):
                assert bool((mask.reshape(-1, 4).sum(1) == 2).all())


# ----------------------------------------------------------------------------------------------
# bad input
W = randn(4, 8)
FC1, FC2 = nn.Linear(8, 6), nn.Linear(6, 3)
BAD = [
    (prune.magnitude_mask, (W, 1.0), "sparsity"),
    (prune.magnitude_mask, (W, -0.1), "sparsity"),
    (prune.magnitude_mask, (W, float("nan")), "sparsity"),
    (prune.magnitude_mask, (W, "half"), "sparsity"),
    (prune.magnitude_mask, (W.to(torch.int32), 0.5), "dtype"),
    (prune.magnitude_mask, (torch.tensor([1.0, float("nan")]), 0.5), "finite"),
    (prune.magnitude_mask, (torch.empty(0, 3), 0.5), "empty"),
    (prune.magnitude_mask, ([1.0, 2.0], 0.5), "Tensor"),
    (prune.global_magnitude_masks, (W, 0.5), "weights"),
    (prune.global_magnitude_masks, ([W, torch.tensor([float("inf")])], 0.5), "weights[1]"),
    (prune.nm_mask, (W, 3, 2), "n must be <= m"),
    (prune.nm_mask, (W, 0, 4), "n"),
    (prune.nm_mask, (W, 2, 3), "divide"),
    (prune.nm_mask, (W.long(), 2, 4), "dtype"),
    (prune.nm_mask, (W, 2.0, 4), "n"),
    (prune.wanda_mask, (W, torch.ones(7), 0.5), "act_norm"),
    (prune.wanda_mask, (W, -torch.ones(8), 0.5), "act_norm"),
    (prune.wanda_mask, (W, torch.ones(8), 1.5), "sparsity"),
    (prune.wanda_mask, (W, torch.full((8,), float("nan")), 0.5), "act_norm"),
    (prune.wanda_scores, (W[0], torch.ones(8)), "dimensions"),
    (prune.prune_channels, (FC1, nn.Linear(5, 3), 0.5), "in_features"),
    (prune.prune_channels, (FC1, FC2, 1.0), "sparsity"),
    (prune.prune_channels, (FC1, FC2, 0.95), "all"),
    (prune.prune_channels, (W, FC2, 0.5), "fc1"),
    (prune.sparse_bits_per_weight, (0.5, 16, "csr"), "fmt"),
    (prune.sparse_bits_per_weight, (0.5, 0, "bitmask"), "value_bits"),
    (prune.prune_model, (nn.Linear(2, 2), None, 0.5, "magnitude"), "model"),
    (prune.prune_model, (nn.Linear(2, 2), None, 0.5, "random"), "method"),
    (prune.sparsegpt_prune, (W, torch.eye(8), 1.0), "sparsity"),
    (prune.sparsegpt_prune, (W, torch.eye(7), 0.5), "H"),
    (prune.sparsegpt_prune, (W, torch.eye(8).double() + torch.triu(torch.ones(8, 8), 1).double(), 0.5), "symmetric"),
    (prune.sparsegpt_prune, (W, torch.eye(8), 0.5, (3, 2)), "n <= m"),
    (prune.sparsegpt_prune, (W, torch.eye(8), 0.5, (2, 3)), "in_features"),
    (prune.sparsegpt_prune, (W, torch.eye(8), 0.5, [2, 4]), "nm"),
    (prune.sparsegpt_prune, (W, torch.eye(8), 0.5, (2, 4), 6), "blocksize"),
    (prune.sparsegpt_prune, (W, torch.eye(8), 0.5, None, 0), "blocksize"),
    (prune.sparsegpt_prune, (W, torch.eye(8), 0.5, None, 128, -0.1), "percdamp"),
    (prune.sparsegpt_prune, (torch.tensor([[1.0, float("nan")]]), torch.eye(2), 0.5), "finite"),
    (prune.sparsegpt_prune, (W.long(), torch.eye(8), 0.5), "dtype"),
    (prune.prune_model, (nn.Linear(2, 2), None, 0.5, "sparsegpt"), "model"),
    (prune.cubic_sparsity, (0, 1.0), "final_sparsity"),
    (prune.cubic_sparsity, (0, 0.5, 0.6), "initial_sparsity"),
    (prune.cubic_sparsity, (0, 0.5, -0.1), "initial_sparsity"),
    (prune.cubic_sparsity, (-1, 0.5), "step"),
    (prune.cubic_sparsity, (1.5, 0.5), "step"),
    (prune.cubic_sparsity, (0, 0.5, 0.0, -2), "start_step"),
    (prune.cubic_sparsity, (0, 0.5, 0.0, 0, 0), "n_prunings"),
    (prune.cubic_sparsity, (0, 0.5, 0.0, 0, 4, 0), "frequency"),
    (prune.gradual_targets, (0.5, 0), "stages"),
    (prune.gradual_targets, ((3, 2),), "n of an N:M pattern"),
    (prune.gradual_targets, ((2, 4, 8),), "N:M"),
    (prune.distill_with_masks, (nn.Linear(2, 2), None, torch.zeros(4, 8, dtype=torch.long), {"x": W > 0}), "x"),
    (prune.distill_with_masks, (nn.Linear(2, 2), None, torch.zeros(4, 8, dtype=torch.long), {}), "masks"),
    (prune.prune_and_distill, (nn.Linear(2, 2), None, torch.zeros(4, 8, dtype=torch.long), 0.5), "targets"),
    (prune.prune_and_distill, (nn.Linear(2, 2), None, torch.zeros(4, 8, dtype=torch.long), [1.5]), "targets"),
    (prune.prune_and_distill, (nn.Linear(2, 2), None, torch.zeros(4, 8, dtype=torch.long), [0.5, 0.6], "wanda",
                               None, None, 4), "windows"),
]


@pytest.mark.parametrize("fn,args,mentions", BAD, ids=[f"{f.__name__}-{i}" for i, (f, _, _) in enumerate(BAD)])
def test_bad_input(fn, args, mentions):
    with pytest.raises((TypeError, ValueError)) as info:
        fn(*args)
    assert mentions in str(info.value)


# ----------------------------------------------------------------------------------------------
# plots and widget
def test_plots_return_figures():
    w = randn(16, 32)
    figs = [
        plots.plot_masks({"magnitude": prune.magnitude_mask(w, 0.5), "2:4": prune.nm_mask(w)}),
        plots.plot_weight_histogram(w, prune.magnitude_mask(w, 0.5)),
        plots.plot_sensitivity([0.0, 0.5], {"fc1": [0.9, 0.8]}, "accuracy", baseline=0.9),
        plots.plot_sparsity_curve([0.3, 0.5], {"magnitude": [30, 40], "wanda": [29, 33]}, 28.0,
                                  points={"2:4": (0.5, 45.0)}),
        plots.plot_size_quality([{"setting": "a", "size_mb": 1.0, "perplexity": 30.0}]),
    ]
    for fig in figs:
        assert isinstance(fig, matplotlib.figure.Figure)
        plt.close(fig)
    with pytest.raises(ValueError, match="masks"):
        plots.plot_masks({})


def test_widget_update_changes_output():
    box = widgets.pruning_explorer()
    first = box.last
    assert first["method"] == widgets.METHODS[0] and math.isclose(first["sparsity"], 0.5)
    box.method.value = "Wanda (per row)"  # observe triggers update
    wanda_half = box.last
    assert wanda_half["error"] < first["error"]  # Wanda protects the large input features
    box.sparsity.value = 0.8
    res = box.update()
    assert math.isclose(res["sparsity"], 0.8, abs_tol=0.01) and res["error"] > wanda_half["error"]
    assert "Wanda" in box.readout.value
    box.method.value = "2:4 magnitude"
    assert math.isclose(box.last["sparsity"], 0.5)
    plt.close("all")
