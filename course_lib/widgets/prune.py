"""Notebook 12 widget: magnitude, Wanda and 2:4 masks on a synthetic layer with a few large input features."""

from __future__ import annotations

import matplotlib.pyplot as plt

from .. import prune
from ..data import outlier_feature_layer

METHODS = ("magnitude (per layer)", "Wanda (per row)", "2:4 magnitude", "2:4 Wanda")


def explore(method: str, sparsity: float, outlier_scale: float, ax=None) -> dict:
    """Prune the synthetic layer; show the mask and return the relative output error ``||WX - W'X||^2 / ||WX||^2``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    W, X = outlier_feature_layer(outlier_scale)
    norms = X.norm(dim=0)
    if method == METHODS[0]:
        mask = prune.magnitude_mask(W, sparsity)
    elif method == METHODS[1]:
        mask = prune.wanda_mask(W, norms, sparsity)
    elif method == METHODS[2]:
        mask = prune.nm_mask(W, 2, 4)
    else:
        mask = prune.nm_mask(prune.wanda_scores(W, norms), 2, 4)
    ref = X @ W.T
    err = float(((X @ (W * mask).T - ref) ** 2).sum() / (ref**2).sum())
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    ax.imshow(mask[:24, :64].float().numpy(), cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(0, 64, 16))
    ax.set_xlabel("input feature (every 16th is large)")
    ax.set_title(f"{method}: sparsity {100 * (1 - mask.float().mean().item()):.0f}%, output error {err:.3f}", fontsize=9)
    return {"method": method, "sparsity": 1 - mask.float().mean().item(), "error": err}


def pruning_explorer(method: str = METHODS[0], sparsity: float = 0.5, outlier_scale: float = 10.0):
    """Method menu, sparsity and outlier sliders, the mask and the output error; returns the box.

    The box exposes ``update()`` (redraws, returns ``explore``'s dict), ``last`` and its controls ``method``,
    ``sparsity``, ``outlier``, ``readout``, so tests drive it without a browser.
    """
    import ipywidgets as widgets

    method_w = widgets.Dropdown(options=list(METHODS), value=method, description="method")
    sparsity_w = widgets.FloatSlider(value=sparsity, min=0.0, max=0.95, step=0.05, description="sparsity")
    outlier_w = widgets.FloatSlider(value=outlier_scale, min=1.0, max=30.0, step=1.0, description="outlier scale")
    readout = widgets.HTML()
    out = widgets.Output()

    def update(*_):
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(7, 3))
            res = explore(method_w.value, sparsity_w.value, outlier_w.value, ax=ax)
            plt.show()
            plt.close(fig)
        readout.value = (f"<b>{res['method']}</b>: {100 * res['sparsity']:.0f}% zeros, relative output error "
                         f"<b>{res['error']:.4f}</b>")
        box.last = res
        return res

    for w in (method_w, sparsity_w, outlier_w):
        w.observe(update, names="value")
    box = widgets.VBox([widgets.HBox([method_w, sparsity_w, outlier_w]), readout, out])
    box.update, box.method, box.sparsity, box.outlier, box.readout = update, method_w, sparsity_w, outlier_w, readout
    update()
    return box
