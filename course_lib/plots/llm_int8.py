"""Plots for notebook 06 (LLM.int8()); every function returns the Figure it drew on."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch

from .. import llm_int8

__all__ = ["draw_column_absmax", "plot_column_absmax", "threshold_sweep", "plot_threshold_sweep", "plot_method_bars",
           "plot_smoothing_ranges"]


def _axes(ax, figsize):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def draw_column_absmax(ax, x: torch.Tensor, threshold: float, title: str | None = None) -> int:
    """Bars of ``max |x|`` per column (feature) of a 2-D activation ``x``; outlier columns in red.

    Returns the number of outlier columns (``|x| >= threshold`` somewhere in the column).
    """
    col = x.detach().float().abs().amax(dim=0).cpu()
    outlier = col >= threshold if threshold > 0 else torch.zeros_like(col, dtype=torch.bool)
    idx = torch.arange(col.numel())
    ax.bar(idx[~outlier].numpy(), col[~outlier].numpy(), width=1.0, color="tab:blue", label="int8 columns")
    if bool(outlier.any()):
        ax.bar(idx[outlier].numpy(), col[outlier].numpy(), width=1.0, color="tab:red",
               label=f"outlier columns ({int(outlier.sum())}): floating point")
    if threshold > 0:
        ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_xlim(-1, col.numel())
    ax.set_xlabel("feature (column of X)")
    ax.set_ylabel("max |x| over tokens")
    ax.set_title(title or "largest magnitude of each feature")
    ax.legend(fontsize=8, loc="upper right")
    return int(outlier.sum())


def plot_column_absmax(x: torch.Tensor, threshold: float = llm_int8.DEFAULT_THRESHOLD, title: str | None = None,
                       ax=None):
    """Figure with :func:`draw_column_absmax`."""
    fig, ax = _axes(ax, (10, 3.2))
    fig.n_outliers = draw_column_absmax(ax, x, threshold, title)
    return fig


def threshold_sweep(x: torch.Tensor, w: torch.Tensor, thresholds: Sequence[float]) -> list[dict]:
    """For each threshold: outlier columns, their share, and the relative error of ``llm_int8_matmul``.

    The relative error is ``||Y_int8 - Y|| / ||Y||`` (Frobenius) against the float64 product ``Y = x @ w.T``.
    """
    exact = x.double() @ w.double().T
    norm = float(exact.norm())
    rows = []
    for t in thresholds:
        y = llm_int8.llm_int8_matmul(x, w, threshold=float(t))
        n = int(llm_int8.outlier_columns(x, float(t)).numel())
        rows.append({"threshold": float(t), "outlier_cols": n, "fp_share": n / x.shape[1],
                     "rel_error": float((y.double() - exact).norm()) / max(norm, 1e-300)})
    return rows


def plot_threshold_sweep(x: torch.Tensor, w: torch.Tensor, thresholds: Sequence[float], mark: float | None = None,
                         axes=None):
    """Relative error of LLM.int8() and the share of columns in floating point, against the threshold."""
    rows = threshold_sweep(x, w, thresholds)
    if axes is None:
        fig, ax = plt.subplots(figsize=(7, 3.6))
    else:
        ax = axes
        fig = ax.figure
    ts = [r["threshold"] for r in rows]
    ax.plot(ts, [r["rel_error"] for r in rows], "o-", color="tab:blue", ms=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("threshold")
    ax.set_ylabel("relative error of X W^T", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(ts, [100 * r["fp_share"] for r in rows], "s--", color="tab:red", ms=3)
    ax2.set_ylabel("columns in floating point (%)", color="tab:red")
    if mark is not None:
        ax.axvline(mark, color="k", lw=1, ls=":")
    ax.set_title("LLM.int8(): error vs threshold")
    fig.rows = rows
    return fig


def plot_method_bars(results: dict[str, float], reference: str, ylabel: str = "perplexity", title: str | None = None,
                     ax=None):
    """Bars of one number per method; a dashed line at ``results[reference]``."""
    fig, ax = _axes(ax, (7, 3.4))
    names = list(results)
    values = [results[k] for k in names]
    colors = ["0.5" if k == reference else ("tab:green" if "LLM.int8" in k else "tab:orange") for k in names]
    bars = ax.bar(range(len(names)), values, color=colors)
    ax.axhline(results[reference], color="k", ls="--", lw=1)
    for b, v in zip(bars, values):
        ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=15, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_smoothing_ranges(act_absmax: torch.Tensor, weight: torch.Tensor, s: torch.Tensor, title: str | None = None):
    """SmoothQuant on one layer: the range of every input channel of X and of W, before and after smoothing.

    Two panels on a shared log scale, one step per input channel ``j``: ``max|X_j|`` (red) and ``max_i |W_ij|``
    (blue) as given (left), then ``max|X_j| / s_j`` and ``max_i |W_ij| s_j`` (right). The legend gives each
    curve's ``max / median``, the spread that one per-tensor scale suffers from.

    Args:
        act_absmax: ``[K]`` calibrated ``max |x|`` per input channel (before smoothing).
        weight: ``[N, K]`` weight before smoothing (several layers that read X stacked along the rows).
        s: ``[K]`` positive smoothing factors.
        title: the figure's title.

    Returns:
        The Figure; ``fig.spread`` holds ``{"activations before", "weights before", "activations after",
        "weights after"}``: max / median of each curve.
    """
    a = act_absmax.detach().float().cpu()
    w = weight.detach().float().abs().amax(dim=0).cpu()
    s = s.detach().float().cpu()
    curves = {"activations before": a, "weights before": w, "activations after": a / s, "weights after": w * s}
    positive = torch.cat([v[v > 0] for v in curves.values()])
    floor = float(positive.min()) / 2 if positive.numel() else 1e-3
    edges = torch.arange(a.numel() + 1).numpy() - 0.5
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), sharey=True)
    spread = {}
    for name, values in curves.items():
        alive = values[values > 0]
        spread[name] = float(alive.max() / alive.median()) if alive.numel() else float("nan")
        ax = axes[0] if name.endswith("before") else axes[1]
        is_act = name.startswith("activations")
        label = ("max|X_j|" if is_act else "max_i |W_ij|") + ("" if name.endswith("before") else
                                                              (" / s_j" if is_act else " * s_j"))
        # a filled step line per curve (a bar per channel would be hundreds of artists)
        ax.stairs(values.clamp(min=floor).numpy(), edges, fill=is_act, baseline=floor, alpha=0.8 if is_act else 1.0,
                  color="tab:red" if is_act else "tab:blue", label=f"{label} (max/median {spread[name]:.1f})")
    for ax, stage in zip(axes, ("before smoothing", "after smoothing")):
        ax.set_yscale("log")
        ax.set_xlim(-1, a.numel())
        ax.set_xlabel("input channel j")
        ax.set_title(stage, fontsize=10)
        ax.legend(fontsize=8, loc="upper right")
    axes[0].set_ylabel("largest magnitude")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.spread = spread
    return fig
