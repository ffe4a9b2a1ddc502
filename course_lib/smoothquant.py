"""Notebook 06, after LLM.int8(): SmoothQuant (Xiao et al. 2023, arXiv 2211.10438; mit-han-lab/smoothquant).

W8A8 (int8 weights *and* activations) keeps the whole matmul in int8, but activation outliers make the input hard
to quantize while the weight is easy. SmoothQuant moves part of that difficulty from the activations into the
weights, offline, without changing what the model computes. For a linear layer ``Y = X W^T`` with input channels
(features) ``j``:

    Y = (X diag(s)^-1) (W diag(s))^T          (exact in floating point)

with one smoothing factor per input channel (the paper's eq. 4, ``smoothing_factors``)

    s_j = max|X_j|**alpha / max|W_j|**(1 - alpha),

``max|X_j|`` the largest magnitude of channel ``j`` over calibration tokens (``activation_absmax``) and ``max|W_j|``
the largest magnitude of weight column ``j`` over the output rows (over every layer that reads the input).
``alpha`` (0.5 by default) sets how much moves: ``alpha = 1`` gives every channel of ``X / s`` the range 1, all the
difficulty in the weights; ``alpha = 0`` gives every weight column the range 1; ``alpha = 0.5`` balances them,
``max|X_j / s_j| = max|W_j s_j| = sqrt(max|X_j| max|W_j|)``.

``diag(s)^-1`` costs nothing at inference: it is folded into the normalization that produces ``X``, whose
per-channel weight (and bias) is divided by ``s``, while the input columns of the linear layers that read ``X``
are multiplied by ``s`` (``fold_smoothing``). The course follows mit-han-lab/smoothquant's ``smooth.py`` (its
``smooth_ln_fcs`` and, for Llama models like the course LM, ``smooth_ln_fcs_llama_like``):

- the smoothed inputs are those that a normalization produces: ``input_layernorm -> q_proj, k_proj, v_proj`` and
  ``post_attention_layernorm -> gate_proj, up_proj`` (``smooth_model``); the inputs of ``o_proj`` and
  ``down_proj`` follow no per-channel operation to fold into and are left as they are;
- the layers that share an input share one ``s``: ``max|W_j|`` is taken over all their rows;
- the activation statistics are the per-channel ``max |x|`` over every calibration token, recorded with forward
  hooks at each linear's input (``activation_absmax``, ``get_act_scales`` in the original).

One difference from ``smooth.py``, on purpose: a channel whose activation range or weight column is all zero has
nothing to move and gets ``s_j = 1`` (``smooth.py`` clamps ``max|W_j|`` and ``s`` at ``1e-5`` instead, which
multiplies such a channel's normalization weight by up to ``1e5``; a later token that is not zero there would then
be enormous). Elsewhere the two give the same factors (``tests/library/test_smoothquant.py``, which also checks the
rest of this module against its closed forms).

The quantized layers are ``course_lib.llm_int8.Int8Linear``: mode ``"vectorwise"`` is W8A8 with per-token dynamic
activation scales, ``"static"`` W8A8 with a per-tensor static activation scale (``quantize_model_int8(...,
mode="static", act_absmax=...)``), both with one scale per output channel for the weight (``fake_quant.py``'s
default for Llama models, ``weight_quant="per_channel"``).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .awq import _check_linears, _check_scales, fold_scales, scale_groups
from .lm_quant import decoder_blocks, linear_layers
from .llm_int8 import linear_inputs
from .validation import FLOAT_DTYPES, check_int, check_module, check_tensor

__all__ = [
    "DEFAULT_ALPHA",
    "smoothing_factors",
    "fold_smoothing",
    "activation_absmax",
    "smoothing_groups",
    "smooth_model",
]

#: The migration strength of the paper's OPT and Llama results, and smooth.py's default.
DEFAULT_ALPHA = 0.5


def _check_alpha(alpha) -> float:
    """``alpha`` as a Python float in [0, 1] (a one-element tensor is accepted)."""
    value = alpha.item() if isinstance(alpha, torch.Tensor) and alpha.numel() == 1 else alpha
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"alpha must be a number in [0, 1], got {type(alpha).__name__}")
    if not 0.0 <= value <= 1.0:  # NaN fails this too
        raise ValueError(f"alpha must be in [0, 1] (the share of the difficulty moved into the weights), got {value}")
    return float(value)


def _check_act_absmax(act_absmax, n: int | None = None) -> None:
    check_tensor(act_absmax, "act_absmax", dtypes=FLOAT_DTYPES, ndim=1)
    if n is not None and act_absmax.numel() != n:
        raise ValueError(f"act_absmax must have {n} entries (one per input channel), got {act_absmax.numel()}")
    if bool((act_absmax < 0).any()):
        raise ValueError("act_absmax must be >= 0 everywhere (the largest |x| of each channel)")


def smoothing_factors(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float = DEFAULT_ALPHA) -> torch.Tensor:
    """SmoothQuant's per-channel factors ``s_j = max|X_j|**alpha / max|W_j|**(1 - alpha)``.

    Args:
        act_absmax: ``[K]`` float, >= 0, finite: the largest ``|x|`` of each input channel over calibration tokens.
        weight: ``[N, K]`` float, finite: the weight of the layer that reads ``X`` (``nn.Linear`` layout), or the
            weights of every layer that reads it stacked along the outputs (``torch.cat([q.weight, k.weight,
            v.weight])``): ``max|W_j|`` is the largest ``|w|`` of column ``j`` over all rows.
        alpha: in ``[0, 1]``, the migration strength.

    Returns:
        float32 ``[K]`` on ``weight``'s device, every entry > 0: ``act_absmax**alpha / max|W_j|**(1 - alpha)``
        computed in float32 (``a.pow(alpha) / w.pow(1 - alpha)``), and exactly 1 in a channel whose
        ``act_absmax`` or weight column is all zero (nothing to move, and no division by zero).
    """
    check_tensor(weight, "weight", dtypes=FLOAT_DTYPES, ndim=2)
    _check_act_absmax(act_absmax, weight.shape[1])
    alpha = _check_alpha(alpha)
    if act_absmax.device != weight.device:
        raise ValueError(f"act_absmax and weight must be on the same device, got {act_absmax.device} and {weight.device}")
    return _smoothing_factors(act_absmax, weight, alpha)


def _smoothing_factors(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    a = act_absmax.detach().float()
    w = weight.detach().float().abs().amax(dim=0)
    alive = (a > 0) & (w > 0)
    ones = torch.ones_like(a)
    s = torch.where(alive, a, ones).pow(alpha) / torch.where(alive, w, ones).pow(1 - alpha)
    return torch.where(alive, s, ones)


def _check_norm(norm) -> int:
    """The number of channels of a normalization with a per-channel 1-D weight (RMSNorm, LayerNorm)."""
    if not isinstance(norm, nn.Module) or isinstance(norm, nn.Linear):
        raise TypeError(f"norm must be a normalization module with a 1-D weight (RMSNorm, LayerNorm), "
                        f"got {type(norm).__name__}")
    weight = getattr(norm, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 1:
        raise TypeError(f"norm must have a 1-D per-channel weight (RMSNorm, LayerNorm with elementwise_affine), "
                        f"got {type(norm).__name__} with weight {getattr(weight, 'shape', weight)}")
    return weight.numel()


@torch.no_grad()
def fold_smoothing(norm: nn.Module, linears: Sequence[nn.Linear], s: torch.Tensor) -> None:
    """Fold smoothing factors into a normalization and the layers that read its output, in place.

    ``norm.weight`` (and ``norm.bias`` when there is one) is divided by ``s``, so the normalization now produces
    ``X / s``; the input column ``j`` of every layer in ``linears`` is multiplied by ``s_j``
    (``W <- W diag(s)``). In exact arithmetic each layer's output is unchanged; in float32 up to rounding.

    Args:
        norm: RMSNorm or LayerNorm (any module with a 1-D ``weight`` of ``K`` channels; not an ``nn.Linear``).
        linears: the ``nn.Linear`` layers that read the norm's output (a list, or one layer), ``in_features == K``.
        s: ``[K]`` float, finite, > 0 (``smoothing_factors``).

    Returns:
        None (``norm`` and ``linears`` are changed in place).
    """
    k = _check_norm(norm)
    linears = _check_linears(linears, k)  # the same checks as AWQ's layer groups, and the same folding
    _check_scales(s, k, "s")
    fold_scales(norm, linears, s)


@torch.no_grad()
def activation_absmax(model: nn.Module, ids: torch.Tensor, batch_size: int = 8,
                      skip: Sequence[str] = ("lm_head",)) -> dict[str, torch.Tensor]:
    """Calibration: the largest ``|x|`` of every input channel of every Linear, over the calibration tokens.

    Forward hooks at the linears' inputs (``llm_int8.linear_inputs``), one batch at a time; the running maximum
    over batches.

    Args:
        model: a causal LM (``model(ids)`` runs a forward pass).
        ids: int64 ``[n_samples, seq_len]`` calibration tokens (``lm_quant.calibration_ids``).
        batch_size: samples per forward pass, >= 1.
        skip: names (suffixes) of Linears to leave out; default the LM head.

    Returns:
        ``{linear name: float32 [in_features]}`` on the CPU, in module order.
    """
    check_module(model, "model")
    if not isinstance(ids, torch.Tensor) or ids.dtype != torch.long or ids.dim() != 2 or ids.numel() == 0:
        what = f"{ids.dtype} {tuple(ids.shape)}" if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise TypeError(f"ids must be a non-empty int64 tensor [n_samples, seq_len], got {what}")
    check_int(batch_size, "batch_size", low=1)
    names = list(linear_layers(model, skip))
    device = next(model.parameters()).device
    stats: dict[str, torch.Tensor] = {}
    for start in range(0, ids.shape[0], batch_size):
        inputs = linear_inputs(model, ids[start:start + batch_size].to(device), names)
        for name in names:
            batch_max = inputs[name].abs().amax(dim=0).float().cpu()
            stats[name] = batch_max if name not in stats else torch.maximum(stats[name], batch_max)
    return stats


def smoothing_groups(model: nn.Module) -> dict[str, tuple[nn.Module, dict[str, nn.Linear]]]:
    """The (normalization, linears that read its output) pairs that SmoothQuant smooths in a Llama-style model.

    Per block: ``input_layernorm -> self_attn.q_proj, k_proj, v_proj`` and ``post_attention_layernorm ->
    mlp.gate_proj, up_proj`` (smooth.py's Llama branch; the groups of ``course_lib.awq.scale_groups`` whose
    input a normalization produces).

    Args:
        model: a transformers Llama/Mistral/Qwen-style causal LM (blocks at ``model.layers``).

    Returns:
        ``{norm's qualified name: (norm, {linear's qualified name: linear})}``, in module order.
    """
    check_module(model, "model")
    names = {id(m): name for name, m in model.named_modules()}
    groups = {}
    for block in decoder_blocks(model):
        for group in scale_groups(block):
            if not isinstance(group.prev, nn.Linear):
                groups[names[id(group.prev)]] = (group.prev, {names[id(lin)]: lin for lin in group.linears})
    return groups


@torch.no_grad()
def smooth_model(model: nn.Module, act_absmax: Mapping[str, torch.Tensor], alpha: float = DEFAULT_ALPHA
                 ) -> dict[str, torch.Tensor]:
    """SmoothQuant every group of ``smoothing_groups(model)``, in place: factors from the calibration, folded in.

    For each normalization and the linears that read it: ``s = smoothing_factors(act_absmax[first linear],
    their weights stacked, alpha)``, then ``fold_smoothing(norm, linears, s)``.

    Args:
        model: a Llama-style causal LM, changed in place (its floating-point function is unchanged up to rounding).
        act_absmax: ``activation_absmax(model, ...)`` of the unsmoothed model.
        alpha: in ``[0, 1]``.

    Returns:
        The calibration statistics of the smoothed model: a new dict, ``act_absmax`` with every smoothed linear's
        entry divided by its ``s`` (its input is now ``X / s``), the other entries the same tensors.
    """
    check_module(model, "model")
    if not isinstance(act_absmax, Mapping):
        raise TypeError(f"act_absmax must be a dict {{linear name: float [in_features]}}, got {type(act_absmax).__name__}")
    alpha = _check_alpha(alpha)
    groups = smoothing_groups(model)
    smoothed = dict(act_absmax)
    for norm, linears in groups.values():
        first = next(iter(linears))
        if first not in act_absmax:
            raise ValueError(f"act_absmax has no entry for {first!r} (record it with activation_absmax)")
        weights = torch.cat([lin.weight.detach() for lin in linears.values()])
        a = act_absmax[first].to(weights.device)
        _check_act_absmax(a, weights.shape[1])
        s = _smoothing_factors(a, weights, alpha)
        fold_smoothing(norm, list(linears.values()), s)
        for name in linears:
            smoothed[name] = act_absmax[name] / s.to(act_absmax[name].device)
    return smoothed
