"""Plots for notebook 11 (knowledge distillation); every function returns the Figure it drew on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch

__all__ = ["draw_soft_targets", "plot_soft_targets", "plot_gradient_vs_temperature", "plot_seed_pairs",
           "plot_accuracy_dots", "plot_loss_curves"]


def draw_soft_targets(ax, logits: torch.Tensor, temperatures: Sequence[float], title: str | None = None) -> None:
    """Grouped bars of ``softmax(logits / T)`` for each temperature (one group per class)."""
    z = logits.detach().double().cpu().flatten()
    classes = z.numel()
    width = 0.8 / len(temperatures)
    cmap = plt.get_cmap("viridis")
    for i, t in enumerate(temperatures):
        p = torch.softmax(z / t, dim=0)
        ax.bar([c + (i - (len(temperatures) - 1) / 2) * width for c in range(classes)], p.numpy(), width=width,
               color=cmap(i / max(1, len(temperatures) - 1)), label=f"T = {t:g}")
    ax.set_xticks(range(classes))
    ax.set_xlabel("class")
    ax.set_ylabel("probability")
    ax.set_yscale("log")
    smallest = min(float(torch.softmax(z / t, dim=0).min()) for t in temperatures)
    ax.set_ylim(max(1e-12, smallest / 3), 3.0)
    ax.legend(fontsize=8, ncol=len(temperatures), loc="upper left")
    if title:
        ax.set_title(title)


def plot_soft_targets(logits: torch.Tensor, temperatures: Sequence[float] = (1, 4, 10), image: torch.Tensor | None = None,
                      title: str | None = None):
    """The teacher's probabilities at several temperatures (log scale), with the 8x8 image when given."""
    if image is not None:
        fig, (ax_img, ax) = plt.subplots(1, 2, figsize=(10, 3.4), gridspec_kw={"width_ratios": [1, 4]})
        ax_img.imshow(image.detach().cpu().reshape(8, 8).numpy(), cmap="gray_r")
        ax_img.set_axis_off()
    else:
        fig, ax = plt.subplots(figsize=(8, 3.4))
    draw_soft_targets(ax, logits, temperatures, title)
    fig.tight_layout()
    return fig


def plot_gradient_vs_temperature(temperatures: Sequence[float], with_t2: Sequence[float], without_t2: Sequence[float]):
    """Gradient norm of the soft-target loss against T, with and without the T^2 factor (log-log)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.loglog(temperatures, with_t2, "o-", label="T^2 * KL (Hinton)")
    ax.loglog(temperatures, without_t2, "s--", label="KL alone")
    t0, g0 = temperatures[-1], without_t2[-1]
    ax.loglog(temperatures, [g0 * (t0 / t) ** 2 for t in temperatures], color="0.6", lw=1, ls=":", label="slope 1/T^2")
    ax.set_xlabel("temperature T")
    ax.set_ylabel("|gradient w.r.t. student logits|")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_seed_pairs(results: Mapping[str, Sequence[Mapping]], a: str = "alone", b: str = "distilled"):
    """One panel per setting: each seed's accuracy alone and distilled, joined by a line."""
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6), squeeze=False)
    for ax, (name, rows) in zip(axes[0], results.items()):
        for r in rows:
            ax.plot([0, 1], [100 * r[a], 100 * r[b]], "o-", color="tab:blue" if r[b] >= r[a] else "tab:red", alpha=0.8)
        ax.set_xticks([0, 1], [a, b])
        ax.set_xlim(-0.4, 1.4)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(name, fontsize=10)
    fig.tight_layout()
    return fig


def plot_accuracy_dots(results: Mapping[str, Sequence[float]], title: str | None = None):
    """Accuracy of several methods: one dot per seed and a bar at the mean."""
    fig, ax = plt.subplots(figsize=(1.6 * len(results) + 2, 3.6))
    for i, (name, values) in enumerate(results.items()):
        v = [100 * x for x in values]
        ax.bar(i, sum(v) / len(v), color="0.85", width=0.6)
        ax.plot([i] * len(v), v, "o", color="tab:blue")
    ax.set_xticks(range(len(results)), list(results), fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    lo = min(min(v) for v in results.values()) * 100
    ax.set_ylim(max(0, lo - 5), 100)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_loss_curves(curves: Mapping[str, Sequence[float]], title: str | None = None, ylabel: str = "training loss"):
    """Training losses, one line per run."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for name, losses in curves.items():
        ax.plot(range(1, len(losses) + 1), losses, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
