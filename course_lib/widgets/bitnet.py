"""Notebook 10 widget: ternarize a weight distribution with a step of your choice."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from .. import affine, bitnet
from ..data import gaussian_with_outliers, weight_sample
from ..plots.bitnet import draw_ternary_histogram

#: Weight distributions the widget offers (all with standard deviation 1 before outliers).
DISTRIBUTIONS = ("gaussian", "laplace", "gaussian + 0.1% outliers (x8)")
SAMPLE_SIZE = 50_000


def sample(distribution: str) -> torch.Tensor:
    """The widget's :data:`SAMPLE_SIZE` weights of one of :data:`DISTRIBUTIONS` (from ``course_lib.data``).

    Args:
        distribution: a menu entry of :data:`DISTRIBUTIONS`.

    Returns:
        float32 ``[SAMPLE_SIZE]``, the same on every call.
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    if distribution == DISTRIBUTIONS[2]:
        return gaussian_with_outliers(SAMPLE_SIZE, one_in=1000, factor=8.0)
    return weight_sample(distribution, SAMPLE_SIZE)


def ternary_stats(w: torch.Tensor, multiplier: float) -> dict:
    """Ternarize ``w`` with the step ``gamma = multiplier * mean|w|`` (no plot).

    ``multiplier=1`` is BitNet's absmean quantizer (``bitnet.absmean_ternary``); another multiplier
    keeps its rule (round ``w / gamma``, clamp to -1..1) with a wider or narrower step: the affine
    grid of codes -1, 0, 1 with scale ``gamma``.

    Args:
        w: float weights, any shape.
        multiplier: the step as a multiple of mean|w| (> 0).

    Returns:
        dict: ``gamma`` (the step), ``zeros`` (share of 0 codes), ``rel_mse`` (``mean (w - w_hat)^2 / mean w^2``).
    """
    _, absmean = bitnet.absmean_ternary(w)
    gamma = multiplier * float(absmean)
    codes = affine.quantize(w, gamma, 0, -1, 1)
    rel_mse = float((w - affine.dequantize(codes, gamma, 0)).pow(2).mean() / w.pow(2).mean())
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
        w = sample(dist.value)
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
