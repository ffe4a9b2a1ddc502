"""Notebook 04 widget: how heavy the tail is, how many bits, which percentile; the range each observer picks."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from .. import affine, observers
from ..data import heavy_tailed_activation
from ..plots.qat import draw_ranges


def observer_ranges(x: torch.Tensor, bits: int, percentile: float = observers.DEFAULT_PERCENTILE) -> dict:
    """``{name: (lo, hi)}`` of the five observers (asymmetric grids) after observing ``x`` in 10 batches."""
    out = {}
    for name in observers.OBSERVERS:
        kwargs = {"percentile": percentile} if name == "percentile" else {}
        obs = observers.make_observer(name, bits=bits, **kwargs)
        for batch in x.flatten().chunk(10):
            obs.observe(batch)
        out[name] = obs.range()
    return out


def range_mse(x: torch.Tensor, lo, hi, bits: int) -> float:
    """MSE of fake-quantizing ``x`` on the asymmetric ``bits``-bit grid fitted to ``[lo, hi]``."""
    qmin, qmax = affine.qrange(bits, signed=False)
    s, z = affine.compute_scale_zero_point(lo, hi, qmin, qmax)
    return float((affine.fake_quantize(x, s, z, qmin, qmax).double() - x.double()).pow(2).mean())


def observer_explorer(n: int = 20_000, seed: int = 0):
    """Sliders for the tail (Student-t degrees of freedom), bits and percentile; the ranges and their MSE.

    The box exposes ``update()`` (recomputes from the controls and returns ``{name: {"lo", "hi", "mse"}}``)
    and its controls ``df``, ``bits``, ``percentile``, ``readout``, so tests drive it without a browser.
    """
    import ipywidgets as widgets

    df = widgets.IntSlider(value=3, min=1, max=30, step=1, description="tail df")
    bits = widgets.IntSlider(value=4, min=2, max=8, step=1, description="bits")
    percentile = widgets.FloatSlider(value=99.9, min=99.0, max=100.0, step=0.01, description="percentile",
                                     readout_format=".2f")
    readout = widgets.HTML()
    out = widgets.Output()

    def update(change=None) -> dict:
        x = heavy_tailed_activation(n, df=df.value, seed=seed)
        ranges = observer_ranges(x, bits.value, percentile.value)
        stats = {name: {"lo": float(lo), "hi": float(hi), "mse": range_mse(x, lo, hi, bits.value)}
                 for name, (lo, hi) in ranges.items()}
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(10, 3.6))
            draw_ranges(ax, x, ranges, f"Student-t, df={df.value} (smaller df: heavier tail), {bits.value} bits")
            fig.tight_layout()
            plt.show()
            plt.close(fig)
        best = min(stats, key=lambda k: stats[k]["mse"])
        readout.value = "MSE of fake quantization: " + " | ".join(
            f"{'<b>' if k == best else ''}{k} {v['mse']:.3g}{'</b>' if k == best else ''}" for k, v in stats.items())
        box.last = stats
        return stats

    for control in (df, bits, percentile):
        control.observe(update, names="value")
    box = widgets.VBox([widgets.HBox([df, bits, percentile]), readout, out])
    box.update = update
    box.df, box.bits, box.percentile, box.readout = df, bits, percentile, readout
    update()
    return box
