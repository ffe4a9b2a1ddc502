"""Notebook 00: the three measurements every later notebook uses to judge a quantizer."""

from __future__ import annotations

import math

import torch
from torch import nn

from .validation import check_tensor


def relative_error(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Relative L2 error ||x - x_hat|| / ||x||.

    Args:
        x: the original tensor (any shape, floating point).
        x_hat: its approximation, same shape as ``x``.

    Returns:
        float: 0.0 when the tensors are equal (also when both are zero), ``inf`` when ``x`` is all
        zero but ``x_hat`` is not.
    """
    check_tensor(x, "x", allow_empty=False)
    check_tensor(x_hat, "x_hat", allow_empty=False)
    if x.shape != x_hat.shape:
        raise ValueError(f"x_hat must have the shape of x {tuple(x.shape)}, got {tuple(x_hat.shape)}")
    err = torch.linalg.vector_norm((x.double() - x_hat.double()).flatten()).item()
    ref = torch.linalg.vector_norm(x.double().flatten()).item()
    if ref == 0.0:
        return 0.0 if err == 0.0 else math.inf
    return err / ref


def sqnr_db(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in decibels: 10 log10(sum x^2 / sum (x - x_hat)^2).

    Args:
        x: the original signal (floating point, not all zero).
        x_hat: its quantized approximation, same shape.

    Returns:
        float: the SQNR in dB, ``inf`` when ``x_hat`` equals ``x`` exactly.
    """
    check_tensor(x, "x")
    check_tensor(x_hat, "x_hat")
    if x.shape != x_hat.shape:
        raise ValueError(f"x_hat must have the shape of x {tuple(x.shape)}, got {tuple(x_hat.shape)}")
    signal = x.double().pow(2).sum().item()
    if signal == 0.0:
        raise ValueError("x must not be all zero: the SQNR of a zero signal is undefined")
    noise = (x.double() - x_hat.double()).pow(2).sum().item()
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of a model, each shared (tied) parameter counted once.

    Args:
        model: any ``torch.nn.Module``.
        trainable_only: count only parameters with ``requires_grad=True``.

    Returns:
        int: the number of distinct parameter elements.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    # model.parameters() already yields a tied parameter once.
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
