"""Argument checks shared by every course_lib function.

Each check raises TypeError (wrong kind of object) or ValueError (right kind, bad value)
with a message that names the argument and states the constraint, so that a learner who
passes bad input reads what to fix instead of getting a silently wrong tensor.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(
    x,
    name: str,
    *,
    dtypes: Iterable[torch.dtype] | None = None,
    ndim: int | Iterable[int] | None = None,
    allow_empty: bool = False,
    allow_nonfinite: bool = False,
) -> None:
    """Check that ``x`` is a tensor with an allowed dtype, rank, size and finite values.

    Args:
        x: the object to check.
        name: the argument's name, used in the error message.
        dtypes: allowed dtypes; None allows any.
        ndim: allowed number of dimensions (an int or several); None allows any.
        allow_empty: whether a tensor with zero elements is accepted.
        allow_nonfinite: whether NaN and +-Inf are accepted (only checked for float dtypes).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if dtypes is not None:
        dtypes = tuple(dtypes)
        if x.dtype not in dtypes:
            allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
            raise TypeError(f"{name} must have dtype in ({allowed}), got {str(x.dtype).replace('torch.', '')}")
    if ndim is not None:
        allowed_ndim = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.dim() not in allowed_ndim:
            raise ValueError(f"{name} must have {' or '.join(map(str, allowed_ndim))} dimensions, got shape {tuple(x.shape)}")
    if not allow_empty and x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if not allow_nonfinite and x.is_floating_point() and x.numel() > 0:
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            n_nan = int(torch.isnan(x).sum())
            n_inf = int(bad.sum()) - n_nan
            raise ValueError(f"{name} must be finite, got {n_nan} NaN and {n_inf} Inf values")


def check_module(model, name: str = "model") -> None:
    """Check that ``model`` is a ``torch.nn.Module``."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")


def check_int(value, name: str, *, low: int | None = None, high: int | None = None) -> None:
    """Check that ``value`` is an int (not a bool) with ``low <= value <= high``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")


def check_bits(bits, name: str = "bits", *, low: int = 2, high: int = 16) -> None:
    """Check an integer bit width."""
    check_int(bits, name, low=low, high=high)


def check_divides(size: int, group: int, *, size_name: str, group_name: str) -> None:
    """Check that ``group`` is a positive int that divides ``size``."""
    check_int(group, group_name, low=1)
    if size % group != 0:
        raise ValueError(f"{group_name}={group} must divide {size_name}={size}")


def check_same_device(*named: tuple[str, torch.Tensor]) -> None:
    """Check that tensors live on one device: ``check_same_device(("x", x), ("scale", s))``."""
    devices = {str(t.device) for _, t in named}
    if len(devices) > 1:
        where = ", ".join(f"{n} on {t.device}" for n, t in named)
        raise ValueError(f"tensors must be on the same device, got {where}")
