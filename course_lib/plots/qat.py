"""Plots for notebook 04 (observers, PTQ, STE, LSQ, QAT); every function returns the Figure it drew on."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from .. import affine, qat

__all__ = [
    "OBSERVER_COLORS",
    "draw_ranges",
    "plot_observer_ranges",
    "plot_clipping_curve",
    "plot_ste",
    "plot_lsq_step_gradient",
    "plot_accuracy",
    "plot_losses",
]

OBSERVER_COLORS = {
    "min-max": "tab:red",
    "moving average": "tab:orange",
    "percentile": "tab:green",
    "MSE": "tab:blue",
    "entropy": "tab:purple",
}


def _axes(ax, figsize):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def draw_ranges(ax, x: torch.Tensor, ranges: dict, title: str = "", bins: int = 200) -> None:
    """Histogram of ``x`` (log counts) with each observer's ``(lo, hi)`` as a pair of vertical lines."""
    v = x.detach().flatten().float().cpu()
    ax.hist(v.numpy(), bins=bins, color="0.75", log=True)
    for i, (name, (lo, hi)) in enumerate(ranges.items()):
        color = OBSERVER_COLORS.get(name, f"C{i}")
        ax.axvline(float(lo), color=color, lw=1.5, ls="--" if i % 2 else "-")
        ax.axvline(float(hi), color=color, lw=1.5, ls="--" if i % 2 else "-",
                   label=f"{name}: [{float(lo):.2f}, {float(hi):.2f}]")
    ax.set_xlabel("value")
    ax.set_ylabel("count (log)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper right")


def plot_observer_ranges(x: torch.Tensor, ranges: dict, title: str = "", ax=None):
    """One histogram with every observer's range; returns the Figure."""
    fig, ax = _axes(ax, (10, 3.8))
    draw_ranges(ax, x, ranges, title)
    fig.tight_layout()
    return fig


def plot_clipping_curve(x: torch.Tensor, bits_list=(8, 4, 2), num: int = 100, marks: dict | None = None):
    """MSE of fake quantization (asymmetric, unsigned grid) when the min-max range is shrunk by ``alpha``.

    ``marks``: optional ``{bits: {name: (lo, hi)}}`` ranges drawn as points on the curves.
    """
    xf = x.detach().flatten().float().cpu()
    x64 = xf.double()
    zero = torch.zeros(())
    lo0, hi0 = torch.minimum(xf.min(), zero), torch.maximum(xf.max(), zero)
    alphas = [k / num for k in range(1, num + 1)]
    fig, axes = plt.subplots(1, len(bits_list), figsize=(4 * len(bits_list), 3.4))
    axes = [axes] if len(bits_list) == 1 else list(axes)
    for ax, bits in zip(axes, bits_list):
        qmin, qmax = affine.qrange(bits, signed=False)
        errs = []
        for a in alphas:
            s, z = affine.compute_scale_zero_point(lo0 * a, hi0 * a, qmin, qmax)
            errs.append(float((affine.fake_quantize(xf, s, z, qmin, qmax).double() - x64).pow(2).mean()))
        ax.plot([a * float(hi0) for a in alphas], errs, color="0.3", lw=1.2)
        for name, (lo, hi) in (marks or {}).get(bits, {}).items():
            s, z = affine.compute_scale_zero_point(lo, hi, qmin, qmax)
            err = float((affine.fake_quantize(xf, s, z, qmin, qmax).double() - x64).pow(2).mean())
            ax.plot([float(hi)], [err], "o", color=OBSERVER_COLORS.get(name, "k"), label=name)
        ax.set_yscale("log")
        ax.set_xlabel("upper end of the range (hi)")
        ax.set_title(f"{bits} bits")
        if (marks or {}).get(bits):
            ax.legend(fontsize=7)
    axes[0].set_ylabel("MSE of fake quantization")
    fig.tight_layout()
    return fig


def plot_ste(scale: float, zero_point: int, qmin: int, qmax: int, lo: float, hi: float, h_large: float,
             n: int = 2001):
    """Left: the staircase and its two finite-difference slopes; right: the STE gradient (the mask).

    A small step ``h << scale`` sees the staircase's true derivative (0 almost everywhere); a large step
    ``h_large >> scale`` sees the slope of its trend, which the clipped STE uses: 1 inside the range, 0 outside.
    """
    x = torch.linspace(lo, hi, n)
    y = affine.fake_quantize(x, scale, zero_point, qmin, qmax)
    h_small = scale / 100
    fd_small = (affine.fake_quantize(x + h_small, scale, zero_point, qmin, qmax)
                - affine.fake_quantize(x - h_small, scale, zero_point, qmin, qmax)) / (2 * h_small)
    fd_large = (affine.fake_quantize(x + h_large, scale, zero_point, qmin, qmax)
                - affine.fake_quantize(x - h_large, scale, zero_point, qmin, qmax)) / (2 * h_large)
    xg = x.clone().requires_grad_(True)
    torch.fake_quantize_per_tensor_affine(xg, float(scale), int(zero_point), qmin, qmax).sum().backward()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    ax1.plot(x.numpy(), x.numpy(), ls="--", color="0.6", lw=1, label="y = x")
    ax1.plot(x.numpy(), y.numpy(), color="tab:blue", label="fake_quantize(x)")
    ax1.set_xlabel("x")
    ax1.set_title(f"forward: {qmax - qmin + 1} levels, scale {float(scale):.3g}")
    ax1.legend(fontsize=8)
    ax2.plot(x.numpy(), fd_small.numpy(), color="0.6", lw=0.8, label=f"finite difference, h = scale/100")
    ax2.plot(x.numpy(), fd_large.numpy(), color="tab:orange", lw=1.5, label=f"finite difference, h = {h_large:g}")
    ax2.plot(x.numpy(), xg.grad.numpy(), color="tab:blue", lw=2, ls="--", label="clipped STE (PyTorch's gradient)")
    ax2.set_ylim(-0.3, 2.2)
    ax2.set_xlabel("x")
    ax2.set_title("backward: what gradient?")
    ax2.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def plot_lsq_step_gradient(step: float, qmin: int, qmax: int, lo: float, hi: float, n: int = 2001):
    """Left: LSQ's forward ``clamp(round(x / s), qmin, qmax) * s``; right: per value, LSQ's ``d x_hat / d s``
    (``qat.lsq_fake_quantize`` with one step per value and gradient scale 1) and the exact derivative between
    code changes, ``clamp(round(x / s), qmin, qmax)``; the dotted lines mark the range ends ``qmin * s``, ``qmax * s``."""
    x = torch.linspace(lo, hi, n, dtype=torch.float64)
    steps = torch.full_like(x, step).requires_grad_(True)  # one step per value: its gradient is that value's
    y = qat.lsq_fake_quantize(x, steps, qmin, qmax, grad_scale=1.0)
    y.sum().backward()
    exact = torch.round(x / step).clamp(qmin, qmax)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    ax1.plot(x.numpy(), x.numpy(), ls="--", color="0.6", lw=1, label="y = x")
    ax1.plot(x.numpy(), y.detach().numpy(), color="tab:blue", label="LSQ forward")
    ax1.set_xlabel("x")
    ax1.set_title(f"forward: codes {qmin}..{qmax}, step {step:g}")
    ax1.legend(fontsize=8)
    ax2.plot(x.numpy(), exact.numpy(), color="0.6", lw=1.2, label="exact derivative between code changes")
    ax2.plot(x.numpy(), steps.grad.numpy(), color="tab:red", lw=1.8, label="LSQ gradient (STE through round)")
    for end in (qmin * step, qmax * step):
        ax2.axvline(end, color="0.3", ls=":", lw=1)
    ax2.set_xlabel("x")
    ax2.set_title("backward: d x_hat / d step, per value")
    ax2.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def plot_accuracy(table: dict, fp32: float, title: str = "digits test accuracy"):
    """Grouped bars: ``table[method][bits] = accuracy``; a dashed line at the fp32 accuracy."""
    methods = list(table)
    bits_list = sorted({b for row in table.values() for b in row}, reverse=True)
    fig, ax = plt.subplots(figsize=(10, 3.6))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(bits_list))]
        ys = [table[method].get(b, float("nan")) for b in bits_list]
        ax.bar(xs, ys, width, label=method, color=OBSERVER_COLORS.get(method, f"C{i}"))
    ax.axhline(fp32, color="k", ls="--", lw=1, label=f"fp32 {fp32:.3f}")
    ax.set_xticks(range(len(bits_list)))
    ax.set_xticklabels([f"{b} bits" for b in bits_list])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=4, loc="lower left")
    fig.tight_layout()
    return fig


def plot_losses(curves: dict, title: str = "training loss"):
    """``curves[name] = [loss per epoch]``; log scale."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, losses in curves.items():
        ax.plot(range(1, len(losses) + 1), losses, marker=".", label=name)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean cross-entropy")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
