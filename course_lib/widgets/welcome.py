"""Notebook 00 widget: round a signal to b bits and watch the error and the SQNR."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch

from ..basics import sqnr_db


def round_to_bits(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantize ``x`` (values in [-1, 1]) with 2**bits equal cells over [-1, 1] (step 2 / 2**bits),
    each value replaced by its cell's centre (a "mid-rise" quantizer: 2**bits levels, none at 0)."""
    cells = 2**bits
    step = 2.0 / cells
    index = torch.floor((x.clamp(-1, 1) + 1) / step).clamp(max=cells - 1)
    return (index + 0.5) * step - 1


def draw_rounding(bits: int, ax_signal=None, ax_error=None, n: int = 400):
    """Draw a sine rounded to ``bits`` bits and its error; returns the SQNR in dB."""
    t = torch.linspace(0, 2 * math.pi, n, dtype=torch.float64)
    x = torch.sin(t) * 0.95
    q = round_to_bits(x, bits)
    snr = sqnr_db(x, q)
    if ax_signal is None or ax_error is None:
        _, (ax_signal, ax_error) = plt.subplots(1, 2, figsize=(10, 3.2))
    ax_signal.clear()
    ax_error.clear()
    ax_signal.plot(t, x, label="signal")
    ax_signal.step(t, q, where="mid", label=f"{bits}-bit")
    ax_signal.set_title(f"{bits} bits: {2**bits} levels, SQNR {snr:.1f} dB")
    ax_signal.legend(loc="lower left")
    ax_error.plot(t, x - q, color="tab:red")
    step = 2 / 2**bits
    ax_error.axhline(step / 2, ls="--", color="gray")
    ax_error.axhline(-step / 2, ls="--", color="gray")
    ax_error.set_title("error (dashed: +-step/2)")
    return snr


def rounding_explorer():
    """A bits slider that redraws the rounded sine; returns the widget box (display it)."""
    import ipywidgets as widgets

    out = widgets.Output()
    slider = widgets.IntSlider(value=3, min=1, max=10, description="bits")
    readout = widgets.HTML()

    def update(change=None):
        with out:
            out.clear_output(wait=True)
            fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2))
            snr = draw_rounding(slider.value, a, b)
            plt.show()
        readout.value = f"<b>SQNR {snr:.2f} dB</b> (rule of thumb 6.02 x bits = {6.02 * slider.value:.1f} dB)"

    slider.observe(update, names="value")
    update()
    box = widgets.VBox([slider, readout, out])
    box.update = update  # tests drive the widget through this
    box.slider = slider
    box.readout = readout
    return box
