"""Plots for notebook 05 (NF4); every function returns the Figure it drew on."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch

from .. import nf4

__all__ = [
    "SCHEME_COLORS",
    "int4_codebook",
    "scheme_codebooks",
    "draw_code_points",
    "plot_nf4_construction",
    "plot_codebooks",
    "plot_block_normalized",
    "plot_code_usage",
    "plot_error_bars",
    "plot_qlora_loss",
]

SCHEME_COLORS = {"nf4": "tab:blue", "fp4": "tab:orange", "int4": "tab:green", "int4_asym": "tab:purple"}


def int4_codebook() -> torch.Tensor:
    """Symmetric int4 (codes -7..7) on the absmax-normalized axis: ``k / 7``, 15 values."""
    return torch.arange(-7, 8, dtype=torch.float32) / 7


def scheme_codebooks() -> dict:
    """{"nf4", "fp4", "int4"}: each scheme's distinct values on the normalized axis [-1, 1], sorted."""
    return {
        "nf4": nf4.nf4_codebook(),
        "fp4": torch.unique(nf4.fp4_codebook()),  # +0 and -0 are one value
        "int4": int4_codebook(),
    }


def draw_code_points(ax, books: dict, y0: float = 0.0, height: float = 1.0) -> None:
    """Vertical ticks for each codebook's values, one horizontal band per codebook."""
    n = len(books)
    for i, (name, values) in enumerate(books.items()):
        lo = y0 + height * (n - 1 - i) / n
        hi = lo + height / n * 0.8
        for v in values.tolist():
            ax.plot([v, v], [lo, hi], color=SCHEME_COLORS.get(name, "k"), lw=1.6)
        ax.text(-1.08, (lo + hi) / 2, f"{name} ({values.numel()})", ha="right", va="center", fontsize=9,
                color=SCHEME_COLORS.get(name, "k"))


def plot_nf4_construction(offset: float = nf4.NF4_OFFSET):
    """The normal density with NF4's quantiles: equal-probability points, then rescaled to [-1, 1]."""
    book = nf4.nf4_codebook(offset)
    scale = float(torch.special.ndtri(torch.tensor(offset, dtype=torch.float64)))  # largest quantile, in sigmas
    z = torch.linspace(-3.2, 3.2, 600, dtype=torch.float64)
    pdf = torch.exp(-z**2 / 2) / math.sqrt(2 * math.pi)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    ax.plot(z.numpy(), pdf.numpy(), color="0.3")
    ax.fill_between(z.numpy(), pdf.numpy(), where=(z.abs() <= scale).numpy(), color="tab:blue", alpha=0.12)
    for v in (book.double() * scale).tolist():
        ax.axvline(v, color="tab:blue", lw=1)
    ax.set_xlabel("standard deviations")
    ax.set_title(f"NF4 values as normal quantiles (outermost at {scale:.3f} sigma)")
    codes = torch.arange(16)
    ax2.plot(codes.numpy(), book.numpy(), "o-", color="tab:blue", label="NF4")
    ax2.plot(codes.numpy(), torch.linspace(-1, 1, 16).numpy(), "s--", color="tab:green", ms=4,
             label="16 evenly spaced values")
    ax2.axhline(0, color="0.8", lw=0.8)
    ax2.set_xlabel("code")
    ax2.set_ylabel("value (x absmax)")
    ax2.set_title("NF4: dense near 0, sparse in the tails")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_codebooks(samples: torch.Tensor | None = None, books: dict | None = None, ax=None, bins: int = 120):
    """The code points of NF4, FP4 and int4 over a histogram of block-normalized values (``w / absmax``)."""
    books = books or scheme_codebooks()
    if ax is None:
        fig, ax = plt.subplots(figsize=(10, 3.8))
    else:
        fig = ax.figure
    if samples is not None:
        hist_ax = ax.twinx()
        hist_ax.hist(samples.flatten().float().numpy(), bins=bins, range=(-1, 1), color="0.8")
        hist_ax.set_yticks([])
        hist_ax.set_zorder(ax.get_zorder() - 1)
        ax.patch.set_visible(False)
    draw_code_points(ax, books)
    ax.set_xlim(-1.45, 1.05)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_xlabel("value / block absmax (grey: the weights' histogram)")
    ax.set_title("where each 4-bit format puts its 16 codes")
    fig.tight_layout()
    return fig


def plot_block_normalized(w: torch.Tensor, blocksize: int = 64):
    """Histogram of ``w / absmax`` per block, with NF4's code points and decision midpoints."""
    flat = w.detach().flatten().float()
    n = flat.numel() - flat.numel() % blocksize
    blocks = flat[:n].reshape(-1, blocksize)
    normed = (blocks / blocks.abs().amax(dim=1, keepdim=True).clamp(min=1e-38)).flatten()
    fig, ax = plt.subplots(figsize=(10, 3.4))
    ax.hist(normed.numpy(), bins=200, range=(-1, 1), color="0.7")
    book = nf4.nf4_codebook()
    for v in book.tolist():
        ax.axvline(v, color="tab:blue", lw=1)
    for m in ((book[:-1] + book[1:]) / 2).tolist():
        ax.axvline(m, color="tab:red", lw=0.6, ls=":")
    ax.set_xlabel("w / block absmax (blue: NF4 values, red dotted: decision boundaries)")
    ax.set_ylabel("count")
    ax.set_title(f"block-normalized weights (block {blocksize}): every block has a value at exactly +-1")
    fig.tight_layout()
    return fig


def plot_code_usage(codes: torch.Tensor, title: str = "how often each NF4 code is used"):
    """Bar chart of the share of each 4-bit code (``codes``: uint8 codes, unpacked)."""
    counts = torch.bincount(codes.flatten().long(), minlength=16).double()
    share = counts / counts.sum()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.bar(range(16), share.numpy(), color="tab:blue")
    ax.axhline(1 / 16, color="k", ls="--", lw=1, label="1/16 (equal use)")
    ax.set_xlabel("code")
    ax.set_ylabel("share of weights")
    nz = share[share > 0]
    entropy = float(-(nz * nz.log2()).sum())
    ax.set_title(f"{title}: entropy {entropy:.3f} of 4 bits")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.entropy = entropy
    return fig


def plot_error_bars(rows: list[dict], metric: str = "rel_mse", title: str = ""):
    """Grouped bars: one group per weight set (``row["weights"]``), one bar per scheme (``row["scheme"]``)."""
    sets = list(dict.fromkeys(r["weights"] for r in rows))
    schemes = list(dict.fromkeys(r["scheme"] for r in rows))
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / len(schemes)
    for j, scheme in enumerate(schemes):
        vals = [next(r[metric] for r in rows if r["weights"] == s and r["scheme"] == scheme) for s in sets]
        ax.bar([i + j * width for i in range(len(sets))], vals, width, label=scheme,
               color=SCHEME_COLORS.get(scheme, None))
    ax.set_xticks([i + width * (len(schemes) - 1) / 2 for i in range(len(sets))])
    ax.set_xticklabels(sets)
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} by 4-bit scheme (block 64; lower is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_qlora_loss(losses: list[float], accuracies: list[tuple[int, float]] | None = None):
    """Training loss of the adapter (and optionally accuracy checkpoints (step, acc))."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.plot(range(1, len(losses) + 1), losses, color="tab:blue", label="training loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.set_title("QLoRA: only the adapters train; the NF4 base stays frozen")
    if accuracies:
        ax2 = ax.twinx()
        ax2.plot([s for s, _ in accuracies], [a for _, a in accuracies], "o-", color="tab:orange", label="test accuracy")
        ax2.set_ylabel("test accuracy")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="center right", fontsize=8)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig
