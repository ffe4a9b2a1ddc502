"""Notebook 09 plots: the l_p shrinkage operator, the solver's convergence, where the error goes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch

from .. import hqq

__all__ = ["draw_shrinkage", "plot_shrinkage", "draw_convergence", "plot_convergence", "plot_error_histograms"]


def draw_shrinkage(ax, beta: float = 10.0, lp_norms: Sequence[float] = (1.0, 0.7, 0.4), x_max: float = 0.6) -> None:
    """``shrink_lp(x, beta, p)`` for several p on ``[-x_max, x_max]``, with the identity dashed."""
    x = torch.linspace(-x_max, x_max, 2001, dtype=torch.float64)
    ax.plot(x, x, color="0.6", lw=1, ls="--", label="identity")
    for p in lp_norms:
        ax.plot(x, hqq.shrink_lp(x, beta, p), lw=1.8, label=f"p = {p:g}")
    ax.axhline(0, color="0.8", lw=0.8)
    ax.set_xlabel("x (an error W - W_r)")
    ax.set_ylabel("shrink_lp(x)")
    ax.set_title(f"l_p shrinkage, beta = {beta:g}")
    ax.legend(fontsize=8)


def plot_shrinkage(beta: float = 10.0, lp_norms: Sequence[float] = (1.0, 0.7, 0.4), x_max: float = 0.6):
    """One panel of ``draw_shrinkage`` and one of what the operator removes (``x - shrink(x)``)."""
    fig, (ax, ax_gap) = plt.subplots(1, 2, figsize=(10, 3.8))
    draw_shrinkage(ax, beta, lp_norms, x_max)
    x = torch.linspace(1e-4, x_max, 2000, dtype=torch.float64)
    for p in lp_norms:
        ax_gap.plot(x, x - hqq.shrink_lp(x, beta, p), lw=1.8, label=f"p = {p:g}")
    ax_gap.set_xlabel("x > 0")
    ax_gap.set_ylabel("x - shrink_lp(x)")
    ax_gap.set_title("how much is taken off (p < 1: less for large x)")
    ax_gap.legend(fontsize=8)
    fig.tight_layout()
    return fig


def draw_convergence(ax, histories: Mapping[str, Sequence[float]], baselines: Mapping[str, float] | None = None) -> None:
    """Mean |W - W_r| per evaluation for each run; horizontal lines for the baselines."""
    for name, errors in histories.items():
        ax.plot(range(len(errors)), errors, marker="o", ms=3, lw=1.5, label=name)
        best = min(range(len(errors)), key=errors.__getitem__)
        ax.plot([best], [errors[best]], marker="*", ms=12, color="k", ls="none")
    for name, value in (baselines or {}).items():
        ax.axhline(value, ls="--", lw=1, color="0.4")
        ax.annotate(name, (0, value), xytext=(3, 3), textcoords="offset points", fontsize=8, color="0.3")
    ax.set_xlabel("evaluation (0 = min-max initialisation)")
    ax.set_ylabel("mean |W - W_r|")
    ax.set_title("HQQ's zero-point updates (star: the zero point kept)")
    ax.legend(fontsize=8)


def plot_convergence(histories: Mapping[str, Sequence[float]], baselines: Mapping[str, float] | None = None):
    """A Figure with ``draw_convergence``."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    draw_convergence(ax, histories, baselines)
    fig.tight_layout()
    return fig


def plot_error_histograms(W: torch.Tensor, reconstructions: Mapping[str, torch.Tensor], bins: int = 121):
    """Histograms (log counts) of ``W_hat - W`` for each reconstruction, on one shared axis."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    errs = {name: (r.detach().double().cpu() - W.detach().double().cpu()).flatten() for name, r in reconstructions.items()}
    lim = max(float(e.abs().max()) for e in errs.values())
    edges = torch.linspace(-lim, lim, bins + 1)
    for name, e in errs.items():
        ax.hist(e.numpy(), bins=edges.numpy(), histtype="step", lw=1.5,
                label=f"{name}: mean |err| {float(e.abs().mean()):.3g}")
    ax.set_yscale("log")
    ax.set_xlabel("W_hat - W")
    ax.set_ylabel("count (log)")
    ax.set_title("where the error goes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
