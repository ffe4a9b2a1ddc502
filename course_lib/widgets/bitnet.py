"""Notebook 10 widget: ternarize a weight distribution with a step of your choice."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from ..plots.bitnet import draw_ternary_histogram

#: Weight distributions the widget offers (all with standard deviation about 1 before outliers).
DISTRIBUTIONS = ("gaussian", "laplace", "gaussian + 0.1% outliers (x8)")


def sample_weights(distribution: str, n: int = 50_000, seed: int = 0) -> torch.Tensor:
    """``n`` weights from one of :data:`DISTRIBUTIONS`."""
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    gen = torch.Generator().manual_seed(seed)
    if distribution == "laplace":
        u = torch.rand(n, generator=gen, dtype=torch.float64) - 0.5
        w = -torch.sign(u) * torch.log1p(-2 * u.abs()) / 2**0.5
        return w.float()
    w = torch.randn(n, generator=gen)
    if distribution.startswith("gaussian +"):
        w[: max(1, n // 1000)] *= 8
    return w


def ternary_stats(w: torch.Tensor, multiplier: float) -> dict:
    """Step ``gamma = multiplier * mean|w|``: shares of -1/0/+1 and the relative MSE (no plot)."""
    gamma = multiplier * float(w.abs().mean())
    codes = (w * (1.0 / gamma)).round().clamp(-1, 1)
    rel_mse = float((w - gamma * codes).pow(2).mean() / w.pow(2).mean())
    return {"gamma": gamma, "zeros": float((codes == 0).float().mean()), "rel_mse": rel_mse}


def ternary_explorer(multiplier: float = 1.0):
    """A distribution menu and a slider for the step as a multiple of mean|w|; histogram and numbers.

    The box exposes ``update()`` (redraws, returns the numbers) and its controls ``distribution``,
    ``multiplier``, ``readout``, so tests can drive it without a browser.
    """
    import ipywidgets as widgets

    dist = widgets.Dropdown(options=list(DISTRIBUTIONS), value=DISTRIBUTIONS[0], description="weights")
    mult = widgets.FloatSlider(value=multiplier, min=0.1, max=4.0, step=0.05, description="step / mean|w|",
                               style={"description_width": "initial"}, readout_format=".2f")
    readout = widgets.HTML()
    out = widgets.Output()

    def update(change=None) -> dict:
        w = sample_weights(dist.value)
        stats = ternary_stats(w, mult.value)
        best = min((ternary_stats(w, m / 20)["rel_mse"], m / 20) for m in range(2, 81))
        absmax_mult = float(w.abs().max() / w.abs().mean())
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(9, 3.4))
            draw_ternary_histogram(ax, w, stats["gamma"],
                                   title=f"step = {mult.value:.2f} x mean|w| = {stats['gamma']:.3f}")
            fig.tight_layout()
            plt.show()
            plt.close(fig)
        readout.value = (
            f"zeros <b>{stats['zeros']:.1%}</b> | relative MSE <b>{stats['rel_mse']:.3f}</b> | "
            f"absmean (1.00 x) gives {ternary_stats(w, 1.0)['rel_mse']:.3f}; the best multiplier on a 0.05 grid is "
            f"{best[1]:.2f} ({best[0]:.3f}); absmax would be {absmax_mult:.1f} x mean|w| "
            f"({ternary_stats(w, absmax_mult)['rel_mse']:.3f})")
        stats.update(best_multiplier=best[1], best_rel_mse=best[0])
        box.last = stats
        return stats

    for control in (dist, mult):
        control.observe(update, names="value")
    box = widgets.VBox([widgets.HBox([dist, mult]), readout, out])
    box.update = update
    box.distribution = dist
    box.multiplier = mult
    box.readout = readout
    update()
    return box
