"""Notebook 14 (capstone): mixed-precision recipes under a memory budget, and the Pareto front.

A **recipe** says how every ``nn.Linear`` weight of a model is stored: a dict that maps layer
names, or ``fnmatch`` patterns of them, to a spec ``(method, bits)`` or ``(method, bits, group_size)``::

    {"*": ("rtn", 3, 128),                          # every Linear: 3-bit round-to-nearest, groups of 128
     "model.layers.0.*": ("rtn", 4, 128),           # ... except block 0: 4 bits
     "*.v_proj": ("hqq", 4, 64)}                    # ... and every v_proj: 4-bit HQQ, groups of 64

- **Later entries win**: a layer takes the spec of the last pattern that matches it (so put the
  default ``"*"`` first). A layer no pattern matches stays as stored (float32: ``("fp", 32)``).
  A pattern that matches no layer is an error (a typo would otherwise pass silently).
- Layers are those of ``lm_quant.linear_layers(model)``: every ``nn.Linear`` except ``lm_head``
  (the course LM ties it to the embedding). Embeddings, norms and biases stay as stored.

The methods (``METHODS``), what each stores per weight matrix ``[rows, cols]`` and how a layer is
quantized here (weights replaced by their dequantized values, except ``int8``):

============  ==========================  ===============================================================
method        bits, group_size            stored
============  ==========================  ===============================================================
``fp``        16 or 32, None              the weight in float16 / float32
``rtn``       2..8, None or divisor       ``bits``-bit codes + fp16 scale + fp16 zero point per group
``hqq``       2..8, None or divisor       same storage as ``rtn``; zero points fitted by HQQ (notebook 09)
``nf4``       4, block size (None: 64)    4-bit NF4 codes + float32 absmax per block of the flat weight
``int8``      8, None                     LLM.int8(): int8 codes + float32 absmax per output row
                                          (activations quantized per token at run time, notebook 06)
============  ==========================  ===============================================================

``group_size=None`` means one group per output row (``rtn``/``hqq``). A group's metadata is
``METADATA_BITS = 32`` bits for every quantized method, the convention of
``evaluate.quantization_table`` (``scale_bits=32``), so a uniform recipe's size equals
``evaluate.model_size_bytes(model, bits_per_param=bits, group_size=g, scale_bits=32)`` exactly.

Sizes are exact byte counts: each weight takes ``ceil((numel * bits + n_groups * 32) / 8)`` bytes
(``n_groups``: ``rows * cols / group_size`` for rtn/hqq, ``ceil(numel / block)`` for nf4, ``rows``
for int8, 0 for fp), and everything that is not a quantized Linear weight counts as stored.

Functions: ``resolve_recipe``, ``layer_size_bytes``, ``unquantized_bytes``, ``recipe_size_bytes``,
``apply_recipe``, ``evaluate_recipe``, ``evaluate_embedding_recipe``, ``layer_sensitivity``,
``extrapolate_sensitivity``, ``layer_bytes_table``, ``choose_bits``, ``predicted_increase``,
``bits_recipe``, ``pareto_front``, ``uniform_points`` (every method of the course at uniform
settings, GPTQ and AWQ included when their modules are present).
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import importlib
import importlib.util
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import torch
from torch import nn

from .validation import check_int

__all__ = [
    "METHODS",
    "METADATA_BITS",
    "BUDGET_MB",
    "MAX_TOKENS",
    "TARGET_PERPLEXITY",
    "check_recipe",
    "LayerSpec",
    "resolve_recipe",
    "layer_size_bytes",
    "unquantized_bytes",
    "recipe_size_bytes",
    "apply_recipe",
    "evaluate_recipe",
    "evaluate_embedding_recipe",
    "layer_sensitivity",
    "extrapolate_sensitivity",
    "layer_bytes_table",
    "choose_bits",
    "predicted_increase",
    "bits_recipe",
    "pareto_front",
    "uniform_points",
    "eval_text",
]

#: The per-layer methods a recipe may use.
METHODS = ("fp", "rtn", "hqq", "nf4", "int8")
#: Bits of metadata per group (rtn/hqq: fp16 scale + fp16 zero point; nf4/int8: one float32 absmax).
METADATA_BITS = 32
#: NF4's block size when a recipe gives None (bitsandbytes' default).
NF4_DEFAULT_BLOCK = 64

#: The capstone's task: the course LM in at most BUDGET_MB megabytes (1e6 bytes, ``recipe_size_bytes``),
#: halfway between uniform 3-bit (5.109 MB) and 4-bit (5.387 MB) weights with groups of 128.
BUDGET_MB = 5.25
#: Tokens of the eval split every capstone perplexity is measured on.
MAX_TOKENS = 1024
#: The quality target: perplexity on the first MAX_TOKENS tokens at most this. The reference recipe
#: (tests/library/test_capstone.py: greedy allocation of 3/4/8 bits from 2-bit probes, HQQ, groups of 128) reached
#: 28.53 on the reference run (float model 27.47); the margin of ~0.5 (2 %) covers other machines and
#: leaves room for other recipes. Uniform RTN 3-bit within the budget reaches 31.9 and the same greedy
#: allocation with RTN 29.4: neither passes.
TARGET_PERPLEXITY = 29.0


class LayerSpec(NamedTuple):
    """How one weight matrix is stored: ``method`` in ``METHODS``, ``bits``, ``group_size`` (None or int)."""

    method: str
    bits: int
    group_size: int | None = None


# ----------------------------------------------------------------------------------------------
# recipes: parsing, sizes


def _linear_layers(model) -> dict[str, nn.Linear]:
    from .lm_quant import linear_layers

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return linear_layers(model)


def _parse_spec(spec, where: str) -> LayerSpec:
    """Validate one spec (tuple/list/LayerSpec) without looking at a layer; returns a LayerSpec."""
    if not isinstance(spec, (tuple, list)) or not 2 <= len(spec) <= 3:
        raise TypeError(f"{where}: a spec must be a tuple (method, bits) or (method, bits, group_size), got {spec!r}")
    method, bits = spec[0], spec[1]
    group = spec[2] if len(spec) == 3 else None
    if method not in METHODS:
        raise ValueError(f"{where}: method must be one of {METHODS}, got {method!r}")
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"{where}: bits must be an int, got {type(bits).__name__}")
    if group is not None and (isinstance(group, bool) or not isinstance(group, int)):
        raise TypeError(f"{where}: group_size must be None or a positive int, got {type(group).__name__}")
    if group is not None and group < 1:
        raise ValueError(f"{where}: group_size must be None or a positive int, got {group}")
    if method == "fp":
        if bits not in (16, 32):
            raise ValueError(f"{where}: bits must be 16 or 32 for method 'fp', got {bits}")
        if group is not None:
            raise ValueError(f"{where}: group_size must be None for method 'fp', got {group}")
    elif method in ("rtn", "hqq"):
        if not 2 <= bits <= 8:
            raise ValueError(f"{where}: bits must be in [2, 8] for method {method!r}, got {bits}")
    elif method == "nf4":
        if bits != 4:
            raise ValueError(f"{where}: bits must be 4 for method 'nf4', got {bits}")
        group = NF4_DEFAULT_BLOCK if group is None else group
    elif method == "int8":
        if bits != 8:
            raise ValueError(f"{where}: bits must be 8 for method 'int8', got {bits}")
        if group is not None:
            raise ValueError(f"{where}: group_size must be None for method 'int8' (one scale per row), got {group}")
    return LayerSpec(method, bits, group)


def _stored_spec(weight: torch.Tensor) -> LayerSpec:
    return LayerSpec("fp", weight.element_size() * 8, None)


def resolve_recipe(model: nn.Module, recipe: Mapping) -> dict[str, LayerSpec]:
    """The spec of every quantizable Linear of ``model`` under ``recipe``.

    Args:
        model: the float model (e.g. the course LM or MiniLM), not modified.
        recipe: ``{name_or_pattern: (method, bits[, group_size])}``; see the module docstring.

    Returns:
        ``{layer_name: LayerSpec}`` for every layer of ``lm_quant.linear_layers(model)``, in model
        order; layers no pattern matches get ``LayerSpec("fp", <stored bits>, None)``.

    Raises:
        TypeError/ValueError naming the ``recipe`` entry: not a dict, a pattern that matches no
        layer, an unknown method, bits the method does not have, a group size that does not
        divide a matched layer's ``in_features`` (rtn/hqq).
    """
    layers = _linear_layers(model)
    if not isinstance(recipe, Mapping):
        raise TypeError(f"recipe must be a dict {{layer name or pattern: (method, bits, group_size)}}, "
                        f"got {type(recipe).__name__}")
    parsed = []
    for pattern, spec in recipe.items():
        if not isinstance(pattern, str) or not pattern:
            raise TypeError(f"recipe keys must be non-empty strings (layer names or patterns), got {pattern!r}")
        where = f"recipe[{pattern!r}]"
        s = _parse_spec(spec, where)
        matched = [n for n in layers if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            example = next(iter(layers), "<none>")
            raise ValueError(f"{where}: the pattern matches no Linear layer of the model "
                             f"(names look like {example!r}; lm_head is never quantized)")
        if s.method in ("rtn", "hqq") and s.group_size is not None:
            for n in matched:
                cols = layers[n].in_features
                if cols % s.group_size:
                    raise ValueError(f"{where}: group_size={s.group_size} must divide in_features={cols} of {n}")
        parsed.append((pattern, s))
    out = {}
    for name, lin in layers.items():
        spec = _stored_spec(lin.weight)
        for pattern, s in parsed:
            if fnmatch.fnmatchcase(name, pattern):
                spec = s
        out[name] = spec
    return out


def layer_size_bytes(shape: Sequence[int], spec) -> int:
    """Exact bytes of one weight matrix ``[rows, cols]`` stored as ``spec``.

    ``ceil((rows * cols * bits + n_groups * METADATA_BITS) / 8)`` with ``n_groups`` = 0 (fp),
    ``rows * cols / group_size`` (rtn/hqq with groups), ``rows`` (rtn/hqq per row, int8),
    ``ceil(rows * cols / block)`` (nf4, blocks of the flattened weight).

    Args:
        shape: ``(rows, cols)`` = ``(out_features, in_features)``, positive ints.
        spec: ``(method, bits[, group_size])`` or a ``LayerSpec``.

    Returns:
        An int.
    """
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, (tuple, list)) or len(shape) != 2 or any(
            isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(f"shape must be (rows, cols) of positive ints, got {shape!r}")
    s = _parse_spec(spec, "spec")
    rows, cols = shape
    n = rows * cols
    if s.method == "fp":
        groups = 0
    elif s.method == "nf4":
        groups = math.ceil(n / s.group_size)
    elif s.group_size is None:
        groups = rows
    else:
        if cols % s.group_size:
            raise ValueError(f"group_size={s.group_size} must divide cols={cols}")
        groups = n // s.group_size
    return math.ceil((n * s.bits + groups * METADATA_BITS) / 8)


def unquantized_bytes(model: nn.Module) -> int:
    """Bytes of everything a recipe does not touch: embeddings, norms, biases, lm_head, buffers.

    ``evaluate.model_size_bytes(model)`` (each tensor once, as stored) minus the stored bytes of the
    weights of ``lm_quant.linear_layers(model)``.

    Args:
        model: a causal LM.

    Returns:
        int: bytes.
    """
    from .evaluate import model_size_bytes

    layers = _linear_layers(model)
    total = model_size_bytes(model)
    return total - sum(lin.weight.numel() * lin.weight.element_size() for lin in layers.values())


def recipe_size_bytes(model: nn.Module, recipe: Mapping) -> int:
    """Exact bytes of ``model`` stored with ``recipe``: every Linear weight as its spec says, the rest as stored.

    Args:
        model: the float model (not modified).
        recipe: see the module docstring.

    Returns:
        ``unquantized_bytes(model) + sum(layer_size_bytes(weight.shape, spec))`` over the layers, an int.
        For a uniform rtn/hqq recipe ``{"*": (m, bits, g)}`` this equals
        ``evaluate.model_size_bytes(model, bits_per_param=bits, group_size=g, scale_bits=32)``.
    """
    specs = resolve_recipe(model, recipe)
    layers = _linear_layers(model)
    return unquantized_bytes(model) + sum(layer_size_bytes(tuple(layers[n].weight.shape), s) for n, s in specs.items())


# ----------------------------------------------------------------------------------------------
# applying and evaluating recipes


@torch.no_grad()
def _quantized_weight(w: torch.Tensor, spec: LayerSpec) -> torch.Tensor:
    from .granularity import fake_quantize_weight
    from .hqq import hqq_quantize_weight
    from .nf4 import fake_quantize_4bit

    if spec.method == "fp":
        return w.to(torch.float16).to(w.dtype) if spec.bits == 16 else w.to(torch.float32).to(w.dtype)
    if spec.method == "rtn":
        return fake_quantize_weight(w, spec.bits, spec.group_size)
    if spec.method == "hqq":
        return hqq_quantize_weight(w, spec.bits, spec.group_size)
    if spec.method == "nf4":
        return fake_quantize_4bit(w, "nf4", spec.group_size).to(w.dtype)
    raise AssertionError(spec.method)  # int8 is handled by module replacement


def apply_recipe(model: nn.Module, recipe: Mapping, progress: bool = False) -> nn.Module:
    """Quantize ``model``'s Linear layers in place as ``recipe`` says; returns the model.

    rtn, hqq, nf4 and fp16 replace each weight by its dequantized values ("fake" quantization: the
    outputs of a packed kernel up to summation order); int8 replaces the layer by an
    ``llm_int8.Int8Linear`` (LLM.int8(), outliers through the int8 weights as in bitsandbytes).
    Pass a copy (``copy.deepcopy``) to keep the float model.

    Args:
        model: changed in place.
        recipe: ``{layer name or pattern: (method, bits, group_size)}``.
        progress: show a tqdm bar.

    Returns:
        nn.Module: ``model`` itself.
    """
    from tqdm.auto import tqdm

    from .llm_int8 import Int8Linear

    specs = resolve_recipe(model, recipe)
    layers = _linear_layers(model)
    for name, spec in tqdm(specs.items(), desc="recipe", disable=not progress, leave=False):
        lin = layers[name]
        if spec == _stored_spec(lin.weight):
            continue
        if spec.method == "int8":
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, Int8Linear.from_linear(lin, mode="llm.int8", outlier_weights="int8"))
        else:
            with torch.no_grad():
                lin.weight.copy_(_quantized_weight(lin.weight.data, spec))
    return model


def _check_max_tokens(max_tokens) -> None:
    if max_tokens is not None:
        check_int(max_tokens, "max_tokens", low=2)


@functools.lru_cache(maxsize=8)
def eval_text(max_tokens: int | None = None) -> str:
    """The course corpus' eval split, or a prefix of it long enough for ``max_tokens`` tokens.

    ``perplexity`` tokenizes the whole text before keeping ``max_tokens`` tokens; a prefix cut at
    a line break, with about 4x the characters needed, gives the same first ``max_tokens`` tokens
    (tests/library/test_capstone.py checks it) in a fraction of the time.

    Args:
        max_tokens: tokens needed, or None for the whole split.

    Returns:
        str: the text.
    """
    from .data import corpus_text

    text = corpus_text("eval")
    if max_tokens is None:
        return text
    _check_max_tokens(max_tokens)
    cut = text.find("\n", 16 * max_tokens)
    return text if cut < 0 else text[:cut]


def evaluate_recipe(model: nn.Module, tokenizer, recipe: Mapping, *, text: str | None = None,
                    max_tokens: int | None = 2048) -> dict:
    """Perplexity and exact size of a causal LM under ``recipe`` (the model itself is not modified).

    Args:
        model: a float causal LM (the course LM); a deep copy is quantized.
        tokenizer: its tokenizer.
        recipe: see the module docstring.
        text: evaluation text; default ``data.corpus_text("eval")``.
        max_tokens: evaluate on the first ``max_tokens`` tokens (None: all).

    Returns:
        ``{"perplexity": float, "size_bytes": int, "size_mb": float}`` (MB = 1e6 bytes).
    """
    from .evaluate import perplexity

    _check_max_tokens(max_tokens)
    size = recipe_size_bytes(model, recipe)
    q = apply_recipe(copy.deepcopy(model), recipe)
    ppl = perplexity(q, tokenizer, eval_text(max_tokens) if text is None else text, max_tokens=max_tokens)
    return {"perplexity": ppl, "size_bytes": size, "size_mb": size / 1e6}


def _sentences() -> list[str]:
    from .data import sentence_pairs

    pairs = sentence_pairs()
    return [a for a, _, _ in pairs] + [b for _, b, _ in pairs]


def evaluate_embedding_recipe(model: nn.Module, tokenizer, recipe: Mapping, *, sentences: Sequence[str] | None = None,
                              reference: torch.Tensor | None = None) -> dict:
    """Quality and exact size of a sentence encoder (MiniLM) under ``recipe``.

    Quality is the mean cosine between the float model's sentence embeddings and the quantized
    model's (``evaluate.embedding_cosine``; 1.0 = unchanged).

    Args:
        model: the float encoder (e.g. ``models.load_minilm()``); a deep copy is quantized.
        tokenizer: its tokenizer.
        recipe: see the module docstring (MiniLM's layers are ``encoder.layer.0.attention.self.query``, ...).
        sentences: default the sentences of ``data.sentence_pairs()``.
        reference: the float model's embeddings of ``sentences`` (computed when None; pass them to save time).

    Returns:
        ``{"cosine": float, "size_bytes": int, "size_mb": float}``.
    """
    from .evaluate import embedding_cosine
    from .models import embed

    sentences = _sentences() if sentences is None else list(sentences)
    size = recipe_size_bytes(model, recipe)
    if reference is None:
        reference = embed(model, tokenizer, sentences)
    q = apply_recipe(copy.deepcopy(model), recipe)
    cos = float(embedding_cosine(reference, embed(q, tokenizer, sentences)).mean())
    return {"cosine": cos, "size_bytes": size, "size_mb": size / 1e6}


# ----------------------------------------------------------------------------------------------
# sensitivity and bit allocation


def layer_sensitivity(model: nn.Module, tokenizer, spec=("rtn", 2, 128), *, layers: Sequence[str] | None = None,
                      text: str | None = None, max_tokens: int | None = 1024, progress: bool = True) -> dict[str, float]:
    """Perplexity increase when one layer alone is quantized with ``spec`` (all others float).

    Args:
        model: the float causal LM (not modified: each layer is quantized in a copy).
        tokenizer: its tokenizer.
        spec: ``(method, bits[, group_size])``, e.g. ``("rtn", 2, 128)``; a low bit width makes
            the differences between layers stand out above the evaluation noise.
        layers: names or patterns of the layers to probe (default every Linear).
        text: evaluation text (default the eval split).
        max_tokens: tokens evaluated per probe (small: this runs once per layer).
        progress: a progress bar over the layers.

    Returns:
        ``{layer_name: perplexity(layer quantized) - perplexity(float)}`` in model order.
    """
    from tqdm.auto import tqdm

    from .evaluate import perplexity

    _check_max_tokens(max_tokens)
    _parse_spec(spec, "spec")
    names = list(_linear_layers(model))
    if layers is not None:
        if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
            raise TypeError("layers must be a non-empty list of layer names or patterns (or None for all)")
        names = list(resolve_recipe(model, {p: spec for p in layers}))
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in layers)]
    text = eval_text(max_tokens) if text is None else text
    base = perplexity(model, tokenizer, text, max_tokens=max_tokens)
    out = {}
    for name in tqdm(names, desc="sensitivity", disable=not progress, leave=False):
        q = apply_recipe(copy.deepcopy(model), {name: tuple(spec)})
        out[name] = perplexity(q, tokenizer, text, max_tokens=max_tokens) - base
    return out


def extrapolate_sensitivity(probe: Mapping[str, float], probe_bits: int, options: Sequence[int] = (3, 4, 8)
                            ) -> dict[str, dict[int, float]]:
    """Predicted increase of every layer at every bit width, from one probe, by the 6 dB-per-bit rule.

    One more bit halves the step, so the squared error, and to first order the loss increase, drops
    4x: ``increase(b) = max(probe, 0) * 4 ** (probe_bits - b)``. (A probe below 0 is noise: 0.)

    Args:
        probe: ``{layer: increase at probe_bits}`` (from ``layer_sensitivity``).
        probe_bits: the probe's bit width (2..8).
        options: the bit widths to predict, ints in [2, 16].

    Returns:
        ``{layer: {bits: predicted increase}}``.
    """
    if not isinstance(probe, Mapping) or not probe:
        raise TypeError("probe must be a non-empty dict {layer: increase}")
    check_int(probe_bits, "probe_bits", low=2, high=8)
    if isinstance(options, (str, bytes)) or not isinstance(options, Sequence) or not options:
        raise TypeError("options must be a non-empty list of bit widths")
    for b in options:
        check_int(b, "options", low=2, high=16)
    out = {}
    for name, v in probe.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"probe[{name!r}] must be a finite number, got {v!r}")
        out[name] = {b: max(float(v), 0.0) * 4.0 ** (probe_bits - b) for b in options}
    return out


def layer_bytes_table(model: nn.Module, options: Sequence[int] = (3, 4, 8), method: str = "rtn",
                      group_size: int | None = 128) -> dict[str, dict[int, int]]:
    """``{layer: {bits: layer_size_bytes(shape, (method, bits, group_size))}}`` for every Linear of ``model``.

    Args:
        model: a causal LM.
        options: bit widths to price.
        method: the storage format's method.
        group_size: None (per channel) or the group length.

    Returns:
        dict[str, dict[int, int]]: bytes per layer and bit width.
    """
    layers = _linear_layers(model)
    return {name: {b: layer_size_bytes(tuple(lin.weight.shape), (method, b, group_size)) for b in options}
            for name, lin in layers.items()}


def _check_tables(sensitivity, layer_bytes, budget_bytes) -> None:
    for arg, table in (("sensitivity", sensitivity), ("layer_bytes", layer_bytes)):
        if not isinstance(table, Mapping) or not table:
            raise TypeError(f"{arg} must be a non-empty dict {{layer: {{option: value}}}}")
        for name, opts in table.items():
            if not isinstance(opts, Mapping) or not opts:
                raise TypeError(f"{arg}[{name!r}] must be a non-empty dict {{option: value}}")
            for o, v in opts.items():
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise ValueError(f"{arg}[{name!r}][{o!r}] must be a finite number, got {v!r}")
                if arg == "layer_bytes" and v < 0:
                    raise ValueError(f"layer_bytes[{name!r}][{o!r}] must be >= 0, got {v}")
    if set(sensitivity) != set(layer_bytes):
        raise ValueError("sensitivity and layer_bytes must have the same layers")
    for name in sensitivity:
        if set(sensitivity[name]) != set(layer_bytes[name]):
            raise ValueError(f"sensitivity[{name!r}] and layer_bytes[{name!r}] must have the same options")
    if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, (int, float)) or not math.isfinite(budget_bytes):
        raise TypeError(f"budget_bytes must be a finite number, got {budget_bytes!r}")


def choose_bits(sensitivity: Mapping[str, Mapping], layer_bytes: Mapping[str, Mapping], budget_bytes: float) -> dict:
    """Greedy mixed-precision allocation: the best option per layer within a byte budget.

    Start every layer at its cheapest option (fewest bytes; ties: lower sensitivity). Then, as long
    as some upgrade fits, take the upgrade (one layer, from its current option to any other option
    that lowers its predicted increase) with the largest decrease of predicted increase per extra
    byte; an upgrade that costs no extra byte counts as infinitely good. Ties go to the layer that
    comes first, then to the cheaper option. The objective is the sum of per-layer increases (the
    additive model of ``predicted_increase``).

    Args:
        sensitivity: ``{layer: {option: predicted perplexity increase}}`` (e.g. options = bit widths).
        layer_bytes: ``{layer: {option: bytes}}``, same layers and options.
        budget_bytes: bytes available for these layers (all of them together).

    Returns:
        ``{layer: option}`` whose bytes sum to at most ``budget_bytes``.

    Raises:
        ValueError mentioning ``budget_bytes`` when even the cheapest options do not fit.
    """
    _check_tables(sensitivity, layer_bytes, budget_bytes)
    choice = {n: min(layer_bytes[n], key=lambda o, n=n: (layer_bytes[n][o], sensitivity[n][o])) for n in layer_bytes}
    used = sum(layer_bytes[n][o] for n, o in choice.items())
    if used > budget_bytes:
        raise ValueError(f"budget_bytes={budget_bytes} is below the cheapest allocation ({used} bytes)")
    while True:
        best = None  # (ratio, -extra, name, option)
        for name, cur in choice.items():
            for o in layer_bytes[name]:
                gain = sensitivity[name][cur] - sensitivity[name][o]
                extra = layer_bytes[name][o] - layer_bytes[name][cur]
                if gain <= 0 or used + extra > budget_bytes:
                    continue
                ratio = math.inf if extra <= 0 else gain / extra
                if best is None or ratio > best[0] or (ratio == best[0] and extra < best[1] and name == best[2]):
                    best = (ratio, extra, name, o)
        if best is None:
            return choice
        _, extra, name, o = best
        choice[name] = o
        used += extra


def predicted_increase(sensitivity: Mapping[str, Mapping], choice: Mapping) -> float:
    """Sum of ``sensitivity[layer][choice[layer]]`` over the layers (the additive model of the loss increase).

    Args:
        sensitivity: ``{layer: {bits: loss increase}}``.
        choice: ``{layer: bits}``.

    Returns:
        float: the predicted increase.
    """
    if not isinstance(choice, Mapping) or set(choice) != set(sensitivity):
        raise ValueError("choice must be a dict with exactly the layers of sensitivity")
    for n, o in choice.items():
        if o not in sensitivity[n]:
            raise ValueError(f"choice[{n!r}]={o!r} is not one of the options {list(sensitivity[n])}")
    return float(sum(sensitivity[n][o] for n, o in choice.items()))


def bits_recipe(choice: Mapping[str, int], method: str = "rtn", group_size: int | None = 128) -> dict:
    """``{layer: (method, bits, group_size)}`` from ``choose_bits``' ``{layer: bits}``.

    Args:
        choice: ``{layer: bits}``.
        method: the method of every layer.
        group_size: None (per channel) or the group length.

    Returns:
        dict: the recipe.
    """
    if not isinstance(choice, Mapping) or not choice:
        raise TypeError("choice must be a non-empty dict {layer: bits}")
    return {name: (method, bits, group_size) for name, bits in choice.items()}


# ----------------------------------------------------------------------------------------------
# the Pareto front


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points that no other point dominates, both coordinates lower-is-better.

    Point ``j`` dominates point ``i`` when ``x_j <= x_i`` and ``y_j <= y_i`` with at least one strict
    (identical points do not dominate each other: both stay on the front).

    Args:
        points: a sequence of ``(size, loss)`` pairs (e.g. (MB, perplexity)), finite numbers; or a
            float tensor ``[N, 2]``. May be empty.

    Returns:
        The indices of the non-dominated points, sorted by ``(size, loss, index)``: along the front,
        size increases and loss strictly decreases (except between identical points).
    """
    if isinstance(points, torch.Tensor):
        if points.dim() != 2 or (points.numel() and points.shape[1] != 2):
            raise ValueError(f"points must have shape [N, 2], got {tuple(points.shape)}")
        points = points.tolist()
    if isinstance(points, (str, bytes)) or not isinstance(points, Sequence):
        raise TypeError(f"points must be a sequence of (size, loss) pairs, got {type(points).__name__}")
    pts = []
    for i, p in enumerate(points):
        if isinstance(p, torch.Tensor):
            p = p.tolist()
        if not isinstance(p, (tuple, list)) or len(p) != 2:
            raise ValueError(f"points[{i}] must be a (size, loss) pair, got {p!r}")
        for v in p:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"points[{i}] must hold finite numbers, got {p!r}")
        pts.append((float(p[0]), float(p[1])))
    order = sorted(range(len(pts)), key=lambda i: (pts[i][0], pts[i][1], i))
    front, best_loss, last = [], math.inf, None
    for i in order:
        x, y = pts[i]
        if y < best_loss or (last is not None and pts[last] == (x, y)):
            front.append(i)
            best_loss, last = min(best_loss, y), i
    return front


# ----------------------------------------------------------------------------------------------
# every method of the course at uniform settings


def _optional(module: str, fn: str) -> Callable | None:
    """``module.fn`` when the module exists and defines it, else None."""
    if importlib.util.find_spec(module) is None:
        return None
    f = getattr(importlib.import_module(module), fn, None)
    return f if callable(f) else None


def uniform_points(model: nn.Module, tokenizer, *, max_tokens: int | None = 2048, text: str | None = None,
                   settings: Sequence[tuple[int, int | None]] = ((4, 128), (3, 128), (4, None), (3, None)),
                   calibrated: Sequence[tuple[int, int | None]] = ((3, 128),), n_calib: int = 8,
                   calib_kwargs: Mapping[str, dict] | None = None, progress: bool = True) -> list[dict]:
    """Size and perplexity of the course LM under every method of the course, uniformly.

    Rows: float32, fp16, int8 (LLM.int8()), NF4 (block 64), RTN and HQQ at each of ``settings``,
    and GPTQ and AWQ (when ``course_lib.gptq`` / ``course_lib.awq`` are present) at each of
    ``calibrated``, calibrated on ``n_calib`` windows of 128 tokens (fewer than the papers' 128:
    a few seconds instead of a minute; see ``benchmarks/quant_methods.py`` for the full setting).
    ``calib_kwargs`` adds keyword arguments per method, e.g. ``{"AWQ": {"n_grid": 5}}``.

    Args:
        model, tokenizer: the course LM and its tokenizer (copied per row; the model is not changed).
        max_tokens: evaluation tokens (None: all).
        text: evaluation text (default: :func:`eval_text`).
        settings: ``(bits, group_size)`` of the RTN and HQQ rows.
        calibrated: ``(bits, group_size)`` of the GPTQ and AWQ rows.
        n_calib: calibration windows.
        calib_kwargs: extra keyword arguments per method.
        progress: show a tqdm bar.

    Returns:
        One dict per row: ``method``, ``bits``, ``group_size``, ``perplexity``, ``size_mb``, ``seconds``.
        Sizes of GPTQ and AWQ rows count the same storage as RTN (codes + fp16 scale and zero point).
    """
    from tqdm.auto import tqdm

    from .evaluate import perplexity

    _check_max_tokens(max_tokens)
    check_int(n_calib, "n_calib", low=1)
    text = eval_text(max_tokens) if text is None else text
    jobs: list[tuple[str, int | None, int | None, Callable]] = [
        ("fp32", 32, None, lambda m: m),
        ("fp16", 16, None, lambda m: apply_recipe(m, {"*": ("fp", 16)})),
        ("int8", 8, None, lambda m: apply_recipe(m, {"*": ("int8", 8)})),
        ("NF4", 4, 64, lambda m: apply_recipe(m, {"*": ("nf4", 4, 64)})),
    ]
    for name, method in (("RTN", "rtn"), ("HQQ", "hqq")):
        for bits, g in settings:
            jobs.append((name, bits, g, lambda m, method=method, b=bits, g=g: apply_recipe(m, {"*": (method, b, g)})))
    calib = None
    for name, module, fn in (("GPTQ", "course_lib.gptq", "quantize_model_gptq"),
                             ("AWQ", "course_lib.awq", "quantize_model_awq")):
        f = _optional(module, fn) if calibrated else None
        if f is None:
            continue
        if calib is None:
            from .lm_quant import calibration_ids
            calib = calibration_ids(tokenizer, n_calib, 128)
        for bits, g in calibrated:
            kw = dict((calib_kwargs or {}).get(name, {}))
            jobs.append((name, bits, g, lambda m, f=f, b=bits, g=g, kw=kw: f(m, tokenizer, b, g, calib_ids=calib,
                                                                              progress=False, **kw)))
    rows = []
    for name, bits, g, fn in tqdm(jobs, desc="methods", disable=not progress):
        m = copy.deepcopy(model)
        start = time.perf_counter()
        fn(m)
        seconds = time.perf_counter() - start
        if name in ("fp32", "fp16", "int8", "NF4"):
            method = {"fp32": ("fp", 32), "fp16": ("fp", 16), "int8": ("int8", 8), "NF4": ("nf4", 4, 64)}[name]
        else:
            method = ("rtn", bits, g)
        size = recipe_size_bytes(model, {"*": method})
        rows.append({"method": name, "bits": bits, "group_size": g,
                     "perplexity": perplexity(m, tokenizer, text, max_tokens=max_tokens),
                     "size_mb": size / 1e6, "seconds": seconds})
    return rows


# ----------------------------------------------------------------------------------------------
# the capstone's grader


def check_recipe(recipe: Mapping, model: nn.Module, tokenizer, *, budget_mb: float = BUDGET_MB,
                 target: float = TARGET_PERPLEXITY, max_tokens: int = MAX_TOKENS) -> dict:
    """Grade a recipe: re-evaluate it with course_lib and assert size <= budget and perplexity <= target.

    Returns ``evaluate_recipe``'s dict when both hold; raises AssertionError saying which failed.

    Args:
        recipe: ``{layer name or pattern: (method, bits, group_size)}``.
        model, tokenizer: the float course LM and its tokenizer (not changed).
        budget_mb: the size budget in MB.
        target: the perplexity to reach.
        max_tokens: evaluation tokens.

    Returns:
        dict: ``evaluate_recipe``'s numbers.
    """
    try:
        specs = resolve_recipe(model, recipe)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"the recipe is not valid: {exc}") from None
    if all(s == _stored_spec(l.weight) for s, l in zip(specs.values(), _linear_layers(model).values())):
        raise AssertionError("the recipe quantizes no layer")
    size = recipe_size_bytes(model, recipe)
    if size > budget_mb * 1e6:
        raise AssertionError(f"the recipe takes {size / 1e6:.4f} MB, over the budget of {budget_mb} MB")
    result = evaluate_recipe(model, tokenizer, recipe, max_tokens=max_tokens)
    if not result["perplexity"] <= target:
        raise AssertionError(f"perplexity {result['perplexity']:.3f} is above the target {target} "
                             f"(size {size / 1e6:.4f} MB of {budget_mb} MB)")
    return result
