"""Notebook 04: observers, the part of post-training quantization that chooses a range.

An observer watches the tensors that flow through one point of a network (calibration) and
then proposes the range ``[lo, hi]`` that the integer grid must cover. Scale and zero point
follow from that range with ``course_lib.affine.compute_scale_zero_point``; this module only
decides the range. Five rules, one interface (:class:`Observer`):

- **min-max** (:class:`MinMaxObserver`): the smallest and largest value ever seen. Nothing is
  clipped; one outlier stretches the grid for everyone. Equals ``torch.ao``'s ``MinMaxObserver``.
- **moving-average min-max** (:class:`MovingAverageMinMaxObserver`): each batch's min and max,
  averaged with ``running += c * (batch - running)``, ``c = 0.01`` (PyTorch's default).
- **percentile** (:class:`PercentileObserver`, :func:`percentile_range`): the ``p``-th and
  ``(100 - p)``-th percentiles; TensorRT's histogram calibrator uses ``p = 99.99``.
- **MSE search** (:class:`MSEObserver`, :func:`mse_range`): shrink the min-max range by
  ``alpha = k / n``, ``k = 1..n``, and keep the ``alpha`` whose fake-quantized values have the
  smallest mean squared error.
- **entropy** (:class:`EntropyObserver`, :func:`entropy_range`): TensorRT's KL calibration: a
  2048-bin histogram of ``|x|``; for each candidate threshold, the clipped histogram ``P`` and its
  re-quantization ``Q`` to the grid's levels (128 for int8, :func:`candidate_distributions`); keep the
  threshold with the smallest ``KL(P || Q)``.

The percentile, MSE and entropy observers need the distribution, not just two numbers. Real
calibrators keep a histogram (constant memory; PyTorch's ``HistogramObserver`` uses 2048 bins);
the course's observers keep the values themselves, up to ``max_samples`` (a uniform random
subsample beyond that), which is exact for the course's small calibration sets and lets the
three rules share one code path with the functions the learner writes.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from . import affine
from .validation import FLOAT_DTYPES, check_bits, check_int, check_tensor

__all__ = [
    "percentile_range",
    "mse_range",
    "entropy_range",
    "kl_divergence",
    "candidate_distributions",
    "Observer",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "PercentileObserver",
    "MSEObserver",
    "EntropyObserver",
    "OBSERVERS",
    "make_observer",
]

#: TensorRT's and PyTorch's histogram calibrators: bins of the histogram.
DEFAULT_BINS = 2048
#: TensorRT's percentile calibrator.
DEFAULT_PERCENTILE = 99.99
#: torch.ao.quantization.MovingAverageMinMaxObserver's default averaging constant.
DEFAULT_AVERAGING_CONSTANT = 0.01


# ----------------------------------------------------------------------------------------------
# checks


def _check_x(x, name: str = "x") -> None:
    check_tensor(x, name, dtypes=FLOAT_DTYPES)


def _check_percentile(percentile) -> float:
    if isinstance(percentile, bool) or not isinstance(percentile, numbers.Real):
        raise TypeError(f"percentile must be a number, got {type(percentile).__name__}")
    p = float(percentile)
    if not (0.0 < p <= 100.0):  # also False for NaN
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    return p


def _check_bool(value, name: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


def _grid(bits: int, symmetric: bool) -> tuple[int, int]:
    """The course's grids: symmetric -> signed codes, asymmetric -> unsigned codes."""
    return affine.qrange(bits, signed=symmetric)


# ----------------------------------------------------------------------------------------------
# the three range rules that need the distribution


def _quantile_sorted(v: torch.Tensor, q: float) -> torch.Tensor:
    """Linear-interpolation quantile of a sorted 1-D float32 tensor, computed as ``torch.quantile`` does
    (the rank ``q * (n - 1)`` in float32, then ``lerp``), without its 2**24-element limit."""
    rank = torch.tensor(q, dtype=torch.float32, device=v.device) * (v.numel() - 1)
    below = torch.floor(rank)
    lo_i = min(int(below), v.numel() - 1)
    hi_i = min(int(torch.ceil(rank)), v.numel() - 1)
    return torch.lerp(v[lo_i], v[hi_i], rank - below)


def percentile_range(x: torch.Tensor, percentile: float = DEFAULT_PERCENTILE) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(100 - p)``-th and ``p``-th percentiles of ``x``: a range that clips the extreme tails.

    Percentiles interpolate linearly between sorted values, as ``torch.quantile`` and
    ``numpy.percentile`` do by default. ``percentile=100`` gives min and max.

    Args:
        x: float tensor (float16, bfloat16, float32 or float64), any shape, not empty, finite.
        percentile: ``p`` in ``(0, 100]``; 99.99 (TensorRT's default) keeps all but 0.01% of each tail.

    Returns:
        ``(lo, hi)``: 0-dim float32 tensors on ``x``'s device, ``lo <= hi``.
    """
    _check_x(x)
    p = _check_percentile(percentile)
    v = x.detach().flatten().to(torch.float32).sort().values
    lo = _quantile_sorted(v, 1.0 - p / 100.0)
    hi = _quantile_sorted(v, p / 100.0)
    return torch.minimum(lo, hi), torch.maximum(lo, hi)


def _candidate_errors(xf: torch.Tensor, lo0: torch.Tensor, hi0: torch.Tensor, num_candidates: int, qmin: int, qmax: int,
                      symmetric: bool, max_elements: int = 1 << 21) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every candidate of ``mse_range`` at once: ``(lo, hi, err)``, each ``[num_candidates]``.

    ``xf``: float32, any shape (its layout is kept). Row ``k - 1`` is the float32 arithmetic of ``affine.compute_scale_zero_point(alpha * lo0, alpha * hi0, ...)`` and
    ``affine.fake_quantize`` for ``alpha = k / num_candidates``, operation for operation, so the errors (float64 means)
    are bit for bit those of a loop over the candidates (``tests/library/test_observers.py`` checks it); the rows go
    through in chunks of at most ``max_elements`` values, which bounds the memory.
    """
    device = xf.device
    alphas = torch.tensor([k / num_candidates for k in range(1, num_candidates + 1)], dtype=torch.float32, device=device)
    lo, hi = lo0 * alphas, hi0 * alphas
    eps = torch.tensor(affine.SCALE_EPS, dtype=torch.float32, device=device)
    if symmetric:
        scale = torch.maximum(torch.maximum(-lo, hi) / ((qmax - qmin) / 2), eps)
        zero_point = torch.full_like(scale, (qmin + qmax + 1) // 2, dtype=torch.int32)
    else:
        scale = torch.maximum((hi - lo) / (qmax - qmin), eps)
        zero_point = (qmin - torch.round(lo / scale)).clamp(qmin, qmax).to(torch.int32)
    # candidates along a new first dimension; x keeps its shape and memory layout, so that each candidate's mean
    # below sums in the order in which the mean of one fake-quantized copy of x sums
    x_b, x64_b = xf.unsqueeze(0), xf.double().unsqueeze(0)
    per_candidate = (-1,) + (1,) * xf.dim()
    err = torch.empty(num_candidates, dtype=torch.float64, device=device)
    rows = max(1, max_elements // max(xf.numel(), 1))
    for start in range(0, num_candidates, rows):
        s, z = scale[start:start + rows].reshape(per_candidate), zero_point[start:start + rows].reshape(per_candidate)
        codes = (torch.round(x_b * (1.0 / s)) + z).clamp(qmin, qmax).to(torch.int32)
        squared = ((codes.to(torch.int64) - z).to(torch.float32) * s).double().sub_(x64_b).pow_(2)
        for i in range(squared.shape[0]):
            err[start + i] = squared[i].mean()
    return lo, hi, err


def mse_range(x: torch.Tensor, bits: int, symmetric: bool = False,
              num_candidates: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """The shrunk min-max range whose fake quantization of ``x`` has the smallest mean squared error.

    Candidates: ``alpha * [lo0, hi0]`` for ``alpha = k / num_candidates``, ``k = 1 .. num_candidates``,
    where ``[lo0, hi0] = [min(x.min(), 0), max(x.max(), 0)]``. Each candidate is scored by
    ``mean((fake_quantize(x) - x)**2)`` computed in float64, with the grid ``qrange(bits, signed=symmetric)``
    and ``compute_scale_zero_point(lo, hi, qmin, qmax, symmetric)``. Ties go to the smallest ``k``.
    (All candidates are scored in one batched computation, with the same float32 arithmetic as those calls.)

    Args:
        x: float tensor, any shape, not empty, finite.
        bits: 2 to 16.
        symmetric: symmetric signed grid, or asymmetric unsigned grid.
        num_candidates: how many ``alpha`` values to try (>= 1).

    Returns:
        ``(lo, hi)``: 0-dim float32 tensors on ``x``'s device: ``alpha * lo0`` and ``alpha * hi0``.
    """
    _check_x(x)
    check_bits(bits, "bits", low=2, high=16)
    _check_bool(symmetric, "symmetric")
    check_int(num_candidates, "num_candidates", low=1)
    qmin, qmax = _grid(bits, symmetric)
    xf = x.detach().to(torch.float32)
    zero = torch.zeros((), dtype=torch.float32, device=x.device)
    lo0, hi0 = torch.minimum(xf.min(), zero), torch.maximum(xf.max(), zero)
    lo, hi, err = _candidate_errors(xf, lo0, hi0, num_candidates, qmin, qmax, symmetric)
    k = int(torch.nonzero(err == err.min())[0, 0])  # the first smallest: ties go to the smallest k
    return lo[k], hi[k]


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``KL(P || Q) = sum_i P_i log(P_i / Q_i)`` of two histograms, each normalized to sum 1 first.

    Terms with ``P_i = 0`` are 0; a bin with ``P_i > 0`` and ``Q_i = 0`` makes the divergence infinite.

    Args:
        p, q: 1-D non-negative float tensors of the same length with positive sums.

    Returns:
        A 0-dim float64 tensor (in nats).
    """
    for name, t in (("p", p), ("q", q)):
        check_tensor(t, name, dtypes=FLOAT_DTYPES, ndim=1)
        if bool((t < 0).any()):
            raise ValueError(f"{name} must be non-negative (a histogram)")
        if not bool(t.sum() > 0):
            raise ValueError(f"{name} must have a positive sum")
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same length, got {tuple(p.shape)} and {tuple(q.shape)}")
    p64, q64 = p.double() / p.double().sum(), q.to(p.device).double() / q.double().sum()
    nz = p64 > 0
    if bool((q64[nz] == 0).any()):
        return torch.tensor(float("inf"), dtype=torch.float64, device=p.device)
    return (p64[nz] * torch.log(p64[nz] / q64[nz])).sum()


def candidate_distributions(hist: torch.Tensor, i: int, num_levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy calibration's two histograms for one candidate threshold (TensorRT's KL calibration).

    ``hist`` holds the counts ``h_0 .. h_{n-1}`` of ``|x|`` in ``n`` equal bins; the candidate threshold is
    the upper edge of bin ``i - 1``; the grid has ``L = num_levels`` levels.

    - ``P`` (what clipping keeps): ``P_j = h_j`` for ``j < i - 1`` and ``P_{i-1} = h_{i-1} + sum_{k >= i} h_k``
      (clipping moves every value beyond the threshold onto it).
    - ``Q`` (what the grid keeps): bin ``j < i`` belongs to chunk ``c(j) = floor(j * L / i)``; each chunk's mass
      ``m_c = sum_{j < i, c(j) = c} h_j`` (the clipped tail not included) is spread evenly over the chunk's
      non-empty bins: ``Q_j = m_{c(j)} / #{k < i: c(k) = c(j), h_k > 0}`` where ``h_j > 0``, else ``Q_j = 0``.

    :func:`entropy_range` scores every candidate ``i`` by ``kl_divergence(P, Q)``.

    Args:
        hist: 1-D float tensor of non-negative, finite counts (length ``n``).
        i: the number of bins kept, ``num_levels <= i <= n``.
        num_levels: ``L >= 1``, the grid's levels on this side of 0 (128 for int8 on signed data).

    Returns:
        ``(P, Q)``: float64 tensors of length ``i`` on ``hist``'s device, not normalized.
    """
    check_tensor(hist, "hist", dtypes=FLOAT_DTYPES, ndim=1)
    if bool((hist < 0).any()):
        raise ValueError("hist must hold non-negative counts (a histogram)")
    check_int(num_levels, "num_levels", low=1)
    check_int(i, "i", low=num_levels, high=hist.shape[0])
    p, q = _candidate_pq(hist.detach().double().cpu().numpy(), i, num_levels)
    return torch.from_numpy(p).to(hist.device), torch.from_numpy(q).to(hist.device)


def _candidate_pq(hist: np.ndarray, i: int, num_levels: int) -> tuple[np.ndarray, np.ndarray]:
    """``candidate_distributions`` on a float64 NumPy histogram, unchecked (entropy_range calls it ~2000 times)."""
    h = hist[:i]
    p = h.copy()
    p[-1] += hist[i:].sum()  # the clipped tail lands in the last bin, as clipping does
    chunk = (np.arange(i) * num_levels) // i  # which of the num_levels quantized bins each bin falls in
    nonzero = h > 0
    mass = np.bincount(chunk, weights=h, minlength=num_levels)
    count = np.bincount(chunk, weights=nonzero, minlength=num_levels)
    q = np.where(nonzero, mass[chunk] / np.maximum(count[chunk], 1), 0.0)  # spread over the non-empty bins
    return p, q


def _kl_per_threshold(hist: np.ndarray, num_levels: int) -> np.ndarray:
    """KL(P_i || Q_i) for every candidate threshold bin i = num_levels .. len(hist) (NumPy, float64)."""
    n = len(hist)
    out = np.full(n + 1, np.inf)
    for i in range(num_levels, n + 1):
        p, q = _candidate_pq(hist, i, num_levels)
        p_sum, q_sum = p.sum(), q.sum()
        if p_sum <= 0 or q_sum <= 0:
            continue
        pn, qn = p / p_sum, q / q_sum
        m = pn > 0
        if np.any(qn[m] == 0):
            continue  # infinite divergence: P has mass where Q has none
        out[i] = float(np.sum(pn[m] * np.log(pn[m] / qn[m])))
    return out


def entropy_range(x: torch.Tensor, bits: int = 8, num_bins: int = DEFAULT_BINS) -> tuple[torch.Tensor, torch.Tensor]:
    """TensorRT's entropy (KL) calibration: the clipping threshold that keeps a histogram's information.

    1. Histogram ``|x|`` over ``[0, max|x|]`` with ``num_bins`` bins (exact zeros are left out: 0 is
       always a code, so zeros, e.g. half of a ReLU's outputs, say nothing about the threshold).
    2. ``num_levels = 2**(bits-1)`` positive levels when ``x`` has negative values (a signed symmetric
       grid: 128 for int8, as TensorRT), ``2**bits`` when ``x >= 0`` (an unsigned grid).
    3. For each candidate threshold bin ``i = num_levels .. num_bins``: ``P`` = the first ``i`` bins with
       everything beyond added to bin ``i - 1`` (what clipping does); ``Q`` = those ``i`` bins merged into
       ``num_levels`` equal chunks, each chunk's mass spread evenly over its non-empty bins (what
       quantizing to ``num_levels`` levels keeps). Keep the ``i`` with the smallest ``KL(P || Q)``
       (the largest ``i`` on ties) and the threshold ``T`` = the upper edge of bin ``i - 1``.

    Args:
        x: float tensor, any shape, not empty, finite.
        bits: 2 to 16 (``num_levels`` must not exceed ``num_bins``).
        num_bins: bins of the histogram (TensorRT and PyTorch: 2048).

    Returns:
        ``(lo, hi)``: 0-dim float32 tensors on ``x``'s device: ``[max(x.min(), -T), min(x.max(), T)]``.
        An all-zero ``x`` gives ``(0, 0)``.
    """
    _check_x(x)
    check_bits(bits, "bits", low=2, high=16)
    check_int(num_bins, "num_bins", low=2)
    xf = x.detach().to(torch.float32)
    x_min, x_max = xf.min(), xf.max()
    signed = bool(x_min < 0)
    num_levels = 2 ** (bits - 1) if signed else 2**bits
    if num_levels > num_bins:
        raise ValueError(f"num_bins must be at least the grid's {num_levels} levels for bits={bits}, got {num_bins}")
    a = xf.abs().flatten()
    amax = float(a.max())
    a = a[a > 0]
    if a.numel() == 0:
        return x_min.clone(), x_max.clone()
    hist = torch.histc(a.cpu(), bins=num_bins, min=0.0, max=amax).double().numpy()
    kl = _kl_per_threshold(hist, num_levels)
    if not np.isfinite(kl).any():
        threshold = amax
    else:
        best = int(len(kl) - 1 - np.argmin(kl[::-1]))  # the largest i among the minima
        threshold = amax * best / num_bins
    t = torch.tensor(threshold, dtype=torch.float32, device=x.device)
    return torch.maximum(x_min, -t), torch.minimum(x_max, t)


# ----------------------------------------------------------------------------------------------
# observers: one interface


class Observer:
    """Watch tensors during calibration, then propose a range, a scale and a zero point.

    Usage::

        obs = MinMaxObserver(bits=8)
        for batch in calibration_batches:
            obs(batch)                       # or obs.observe(batch); returns the batch unchanged
        scale, zero_point = obs.qparams()
        x_hat = obs.fake_quantize(x)

    Args:
        bits: 2 to 16.
        symmetric: symmetric grid on signed codes ``qrange(bits, signed=True)`` (e.g. weights), or
            asymmetric grid on unsigned codes ``qrange(bits, signed=False)`` (e.g. activations).

    Subclasses implement ``_update(x)`` (float32, detached) and ``_range()``.
    """

    name = "observer"

    def __init__(self, bits: int = 8, symmetric: bool = False):
        check_bits(bits, "bits", low=2, high=16)
        _check_bool(symmetric, "symmetric")
        self.bits = bits
        self.symmetric = symmetric
        self.qmin, self.qmax = _grid(bits, symmetric)
        self.num_observed = 0  # batches seen

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bits={self.bits}, symmetric={self.symmetric})"

    @property
    def has_data(self) -> bool:
        return self.num_observed > 0

    def observe(self, x: torch.Tensor) -> torch.Tensor:
        """Record a batch (any shape, float, finite, not empty); returns ``x`` unchanged."""
        _check_x(x)
        self._update(x.detach().to(torch.float32))
        self.num_observed += 1
        return x

    __call__ = observe

    def _require_data(self) -> None:
        if not self.has_data:
            raise RuntimeError(f"{type(self).__name__} has not observed any data yet: call observe(x) "
                               "on calibration batches before asking for its range")

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The range ``(lo, hi)`` the grid should cover: 0-dim float32 tensors, ``lo <= hi``."""
        self._require_data()
        return self._range()

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale, zero_point)`` for the range: ``affine.compute_scale_zero_point`` on this grid."""
        lo, hi = self.range()
        return affine.compute_scale_zero_point(lo, hi, self.qmin, self.qmax, symmetric=self.symmetric)

    def fake_quantize(self, x: torch.Tensor) -> torch.Tensor:
        """``affine.fake_quantize`` of ``x`` with this observer's scale and zero point (float32)."""
        scale, zp = self.qparams()
        return affine.fake_quantize(x, scale, zp, self.qmin, self.qmax)

    def reset(self) -> None:
        """Forget everything observed."""
        self.num_observed = 0

    # subclasses
    def _update(self, x: torch.Tensor) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _range(self):  # pragma: no cover - abstract
        raise NotImplementedError


class MinMaxObserver(Observer):
    """The smallest and largest value ever observed (``torch.ao.quantization.MinMaxObserver``)."""

    name = "min-max"

    def reset(self) -> None:
        super().reset()
        self.min_val = self.max_val = None

    def __init__(self, bits: int = 8, symmetric: bool = False):
        super().__init__(bits, symmetric)
        self.reset()

    def _update(self, x):
        lo, hi = x.min(), x.max()
        if self.min_val is None:
            self.min_val, self.max_val = lo, hi
        else:
            self.min_val, self.max_val = torch.minimum(self.min_val, lo), torch.maximum(self.max_val, hi)

    def _range(self):
        return self.min_val.clone(), self.max_val.clone()


class MovingAverageMinMaxObserver(MinMaxObserver):
    """Exponential moving average of each batch's min and max (``torch.ao``'s, same update rule).

    The first batch sets the range; each later batch moves it by
    ``running += averaging_constant * (batch_value - running)``.
    """

    name = "moving average"

    def __init__(self, bits: int = 8, symmetric: bool = False,
                 averaging_constant: float = DEFAULT_AVERAGING_CONSTANT):
        super().__init__(bits, symmetric)
        if isinstance(averaging_constant, bool) or not isinstance(averaging_constant, numbers.Real):
            raise TypeError(f"averaging_constant must be a number, got {type(averaging_constant).__name__}")
        if not 0.0 < float(averaging_constant) <= 1.0:
            raise ValueError(f"averaging_constant must be in (0, 1], got {averaging_constant}")
        self.averaging_constant = float(averaging_constant)

    def _update(self, x):
        lo, hi = x.min(), x.max()
        if self.min_val is None:
            self.min_val, self.max_val = lo, hi
        else:
            c = self.averaging_constant
            self.min_val = self.min_val + c * (lo - self.min_val)
            self.max_val = self.max_val + c * (hi - self.max_val)


class _SampleObserver(Observer):
    """Keeps the observed values (a uniform subsample of at most ``max_samples``) for a range rule."""

    def __init__(self, bits: int = 8, symmetric: bool = False, max_samples: int = 2**20, seed: int = 0):
        super().__init__(bits, symmetric)
        check_int(max_samples, "max_samples", low=1)
        check_int(seed, "seed")
        self.max_samples = max_samples
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        super().reset()
        self._chunks: list[torch.Tensor] = []
        self._seen = 0  # values seen in all
        self._gen = torch.Generator().manual_seed(getattr(self, "seed", 0))

    def _update(self, x):
        v = x.flatten()
        self._seen += v.numel()
        self._chunks.append(v.clone())
        kept = sum(c.numel() for c in self._chunks)
        if kept > self.max_samples:  # keep a uniform random subsample, each value with equal weight
            allv = torch.cat(self._chunks)
            idx = torch.randperm(allv.numel(), generator=self._gen)[: self.max_samples].to(allv.device)
            self._chunks = [allv[idx]]

    @property
    def samples(self) -> torch.Tensor:
        """The kept values, 1-D float32."""
        self._require_data()
        if len(self._chunks) > 1:
            self._chunks = [torch.cat(self._chunks)]
        return self._chunks[0]


class PercentileObserver(_SampleObserver):
    """``percentile_range`` of everything observed (TensorRT: ``percentile=99.99``)."""

    name = "percentile"

    def __init__(self, bits: int = 8, symmetric: bool = False, percentile: float = DEFAULT_PERCENTILE,
                 max_samples: int = 2**20, seed: int = 0):
        super().__init__(bits, symmetric, max_samples, seed)
        self.percentile = _check_percentile(percentile)

    def _range(self):
        return percentile_range(self.samples, self.percentile)


class MSEObserver(_SampleObserver):
    """``mse_range`` of everything observed, for this observer's bits and grid."""

    name = "MSE"

    def __init__(self, bits: int = 8, symmetric: bool = False, num_candidates: int = 100,
                 max_samples: int = 2**20, seed: int = 0):
        super().__init__(bits, symmetric, max_samples, seed)
        check_int(num_candidates, "num_candidates", low=1)
        self.num_candidates = num_candidates

    def _range(self):
        return mse_range(self.samples, self.bits, self.symmetric, self.num_candidates)


class EntropyObserver(_SampleObserver):
    """``entropy_range`` (KL calibration over a ``num_bins`` histogram) of everything observed."""

    name = "entropy"

    def __init__(self, bits: int = 8, symmetric: bool = False, num_bins: int = DEFAULT_BINS,
                 max_samples: int = 2**20, seed: int = 0):
        super().__init__(bits, symmetric, max_samples, seed)
        check_int(num_bins, "num_bins", low=2)
        self.num_bins = num_bins

    def _range(self):
        return entropy_range(self.samples, self.bits, self.num_bins)


#: Observer classes by the short names the notebook's tables use.
OBSERVERS = {
    "min-max": MinMaxObserver,
    "moving average": MovingAverageMinMaxObserver,
    "percentile": PercentileObserver,
    "MSE": MSEObserver,
    "entropy": EntropyObserver,
}


def make_observer(name: str, bits: int = 8, symmetric: bool = False, **kwargs) -> Observer:
    """A new observer by name (a key of ``OBSERVERS``), e.g. ``make_observer("MSE", bits=4)``.

    Args:
        name: a key of ``OBSERVERS`` (e.g. ``"min-max"``, ``"MSE"``).
        bits: code width of the grid the observer chooses a range for.
        symmetric: symmetric (signed, zero point 0) or asymmetric grid.
        **kwargs: passed on to the observer's class (e.g. a percentile).

    Returns:
        Observer: a fresh instance, with nothing observed yet.
    """
    if name not in OBSERVERS:
        raise ValueError(f"name must be one of {sorted(OBSERVERS)}, got {name!r}")
    return OBSERVERS[name](bits=bits, symmetric=symmetric, **kwargs)
