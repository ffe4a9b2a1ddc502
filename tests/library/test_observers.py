"""course_lib.observers: closed forms, torch.ao's observers and torch/numpy quantiles as references, properties."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from course_lib import affine, observers

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
finite_values = st.lists(st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False, width=32),
                         min_size=1, max_size=64)


def _heavy(n=20_000, seed=0):
    """Student-t samples with 3 degrees of freedom: a heavy tail."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=gen) / torch.randn(n, 3, generator=gen).pow(2).mean(1).sqrt()


def _torch_ao():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import MinMaxObserver, MovingAverageMinMaxObserver
    return MinMaxObserver, MovingAverageMinMaxObserver


# ----------------------------------------------------------------------------------------------
# min-max and moving average against torch.ao


@given(values=finite_values, split=st.integers(1, 5), bits=st.integers(2, 8), symmetric=st.booleans())
@SETTINGS
def test_minmax_equals_torch_ao(values, split, bits, symmetric):
    TorchMinMax, _ = _torch_ao()
    x = torch.tensor(values, dtype=torch.float32)
    qmin, qmax = affine.qrange(bits, signed=symmetric)
    ref = TorchMinMax(dtype=torch.qint8 if symmetric else torch.quint8, quant_min=qmin, quant_max=qmax,
                      qscheme=torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine)
    ours = observers.MinMaxObserver(bits=bits, symmetric=symmetric)
    for chunk in x.chunk(split):
        ref(chunk)
        ours(chunk)
    lo, hi = ours.range()
    assert lo.item() == ref.min_val.item() and hi.item() == ref.max_val.item()
    t_scale, t_zp = ref.calculate_qparams()
    scale, zp = ours.qparams()
    assert scale.item() == t_scale.item()
    if not symmetric or qmin < 0:  # torch's symmetric unsigned custom range uses (qmin+qmax)//2 (see affine)
        assert int(zp) == int(t_zp)


@pytest.mark.parametrize("c", [0.01, 0.3, 1.0])
def test_moving_average_equals_torch_ao(c):
    _, TorchMA = _torch_ao()
    x = _heavy(5000, seed=1)
    ref = TorchMA(averaging_constant=c)
    ours = observers.MovingAverageMinMaxObserver(averaging_constant=c)
    for chunk in x.chunk(17):
        ref(chunk)
        ours(chunk)
    lo, hi = ours.range()
    assert lo.item() == pytest.approx(ref.min_val.item(), rel=1e-6)
    assert hi.item() == pytest.approx(ref.max_val.item(), rel=1e-6)
    assert ours.qparams()[0].item() == pytest.approx(ref.calculate_qparams()[0].item(), rel=1e-6)


def test_moving_average_closed_form():
    obs = observers.MovingAverageMinMaxObserver(averaging_constant=0.5)
    obs(torch.tensor([-1.0, 1.0]))
    obs(torch.tensor([-3.0, 5.0]))
    lo, hi = obs.range()
    assert (lo.item(), hi.item()) == (-2.0, 3.0)


# ----------------------------------------------------------------------------------------------
# percentile


@pytest.mark.parametrize("p", [100.0, 99.99, 99.0, 90.0, 50.0, 12.5])
def test_percentile_matches_torch_and_numpy(p):
    x = _heavy(10_001, seed=2)
    lo, hi = observers.percentile_range(x, p)
    lo_t, hi_t = torch.quantile(x, 1 - p / 100), torch.quantile(x, p / 100)
    assert torch.equal(lo, torch.minimum(lo_t, hi_t)) and torch.equal(hi, torch.maximum(lo_t, hi_t))  # bit-exact
    assert hi.item() == pytest.approx(float(np.percentile(x.double().numpy(), max(p, 100 - p))), rel=1e-5, abs=1e-6)


def test_percentile_100_is_min_max_and_closed_form():
    x = torch.arange(101, dtype=torch.float32)  # 0..100: the p-th percentile is p
    lo, hi = observers.percentile_range(x, 100)
    assert (lo.item(), hi.item()) == (0.0, 100.0)
    lo, hi = observers.percentile_range(x, 90)
    assert (lo.item(), hi.item()) == pytest.approx((10.0, 90.0))
    lo, hi = observers.percentile_range(torch.tensor([3.0]), 99.99)
    assert (lo.item(), hi.item()) == (3.0, 3.0)


@given(values=finite_values, p=st.floats(50.0, 100.0))
@SETTINGS
def test_percentile_range_is_inside_min_max(values, p):
    x = torch.tensor(values)
    lo, hi = observers.percentile_range(x, p)
    assert x.min() <= lo <= hi <= x.max()


# ----------------------------------------------------------------------------------------------
# MSE search


def _brute_force_mse(x, bits, symmetric, n):
    qmin, qmax = affine.qrange(bits, signed=symmetric)
    lo0, hi0 = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    errs = []
    for k in range(1, n + 1):
        lo, hi = torch.tensor(lo0) * (k / n), torch.tensor(hi0) * (k / n)
        s, z = affine.compute_scale_zero_point(lo, hi, qmin, qmax, symmetric)
        errs.append(((affine.fake_quantize(x, s, z, qmin, qmax).double() - x.double()) ** 2).mean().item())
    return errs


@pytest.mark.parametrize("bits,symmetric", [(2, False), (4, False), (4, True), (8, True)])
def test_mse_range_is_the_argmin_of_the_grid(bits, symmetric, device):
    x = _heavy(4000, seed=3).to(device)
    lo, hi = observers.mse_range(x, bits, symmetric, num_candidates=50)
    assert lo.device.type == device and lo.dtype == torch.float32
    errs = _brute_force_mse(x.cpu(), bits, symmetric, 50)
    k = int(np.argmin(errs)) + 1
    assert hi.item() == pytest.approx(max(x.max().item(), 0) * k / 50, rel=1e-6)
    assert lo.item() == pytest.approx(min(x.min().item(), 0) * k / 50, rel=1e-6)


def _loop_mse_range(x, bits, symmetric, n):
    """mse_range's definition, one candidate at a time through affine's own functions (strict <: ties keep the first)."""
    qmin, qmax = affine.qrange(bits, signed=symmetric)
    xf = x.float()
    zero = torch.zeros((), device=x.device)
    lo0, hi0 = torch.minimum(xf.min(), zero), torch.maximum(xf.max(), zero)
    best, best_err, errs = None, None, []
    for k in range(1, n + 1):
        lo, hi = lo0 * (k / n), hi0 * (k / n)
        scale, zp = affine.compute_scale_zero_point(lo, hi, qmin, qmax, symmetric)
        err = ((affine.fake_quantize(xf, scale, zp, qmin, qmax).double() - xf.double()) ** 2).mean()
        errs.append(err)
        if best_err is None or bool(err < best_err):
            best, best_err = (lo, hi), err
    return best, torch.stack(errs)


def test_mse_range_equals_the_candidate_loop_bit_for_bit():
    """mse_range scores all candidates in one batch; each must equal the loop through affine's functions exactly,
    or a near tie could pick another candidate than the notebook's loop does."""
    gen = torch.Generator().manual_seed(11)
    xs = [torch.randn(3000, generator=gen) ** 3, torch.randn(40, 33, generator=gen).t(), torch.rand(500, generator=gen),
          torch.randn(257, generator=gen, dtype=torch.float64) - 3, torch.round(torch.randn(300, generator=gen) * 4) / 16,
          torch.zeros(10), torch.full((8,), 1.5), torch.randn(64, 16, generator=gen)[:, ::3], torch.tensor(2.5),
          torch.randn(6, 7, 8, generator=gen).permute(2, 0, 1)]
    for i, x in enumerate(xs):
        for bits, symmetric, n in ((2, False, 100), (2, True, 37), (4, False, 100), (4, True, 1), (8, False, 20), (3, True, 150)):
            (lo_ref, hi_ref), errs_ref = _loop_mse_range(x, bits, symmetric, n)
            lo, hi = observers.mse_range(x, bits, symmetric, n)
            assert torch.equal(lo, lo_ref) and torch.equal(hi, hi_ref), (i, bits, symmetric, n)
            qmin, qmax = affine.qrange(bits, signed=symmetric)
            xf = x.float()
            zero = torch.zeros(())
            for chunk in (1 << 21, 7 * xf.numel()):  # one batch; batches of 7 rows
                _, _, errs = observers._candidate_errors(xf, torch.minimum(xf.min(), zero), torch.maximum(xf.max(), zero),
                                                         n, qmin, qmax, symmetric, max_elements=chunk)
                assert torch.equal(errs, errs_ref), (i, bits, symmetric, n, chunk)


def test_mse_clips_heavy_tails_more_at_low_bits():
    x = _heavy(20_000, seed=4)
    widths = [float(hi - lo) for lo, hi in (observers.mse_range(x, b) for b in (8, 4, 2))]
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] < 0.5 * float(x.max() - x.min())


def test_mse_of_gaussian_at_4_bits_matches_the_known_optimum():
    # Known result (e.g. Banner et al. 2019, ACIQ): the MSE-optimal clip of N(0,1) on 16 uniform levels is about 2.5 sigma.
    x = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    lo, hi = observers.mse_range(x, 4, symmetric=True, num_candidates=200)
    assert 2.2 < hi.item() < 2.9


# ----------------------------------------------------------------------------------------------
# entropy (KL) calibration


def test_kl_divergence_closed_form_and_scipy():
    p, q = torch.tensor([1.0, 2.0, 1.0]), torch.tensor([1.0, 1.0, 2.0])
    pn, qn = p / 4, q / 4
    expected = float((pn * torch.log(pn / qn)).sum())
    assert observers.kl_divergence(p, q).item() == pytest.approx(expected, rel=1e-6)
    scipy_stats = pytest.importorskip("scipy.stats")
    assert observers.kl_divergence(p, q).item() == pytest.approx(scipy_stats.entropy(p.numpy(), q.numpy()), rel=1e-12)
    assert observers.kl_divergence(p, p).item() == 0.0
    assert math.isinf(observers.kl_divergence(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0])).item())
    assert observers.kl_divergence(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])).item() == pytest.approx(math.log(2))


def test_entropy_clips_heavy_tails_and_keeps_int8_wide():
    x = _heavy(50_000, seed=5)
    amax = x.abs().max().item()
    lo8, hi8 = observers.entropy_range(x, 8)
    lo4, hi4 = observers.entropy_range(x, 4)
    assert hi8.item() == -lo8.item() or hi8.item() == x.max().item()  # symmetric threshold on |x|
    assert hi4.item() < hi8.item() < amax
    # threshold is a bin edge: amax * i / 2048 for an integer i >= 128
    i = hi8.item() / amax * 2048
    assert abs(i - round(i)) < 1e-3 and round(i) >= 128


def test_entropy_on_uniform_data_keeps_everything():
    x = torch.rand(100_000, generator=torch.Generator().manual_seed(0))
    lo, hi = observers.entropy_range(x, 8)
    assert hi.item() > 0.97 * x.max().item()


def test_entropy_kl_matches_a_direct_computation():
    """The vectorized KL of one threshold equals kl_divergence on P and Q built by hand."""
    hist = np.array([0, 5, 3, 0, 2, 7, 1, 4, 0, 6, 2, 1], dtype=np.float64)
    levels, i = 4, 10
    p = hist[:i].copy()
    p[-1] += hist[i:].sum()
    q = np.zeros(i)
    for c in range(levels):
        members = [j for j in range(i) if (j * levels) // i == c]
        nz = [j for j in members if hist[j] > 0]
        for j in nz:
            q[j] = hist[members].sum() / len(nz)
    expected = observers.kl_divergence(torch.tensor(p), torch.tensor(q)).item()
    assert observers._kl_per_threshold(hist, levels)[i] == pytest.approx(expected, rel=1e-12)
    got_p, got_q = observers.candidate_distributions(torch.tensor(hist, dtype=torch.float32), i, levels)
    assert torch.equal(got_p, torch.tensor(p)) and torch.equal(got_q, torch.tensor(q)) and got_p.dtype == torch.float64


def test_candidate_distributions_closed_form():
    hist = torch.tensor([4.0, 0.0, 2.0, 6.0, 1.0, 0.0, 3.0])
    # i = 6 bins kept, L = 4 levels: chunks floor(4j/6) = 0, 0, 1, 2, 2, 3; tail 3 onto bin 5
    p, q = observers.candidate_distributions(hist, 6, 4)
    assert p.tolist() == [4.0, 0.0, 2.0, 6.0, 1.0, 3.0]
    assert q.tolist() == [4.0, 0.0, 2.0, 3.5, 3.5, 0.0]  # chunk 0's mass on its one non-empty bin; chunk 3 is empty
    assert math.isinf(observers.kl_divergence(p, q).item())  # P has the tail where Q has nothing
    p, q = observers.candidate_distributions(hist, 7, 7)  # one level per bin: Q is the histogram itself
    assert torch.equal(p, hist.double()) and torch.equal(q, hist.double())


@given(counts=st.lists(st.integers(0, 50), min_size=2, max_size=80), levels=st.integers(1, 16), data=st.data())
@SETTINGS
def test_candidate_distributions_properties(counts, levels, data):
    hist = torch.tensor(counts, dtype=torch.float32)
    levels = min(levels, len(counts))
    i = data.draw(st.integers(levels, len(counts)))
    p, q = observers.candidate_distributions(hist, i, levels)
    h = hist[:i].double()
    assert p.shape == q.shape == (i,)
    assert p.sum().item() == hist.sum().item()  # clipping moves values, never drops them
    assert q.sum().item() == pytest.approx(h.sum().item(), abs=1e-9)  # the tail is not in Q
    assert torch.equal(q == 0, h == 0)  # Q puts mass exactly where the data had some
    chunk = torch.arange(i) * levels // i
    for c in range(levels):  # Q is flat on each chunk's non-empty bins
        nz = q[(chunk == c) & (h > 0)]
        assert nz.numel() == 0 or bool((nz == nz[0]).all())
    assert observers._kl_per_threshold(hist.double().numpy(), levels)[i] == pytest.approx(
        observers.kl_divergence(p, q).item() if h.sum() > 0 else math.inf, rel=1e-12)


def test_entropy_of_zeros_and_nonnegative_data():
    lo, hi = observers.entropy_range(torch.zeros(10), 8)
    assert (lo.item(), hi.item()) == (0.0, 0.0)
    x = torch.relu(_heavy(20_000, seed=6))
    lo, hi = observers.entropy_range(x, 8)
    assert lo.item() == 0.0 and 0 < hi.item() <= x.max().item()


# ----------------------------------------------------------------------------------------------
# the common interface


@pytest.mark.parametrize("name", list(observers.OBSERVERS))
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_every_observer_gives_a_valid_grid(name, bits, device):
    x = _heavy(3000, seed=7).to(device)
    obs = observers.make_observer(name, bits=bits)
    assert not obs.has_data
    for chunk in x.chunk(3):
        assert obs(chunk) is chunk
    lo, hi = obs.range()
    assert lo.device.type == device and lo.dtype == torch.float32
    assert x.min() <= lo <= hi <= x.max()
    scale, zp = obs.qparams()
    assert scale.item() > 0 and obs.qmin <= int(zp) <= obs.qmax
    y = obs.fake_quantize(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("name", list(observers.OBSERVERS))
def test_constant_and_zero_tensors(name):
    for value in (0.0, 2.5, -1.0):
        obs = observers.make_observer(name, bits=4)
        obs(torch.full((50,), value))
        scale, zp = obs.qparams()
        assert torch.isfinite(scale) and scale > 0
        assert torch.allclose(obs.fake_quantize(torch.full((5,), value)), torch.full((5,), value), atol=float(scale) / 2 + 1e-6)


def test_observers_rank_on_a_heavy_tail():
    """Min-max takes the whole range; every other rule clips the tail; at 4 bits MSE has the smallest error."""
    x = _heavy(50_000, seed=8)
    errs = {}
    for name in observers.OBSERVERS:
        obs = observers.make_observer(name, bits=4)
        for chunk in x.chunk(10):
            obs(chunk)
        errs[name] = ((obs.fake_quantize(x) - x) ** 2).mean().item()
    assert min(errs, key=errs.get) == "MSE"
    assert errs["min-max"] > 2 * errs["MSE"]


def test_sample_observer_subsamples():
    obs = observers.PercentileObserver(max_samples=1000, percentile=100)
    for i in range(5):
        obs(torch.arange(600, dtype=torch.float32) + 600 * i)
    assert obs.samples.numel() == 1000
    obs.reset()
    assert not obs.has_data


BAD = [
    (lambda: observers.percentile_range(torch.randn(5), 0), ValueError, "percentile"),
    (lambda: observers.percentile_range(torch.randn(5), 100.5), ValueError, "percentile"),
    (lambda: observers.percentile_range(torch.randn(5), float("nan")), ValueError, "percentile"),
    (lambda: observers.percentile_range(torch.randn(5), "99"), TypeError, "percentile"),
    (lambda: observers.percentile_range(torch.tensor([1.0, float("nan")]), 99), ValueError, "x"),
    (lambda: observers.percentile_range(torch.arange(5), 99), TypeError, "dtype"),
    (lambda: observers.percentile_range(torch.tensor([]), 99), ValueError, "empty"),
    (lambda: observers.mse_range(torch.randn(5), 1), ValueError, "bits"),
    (lambda: observers.mse_range(torch.randn(5), 17), ValueError, "bits"),
    (lambda: observers.mse_range(torch.randn(5), 4, num_candidates=0), ValueError, "num_candidates"),
    (lambda: observers.mse_range(torch.tensor([float("inf")]), 4), ValueError, "finite"),
    (lambda: observers.entropy_range(torch.randn(5), 13, num_bins=2048), ValueError, "num_bins"),
    (lambda: observers.kl_divergence(torch.tensor([1.0, -1.0]), torch.tensor([1.0, 1.0])), ValueError, "non-negative"),
    (lambda: observers.kl_divergence(torch.tensor([1.0]), torch.tensor([1.0, 1.0])), ValueError, "length"),
    (lambda: observers.candidate_distributions(torch.tensor([1.0, -1.0]), 2, 1), ValueError, "hist"),
    (lambda: observers.candidate_distributions(torch.ones(2, 3), 2, 1), ValueError, "hist"),
    (lambda: observers.candidate_distributions(torch.tensor([1, 2]), 2, 1), TypeError, "hist"),
    (lambda: observers.candidate_distributions(torch.tensor([1.0, float("inf")]), 2, 1), ValueError, "hist"),
    (lambda: observers.candidate_distributions(torch.ones(8), 9, 4), ValueError, "i"),
    (lambda: observers.candidate_distributions(torch.ones(8), 3, 4), ValueError, "i"),
    (lambda: observers.candidate_distributions(torch.ones(8), 4.0, 4), TypeError, "i"),
    (lambda: observers.candidate_distributions(torch.ones(8), 4, 0), ValueError, "num_levels"),
    (lambda: observers.MinMaxObserver(bits=0), ValueError, "bits"),
    (lambda: observers.MinMaxObserver(bits=4.0), TypeError, "bits"),
    (lambda: observers.PercentileObserver(percentile=0.0), ValueError, "percentile"),
    (lambda: observers.MovingAverageMinMaxObserver(averaging_constant=0), ValueError, "averaging_constant"),
    (lambda: observers.MinMaxObserver().range(), RuntimeError, "observe"),
    (lambda: observers.EntropyObserver().qparams(), RuntimeError, "observe"),
    (lambda: observers.MSEObserver().fake_quantize(torch.randn(3)), RuntimeError, "observe"),
    (lambda: observers.MinMaxObserver()(torch.tensor([1.0, float("nan")])), ValueError, "finite"),
    (lambda: observers.MinMaxObserver()(torch.tensor([1, 2])), TypeError, "dtype"),
    (lambda: observers.MinMaxObserver()([1.0, 2.0]), TypeError, "Tensor"),
    (lambda: observers.make_observer("max"), ValueError, "name"),
]


@pytest.mark.parametrize("call,exc,word", BAD)
def test_bad_input(call, exc, word):
    with pytest.raises(exc, match=word):
        call()
