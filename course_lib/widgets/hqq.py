"""Notebook 09 widget: HQQ's knobs (bits, group size, p, beta, iterations) on one weight matrix."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from .. import hqq
from ..data import heavy_tailed_weight
from ..granularity import fake_quantize_weight
from ..plots.hqq import draw_convergence

#: Group-size menu: label -> group size (None: one group per output channel).
GROUP_SIZES = {"32": 32, "64": 64, "128": 128, "per channel": None}
#: The widget's weight when it is given none (tests/library/test_hqq.py builds its inputs with it).
default_weight = heavy_tailed_weight


def explore(W: torch.Tensor, bits: int, group_size: int | None, lp_norm: float, beta: float, iters: int,
            axes=None) -> dict:
    """Run HQQ with these settings, draw the convergence and error histograms, return the numbers.

    Returns:
        dict: ``rtn`` (course RTN, range widened to contain 0), ``init`` (HQQ's min-max start),
        ``hqq`` (after the solver), all mean |W - W_hat| of the dequantized weight, the solver's
        ``errors`` history, ``active`` (share of the starting errors that ``shrink_lp`` does not set
        to 0: with 0 the solver is a plain least-squares fit of the zero point) and ``gain`` (1 - hqq / rtn).
    """
    Wg = hqq.group_weight(W, group_size)
    inv_scale, zero0 = hqq.init_scale_zero(Wg, bits)
    zero, errors = hqq.optimize_zero_point(Wg, inv_scale, zero0, bits, iters=iters, lp_norm=lp_norm, beta=beta)
    deq = {
        "RTN (course)": fake_quantize_weight(W, bits, group_size) if bits >= 2 else None,
        "min-max start": hqq.dequantize_codes(hqq.quantize_codes(Wg, inv_scale, zero0, bits), inv_scale, zero0),
        "HQQ": hqq.dequantize_codes(hqq.quantize_codes(Wg, inv_scale, zero, bits), inv_scale, zero),
    }
    deq = {k: v.reshape(W.shape) for k, v in deq.items() if v is not None}
    err = {k: float((v - W).abs().mean()) for k, v in deq.items()}
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    ax_conv, ax_hist = axes
    draw_convergence(ax_conv, {f"p={lp_norm:g}, beta={beta:g}": errors},
                     {k: v for k, v in err.items() if k == "RTN (course)"})
    lim = max(float((v - W).abs().max()) for v in deq.values())
    edges = torch.linspace(-lim, lim, 82).numpy()
    for name, v in deq.items():
        ax_hist.hist((v - W).flatten().numpy(), bins=edges, histtype="step", lw=1.5, label=name)
    ax_hist.set_yscale("log")
    ax_hist.set_xlabel("W_hat - W")
    ax_hist.set_title("error histogram (log counts)")
    ax_hist.legend(fontsize=8)
    rtn = err.get("RTN (course)", float("nan"))
    start_error = Wg - (hqq.quantize_codes(Wg, inv_scale, zero0, bits) - zero0) / inv_scale
    active = float((hqq.shrink_lp(start_error, beta, lp_norm) != 0).float().mean())
    return {"rtn": rtn, "init": err["min-max start"], "hqq": err["HQQ"], "errors": errors, "active": active,
            "gain": 1 - err["HQQ"] / rtn if rtn == rtn else float("nan")}


def hqq_explorer(W: torch.Tensor | None = None, bits: int = 3, group_size: int | None = 64):
    """Sliders for bits, p, log10(beta) and iterations, a group-size menu, and the plots; returns the box.

    The box exposes ``update()`` (redraws from the current values and returns ``explore``'s dict),
    ``last`` (the latest dict) and its controls ``bits``, ``group``, ``lp_norm``, ``log_beta``,
    ``iters``, ``readout``, so tests can drive it without a browser.
    """
    import ipywidgets as widgets

    data = default_weight() if W is None else W.detach().float().cpu()
    label = next(k for k, v in GROUP_SIZES.items() if v == group_size)
    bits_slider = widgets.IntSlider(value=bits, min=1, max=8, step=1, description="bits")
    group = widgets.Dropdown(options=list(GROUP_SIZES), value=label, description="group size")
    lp_norm = widgets.FloatSlider(value=0.7, min=0.1, max=1.0, step=0.05, description="p")
    log_beta = widgets.FloatSlider(value=1.0, min=-1.0, max=5.0, step=0.25, description="log10 beta")
    iters = widgets.IntSlider(value=20, min=0, max=60, step=1, description="iterations")
    readout = widgets.HTML()
    out = widgets.Output()

    def update(change=None) -> dict:
        with out:
            out.clear_output(wait=True)
            fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
            stats = explore(data, bits_slider.value, GROUP_SIZES[group.value], lp_norm.value,
                            10 ** log_beta.value, iters.value, axes=axes)
            fig.tight_layout()
            plt.show()
        readout.value = (f"mean |W - W_hat|: RTN {stats['rtn']:.4g} &middot; HQQ start {stats['init']:.4g} "
                         f"&middot; HQQ {stats['hqq']:.4g} ({len(stats['errors'])} evaluations; "
                         f"{100 * stats['gain']:+.1f}% vs RTN); shrinkage lets through {100 * stats['active']:.0f}% "
                         f"of the starting errors")
        box.last = stats
        return stats

    for control in (bits_slider, group, lp_norm, log_beta, iters):
        control.observe(update, names="value")
    box = widgets.VBox([widgets.HBox([bits_slider, group, iters]), widgets.HBox([lp_norm, log_beta]), readout, out])
    box.update, box.bits, box.group, box.lp_norm, box.log_beta, box.iters, box.readout = (
        update, bits_slider, group, lp_norm, log_beta, iters, readout)
    update()
    return box
