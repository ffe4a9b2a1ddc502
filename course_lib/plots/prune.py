"""Notebook 12 plots: mask patterns, weight histograms, sensitivity curves, sparsity vs quality."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure


def plot_masks(masks: Mapping[str, torch.Tensor], rows: int = 16, cols: int = 32, title: str | None = None) -> Figure:
    """The top-left ``rows x cols`` corner of each bool mask (black = kept), side by side.

    Args:
        masks: ``{label: bool [out, in]}``.
        rows, cols: size of the corner shown.

    Returns:
        The Figure.
    """
    if not masks:
        raise ValueError("masks must not be empty")
    fig, axes = plt.subplots(1, len(masks), figsize=(3.2 * len(masks), 2.2), squeeze=False)
    for ax, (label, mask) in zip(axes[0], masks.items()):
        m = mask.detach().to("cpu")[:rows, :cols].float()
        ax.imshow(m.numpy(), cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{label}\nkept {100 * mask.float().mean().item():.0f}%", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_weight_histogram(w: torch.Tensor, mask: torch.Tensor, title: str = "weights kept and pruned") -> Figure:
    """Histogram of a weight's values, the pruned ones in red (magnitude pruning cuts out the middle)."""
    w = w.detach().to("cpu", torch.float32).flatten()
    mask = mask.detach().to("cpu").flatten()
    fig, ax = plt.subplots(figsize=(6, 3))
    bins = torch.linspace(float(w.min()), float(w.max()), 81).numpy()
    ax.hist(w[mask].numpy(), bins=bins, color="tab:blue", label=f"kept ({int(mask.sum())})")
    ax.hist(w[~mask].numpy(), bins=bins, color="tab:red", label=f"pruned ({int((~mask).sum())})")
    ax.set_xlabel("weight value")
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_sensitivity(sparsities: Sequence[float], results: Mapping[str, Sequence[float]], ylabel: str,
                     baseline: float | None = None, title: str = "sensitivity scan") -> Figure:
    """One line per layer (group): the metric when only that layer is pruned, against its sparsity."""
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    xs = [100 * s for s in sparsities]
    for label, values in results.items():
        ax.plot(xs, list(values), "o-", ms=3, label=label)
    if baseline is not None:
        ax.axhline(baseline, color="gray", ls="--", lw=1, label="dense")
    ax.set_xlabel("sparsity of the pruned layer (%)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def plot_sparsity_curve(sparsities: Sequence[float], curves: Mapping[str, Sequence[float]], dense: float,
                        ylabel: str = "perplexity", title: str = "sparsity vs perplexity",
                        points: Mapping[str, tuple[float, float]] | None = None) -> Figure:
    """Quality against sparsity for several methods (log y), the dense model as a dashed line.

    Args:
        points: extra single markers ``{label: (sparsity, value)}`` (e.g. 2:4 at 0.5).
    """
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    xs = [100 * s for s in sparsities]
    for label, values in curves.items():
        ax.plot(xs, list(values), "o-", label=label)
    for label, (s, v) in (points or {}).items():
        ax.plot([100 * s], [v], "*", ms=12, label=label)
    ax.axhline(dense, color="gray", ls="--", lw=1, label=f"dense ({dense:.1f})")
    ax.set_yscale("log")
    ax.set_xlabel("sparsity of every Linear (%)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_size_quality(rows: Sequence[Mapping], x: str = "size_mb", y: str = "perplexity", label: str = "setting",
                      title: str = "pruning plus quantization: size vs quality") -> Figure:
    """Scatter of size against quality, one labelled point per row."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for r in rows:
        ax.plot(r[x], r[y], "o")
        ax.annotate(str(r[label]), (r[x], r[y]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("weights of the Linear layers (MB)")
    ax.set_ylabel(y)
    ax.set_title(title)
    fig.tight_layout()
    return fig
