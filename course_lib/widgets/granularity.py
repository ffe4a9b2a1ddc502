"""Notebook 03 widget: choose a layer, bits, granularity and group size; see the errors and the bits stored."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import torch

from .. import granularity
from ..data import outlier_column_layers
from ..plots.granularity import draw_error_histogram

#: Menu label -> granularity name of ``course_lib.granularity``.
CHOICES = {
    "per-tensor": "tensor",
    "per-channel (rows)": "channel",
    "per-input-channel (columns)": "input_channel",
    "per-group": "group",
}
GROUP_SIZES = (8, 16, 32, 64, 128, 256, 512)


def explore(w: torch.Tensor, bits: int, granularity_name: str, group_size: int | None = None,
            symmetric: bool = False, axes=None) -> dict:
    """Fake-quantize ``w``, draw the error histogram and the per-row error, return the numbers.

    Returns:
        dict: mse, rel_error, sqnr_db, max_error, zeroed (see ``draw_error_histogram``),
        effective_bits (fp16 scales, and a ``bits``-bit zero point when asymmetric), n_scales.
    """
    w = w.detach().float().cpu()
    gs = group_size if granularity_name == "group" else None
    fq = granularity.fake_quantize(w, bits, granularity_name, gs, symmetric)
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    ax_hist, ax_rows = axes
    stats = draw_error_histogram(ax_hist, w, fq)
    ax_hist.set_title(f"error histogram: MSE {stats['mse']:.3g}, SQNR {stats['sqnr_db']:.1f} dB")
    row_err = ((w - fq).pow(2).mean(dim=1) / w.pow(2).mean(dim=1).clamp_min(1e-30)).numpy()
    ax_rows.semilogy(row_err, ".", ms=3, color="tab:blue")
    ax_rows.set_xlabel("output channel (row)")
    ax_rows.set_ylabel("relative error of the row")
    ax_rows.set_title("error per row")
    zero_bits = 0 if symmetric else bits
    stats["effective_bits"] = granularity.effective_bits(tuple(w.shape), bits, granularity_name, gs,
                                                         scale_bits=16, zero_bits=zero_bits)
    stats["n_scales"] = round((stats["effective_bits"] - bits) * w.numel() / (16 + zero_bits))
    return stats


def granularity_explorer(weights: Mapping[str, torch.Tensor] | None = None, bits: int = 4):
    """Menus for the layer, granularity, group size and symmetry, a bits slider, and the plots.

    Args:
        weights: ``{name: 2-D weight}``, e.g. ``granularity.linear_weights(model)``; default two
            synthetic layers (``course_lib.data.outlier_column_layers``).
        bits: the starting bit width (2 to 8).

    Returns:
        An ipywidgets VBox exposing ``update()`` (redraws from the current controls and returns the
        numbers), ``last`` (the latest numbers) and the controls ``layer``, ``bits``, ``granularity``,
        ``group_size``, ``symmetric``, ``readout``, so that tests can drive it without a browser.
    """
    import ipywidgets as widgets

    weights = dict(outlier_column_layers() if weights is None else weights)
    if not weights:
        raise ValueError("weights must hold at least one 2-D weight")
    for name, w in weights.items():
        if not isinstance(w, torch.Tensor) or w.dim() != 2:
            raise ValueError(f"weights[{name!r}] must be a 2-D tensor")
    layer = widgets.Dropdown(options=list(weights), description="layer")
    bits_slider = widgets.IntSlider(value=bits, min=2, max=8, step=1, description="bits")
    gran = widgets.Dropdown(options=list(CHOICES), value="per-channel (rows)", description="granularity")
    group = widgets.Dropdown(options=[], description="group size")
    symmetric = widgets.Checkbox(value=False, description="symmetric")
    readout = widgets.HTML()
    out = widgets.Output()

    busy = []  # set while the group-size menu is rebuilt, so that its events don't redraw

    def _group_options():
        cols = weights[layer.value].shape[1]
        options = [g for g in GROUP_SIZES if cols % g == 0 and g < cols] or [cols]
        if list(group.options) == options:
            return
        current = group.value
        busy.append(True)
        try:
            group.options = options
            group.value = current if current in options else (128 if 128 in options else options[len(options) // 2])
        finally:
            busy.pop()

    def update(change=None) -> dict | None:
        if busy:
            return None
        _group_options()
        name = CHOICES[gran.value]
        group.disabled = name != "group"
        w = weights[layer.value]
        with out:
            out.clear_output(wait=True)
            fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
            stats = explore(w, bits_slider.value, name, group.value, symmetric.value, axes=axes)
            fig.tight_layout()
            plt.show()
            plt.close(fig)
        readout.value = (
            f"<b>{stats['effective_bits']:.4f}</b> bits per weight stored ({bits_slider.value}-bit codes + "
            f"{stats['n_scales']:,} fp16 scale{'s' if stats['n_scales'] != 1 else ''}"
            f"{'' if symmetric.value else ' and zero point' + ('s' if stats['n_scales'] != 1 else '')}) | "
            f"relative error <b>{stats['rel_error']:.3g}</b> | SQNR <b>{stats['sqnr_db']:.1f} dB</b> | "
            f"non-zero weights turned into 0: <b>{100 * stats['zeroed']:.1f}%</b>"
        )
        box.last = stats
        return stats

    _group_options()
    for control in (layer, bits_slider, gran, group, symmetric):
        control.observe(update, names="value")
    box = widgets.VBox([widgets.HBox([layer, gran]), widgets.HBox([bits_slider, group, symmetric]), readout, out])
    box.update = update
    box.layer = layer
    box.bits = bits_slider
    box.granularity = gran
    box.group_size = group
    box.symmetric = symmetric
    box.readout = readout
    box.weights = weights
    update()
    return box
