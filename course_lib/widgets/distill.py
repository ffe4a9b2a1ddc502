"""Notebook 11 widget: a teacher's soft targets for one digit at the temperature of your choice."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch

from ..plots.distill import draw_soft_targets


def soft_target_stats(logits: torch.Tensor, temperature: float) -> dict:
    """Probabilities at ``temperature``, their entropy (bits), the top probability, the runner-up class."""
    p = torch.softmax(logits.detach().double().cpu().flatten() / temperature, dim=0)
    entropy = float(-(p * torch.log2(p.clamp_min(1e-300))).sum())
    order = torch.argsort(p, descending=True)
    return {"probs": p, "entropy_bits": entropy, "top": int(order[0]), "top_prob": float(p[order[0]]),
            "runner_up": int(order[1]), "runner_up_prob": float(p[order[1]])}


def temperature_explorer(teacher_logits: torch.Tensor, images: torch.Tensor | None = None,
                         labels: torch.Tensor | None = None, temperature: float = 4.0):
    """A slider for the example and one for the temperature; the teacher's soft targets and numbers.

    Args:
        teacher_logits: ``[N, classes]`` logits of the teacher on ``N`` examples.
        images: optional ``[N, 64]`` 8x8 images shown beside the bars.
        labels: optional ``[N]`` true labels, shown in the title.

    The box exposes ``update()`` (redraws, returns :func:`soft_target_stats`' dict) and its controls
    ``example``, ``temperature``, ``readout``, so tests can drive it without a browser.
    """
    import ipywidgets as widgets

    n = teacher_logits.shape[0]
    example = widgets.IntSlider(value=0, min=0, max=n - 1, description="example")
    temp = widgets.FloatLogSlider(value=temperature, base=10, min=-0.5, max=1.5, step=0.05, description="T",
                                  readout_format=".2f")
    readout = widgets.HTML()
    out = widgets.Output()

    def update(change=None) -> dict:
        i, t = example.value, temp.value
        stats = soft_target_stats(teacher_logits[i], t)
        with out:
            out.clear_output(wait=True)
            if images is not None:
                fig, (ax_img, ax) = plt.subplots(1, 2, figsize=(9, 3.2), gridspec_kw={"width_ratios": [1, 4]})
                ax_img.imshow(images[i].detach().cpu().reshape(8, 8).numpy(), cmap="gray_r")
                ax_img.set_axis_off()
            else:
                fig, ax = plt.subplots(figsize=(8, 3.2))
            label = f" (label {int(labels[i])})" if labels is not None else ""
            draw_soft_targets(ax, teacher_logits[i], [1.0, t], title=f"example {i}{label}: T = 1 and T = {t:.2f}")
            fig.tight_layout()
            plt.show()
            plt.close(fig)
        readout.value = (
            f"T = {t:.2f}: top class {stats['top']} with p = <b>{stats['top_prob']:.3f}</b>, runner-up "
            f"{stats['runner_up']} with p = <b>{stats['runner_up_prob']:.3g}</b>; entropy "
            f"<b>{stats['entropy_bits']:.2f}</b> bits (uniform: {math.log2(teacher_logits.shape[1]):.2f})")
        box.last = stats
        return stats

    for control in (example, temp):
        control.observe(update, names="value")
    box = widgets.VBox([widgets.HBox([example, temp]), readout, out])
    box.update = update
    box.example = example
    box.temperature = temp
    box.readout = readout
    update()
    return box
