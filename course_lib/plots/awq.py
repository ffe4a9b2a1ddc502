"""Plots for notebook 08 (AWQ); every function returns the Figure it drew on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch

__all__ = [
    "plot_channel_magnitudes",
    "plot_salient_experiment",
    "plot_ratio_search",
    "plot_clip_shrink",
    "plot_method_comparison",
]


def plot_channel_magnitudes(act_scale: torch.Tensor, weight: torch.Tensor, salient: torch.Tensor | None = None,
                            title: str = "") -> plt.Figure:
    """Mean |x| per input channel (top) and mean |W| per input column (bottom), salient channels in red.

    Args:
        act_scale: ``[in_features]`` mean activation magnitudes.
        weight: ``[out_features, in_features]`` the layer's weight.
        salient: indices to highlight (e.g. the top 1% by ``act_scale``).
    """
    a = act_scale.detach().float().cpu()
    wcol = weight.detach().float().abs().mean(dim=0).cpu()
    idx = torch.arange(a.numel())
    fig, (ax_a, ax_w) = plt.subplots(2, 1, figsize=(10, 4.8), sharex=True)
    ax_a.bar(idx.numpy(), a.numpy(), width=1.0, color="tab:blue")
    ax_w.bar(idx.numpy(), wcol.numpy(), width=1.0, color="tab:gray")
    if salient is not None and salient.numel():
        s = salient.detach().cpu()
        ax_a.bar(s.numpy(), a[s].numpy(), width=2.5, color="tab:red", label=f"top {s.numel()} by activation")
        ax_w.bar(s.numpy(), wcol[s].numpy(), width=2.5, color="tab:red")
        ax_a.legend(fontsize=8, loc="upper right")
    ax_a.set_yscale("log")
    ax_a.set_ylabel("mean |x|")
    ax_w.set_ylabel("mean |W| of column")
    ax_w.set_xlabel("input channel")
    ax_a.set_title(title or "activation magnitude per input channel vs weight magnitude per column")
    fig.tight_layout()
    return fig


def plot_salient_experiment(results: Mapping[str, float], fp: float | None = None,
                            title: str = "") -> plt.Figure:
    """Horizontal bars of perplexity per variant (``{label: perplexity}``), the fp model as a line."""
    labels = list(results)
    values = [results[k] for k in labels]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(labels) + 1.4))
    bars = ax.barh(range(len(labels)), values, color="tab:blue")
    for bar, v in zip(bars, values):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {v:.2f}", va="center", fontsize=9)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    if fp is not None:
        ax.axvline(fp, color="tab:green", ls="--", lw=1.2, label=f"fp32 {fp:.2f}")
        ax.legend(fontsize=8, loc="lower right")
    lo = min(values + ([fp] if fp is not None else []))
    ax.set_xlim(lo * 0.95, max(values) * 1.08)
    ax.set_xlabel("perplexity (lower is better)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_ratio_search(losses: Mapping[str, Sequence[float]], title: str = "") -> plt.Figure:
    """The scale search of several layer groups: loss / RTN loss (ratio 0) against the ratio, minima marked."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, curve in losses.items():
        c = torch.tensor(list(curve), dtype=torch.float64)
        rel = c / c[0] if c[0] > 0 else c
        ratios = torch.arange(len(c)) / len(c)
        (line,) = ax.plot(ratios.numpy(), rel.numpy(), marker=".", label=name)
        best = int(torch.argmin(c))
        ax.plot([ratios[best].item()], [rel[best].item()], "o", ms=9, mfc="none", color=line.get_color())
    ax.axhline(1.0, color="0.6", lw=0.8, ls="--")
    ax.set_xlabel("ratio (s = mean|x| ** ratio)")
    ax.set_ylabel("output MSE / RTN's (ratio 0)")
    ax.set_title(title or "AWQ's grid search: circles mark the chosen ratio")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_clip_shrink(shrinks: Mapping[str, torch.Tensor], title: str = "") -> plt.Figure:
    """Histogram of the chosen clip range ``max_val / max|w|`` per layer (1 = no clipping)."""
    fig, ax = plt.subplots(figsize=(8, 3.6))
    edges = torch.linspace(0.475, 1.025, 12)
    for name, s in shrinks.items():
        ax.hist(s.detach().float().flatten().cpu().numpy(), bins=edges.numpy(), histtype="step", lw=1.5, label=name)
    ax.set_xlabel("chosen range / max|w| of the group")
    ax.set_ylabel("groups (output channel x group)")
    ax.set_title(title or "clip search: how far each group's range shrinks")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_method_comparison(rows: Sequence[Mapping], fp: float | None = None, title: str = "") -> plt.Figure:
    """Grouped bars of perplexity per method for each ``bits``/``group_size`` setting (rows of ``quantization_table``)."""
    rows = [r for r in rows if r.get("bits") is not None]
    settings = list(dict.fromkeys((r["bits"], r["group_size"]) for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for i, method in enumerate(methods):
        xs, ys = [], []
        for j, setting in enumerate(settings):
            for r in rows:
                if r["method"] == method and (r["bits"], r["group_size"]) == setting:
                    xs.append(j + (i - (len(methods) - 1) / 2) * width)
                    ys.append(r["perplexity"])
        bars = ax.bar(xs, ys, width=width, label=method)
        for bar, y in zip(bars, ys):
            ax.text(bar.get_x() + bar.get_width() / 2, y, f"{y:.2f}", ha="center", va="bottom", fontsize=8)
    if fp is not None:
        ax.axhline(fp, color="tab:green", ls="--", lw=1.2, label=f"fp32 {fp:.2f}")
    ax.set_xticks(range(len(settings)), [f"w{b} " + ("per-channel" if g is None else f"g{g}") for b, g in settings])
    values = [r["perplexity"] for r in rows] + ([fp] if fp is not None else [])
    ax.set_ylim(min(values) * 0.9, max(values) * 1.06)
    ax.set_ylabel("perplexity")
    ax.set_title(title or "perplexity of the course LM (lower is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
