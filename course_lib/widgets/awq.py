"""Notebook 08 widget: move AWQ's ratio and see the scales and the layer's output error."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from torch import nn

from .. import awq

GROUPS = {"per channel": None, "64": 64, "128": 128}


def explore(layer: nn.Linear, x: torch.Tensor, bits: int, group_size: int | None, ratio: float,
            losses: list[float] | None = None, axes=None) -> dict:
    """Scales of one ratio, the layer's output MSE against the ratio, drawn on two axes.

    Returns:
        dict: ratio, loss (at ``ratio``), rtn_loss (ratio 0), best_ratio, best_loss, losses.
    """
    if losses is None:
        _, _, losses = awq.search_scale(layer, [layer], x, bits, group_size)
    act = awq.activation_scales(x)
    scales = awq.awq_scales(act, ratio)
    n = len(losses)
    i = min(int(round(ratio * n)), n - 1)
    best = min(range(n), key=lambda k: (losses[k], k))
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    ax_s, ax_l = axes
    order = torch.argsort(act.cpu())
    ax_s.plot(act.cpu()[order].numpy(), scales.cpu()[order].numpy(), color="tab:blue")
    ax_s.set_xscale("log")
    ax_s.set_yscale("log")
    ax_s.axhline(1.0, color="0.6", lw=0.8, ls="--")
    ax_s.set_xlabel("mean |x| of the input channel")
    ax_s.set_ylabel("scale s (weight column x s)")
    ax_s.set_title(f"ratio {ratio:.2f}: s from {scales.min().item():.3g} to {scales.max().item():.3g}")
    ratios = [k / n for k in range(n)]
    rel = [v / losses[0] if losses[0] > 0 else v for v in losses]
    ax_l.plot(ratios, rel, marker=".", color="tab:blue")
    ax_l.plot([ratios[i]], [rel[i]], "o", ms=10, color="tab:red", label="your ratio")
    ax_l.plot([ratios[best]], [rel[best]], "o", ms=13, mfc="none", color="tab:green", label="grid-search choice")
    ax_l.axhline(1.0, color="0.6", lw=0.8, ls="--")
    ax_l.set_xlabel("ratio")
    ax_l.set_ylabel("output MSE / RTN's")
    ax_l.set_title(f"{bits}-bit, group {'per channel' if group_size is None else group_size}")
    ax_l.legend(fontsize=8)
    return {"ratio": ratios[i], "loss": losses[i], "rtn_loss": losses[0], "best_ratio": ratios[best],
            "best_loss": losses[best], "losses": list(losses)}


def awq_explorer(weight: torch.Tensor, x: torch.Tensor, bits: int = 3, group_size: int | None = 128):
    """Sliders for the ratio and the bits, a menu for the group size, the plots and a readout; returns the box.

    Args:
        weight: a layer's weight ``[out_features, in_features]``.
        x: its calibration input ``[tokens, in_features]`` (a few thousand tokens keep it responsive).

    The box exposes ``update()`` (redraws from the current control values and returns the numbers)
    and its controls ``ratio``, ``bits``, ``group``, ``readout``, so tests drive it without a browser.
    """
    import ipywidgets as widgets

    w = weight.detach().float().cpu()
    xs = x.detach().float().cpu().reshape(-1, w.shape[1])
    layer = nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(w)
    group_label = next(k for k, v in GROUPS.items() if v == group_size)
    ratio_slider = widgets.FloatSlider(value=0.5, min=0.0, max=0.95, step=0.05, description="ratio",
                                       readout_format=".2f")
    bits_slider = widgets.IntSlider(value=bits, min=2, max=8, step=1, description="bits")
    group = widgets.Dropdown(options=list(GROUPS), value=group_label, description="group")
    readout = widgets.HTML()
    out = widgets.Output()
    cache: dict = {}

    def update(change=None) -> dict:
        key = (bits_slider.value, GROUPS[group.value])
        if key not in cache:
            cache[key] = awq.search_scale(layer, [layer], xs, key[0], key[1])[2]
        with out:
            out.clear_output(wait=True)
            fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
            stats = explore(layer, xs, key[0], key[1], ratio_slider.value, cache[key], axes=axes)
            fig.tight_layout()
            plt.show()
            plt.close(fig)
        readout.value = (
            f"output MSE at ratio {stats['ratio']:.2f}: <b>{stats['loss']:.4g}</b> "
            f"({stats['loss'] / stats['rtn_loss']:.2f} x RTN's {stats['rtn_loss']:.4g}) | "
            f"grid search picks ratio <b>{stats['best_ratio']:.2f}</b>: "
            f"{stats['best_loss'] / stats['rtn_loss']:.2f} x RTN's")
        box.last = stats
        return stats

    for control in (ratio_slider, bits_slider, group):
        control.observe(update, names="value")
    box = widgets.VBox([widgets.HBox([ratio_slider, bits_slider, group]), readout, out])
    box.update = update
    box.ratio = ratio_slider
    box.bits = bits_slider
    box.group = group
    box.readout = readout
    box.layer = layer
    update()
    return box
