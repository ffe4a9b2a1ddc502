"""Notebook 06 widget: move the outlier threshold; see which columns go to floating point and the error."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from .. import llm_int8
from ..data import outlier_feature_activations
from ..plots.llm_int8 import draw_column_absmax

#: The widget's data when it is given none (tests/library/test_llm_int8.py calls it by this name).
default_data = outlier_feature_activations


def explore(x: torch.Tensor, w: torch.Tensor, threshold: float, axes=None) -> dict:
    """Draw the column absmax with the threshold and the error per output; return the numbers.

    Returns:
        dict: threshold, outlier_cols, fp_share, rel_error (LLM.int8()), rel_error_vectorwise (threshold 0).
    """
    exact = x.double() @ w.double().T
    y = llm_int8.llm_int8_matmul(x, w, threshold=threshold)
    y0 = llm_int8.llm_int8_matmul(x, w, threshold=0.0)
    norm = max(float(exact.norm()), 1e-300)
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [2, 1]})
    ax_cols, ax_err = axes
    n = draw_column_absmax(ax_cols, x, threshold, title=f"threshold {threshold:g}: features of X")
    err = (y.double() - exact).abs().flatten().numpy()
    err0 = (y0.double() - exact).abs().flatten().numpy()
    top = max(err0.max(), err.max(), 1e-12)
    ax_err.hist(err0, bins=50, range=(0, top), color="tab:orange", alpha=0.7, label="vector-wise int8 only")
    ax_err.hist(err, bins=50, range=(0, top), color="tab:green", alpha=0.7, label="LLM.int8()")
    ax_err.set_yscale("log")
    ax_err.set_xlabel("|error| of each output")
    ax_err.legend(fontsize=8)
    return {"threshold": threshold, "outlier_cols": n, "fp_share": n / x.shape[1],
            "rel_error": float((y.double() - exact).norm()) / norm,
            "rel_error_vectorwise": float((y0.double() - exact).norm()) / norm}


def threshold_explorer(x: torch.Tensor | None = None, w: torch.Tensor | None = None,
                       threshold: float = llm_int8.DEFAULT_THRESHOLD):
    """A threshold slider over activations ``x`` (tokens x features) and a weight ``w`` (out x features).

    The box exposes ``update()`` (redraws from the slider and returns the numbers, also kept in
    ``box.last``) and its controls ``threshold`` and ``readout``, so tests drive it without a browser.
    """
    import ipywidgets as widgets

    if x is None or w is None:
        x, w = default_data()
    x = x.detach().float().cpu()
    w = w.detach().float().cpu()
    top = float(x.abs().max()) * 1.1
    slider = widgets.FloatSlider(value=min(threshold, top), min=0.0, max=round(top, 1), step=0.1,
                                 description="threshold", continuous_update=False)
    readout = widgets.HTML()
    out = widgets.Output()

    def update(change=None) -> dict:
        with out:
            out.clear_output(wait=True)
            fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [2, 1]})
            stats = explore(x, w, float(slider.value), axes=axes)
            fig.tight_layout()
            plt.show()
            plt.close(fig)
        readout.value = (
            f"threshold <b>{stats['threshold']:g}</b> (0 = no outlier path): <b>{stats['outlier_cols']}</b> of "
            f"{x.shape[1]} columns in floating point ({100 * stats['fp_share']:.1f}%) | relative error "
            f"<b>{stats['rel_error']:.2e}</b> (vector-wise int8 alone: {stats['rel_error_vectorwise']:.2e})"
        )
        box.last = stats
        return stats

    slider.observe(update, names="value")
    box = widgets.VBox([slider, readout, out])
    box.update = update
    box.threshold = slider
    box.readout = readout
    update()
    return box
