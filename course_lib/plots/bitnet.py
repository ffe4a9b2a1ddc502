"""Plots for notebook 10 (BitNet b1.58); every function returns the Figure it drew on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch

__all__ = ["draw_ternary_histogram", "plot_ternary_histogram", "plot_loss_curves", "plot_packing_layout",
           "plot_bits_per_weight"]

LEVEL_COLORS = {-1: "tab:red", 0: "0.55", 1: "tab:green"}


def _axes(ax, figsize):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def draw_ternary_histogram(ax, w: torch.Tensor, gamma: float, bins: int = 100, title: str | None = None) -> dict:
    """Histogram of ``w`` coloured by the ternary code each value gets with step ``gamma``.

    Values in ``(-gamma/2, gamma/2)`` become 0, the rest -1 or +1 (clamped); the dashed lines are the
    rounding thresholds, the dotted ones the three stored values ``-gamma, 0, gamma``.

    Returns:
        dict: ``share`` ({-1, 0, 1} -> fraction of values), ``rel_mse`` (MSE of ``gamma * codes``
        relative to the mean square of ``w``).
    """
    w = w.detach().flatten().float().cpu()
    codes = (w * (1.0 / gamma)).round().clamp(-1, 1)
    lo, hi = float(w.min()), float(w.max())
    for level in (-1, 0, 1):
        sel = w[codes == level]
        if sel.numel():
            ax.hist(sel.numpy(), bins=bins, range=(lo, hi), color=LEVEL_COLORS[level], alpha=0.85,
                    label=f"{ {-1: '-1', 0: '0', 1: '+1'}[level]}: {sel.numel() / w.numel():.1%}")
    for t in (-gamma / 2, gamma / 2):
        ax.axvline(t, color="k", ls="--", lw=1)
    for v in (-gamma, 0.0, gamma):
        ax.axvline(v, color="tab:blue", ls=":", lw=1.2)
    ax.set_xlabel("weight value")
    ax.set_ylabel("count")
    ax.legend(fontsize=8, title="code: share", title_fontsize=8)
    if title:
        ax.set_title(title)
    err = (w - gamma * codes).pow(2).mean() / w.pow(2).mean().clamp(min=1e-30)
    return {"share": {lv: float((codes == lv).float().mean()) for lv in (-1, 0, 1)}, "rel_mse": float(err)}


def plot_ternary_histogram(w: torch.Tensor, gammas: Mapping[str, float], figsize=(11, 3.4)):
    """One histogram panel per named scale (e.g. absmean vs absmax) for the same weights."""
    fig, axes = plt.subplots(1, len(gammas), figsize=figsize, squeeze=False)
    for ax, (name, gamma) in zip(axes[0], gammas.items()):
        stats = draw_ternary_histogram(ax, w, float(gamma))
        ax.set_title(f"{name}: step {float(gamma):.3g}, relative MSE {stats['rel_mse']:.2f}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_loss_curves(panels: Mapping[str, Mapping[str, Sequence[float]]], smooth: int = 10, figsize=(11, 3.6)):
    """Training losses, one panel per task, one curve per model (a moving average of ``smooth`` steps).

    Args:
        panels: ``{"digits": {"BitNet b1.58": losses, "full precision": losses}, "language model": {...}}``.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=figsize, squeeze=False)
    for ax, (task, curves) in zip(axes[0], panels.items()):
        for name, losses in curves.items():
            t = torch.tensor(list(losses), dtype=torch.float64)
            k = max(1, min(smooth, t.numel()))
            avg = torch.nn.functional.avg_pool1d(t[None, None], k, stride=1)[0, 0] if k > 1 else t
            ax.plot(range(k, t.numel() + 1), avg.numpy(), label=name)
        ax.set_title(task)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (cross-entropy)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_packing_layout(row: Sequence[int], ax=None, figsize=(10, 2.2)):
    """Draw how the ternary weights ``row`` (length a multiple of 4) sit in bytes: 2 bits each, lowest bits first."""
    row = [int(v) for v in row]
    fig, ax = _axes(ax, figsize)
    n_bytes = len(row) // 4
    for j in range(n_bytes):
        byte = 0
        for k in range(4):
            code = row[4 * j + k] + 1
            byte |= code << (2 * k)
            x0 = j * 9 + (3 - k) * 2  # bit 7 on the left, as binary is written
            ax.add_patch(plt.Rectangle((x0, 0), 2, 1, facecolor=LEVEL_COLORS[row[4 * j + k]], alpha=0.35, edgecolor="k"))
            ax.text(x0 + 1, 0.5, f"{code >> 1}{code & 1}", ha="center", va="center", family="monospace")
            ax.text(x0 + 1, -0.35, f"w[{4 * j + k}]={row[4 * j + k]:+d}", ha="center", va="center", fontsize=7)
            ax.text(x0 + 1, 1.25, f"bits {2 * k + 1},{2 * k}", ha="center", va="center", fontsize=7)
        ax.text(j * 9 + 4, 1.75, f"byte {j} = {byte:#04x} = {byte}", ha="center", va="center", fontsize=9)
    ax.set_xlim(-0.5, n_bytes * 9)
    ax.set_ylim(-0.7, 2.1)
    ax.axis("off")
    fig.tight_layout()
    return fig


def plot_bits_per_weight(rows: Mapping[str, float], ax=None, figsize=(7, 2.8)):
    """Horizontal bars: bits per weight of each storage format."""
    fig, ax = _axes(ax, figsize)
    names = list(rows)
    values = [rows[n] for n in names]
    bars = ax.barh(names, values, color="tab:blue", alpha=0.8)
    for bar, v in zip(bars, values):
        ax.text(v, bar.get_y() + bar.get_height() / 2, f" {v:.3g}", va="center", fontsize=9)
    ax.set_xlabel("bits per weight")
    ax.invert_yaxis()
    ax.set_xlim(0, max(values) * 1.15)
    fig.tight_layout()
    return fig
