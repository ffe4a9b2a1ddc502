"""Notebook 14 widget: build a recipe from menus (method, bits of attention and MLP, group size), see it on the plane."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt

from .. import capstone
from ..plots.capstone import draw_pareto

#: Group-size menu: label -> group size (None: one group per output row).
GROUP_SIZES = {"64": 64, "128": 128, "per row": None}
BITS = (2, 3, 4, 8)


def menu_recipe(method: str, attn_bits: int, mlp_bits: int, group_size: int | None) -> dict:
    """The recipe the menus describe: attention projections at ``attn_bits``, MLP projections at ``mlp_bits``."""
    return {"*.self_attn.*": (method, attn_bits, group_size), "*.mlp.*": (method, mlp_bits, group_size)}


def recipe_explorer(model, tokenizer, rows: Sequence[Mapping] = (), budget_mb: float = capstone.BUDGET_MB,
                    target: float = capstone.TARGET_PERPLEXITY, max_tokens: int = capstone.MAX_TOKENS):
    """Menus for the method, the bits of the attention and MLP layers and the group size; returns the box.

    Every change evaluates the recipe (``capstone.evaluate_recipe``: a copy of ``model``, perplexity on
    ``max_tokens`` tokens) and draws it as a star among ``rows`` (e.g. ``capstone.uniform_points``).
    The box exposes ``update()`` (returns the result dict, with ``recipe`` and ``fits``), ``last``,
    and its controls ``method``, ``attn_bits``, ``mlp_bits``, ``group``, ``readout``.
    """
    import ipywidgets as widgets

    method = widgets.Dropdown(options=["rtn", "hqq"], value="hqq", description="method")
    attn_bits = widgets.Dropdown(options=list(BITS), value=4, description="attention bits")
    mlp_bits = widgets.Dropdown(options=list(BITS), value=3, description="MLP bits")
    group = widgets.Dropdown(options=list(GROUP_SIZES), value="128", description="group size")
    readout = widgets.HTML()
    out = widgets.Output()

    def update(change=None) -> dict:
        recipe = menu_recipe(method.value, attn_bits.value, mlp_bits.value, GROUP_SIZES[group.value])
        result = capstone.evaluate_recipe(model, tokenizer, recipe, max_tokens=max_tokens)
        result["recipe"] = recipe
        result["fits"] = result["size_mb"] <= budget_mb
        result["passes"] = result["fits"] and result["perplexity"] <= target
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(7, 4.2))
            inside = [r for r in rows if r["size_mb"] <= 2 * budget_mb] or list(rows)
            draw_pareto(ax, inside, "perplexity", budget_mb, target,
                        highlight=[dict(result, method="recipe", label="this recipe")])
            fig.tight_layout()
            plt.show()
        verdict = ("<b style='color:green'>fits and reaches the target</b>" if result["passes"] else
                   "<b style='color:#b00'>over the budget</b>" if not result["fits"] else
                   "<b style='color:#b60'>fits, but misses the target</b>")
        readout.value = (f"size {result['size_mb']:.4f} MB (budget {budget_mb}) &middot; perplexity "
                         f"{result['perplexity']:.2f} (target {target}) &middot; {verdict}")
        box.last = result
        return result

    for control in (method, attn_bits, mlp_bits, group):
        control.observe(update, names="value")
    box = widgets.VBox([widgets.HBox([method, group]), widgets.HBox([attn_bits, mlp_bits]), readout, out])
    box.update, box.method, box.attn_bits, box.mlp_bits, box.group, box.readout = (
        update, method, attn_bits, mlp_bits, group, readout)
    update()
    return box
