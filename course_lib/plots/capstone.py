"""Notebook 14 plots: the size-quality plane with its Pareto front, layer sensitivities, bit allocations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt

from .. import capstone

__all__ = ["draw_pareto", "plot_pareto", "plot_sensitivity", "plot_allocation"]

_MARKERS = {"fp32": "s", "fp16": "s", "int8": "D", "NF4": "P", "RTN": "o", "HQQ": "^", "GPTQ": "v", "AWQ": "<"}


def _label(row: Mapping) -> str:
    bits, g = row.get("bits"), row.get("group_size")
    if row["method"] in ("fp32", "fp16", "int8", "NF4") or bits is None:
        return row["method"]
    return f"{row['method']} {bits}b" + (f" g{g}" if g else "")


def draw_pareto(ax, rows: Sequence[Mapping], quality: str = "perplexity", budget_mb: float | None = None,
                target: float | None = None, highlight: Sequence[Mapping] = (), lower_is_better: bool = True,
                target_label: str = "target") -> list[int]:
    """Scatter ``rows`` (dicts with ``method``, ``size_mb`` and ``quality``), draw their Pareto front.

    ``highlight`` rows (e.g. your recipes, with a ``label`` key) are drawn as stars and take part in
    the front; ``target`` (a horizontal line) is labelled ``target_label``. Returns the indices (into
    ``rows + highlight``) of the front.
    """
    allrows = list(rows) + list(highlight)
    loss = [r[quality] if lower_is_better else -r[quality] for r in allrows]
    front = capstone.pareto_front([(r["size_mb"], v) for r, v in zip(allrows, loss)])
    seen = set()
    for r in rows:
        m = r["method"]
        ax.scatter(r["size_mb"], r[quality], marker=_MARKERS.get(m, "o"), s=45, color=f"C{list(_MARKERS).index(m) % 10}"
                   if m in _MARKERS else "0.4", label=m if m not in seen else None, zorder=3)
        seen.add(m)
        ax.annotate(_label(r), (r["size_mb"], r[quality]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    for r in highlight:
        ax.scatter(r["size_mb"], r[quality], marker="*", s=220, color="gold", edgecolor="k", zorder=4,
                   label=r.get("label", "recipe"))
    xs = [allrows[i]["size_mb"] for i in front]
    ys = [allrows[i][quality] for i in front]
    ax.step(xs, ys, where="post", color="k", lw=1, ls="--", label="Pareto front", zorder=2)
    if budget_mb is not None:
        ax.axvline(budget_mb, color="C3", lw=1, label=f"budget {budget_mb} MB")
    if target is not None:
        ax.axhline(target, color="C2", lw=1, label=f"{target_label} {target:.4g}")
    ax.set_xlabel("size (MB, exact packed bytes / 1e6)")
    ax.set_ylabel(quality)
    ax.legend(fontsize=7, loc="upper right")
    return front


def plot_pareto(rows: Sequence[Mapping], quality: str = "perplexity", budget_mb: float | None = None,
                target: float | None = None, highlight: Sequence[Mapping] = (), lower_is_better: bool = True,
                zoom: tuple[float, float] | None = None, title: str = "", target_label: str = "target"):
    """The size-quality plane: every row, the front, the budget; a second panel zoomed on ``zoom`` (MB range)."""
    n = 2 if zoom else 1
    fig, axes = plt.subplots(1, n, figsize=(6.2 * n, 4.4), squeeze=False)
    draw_pareto(axes[0, 0], rows, quality, budget_mb, target, highlight, lower_is_better, target_label)
    axes[0, 0].set_title(title or f"size vs {quality}")
    if zoom:
        ax = axes[0, 1]
        inside = [r for r in rows if zoom[0] <= r["size_mb"] <= zoom[1]]
        draw_pareto(ax, inside, quality, budget_mb, target, highlight, lower_is_better, target_label)
        ax.set_xlim(*zoom)
        ax.set_title(f"zoom: {zoom[0]}-{zoom[1]} MB")
    fig.tight_layout()
    return fig


def _grid(values: Mapping[str, float]):
    """``{"...layers.<b>.<kind>.<proj>": v}`` -> (block labels, layer labels, matrix) for a heat map."""
    blocks, kinds, cells = [], [], {}
    for name, v in values.items():
        parts = name.split(".")
        idx = next((i for i, p in enumerate(parts) if p.isdigit()), None)
        block = parts[idx] if idx is not None else "-"
        kind = parts[-1]
        if block not in blocks:
            blocks.append(block)
        if kind not in kinds:
            kinds.append(kind)
        cells[(block, kind)] = v
    matrix = [[cells.get((b, k), float("nan")) for k in kinds] for b in blocks]
    return blocks, kinds, matrix


def plot_sensitivity(sensitivity: Mapping[str, float], title: str = "perplexity increase, one layer quantized"):
    """Heat map blocks x layers of ``layer_sensitivity``'s numbers, with the values written in."""
    blocks, kinds, matrix = _grid(sensitivity)
    fig, ax = plt.subplots(figsize=(1.1 * len(kinds) + 2, 0.55 * len(blocks) + 1.6))
    im = ax.imshow(matrix, cmap="magma_r", aspect="auto")
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                    color="w" if v > 0.6 * max(max(r) for r in matrix) else "k")
    ax.set_xticks(range(len(kinds)), kinds, rotation=30, fontsize=8)
    ax.set_yticks(range(len(blocks)), [f"block {b}" for b in blocks], fontsize=8)
    fig.colorbar(im, ax=ax)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_allocation(recipe_specs: Mapping[str, Sequence], title: str = "bits per layer"):
    """Heat map blocks x layers of the bit width of each layer (``resolve_recipe``'s output or ``{layer: bits}``)."""
    bits = {n: (s[1] if isinstance(s, (tuple, list)) else s) for n, s in recipe_specs.items()}
    blocks, kinds, matrix = _grid(bits)
    fig, ax = plt.subplots(figsize=(1.1 * len(kinds) + 2, 0.55 * len(blocks) + 1.6))
    ax.imshow(matrix, cmap="viridis", aspect="auto", vmin=2, vmax=8)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:g}", ha="center", va="center", fontsize=9, color="w" if v < 6 else "k")
    ax.set_xticks(range(len(kinds)), kinds, rotation=30, fontsize=8)
    ax.set_yticks(range(len(blocks)), [f"block {b}" for b in blocks], fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
