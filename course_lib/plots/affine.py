"""Plots for notebook 02 (affine quantization); every function returns the Figure it drew on."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from .. import affine

__all__ = [
    "draw_mapping",
    "draw_error_histogram",
    "plot_mapping",
    "plot_error_vs_x",
    "plot_sym_vs_asym",
    "plot_number_line",
    "plot_clipping_tradeoff",
    "plot_int32_headroom",
]

CLIP_COLOR = "tab:red"
GRID_COLOR = "0.85"


def _axes(ax, figsize):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def draw_mapping(ax, scale, zero_point, qmin: int, qmax: int, lo: float, hi: float, n: int = 2001,
                 data: torch.Tensor | None = None) -> None:
    """Draw x -> fake_quantize(x) (a staircase) on ``ax`` over ``[lo, hi]``, clipped regions shaded."""
    x = torch.linspace(lo, hi, n)
    y = affine.fake_quantize(x, scale, zero_point, qmin, qmax)
    r_lo, r_hi = affine.representable_range(scale, zero_point, qmin, qmax)
    s = float(scale)
    if data is not None:
        hist_ax = ax.twinx()
        shown = data.flatten().float()
        shown = shown[(shown >= lo) & (shown <= hi)]
        hist_ax.hist(shown.numpy(), bins=80, range=(lo, hi), color="0.8", alpha=0.7)
        hist_ax.set_yticks([])
        hist_ax.set_zorder(ax.get_zorder() - 1)
        ax.patch.set_visible(False)
    ax.plot(x.numpy(), x.numpy(), ls="--", color="0.5", lw=1, label="y = x")
    ax.plot(x.numpy(), y.numpy(), color="tab:blue", lw=1.5, label="dequant(quant(x))")
    if lo < r_lo - s / 2:
        ax.axvspan(lo, r_lo - s / 2, color=CLIP_COLOR, alpha=0.12, label="clipped")
    if hi > r_hi + s / 2:
        ax.axvspan(r_hi + s / 2, hi, color=CLIP_COLOR, alpha=0.12, label=None if lo < r_lo - s / 2 else "clipped")
    ax.axhline(0, color=GRID_COLOR, lw=0.8, zorder=0)
    ax.axvline(0, color=GRID_COLOR, lw=0.8, zorder=0)
    ax.set_xlim(lo, hi)
    ax.set_xlabel("x")
    ax.set_ylabel("value stored")
    ax.legend(loc="upper left", fontsize=8)


def draw_error_histogram(ax, x: torch.Tensor, scale, zero_point, qmin: int, qmax: int, bins: int = 60) -> dict:
    """Histogram of x - fake_quantize(x), split into values inside the representable range and clipped ones.

    Returns:
        dict with ``max_inside`` (largest |error| inside the range), ``max_clipped`` (largest |error| of a
        clipped value, 0.0 if none), ``clipped`` (fraction of values clipped), ``mse``.
    """
    x = x.flatten().float()
    err = x - affine.fake_quantize(x, scale, zero_point, qmin, qmax)
    s = float(scale)
    r_lo, r_hi = affine.representable_range(scale, zero_point, qmin, qmax)
    inside = (x >= r_lo - s / 2) & (x <= r_hi + s / 2)
    e_in, e_out = err[inside], err[~inside]
    lim = s * 0.75
    ax.hist(e_in.numpy(), bins=bins, range=(-lim, lim), color="tab:blue", alpha=0.8, label="inside the range")
    if e_out.numel():
        ax.hist(e_out.clamp(-lim, lim).numpy(), bins=bins, range=(-lim, lim), color=CLIP_COLOR, alpha=0.8,
                label=f"clipped ({e_out.numel()}, shown at the edges)")
    for v in (-s / 2, s / 2):
        ax.axvline(v, color="k", ls="--", lw=1)
    ax.set_xlabel("error x - dequant(quant(x))   (dashed: +-scale/2)")
    ax.set_ylabel("count")
    ax.legend(fontsize=8, loc="upper right")
    return {
        "max_inside": float(e_in.abs().max()) if e_in.numel() else 0.0,
        "max_clipped": float(e_out.abs().max()) if e_out.numel() else 0.0,
        "clipped": e_out.numel() / max(1, x.numel()),
        "mse": float(err.double().pow(2).mean()),
    }


def plot_mapping(scale, zero_point, qmin: int, qmax: int, lo: float, hi: float, data=None, ax=None,
                 title: str | None = None):
    """The staircase x -> dequant(quant(x)) over ``[lo, hi]``; returns the Figure."""
    fig, ax = _axes(ax, (6, 4))
    draw_mapping(ax, scale, zero_point, qmin, qmax, lo, hi, data=data)
    s, z = float(scale), int(zero_point)
    ax.set_title(title or f"codes [{qmin}, {qmax}], scale {s:.4g}, zero point {z}")
    return fig


def plot_error_vs_x(scale, zero_point, qmin: int, qmax: int, lo: float, hi: float, n: int = 4001):
    """Error x - dequant(quant(x)) against x: a sawtooth inside the range, a ramp where it clips."""
    x = torch.linspace(lo, hi, n)
    err = x - affine.fake_quantize(x, scale, zero_point, qmin, qmax)
    s = float(scale)
    r_lo, r_hi = affine.representable_range(scale, zero_point, qmin, qmax)
    fig, (ax, ax_zoom) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [2, 1]})
    for a in (ax, ax_zoom):
        a.plot(x.numpy(), err.numpy(), color="tab:blue", lw=1)
        a.axhspan(-s / 2, s / 2, color="tab:green", alpha=0.15, label="|error| <= scale/2")
        a.axvline(r_lo - s / 2, color=CLIP_COLOR, ls=":", lw=1)
        a.axvline(r_hi + s / 2, color=CLIP_COLOR, ls=":", lw=1, label="edge of the range")
        a.set_xlabel("x")
    ax.set_ylabel("x - dequant(quant(x))")
    ax.set_title("error over the whole axis: clipping grows without bound")
    ax.legend(fontsize=8, loc="upper left")
    width = 6 * s
    ax_zoom.set_xlim(-width / 2, width / 2)
    ax_zoom.set_ylim(-0.75 * s, 0.75 * s)
    ax_zoom.set_title("zoom near 0: rounding, at most scale/2")
    fig.tight_layout()
    return fig


def _grid_values(scale, zero_point, qmin, qmax) -> torch.Tensor:
    codes = torch.arange(qmin, qmax + 1, dtype=torch.int32)
    return affine.dequantize(codes, scale, zero_point)


def plot_sym_vs_asym(x: torch.Tensor, bits: int = 4):
    """A one-sided (ReLU-like) tensor on a symmetric and on an asymmetric grid of ``bits`` bits.

    Top: the data's histogram with each grid's levels; bottom: each grid's error histogram.
    Returns the Figure; the numbers it shows are in ``fig.stats`` ({scheme: {codes_used, mse}}).
    """
    x = x.flatten().float()
    nonzero = x[x != 0]  # a ReLU's exact zeros are stored exactly by both grids: leave them out of the plots
    shown = nonzero if nonzero.numel() else x
    schemes = {
        "symmetric (signed)": (True, affine.qrange(bits, signed=True)),
        "asymmetric (unsigned)": (False, affine.qrange(bits, signed=False)),
    }
    fig, axes = plt.subplots(2, 2, figsize=(11, 5.5), sharex="row")
    stats = {}
    for col, (name, (symmetric, (qmin, qmax))) in enumerate(schemes.items()):
        scale, zp = affine.compute_scale_zero_point(x.min(), x.max(), qmin, qmax, symmetric=symmetric)
        q = affine.quantize(x, scale, zp, qmin, qmax)
        levels = _grid_values(scale, zp, qmin, qmax)
        used = int(torch.unique(q).numel())
        ax = axes[0, col]
        ax.hist(shown.numpy(), bins=100, color="0.6")
        for v in levels.tolist():
            ax.axvline(v, color="tab:orange", lw=0.8, alpha=0.9)
        ax.set_title(f"{name}: {used} of {qmax - qmin + 1} codes used")
        ax.set_xlabel("x (orange: the values the grid can store; exact zeros not shown)")
        err = x - affine.dequantize(q, scale, zp)
        mse = float(err.double().pow(2).mean())
        ax = axes[1, col]
        ax.hist(err[x != 0].numpy() if nonzero.numel() else err.numpy(), bins=60, color="tab:blue")
        s = float(scale)
        for v in (-s / 2, s / 2):
            ax.axvline(v, color="k", ls="--", lw=1)
        ax.set_title(f"error: scale {s:.3g}, MSE {mse:.2e}")
        ax.set_xlabel("x - dequant(quant(x))")
        stats[name] = {"codes_used": used, "mse": mse, "scale": s, "zero_point": int(zp)}
    fig.tight_layout()
    fig.stats = stats
    return fig


def plot_number_line(values, rows: dict, title: str = ""):
    """Where values land on one or more grids: one row per grid, ``rows = {label: (scale, zp, qmin, qmax)}``.

    Each row shades the grid's representable range, draws its levels (if not too many), and an arrow
    from each value to the value stored.
    """
    values = torch.as_tensor(values, dtype=torch.float32)
    fig, ax = plt.subplots(figsize=(10, 1.3 + 0.9 * len(rows)))
    lo_all, hi_all = float(values.min()), float(values.max())
    for i, (label, (scale, zp, qmin, qmax)) in enumerate(rows.items()):
        y = len(rows) - 1 - i
        r_lo, r_hi = affine.representable_range(scale, zp, qmin, qmax)
        lo_all, hi_all = min(lo_all, r_lo), max(hi_all, r_hi)
        ax.plot([r_lo, r_hi], [y, y], color="tab:green", lw=6, alpha=0.35, solid_capstyle="butt")
        stored = affine.fake_quantize(values, scale, zp, qmin, qmax)
        for v, w in zip(values.tolist(), stored.tolist()):
            clipped = abs(v - w) > float(scale) / 2 * (1 + 1e-4)
            color = CLIP_COLOR if clipped else "tab:blue"
            ax.annotate("", xy=(w, y - 0.18), xytext=(v, y + 0.25),
                        arrowprops={"arrowstyle": "->", "color": color, "lw": 1.2})
            ax.plot([v], [y + 0.25], "o", color="k", ms=4)
            ax.text(w, y - 0.42, f"{w:.4g}", ha="center", va="top", fontsize=8, color=color)
        ax.text(r_lo, y - 0.02, f"{r_lo:.4g}  ", ha="right", va="center", fontsize=8, color="tab:green")
        ax.text(r_hi, y - 0.02, f"  {r_hi:.4g}", ha="left", va="center", fontsize=8, color="tab:green")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(list(rows)[::-1], fontsize=9)
    pad = 0.12 * (hi_all - lo_all)
    ax.set_xlim(lo_all - pad, hi_all + pad)
    ax.set_ylim(-0.9, len(rows) - 0.3)
    ax.set_xlabel("x (dots: the values; arrows: what is stored; green: the representable range; red: clipped)")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_clipping_tradeoff(x: torch.Tensor, bits: int = 4, n: int = 60):
    """MSE of a symmetric ``bits``-bit grid whose range is clipped to ``c * max|x|``, for c in (0, 1].

    Shows the two errors that set a range: rounding error (grows with the range) and clipping error
    (grows as the range shrinks). Returns the Figure; ``fig.best`` holds (c, mse) of the minimum.
    """
    x = x.flatten().float()
    amax = float(x.abs().max())
    qmin, qmax = affine.qrange(bits, signed=True, restricted=True)
    ratios = torch.linspace(0.05, 1.0, n)
    total, rounding, clipping = [], [], []
    for c in ratios.tolist():
        scale, zp = affine.compute_scale_zero_point(-c * amax, c * amax, qmin, qmax, symmetric=True)
        err = (x - affine.fake_quantize(x, scale, zp, qmin, qmax)).double()
        r_lo, r_hi = affine.representable_range(scale, zp, qmin, qmax)
        out = (x < r_lo) | (x > r_hi)
        total.append(float(err.pow(2).mean()))
        clipping.append(float((err.pow(2) * out).mean()))
        rounding.append(float((err.pow(2) * ~out).mean()))
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.plot(ratios.numpy(), total, color="k", label="total MSE")
    ax.plot(ratios.numpy(), rounding, color="tab:blue", ls="--", label="rounding (inside the range)")
    ax.plot(ratios.numpy(), clipping, color=CLIP_COLOR, ls="--", label="clipping (outside)")
    best = int(torch.tensor(total).argmin())
    ax.plot([ratios[best].item()], [total[best]], "o", color="k")
    ax.set_yscale("log")
    ax.set_xlabel("clipping range / max|x|")
    ax.set_ylabel("mean squared error")
    ax.set_title(f"{bits}-bit symmetric grid: the best range clips (minimum at {ratios[best].item():.2f} max|x|)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.best = (ratios[best].item(), total[best])
    return fig


def plot_int32_headroom(bits_list=range(2, 17)):
    """Largest inner dimension K an int32 accumulator holds without overflow, for signed b-bit x b-bit codes."""
    bits_list = list(bits_list)
    ks = [affine.int32_max_inner_dim(2 ** (b - 1), 2 ** (b - 1)) for b in bits_list]
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.semilogy(bits_list, ks, "o-")
    for b, k in zip(bits_list, ks):
        if b in (4, 8, 12, 16):
            ax.annotate(f"{k:,}", (b, k), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.axhline(4096, color="0.5", ls=":", lw=1)
    ax.text(bits_list[0], 4096 * 1.3, "K = 4096 (a typical hidden size)", fontsize=8, color="0.4")
    ax.set_xlabel("bits of both operands (signed, full range)")
    ax.set_ylabel("largest safe K")
    ax.set_title("int32 accumulation: K * 2^(b-1) * 2^(b-1) <= 2^31 - 1")
    fig.tight_layout()
    return fig
