"""Notebook 09: HQQ, half-quadratic quantization of weights without calibration data.

HQQ (Badri & Shaji, Mobius Labs 2023; the ``hqq`` package, ``hqq/core/optimize.py``) keeps the
round-to-nearest grid of every group of weights and moves only its **zero point**, so that the
dequantized weights fit the originals in an ``l_p`` sense with ``p < 1`` (heavy-tailed errors
cost little, which lets the zero point ignore outliers). It needs no data: only the weights.

The problem, per group ``W`` with inverse scale ``s`` (fixed) and zero point ``z``:

    min_z  || W - Q_z^{-1}(Q_z(W)) ||_p^p,   Q_z(W) = clamp(round(W * s + z), 0, 2**bits - 1),
                                             Q_z^{-1}(q) = (q - z) / s.

Half-quadratic splitting introduces ``W_e`` (the error, made sparse by the l_p prox) and alternates

    W_e <- shrink_lp(W - Q_z^{-1}(Q_z(W)), beta, p)      (approximately the l_p proximal step)
    z   <- mean(Q_z(W) - (W - W_e) * s)         over each group         (closed-form least squares)
    beta <- beta * kappa                                                  (the penalty grows)

with ``p = 0.7``, ``beta = 10``, ``kappa = 1.01`` (the HQQ write-up's values and the package's
``opt_params``), 20 iterations and early stopping on the mean absolute error.
``shrink_lp(x) = sign(x) * relu(|x| - |x|**(p - 1) / beta)``. For ``p = 1`` it is the proximal step
of ``|e| / beta`` (soft-thresholding). For ``p < 1`` the proximal step of ``|e|**p / beta`` has no
closed form: it solves ``e = x - (p / beta) * |e|**(p - 1) * sign(e)``; ``shrink_lp`` is one
fixed-point step of that equation started at ``e = x``, with the factor ``p`` absorbed into ``beta``.

Conventions, each the ``hqq`` package's (0.2.8), so that the pieces can be compared bit for bit on
the CPU:

- **Groups** are ``group_size`` consecutive weights along ``in_features`` (the package's ``axis=1``,
  the default of ``hqq_base_quant_config`` and of ``HQQLinear``): ``W.reshape(-1, group_size)``;
  ``group_size=None`` is one group per output channel (row).
- **The scale is stored inverted** while optimizing: ``inv_scale = (2**bits - 1) / (max - min)``
  (codes per unit of weight), quantize with ``round(W * inv_scale + zero)``; the step
  ``1 / inv_scale`` is what the package stores for dequantization, ``(q - zero) * step``.
  A group whose range is at most ``1e-4`` gets ``inv_scale = 1`` (no division by ~0), and
  ``inv_scale`` is clamped to at most ``2e4`` (fp16-safe).
- **The range is the group's min and max**, not widened to contain 0, and **the zero point is a
  float** (``-min * inv_scale``, then optimized): 0 is generally not exactly representable.
  ``round_zero=True`` rounds the *initial* zero point (``hqq_base_quant_config`` does so at 4 bits).
- **The zero point is added before rounding** (``round(W * s + z)``, z fractional).
- All arithmetic is float32 on every device (the package uses float16 on CUDA).

What is bit for bit the package's (``tests/library/test_hqq.py``): ``shrink_lp`` (its ``shrink_lp_op``),
the min-max initialisation (its ``Quantizer.quantize`` with ``optimize=False``: scale, zero and
codes), and one update with the same ``beta`` (its ``optimize_weights_proximal_legacy_step``).

Where the whole solver differs from the package's default one (``optimize_weights_proximal_legacy``,
what ``Quantizer.quantize(optimize=True)`` and ``HQQLinear`` run):

- **beta**: the package keeps ``beta`` constant and never reads ``kappa``; this module multiplies
  ``beta`` by ``kappa`` after every update (as the package's ``optimize_weights_proximal_v2`` does).
  With ``kappa=1`` the two follow the same trajectory. With the defaults on weights of a trained
  LM's size (standard deviation about 0.02) the shrinkage is inactive (its threshold
  ``beta**(-1 / (2 - p))``, 0.17, is above every error), so ``kappa`` changes nothing there.
- **early stopping**: the package evaluates ``z_i``, computes ``z_(i+1)``, and when ``z_i`` is not
  better than the best so far it stops and returns ``z_(i+1)``, which it never evaluated; after
  all 20 updates it returns ``z_20``, also never evaluated. Here every candidate (``z_0`` = the
  min-max start, then one per update) is evaluated and the best is returned, so the error is
  never above the start's (RTN on the same grid).

Measured on the 54 cases of ``tests/library/test_hqq.py`` (2, 3 and 4 bits, per row and groups of 64,
LM-scale and unit-scale weights; float32, CPU): with ``kappa=1`` the result equals the package's bit
for bit in 46, and always when the error falls at every one of the 20 updates; of the other 8 the
course's mean absolute error is lower in 4, equal in 2 and higher in 2, by at most 1.3e-5 relative
(where the package's unevaluated zero point happened to be better). With ``kappa=1.01`` on
unit-scale weights, where the shrinkage acts, the trajectories differ: the course's error is up to
1.6% above the package's or 0.3% below it. There the two are different solvers.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import nn

from .validation import FLOAT_DTYPES, check_bits, check_divides, check_int, check_module, check_tensor

__all__ = [
    "DEFAULTS",
    "shrink_lp",
    "group_weight",
    "init_scale_zero",
    "quantize_codes",
    "dequantize_codes",
    "optimize_zero_point",
    "hqq_quantize",
    "hqq_quantize_weight",
    "quantize_model_hqq",
    "package_available",
    "package_quantize_weight",
]

#: The package's defaults (hqq/core/optimize.py and hqq_base_quant_config).
DEFAULTS = {"bits": 4, "group_size": 64, "iters": 20, "lp_norm": 0.7, "beta": 10.0, "kappa": 1.01}
#: Bit widths the course's HQQ accepts (the package also has 1.58 "ternary", left out here).
MIN_BITS, MAX_BITS = 1, 8
#: A group whose max - min is at most this gets inv_scale 1 (the package's rule).
MIN_RANGE = 1e-4
#: Largest inverse scale (the package's clamp, safe in float16).
MAX_INV_SCALE = 2e4


# ----------------------------------------------------------------------------------------------
# argument checks


def _check_real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _check_hyper(lp_norm, beta, kappa=None) -> tuple[float, float, float | None]:
    p = _check_real(lp_norm, "lp_norm")
    if not 0.0 < p <= 1.0:
        raise ValueError(f"lp_norm must be in (0, 1], got {p}")
    b = _check_real(beta, "beta")
    if b <= 0.0:
        raise ValueError(f"beta must be > 0, got {b}")
    k = None
    if kappa is not None:
        k = _check_real(kappa, "kappa")
        if k < 1.0:
            raise ValueError(f"kappa must be >= 1 (beta never shrinks), got {k}")
    return p, b, k


def _check_grouped(W: torch.Tensor, name: str = "W") -> None:
    check_tensor(W, name, dtypes=FLOAT_DTYPES, ndim=2)


def _check_params(W: torch.Tensor, inv_scale: torch.Tensor, zero: torch.Tensor) -> None:
    shape = (W.shape[0], 1)
    for name, t in (("inv_scale", inv_scale), ("zero", zero)):
        check_tensor(t, name, dtypes=FLOAT_DTYPES, ndim=2)
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} (one value per group), got {tuple(t.shape)}")
        if t.device != W.device:
            raise ValueError(f"{name} is on {t.device} but W is on {W.device}: move them to one device")
    if not bool((inv_scale > 0).all()):
        raise ValueError("inv_scale must be positive everywhere")


# ----------------------------------------------------------------------------------------------
# the pieces


def shrink_lp(x: torch.Tensor, beta: float, lp_norm: float = 0.7) -> torch.Tensor:
    """The generalized soft-thresholding operator, HQQ's stand-in for the proximal step of ``|x|**p / beta``.

    ``sign(x) * relu(|x| - |x|**(p - 1) / beta)``, elementwise. For ``p = 1`` it is the proximal step
    itself, soft-thresholding (every value moves ``1 / beta`` towards 0, small ones become 0); for
    ``p < 1`` it is one fixed-point step of the proximal step's optimality condition
    ``e = x - (p / beta) |e|**(p - 1) sign(e)``, started at ``e = x``, with ``p`` absorbed into ``beta``; for
    ``p < 1`` small values are thresholded harder and large values are shrunk less (``|x|**(p-1)``
    decreases with ``|x|``). ``x = 0`` gives 0 (not NaN).

    Args:
        x: float tensor, any shape, finite.
        beta: the penalty weight, > 0 (the threshold scales like ``1 / beta``).
        lp_norm: ``p`` in (0, 1].

    Returns:
        A tensor of ``x``'s shape, dtype and device.
    """
    check_tensor(x, "x", dtypes=FLOAT_DTYPES, allow_empty=True)
    p, b, _ = _check_hyper(lp_norm, beta)
    out = torch.abs(x)
    if p == 1.0:
        out = (out - 1.0 / b).clamp_min(0.0)
    else:
        out = (out - (1.0 / b) * out.pow(p - 1)).clamp_min(0.0)
    return out * torch.sign(x)


def group_weight(W: torch.Tensor, group_size: int | None = 64) -> torch.Tensor:
    """``[out, in]`` -> ``[out * in // group_size, group_size]`` float32: one group per row.

    ``group_size=None`` keeps ``[out, in]`` (one group per output channel). Groups are consecutive
    weights along ``in_features`` (the ``hqq`` package's ``axis=1``).

    Args:
        W: weight ``[out, in]``.
        group_size: a divisor of ``in``, or None for one group per output channel.

    Returns:
        torch.Tensor: float32 ``[n_groups, group_size]``.
    """
    check_tensor(W, "W", dtypes=FLOAT_DTYPES, ndim=2)
    if group_size is None:
        return W.detach().to(torch.float32)
    check_divides(W.shape[1], group_size, size_name="W.shape[1] (in_features)", group_name="group_size")
    return W.detach().to(torch.float32).reshape(-1, group_size)


def init_scale_zero(W: torch.Tensor, bits: int, round_zero: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max initialisation of every group, in HQQ's convention (inverse scale, float zero point).

    ``inv_scale = (2**bits - 1) / (max - min)``, or 1 where ``max - min <= 1e-4``, then clamped to at
    most ``2e4``; ``zero = -min * inv_scale`` (rounded when ``round_zero``). With these,
    ``round(W * inv_scale + zero)`` maps each group's min to code 0 and its max to code ``2**bits - 1``.

    Args:
        W: grouped weights ``[n_groups, group_size]`` (see ``group_weight``), float, finite.
        bits: 1 to 8.
        round_zero: round the zero point to an integer (the package does this at 4 bits in
            ``hqq_base_quant_config``; the optimizer makes it fractional again).

    Returns:
        (inv_scale, zero): float32 tensors ``[n_groups, 1]`` on ``W``'s device.
    """
    _check_grouped(W)
    check_bits(bits, "bits", low=MIN_BITS, high=MAX_BITS)
    if not isinstance(round_zero, bool):
        raise TypeError(f"round_zero must be a bool, got {type(round_zero).__name__}")
    W = W.to(torch.float32)
    w_min = W.min(dim=1, keepdim=True)[0]
    w_max = W.max(dim=1, keepdim=True)[0]
    denom = w_max - w_min
    inv_scale = (2**bits - 1) / denom
    inv_scale = torch.where(denom.abs() <= MIN_RANGE, torch.ones_like(inv_scale), inv_scale)
    inv_scale = inv_scale.clamp(max=MAX_INV_SCALE)
    zero = -w_min * inv_scale
    if round_zero:
        zero = torch.round(zero)
    return inv_scale, zero


def quantize_codes(W: torch.Tensor, inv_scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes ``clamp(round(W * inv_scale + zero), 0, 2**bits - 1)`` as float32 (exact small integers).

    Args:
        W: grouped weights ``[n_groups, group_size]``.
        inv_scale, zero: ``[n_groups, 1]`` (float; ``zero`` may be fractional).
        bits: 1 to 8.

    Returns:
        torch.Tensor: float32 codes, ``W``'s shape.
    """
    _check_grouped(W)
    check_bits(bits, "bits", low=MIN_BITS, high=MAX_BITS)
    _check_params(W, inv_scale, zero)
    return torch.round(W.to(torch.float32) * inv_scale.float() + zero.float()).clamp(0, 2**bits - 1)


def dequantize_codes(q: torch.Tensor, inv_scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """Float32 weights ``(q - zero) * (1 / inv_scale)``, the package's stored-step dequantization.

    Args:
        q: codes ``[n_groups, group_size]`` (from ``quantize_codes``).
        inv_scale, zero: ``[n_groups, 1]``.

    Returns:
        torch.Tensor: float32, ``q``'s shape.
    """
    check_tensor(q, "q", ndim=2)
    _check_params(q, inv_scale, zero)
    return (q.to(torch.float32) - zero.float()) * (1.0 / inv_scale.float())


def _error(W: torch.Tensor, W_r: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over all groups (the package's early-stopping criterion), float32 0-dim."""
    return torch.abs(W - W_r).mean().float()


def optimize_zero_point(W: torch.Tensor, inv_scale: torch.Tensor, zero: torch.Tensor, bits: int, *,
                        iters: int = 20, lp_norm: float = 0.7, beta: float = 10.0, kappa: float = 1.01,
                        early_stop: bool = True) -> tuple[torch.Tensor, list[float]]:
    """HQQ's half-quadratic solver: the zero points that minimize the l_p error, scales fixed.

    Starting from ``z = zero``, for ``i = 0, 1, ..., iters``:

    1. ``q = clamp(round(W * s + z), 0, 2**bits - 1)``, ``W_r = (q - z) / s``,
       ``err = mean|W - W_r|`` over all groups (float32); append ``err.item()`` to the history;
    2. keep ``z`` if ``err`` is the lowest so far; otherwise stop if ``early_stop``;
    3. if ``i < iters``: ``W_e = shrink_lp(W - W_r, beta, lp_norm)``,
       ``z = mean(q - (W - W_e) * s)`` along each group (``keepdim``), ``beta = beta * kappa``.

    So at most ``iters`` updates and ``iters + 1`` evaluations; ``iters=0`` returns ``zero``.

    Args:
        W: grouped weights ``[n_groups, group_size]``, float, finite.
        inv_scale: ``[n_groups, 1]``, positive (from ``init_scale_zero``); never changed.
        zero: ``[n_groups, 1]`` float, the starting zero points.
        bits: 1 to 8.
        iters: number of updates, >= 0 (package: 20).
        lp_norm: p in (0, 1] (package: 0.7).
        beta: initial penalty, > 0 (package: 10).
        kappa: beta's growth per update, >= 1 (package: 1.01).
        early_stop: stop at the first evaluation that does not improve.

    Returns:
        (best_zero, errors): float32 ``[n_groups, 1]`` on ``W``'s device, and the list of the
        mean absolute errors (Python floats) of every evaluated zero point, ``errors[0]`` being
        the starting one. ``best_zero`` is the evaluated zero point with the smallest error, so
        the result is never worse than the start.
    """
    _check_grouped(W)
    check_bits(bits, "bits", low=MIN_BITS, high=MAX_BITS)
    _check_params(W, inv_scale, zero)
    check_int(iters, "iters", low=0)
    p, beta, kappa = _check_hyper(lp_norm, beta, kappa)
    if not isinstance(early_stop, bool):
        raise TypeError(f"early_stop must be a bool, got {type(early_stop).__name__}")
    W = W.to(torch.float32)
    s, z = inv_scale.to(torch.float32), zero.to(torch.float32)
    qmax = 2**bits - 1
    best_err, best_z = None, z
    errors: list[float] = []
    for i in range(iters + 1):
        q = torch.round(W * s + z).clamp(0, qmax)
        W_r = (q - z) / s
        err = _error(W, W_r)
        errors.append(err.item())
        if best_err is None or bool(err < best_err):
            best_err, best_z = err, z
        elif early_stop:
            break
        if i < iters:
            W_e = shrink_lp(W - W_r, beta, p)
            z = torch.mean(q - (W - W_e) * s, dim=1, keepdim=True)
            beta *= kappa
    return best_z, errors


def hqq_quantize(W: torch.Tensor, bits: int = 4, group_size: int | None = 64, *, iters: int = 20,
                 lp_norm: float = 0.7, beta: float = 10.0, kappa: float = 1.01, early_stop: bool = True,
                 round_zero: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """HQQ-quantize a weight matrix: codes, inverse scales and optimized zero points.

    Args:
        W: float weight ``[out_features, in_features]``, finite.
        bits: 1 to 8.
        group_size: a positive divisor of ``in_features``, or None for one group per output channel.
        iters, lp_norm, beta, kappa, early_stop: see ``optimize_zero_point``.
        round_zero: round the initial zero point (see ``init_scale_zero``).

    Returns:
        (q, inv_scale, zero): codes ``[n_groups, group]`` as uint8, and float32 ``[n_groups, 1]``
        (``n_groups = out * in // group_size``). Dequantize with ``dequantize_codes`` and reshape.
    """
    Wg = group_weight(W, group_size)
    inv_scale, zero = init_scale_zero(Wg, bits, round_zero)
    zero, _ = optimize_zero_point(Wg, inv_scale, zero, bits, iters=iters, lp_norm=lp_norm, beta=beta,
                                  kappa=kappa, early_stop=early_stop)
    q = quantize_codes(Wg, inv_scale, zero, bits)
    return q.to(torch.uint8), inv_scale, zero


def hqq_quantize_weight(W: torch.Tensor, bits: int = 4, group_size: int | None = 64, *, iters: int = 20,
                        lp_norm: float = 0.7, beta: float = 10.0, kappa: float = 1.01,
                        early_stop: bool = True) -> torch.Tensor:
    """HQQ quantize-dequantize of a weight matrix ("fake" quantization), in ``W``'s shape and dtype.

    group -> min-max init (``init_scale_zero``) -> ``optimize_zero_point`` -> codes -> dequantize
    with the stored step ``(q - zero) * (1 / inv_scale)`` -> ``[out, in]``.

    Args:
        W: float weight ``[out_features, in_features]``, finite.
        bits: 1 to 8.
        group_size: a positive divisor of ``in_features`` (package default 64), or None for one
            group per output channel.
        iters, lp_norm, beta, kappa, early_stop: see ``optimize_zero_point``.

    Returns:
        The dequantized weight, shape and dtype of ``W``, on ``W``'s device.
    """
    q, inv_scale, zero = hqq_quantize(W, bits, group_size, iters=iters, lp_norm=lp_norm, beta=beta,
                                      kappa=kappa, early_stop=early_stop)
    return dequantize_codes(q, inv_scale, zero).reshape(W.shape).to(W.dtype)


def quantize_model_hqq(model: nn.Module, tokenizer=None, bits: int = 4, group_size: int | None = 64, *,
                       iters: int = 20, lp_norm: float = 0.7, beta: float = 10.0, kappa: float = 1.01,
                       progress: bool = True, skip: Sequence[str] = ("lm_head",)) -> nn.Module:
    """HQQ-quantize every Linear weight of a model in place (no calibration data).

    Args:
        model: any ``nn.Module`` (a transformers causal LM in the course).
        tokenizer: unused (HQQ needs no data); kept for the signature shared with GPTQ and AWQ.
        bits: 1 to 8.
        group_size: a divisor of every quantized layer's ``in_features``, or None (per output channel).
        iters, lp_norm, beta, kappa: see ``optimize_zero_point``.
        progress: show a progress bar over the layers.
        skip: layer names (or suffixes) to keep in float (``lm_head`` as in the other methods).

    Returns:
        The model, its Linear weights replaced by their HQQ-dequantized values.
    """
    check_module(model, "model")
    from .lm_quant import quantize_linear_weights

    check_bits(bits, "bits", low=MIN_BITS, high=MAX_BITS)
    if group_size is not None:
        check_int(group_size, "group_size", low=1)
    _check_hyper(lp_norm, beta, kappa)
    check_int(iters, "iters", low=0)
    return quantize_linear_weights(
        model, lambda _name, lin: hqq_quantize_weight(lin.weight.data, bits, group_size, iters=iters,
                                                      lp_norm=lp_norm, beta=beta, kappa=kappa),
        skip=skip, progress=progress)


# ----------------------------------------------------------------------------------------------
# the hqq package, side by side


def package_available() -> bool:
    """Whether the ``hqq`` package (mobiusml/hqq) is importable.

    Returns:
        bool: True when ``import hqq`` works.
    """
    import importlib.util

    return importlib.util.find_spec("hqq") is not None


def package_quantize_weight(W: torch.Tensor, bits: int = 4, group_size: int | None = 64,
                            round_zero: bool = False) -> dict:
    """Quantize with the ``hqq`` package's own ``Quantizer.quantize`` on the CPU, in float32.

    Uses ``axis=1`` (``HQQLinear``'s layout), ``optimize=True`` (its default solver,
    ``optimize_weights_proximal_legacy``), ``bitpack=False``, ``device="cpu"``.

    Args:
        W: weight ``[out, in]``.
        bits: code width (1 to 8).
        group_size: a divisor of ``in``, or None for one group per output channel.
        round_zero: round the zero point to an integer (the package's option).

    Returns:
        dict with ``dequantized`` (float32 ``[out, in]``, ``(q - zero) * scale`` in float32),
        ``q`` (float32 codes ``[n_groups, group]``), ``scale`` (the stored step, ``1 / inv_scale``)
        and ``zero`` (both ``[n_groups, 1]``).
    """
    import contextlib
    import io
    import warnings

    check_tensor(W, "W", dtypes=FLOAT_DTYPES, ndim=2)
    check_bits(bits, "bits", low=MIN_BITS, high=MAX_BITS)
    if group_size is not None:
        check_divides(W.shape[1], group_size, size_name="W.shape[1] (in_features)", group_name="group_size")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        from hqq.core.quantize import Quantizer  # the top-level package, not this module

        q, meta = Quantizer.quantize(W.detach().float().cpu(), nbits=bits, channel_wise=True, group_size=group_size,
                                     optimize=True, round_zero=round_zero, axis=1, bitpack=False, device="cpu")
    scale, zero = meta["scale"].float(), meta["zero"].float()
    deq = ((q.float() - zero) * scale).reshape(W.shape)
    return {"dequantized": deq, "q": q.float(), "scale": scale, "zero": zero}
