"""Notebook 14 widget: build a recipe from menus (method, bits of attention and MLP, group size, the embedding's
storage), see it on the plane."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt

from .. import capstone
from ..plots.capstone import draw_pareto

#: Group-size menu: label -> group size (None: one group per output row).
GROUP_SIZES = {"64": 64, "128": 128, "per row": None}
BITS = (2, 3, 4, 8)
#: The embedding's menu: label -> its spec (None: stored as it is, float32).
EMBEDDINGS = {"float32": None, "8-bit per row": ("rtn", 8, None), "4-bit HQQ per row": ("hqq", 4, None),
              "3-bit HQQ per row": ("hqq", 3, None)}
EMBEDDING_NAME = "model.embed_tokens"


def menu_recipe(method: str, attn_bits: int, mlp_bits: int, group_size: int | None, embedding=None) -> dict:
    """The recipe the menus describe: attention projections at ``attn_bits``, MLP projections at ``mlp_bits``,
    the course LM's embedding as ``embedding`` (a spec, or None to keep it as stored)."""
    recipe = {"*.self_attn.*": (method, attn_bits, group_size), "*.mlp.*": (method, mlp_bits, group_size)}
    if embedding is not None:
        recipe[EMBEDDING_NAME] = tuple(embedding)
    return recipe


def recipe_explorer(model, tokenizer, rows: Sequence[Mapping] = (), budget_mb: float = capstone.BUDGET_MB,
                    max_tokens: int = capstone.MAX_TOKENS, reference: float | None = None, guide: float | None = None):
    """Menus for the method, the bits of the attention and MLP layers, the group size and the embedding; returns the box.

    Every change evaluates the recipe (``capstone.evaluate_recipe``: a copy of ``model``, perplexity on
    ``max_tokens`` tokens of the development text; gptq calibrates first, a few seconds) and draws it as a star
    among ``rows`` (e.g. ``capstone.uniform_points``). "fits" compares the size with ``budget_mb``; whether a
    recipe reaches the target on the held-out text only ``capstone.check_recipe`` says, so the readout gives the
    development perplexity, with the float model's ``reference`` next to it and ``guide`` (a development-text
    line to aim under, drawn on the plane) when given. The box exposes ``update()`` (returns the result dict,
    with ``recipe`` and ``fits``), ``last``, and its controls ``method``, ``attn_bits``, ``mlp_bits``, ``group``,
    ``embedding``, ``readout``.
    """
    import ipywidgets as widgets

    method = widgets.Dropdown(options=["rtn", "hqq", "gptq"], value="rtn", description="method")
    attn_bits = widgets.Dropdown(options=list(BITS), value=3, description="attention bits")
    mlp_bits = widgets.Dropdown(options=list(BITS), value=3, description="MLP bits")
    group = widgets.Dropdown(options=list(GROUP_SIZES), value="per row", description="group size")
    embedding = widgets.Dropdown(options=list(EMBEDDINGS), value="4-bit HQQ per row", description="embedding")
    readout = widgets.HTML()
    out = widgets.Output()

    def update(change=None) -> dict:
        recipe = menu_recipe(method.value, attn_bits.value, mlp_bits.value, GROUP_SIZES[group.value],
                             EMBEDDINGS[embedding.value])
        result = capstone.evaluate_recipe(model, tokenizer, recipe, max_tokens=max_tokens)
        result["recipe"] = recipe
        result["fits"] = result["size_mb"] <= budget_mb
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(7, 4.2))
            inside = [r for r in rows if r["size_mb"] <= 2 * budget_mb] or list(rows)
            draw_pareto(ax, inside, "perplexity", budget_mb, guide,
                        highlight=[dict(result, method="recipe", label="this recipe")], target_label="guide")
            fig.tight_layout()
            plt.show()
        fits = ("<b style='color:green'>fits the budget</b>" if result["fits"] else
                "<b style='color:#b00'>over the budget</b>")
        float_note = "" if reference is None else f", float {reference:.2f}"
        guide_note = "" if guide is None else f", guide {guide:.2f}"
        readout.value = (f"size {result['size_mb']:.4f} MB (budget {budget_mb}): {fits} &middot; perplexity "
                         f"{result['perplexity']:.2f} on the development text ({max_tokens} tokens{float_note}"
                         f"{guide_note}); the grade: capstone.check_recipe, on the held-out text")
        box.last = result
        return result

    for control in (method, attn_bits, mlp_bits, group, embedding):
        control.observe(update, names="value")
    box = widgets.VBox([widgets.HBox([method, group, embedding]), widgets.HBox([attn_bits, mlp_bits]), readout, out])
    box.update, box.method, box.attn_bits, box.mlp_bits, box.group, box.embedding, box.readout = (
        update, method, attn_bits, mlp_bits, group, embedding, readout)
    update()
    return box
