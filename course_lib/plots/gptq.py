"""Notebook 07 plots: the calibration Hessian and layer output errors of RTN and GPTQ."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure


def plot_hessian(H: torch.Tensor, title: str = "calibration Hessian", max_features: int = 96) -> Figure:
    """Left: ``diag(H)`` per input feature (log scale); right: the correlations ``H_ij / sqrt(H_ii H_jj)``.

    Args:
        H: float ``[n, n]``, e.g. from ``course_lib.gptq.accumulate_hessian``.
        title: suptitle.
        max_features: the correlation map shows the first ``max_features`` inputs (readable squares).

    Returns:
        The Figure.
    """
    Hf = H.detach().to("cpu", torch.float64)
    d = torch.diagonal(Hf)
    fig, (ax_d, ax_c) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1.4, 1]})
    ax_d.semilogy(d.numpy(), ".", ms=3, color="tab:blue", label="diag(H) = 2 mean x_j^2")
    ax_d.semilogy(torch.sort(d, descending=True).values.numpy(), "-", color="tab:orange", lw=1,
                  label="sorted (act-order's order)")
    ax_d.set_xlabel("input feature j")
    ax_d.set_ylabel("H_jj")
    ax_d.legend(fontsize=8)
    ax_d.set_title(f"max/min diagonal: {float(d.max() / d.clamp_min(1e-30).min()):.3g}")
    k = min(max_features, Hf.shape[0])
    s = d[:k].clamp_min(1e-30).sqrt()
    corr = Hf[:k, :k] / (s[:, None] * s[None, :])
    im = ax_c.imshow(corr.numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    fig.colorbar(im, ax=ax_c, fraction=0.046)
    ax_c.set_title(f"correlation of the first {k} inputs")
    ax_c.set_xlabel("j")
    ax_c.set_ylabel("i")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_layer_errors(names: Sequence[str], errors: dict[str, Sequence[float]], title: str = "") -> Figure:
    """Grouped bars, one group per layer, one bar per method: relative output error (log scale).

    Args:
        names: layer labels.
        errors: ``{method: [error per layer]}``.
        title: axes title.
    """
    fig, ax = plt.subplots(figsize=(11, 3.6))
    n = len(names)
    width = 0.8 / max(len(errors), 1)
    for k, (method, values) in enumerate(errors.items()):
        ax.bar([i + (k - (len(errors) - 1) / 2) * width for i in range(n)], list(values), width, label=method)
    ax.set_xticks(range(n))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("||WX - QX||^2 / ||WX||^2")
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_column_errors(col_err: dict[str, torch.Tensor], title: str = "") -> Figure:
    """Squared weight error per input column (summed over rows) for each method, in column order."""
    fig, ax = plt.subplots(figsize=(9, 3.2))
    for method, values in col_err.items():
        ax.plot(values.detach().cpu().numpy(), lw=1, label=method)
    ax.set_yscale("log")
    ax.set_xlabel("input column j")
    ax.set_ylabel("sum_i (W_ij - Q_ij)^2")
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig
