"""Notebook 10: BitNet b1.58, ternary weights and 8-bit activations, trained from scratch.

BitNet b1.58 (Ma et al. 2024, arXiv 2402.17764; code: microsoft/BitNet and the authors'
"training tips" note) replaces every ``nn.Linear`` inside the transformer blocks by a
``BitLinear``:

- **weights, per tensor (absmean):** ``gamma = max(mean|W|, 1e-5)``,
  ``W_t = clamp(round(W * (1 / gamma)), -1, 1)`` in ``{-1, 0, +1}``; ``W ~ gamma * W_t``;
- **activations, per token (absmax int8):** ``delta = max(max|x|, 1e-5) / 127`` per row,
  ``x_q = clamp(round(x * (127 / max(max|x|, 1e-5))), -128, 127)``; ``x ~ delta * x_q``;
- **RMSNorm before the activation quantizer** (its own learnable gain; eps 1e-6, the default of
  transformers' BitLinear). The per-token absmax quantizer is already blind to a per-token scale, so the
  normalization itself does not change the int8 codes (the per-feature gain does); what it buys is
  an input, and so an output, whose variance stays put while the weights train;
- **straight-through estimator (STE)** in both quantizers during training:
  ``quant(x).detach() + (x - x.detach())``: the forward value is exactly ``quant(x)`` (the second
  term is an exact zero), the backward pass treats the quantizer as the identity, so the latent
  full-precision weights keep learning. (The common ``x + (quant(x) - x).detach()`` has the same
  gradient but rounds twice: in bfloat16 about 2% of its values miss ``quant(x)`` by an ulp.)

Codes follow the reference code exactly (multiply by the reciprocal scale, round half to even,
clamp), so they equal transformers' ``AutoBitLinear`` codes bit for bit; the functions here
return the *dequantization* scales (``gamma``, ``delta``: the value of one code step).

Deployment: ternary weights packed 4 per byte (2 bits per weight; :func:`pack_ternary`, layout
below) and a matmul that only adds and subtracts activations (:func:`ternary_matmul`).

**Packing layout** (a CUDA kernel consumes it; do not change): code ``c = w + 1`` in
``{0, 1, 2}`` (3 is never used), packed along the input dimension, 4 codes per uint8 byte:
element ``4*j + k`` of a row is stored in bits ``[2k, 2k+1]`` of byte ``j`` (``k = 0`` in the
lowest bits). A weight ``[out_features, in_features]`` packs to uint8 ``[out_features, in_features // 4]``.

**llama.cpp's ternary GGUF format TQ2_0** (:func:`tq2_0_quantize`, :func:`tq2_0_dequantize`; the bytes are those of
``gguf.quants``, llama.cpp's Python package, bit for bit: ``tests/library/test_bitnet.py``): blocks of 256 weights along
a row, 66 bytes each: 64 bytes of 2-bit codes ``c = q + 1``, then the block's scale ``d = max|x|`` as fp16
(little-endian). The codes are ``q = roundf(x / d)`` (halves away from zero; 0 for an all-zero block). Within each
half of a block (128 weights, 32 bytes), weight ``32 k + j`` sits in bits ``[2k, 2k+1]`` of byte ``j``: the four codes
of a byte are 32 weights apart, not neighbours as in :func:`pack_ternary`. A BitNet weight is already
``gamma * {-1, 0, 1}``, so the block maximum is ``gamma`` and TQ2_0 keeps its codes; the scale is stored again in
every block (fp16), hence 2.0625 bits per weight. TQ1_0 (1.6875 bits) packs 5 codes per byte in base 3;
``TERNARY_GGUF_LAYOUTS`` holds both layouts.

**Ternary fine-tuning** (:func:`to_bitlinear`, :func:`ternary_finetune`): instead of training from scratch, a trained
full-precision LM gets BitLinear layers holding its weights and is fine-tuned through the STE, with the original
model as teacher (``course_lib.distill``'s loss: KL to the teacher's next-token distribution, optionally plus
cross-entropy). Each BitLinear brings its RMSNorm (gain 1 at conversion), as BitNet's architecture has it; the
original model has no norm there, so even with the quantizers off the converted model is not the original one, and
fine-tuning absorbs that too (``benchmarks/ternary_finetune.py`` measures both).
"""

from __future__ import annotations

import copy
import math
import numbers

import torch
import torch.nn.functional as F

from . import distill
from .gguf_formats import BlockLayout, _fp16_bytes, _fp16_value, _round_half_away
from .lm_quant import decoder_blocks
from .training import train_steps
from .validation import FLOAT_DTYPES, check_int, check_module, check_tensor

__all__ = [
    "SCALE_EPS",
    "RMS_EPS",
    "CODES_PER_BYTE",
    "absmean_ternary",
    "absmax_int8",
    "fake_quant_weight",
    "fake_quant_activation",
    "ste",
    "rms_norm",
    "bitlinear_forward",
    "BitLinear",
    "PackedBitLinear",
    "pack_ternary",
    "unpack_ternary",
    "ternary_matmul",
    "pack_model",
    "set_quantization",
    "bitlinear_layers",
    "make_digits_mlp",
    "make_tiny_lm",
    "train_classifier",
    "train_lm",
    "bits_per_weight",
    "to_bitlinear",
    "ternary_finetune",
    "TERNARY_GGUF_LAYOUTS",
    "tq2_0_quantize",
    "tq2_0_dequantize",
]

#: BitNet's floor for mean|W| and max|x| (both quantizers clamp at 1e-5).
SCALE_EPS = 1e-5
#: RMSNorm epsilon inside BitLinear: the default of transformers' BitLinear and BitNetQuantConfig (its
#: BitNetConfig's model-level rms_norm_eps is 1e-5; that one is for the decoder's own norms).
RMS_EPS = 1e-6
#: Ternary codes per uint8 byte in the 2-bit packing.
CODES_PER_BYTE = 4

INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64)


# ----------------------------------------------------------------------------------------------
# quantizers


def absmean_ternary(w: torch.Tensor, eps: float = SCALE_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """BitNet b1.58's weight quantizer: one absmean scale per tensor, ternary codes.

    ``gamma = max(mean|w|, eps)`` and ``codes = clamp(round(w * (1 / gamma)), -1, 1)`` (round half
    to even), computed in float32. ``w ~ gamma * codes``.

    Args:
        w: a float tensor of any shape (usually a weight ``[out_features, in_features]``), finite, non-empty.
        eps: the floor of the scale (> 0); an all-zero tensor gets ``gamma = eps`` and all-zero codes.

    Returns:
        ``(codes, gamma)``: int8 codes in ``{-1, 0, 1}`` with ``w``'s shape and device, and a 0-dim
        float32 tensor ``gamma`` (the value of one code step).
    """
    check_tensor(w, "w", dtypes=FLOAT_DTYPES)
    _check_eps(eps)
    return _absmean_ternary(w, eps)


def _absmean_ternary(w: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    wf = w.float()
    gamma = wf.abs().mean().clamp(min=eps)
    codes = (wf * (1.0 / gamma)).round().clamp(-1, 1).to(torch.int8)
    return codes, gamma


def absmax_int8(x: torch.Tensor, eps: float = SCALE_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """BitNet's activation quantizer: symmetric int8 with one absmax scale per token (row).

    Per row of the last dimension, ``s = 127 / max(max|x|, eps)`` and
    ``codes = clamp(round(x * s), -128, 127)``, computed in float32; ``x ~ delta * codes`` with
    ``delta = max(max|x|, eps) / 127``.

    Args:
        x: a float tensor ``[..., features]`` (any number of leading token dimensions), finite, non-empty.
        eps: the floor of each row's absmax (> 0); an all-zero row gets all-zero codes.

    Returns:
        ``(codes, delta)``: int8 codes with ``x``'s shape, and float32 scales ``[..., 1]`` (one per token).
    """
    check_tensor(x, "x", dtypes=FLOAT_DTYPES)
    if x.dim() == 0:
        raise ValueError("x must have at least 1 dimension (the features), got a 0-dim tensor")
    _check_eps(eps)
    return _absmax_int8(x, eps)


def _absmax_int8(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    xf = x.float()
    amax = xf.abs().amax(dim=-1, keepdim=True).clamp(min=eps)
    codes = (xf * (127.0 / amax)).round().clamp(-128, 127).to(torch.int8)
    return codes, amax / 127.0


def fake_quant_weight(w: torch.Tensor, eps: float = SCALE_EPS) -> torch.Tensor:
    """``gamma * codes`` of :func:`absmean_ternary`, in ``w``'s dtype (no gradient rule: see :func:`ste`).

    Args:
        w: weight, any float tensor.
        eps: floor of the absmean scale.

    Returns:
        torch.Tensor: ``w``'s shape and dtype, values in ``gamma * {-1, 0, 1}``.
    """
    check_tensor(w, "w", dtypes=FLOAT_DTYPES)
    _check_eps(eps)
    return _fake_quant_weight(w, eps)


def _fake_quant_weight(w: torch.Tensor, eps: float = SCALE_EPS) -> torch.Tensor:
    codes, gamma = _absmean_ternary(w, eps)
    return (codes.float() * gamma).to(w.dtype)


def fake_quant_activation(x: torch.Tensor, eps: float = SCALE_EPS) -> torch.Tensor:
    """``delta * codes`` of :func:`absmax_int8`, in ``x``'s dtype (no gradient rule: see :func:`ste`).

    Args:
        x: activations ``[..., features]``.
        eps: floor of the absmax scale.

    Returns:
        torch.Tensor: ``x``'s shape and dtype, 8-bit values per token.
    """
    check_tensor(x, "x", dtypes=FLOAT_DTYPES)
    _check_eps(eps)
    return _fake_quant_activation(x, eps)


def _fake_quant_activation(x: torch.Tensor, eps: float = SCALE_EPS) -> torch.Tensor:
    codes, delta = _absmax_int8(x, eps)
    return (codes.float() * delta).to(x.dtype)


def ste(x: torch.Tensor, x_quant: torch.Tensor) -> torch.Tensor:
    """Straight-through estimator: exactly the value of ``x_quant``, the gradient of the identity in ``x``.

    Returns ``x_quant.detach() + (x - x.detach())``. For finite ``x`` the bracket is an exact zero, so
    the result equals ``x_quant`` bit for bit in every dtype; ``x + (x_quant - x).detach()`` rounds
    ``x_quant - x`` and then the sum, and in bfloat16 misses ``x_quant`` for about 2% of weights.

    Args:
        x: the full-precision tensor (receives the gradient).
        x_quant: its quantized value, same shape.

    Returns:
        torch.Tensor: equal to ``x_quant``, with the gradient of ``x``.
    """
    check_tensor(x, "x", allow_empty=True, allow_nonfinite=True)
    check_tensor(x_quant, "x_quant", allow_empty=True, allow_nonfinite=True)
    if x_quant.shape != x.shape:
        raise ValueError(f"x_quant must have x's shape {tuple(x.shape)}, got {tuple(x_quant.shape)}")
    return x_quant.detach() + (x - x.detach())


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = RMS_EPS) -> torch.Tensor:
    """RMSNorm over the last dimension, as transformers' ``LlamaRMSNorm`` computes it.

    ``y = weight * (x * rsqrt(mean(x**2) + eps))``, the normalization in float32, the result cast
    back to ``x``'s dtype before the gain.

    Args:
        x: float ``[..., features]``.
        weight: the gain ``[features]``, or None for no gain.
        eps: added to the mean square (> 0).

    Returns:
        A tensor with ``x``'s shape.
    """
    check_tensor(x, "x", dtypes=FLOAT_DTYPES, allow_empty=True, allow_nonfinite=True)
    if weight is not None:
        check_tensor(weight, "weight", dtypes=FLOAT_DTYPES, ndim=1, allow_nonfinite=True)
        if x.dim() == 0 or weight.shape[0] != x.shape[-1]:
            raise ValueError(f"weight must have shape ({x.shape[-1] if x.dim() else 0},) (x's last dimension), "
                             f"got {tuple(weight.shape)}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
        raise ValueError(f"eps must be a number > 0, got {eps!r}")
    hidden = x.float()
    hidden = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + eps)
    hidden = hidden.to(x.dtype)
    return hidden if weight is None else weight * hidden


def bitlinear_forward(x: torch.Tensor, weight: torch.Tensor, norm_weight: torch.Tensor | None = None,
                      eps: float = RMS_EPS) -> torch.Tensor:
    """BitLinear's training forward: RMSNorm, int8 activations and ternary weights, both with the STE.

    ``x_n = rms_norm(x, norm_weight, eps)``;
    ``x_q = ste(x_n, fake_quant_activation(x_n))``; ``w_q = ste(weight, fake_quant_weight(weight))``;
    returns ``x_q @ w_q.T`` (``F.linear``, no bias).

    Args:
        x: float ``[..., in_features]``, finite.
        weight: the latent full-precision weight ``[out_features, in_features]``, finite.
        norm_weight: RMSNorm gain ``[in_features]`` or None.
        eps: RMSNorm epsilon.

    Returns:
        ``[..., out_features]`` in ``x``'s dtype; gradients flow to ``x``, ``weight`` and
        ``norm_weight`` as if both quantizers were the identity.
    """
    check_tensor(x, "x", dtypes=FLOAT_DTYPES)
    check_tensor(weight, "weight", dtypes=FLOAT_DTYPES, ndim=2)
    if x.dim() == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x must end in in_features={weight.shape[1]} (weight has shape {tuple(weight.shape)}), "
                         f"got shape {tuple(x.shape)}")
    if norm_weight is not None:
        check_tensor(norm_weight, "norm_weight", dtypes=FLOAT_DTYPES, ndim=1)
        if norm_weight.shape[0] != weight.shape[1]:
            raise ValueError(f"norm_weight must have shape ({weight.shape[1]},), got {tuple(norm_weight.shape)}")
    return _bitlinear(x, weight, norm_weight, eps, True, True)


def _bitlinear(x, weight, norm_weight, eps: float, quantize_weights: bool, quantize_activations: bool):
    x = rms_norm(x, norm_weight, eps)
    if quantize_activations:
        x = ste(x, _fake_quant_activation(x))
    w = ste(weight, _fake_quant_weight(weight)) if quantize_weights else weight
    return F.linear(x, w)


class BitLinear(torch.nn.Module):
    """A BitNet b1.58 linear layer (no bias): RMSNorm, then int8 activations times ternary weights.

    ``quantize_weights`` / ``quantize_activations`` switch each quantizer; with both off the layer
    is the full-precision twin (RMSNorm + ``F.linear``) used as a baseline of the same shape, and
    switching them on after training is post-training ternarization.

    Args:
        in_features, out_features: sizes (ints >= 1).
        quantize_weights, quantize_activations: whether the forward pass quantizes (with the STE).
    """

    def __init__(self, in_features: int, out_features: int, quantize_weights: bool = True,
                 quantize_activations: bool = True, eps: float = RMS_EPS):
        super().__init__()
        check_int(in_features, "in_features", low=1)
        check_int(out_features, "out_features", low=1)
        self.in_features, self.out_features, self.eps = in_features, out_features, eps
        self.quantize_weights, self.quantize_activations = bool(quantize_weights), bool(quantize_activations)
        self.weight = torch.nn.Parameter(torch.empty(out_features, in_features))
        self.norm_weight = torch.nn.Parameter(torch.ones(in_features))
        torch.nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's initialization

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, **kwargs) -> "BitLinear":
        """A BitLinear holding a copy of ``linear``'s weight (its bias, if any, is dropped)."""
        layer = cls(linear.in_features, linear.out_features, **kwargs)
        layer.to(device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(linear.weight)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _bitlinear(x, self.weight, self.norm_weight, self.eps, self.quantize_weights, self.quantize_activations)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"quantize_weights={self.quantize_weights}, quantize_activations={self.quantize_activations}")


class PackedBitLinear(torch.nn.Module):
    """Inference form of a BitLinear: packed 2-bit weights, int8 activations, additions only.

    ``forward``: RMSNorm, :func:`absmax_int8`, then :func:`ternary_matmul` of the int8 codes with the
    packed weights (an exact int32 sum of +-activations), times ``gamma`` and each token's ``delta``.
    """

    def __init__(self, packed: torch.Tensor, gamma: torch.Tensor, norm_weight: torch.Tensor, in_features: int,
                 eps: float = RMS_EPS):
        super().__init__()
        self.in_features, self.out_features, self.eps = in_features, packed.shape[0], eps
        self.register_buffer("packed", packed)
        self.register_buffer("gamma", gamma.detach().clone().float())
        self.register_buffer("norm_weight", norm_weight.detach().clone())

    @classmethod
    def from_bitlinear(cls, layer: BitLinear) -> "PackedBitLinear":
        codes, gamma = absmean_ternary(layer.weight.detach())
        return cls(pack_ternary(codes), gamma, layer.norm_weight, layer.in_features, layer.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes, delta = absmax_int8(rms_norm(x, self.norm_weight, self.eps))
        return (ternary_matmul(codes, self.packed, self.gamma) * delta).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed 2-bit"


# ----------------------------------------------------------------------------------------------
# packing and the addition-only matmul


def pack_ternary(w_ternary: torch.Tensor) -> torch.Tensor:
    """Pack ternary weights 4 per byte (2 bits each) along the input dimension.

    Code ``c = w + 1`` in ``{0, 1, 2}``; element ``4*j + k`` of a row goes to bits ``[2k, 2k+1]``
    of byte ``j`` (``k = 0`` in the lowest bits).

    Args:
        w_ternary: integer tensor ``[out_features, in_features]`` (int8, int16, int32 or int64) with
            values in ``{-1, 0, 1}``; ``in_features`` a multiple of 4.

    Returns:
        uint8 ``[out_features, in_features // 4]`` on ``w_ternary``'s device.
    """
    check_tensor(w_ternary, "w_ternary", dtypes=INT_DTYPES, ndim=2)
    in_features = w_ternary.shape[1]
    if in_features % CODES_PER_BYTE != 0:
        raise ValueError(f"in_features (w_ternary.shape[1]) must be a multiple of {CODES_PER_BYTE} to pack 4 codes per "
                         f"byte, got {in_features}; pad the input dimension with zeros first")
    if bool(((w_ternary < -1) | (w_ternary > 1)).any()):
        raise ValueError(f"w_ternary must hold only -1, 0 and 1, got values in [{int(w_ternary.min())}, "
                         f"{int(w_ternary.max())}]")
    codes = (w_ternary + 1).to(torch.uint8).reshape(w_ternary.shape[0], in_features // CODES_PER_BYTE, CODES_PER_BYTE)
    packed = codes[..., 0]
    for k in range(1, CODES_PER_BYTE):
        packed = packed | (codes[..., k] << (2 * k))
    return packed.contiguous()


def _check_packed(packed: torch.Tensor) -> None:
    check_tensor(packed, "packed", dtypes=(torch.uint8,), ndim=2)
    if bool((packed & (packed >> 1) & 0x55).any()):
        raise ValueError("packed holds the code 3 (bits 11), which no ternary weight packs to: "
                         "it was not made by pack_ternary")


def unpack_ternary(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """Inverse of :func:`pack_ternary`.

    Args:
        packed: uint8 ``[out_features, in_features // 4]`` from :func:`pack_ternary`.
        in_features: the unpacked row length, a multiple of 4 equal to ``4 * packed.shape[1]``.

    Returns:
        int8 ``[out_features, in_features]`` with values in ``{-1, 0, 1}``.
    """
    check_int(in_features, "in_features", low=1)
    if in_features % CODES_PER_BYTE != 0:
        raise ValueError(f"in_features must be a multiple of {CODES_PER_BYTE}, got {in_features}")
    _check_packed(packed)
    if packed.shape[1] * CODES_PER_BYTE != in_features:
        raise ValueError(f"packed must have in_features // 4 = {in_features // CODES_PER_BYTE} columns for "
                         f"in_features={in_features}, got shape {tuple(packed.shape)}")
    fields = [(packed >> (2 * k)) & 3 for k in range(CODES_PER_BYTE)]
    codes = torch.stack(fields, dim=-1).reshape(packed.shape[0], in_features)
    return codes.to(torch.int8) - 1


def _scale_value(scale, device) -> torch.Tensor:
    if isinstance(scale, torch.Tensor):
        check_tensor(scale, "scale", dtypes=FLOAT_DTYPES)
        if scale.dim() != 0:
            raise ValueError(f"scale must be a 0-dim tensor or a number (one scale per tensor), got shape "
                             f"{tuple(scale.shape)}")
        value = scale.to(device=device, dtype=torch.float32)
    elif isinstance(scale, numbers.Real) and not isinstance(scale, bool):
        if not math.isfinite(float(scale)):
            raise ValueError(f"scale must be finite, got {scale}")
        value = torch.tensor(float(scale), dtype=torch.float32, device=device)
    else:
        raise TypeError(f"scale must be a float or a 0-dim float tensor, got {type(scale).__name__}")
    if bool(value <= 0):
        raise ValueError(f"scale must be > 0, got {float(value)}")
    return value


def ternary_matmul(x: torch.Tensor, packed: torch.Tensor, scale, max_elements: int = 1 << 22) -> torch.Tensor:
    """``x @ (scale * W).T`` for packed ternary ``W``, with additions and subtractions only.

    For each output ``n``: the sum of the inputs whose weight is +1 minus the sum of those whose
    weight is -1 (selected with masks from the 2-bit codes, never multiplied by a weight), then one
    multiplication by ``scale`` per output.

    Args:
        x: ``[..., in_features]``: float (finite), or integer codes (int8, int16, int32: the sums are
            then exact int32).
        packed: uint8 ``[out_features, in_features // 4]`` from :func:`pack_ternary`.
        scale: the weight scale ``gamma`` (> 0), a number or a 0-dim float tensor.
        max_elements: work-space bound (elements of the ``[rows, out, in/4]`` selection per chunk).

    Returns:
        ``[..., out_features]``: ``x``'s dtype for float ``x`` (sums in float32, float64 for float64),
        float32 for integer ``x``.
    """
    check_tensor(x, "x", dtypes=FLOAT_DTYPES + INT_DTYPES[:3])
    if x.dim() == 0:
        raise ValueError("x must have at least 1 dimension (in_features), got a 0-dim tensor")
    _check_packed(packed)
    n_out, n_bytes = packed.shape
    in_features = x.shape[-1]
    if n_bytes * CODES_PER_BYTE != in_features:
        raise ValueError(f"packed must have shape (out_features, {in_features} // 4 = {in_features / 4:g}) for x with "
                         f"in_features={in_features}, got {tuple(packed.shape)}"
                         + ("" if in_features % 4 == 0 else "; in_features must be a multiple of 4"))
    if x.device != packed.device:
        raise ValueError(f"x and packed must be on the same device, got x on {x.device} and packed on {packed.device}")
    gamma = _scale_value(scale, x.device)
    check_int(max_elements, "max_elements", low=1)

    if x.is_floating_point():
        acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    else:
        acc_dtype = torch.int32
    rows = x.reshape(-1, in_features).to(acc_dtype)
    zero = torch.zeros((), dtype=acc_dtype, device=x.device)
    out = torch.zeros(rows.shape[0], n_out, dtype=acc_dtype, device=x.device)
    fields = [(packed >> (2 * k)) & 3 for k in range(CODES_PER_BYTE)]
    plus = [(f == 2)[None] for f in fields]    # [1, N, K/4]: weight +1
    minus = [(f == 0)[None] for f in fields]   # weight -1
    chunk = max(1, max_elements // max(1, n_out * n_bytes))
    for start in range(0, rows.shape[0], chunk):
        block = rows[start:start + chunk]
        acc = out[start:start + chunk]
        for k in range(CODES_PER_BYTE):
            xs = block[:, None, k::CODES_PER_BYTE]  # [m, 1, K/4]: elements 4j + k
            acc += torch.where(plus[k], xs, zero).sum(-1, dtype=acc_dtype)
            acc -= torch.where(minus[k], xs, zero).sum(-1, dtype=acc_dtype)
    if acc_dtype == torch.int32:
        result = out.to(torch.float32) * gamma
    else:
        result = (out * gamma.to(acc_dtype)).to(x.dtype)
    return result.reshape(*x.shape[:-1], n_out)


# ----------------------------------------------------------------------------------------------
# models


def bitlinear_layers(model: torch.nn.Module) -> list[tuple[str, BitLinear]]:
    """The ``(name, module)`` pairs of every BitLinear in ``model``.

    Args:
        model: any module.

    Returns:
        list[tuple[str, BitLinear]]: in module order.
    """
    check_module(model, "model")
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BitLinear)]


def set_quantization(model: torch.nn.Module, weights: bool, activations: bool) -> torch.nn.Module:
    """Switch the quantizers of every BitLinear in ``model`` (in place); returns ``model``.

    Args:
        model: changed in place.
        weights: quantize the weights (ternary).
        activations: quantize the activations (int8).

    Returns:
        torch.nn.Module: ``model`` itself.
    """
    check_module(model, "model")
    layers = bitlinear_layers(model)
    if not layers:
        raise ValueError("model has no BitLinear layers")
    for _, layer in layers:
        layer.quantize_weights, layer.quantize_activations = bool(weights), bool(activations)
    return model


def pack_model(model: torch.nn.Module) -> torch.nn.Module:
    """Replace every BitLinear of ``model`` (in place) by its :class:`PackedBitLinear`; returns ``model``.

    Args:
        model: changed in place; every BitLinear's in_features a multiple of 4.

    Returns:
        torch.nn.Module: ``model`` itself.
    """
    check_module(model, "model")
    layers = bitlinear_layers(model)
    if not layers:
        raise ValueError("model has no BitLinear layers")
    if layers[0][0] == "":
        raise ValueError("model is itself a BitLinear: use PackedBitLinear.from_bitlinear(model)")
    for name, layer in layers:
        model.set_submodule(name, PackedBitLinear.from_bitlinear(layer))
    return model


def make_digits_mlp(bitnet: bool, hidden: int = 256, seed: int = 0) -> torch.nn.Sequential:
    """A 64 -> hidden -> hidden -> 10 MLP of BitLinear layers (ReLU between).

    Args:
        bitnet: True for BitNet b1.58 (quantizers on), False for the full-precision twin of the same
            shape (RMSNorm + linear, quantizers off).
        hidden: hidden width (a multiple of 4, so every layer packs).
        seed: initialization seed (the same seed gives both twins the same initial weights).

    Returns:
        torch.nn.Sequential: the MLP, float32, on the CPU.
    """
    check_int(hidden, "hidden", low=4)
    torch.manual_seed(seed)
    q = dict(quantize_weights=bitnet, quantize_activations=bitnet)
    return torch.nn.Sequential(BitLinear(64, hidden, **q), torch.nn.ReLU(), BitLinear(hidden, hidden, **q),
                               torch.nn.ReLU(), BitLinear(hidden, 10, **q))


def make_tiny_lm(bitnet: bool, vocab_size: int = 4096, hidden: int = 64, layers: int = 1, heads: int = 4,
                 intermediate: int = 128, max_positions: int = 128, seed: int = 0):
    """A tiny transformers Llama whose decoder Linears are BitLinears (the head and embedding stay float).

    BitNet b1.58 keeps the embedding and the output head in high precision and quantizes every
    linear layer inside the blocks (attention projections and the MLP).

    Args:
        bitnet: quantizers on (True) or the full-precision twin of the same shape (False).
        vocab_size: the tokenizer's vocabulary (the course LM's: 4096).
        hidden, layers, heads, intermediate, max_positions: the Llama config.
        seed: initialization seed.

    Returns:
        A ``transformers.LlamaForCausalLM`` (tied embedding and head) in train mode.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=max_positions, tie_word_embeddings=True,
                         bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return to_bitlinear(LlamaForCausalLM(config), quantize_weights=bitnet, quantize_activations=bitnet)


def train_classifier(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, steps: int = 300, lr: float = 3e-3,
                     batch_size: int = 128, seed: int = 0, progress: bool = True, desc: str = "training") -> list[float]:
    """Train a classifier with AdamW and cross-entropy on random mini-batches; returns the loss per step.

    Args:
        model: trained in place.
        X, y: inputs ``[N, features]`` and int64 labels ``[N]``.
        steps, lr, batch_size: AdamW settings.
        seed: seed of the batch sampling.
        progress, desc: tqdm bar and its label.

    Returns:
        list[float]: the training loss of every step.
    """
    check_module(model, "model")
    check_int(steps, "steps", low=1)
    check_int(batch_size, "batch_size", low=1)
    device = next(model.parameters()).device
    X, y = X.to(device), y.to(device)
    gen = torch.Generator().manual_seed(seed)

    def loss_at(_step: int) -> torch.Tensor:
        idx = torch.randint(0, X.shape[0], (batch_size,), generator=gen).to(device)
        return F.cross_entropy(model(X[idx]), y[idx])

    return train_steps(model, model.parameters(), steps, lr, loss_at, progress, desc)


def train_lm(model: torch.nn.Module, ids: torch.Tensor, steps: int = 150, seq_len: int = 64, batch_size: int = 16,
             lr: float = 3e-3, seed: int = 0, progress: bool = True, desc: str = "training") -> list[float]:
    """Train a causal LM on random windows of a 1-D token tensor (AdamW, cosine schedule); returns the losses.

    Args:
        model: a causal LM, trained in place.
        ids: 1-D int64 token ids.
        steps, seq_len, batch_size, lr: training settings.
        seed: seed of the window sampling.
        progress, desc: tqdm bar and its label.

    Returns:
        list[float]: the training loss of every step.
    """
    check_module(model, "model")
    check_tensor(ids, "ids", ndim=1)
    check_int(steps, "steps", low=1)
    check_int(seq_len, "seq_len", low=2)
    if ids.numel() <= seq_len:
        raise ValueError(f"ids must hold more than seq_len={seq_len} tokens, got {ids.numel()}")
    device = next(model.parameters()).device
    ids = ids.to(device)
    gen = torch.Generator().manual_seed(seed)
    offsets = torch.arange(seq_len, device=device)

    def loss_at(_step: int) -> torch.Tensor:
        starts = torch.randint(0, ids.numel() - seq_len, (batch_size,), generator=gen).to(device)
        batch = ids[starts[:, None] + offsets]
        logits = model(input_ids=batch).logits
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1))

    return train_steps(model, model.parameters(), steps, lr, loss_at, progress, desc)


def bits_per_weight() -> dict[str, float]:
    """Storage per ternary weight: the information content and two packings.

    Returns:
        dict: ``"log2(3)"`` (1.585, the entropy bound of a uniform ternary symbol), ``"base-3, 5 per byte"``
        (8/5 = 1.6: 3**5 = 243 <= 256) and ``"2-bit, 4 per byte"`` (2.0, this module's packing).
    """
    return {"log2(3)": math.log2(3), "base-3, 5 per byte": 8 / 5, "2-bit, 4 per byte": 2.0}


def _check_eps(eps) -> None:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not (math.isfinite(float(eps)) and eps > 0):
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")


# ----------------------------------------------------------------------------------------------
# ternary fine-tuning of a trained LM


def to_bitlinear(model: torch.nn.Module, quantize_weights: bool = True,
                 quantize_activations: bool = True) -> torch.nn.Module:
    """Replace every ``nn.Linear`` in the transformer blocks of ``model`` by a BitLinear holding its weight, in place.

    The embedding and the output head stay as they are (BitNet keeps them in high precision). Each BitLinear gets
    a fresh RMSNorm (gain 1) in front, as in BitNet's architecture: with both quantizers off the result is the
    original model plus those norms, not the original model itself.

    Args:
        model: a transformers causal LM whose blocks :func:`course_lib.lm_quant.decoder_blocks` finds; its block
            Linears must have no bias (BitLinear has none).
        quantize_weights: switch on the ternary weight quantizer of every new layer.
        quantize_activations: switch on the int8 activation quantizer.

    Returns:
        torch.nn.Module: ``model`` itself, its block Linears now BitLinears on the same device and dtype.
    """
    check_module(model, "model")
    blocks = decoder_blocks(model)
    linears = [(block, name, m) for block in blocks for name, m in block.named_modules()
               if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise ValueError("model has no nn.Linear inside its blocks to convert")
    with_bias = [name for _, name, m in linears if m.bias is not None]
    if with_bias:
        raise ValueError(f"model's block Linears must have no bias (BitLinear has none), got a bias in {with_bias[0]}")
    for block, name, module in linears:
        block.set_submodule(name, BitLinear.from_linear(module, quantize_weights=quantize_weights,
                                                         quantize_activations=quantize_activations))
    return model


def ternary_finetune(model: torch.nn.Module, windows: torch.Tensor, steps: int, use_teacher: bool = True,
                     alpha: float = 1.0, temperature: float = 1.0, batch_size: int = 8, lr: float = 1e-3,
                     seed: int = 0, progress: bool = True, desc: str = "ternary fine-tuning"
                     ) -> tuple[torch.nn.Module, list[float]]:
    """Ternarize a copy of a trained LM (BitLinear, W1.58 A8) and fine-tune it, distilled from the original.

    A deep copy of ``model`` goes through :func:`to_bitlinear` (both quantizers on) and is trained for ``steps``
    AdamW steps (cosine schedule, no weight decay) through the STE by :func:`course_lib.distill.train_lm` on the
    first ``steps * batch_size`` rows of ``windows`` (shuffled with ``seed``). With ``use_teacher`` the loss is
    ``alpha * T**2 * KL(teacher || student) + (1 - alpha) * cross-entropy`` on every next-token position, the
    teacher being ``model`` itself, unchanged; without it, next-token cross-entropy alone.

    Args:
        model: the trained full-precision causal LM (not modified); its block Linears have no bias.
        windows: int64 token ids ``[n, seq_len]`` with ``n >= steps * batch_size`` (e.g.
            ``course_lib.lm_quant.calibration_ids``: never the evaluation text).
        steps: optimizer steps (>= 1).
        use_teacher: distill from ``model`` (True) or train on the labels only (False).
        alpha: weight of the KL term in ``[0, 1]`` (1: the teacher's distribution only); ignored without a teacher.
        temperature: softmax temperature of the KL term (> 0).
        batch_size: windows per step.
        lr: AdamW's peak learning rate.
        seed: seed of the window order.
        progress, desc: tqdm bar and its label.

    Returns:
        ``(student, losses)``: the fine-tuned BitLinear copy, in eval mode, on ``model``'s device, and the training
        loss of every step.
    """
    check_module(model, "model")
    check_tensor(windows, "windows", ndim=2)
    if windows.is_floating_point():
        raise TypeError(f"windows must hold integer token ids, got dtype {windows.dtype}")
    check_int(steps, "steps", low=1)
    check_int(batch_size, "batch_size", low=1)
    if windows.shape[0] < steps * batch_size:
        raise ValueError(f"windows must have at least steps * batch_size = {steps * batch_size} rows, "
                         f"got {windows.shape[0]}")
    if use_teacher:
        distill._check_alpha(alpha)
        distill._check_temperature(temperature)
    student = to_bitlinear(copy.deepcopy(model))
    teacher = model if use_teacher else None
    was_training = model.training
    try:
        losses = distill.train_lm(student, windows[:steps * batch_size], teacher=teacher, temperature=temperature,
                                  alpha=alpha, batch_size=batch_size, lr=lr, seed=seed, progress=progress, desc=desc)
    finally:
        model.train(was_training)
    return student, losses


# ----------------------------------------------------------------------------------------------
# llama.cpp's ternary GGUF formats

_TQ_BLOCK = 256
#: llama.cpp's ternary block formats (``block_tq1_0``, ``block_tq2_0`` in ``ggml/src/ggml-common.h``):
#: TQ1_0 packs 240 codes 5 per byte in base 3 (``qs``) and 16 codes 4 per byte (``qh``); TQ2_0 4 codes per byte.
TERNARY_GGUF_LAYOUTS: dict[str, BlockLayout] = {layout.name: layout for layout in (
    BlockLayout("TQ1_0", _TQ_BLOCK, (("qs", 8, 48), ("qh", 8, 4), ("d", 16, 1))),
    BlockLayout("TQ2_0", _TQ_BLOCK, (("qs", 2, 256), ("d", 16, 1))),
)}
_TQ2_0_BYTES = TERNARY_GGUF_LAYOUTS["TQ2_0"].block_bytes
_TQ2_0_CODE_BYTES = _TQ_BLOCK // CODES_PER_BYTE


def tq2_0_quantize(x: torch.Tensor) -> torch.Tensor:
    """Quantize to llama.cpp's TQ2_0: per block of 256, ``d = max|x|`` (fp16) and 2-bit codes of ``roundf(x / d)``.

    The layout of one 66-byte block: 64 bytes of codes ``c = q + 1`` in ``{0, 1, 2}``, weight ``128 h + 32 k + j``
    in bits ``[2k, 2k+1]`` of byte ``32 h + j``, then ``d`` as 2 little-endian fp16 bytes. An all-zero block gets
    ``d = 0`` and codes 1 (weight 0). Values are rounded, not clamped: ``|x / d| <= 1`` by construction.

    Args:
        x: float ``[..., n]`` (fp16, bf16, fp32, fp64; computed in float32), finite, ``n`` a multiple of 256.

    Returns:
        uint8 ``[..., n / 256 * 66]``: the bytes ``gguf.quants.quantize(x, TQ2_0)`` returns.
    """
    check_tensor(x, "x", dtypes=FLOAT_DTYPES)
    if x.dim() == 0 or x.shape[-1] % _TQ_BLOCK != 0:
        raise ValueError(f"x's last dimension must be a multiple of the TQ2_0 block size {_TQ_BLOCK}, "
                         f"got shape {tuple(x.shape)}")
    blocks = x.float().reshape(-1, _TQ_BLOCK)
    d = blocks.abs().amax(dim=-1, keepdim=True)
    inv = torch.where(d == 0, torch.zeros_like(d), 1.0 / torch.where(d == 0, torch.ones_like(d), d))
    codes = (_round_half_away(blocks * inv) + 1).to(torch.uint8)           # [nb, 256] in {0, 1, 2}
    codes = codes.reshape(-1, 2, CODES_PER_BYTE, 32)                         # [nb, half, k, j]
    qs = codes[:, :, 0] | (codes[:, :, 1] << 2) | (codes[:, :, 2] << 4) | (codes[:, :, 3] << 6)
    out = torch.cat([qs.reshape(-1, _TQ2_0_CODE_BYTES), _fp16_bytes(d)], dim=-1)
    return out.reshape(*x.shape[:-1], x.shape[-1] // _TQ_BLOCK * _TQ2_0_BYTES)


def tq2_0_dequantize(blocks: torch.Tensor) -> torch.Tensor:
    """Decode TQ2_0 bytes: ``d * (c - 1)`` for every 2-bit code ``c``.

    A code 3, which no quantizer writes, decodes to ``2d``, as in llama.cpp.

    Args:
        blocks: uint8 ``[..., m]`` with ``m`` a multiple of 66 (whole TQ2_0 blocks).

    Returns:
        float32 ``[..., m / 66 * 256]``: the values ``gguf.quants.dequantize(blocks, TQ2_0)`` returns.
    """
    check_tensor(blocks, "blocks", dtypes=(torch.uint8,))
    if blocks.dim() == 0 or blocks.shape[-1] % _TQ2_0_BYTES != 0:
        raise ValueError(f"blocks' last dimension must be a multiple of the TQ2_0 block's {_TQ2_0_BYTES} bytes, "
                         f"got shape {tuple(blocks.shape)}")
    b = blocks.reshape(-1, _TQ2_0_BYTES)
    d = _fp16_value(b[:, _TQ2_0_CODE_BYTES:])                                # [nb, 1]
    qs = b[:, :_TQ2_0_CODE_BYTES].reshape(-1, 2, 1, 32)
    shifts = torch.arange(0, 8, 2, dtype=torch.uint8, device=b.device).reshape(1, 1, CODES_PER_BYTE, 1)
    q = ((qs >> shifts) & 3).reshape(-1, _TQ_BLOCK).to(torch.float32) - 1
    return (d * q).reshape(*blocks.shape[:-1], blocks.shape[-1] // _TQ2_0_BYTES * _TQ_BLOCK)
