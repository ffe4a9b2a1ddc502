"""Notebook 05 widget: the code points of NF4, FP4 and int4 over a weight histogram, with each one's error."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from .. import nf4
from ..data import weight_sample
from ..plots.nf4 import SCHEME_COLORS, draw_code_points, scheme_codebooks

#: Weight sources the widget offers without a model: menu label -> ``course_lib.data.weight_sample``'s
#: distribution, drawn with :data:`SAMPLE_SIZE` values and scaled to standard deviation :data:`WEIGHT_STD`.
SOURCES = {
    "Gaussian": "gaussian",
    "Laplace (heavier tails)": "laplace",
    "Student-t, 3 dof (outliers)": "student_t3",
    "uniform": "uniform",
}
SAMPLE_SIZE = 64 * 1024
WEIGHT_STD = 0.02  # like a trained layer's weights


def compare(w: torch.Tensor, blocksize: int, schemes=("nf4", "fp4", "int4", "int4_asym")) -> dict:
    """{scheme: relative MSE ``||w - deq||^2 / ||w||^2``} of each 4-bit scheme at this block size."""
    w = w.detach().flatten().float()
    power = float(w.double().pow(2).sum())
    out = {}
    for scheme in schemes:
        err = w - nf4.fake_quantize_4bit(w, scheme, blocksize)
        out[scheme] = float(err.double().pow(2).sum()) / power
    return out


def codebook_explorer(weights: dict | None = None, blocksize: int = 64):
    """A weight-source menu and a block-size slider; shows the block-normalized histogram under the
    code points of NF4, FP4 and int4, and each scheme's relative error. Returns the box.

    Args:
        weights: optional ``{name: tensor}`` of real weights to offer besides the synthetic ones.

    The box exposes ``update()`` (redraws, returns ``{"errors": {...}, "source": ..., "blocksize": ...}``)
    and its controls ``source``, ``blocksize``, ``readout`` so tests drive it without a browser.
    """
    import ipywidgets as widgets

    extra = {k: v.detach().flatten().float().cpu() for k, v in (weights or {}).items()}
    options = list(extra) + list(SOURCES)
    source = widgets.Dropdown(options=options, value=options[0], description="weights")
    block = widgets.Dropdown(options=[16, 32, 64, 128, 256, 1024, 4096], value=blocksize, description="block")
    readout = widgets.HTML()
    out = widgets.Output()
    cache: dict = {}

    def data(name: str) -> torch.Tensor:
        if name not in cache:
            cache[name] = extra[name] if name in extra else WEIGHT_STD * weight_sample(SOURCES[name], SAMPLE_SIZE)
        return cache[name]

    def update(change=None) -> dict:
        w = data(source.value)
        bs = block.value
        n = w.numel() - w.numel() % bs
        blocks = w[:n].reshape(-1, bs)
        normed = (blocks / blocks.abs().amax(dim=1, keepdim=True).clamp(min=1e-38)).flatten()
        errors = compare(w, bs)
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(10, 3.6))
            hist_ax = ax.twinx()
            hist_ax.hist(normed.numpy(), bins=160, range=(-1, 1), color="0.8")
            hist_ax.set_yticks([])
            hist_ax.set_zorder(ax.get_zorder() - 1)
            ax.patch.set_visible(False)
            draw_code_points(ax, scheme_codebooks())
            ax.set_xlim(-1.45, 1.05)
            ax.set_ylim(0, 1)
            ax.set_yticks([])
            ax.set_xlabel(f"w / block absmax, block {bs} (grey: histogram of {source.value})")
            fig.tight_layout()
            plt.show()
            plt.close(fig)
        best = min(errors, key=errors.get)
        readout.value = "relative MSE: " + " | ".join(
            f"<span style='color:{SCHEME_COLORS[k].replace('tab:', '')}'>{k}</span> "
            + (f"<b>{v:.2e}</b>" if k == best else f"{v:.2e}") for k, v in errors.items())
        result = {"errors": errors, "source": source.value, "blocksize": bs}
        box.last = result
        return result

    source.observe(update, names="value")
    block.observe(update, names="value")
    box = widgets.VBox([widgets.HBox([source, block]), readout, out])
    box.update = update
    box.source = source
    box.blocksize = block
    box.readout = readout
    update()
    return box
