"""Plots for notebook 01 (precision formats); every function returns the Figure it drew."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Rectangle

from .. import formats as F

#: colours of the three bit fields (the widget uses the same ones)
FIELD_COLOURS = {"sign": "#d62728", "exponent": "#2ca02c", "mantissa": "#1f77b4"}
_LINE_STYLES = {"fp32": "-", "bf16": "--", "fp16": "-.", "fp8_e5m2": ":", "fp8_e4m3": "-", "fp4_e2m1": "--"}
_DEFAULT = (F.FP32, F.BF16, F.FP16, F.FP8_E5M2, F.FP8_E4M3)


def plot_bit_layout(formats=_DEFAULT):
    """One row of boxes per format: the sign bit, the exponent bits and the mantissa bits."""
    formats = [F.get_format(f) for f in formats]
    widest = max(f.total_bits for f in formats)
    fig, ax = plt.subplots(figsize=(11, 0.62 * len(formats) + 0.8))
    for row, fmt in enumerate(formats):
        y = len(formats) - 1 - row
        fields = [("sign", 1), ("exponent", fmt.exponent_bits), ("mantissa", fmt.mantissa_bits)]
        x = 0
        for field, width in fields:
            for _ in range(width):
                ax.add_patch(Rectangle((x, y + 0.1), 0.92, 0.8, color=FIELD_COLOURS[field], alpha=0.85))
                x += 1
        rng = F.format_range(fmt)
        ax.text(-0.6, y + 0.5, fmt.name, ha="right", va="center", fontsize=11, family="monospace")
        ax.text(widest + 0.8, y + 0.5,
                f"E={fmt.exponent_bits} M={fmt.mantissa_bits}  max {rng['max']:.4g}  eps {rng['eps']:.2g}",
                va="center", fontsize=9)
    for field, colour in FIELD_COLOURS.items():
        ax.add_patch(Rectangle((0, 0), 0, 0, color=colour, label=field))
    ax.set_xlim(-6, widest + 16)
    ax.set_ylim(-0.2, len(formats) + 0.1)
    ax.axis("off")
    ax.legend(loc="upper center", ncol=3, bbox_to_anchor=(0.42, 1.08), frameon=False)
    ax.set_title("bit layout: 1 sign bit, E exponent bits, M mantissa bits", pad=22)
    fig.tight_layout()
    return fig


def plot_spacing(formats=_DEFAULT, lo: float = 1e-9, hi: float = 1e6, n: int = 4000):
    """Spacing of representable values (ulp) against magnitude, log-log, and the relative spacing ulp/|x|."""
    formats = [F.get_format(f) for f in formats]
    x = torch.logspace(torch.log10(torch.tensor(lo)).item(), torch.log10(torch.tensor(hi)).item(), n,
                       dtype=torch.float64)
    fig, (ax_abs, ax_rel) = plt.subplots(1, 2, figsize=(12, 4.2))
    for fmt in formats:
        inside = (x <= fmt.max_value) & (x >= fmt.min_subnormal)
        xs = x[inside]
        u = F.ulp(xs, fmt).double()
        style = _LINE_STYLES.get(fmt.name, "-")
        ax_abs.loglog(xs, u, style, label=fmt.name, lw=1.6)
        ax_rel.loglog(xs, u / xs, style, label=fmt.name, lw=1.6)
    ax_abs.set_xlabel("|x|")
    ax_abs.set_ylabel("ulp(x): gap to the next value")
    ax_abs.set_title("absolute spacing grows with |x| (a staircase)")
    ax_rel.set_xlabel("|x|")
    ax_rel.set_ylabel("ulp(x) / |x|")
    ax_rel.set_title("relative spacing: between 2^-(M+1) and 2^-M for normals,\ngrowing in the subnormals")
    for ax in (ax_abs, ax_rel):
        ax.grid(True, which="major", alpha=0.3)
    ax_rel.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_value_grid(formats=(F.FP8_E4M3, F.FP8_E5M2, F.FP4_E2M1), int_bits: int = 8):
    """Where the values of small formats lie: on a log axis (left) and scaled to [-1, 1] next to int8 (right)."""
    formats = [F.get_format(f) for f in formats]
    fig, (ax_log, ax_lin) = plt.subplots(1, 2, figsize=(12, 0.9 * len(formats) + 1.8))
    for row, fmt in enumerate(formats):
        v = F.representable_values(fmt).double()
        pos = v[v > 0]
        sub = pos < fmt.min_normal
        ax_log.vlines(pos[~sub], row - 0.35, row + 0.35, lw=0.8, color="tab:blue")
        ax_log.vlines(pos[sub], row - 0.35, row + 0.35, lw=0.8, color="tab:orange")
    ax_log.vlines([], 0, 0, color="tab:blue", label="normal")
    ax_log.vlines([], 0, 0, color="tab:orange", label="subnormal")
    ax_log.set_xscale("log", base=2)
    ax_log.set_yticks(range(len(formats)), [f.name for f in formats])
    ax_log.set_xlabel("positive values (log2 axis): equal counts per power of two")
    ax_log.legend(loc="lower right", fontsize=8)
    ax_log.set_title("every positive value of the format")

    qmin, qmax = F.int_range(int_bits)
    rows = [(f"int{int_bits} / {qmax}", torch.arange(qmin, qmax + 1, dtype=torch.float64) / qmax)]
    for fmt in formats:
        v = F.representable_values(fmt).double()
        rows.append((f"{fmt.name} / {fmt.max_value:g}", v / fmt.max_value))
    for row, (label, vals) in enumerate(rows):
        ax_lin.vlines(vals, row - 0.35, row + 0.35, lw=0.6)
    ax_lin.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax_lin.set_xlim(-0.05, 1.02)
    ax_lin.set_xlabel("value / largest value (positive half)")
    ax_lin.set_title("scaled to the same range: integers are uniform,\nfloats crowd near zero")
    fig.tight_layout()
    return fig


def plot_rounding_error(fmt=F.FP8_E4M3, lo: float = 0.0, hi: float = 20.0, n: int = 4001):
    """Rounding error round_to_format(x) - x over [lo, hi], with the +-ulp(x)/2 bound."""
    fmt = F.get_format(fmt)
    x = torch.linspace(lo, hi, n, dtype=torch.float64)
    r = F.round_to_format(x, fmt).double()
    half = F.ulp(x, fmt).double() / 2
    fig, (ax_val, ax_err) = plt.subplots(1, 2, figsize=(12, 3.8))
    ax_val.plot(x, x, color="gray", lw=0.8, label="x")
    ax_val.step(x, r, where="mid", label=f"round to {fmt.name}")
    ax_val.set_xlabel("x")
    ax_val.set_title("the staircase: steps get wider as x grows")
    ax_val.legend()
    ax_err.plot(x, r - x, lw=0.9, label="error")
    ax_err.plot(x, half, "--", color="gray", lw=0.9, label="+- ulp(x)/2")
    ax_err.plot(x, -half, "--", color="gray", lw=0.9)
    ax_err.set_xlabel("x")
    ax_err.set_title(f"{fmt.name}: |error| <= ulp(x)/2")
    ax_err.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def plot_memory(models: dict, formats=F.MEMORY_FORMATS, budgets: dict | None = None):
    """Grouped bars of weight memory (GB = 10^9 bytes) per model and format, with optional budget lines.

    Args:
        models: ``{"7B": 7e9, ...}`` parameter counts.
        formats: ``(name, bits)`` pairs.
        budgets: ``{"24 GB GPU": 24e9, ...}`` memory sizes in bytes drawn as horizontal lines.
    """
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(formats)
    for i, (name, bits) in enumerate(formats):
        heights = [F.model_memory_bytes(n, bits) / F.GB for n in models.values()]
        xs = [j + (i - (len(formats) - 1) / 2) * width for j in range(len(models))]
        bars = ax.bar(xs, heights, width, label=f"{name} ({bits} bits)")
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
    for label, nbytes in (budgets or {}).items():
        ax.axhline(nbytes / F.GB, ls="--", color="gray", lw=0.8)
        ax.text(len(models) - 0.45, nbytes / F.GB, label, va="bottom", ha="left", fontsize=8, color="gray")
    ax.set_xlim(-0.5, len(models) + 0.4)
    ax.set_xticks(range(len(models)), list(models))
    ax.set_yscale("log")
    ax.set_ylabel("weights (GB = 10^9 bytes, log scale)")
    ax.set_title("weight memory = parameters x bits / 8")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig
