"""Notebook 02 widget: choose bits, a range and a scheme; see the mapping and the error histogram."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from .. import affine
from ..data import gaussian_with_outliers
from ..plots.affine import draw_error_histogram, draw_mapping

#: Scheme name -> (symmetric, signed, restricted).
SCHEMES = {
    "asymmetric (unsigned)": (False, False, False),
    "symmetric (signed)": (True, True, False),
    "symmetric, restricted": (True, True, True),
}


def explore(x: torch.Tensor, bits: int, x_min: float, x_max: float, scheme: str, axes=None) -> dict:
    """Quantize ``x`` with the given settings, draw mapping and error histogram, return the numbers.

    Returns:
        dict: scale, zero_point, qmin, qmax, max_inside, max_clipped, clipped, mse, sqnr_db.
    """
    symmetric, signed, restricted = SCHEMES[scheme]
    qmin, qmax = affine.qrange(bits, signed=signed, restricted=restricted)
    scale, zp = affine.compute_scale_zero_point(x_min, x_max, qmin, qmax, symmetric=symmetric)
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    ax_map, ax_err = axes
    width = max(x_max - x_min, 1e-3)
    lo = max(x_min - 0.5 * width, float(x.min()) - 0.05 * width)  # the range and some of what it clips
    hi = min(x_max + 0.5 * width, float(x.max()) + 0.05 * width)
    lo, hi = min(lo, x_min - 0.05 * width), max(hi, x_max + 0.05 * width)
    draw_mapping(ax_map, scale, zp, qmin, qmax, lo, hi, n=3001, data=x)
    ax_map.axvline(x_min, color="tab:green", lw=1)
    ax_map.axvline(x_max, color="tab:green", lw=1)
    ax_map.set_title(f"{bits} bits, codes [{qmin}, {qmax}] (green: your range)")
    stats = draw_error_histogram(ax_err, x, scale, zp, qmin, qmax)
    ax_err.set_title(f"error: scale {float(scale):.4g}, zero point {int(zp)}")
    signal = float(x.double().pow(2).mean())
    stats.update(scale=float(scale), zero_point=int(zp), qmin=qmin, qmax=qmax,
                 sqnr_db=(10 * torch.log10(torch.tensor(signal / stats["mse"])).item() if stats["mse"] > 0
                          else float("inf")))
    return stats


def affine_explorer(x: torch.Tensor | None = None, bits: int = 4):
    """Sliders for bits and the range [x_min, x_max], a scheme menu, and the plots; returns the box.

    The box exposes ``update()`` (redraws from the current control values and returns the numbers),
    and its controls ``bits``, ``range``, ``scheme``, ``readout``, so tests can drive it without a browser.
    """
    import ipywidgets as widgets

    data = gaussian_with_outliers() if x is None else x.detach().flatten().float().cpu()
    amax = float(data.abs().max())
    limit = round(amax * 1.25, 1)
    bits_slider = widgets.IntSlider(value=bits, min=2, max=8, step=1, description="bits")
    range_slider = widgets.FloatRangeSlider(value=[float(data.min()), float(data.max())], min=-limit, max=limit,
                                            step=0.05, description="range", readout_format=".2f")
    scheme = widgets.Dropdown(options=list(SCHEMES), value="asymmetric (unsigned)", description="scheme")
    readout = widgets.HTML()
    out = widgets.Output()

    def update(change=None) -> dict:
        x_min, x_max = range_slider.value
        with out:
            out.clear_output(wait=True)
            fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
            stats = explore(data, bits_slider.value, x_min, x_max, scheme.value, axes=axes)
            fig.tight_layout()
            plt.show()
            plt.close(fig)
        readout.value = (
            f"scale <b>{stats['scale']:.4g}</b>, zero point <b>{stats['zero_point']}</b> | "
            f"largest error inside the range <b>{stats['max_inside']:.4g}</b> "
            f"(scale/2 = {stats['scale'] / 2:.4g}) | clipped <b>{100 * stats['clipped']:.2f}%</b>, "
            f"largest clipping error {stats['max_clipped']:.3g} | SQNR <b>{stats['sqnr_db']:.1f} dB</b>"
        )
        box.last = stats
        return stats

    for control in (bits_slider, range_slider, scheme):
        control.observe(update, names="value")
    box = widgets.VBox([widgets.HBox([bits_slider, scheme]), range_slider, readout, out])
    box.update = update
    box.bits = bits_slider
    box.range = range_slider
    box.scheme = scheme
    box.readout = readout
    box.data = data
    update()
    return box
