"""4-bit inference: a linear layer that keeps its weight in NF4 and multiplies through the course's kernels.

``NF4Linear`` holds the packed NF4 codes and the float32 absmax of one weight (bitsandbytes' layout, as
``course_lib.nf4.quantize_nf4`` makes it) as buffers, so ``.to(device)``, ``state_dict()`` and
``load_state_dict()`` work as for any module. Its forward pass calls the public functions of
``course_lib.kernels``:

- up to ``GEMV_MAX_ROWS`` rows (tokens times batch: decoding), ``gemv_nf4``, the fused W4A16 GEMV, which
  reads each 4-bit weight once;
- more rows (a prompt's prefill), ``dequantize_nf4`` to the input's dtype and one matrix product, where the
  product's arithmetic, not the weight's bytes, sets the time.

Both are torch custom ops: the layer runs inside CUDA graphs and ``torch.compile`` and makes no device-to-host
copy on its forward path. ``replace_linears_nf4`` swaps a model's ``nn.Linear`` layers for it, leaving the
ones a skip list names (by default ``lm_head``, as transformers does for bitsandbytes' ``Linear4bit``).

``course_lib.nf4.NF4Linear`` is notebook 05's reference for the same storage (it also double-quantizes the
absmax): it dequantizes the whole weight on every call. This one is the inference layer of notebook 13.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..validation import FLOAT_DTYPES, check_int, check_module, check_tensor
from .build import _pick
from .ops import dequantize_nf4, gemv_nf4

__all__ = ["NF4Linear", "replace_linears_nf4", "GEMV_MAX_ROWS"]

#: Rows (batch x tokens) up to which the forward pass runs the GEMV; above, dequantize + matrix product.
GEMV_MAX_ROWS = 16
#: The compute dtypes of ``dequantize_nf4`` (a float64 input is computed in float32 and returned in float64).
_COMPUTE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_blocksize(blocksize) -> None:
    check_int(blocksize, "blocksize", low=2)
    if blocksize % 2:
        raise ValueError(f"blocksize must be even (two codes per byte), got {blocksize}")


class NF4Linear(torch.nn.Module):
    """``y = x @ W.T + b`` with ``W`` stored as NF4 codes (4 bits) and one float32 absmax per block.

    Buffers: ``packed`` uint8 ``[ceil(out * in / 2)]`` (the flattened weight, two codes per byte, high nibble
    first), ``absmax`` float32 ``[ceil(out * in / blocksize)]``, ``bias`` ``[out]`` or None. ``model.half()``
    or ``.to(torch.bfloat16)`` casts the bias and leaves ``absmax`` in float32, as the kernels need it.

    Args:
        in_features: K, the input's last dimension (positive).
        out_features: N, the output's last dimension (positive).
        bias: whether the layer adds a bias.
        blocksize: weights per absmax (even, >= 2; 64 as in bitsandbytes and QLoRA). The CUDA GEMV needs
            ``in_features % 32 == 0`` and ``blocksize % 32 == 0``; other shapes dequantize and multiply.
        dtype: the bias's dtype.
        device: where the buffers live.

    The constructor makes a zero weight, to be filled by ``load_state_dict``; ``from_linear`` quantizes a
    trained layer.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, blocksize: int = 64,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        super().__init__()
        check_int(in_features, "in_features", low=1)
        check_int(out_features, "out_features", low=1)
        _check_blocksize(blocksize)
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be True or False, got {type(bias).__name__}")
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"dtype must be a float dtype, got {dtype}")
        self.in_features, self.out_features, self.blocksize = in_features, out_features, blocksize
        n = in_features * out_features
        self.register_buffer("packed", torch.zeros((n + 1) // 2, dtype=torch.uint8, device=device))
        self.register_buffer("absmax", torch.zeros(-(-n // blocksize), dtype=torch.float32, device=device))
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype, device=device) if bias else None)

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, blocksize: int = 64) -> NF4Linear:
        """Quantize a linear layer's weight to NF4 (``course_lib.nf4.quantize_nf4``, bitsandbytes' codes).

        Args:
            linear: a ``torch.nn.Linear`` with a finite weight, on any device.
            blocksize: weights per absmax (even, >= 2).

        Returns:
            An ``NF4Linear`` on the layer's device; its bias is a copy of the layer's, in the layer's dtype.
        """
        from ..nf4 import quantize_nf4

        if not isinstance(linear, torch.nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        _check_blocksize(blocksize)
        weight = linear.weight.detach()
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, blocksize=blocksize,
                    dtype=weight.dtype, device=weight.device)
        packed, absmax = quantize_nf4(weight, blocksize)
        layer.packed.copy_(packed)
        layer.absmax.copy_(absmax)
        if linear.bias is not None:
            layer.bias.copy_(linear.bias.detach())
        return layer

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight ``[out_features, in_features]`` in ``dtype`` (float32, float16 or bfloat16)."""
        return dequantize_nf4(self.packed, self.absmax, (self.out_features, self.in_features), self.blocksize,
                              dtype=dtype)

    def _gemv_handles(self, x: torch.Tensor) -> bool:
        """Whether ``gemv_nf4`` runs a compiled kernel for these rows (else it would take the reference path)."""
        if x.device.type == "cuda":
            supported = (x.dtype in (torch.float16, torch.bfloat16) and self.in_features % 32 == 0
                         and self.blocksize % 32 == 0)
        else:
            supported = x.device.type == "cpu"
        return supported and _pick("auto", x.device, supported) != "torch"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T + bias`` for ``x [..., in_features]`` (float16, bfloat16, float32 or float64).

        Returns:
            ``[..., out_features]`` in ``x``'s dtype.
        """
        check_tensor(x, "x", dtypes=FLOAT_DTYPES, allow_empty=True, allow_nonfinite=True)
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have in_features = {self.in_features} values in its last dimension, "
                             f"got shape {tuple(x.shape)}")
        rows = x.reshape(-1, self.in_features)
        if rows.shape[0] == 0:
            y = rows.new_zeros((0, self.out_features))
        elif rows.shape[0] <= GEMV_MAX_ROWS and self._gemv_handles(rows):
            y = gemv_nf4(rows, self.packed, self.absmax, self.out_features, self.blocksize)
        else:
            compute = x.dtype if x.dtype in _COMPUTE_DTYPES else torch.float32
            y = torch.nn.functional.linear(rows.to(compute), self.dequantized_weight(compute)).to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*x.shape[:-1], self.out_features)

    def _apply(self, fn, recurse: bool = True):
        # A dtype conversion (model.half()) must not touch the absmax: the kernels read float32 scales.
        absmax = self.absmax
        super()._apply(fn, recurse)
        self.absmax = absmax.to(self.packed.device)
        return self

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"blocksize={self.blocksize}")


def _skipped(name: str, skip: Sequence[str]) -> bool:
    """Whether a skip entry names the module ``name`` or one of its parents, as whole dotted components
    (``"lm_head"`` matches ``lm_head`` and ``model.lm_head``; ``"layers.0"`` matches ``model.layers.0.mlp.up``,
    not ``model.layers.10.mlp.up``)."""
    parts = name.split(".")
    for entry in skip:
        sub = entry.split(".")
        if any(parts[i:i + len(sub)] == sub for i in range(len(parts) - len(sub) + 1)):
            return True
    return False


def replace_linears_nf4(model: torch.nn.Module, blocksize: int = 64,
                        skip: Sequence[str] = ("lm_head",)) -> torch.nn.Module:
    """Replace (in place) every ``torch.nn.Linear`` of ``model`` by ``NF4Linear.from_linear``; returns the model.

    Only layers of type ``torch.nn.Linear`` itself are replaced: subclasses (bitsandbytes' ``Linear4bit``,
    ``MultiheadAttention``'s ``out_proj``, whose weight its parent reads directly) stay. A layer shared by
    several parents gets one ``NF4Linear``, shared the same way.

    Args:
        model: any module (a transformers causal LM, an ``nn.Sequential``, ...).
        blocksize: weights per absmax (even, >= 2).
        skip: module names to keep in floating point (transformers' ``modules_to_not_convert``): an entry
            matches a module whose dotted name contains it as whole components (``"lm_head"`` keeps
            ``lm_head``; ``"layers.0"`` keeps every linear layer of the first decoder layer).

    Returns:
        ``model`` itself.
    """
    check_module(model, "model")
    _check_blocksize(blocksize)
    if isinstance(skip, str) or not isinstance(skip, Sequence) or not all(isinstance(s, str) and s for s in skip):
        raise TypeError(f"skip must be a list or tuple of module names (non-empty str), got {skip!r}")
    done: dict[int, NF4Linear] = {}
    for name, module in list(model.named_modules(remove_duplicate=False)):
        for child_name, child in list(module._modules.items()):  # named_children() hides a repeated child
            full = f"{name}.{child_name}" if name else child_name
            if type(child) is not torch.nn.Linear or _skipped(full, skip):
                continue
            if id(child) not in done:
                done[id(child)] = NF4Linear.from_linear(child, blocksize)
            setattr(module, child_name, done[id(child)])
    return model
