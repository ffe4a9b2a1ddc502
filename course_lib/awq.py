"""Notebook 08: AWQ, activation-aware weight quantization (Lin et al. 2023, mit-han-lab/llm-awq).

A few input channels of every linear layer carry activations far larger than the rest; the
weights that multiply them matter most. AWQ protects them without mixed precision: it
multiplies each input column ``j`` of ``W`` by a scale ``s_j > 1`` before round-to-nearest
quantization and divides the activation by the same ``s_j``, so that

    y = W x = (W diag(s)) (diag(s)^-1 x)            (exact in floating point)

and only ``W diag(s)`` is quantized: salient columns become larger and lose relatively less
to rounding. ``diag(s)^-1`` costs nothing at inference: it is folded into the operation
that produces ``x`` (the RMSNorm/LayerNorm weight, or the rows of the previous Linear).

The course follows the constants of llm-awq (mit-han-lab/llm-awq):

- ``x_mean = mean |x|`` per input channel over the calibration tokens (``activation_scales``);
- ``s = x_mean ** ratio`` clamped at ``1e-4``, normalized by ``sqrt(max(s) * min(s))``, for the
  20 ratios ``0, 0.05, ..., 0.95`` (``awq_scales``);
- the ratio that minimizes the MSE of the output of the module that contains the layer
  group (attention, MLP, or the layer itself) after fake-quantizing ``W diag(s)`` and dividing
  by ``s`` (``search_scale``); ratio 0 gives ``s = 1``, plain RTN, so AWQ's loss is never worse;
- in a Llama block the groups are ``input_layernorm -> q, k, v`` (loss on the attention output),
  ``v_proj -> o_proj`` (only when both weights have the same shape, i.e. no grouped-query
  attention), ``post_attention_layernorm -> gate, up`` (loss on the MLP output) and
  ``up_proj -> down_proj`` (``fold_scales``);
- then a clip search per layer (not ``q_proj``, ``k_proj``): for every output channel and group,
  the weight range ``max|w| * (1 - i/20)``, ``i = 0 .. 9`` (max shrink 0.5) that minimizes the
  MSE of the group's partial outputs on 512 calibration tokens (``search_clip``, whose objective
  is ``clip_errors``);
- finally round-to-nearest with ``course_lib.granularity.fake_quantize_weight`` (unsigned
  codes with a zero point, per group of ``group_size`` input columns).

One difference from llm-awq, kept on purpose: the quantizer (the searches' and the final one) is
the course's RTN, whose range is widened to contain 0, so that ratio 0 is exactly the RTN
baseline; llm-awq uses each group's raw min and max, with ``max - min`` clamped at ``1e-5``. On a
group that holds both signs the two give the same weights bit for bit, and every group of 64 or
128 of the course LM does; on one-signed groups they differ, either way (``tests/library/test_awq.py``).

As in llm-awq, block ``i + 1`` is calibrated on the output of the *unquantized* block ``i``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .affine import SCALE_EPS
from .granularity import fake_quantize_weight
from .lm_quant import calibration_ids, capture_block_inputs, decoder_blocks, linear_layers
from .validation import FLOAT_DTYPES, check_bits, check_divides, check_int, check_module, check_tensor

__all__ = [
    "SCALE_MIN",
    "N_GRID",
    "MAX_SHRINK",
    "CLIP_TOKENS",
    "activation_scales",
    "awq_scales",
    "scaled_fake_quantize",
    "search_scale",
    "fold_scales",
    "search_clip",
    "clip_errors",
    "apply_clip",
    "ScaleGroup",
    "block_linear_inputs",
    "scale_groups",
    "collect_activation_scales",
    "salient_channels",
    "quantize_model_keep_channels",
    "quantize_model_awq",
]

#: llm-awq clamps ``x_mean ** ratio`` at this value before normalizing.
SCALE_MIN = 1e-4
#: Grid points of the ratio search (ratios ``i / N_GRID``) and of the clip search.
N_GRID = 20
#: The clip search's shrink bound, llm-awq's ``max_shrink``: it tries ``int(MAX_SHRINK * N_GRID)`` ranges, so the
#: smallest is ``1 - (int(MAX_SHRINK * N_GRID) - 1) / N_GRID`` of ``max|w|`` (0.55 with the defaults), not ``1 - MAX_SHRINK``.
MAX_SHRINK = 0.5
#: Calibration tokens the clip search uses (an evenly strided subsample).
CLIP_TOKENS = 512


# ----------------------------------------------------------------------------------------------
# checks


def _check_scales(scales, n: int | None = None, name: str = "scales") -> None:
    check_tensor(scales, name, dtypes=FLOAT_DTYPES, ndim=1)
    if n is not None and scales.numel() != n:
        raise ValueError(f"{name} must have {n} elements (one per input channel), got {scales.numel()}")
    if not bool((scales > 0).all()):
        raise ValueError(f"{name} must be positive everywhere, got min {scales.min().item():.3g}")


def _check_group(in_features: int, group_size: int | None, where: str) -> None:
    if group_size is not None:
        check_divides(in_features, group_size, size_name=where, group_name="group_size")


def _check_linears(linears, in_features: int | None = None) -> list[nn.Linear]:
    if isinstance(linears, nn.Linear):
        linears = [linears]
    if not isinstance(linears, (list, tuple)) or not linears:
        raise TypeError("linears must be a non-empty list of torch.nn.Linear")
    for i, lin in enumerate(linears):
        if not isinstance(lin, nn.Linear):
            raise TypeError(f"linears[{i}] must be a torch.nn.Linear, got {type(lin).__name__}")
        if in_features is not None and lin.in_features != in_features:
            raise ValueError(f"linears[{i}] has in_features={lin.in_features}, but the input has "
                             f"{in_features} channels: every linear of a group must read the same input")
    return list(linears)


def _check_ratio(ratio) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
        raise TypeError(f"ratio must be a number, got {type(ratio).__name__}")
    if not (0.0 <= ratio <= 1.0) or math.isnan(ratio):
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    return float(ratio)


def _fake_quantize(w: torch.Tensor, bits: int, group_size: int | None) -> torch.Tensor:
    """``granularity.fake_quantize_weight`` (asymmetric) without its argument checks, in float32.

    The searches call the quantizer hundreds of times on tensors they have already checked;
    the checks (finite-value scans) would cost more than the quantization. Same arithmetic,
    same results bit for bit (tests/library/test_awq.py compares them).
    """
    group = w.shape[1] if group_size is None else group_size
    g = w.to(torch.float32).reshape(w.shape[0], w.shape[1] // group, group)
    qmax = 2**bits - 1
    lo = g.amin(dim=-1, keepdim=True).clamp(max=0.0)
    hi = g.amax(dim=-1, keepdim=True).clamp(min=0.0)
    scale = ((hi - lo) / qmax).clamp(min=SCALE_EPS)
    zero = torch.round(-lo / scale).clamp(0, qmax)
    q = (torch.round(g / scale) + zero).clamp(0, qmax)
    return ((q - zero) * scale).reshape(w.shape)


def _output(out) -> torch.Tensor:
    """A module's main output (attention modules return ``(output, weights)``)."""
    return out[0] if isinstance(out, (tuple, list)) else out


# ----------------------------------------------------------------------------------------------
# the exercises


def activation_scales(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute activation of every input channel: llm-awq's ``x_max``.

    Args:
        x: calibration inputs of a linear layer, ``[tokens, in_features]`` or
            ``[batch, seq, in_features]``, float, finite.

    Returns:
        float32 ``[in_features]`` on ``x``'s device: ``mean |x|`` over every token.
    """
    check_tensor(x, "x", dtypes=FLOAT_DTYPES, ndim=(2, 3))
    return x.detach().abs().reshape(-1, x.shape[-1]).to(torch.float32).mean(dim=0)


def awq_scales(act_scale: torch.Tensor, ratio: float) -> torch.Tensor:
    """AWQ's per-channel scales for one ratio: ``s = act_scale**ratio``, clamped, normalized.

    Args:
        act_scale: ``[in_features]`` non-negative mean activation magnitudes (``activation_scales``).
        ratio: the exponent, in ``[0, 1]`` (0 gives all ones: plain round-to-nearest).

    Returns:
        float32 ``[in_features]``: ``s = clamp(act_scale**ratio, min=1e-4)`` divided by
        ``sqrt(max(s) * min(s))``, so that the largest and the smallest scale are reciprocal.
    """
    check_tensor(act_scale, "act_scale", dtypes=FLOAT_DTYPES, ndim=1)
    if bool((act_scale < 0).any()):
        raise ValueError("act_scale must be non-negative (mean absolute values)")
    return _awq_scales(act_scale, _check_ratio(ratio))


def _awq_scales(act_scale: torch.Tensor, ratio: float) -> torch.Tensor:
    s = act_scale.detach().to(torch.float32).pow(ratio).clamp(min=SCALE_MIN)
    return s / (s.max() * s.min()).sqrt()


def scaled_fake_quantize(w: torch.Tensor, scales: torch.Tensor, bits: int,
                         group_size: int | None = 128) -> torch.Tensor:
    """What the layer computes with after AWQ: ``fake_quantize(W diag(s)) diag(s)^-1``.

    Args:
        w: weight ``[out_features, in_features]``.
        scales: positive ``[in_features]`` (one per input column).
        bits: 2 to 8.
        group_size: as in ``granularity.fake_quantize_weight`` (None: per output channel).

    Returns:
        A tensor of ``w``'s shape and dtype (computed in float32).
    """
    check_tensor(w, "w", dtypes=FLOAT_DTYPES, ndim=2)
    _check_scales(scales, w.shape[1])
    check_bits(bits, "bits", low=2, high=8)
    _check_group(w.shape[1], group_size, "w.shape[1] (in_features)")
    return _scaled_fake_quantize(w, scales, bits, group_size)


def _scaled_fake_quantize(w, scales, bits, group_size):
    s = scales.detach().to(device=w.device, dtype=torch.float32).reshape(1, -1)
    return (_fake_quantize(w.detach().to(torch.float32) * s, bits, group_size) / s).to(w.dtype)


@torch.no_grad()
def search_scale(module: nn.Module, linears: Sequence[nn.Linear], x: torch.Tensor, bits: int,
                 group_size: int | None = 128, n_grid: int = N_GRID,
                 module_kwargs: dict | None = None) -> tuple[torch.Tensor, float, list[float]]:
    """Grid search of AWQ's ratio for one layer group: the scales that keep ``module``'s output closest.

    For every ratio ``i / n_grid`` (``i = 0 .. n_grid - 1``): scales ``awq_scales(mean|x|, ratio)``,
    every linear's weight replaced by ``scaled_fake_quantize(W, s, bits, group_size)``, the loss
    ``mean((module(x) - module_fp(x))**2)``; the weights are restored afterwards. Ties keep the
    smaller ratio.

    Args:
        module: the module whose output the loss compares: the linear itself, or the attention
            or MLP that contains the group (its first argument is ``x``).
        linears: the linears that read ``x`` (one group: e.g. q, k, v); all inside ``module``.
        x: their input ``[..., in_features]``, float, finite.
        bits: 2 to 8.
        group_size: None (per output channel) or a divisor of ``in_features``.
        n_grid: number of ratios, >= 1.
        module_kwargs: extra keyword arguments for ``module`` (attention: position embeddings, mask).

    Returns:
        ``(scales, ratio, losses)``: float32 ``[in_features]`` scales of the best ratio, that
        ratio (a float), and the ``n_grid`` losses (floats), ``losses[0]`` being plain RTN's.
        The module's weights are unchanged.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    check_tensor(x, "x", dtypes=FLOAT_DTYPES, ndim=(2, 3, 4))
    linears = _check_linears(linears, x.shape[-1])
    check_bits(bits, "bits", low=2, high=8)
    _check_group(x.shape[-1], group_size, "in_features")
    check_int(n_grid, "n_grid", low=1)
    kwargs = dict(module_kwargs or {})

    reference = _output(module(x, **kwargs)).float()
    act = activation_scales(x.reshape(-1, x.shape[-1]))
    originals = [lin.weight.detach().clone() for lin in linears]
    best_loss, best_ratio, best_scales = float("inf"), 0.0, None
    losses: list[float] = []
    try:
        for i in range(n_grid):
            ratio = i / n_grid
            scales = _awq_scales(act, ratio)
            for lin, w0 in zip(linears, originals):
                lin.weight.copy_(_scaled_fake_quantize(w0, scales, bits, group_size))
            loss = (_output(module(x, **kwargs)).float() - reference).pow(2).mean().item()
            losses.append(loss)
            if loss < best_loss or best_scales is None:
                best_loss, best_ratio, best_scales = loss, ratio, scales
    finally:
        for lin, w0 in zip(linears, originals):
            lin.weight.copy_(w0)
    return best_scales, best_ratio, losses


@torch.no_grad()
def fold_scales(prev: nn.Module, linears: Sequence[nn.Linear], scales: torch.Tensor) -> None:
    """Fold AWQ's scales into the network, in place, so that its outputs do not change.

    ``linears`` read ``x``; ``prev`` produces it. Each linear's input columns are multiplied by
    ``scales`` (``W <- W diag(s)``) and ``prev``'s output channels divided by them:

    - ``prev`` a norm with a per-channel ``weight`` (RMSNorm, LayerNorm): ``weight /= s``,
      ``bias /= s`` when it has one;
    - ``prev`` an ``nn.Linear``: its rows (output channels) ``/= s``, its bias ``/= s``.

    Args:
        prev: the operation before the group, with ``out`` channels = the linears' ``in_features``.
        linears: the layer group (non-empty list of ``nn.Linear``).
        scales: positive finite ``[in_features]``.

    Returns:
        None (``prev`` and ``linears`` are changed in place).
    """
    if not isinstance(prev, nn.Module):
        raise TypeError(f"prev must be a torch.nn.Module (a norm or a Linear), got {type(prev).__name__}")
    linears = _check_linears(linears)
    n = linears[0].in_features
    _check_linears(linears, n)
    _check_scales(scales, n)
    if isinstance(prev, nn.Linear):
        if prev.out_features != n:
            raise ValueError(f"prev has out_features={prev.out_features}, but the linears read {n} channels")
        rows = prev.weight
    else:
        weight = getattr(prev, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 1:
            raise TypeError(f"prev must be an nn.Linear or a norm with a 1-D weight (RMSNorm, LayerNorm), "
                            f"got {type(prev).__name__}")
        if weight.numel() != n:
            raise ValueError(f"prev's weight has {weight.numel()} channels, but the linears read {n}")
        rows = weight
    s = scales.detach().to(device=rows.device, dtype=torch.float32)
    rows.copy_((rows.float() / (s.reshape(-1, 1) if rows.dim() == 2 else s)).to(rows.dtype))
    bias = getattr(prev, "bias", None)
    if isinstance(bias, torch.Tensor):
        bias.copy_((bias.float() / s).to(bias.dtype))
    for lin in linears:
        lin.weight.copy_((lin.weight.float() * s.to(lin.weight.device).reshape(1, -1)).to(lin.weight.dtype))


def _clip_inputs(w: torch.Tensor, x: torch.Tensor, bits: int, group_size: int | None, n_tokens: int):
    """Check the clip search's common arguments; return (grouped tokens [T, G, g], grouped w [O, G, g],
    reference partial outputs [O, T, G]), all float32 on ``w``'s device."""
    check_tensor(w, "w", dtypes=FLOAT_DTYPES, ndim=2)
    check_tensor(x, "x", dtypes=FLOAT_DTYPES, ndim=(2, 3))
    if x.shape[-1] != w.shape[1]:
        raise ValueError(f"x must have w.shape[1]={w.shape[1]} channels in its last dimension, got {x.shape[-1]}")
    check_bits(bits, "bits", low=2, high=8)
    _check_group(w.shape[1], group_size, "w.shape[1] (in_features)")
    check_int(n_tokens, "n_tokens", low=1)
    out_f, in_f = w.shape
    group = in_f if group_size is None else group_size
    n_groups = in_f // group
    tokens = x.detach().reshape(-1, in_f)
    tokens = tokens[:: max(1, tokens.shape[0] // n_tokens)].to(device=w.device, dtype=torch.float32)
    xg = tokens.reshape(-1, n_groups, group)                          # [T, G, g]
    wg = w.detach().to(torch.float32).reshape(out_f, n_groups, group)  # [O, G, g]
    return xg, wg, torch.einsum("tng,ong->otn", xg, wg)               # partial outputs [O, T, G]


def _clip_error(xg: torch.Tensor, wg: torch.Tensor, reference: torch.Tensor, m: torch.Tensor, bits: int,
                group_size: int | None) -> torch.Tensor:
    """MSE over the tokens of every channel's and group's partial output, ``wg`` clamped to ``[-m, m]``
    ([O, G]) and fake-quantized, against ``reference``: float32 [O, G]."""
    out_f, n_groups, group = wg.shape
    clipped = torch.maximum(torch.minimum(wg, m.unsqueeze(-1)), -m.unsqueeze(-1))
    q = _fake_quantize(clipped.reshape(out_f, n_groups * group), bits, group_size).reshape(out_f, n_groups, group)
    return (torch.einsum("tng,ong->otn", xg, q) - reference).pow(2).mean(dim=1)


@torch.no_grad()
def search_clip(w: torch.Tensor, x: torch.Tensor, bits: int, group_size: int | None = 128,
                n_grid: int = N_GRID, max_shrink: float = MAX_SHRINK,
                n_tokens: int = CLIP_TOKENS) -> torch.Tensor:
    """Clip search: the weight range of every output channel and group that quantizes best.

    For ``i = 0 .. int(max_shrink * n_grid) - 1`` the range is ``m_i = max|w_group| * (1 - i / n_grid)``;
    the group is clamped to ``[-m_i, m_i]`` and fake-quantized; the error is the MSE, over the
    tokens, of the group's partial output ``sum_{j in group} x_j w_j`` (``clip_errors``). ``i = 0`` is
    no clipping, so the chosen range is never worse than none. Ties keep the larger range.

    Args:
        w: weight ``[out_features, in_features]`` (after the AWQ scales are folded in).
        x: its input ``[..., in_features]`` (after the scales: ``x / s``); an evenly strided
            subsample of ``n_tokens`` tokens is used.
        bits: 2 to 8.
        group_size: None (per output channel) or a divisor of ``in_features``.
        n_grid: grid points, >= 1.
        max_shrink: the largest shrink, in ``[0, 1)``.
        n_tokens: tokens used, >= 1.

    Returns:
        float32 ``[out_features, in_features // group]``: the best ``m`` of every channel and group
        (pass it to ``apply_clip``).
    """
    xg, wg, reference = _clip_inputs(w, x, bits, group_size, n_tokens)
    check_int(n_grid, "n_grid", low=1)
    if isinstance(max_shrink, bool) or not isinstance(max_shrink, (int, float)) or not 0 <= max_shrink < 1:
        raise ValueError(f"max_shrink must be a number in [0, 1), got {max_shrink!r}")
    full = wg.abs().amax(dim=-1)                                      # [O, G]
    best = full.clone()
    best_err = torch.full_like(full, float("inf"))
    for i in range(max(1, int(max_shrink * n_grid))):
        m = full * (1 - i / n_grid)
        err = _clip_error(xg, wg, reference, m, bits, group_size)    # [O, G]
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, m, best)
    return best


@torch.no_grad()
def clip_errors(w: torch.Tensor, x: torch.Tensor, max_val: torch.Tensor, bits: int, group_size: int | None = 128,
                n_tokens: int = CLIP_TOKENS) -> torch.Tensor:
    """The clip search's objective: the output error of every output channel and group for given ranges.

    ``err[o, n] = mean_t ( sum_{j in group n} x_tj (Q(clamp(w, -m, m))_oj - w_oj) )**2`` with
    ``m = max_val[o, n]``, ``Q`` the course's RTN (``granularity.fake_quantize_weight``, per group) and
    ``t`` the same evenly strided subsample of ``n_tokens`` tokens as ``search_clip``; ``search_clip``
    returns, for every channel and group, the grid range with the smallest of these errors.

    Args:
        w: weight ``[out_features, in_features]``.
        x: its input ``[..., in_features]``.
        max_val: non-negative ranges ``[out_features, in_features // group]`` (e.g. from ``search_clip``).
        bits: 2 to 8.
        group_size: None (per output channel) or a divisor of ``in_features``.
        n_tokens: tokens used, >= 1.

    Returns:
        float32 ``[out_features, in_features // group]`` on ``w``'s device: the mean squared error of
        every channel's and group's partial output.
    """
    xg, wg, reference = _clip_inputs(w, x, bits, group_size, n_tokens)
    check_tensor(max_val, "max_val", dtypes=FLOAT_DTYPES, ndim=2)
    if tuple(max_val.shape) != tuple(wg.shape[:2]):
        raise ValueError(f"max_val must have shape {tuple(wg.shape[:2])} (one range per output channel and group), "
                         f"got {tuple(max_val.shape)}")
    if bool((max_val < 0).any()):
        raise ValueError("max_val must be non-negative")
    return _clip_error(xg, wg, reference, max_val.detach().to(device=w.device, dtype=torch.float32), bits, group_size)


def apply_clip(w: torch.Tensor, max_val: torch.Tensor, group_size: int | None = 128) -> torch.Tensor:
    """Clamp every output channel and group of ``w`` to ``[-max_val, max_val]`` (a new tensor, ``w``'s dtype).

    Args:
        w: weight ``[out_features, in_features]``.
        max_val: non-negative ``[out_features, in_features // group]`` (from ``search_clip``).
        group_size: None (per output channel) or a divisor of ``in_features``.

    Returns:
        torch.Tensor: the clamped weight, ``w``'s shape and dtype.
    """
    check_tensor(w, "w", dtypes=FLOAT_DTYPES, ndim=2)
    _check_group(w.shape[1], group_size, "w.shape[1] (in_features)")
    group = w.shape[1] if group_size is None else group_size
    shape = (w.shape[0], w.shape[1] // group)
    check_tensor(max_val, "max_val", dtypes=FLOAT_DTYPES, ndim=2)
    if tuple(max_val.shape) != shape:
        raise ValueError(f"max_val must have shape {shape}, got {tuple(max_val.shape)}")
    if bool((max_val < 0).any()):
        raise ValueError("max_val must be non-negative")
    m = max_val.detach().to(device=w.device, dtype=torch.float32).unsqueeze(-1)
    g = w.detach().to(torch.float32).reshape(shape[0], shape[1], group)
    return torch.maximum(torch.minimum(g, m), -m).reshape(w.shape).to(w.dtype)


# ----------------------------------------------------------------------------------------------
# a whole model


@dataclass
class ScaleGroup:
    """One AWQ layer group of a block: ``prev`` produces the input of ``linears``.

    ``module`` is what the scale search compares (its first argument is that input);
    ``input_name`` is the qualified name (inside the block) of a linear that reads the input;
    ``needs_kwargs``: ``module`` is the attention and takes the block's keyword arguments.
    """

    name: str
    prev: nn.Module
    linears: list
    module: nn.Module
    input_name: str
    needs_kwargs: bool = False


def scale_groups(block: nn.Module) -> list[ScaleGroup]:
    """llm-awq's layer groups of a Llama-style block (Llama, Mistral, Qwen2: same module names).

    ``input_layernorm -> q, k, v`` (loss on the attention output); ``v_proj -> o_proj`` only when
    ``v_proj`` and ``o_proj`` weights have the same shape; ``post_attention_layernorm -> gate, up``
    (loss on the MLP output); ``up_proj -> down_proj``.

    Args:
        block: one decoder layer (``model.model.layers[i]``).

    Returns:
        list[ScaleGroup]: the groups, in the order llm-awq searches them.
    """
    try:
        attn, mlp = block.self_attn, block.mlp
        q, k, v, o = attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj
        gate, up, down = mlp.gate_proj, mlp.up_proj, mlp.down_proj
        ln1, ln2 = block.input_layernorm, block.post_attention_layernorm
    except AttributeError:
        raise TypeError(f"block must be a Llama-style decoder block (input_layernorm, self_attn.q/k/v/o_proj, "
                        f"post_attention_layernorm, mlp.gate/up/down_proj), got {type(block).__name__}") from None
    groups = [ScaleGroup("input_layernorm -> q, k, v", ln1, [q, k, v], attn, "self_attn.q_proj", True)]
    if v.weight.shape == o.weight.shape:
        groups.append(ScaleGroup("v_proj -> o_proj", v, [o], o, "self_attn.o_proj"))
    groups.append(ScaleGroup("post_attention_layernorm -> gate, up", ln2, [gate, up], mlp, "mlp.gate_proj"))
    groups.append(ScaleGroup("up_proj -> down_proj", up, [down], down, "mlp.down_proj"))
    return groups


@torch.no_grad()
def block_linear_inputs(block: nn.Module, hidden: torch.Tensor, kwargs: dict | None = None,
                        record: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run one block: its output on ``hidden`` and (when ``record``) the input of each of its linears.

    Args:
        block: a transformer block.
        hidden: its input hidden states ``[batch, seq, hidden]``.
        kwargs: the keyword arguments the model passes to blocks (``lm_quant.capture_block_inputs``).

    Returns:
        ``(output, {linear name inside the block: its input tensor})``.
    """
    check_module(block, "block")
    kwargs = dict(kwargs or {})
    inputs: dict[str, torch.Tensor] = {}
    handles = []
    if record:
        for name, lin in linear_layers(block).items():
            handles.append(lin.register_forward_hook(
                lambda _m, args, _out, name=name: inputs.__setitem__(name, args[0].detach())))
    try:
        out = _output(block(hidden, **kwargs))
    finally:
        for h in handles:
            h.remove()
    return out, inputs


def _check_ids(ids) -> torch.Tensor:
    if not isinstance(ids, torch.Tensor) or ids.dtype != torch.long or ids.dim() != 2 or ids.numel() == 0:
        what = f"{ids.dtype} {tuple(ids.shape)}" if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise ValueError(f"calib_ids must be a non-empty int64 tensor [n_samples, seq_len], got {what}")
    return ids


@torch.no_grad()
def collect_activation_scales(model: nn.Module, ids: torch.Tensor, batch_size: int = 16,
                              skip: Sequence[str] = ("lm_head",)) -> dict[str, torch.Tensor]:
    """``activation_scales`` of every Linear's input, from one pass of the unquantized model.

    Args:
        model: a causal LM (or any module whose forward takes ``input_ids``).
        ids: int64 ``[n_samples, seq_len]`` calibration tokens.
        batch_size: samples per forward pass.
        skip: names of linears to leave out.

    Returns:
        ``{linear name: float32 [in_features]}`` mean |x| over every calibration token (on the CPU).
    """
    check_module(model, "model")
    ids = _check_ids(ids)
    check_int(batch_size, "batch_size", low=1)
    layers = linear_layers(model, skip)
    sums = {name: torch.zeros(lin.in_features, dtype=torch.float64) for name, lin in layers.items()}
    counts = dict.fromkeys(layers, 0)

    def hook(_m, args, _out, name):
        x = args[0].detach()
        check_tensor(x, f"the input of {name}", dtypes=FLOAT_DTYPES)
        flat = x.reshape(-1, x.shape[-1])
        sums[name] += flat.abs().sum(dim=0, dtype=torch.float64).cpu()
        counts[name] += flat.shape[0]

    handles = [lin.register_forward_hook(lambda m, a, o, name=name: hook(m, a, o, name)) for name, lin in layers.items()]
    device = next(model.parameters()).device
    try:
        for start in range(0, ids.shape[0], batch_size):
            model(ids[start:start + batch_size].to(device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return {name: (sums[name] / max(counts[name], 1)).to(torch.float32) for name in layers}


def salient_channels(act_scale: torch.Tensor, fraction: float = 0.01) -> torch.Tensor:
    """Indices of the ``max(1, int(fraction * n))`` input channels with the largest ``act_scale``.

    Args:
        act_scale: ``[in_features]`` mean |activation| of each input channel.
        fraction: share of the channels to return.

    Returns:
        int64 indices, largest first.
    """
    check_tensor(act_scale, "act_scale", dtypes=FLOAT_DTYPES, ndim=1)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}")
    k = max(1, int(fraction * act_scale.numel()))
    return torch.topk(act_scale.float(), k).indices


@torch.no_grad()
def quantize_model_keep_channels(model: nn.Module, bits: int, group_size: int | None,
                                 keep: dict[str, torch.Tensor], skip: Sequence[str] = ("lm_head",)) -> nn.Module:
    """RTN of every Linear, except the input columns ``keep[name]`` that stay in full precision.

    The experiment that motivates AWQ (MIT 6.5940 lab 4): scales are fitted on the whole
    weight as in plain RTN, then the kept columns are put back unquantized.

    Args:
        model: modified in place and returned.
        bits, group_size: as in ``quantize_model_rtn``.
        keep: ``{linear name: int64 column indices}``; linears not named are plain RTN.

    Returns:
        nn.Module: ``model`` itself.
    """
    check_module(model, "model")
    if not isinstance(keep, dict):
        raise TypeError(f"keep must be a dict {{linear name: column indices}}, got {type(keep).__name__}")
    layers = linear_layers(model, skip)
    unknown = sorted(set(keep) - set(layers))
    if unknown:
        raise ValueError(f"keep names linears that the model does not have: {unknown[:3]}")
    for name, lin in layers.items():
        w = lin.weight.detach().clone()
        q = fake_quantize_weight(w, bits, group_size)
        if name in keep:
            idx = keep[name].to(device=w.device, dtype=torch.long)
            q[:, idx] = w[:, idx]
        lin.weight.copy_(q)
    return model


@torch.no_grad()
def quantize_model_awq(model: nn.Module, tokenizer, bits: int, group_size: int | None = 128, *,
                       calib_ids: torch.Tensor | None = None, n_samples: int = 64, seq_len: int = 128,
                       n_grid: int = N_GRID, clip: bool = True, progress: bool = True) -> nn.Module:
    """AWQ of every Linear in the blocks of a Llama-style causal LM, in place (fake-quantized weights).

    Block by block, on the calibration inputs of that block (outputs of the unquantized
    previous blocks, as in llm-awq): search the scales of each layer group (``scale_groups``,
    ``search_scale``) on the unmodified block, fold them all (``fold_scales``), then, with
    ``clip``, search and apply the clipping range of every linear but q_proj and k_proj
    (``search_clip``) on the rescaled inputs, and finally round every weight to the nearest
    ``bits``-bit code (``granularity.fake_quantize_weight``). ``lm_head`` and the embedding stay
    unquantized (as in ``quantize_model_rtn``).

    Args:
        model: a transformers Llama-style causal LM (the course LM, Llama, Mistral, Qwen2).
        tokenizer: its tokenizer (for the default calibration data).
        bits: 2 to 8.
        group_size: None (per output channel) or a divisor of every quantized layer's in_features.
        calib_ids: int64 ``[n_samples, seq_len]`` calibration tokens; default
            ``lm_quant.calibration_ids(tokenizer, n_samples, seq_len)`` (the corpus' calib split).
        n_samples, seq_len: size of the default calibration set.
        n_grid: ratios in the scale search (and points in the clip search).
        clip: run the clip search.
        progress: a progress bar over the blocks.

    Returns:
        The model, its weights replaced by their dequantized AWQ values.
    """
    from tqdm.auto import tqdm

    check_bits(bits, "bits", low=2, high=8)
    check_int(n_grid, "n_grid", low=1)
    if not isinstance(clip, bool):
        raise TypeError(f"clip must be a bool, got {type(clip).__name__}")
    blocks = decoder_blocks(model)
    for name, lin in linear_layers(model).items():
        _check_group(lin.in_features, group_size, f"{name}.in_features")
    for block in blocks:
        scale_groups(block)  # raises a clear error for an unsupported architecture
    if calib_ids is None:
        check_int(n_samples, "n_samples", low=1)
        check_int(seq_len, "seq_len", low=2)
        calib_ids = calibration_ids(tokenizer, n_samples, seq_len)
    ids = _check_ids(calib_ids)

    was_training = model.training
    model.eval()
    try:
        (hidden, kwargs), = capture_block_inputs(model, ids, batch_size=ids.shape[0])
        check_tensor(hidden, "the calibration hidden states", dtypes=FLOAT_DTYPES, ndim=3)
        for block in tqdm(blocks, desc=f"AWQ w{bits}", disable=not progress, leave=False):
            next_hidden, inputs = block_linear_inputs(block, hidden, kwargs)
            groups = scale_groups(block)
            found = []
            for g in groups:
                scales, _, _ = search_scale(g.module, g.linears, inputs[g.input_name], bits, group_size, n_grid,
                                            module_kwargs=kwargs if g.needs_kwargs else None)
                found.append((g, scales))
            for g, scales in found:
                fold_scales(g.prev, g.linears, scales)
            layers = linear_layers(block)
            if clip:
                _, inputs = block_linear_inputs(block, hidden, kwargs)  # the rescaled inputs x / s
                for name, lin in layers.items():
                    if name.endswith(("q_proj", "k_proj")):  # llm-awq: q k^T mixes them, skip
                        continue
                    max_val = search_clip(lin.weight, inputs[name], bits, group_size, n_grid)
                    lin.weight.copy_(apply_clip(lin.weight, max_val, group_size))
            for lin in layers.values():
                lin.weight.copy_(fake_quantize_weight(lin.weight.detach(), bits, group_size))
            hidden = next_hidden
    finally:
        model.train(was_training)
    return model
