"""Notebook 07 widget: RTN against GPTQ on a synthetic layer with correlated, uneven inputs."""

from __future__ import annotations

import matplotlib.pyplot as plt

from .. import gptq
from ..data import correlated_feature_layer
from ..granularity import fake_quantize_weight

#: Group-size menu: label -> group size (None: one scale per output channel).
GROUP_SIZES = {"per channel": None, "64": 64, "32": 32}


def explore(bits: int, group_size: int | None, correlation: float, outlier_scale: float, ax=None) -> dict:
    """Quantize the synthetic layer with RTN, GPTQ and GPTQ with act-order; bar chart of held-out errors.

    Returns:
        dict ``{"RTN": e, "GPTQ": e, "GPTQ act-order": e}`` of relative output errors
        ``||WX - QX||^2 / ||WX||^2`` on held-out inputs.
    """
    W, X_cal, X_test = correlated_feature_layer(correlation, outlier_scale)
    H = gptq.hessian_from_inputs(X_cal)
    results = {
        "RTN": fake_quantize_weight(W, bits, group_size),
        "GPTQ": gptq.gptq_quantize_weight(W, H, bits, group_size).weight,
        "GPTQ act-order": gptq.gptq_quantize_weight(W, H, bits, group_size, act_order=True).weight,
    }
    errors = {k: gptq.layer_output_error(W, Q, X_test) for k, Q in results.items()}
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    bars = ax.bar(list(errors), list(errors.values()), color=["tab:gray", "tab:blue", "tab:green"])
    for bar, v in zip(bars, errors.values()):
        ax.text(bar.get_x() + bar.get_width() / 2, v, f"{v:.2e}", ha="center", va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("held-out ||WX - QX||^2 / ||WX||^2")
    ax.set_title(f"{bits} bits, group {group_size or 'per channel'}")
    return errors


def gptq_explorer(bits: int = 3, group_size: int | None = None):
    """Sliders for bits, input correlation and outlier scale, a group menu and the bar chart; returns the box.

    The box exposes ``update()`` (redraws, returns ``explore``'s dict), ``last`` and its controls
    ``bits``, ``group``, ``correlation``, ``outlier``, ``readout``, so tests drive it without a browser.
    """
    import ipywidgets as widgets

    label = next(k for k, v in GROUP_SIZES.items() if v == group_size)
    bits_slider = widgets.IntSlider(value=bits, min=2, max=8, step=1, description="bits")
    group = widgets.Dropdown(options=list(GROUP_SIZES), value=label, description="group size")
    correlation = widgets.FloatSlider(value=0.5, min=0.0, max=0.95, step=0.05, description="correlation")
    outlier = widgets.FloatSlider(value=8.0, min=1.0, max=30.0, step=1.0, description="outlier scale")
    readout = widgets.HTML()
    out = widgets.Output()

    def update(change=None) -> dict:
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(7, 3.2))
            stats = explore(bits_slider.value, GROUP_SIZES[group.value], correlation.value, outlier.value, ax=ax)
            fig.tight_layout()
            plt.show()
        readout.value = (f"output error: RTN {stats['RTN']:.3g} &middot; GPTQ {stats['GPTQ']:.3g} "
                         f"({stats['RTN'] / stats['GPTQ']:.1f}x lower) &middot; GPTQ act-order "
                         f"{stats['GPTQ act-order']:.3g}")
        box.last = stats
        return stats

    for control in (bits_slider, group, correlation, outlier):
        control.observe(update, names="value")
    box = widgets.VBox([widgets.HBox([bits_slider, group]), widgets.HBox([correlation, outlier]), readout, out])
    box.update, box.bits, box.group, box.correlation, box.outlier, box.readout = (
        update, bits_slider, group, correlation, outlier, readout)
    update()
    return box
