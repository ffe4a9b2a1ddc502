"""Plots for notebook 03 (granularity); every function returns the Figure it drew on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import granularity

__all__ = [
    "plot_scale_layout",
    "plot_channel_ranges",
    "plot_codes_used",
    "plot_group_size_curve",
    "plot_pareto",
    "plot_outlier_errors",
    "plot_activation_ranges",
    "draw_error_histogram",
]

#: One colour per granularity, shared by every plot of the notebook.
COLORS = {"tensor": "tab:red", "channel": "tab:blue", "input_channel": "tab:purple", "group": "tab:green",
          "token": "tab:orange"}
MARKERS = {"tensor": "s", "channel": "o", "input_channel": "D", "group": "^", "token": "v"}


def _scale_index(shape: tuple[int, int], layout: str, group_size: int) -> np.ndarray:
    rows, cols = shape
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    if layout == "tensor":
        return np.zeros(shape, dtype=int)
    if layout in ("channel", "token"):
        return r
    if layout == "input_channel":
        return c
    return r * (cols // group_size) + c // group_size


def plot_scale_layout(shape: tuple[int, int] = (6, 16), group_size: int = 4) -> plt.Figure:
    """Which weights share a scale: one panel per granularity, one colour per scale.

    Args:
        shape: ``(out_features, in_features)`` of the toy matrix drawn.
        group_size: a divisor of ``in_features`` for the per-group panel.
    """
    rows, cols = shape
    if cols % group_size:
        raise ValueError(f"group_size={group_size} must divide in_features={cols}")
    panels = [("tensor", "per-tensor: 1 scale"),
              ("channel", f"per-channel (rows): {rows} scales"),
              ("input_channel", f"per-input-channel (columns): {cols} scales"),
              ("group", f"per-group of {group_size}: {rows * cols // group_size} scales")]
    fig, axes = plt.subplots(1, 4, figsize=(13, 2.6))
    cmap = plt.get_cmap("tab20")
    for ax, (layout, title) in zip(axes, panels):
        idx = _scale_index(shape, layout, group_size)
        ax.imshow(idx % 20, cmap=cmap, vmin=0, vmax=19, aspect="equal")
        ax.set_xticks(np.arange(-0.5, cols, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, rows, 1), minor=True)
        ax.grid(which="minor", color="white", lw=0.6)
        ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("input dimension (in_features)", fontsize=8)
    axes[0].set_ylabel("output channel", fontsize=8)
    fig.suptitle("A weight [out, in]: cells of one colour share one scale and zero point "
                 "(for activations [tokens, features], per-token = the rows)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_channel_ranges(w: torch.Tensor, name: str = "") -> plt.Figure:
    """Sorted per-row and per-column max|w| of a weight, against the whole tensor's max|w| (log scale)."""
    w = w.detach().float().cpu()
    row = w.abs().amax(dim=1).sort(descending=True).values
    col = w.abs().amax(dim=0).sort(descending=True).values
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    ax.plot(np.linspace(0, 1, row.numel()), row.numpy(), color=COLORS["channel"], label="per output channel (row)")
    ax.plot(np.linspace(0, 1, col.numel()), col.numpy(), color=COLORS["input_channel"],
            label="per input channel (column)")
    ax.axhline(float(w.abs().max()), color=COLORS["tensor"], ls="--", label="whole tensor")
    ax.axhline(float(w.std()), color="0.5", ls=":", label="standard deviation of all weights")
    ax.set_yscale("log")
    ax.set_xlabel("rows / columns, sorted by their max|w| (fraction)")
    ax.set_ylabel("max |w|")
    ax.set_title(f"{name} {tuple(w.shape)}: the range each scale must cover".strip())
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_codes_used(w: torch.Tensor, bits: int, name: str = "") -> plt.Figure:
    """Histogram over rows of how many distinct codes each row uses, per-tensor vs per-channel scales."""
    w = w.detach().float().cpu()
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    levels = 2**bits
    bins = np.arange(0.5, levels + 1.5, 1)
    for gran in ("tensor", "channel"):
        fq = granularity.fake_quantize(w, bits, gran)
        used = [torch.unique(r).numel() for r in fq]
        ax.hist(used, bins=bins, color=COLORS[gran], alpha=0.7, label=f"per-{gran} (median {int(np.median(used))})")
    ax.set_xlabel(f"distinct values a row uses (of {levels} codes)")
    ax.set_ylabel("rows")
    ax.set_title(f"{name}: {bits}-bit codes actually used per row".strip())
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_group_size_curve(w: torch.Tensor, bits_list: Sequence[int] = (3, 4, 8),
                          group_sizes: Sequence[int] = (8, 16, 32, 64, 128), name: str = "") -> plt.Figure:
    """Relative weight error ``||w - fq(w)||^2 / ||w||^2`` vs group size, per bit width.

    Per-channel (one group per row) and per-tensor are drawn as dashed and dotted lines.
    """
    w = w.detach().float().cpu()
    norm = float(w.double().pow(2).sum())
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for i, bits in enumerate(bits_list):
        color = plt.get_cmap("viridis")(i / max(1, len(bits_list) - 1) * 0.85)
        errs = [float((granularity.fake_quantize(w, bits, "group", g) - w).double().pow(2).sum()) / norm
                for g in group_sizes]
        ax.plot(group_sizes, errs, "o-", color=color, label=f"{bits} bits, per-group")
        ch = float((granularity.fake_quantize(w, bits, "channel") - w).double().pow(2).sum()) / norm
        te = float((granularity.fake_quantize(w, bits, "tensor") - w).double().pow(2).sum()) / norm
        ax.axhline(ch, color=color, ls="--", lw=1)
        ax.axhline(te, color=color, ls=":", lw=1)
    ax.plot([], [], "k--", lw=1, label="per-channel")
    ax.plot([], [], "k:", lw=1, label="per-tensor")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(list(group_sizes))
    ax.set_xticklabels([str(g) for g in group_sizes])
    ax.set_xlabel("group size (weights per scale along the input dimension)")
    ax.set_ylabel("relative error ||w - w_q||² / ||w||²")
    ax.set_title(f"{name}: smaller groups, smaller error".strip())
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_pareto(rows: Sequence[Mapping], title: str = "") -> plt.Figure:
    """Error vs effective bits per parameter: weight error (left) and 1 - embedding cosine (right).

    Args:
        rows: dicts from ``course_lib.evaluate.granularity_sweep`` (keys ``bits``, ``label``, ``granularity``,
            ``effective_bits``, ``rel_error``, ``cosine``).
    """
    fig, (ax_w, ax_c) = plt.subplots(1, 2, figsize=(12, 4.2))
    labels = list(dict.fromkeys(r["label"] for r in rows))
    group_shades = plt.get_cmap("Greens")
    n_groups = sum(1 for lab in labels if lab.startswith("group"))
    k = 0
    for lab in labels:
        pts = sorted((r for r in rows if r["label"] == lab), key=lambda r: r["effective_bits"])
        gran = pts[0]["granularity"]
        if gran == "group":
            color = group_shades(0.5 + 0.45 * k / max(1, n_groups - 1))
            k += 1
        else:
            color = COLORS[gran]
        x = [r["effective_bits"] for r in pts]
        for ax, y in ((ax_w, [r["rel_error"] for r in pts]), (ax_c, [max(1 - r["cosine"], 1e-7) for r in pts])):
            ax.plot(x, y, marker=MARKERS[gran], color=color, label=lab)
            for r, xi, yi in zip(pts, x, y):
                ax.annotate(f"{r['bits']}b", (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=7)
    # the Pareto front over all points: lowest error at or below each size
    for ax, key in ((ax_w, "rel_error"), (ax_c, "cosine")):
        pts = sorted(rows, key=lambda r: r["effective_bits"])
        front, best = [], float("inf")
        for r in pts:
            err = r[key] if key == "rel_error" else max(1 - r[key], 1e-7)
            if err < best:
                front.append((r["effective_bits"], err))
                best = err
        ax.step(*zip(*front), where="post", color="0.6", lw=3, alpha=0.35, zorder=0, label="Pareto front")
        ax.set_yscale("log")
        ax.set_xlabel("effective bits per parameter (codes + fp16 scales + zero points)")
        ax.grid(alpha=0.3)
    ax_w.set_ylabel("weight error ||W - W_q||² / ||W||²")
    ax_c.set_ylabel("1 - cosine(quantized, fp32 embedding)")
    ax_w.legend(fontsize=8)
    fig.suptitle(title or "Error vs storage: down and to the left is better", fontsize=11)
    fig.tight_layout()
    return fig


def plot_outlier_errors(results: Mapping[str, Mapping[str, float]], bits: int) -> plt.Figure:
    """Grouped bars: relative error of the ordinary weights, per case (rows) and granularity (bars).

    Args:
        results: ``{case: {granularity label: relative error}}``.
        bits: the bit width, for the title.
    """
    cases = list(results)
    grans = list(dict.fromkeys(g for c in cases for g in results[c]))
    fig, ax = plt.subplots(figsize=(9, 3.8))
    width = 0.8 / len(grans)
    groups = [g for g in grans if g.startswith("group")]
    for j, g in enumerate(grans):
        if g in groups:
            color = plt.get_cmap("Greens")(0.5 + 0.45 * groups.index(g) / max(1, len(groups) - 1))
        else:
            color = COLORS.get(g.replace("per-", "").replace("-", "_"), "0.5")
        vals = [results[c].get(g, np.nan) for c in cases]
        ax.bar(np.arange(len(cases)) + (j - (len(grans) - 1) / 2) * width, vals, width, color=color, label=g)
    ax.set_xticks(np.arange(len(cases)))
    ax.set_xticklabels(cases, fontsize=9)
    ax.set_yscale("log")
    ax.axhline(1.0, color="k", lw=0.8, ls=":")
    ax.text(len(cases) - 0.5, 1.0, "error = signal (all lost)", fontsize=7, ha="right", va="bottom")
    ax.set_ylabel("relative error of the other weights")
    ax.set_title(f"One large channel, {bits}-bit codes: who pays for it?")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def plot_activation_ranges(a: torch.Tensor, name: str = "") -> plt.Figure:
    """max|a| per token (left) and per feature (right) of activations ``[tokens, features]``."""
    a = a.detach().float().cpu()
    tok = a.abs().amax(dim=1)
    feat = a.abs().amax(dim=0)
    fig, (ax_t, ax_f) = plt.subplots(1, 2, figsize=(12, 3.4))
    ax_t.bar(np.arange(tok.numel()), tok.numpy(), width=1.0, color=COLORS["token"])
    ax_t.set_xlabel("token (all sentences, padding removed)")
    ax_t.set_ylabel("max |a| of the token")
    ax_t.set_title("per token: the range a per-token scale covers")
    ax_f.bar(np.arange(feat.numel()), feat.numpy(), width=1.0, color=COLORS["input_channel"])
    top = feat.topk(min(3, feat.numel())).indices.tolist()
    for i in top:
        ax_f.annotate(str(i), (i, float(feat[i])), textcoords="offset points", xytext=(3, 0), fontsize=8)
    ax_f.set_xlabel("feature (input channel of the next Linear)")
    ax_f.set_ylabel("max |a| of the feature")
    ax_f.set_title("per feature: a few outlier features")
    for ax in (ax_t, ax_f):
        ax.axhline(float(a.abs().max()), color=COLORS["tensor"], ls="--", lw=1, label="whole tensor")
        ax.legend(fontsize=8)
    if name:
        fig.suptitle(name, fontsize=10)
    fig.tight_layout()
    return fig


def draw_error_histogram(ax, w: torch.Tensor, fq: torch.Tensor, bins: int = 80) -> dict:
    """Histogram (log counts) of ``w - fq`` on ``ax``; returns mse, rel_error, sqnr_db, max_error, zeroed.

    ``zeroed`` is the fraction of non-zero weights that the quantizer turned into exact zeros.
    """
    w = w.detach().float().cpu()
    fq = fq.detach().float().cpu()
    err = (w - fq).flatten()
    lim = max(float(err.abs().max()), 1e-12)
    ax.hist(err.numpy(), bins=bins, range=(-lim, lim), color="tab:blue")
    ax.set_yscale("log")
    ax.set_xlabel("w - w_q")
    ax.set_ylabel("weights (log)")
    mse = float(err.double().pow(2).mean())
    signal = float(w.double().pow(2).mean())
    nonzero = w != 0
    return {"mse": mse, "rel_error": mse / signal if signal > 0 else 0.0,
            "sqnr_db": float(10 * np.log10(signal / mse)) if mse > 0 else float("inf"),
            "max_error": float(err.abs().max()),
            "zeroed": float(((fq == 0) & nonzero).sum()) / max(1, int(nonzero.sum()))}
