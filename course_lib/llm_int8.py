"""Notebook 06: LLM.int8(): vector-wise int8 matmul with a floating-point path for outlier columns.

LLM.int8() (Dettmers et al. 2022, arXiv 2208.07339) multiplies activations ``X`` (tokens x features)
by a weight ``W`` (out_features x in_features, the ``nn.Linear`` layout) in two parts:

- **vector-wise int8** for most of the features: every row of ``X`` (a token) gets its own scale
  ``absmax(row) / 127`` and every row of ``W`` (an output channel) its own ``absmax / 127``; the codes
  are multiplied in int8 with an int32 accumulator and the int32 result ``C[i, j]`` is dequantized with
  ``row_stat[i] * col_stat[j] / 127**2``;
- **floating point** for the few **outlier columns** of ``X``: every feature (column) in which some
  value has ``|x| >= threshold`` (6.0 in the paper and in transformers' ``BitsAndBytesConfig``) is taken
  out of the int8 product and multiplied with the matching weight columns in floating point.

The output is the sum of the two. This module follows bitsandbytes 0.50.2 where it defines the
numbers (checked in tests/library/test_llm_int8.py):

- ``int8_vectorwise_quant(x, threshold)`` returns the same codes, row statistics and outlier columns
  as ``bitsandbytes.functional.int8_vectorwise_quant``: values with ``|x| >= threshold`` are left out of
  their row's absmax, and the codes of outlier columns are 0; ``threshold=0`` means no outliers.
- Codes are ``round(x * (127 / row_absmax))`` in float32, round half to even, in ``[-127, 127]``.

Where this module deliberately differs from bitsandbytes' ``Linear8bitLt`` on CPU (measured in the notebook):
the outlier columns are multiplied with the **original** weights (the paper's rule; bitsandbytes keeps only
int8 weights and uses their dequantized values), activations are quantized in their own dtype (bitsandbytes
casts them to float16 first), the dequantization constant is exactly ``1 / 127**2`` (bitsandbytes'
PyTorch fallback multiplies by ``6.200124e-05``, 1.8e-5 relatively larger than ``1/127**2 = 6.2000124e-05``),
and ``llm_int8_matmul`` / ``Int8Linear`` follow the paper's decomposition: the int8 part quantizes ``x`` with
its outlier columns set to 0, so the row statistics see only the regular columns (bitsandbytes leaves only the
values ``|x| >= threshold`` out of them, as ``int8_vectorwise_quant`` does).

``Int8Linear`` also runs the naive baselines and W8A8 (int8 weights and activations, no outlier path): mode
``"tensor"`` (one absmax scale per tensor for activations and weight, computed on every call: the paper's Table 1
baseline), ``"vectorwise"`` (one scale per token, computed on every call, and one per output channel: W8A8 with
per-token dynamic activation scales) and ``"static"`` (one activation scale for the whole input, fixed from
calibration, values beyond it clipped, and one per output channel: W8A8 with a per-tensor static activation
scale). ``course_lib.smoothquant`` smooths a model before these last two.

The integer products are exact: on the CPU, with an inner dimension of at most ``FLOAT32_EXACT_INNER_DIM`` (1024),
through a float32 GEMM (every partial sum of int8 x int8 products is then an integer below 2**24, which float32
holds exactly, so the result is the int32 accumulator's, bit for bit, and several times faster than PyTorch's
int32 matmul on the CPU); otherwise through ``course_lib.affine.int32_matmul``.

Every function is device-agnostic (CPU and CUDA) and never divides by zero: an all-zero row gets the
statistic 0 and codes 0.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .affine import int32_matmul, int32_max_inner_dim
from .validation import FLOAT_DTYPES, check_module, check_same_device, check_tensor

__all__ = [
    "INT8_MAX",
    "DEFAULT_THRESHOLD",
    "MAX_INNER_DIM",
    "FLOAT32_EXACT_INNER_DIM",
    "vectorwise_quant",
    "vectorwise_dequant",
    "int8_matmul_dequant",
    "outlier_columns",
    "int8_vectorwise_quant",
    "llm_int8_matmul",
    "absmax_int8_matmul",
    "Int8Linear",
    "quantize_model_int8",
    "int8_layers",
    "inject_outlier_features",
    "linear_inputs",
]

#: Codes are in [-127, 127] (a restricted int8 grid, scale = absmax / 127).
INT8_MAX = 127
#: The outlier threshold of the paper and of transformers' BitsAndBytesConfig(llm_int8_threshold=6.0).
DEFAULT_THRESHOLD = 6.0
#: The longest inner dimension K whose int8 x int8 products (|code| <= 127) cannot overflow int32.
MAX_INNER_DIM = int32_max_inner_dim(INT8_MAX, INT8_MAX)
#: The longest inner dimension K for which a float32 GEMM of int8 codes is exact: K products of magnitude at most
#: 128**2 sum to less than 2**24, and float32 represents every integer below 2**24 exactly.
FLOAT32_EXACT_INNER_DIM = 2**24 // 128**2

MODES = ("llm.int8", "vectorwise", "tensor", "static")
OUTLIER_WEIGHTS = ("fp", "int8")


# ----------------------------------------------------------------------------------------------
# argument checks


def _check_matrix(x, name: str) -> None:
    check_tensor(x, name, dtypes=FLOAT_DTYPES, ndim=2)


def _check_threshold(threshold) -> float:
    if isinstance(threshold, torch.Tensor) and threshold.numel() == 1 and threshold.is_floating_point():
        threshold = float(threshold)
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"threshold must be a real number >= 0, got {type(threshold).__name__}")
    threshold = float(threshold)
    if math.isnan(threshold) or threshold < 0:
        raise ValueError(f"threshold must be >= 0 (0 disables the outlier path), got {threshold}")
    return threshold


def _check_act_absmax(act_absmax) -> float:
    if isinstance(act_absmax, torch.Tensor) and act_absmax.numel() == 1 and act_absmax.is_floating_point():
        act_absmax = float(act_absmax)
    if isinstance(act_absmax, bool) or not isinstance(act_absmax, numbers.Real):
        raise TypeError(f"act_absmax must be a number > 0 (the calibrated max |x|) for mode 'static', "
                        f"got {type(act_absmax).__name__}")
    act_absmax = float(act_absmax)
    if not math.isfinite(act_absmax) or act_absmax <= 0:
        raise ValueError(f"act_absmax must be finite and > 0 (the calibrated max |x|), got {act_absmax}")
    return act_absmax


def _check_inner_dim(k: int, name: str) -> None:
    if k > MAX_INNER_DIM:
        raise ValueError(f"{name} has inner dimension K={k}: int8 x int8 products summed over more than "
                         f"{MAX_INNER_DIM} terms can overflow the int32 accumulator")


# ----------------------------------------------------------------------------------------------
# vector-wise quantization


def _row_codes(x32: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
    """round(x * (127 / stat)) per row in float32 (round half to even), safe for zero and subnormal statistics.

    ``|x| <= stat`` in every row, so the scaled values stay within [-127, 127] up to float rounding.
    """
    inv = torch.where(stats > 0, INT8_MAX / stats, torch.zeros_like(stats))
    codes = torch.round(x32 * inv[:, None]).to(torch.int8)
    bad = ~torch.isfinite(inv)
    if bool(bad.any()):
        # 127 / stat overflows to inf when stat < 127 / float32 max (~3.7e-37): divide first in those rows.
        rows = x32[bad] / stats[bad][:, None]
        codes[bad] = torch.round(rows * INT8_MAX).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    return codes


def vectorwise_quant(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 quantization with one absmax scale per row.

    Args:
        x: (M, K) float tensor (any float dtype), finite.

    Returns:
        (codes, row_stats): ``codes`` (M, K) int8 in [-127, 127], ``codes = round(x * (127 / row_stats))``
        computed in float32 (round half to even); ``row_stats`` (M,) float32, ``max |x|`` of each row.
        An all-zero row has statistic 0 and codes 0. Dequantize with ``codes * row_stats / 127``.
    """
    _check_matrix(x, "x")
    return _vectorwise(x)


def _vectorwise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x32 = x.float()
    stats = x32.abs().amax(dim=1)
    return _row_codes(x32, stats), stats


def vectorwise_dequant(codes: torch.Tensor, row_stats: torch.Tensor) -> torch.Tensor:
    """float32 (M, K) values ``codes * row_stats / 127`` of ``vectorwise_quant``'s output.

    Args:
        codes: int8 ``[M, K]``, from ``vectorwise_quant``.
        row_stats: float32 ``[M]`` absmax of each row.

    Returns:
        torch.Tensor: float32 ``[M, K]``.
    """
    check_tensor(codes, "codes", dtypes=(torch.int8,), ndim=2, allow_empty=True)
    check_tensor(row_stats, "row_stats", dtypes=(torch.float32,), ndim=1, allow_empty=True)
    if row_stats.shape[0] != codes.shape[0]:
        raise ValueError(f"row_stats must have {codes.shape[0]} entries (codes' rows), got {row_stats.shape[0]}")
    return codes.float() * (row_stats[:, None] / INT8_MAX)


def int8_matmul_dequant(codes_x: torch.Tensor, row_stats: torch.Tensor, codes_w: torch.Tensor,
                        col_stats: torch.Tensor) -> torch.Tensor:
    """``X @ W.T`` from vector-wise int8 codes: int32 accumulation, then one float dequantization.

    ``out[i, j] = (sum_k codes_x[i, k] * codes_w[j, k]) * row_stats[i] * col_stats[j] / 127**2``,
    the sum computed exactly, as an int32 accumulator computes it (``course_lib.affine.int32_matmul``, or on the
    CPU a float32 GEMM that gives the same integers: see the module docstring).

    Args:
        codes_x: (M, K) int8 codes of the activations (one scale per row).
        row_stats: (M,) float32 absmax of each activation row.
        codes_w: (N, K) int8 codes of the weight in ``nn.Linear`` layout (one scale per output channel).
        col_stats: (N,) float32 absmax of each weight row (= each output column).

    Returns:
        (M, N) float32 tensor ``acc.float() * (row_stats[:, None] * col_stats[None, :] / 127**2)``.
    """
    check_tensor(codes_x, "codes_x", dtypes=(torch.int8,), ndim=2)
    check_tensor(codes_w, "codes_w", dtypes=(torch.int8,), ndim=2)
    check_tensor(row_stats, "row_stats", dtypes=(torch.float32,), ndim=1)
    check_tensor(col_stats, "col_stats", dtypes=(torch.float32,), ndim=1)
    if codes_w.shape[1] != codes_x.shape[1]:
        raise ValueError(f"codes_w must have K={codes_x.shape[1]} columns (codes_x's columns), "
                         f"got shape {tuple(codes_w.shape)}")
    if row_stats.shape[0] != codes_x.shape[0]:
        raise ValueError(f"row_stats must have {codes_x.shape[0]} entries (codes_x's rows), got {row_stats.shape[0]}")
    if col_stats.shape[0] != codes_w.shape[0]:
        raise ValueError(f"col_stats must have {codes_w.shape[0]} entries (codes_w's rows), got {col_stats.shape[0]}")
    check_same_device(("codes_x", codes_x), ("row_stats", row_stats), ("codes_w", codes_w), ("col_stats", col_stats))
    _check_inner_dim(codes_x.shape[1], "codes_x")
    return _matmul_dequant(codes_x, row_stats, codes_w, col_stats)


def _int8_gemm(codes_x: torch.Tensor, codes_w: torch.Tensor) -> torch.Tensor:
    """float32 (M, N): the int32 accumulator of ``codes_x @ codes_w.T`` (int8 codes) converted to float32.

    On the CPU with K <= FLOAT32_EXACT_INNER_DIM (and float32 matmuls in full precision) a float32 GEMM, which
    gives those integers exactly (see the module docstring); elsewhere ``affine.int32_matmul``, then the cast.
    """
    if (codes_x.device.type == "cpu" and codes_x.shape[1] <= FLOAT32_EXACT_INNER_DIM
            and torch.get_float32_matmul_precision() == "highest"):
        return codes_x.float() @ codes_w.float().T
    return int32_matmul(codes_x, codes_w.T).float()


def _matmul_dequant(codes_x, row_stats, codes_w, col_stats) -> torch.Tensor:
    return _int8_gemm(codes_x, codes_w) * (row_stats[:, None] * col_stats[None, :] / INT8_MAX**2)


# ----------------------------------------------------------------------------------------------
# outliers


def outlier_columns(x: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """The columns (features) of ``x`` that hold at least one value with ``|x| >= threshold``.

    Args:
        x: (M, K) float tensor, finite.
        threshold: >= 0. ``0`` disables the outlier path (no columns, bitsandbytes' convention);
            ``float("inf")`` also finds none.

    Returns:
        1-D int64 tensor of column indices in increasing order (possibly empty), on x's device.
    """
    _check_matrix(x, "x")
    threshold = _check_threshold(threshold)
    return _outlier_columns(x, threshold)


def _outlier_columns(x: torch.Tensor, threshold: float) -> torch.Tensor:
    if threshold == 0:
        return torch.empty(0, dtype=torch.int64, device=x.device)
    return torch.nonzero((x.abs() >= threshold).any(dim=0)).flatten()


def int8_vectorwise_quant(x: torch.Tensor, threshold: float = 0.0
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """bitsandbytes' ``int8_vectorwise_quant``: vector-wise codes with outlier columns held back.

    With ``threshold > 0`` the values with ``|x| >= threshold`` are left out of their row's absmax
    (only those values, not their whole column, exactly as bitsandbytes does), and every code in an
    outlier column is set to 0 (those columns go through the floating-point path instead).

    Args:
        x: (M, K) float tensor, finite.
        threshold: >= 0; 0 (the default, as in bitsandbytes) means no outlier columns.

    Returns:
        (codes, row_stats, outlier_cols): (M, K) int8, (M,) float32, 1-D int64 (possibly empty;
        bitsandbytes returns None instead of an empty tensor when ``threshold == 0``).
    """
    _check_matrix(x, "x")
    threshold = _check_threshold(threshold)
    return _int8_vectorwise_quant(x, threshold)


def _int8_vectorwise_quant(x: torch.Tensor, threshold: float):
    x32 = x.float()
    a = x32.abs()
    if threshold > 0:
        big = a >= threshold
        cols = torch.nonzero(big.any(dim=0)).flatten()
        if cols.numel():
            a = a.masked_fill(big, 0.0)  # outliers do not count in their row's absmax
    else:
        cols = torch.empty(0, dtype=torch.int64, device=x.device)
    stats = a.amax(dim=1)
    # Outlier values are not masked in x32: every one lies in an outlier column, whose codes become 0.
    codes = _row_codes(x32, stats)
    if cols.numel():
        codes[:, cols] = 0
    return codes, stats, cols


# ----------------------------------------------------------------------------------------------
# the mixed-precision matmul


def _check_x_w(x, w) -> None:
    _check_matrix(x, "x")
    _check_matrix(w, "w")
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"w must have {x.shape[1]} columns (in_features = x's columns, nn.Linear layout "
                         f"(out_features, in_features)), got w of shape {tuple(w.shape)} for x of shape {tuple(x.shape)}")
    check_same_device(("x", x), ("w", w))
    _check_inner_dim(x.shape[1], "x")


def _mixed(x, w, codes_w, col_stats, threshold: float, outlier_weights: str = "fp", *,
           find_outliers=_outlier_columns, quantize=_vectorwise, matmul=_matmul_dequant):
    """(float32 (M, N) output, outlier columns): the vector-wise int8 product of x with its outlier
    columns set to 0 (so they count neither in the product nor in the row statistics) plus the float
    product of the outlier columns."""
    cols = find_outliers(x, threshold)
    x_int8 = x
    if cols.numel():
        x_int8 = x.clone()
        x_int8[:, cols] = 0
    out = matmul(*quantize(x_int8), codes_w, col_stats)
    if cols.numel():
        if outlier_weights == "fp":
            w_out = w[:, cols].float()
        else:  # bitsandbytes: only int8 weights are kept; use their dequantized values
            w_out = codes_w[:, cols].float() * (col_stats[:, None] / INT8_MAX)
        out = out + x[:, cols].float() @ w_out.T
    return out, cols


def llm_int8_matmul(x: torch.Tensor, w: torch.Tensor, threshold: float = DEFAULT_THRESHOLD, *,
                    find_outliers=outlier_columns, quantize=vectorwise_quant,
                    matmul=int8_matmul_dequant) -> torch.Tensor:
    """LLM.int8(): ``x @ w.T`` with vector-wise int8 for regular columns and floating point for outlier columns.

    The paper's decomposition (Dettmers et al. 2022, eq. 3), with ``O = find_outliers(x, threshold)``:

    ``x @ w.T = x[:, O] @ w[:, O].T  (float32, the original weights)
              + matmul(*quantize(x with the columns O set to 0), *quantize(w))``

    The row statistics of the int8 part see only the regular columns; ``w`` is quantized whole, once per
    output channel, as a deployed layer stores it. bitsandbytes' ``int8_vectorwise_quant`` (and so
    ``Linear8bitLt``) differs in one detail: it leaves only the values ``|x| >= threshold`` out of the row
    statistics (it finds them in one pass over each row), so the smaller values of an outlier column can still
    widen their row's scale, though their codes are then discarded.

    Args:
        x: (M, K) float activations, finite.
        w: (N, K) float weight (``nn.Linear.weight`` layout), finite, on x's device.
        threshold: >= 0; columns of x with any ``|x| >= threshold`` use floating point.
            ``0`` gives plain vector-wise int8 (no outlier path).
        find_outliers: ``f(x, threshold)`` -> 1-D int64 column indices (default :func:`outlier_columns`).
        quantize: ``f(matrix)`` -> ``(int8 codes, float32 row statistics)`` (default :func:`vectorwise_quant`).
        matmul: ``f(codes_x, row_stats, codes_w, col_stats)`` -> float32 (M, N) (default
            :func:`int8_matmul_dequant`). Passing the pieces lets a notebook use its own exercises' functions.

    Returns:
        (M, N) tensor of x's dtype (computed in float32).
    """
    _check_x_w(x, w)
    threshold = _check_threshold(threshold)
    for name, fn in (("find_outliers", find_outliers), ("quantize", quantize), ("matmul", matmul)):
        if not callable(fn):
            raise TypeError(f"{name} must be a function, got {type(fn).__name__}")
    codes_w, col_stats = quantize(w)
    out, _ = _mixed(x, w, codes_w, col_stats, threshold, find_outliers=find_outliers, quantize=quantize, matmul=matmul)
    return out.to(x.dtype)


def _per_tensor(x32: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One absmax scale for the whole tensor: (codes int8, absmax as a (1,) float32 tensor)."""
    stat = x32.abs().amax().reshape(1)
    codes = _row_codes(x32.reshape(1, -1), stat).reshape(x32.shape)
    return codes, stat


def absmax_int8_matmul(x: torch.Tensor, w: torch.Tensor, granularity: str = "tensor") -> torch.Tensor:
    """The naive baselines of the paper's Table 1: absmax int8 without an outlier path.

    Args:
        x: (M, K) float activations. w: (N, K) float weight (nn.Linear layout).
        granularity: ``"tensor"``: one absmax scale for all of x and one for all of w;
            ``"vector"``: one per row of x and one per output channel of w (= ``llm_int8_matmul`` with
            threshold 0).

    Returns:
        (M, N) tensor of x's dtype.
    """
    _check_x_w(x, w)
    if granularity == "vector":
        return llm_int8_matmul(x, w, threshold=0.0)
    if granularity != "tensor":
        raise ValueError(f"granularity must be 'tensor' or 'vector', got {granularity!r}")
    codes_x, sx = _per_tensor(x.float())
    codes_w, sw = _per_tensor(w.float())
    return _matmul_dequant(codes_x, sx.expand(x.shape[0]), codes_w, sw.expand(w.shape[0])).to(x.dtype)


# ----------------------------------------------------------------------------------------------
# a drop-in module


class Int8Linear(nn.Module):
    """A drop-in replacement for ``nn.Linear`` that computes with int8 (LLM.int8(), W8A8 or a naive baseline).

    The weight's int8 codes and statistics are computed once; activations are quantized on every call. Build it
    with :meth:`from_linear`.

    Attributes:
        mode: ``"llm.int8"`` (vector-wise int8 + float outlier columns), ``"vectorwise"`` (threshold 0: one
            dynamic scale per token, one per output channel), ``"tensor"`` (per-tensor absmax for activations,
            computed on every call, and for the weight) or ``"static"`` (one fixed activation scale
            ``act_absmax / 127``, values beyond ``act_absmax`` clipped; one scale per output channel).
        act_absmax: the calibrated ``max |x|`` of ``"static"`` (None in the other modes).
        threshold: the outlier threshold of ``"llm.int8"``.
        outlier_weights: ``"fp"`` (outlier columns use the original weight, the paper) or ``"int8"``
            (they use the dequantized int8 weight, as bitsandbytes' Linear8bitLt does).
        outlier_cols_seen / cols_seen: running totals over calls of outlier columns and of all
            columns, for the share of features that went through floating point.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, *, mode: str = "llm.int8",
                 threshold: float = DEFAULT_THRESHOLD, outlier_weights: str = "fp", act_absmax: float | None = None):
        super().__init__()
        _check_matrix(weight, "weight")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.act_absmax = _check_act_absmax(act_absmax) if mode == "static" else None
        if outlier_weights not in OUTLIER_WEIGHTS:
            raise ValueError(f"outlier_weights must be one of {OUTLIER_WEIGHTS}, got {outlier_weights!r}")
        if bias is not None:
            check_tensor(bias, "bias", dtypes=FLOAT_DTYPES, ndim=1)
            if bias.shape[0] != weight.shape[0]:
                raise ValueError(f"bias must have {weight.shape[0]} entries (out_features), got {bias.shape[0]}")
        _check_inner_dim(weight.shape[1], "weight")
        self.mode = mode
        self.threshold = _check_threshold(threshold) if mode == "llm.int8" else 0.0
        self.outlier_weights = outlier_weights
        self.out_features, self.in_features = weight.shape
        w = weight.detach()
        if mode == "tensor":
            codes, stats = _per_tensor(w.float())
        else:
            codes, stats = vectorwise_quant(w)
        self.register_buffer("weight_codes", codes)
        self.register_buffer("weight_stats", stats)
        keep_fp = mode == "llm.int8" and outlier_weights == "fp"
        self.register_buffer("weight_fp", w.clone() if keep_fp else None)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.outlier_cols_seen = 0
        self.cols_seen = 0

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, mode: str = "llm.int8", threshold: float = DEFAULT_THRESHOLD,
                    outlier_weights: str = "fp", act_absmax: float | None = None) -> Int8Linear:
        """An ``Int8Linear`` computing what ``linear`` computes, in int8."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        return cls(linear.weight, linear.bias, mode=mode, threshold=threshold, outlier_weights=outlier_weights,
                   act_absmax=act_absmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", dtypes=FLOAT_DTYPES, allow_empty=True)
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have in_features={self.in_features} as its last dimension, got shape {tuple(x.shape)}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if x2.shape[0] == 0:
            out = x2.new_zeros((0, self.out_features))
        elif self.mode in ("tensor", "static"):
            if self.mode == "tensor":
                codes_x, sx = _per_tensor(x2.float())
            else:  # the calibrated range: values beyond it are clipped, then the same codes as every row's
                sx = torch.tensor([self.act_absmax], dtype=torch.float32, device=x2.device)
                x32 = x2.float().clamp(-self.act_absmax, self.act_absmax)
                codes_x = _row_codes(x32, sx.expand(x2.shape[0]))
            out = _matmul_dequant(codes_x, sx.expand(x2.shape[0]), self.weight_codes,
                                  self.weight_stats.expand(self.out_features))
        else:
            w = self.weight_fp
            out, cols = _mixed(x2, w, self.weight_codes, self.weight_stats, self.threshold, self.outlier_weights)
            self.outlier_cols_seen += int(cols.numel())
            self.cols_seen += self.in_features
        if self.bias is not None:
            out = out + self.bias.float()
        return out.to(x.dtype).reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        extra = f", threshold={self.threshold}, outlier_weights={self.outlier_weights!r}" if self.mode == "llm.int8" else ""
        if self.mode == "static":
            extra = f", act_absmax={self.act_absmax:.4g}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"mode={self.mode!r}{extra}")


def quantize_model_int8(model: nn.Module, mode: str = "llm.int8", threshold: float = DEFAULT_THRESHOLD,
                        skip: Sequence[str] = ("lm_head",), outlier_weights: str = "fp",
                        act_absmax: Mapping[str, torch.Tensor | float] | None = None) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (except names in ``skip``) by an :class:`Int8Linear`, in place.

    Args:
        model: any module (a transformers model, a block, ...).
        mode, threshold, outlier_weights: passed to :meth:`Int8Linear.from_linear`.
        skip: module names (or name suffixes) to keep in floating point; default the LM head.
        act_absmax: for ``mode="static"``: ``{linear name: calibrated max |x| of its input}``, a number or a
            per-channel tensor (its largest value is the layer's static range), for every replaced Linear
            (``course_lib.smoothquant.activation_absmax`` records them); ignored by the other modes.

    Returns:
        The same model object, with its Linear layers replaced.
    """
    check_module(model, "model")
    from .lm_quant import linear_layers

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    threshold = _check_threshold(threshold)
    layers = linear_layers(model, skip)
    ranges = dict.fromkeys(layers)
    if mode == "static":
        if not isinstance(act_absmax, Mapping):
            raise TypeError(f"act_absmax must be a dict {{linear name: max |x|}} for mode 'static', "
                            f"got {type(act_absmax).__name__}")
        missing = [name for name in layers if name not in act_absmax]
        if missing:
            raise ValueError(f"act_absmax has no calibrated range for {missing[:3]} ({len(missing)} layers)")
        for name in layers:
            a = act_absmax[name]
            ranges[name] = float(a.max()) if isinstance(a, torch.Tensor) and a.numel() else a
    for name, linear in layers.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, Int8Linear.from_linear(linear, mode=mode, threshold=threshold,
                                                     outlier_weights=outlier_weights, act_absmax=ranges[name]))
    return model


def int8_layers(model: nn.Module) -> dict[str, Int8Linear]:
    """The :class:`Int8Linear` submodules of ``model`` by name.

    Args:
        model: any module, typically after ``Int8Linear`` replaced its Linears.

    Returns:
        dict[str, Int8Linear]: qualified name -> layer, in module order.
    """
    check_module(model, "model")
    return {name: m for name, m in model.named_modules() if isinstance(m, Int8Linear)}


# ----------------------------------------------------------------------------------------------
# growing outlier features in a Llama-style model, without changing its function


@torch.no_grad()
def inject_outlier_features(model: nn.Module, dims: Sequence[int], scale: float) -> nn.Module:
    """Give a Llama-style model large activation columns, keeping its floating-point function, in place.

    In every decoder block, the RMSNorm weights ``input_layernorm`` and ``post_attention_layernorm``
    are multiplied by ``scale`` in the hidden dimensions ``dims``, and the input columns ``dims`` of the
    Linear layers they feed (``q_proj``, ``k_proj``, ``v_proj``; ``gate_proj``, ``up_proj``) are divided by
    ``scale``. ``W (g * x) = (W / s) (s * g * x)`` column by column, so the model computes the same function
    (up to float rounding) while the inputs of those five Linear layers get a few columns ``scale`` times
    larger than the rest: the systematic outlier features that the LLM.int8() paper finds in large models.

    Args:
        model: a transformers Llama/Mistral/Qwen-style causal LM (blocks at ``model.layers``).
        dims: distinct hidden dimensions, each in ``[0, hidden_size)``.
        scale: a finite float > 0.

    Returns:
        The same model object.
    """
    from .lm_quant import decoder_blocks

    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    blocks = decoder_blocks(model)
    hidden = blocks[0].input_layernorm.weight.shape[0]
    dims = list(dims)
    if not dims or len(set(dims)) != len(dims) or any(isinstance(d, bool) or not isinstance(d, int) or not 0 <= d < hidden
                                                      for d in dims):
        raise ValueError(f"dims must be distinct ints in [0, {hidden}), got {dims}")
    idx = torch.tensor(dims)
    for block in blocks:
        for norm, linears in ((block.input_layernorm, (block.self_attn.q_proj, block.self_attn.k_proj, block.self_attn.v_proj)),
                              (block.post_attention_layernorm, (block.mlp.gate_proj, block.mlp.up_proj))):
            norm.weight[idx.to(norm.weight.device)] *= scale
            for linear in linears:
                linear.weight[:, idx.to(linear.weight.device)] /= scale
    return model


@torch.no_grad()
def linear_inputs(model: nn.Module, inputs: dict | torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The inputs that the named Linear layers (or ``Int8Linear``) see in one forward pass.

    Args:
        model: a model whose ``model(**inputs)`` (or ``model(inputs)`` for a tensor of token ids) runs a forward pass.
        inputs: token ids ``[batch, seq]`` or a dict of model inputs (e.g. a tokenizer's output).
        names: qualified module names, e.g. ``"model.layers.1.self_attn.q_proj"``.

    Returns:
        ``{name: (tokens, in_features) float tensor}`` on the model's device (batch and sequence flattened;
        with a padded batch the padding positions are included).
    """
    check_module(model, "model")
    captured: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name in names:
            module = model.get_submodule(name)
            handles.append(module.register_forward_pre_hook(
                lambda _m, args, _name=name: captured.__setitem__(_name, args[0].detach().reshape(-1, args[0].shape[-1]))))
        if isinstance(inputs, dict):
            model(**inputs)
        else:
            model(inputs)
    finally:
        for h in handles:
            h.remove()
    return captured
