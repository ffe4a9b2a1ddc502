"""Notebook 13 widget: batch size and bits per weight -> bytes a GEMV moves and its time floor vs fp16."""

from __future__ import annotations

import matplotlib.pyplot as plt

from ..plots.kernels import time_floor


def floor_vs_fp16(n: int, k: int, batch: int, bits: float, bandwidth: float, peak_flops: float,
                  group_size: int | None = 64, scale_bits: int = 32) -> dict:
    """The low-bit GEMV's roofline floor next to fp16's for the same shape and batch.

    Returns:
        dict: bytes, fp16_bytes, floor_s, fp16_floor_s, bound, fp16_bound, speedup_bound
        (fp16 floor / low-bit floor: the most a perfect low-bit kernel can gain).
    """
    low = time_floor((bits, group_size if scale_bits else None, scale_bits), n, k, batch, bandwidth, peak_flops)
    ref = time_floor("fp16", n, k, batch, bandwidth, peak_flops)
    return {"bytes": low["bytes"], "fp16_bytes": ref["bytes"], "floor_s": low["floor_s"],
            "fp16_floor_s": ref["floor_s"], "bound": low["bound"], "fp16_bound": ref["bound"],
            "speedup_bound": ref["floor_s"] / low["floor_s"]}


def bytes_explorer(n: int = 8192, k: int = 8192, bandwidth: float = 2.99e12, peak_flops: float = 989e12,
                   batch: int = 1, bits: float = 4.0):
    """Sliders for batch and bits per weight; shows bytes moved and the time floor against fp16.

    Args:
        n, k: the weight's shape; bandwidth (bytes/s) and peak_flops (FLOP/s) of the machine modelled.

    The box exposes ``update()`` (recomputes from the controls, returns ``floor_vs_fp16``'s dict) and its
    controls ``batch``, ``bits``, ``scales`` (a checkbox: one float32 scale per 64 weights), ``readout``.
    """
    import ipywidgets as widgets

    batch_slider = widgets.IntSlider(value=batch, min=1, max=64, step=1, description="batch")
    bits_slider = widgets.FloatSlider(value=bits, min=1.0, max=16.0, step=0.5, description="bits/weight",
                                      readout_format=".1f")
    scales = widgets.Checkbox(value=True, description="fp32 scale per 64 weights")
    readout = widgets.HTML()
    out = widgets.Output()

    def update(change=None) -> dict:
        stats = floor_vs_fp16(n, k, batch_slider.value, bits_slider.value, bandwidth, peak_flops,
                              group_size=64, scale_bits=32 if scales.value else 0)
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(8, 2.4))
            names = [f"{bits_slider.value:g}-bit", "fp16"]
            ax.barh(names, [stats["floor_s"] * 1e6, stats["fp16_floor_s"] * 1e6],
                    color=["tab:green", "tab:grey"])
            for i, (s, b) in enumerate([(stats["floor_s"], stats["bytes"]), (stats["fp16_floor_s"], stats["fp16_bytes"])]):
                ax.text(s * 1e6, i, f" {s * 1e6:.2f} us, {b / 1e6:.1f} MB", va="center", fontsize=8)
            ax.set_xlabel("time floor (us)")
            ax.set_title(f"GEMV {n}x{k}, batch {batch_slider.value}: {bandwidth / 1e12:.2f} TB/s, "
                         f"{peak_flops / 1e12:.0f} TFLOP/s")
            fig.tight_layout()
            plt.show()
            plt.close(fig)
        readout.value = (
            f"bytes moved <b>{stats['bytes'] / 1e6:.2f} MB</b> (fp16: {stats['fp16_bytes'] / 1e6:.2f} MB) | "
            f"time floor <b>{stats['floor_s'] * 1e6:.2f} us</b> ({stats['bound']}-bound; fp16 "
            f"{stats['fp16_floor_s'] * 1e6:.2f} us, {stats['fp16_bound']}-bound) | "
            f"best possible speed-up over fp16 <b>{stats['speedup_bound']:.2f}x</b>"
        )
        box.last = stats
        return stats

    for control in (batch_slider, bits_slider, scales):
        control.observe(update, names="value")
    box = widgets.VBox([widgets.HBox([batch_slider, bits_slider, scales]), readout, out])
    box.update = update
    box.batch = batch_slider
    box.bits = bits_slider
    box.scales = scales
    box.readout = readout
    update()
    return box
