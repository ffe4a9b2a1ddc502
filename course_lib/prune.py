"""Notebook 12: pruning. Masks (magnitude, N:M, Wanda), structured channel pruning, sensitivity, fine-tuning.

Conventions: a **mask** is a ``bool`` tensor of the weight's shape, ``True`` where the weight is
**kept**; a weight ``[out_features, in_features]`` is an ``nn.Linear`` weight; ``sparsity`` is the
fraction of weights set to zero, ``0 <= sparsity < 1``.

- :func:`magnitude_mask` / :func:`global_magnitude_masks`: unstructured magnitude pruning, per layer
  or with one threshold over several layers; identical to ``torch.nn.utils.prune.l1_unstructured`` /
  ``global_unstructured`` (same count ``round(sparsity * n)``, same ``torch.topk`` choice).
- :func:`nm_mask`: N:M semi-structured (2:4 is what NVIDIA's sparse tensor cores run).
- :func:`wanda_scores` / :func:`wanda_mask`: Wanda (Sun et al. 2023): score ``|W_ij| * ||X_j||_2``,
  compared within each output row.
- :func:`sparsegpt_prune`: SparseGPT (Frantar and Alistarh 2023, arXiv 2301.00774) on one layer: the mask
  chosen block by block with the OBS saliency, the pruned weights' error fed back into the remaining columns
  with GPTQ's Cholesky factor of ``H^-1`` (``course_lib.gptq``, notebook 07).
- :func:`prune_channels`: structured pruning of a Linear pair, returns smaller layers.
- :func:`input_norms`, :func:`prune_model`: magnitude, Wanda and SparseGPT on a whole causal LM, block by block.
- :func:`sensitivity_scan`, :class:`DigitsMLP`, :func:`train_classifier`: per-layer sensitivity and
  fine-tuning after pruning (masks kept fixed).
- :func:`cubic_sparsity`, :func:`gradual_targets`: the gradual pruning schedule of Zhu and Gupta (2017, arXiv
  1710.01878). :func:`distill_with_masks`, :func:`prune_and_distill`: a pruned causal LM fine-tuned with fixed
  masks by distillation from the dense model (``course_lib.distill``'s loss and loop, notebook 11), after one-shot
  or gradual pruning. The course's choice for a gradual N:M run: the patterns ``(m-1):m, ..., n:m`` in turn
  (2:4: 3:4, then 2:4), since a fraction of the cubic schedule is not an N:M pattern.
- :func:`sparse_bits_per_weight`: storage cost of sparse formats, for pruning plus quantization.

SparseGPT follows IST-DASLab/sparsegpt ``sparsegpt.py`` (``fasterprune``): the Hessian, dampening and
``U`` (upper Cholesky factor of ``H^-1``) are GPTQ's (:func:`course_lib.gptq.hessian_inverse_cholesky`);
columns are processed in blocks of ``blocksize`` (128); an unstructured block's mask is chosen when the
block starts, over all its rows and columns at once, from ``W^2 / diag(U)^2`` of the block's up-to-date
weights; an N:M group's mask when the group's first column comes up, from the same saliency; every column
is then zeroed where pruned and its error ``(w - q) / U_jj`` spread over the later columns, as in GPTQ.
Two documented differences from the original: (1) the original prunes every entry whose saliency is
``<=`` the ``k``-th smallest, ``k = int(sparsity * block size)``, so ``k + 1`` entries (more on ties);
here exactly ``k``, the first ``k`` of a stable ascending sort, so a block of an even size at 50% loses
exactly half. (2) N:M ties keep the earlier weight (as :func:`nm_mask`), where the original leaves them
to ``torch.topk``; N:M here counts ``n`` **kept** of every ``m`` (as :func:`nm_mask`), where the
original's ``prunen`` counts the pruned (the same thing for 2:4).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from .gptq import _check_hessian, _check_percdamp, hessian_inverse_cholesky
from .training import train_epochs
from .validation import FLOAT_DTYPES, check_int, check_module, check_tensor

__all__ = [
    "check_sparsity",
    "sparsity_of",
    "magnitude_mask",
    "global_magnitude_masks",
    "nm_mask",
    "wanda_scores",
    "wanda_mask",
    "sparsegpt_prune",
    "channel_scores",
    "prune_channels",
    "apply_masks",
    "input_norms",
    "prune_model",
    "sensitivity_scan",
    "DigitsMLP",
    "train_classifier",
    "cubic_sparsity",
    "gradual_targets",
    "distill_with_masks",
    "prune_and_distill",
    "sparse_bits_per_weight",
]


# ----------------------------------------------------------------------------------------------
# checks
def check_sparsity(sparsity, name: str = "sparsity") -> float:
    """Check that ``sparsity`` is a real number in ``[0, 1)`` and return it as a float.

    Args:
        sparsity: the value to check.
        name: the argument's name, for the error message.

    Returns:
        float: ``sparsity``.
    """
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise TypeError(f"{name} must be a float in [0, 1), got {type(sparsity).__name__}")
    if not math.isfinite(float(sparsity)) or not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"{name} must be in [0, 1) (the fraction of weights set to zero), got {sparsity}")
    return float(sparsity)


def _check_weight(w, name: str = "w", ndim=2) -> None:
    check_tensor(w, name, dtypes=FLOAT_DTYPES, ndim=ndim)


def sparsity_of(x: torch.Tensor) -> float:
    """Fraction of exact zeros in ``x`` (a weight or a mask: ``False`` counts as zero).

    Args:
        x: any tensor.

    Returns:
        float: zeros / numel, in [0, 1].
    """
    check_tensor(x, "x")
    return 1.0 - float(torch.count_nonzero(x)) / x.numel()


# ----------------------------------------------------------------------------------------------
# exercise 1: magnitude
def magnitude_mask(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Unstructured magnitude pruning of one tensor: keep all but the ``round(sparsity * w.numel())`` smallest ``|w|``.

    Identical to ``torch.nn.utils.prune.l1_unstructured(module, "weight", amount=sparsity)``'s mask: the
    pruned weights are ``torch.topk(w.abs().flatten(), k, largest=False).indices``. Among weights of equal
    magnitude at the threshold, which ones go is whatever ``torch.topk`` picks (not specified by PyTorch);
    the number pruned is always exactly ``k``. ``round`` is Python's (half to even), as in PyTorch.

    Args:
        w: float tensor of any shape (usually ``[out_features, in_features]``), finite.
        sparsity: fraction to prune, in ``[0, 1)``.

    Returns:
        bool tensor of ``w``'s shape and device, ``True`` = kept.
    """
    _check_weight(w, ndim=None)
    sparsity = check_sparsity(sparsity)
    k = round(sparsity * w.numel())
    mask = torch.ones(w.numel(), dtype=torch.bool, device=w.device)
    if k > 0:
        mask[torch.topk(w.detach().abs().flatten(), k, largest=False).indices] = False
    return mask.reshape(w.shape)


def global_magnitude_masks(weights: Sequence[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    """Magnitude pruning with one threshold for several tensors (global unstructured pruning).

    Identical to ``torch.nn.utils.prune.global_unstructured(params, prune.L1Unstructured, amount=sparsity)``:
    the tensors are flattened and concatenated in order, and ``round(sparsity * total)`` smallest ``|w|``
    are pruned. Layers with small weights lose more than ``sparsity``, layers with large ones less.

    Args:
        weights: non-empty sequence of float tensors (any shapes, one device).
        sparsity: overall fraction to prune, in ``[0, 1)``.

    Returns:
        list of bool masks, one per tensor, in order.
    """
    if isinstance(weights, torch.Tensor) or not isinstance(weights, Sequence) or len(weights) == 0:
        raise TypeError("weights must be a non-empty list or tuple of tensors")
    for i, w in enumerate(weights):
        _check_weight(w, f"weights[{i}]", ndim=None)
    flat = torch.cat([w.detach().abs().flatten().to(torch.float32 if w.dtype != torch.float64 else torch.float64)
                      for w in weights])
    mask = magnitude_mask(flat, sparsity)
    out, start = [], 0
    for w in weights:
        out.append(mask[start:start + w.numel()].reshape(w.shape))
        start += w.numel()
    return out


# ----------------------------------------------------------------------------------------------
# exercise 2: N:M
def nm_mask(w: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """N:M semi-structured mask: in every group of ``m`` consecutive weights along the input dimension, keep the
    ``n`` largest ``|w|`` (2:4 keeps 2 of every 4: 50% sparsity in the pattern sparse tensor cores run).

    Ties: among equal magnitudes the earlier weight in the group is kept (a stable descending sort).

    Args:
        w: float ``[out_features, in_features]`` (or any ``[..., in_features]``), ``in_features % m == 0``.
            Pass Wanda scores instead of weights to get Wanda's N:M mask (scores are non-negative).
        n: weights kept per group, ``1 <= n <= m``.
        m: group size, ``m >= 1``.

    Returns:
        bool tensor of ``w``'s shape, ``True`` = kept; exactly ``n`` per group.
    """
    _check_weight(w, ndim=range(1, 9))
    check_int(m, "m", low=1)
    check_int(n, "n", low=1)
    if n > m:
        raise ValueError(f"n must be <= m (keep n of every m weights), got n={n}, m={m}")
    if w.shape[-1] % m != 0:
        raise ValueError(f"m={m} must divide in_features (the last dimension), got {w.shape[-1]}")
    groups = w.detach().abs().reshape(-1, m)
    order = torch.sort(groups, dim=1, descending=True, stable=True).indices
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(1, order[:, :n], True)
    return mask.reshape(w.shape)


# ----------------------------------------------------------------------------------------------
# exercise 3: Wanda
def wanda_scores(w: torch.Tensor, act_norm: torch.Tensor) -> torch.Tensor:
    """Wanda's importance ``|W_ij| * ||X_j||_2`` (float32; float64 for float64 inputs).

    Args:
        w: float ``[out_features, in_features]``.
        act_norm: float ``[in_features]``, the L2 norm of each input feature over the calibration tokens (>= 0).

    Returns:
        scores of ``w``'s shape.
    """
    _check_weight(w)
    check_tensor(act_norm, "act_norm", dtypes=FLOAT_DTYPES, ndim=1)
    if act_norm.shape[0] != w.shape[1]:
        raise ValueError(f"act_norm must have in_features={w.shape[1]} entries, got {act_norm.shape[0]}")
    if bool((act_norm < 0).any()):
        raise ValueError("act_norm must be >= 0 (it is a norm)")
    dtype = torch.float64 if torch.float64 in (w.dtype, act_norm.dtype) else torch.float32
    return w.detach().to(dtype).abs() * act_norm.detach().to(w.device, dtype)[None, :]


def wanda_mask(w: torch.Tensor, act_norm: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Wanda mask: in **each output row**, prune the ``int(sparsity * in_features)`` lowest ``|W_ij| * ||X_j||``.

    As in Wanda's code (``prune_wanda``): a stable ascending sort of each row's scores, the first
    ``int(in_features * sparsity)`` indices pruned (so among equal scores the earlier weight goes first).
    With all norms equal it is per-row magnitude pruning.

    Args:
        w: float ``[out_features, in_features]``.
        act_norm: float ``[in_features]`` (>= 0).
        sparsity: fraction pruned in every row, in ``[0, 1)``.

    Returns:
        bool ``[out_features, in_features]``, ``True`` = kept.
    """
    scores = wanda_scores(w, act_norm)
    sparsity = check_sparsity(sparsity)
    k = int(w.shape[1] * sparsity)
    mask = torch.ones_like(scores, dtype=torch.bool)
    if k > 0:
        idx = torch.sort(scores, dim=1, stable=True).indices[:, :k]
        mask.scatter_(1, idx, False)
    return mask


# ----------------------------------------------------------------------------------------------
# exercise 4: SparseGPT
def _check_nm(nm, in_features: int) -> tuple[int, int] | None:
    if nm is None:
        return None
    if not (isinstance(nm, tuple) and len(nm) == 2):
        raise TypeError(f"nm must be None or a tuple (n, m), e.g. (2, 4), got {nm!r}")
    n, m = nm
    check_int(m, "nm's m", low=1)
    check_int(n, "nm's n", low=1)
    if n > m:
        raise ValueError(f"nm=(n, m) needs n <= m (keep n of every m weights), got nm={nm}")
    if in_features % m != 0:
        raise ValueError(f"nm's m={m} must divide in_features (W.shape[1]) = {in_features}")
    return n, m


def _first_k_smallest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the first ``k`` positions of a stable ascending sort of the 1-D ``scores`` (finite, ``k >= 1``):
    everything below the ``k``-th smallest value, then the earliest of the values equal to it. The same set as
    ``torch.sort(scores, stable=True).indices[:k]``, in O(n) with ``torch.kthvalue`` (a stable sort of a block of
    128 x 384 scores costs ten times more)."""
    threshold = torch.kthvalue(scores, k).values
    below = scores < threshold
    ties = scores == threshold
    return below | (ties & (torch.cumsum(ties, 0) <= k - int(below.sum())))


def sparsegpt_prune(W: torch.Tensor, H: torch.Tensor, sparsity: float = 0.5, nm: tuple[int, int] | None = None,
                    blocksize: int = 128, percdamp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT on one Linear layer: prune ``W`` and update the kept weights so that ``X W^T`` changes little.

    With ``U`` the upper Cholesky factor of ``(H + damp I)^-1`` (:func:`course_lib.gptq.hessian_inverse_cholesky`,
    notebook 07), the columns are processed in blocks of ``blocksize``, left to right:

    - **mask.** Unstructured: when a block starts, the OBS saliency ``W_ij^2 / U_jj^2`` of its up-to-date
      weights (``U_jj^2 = [H_F^-1]_jj``, ``F`` the columns ``j, j+1, ...`` not yet processed) ranks all entries
      of the block together; the ``int(sparsity * rows * block_columns)`` lowest are pruned (stable ascending
      sort of the block flattened row by row: ties prune the earlier entry). N:M: when the first column of a
      group of ``m`` comes up, each row keeps the ``n`` of highest saliency in the group (ties keep the earlier);
    - **error feedback,** as GPTQ's: column ``j`` becomes ``q`` (``w`` with its pruned entries set to exactly 0),
      ``err = (w - q) / U_jj``, and ``W[:, j:] -= err (outer) U[j, j:]`` (inside the block at once, for the
      later blocks in one ``Err @ U[block, later]`` per block: the same result up to rounding).

    Each step is the Optimal Brain Surgeon update of the pruned weights with the columns not yet processed free.
    Columns of dead inputs (``H_jj = 0``) are zeroed first (their weights never reach the output), as in GPTQ.

    Args:
        W: float ``[out_features, in_features]``, finite.
        H: its Hessian ``2 X^T X / n`` ``[in_features, in_features]`` (:func:`course_lib.gptq.hessian_from_inputs`),
            on ``W``'s device.
        sparsity: fraction pruned in every block, in ``[0, 1)``; ignored when ``nm`` is given (``1 - n/m``).
        nm: ``(n, m)`` to keep ``n`` of every ``m`` consecutive weights of a row (``(2, 4)``), or None for
            unstructured; ``m`` must divide ``in_features`` and ``blocksize``.
        blocksize: columns per block, ``>= 1`` (SparseGPT: 128); the unstructured mask depends on it.
        percdamp: dampening as a fraction of ``mean(diag H)`` (0.01).

    Returns:
        ``(weight, mask)``: the pruned and updated weight in ``W``'s dtype (exactly 0 where pruned), and the
        bool mask ``[out_features, in_features]``, ``True`` = kept.
    """
    _check_weight(W, "W")
    n_in = W.shape[1]
    _check_hessian(H, n_in)
    if H.device != W.device:
        raise ValueError(f"H is on {H.device} but W is on {W.device}: move them to one device")
    if nm is None:
        sparsity = check_sparsity(sparsity)
    nm = _check_nm(nm, n_in)
    check_int(blocksize, "blocksize", low=1)
    if nm is not None and blocksize % nm[1] != 0:
        raise ValueError(f"nm's m={nm[1]} must divide blocksize={blocksize} (an N:M group must not straddle blocks)")
    _check_percdamp(percdamp)
    dtype = torch.float64 if W.dtype == torch.float64 else torch.float32
    # computed on W transposed, Wt [in_features, out_features]: column j of W is the contiguous row Wt[j], so the
    # rank-1 update of the later columns is one addr_ on contiguous rows (on a 384 x 256 layer on a CPU, 40% less
    # time than the same loop on W's columns)
    Wt = W.detach().to(dtype).t().contiguous()
    H = H.detach().to(dtype)
    Wt[torch.diagonal(H) == 0] = 0.0
    U = hessian_inverse_cholesky(H, percdamp)
    keep_t = torch.ones_like(Wt, dtype=torch.bool)
    for i1 in range(0, n_in, blocksize):
        i2 = min(i1 + blocksize, n_in)
        W1, U1, keep1 = Wt[i1:i2], U[i1:i2, i1:i2], keep_t[i1:i2]  # views: updates land in Wt and keep_t
        d2 = torch.diagonal(U1)[:, None] ** 2
        Err1 = torch.zeros_like(W1)
        if nm is None:
            k = int(sparsity * W1.numel())
            if k > 0:  # the block ranked as W's [out, block] flattened row by row
                pruned = _first_k_smallest((W1 ** 2 / d2).t().flatten(), k)
                keep1.copy_(~pruned.view(W1.shape[1], W1.shape[0]).t())
        for i in range(i2 - i1):
            if nm is not None and i % nm[1] == 0:
                group = W1[i:i + nm[1]] ** 2 / d2[i:i + nm[1]]
                best = torch.sort(group, dim=0, descending=True, stable=True).indices[:nm[0]]
                keep1[i:i + nm[1]] = torch.zeros_like(group, dtype=torch.bool).scatter_(0, best, True)
            err = W1[i].masked_fill(keep1[i], 0.0) / U1[i, i]  # (w - q) / U_jj, q = w where kept, 0 where pruned
            W1[i:].addr_(U1[i, i:], err, alpha=-1)
            W1[i].masked_fill_(~keep1[i], 0.0)  # exactly 0 (the update leaves rounding residue)
            Err1[i] = err
        Wt[i2:].addmm_(U[i1:i2, i2:].t(), Err1, alpha=-1)
    return Wt.t().to(W.dtype).contiguous(), keep_t.t().contiguous()


# ----------------------------------------------------------------------------------------------
# exercise 5: structured channels
def channel_scores(fc1: nn.Linear, fc2: nn.Linear) -> torch.Tensor:
    """Importance of each hidden channel ``j`` between ``fc1`` and ``fc2``: ``||fc1.W[j, :]||_2 * ||fc2.W[:, j]||_2``.

    The product does not change when a channel's incoming weights are scaled by ``c > 0`` and its outgoing
    ones by ``1/c`` (which leaves a ReLU network's function unchanged), unlike either norm alone.

    Args:
        fc1: the Linear into the hidden layer (``[hidden, in]``).
        fc2: the Linear out of it (``[out, hidden]``).

    Returns:
        float32 ``[hidden]`` on the layers' device.
    """
    _check_pair(fc1, fc2)
    w1, w2 = fc1.weight.detach().float(), fc2.weight.detach().float()
    return w1.norm(dim=1) * w2.norm(dim=0)


def _check_pair(fc1, fc2) -> None:
    for name, lin in (("fc1", fc1), ("fc2", fc2)):
        if not isinstance(lin, nn.Linear):
            raise TypeError(f"{name} must be a torch.nn.Linear, got {type(lin).__name__}")
        check_tensor(lin.weight.detach(), f"{name}.weight", dtypes=FLOAT_DTYPES, ndim=2)
    if fc1.out_features != fc2.in_features:
        raise ValueError(f"fc1.out_features ({fc1.out_features}) must equal fc2.in_features ({fc2.in_features})")


def prune_channels(fc1: nn.Linear, fc2: nn.Linear, sparsity: float) -> tuple[nn.Linear, nn.Linear]:
    """Structured pruning: remove the ``round(sparsity * hidden)`` least important hidden channels of a Linear pair.

    ``fc1`` maps ``in -> hidden``, ``fc2`` maps ``hidden -> out`` (an elementwise activation may sit between).
    Importance is :func:`channel_scores`; the kept channels are the ``hidden - k`` highest scores (ties: the
    earlier channel wins, stable sort), **in their original order**. The new ``fc1`` has the kept rows of
    ``fc1.weight`` and entries of ``fc1.bias``; the new ``fc2`` the kept columns of ``fc2.weight`` and all of
    ``fc2.bias``. So ``new_fc1(x) == fc1(x)[..., kept]`` exactly, and ``new_fc2`` computes what ``fc2`` computes
    when the pruned channels are zero. The inputs are not modified.

    Args:
        fc1, fc2: ``nn.Linear`` with ``fc1.out_features == fc2.in_features``.
        sparsity: fraction of hidden channels removed, in ``[0, 1)``.

    Returns:
        ``(new_fc1, new_fc2)``: new ``nn.Linear`` modules with ``hidden - k`` channels, on the same device and dtype.
    """
    _check_pair(fc1, fc2)
    sparsity = check_sparsity(sparsity)
    hidden = fc1.out_features
    n_keep = hidden - round(sparsity * hidden)
    if n_keep < 1:
        raise ValueError(f"sparsity={sparsity} would remove all {hidden} channels")
    scores = channel_scores(fc1, fc2)
    keep = torch.sort(torch.sort(scores, descending=True, stable=True).indices[:n_keep]).values
    w1, w2 = fc1.weight.detach(), fc2.weight.detach()
    new1 = nn.Linear(fc1.in_features, n_keep, bias=fc1.bias is not None, device=w1.device, dtype=w1.dtype)
    new2 = nn.Linear(n_keep, fc2.out_features, bias=fc2.bias is not None, device=w2.device, dtype=w2.dtype)
    with torch.no_grad():
        new1.weight.copy_(w1[keep])
        new2.weight.copy_(w2[:, keep])
        if fc1.bias is not None:
            new1.bias.copy_(fc1.bias.detach()[keep])
        if fc2.bias is not None:
            new2.bias.copy_(fc2.bias.detach())
    return new1, new2


# ----------------------------------------------------------------------------------------------
# whole models
@torch.no_grad()
def apply_masks(layers: Mapping[str, nn.Linear], masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the pruned weights in place: ``layers[name].weight *= masks[name]``.

    Args:
        layers: ``{name: nn.Linear}``.
        masks: ``{name: bool mask}``, each the shape of its layer's weight; layers without a mask are left alone.
    """
    for arg, value in (("layers", layers), ("masks", masks)):
        if not isinstance(value, Mapping):
            raise TypeError(f"{arg} must be a mapping {{name: ...}}, got {type(value).__name__}")
    for name, mask in masks.items():
        lin = layers[name]
        if mask.shape != lin.weight.shape or mask.dtype != torch.bool:
            raise ValueError(f"masks[{name!r}] must be a bool tensor of shape {tuple(lin.weight.shape)}, "
                             f"got {mask.dtype} {tuple(mask.shape)}")
        lin.weight.mul_(mask.to(lin.weight.device))


@torch.no_grad()
def input_norms(block: nn.Module, inputs, layers: Mapping[str, nn.Linear] | None = None) -> dict[str, torch.Tensor]:
    """L2 norm of every input feature of every Linear in ``block`` over all calibration tokens.

    Args:
        block: a transformer block (or any module holding the Linears).
        inputs: the block's inputs as returned by ``course_lib.lm_quant.capture_block_inputs`` / ``run_block``.
        layers: ``{name: linear}`` inside ``block``; default every Linear of the block.

    Returns:
        ``{name: float32 [in_features]}``: ``sqrt(sum over tokens of x_j^2)``.
    """
    check_module(block, "block")
    from .lm_quant import linear_layers

    layers = dict(layers if layers is not None else linear_layers(block))
    sums = {name: torch.zeros(lin.in_features, dtype=torch.float64, device=lin.weight.device)
            for name, lin in layers.items()}

    def add(name, x):
        x = x.reshape(-1, x.shape[-1]).double()
        sums[name] += (x * x).sum(0)

    _run_with_input_hooks(block, inputs, layers, add)
    return {name: s.sqrt().float() for name, s in sums.items()}


def _run_with_input_hooks(block: nn.Module, inputs, layers: Mapping[str, nn.Linear], on_input) -> None:
    """Run ``block`` on ``inputs`` (``lm_quant.run_block``) with ``on_input(name, x)`` called on the input ``x`` of
    every Linear in ``layers`` ``{name: linear}``; the hooks are removed afterwards, also on an error."""
    from .lm_quant import run_block

    def make_hook(name):
        def hook(_module, args):
            on_input(name, args[0].detach())
        return hook

    handles = [lin.register_forward_pre_hook(make_hook(name)) for name, lin in layers.items()]
    try:
        run_block(block, inputs)
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def _input_hessians(block: nn.Module, inputs, layers: Mapping[str, nn.Linear]) -> dict[str, torch.Tensor]:
    """``{name: H = 2 X^T X / n}`` of every Linear in ``layers`` over the block's calibration inputs
    (``course_lib.gptq``'s running average, one pass of the block)."""
    from .gptq import accumulate_hessian

    stats = {name: (torch.zeros(lin.in_features, lin.in_features, device=lin.weight.device), 0)
             for name, lin in layers.items()}

    def add(name, x):
        stats[name] = accumulate_hessian(*stats[name], x.float())

    _run_with_input_hooks(block, inputs, layers, add)
    return {name: H for name, (H, _) in stats.items()}


METHODS = ("magnitude", "wanda", "sparsegpt")


@torch.no_grad()
def prune_model(model: nn.Module, tokenizer=None, sparsity: float = 0.5, method: str = "wanda",
                nm: tuple[int, int] | None = None, n_samples: int = 32, seq_len: int = 128, seed: int = 0,
                progress: bool = False, calib_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Prune every Linear of a causal LM's blocks in place (``lm_head`` and embeddings are kept), block by block.

    - ``"magnitude"``: per layer, :func:`magnitude_mask` (or :func:`nm_mask` of ``|W|`` with ``nm``);
      needs no data.
    - ``"wanda"``: calibration windows run through the model one block at a time (Wanda's recipe): the
      input norms of block ``i``'s layers are measured on the outputs of the already pruned blocks
      ``0 .. i-1``; then :func:`wanda_mask` per output row (or :func:`nm_mask` of the Wanda scores).
    - ``"sparsegpt"``: the same block-by-block calibration; each layer's Hessian ``2 X^T X / n`` is
      accumulated from the block's inputs (all layers of a block in one pass, as SparseGPT's ``opt.py``
      and its ``llama.py`` without ``--true-sequential``), then :func:`sparsegpt_prune` (blocks of 128
      columns, dampening 0.01) prunes and updates the weights.

    Args:
        model: a transformers causal LM (``course_lib.lm_quant.decoder_blocks`` finds its blocks).
        tokenizer: needed for ``"wanda"`` and ``"sparsegpt"`` unless ``calib_ids`` is given (calibration
            windows from ``lm_quant.calibration_ids``).
        sparsity: fraction pruned, in ``[0, 1)`` (ignored when ``nm`` is given: ``1 - n/m``).
        method: ``"magnitude"``, ``"wanda"`` or ``"sparsegpt"``.
        nm: ``(n, m)`` for N:M semi-structured pruning, e.g. ``(2, 4)``; None for unstructured.
        n_samples, seq_len, seed: calibration windows (Wanda's paper: 128 windows of 2048 tokens).
        progress: show a progress bar over blocks.
        calib_ids: int64 ``[n, seq]`` calibration token ids to use instead of drawing ``n_samples`` windows
            (``lm_quant.calibration_ids`` tokenizes the whole calibration text on every call: pass the
            same windows to several calls to tokenize once).

    Returns:
        ``{qualified layer name: mask}``.
    """
    from tqdm.auto import tqdm

    from .lm_quant import calibration_ids, capture_block_inputs, decoder_blocks, linear_layers, run_block

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if nm is not None:
        if not (isinstance(nm, tuple) and len(nm) == 2):
            raise TypeError(f"nm must be a tuple (n, m), got {nm!r}")
    else:
        sparsity = check_sparsity(sparsity)
    blocks = decoder_blocks(model)
    inputs = None
    if method in ("wanda", "sparsegpt"):
        if calib_ids is None:
            if tokenizer is None:
                raise ValueError(f"tokenizer (or calib_ids) is required for method={method!r} (calibration data)")
            calib_ids = calibration_ids(tokenizer, n_samples, seq_len, seed=seed)
        if not isinstance(calib_ids, torch.Tensor) or calib_ids.dim() != 2 or calib_ids.dtype != torch.long:
            raise ValueError("calib_ids must be an int64 tensor [n_samples, seq_len] of token ids")
        inputs = capture_block_inputs(model, calib_ids)
    names = {id(m): n for n, m in model.named_modules()}
    masks: dict[str, torch.Tensor] = {}
    for block in tqdm(blocks, desc=f"{method} pruning", disable=not progress, leave=False):
        layers = linear_layers(block)
        norms = input_norms(block, inputs, layers) if method == "wanda" else None
        hessians = _input_hessians(block, inputs, layers) if method == "sparsegpt" else None
        for name, lin in layers.items():
            w = lin.weight.detach()
            if method == "sparsegpt":
                new_w, mask = sparsegpt_prune(w, hessians[name], sparsity, nm)
                lin.weight.copy_(new_w)
            elif method == "wanda":
                if nm is None:
                    mask = wanda_mask(w, norms[name], sparsity)
                else:
                    mask = nm_mask(wanda_scores(w, norms[name]), *nm)
            else:
                mask = magnitude_mask(w, sparsity) if nm is None else nm_mask(w, *nm)
            lin.weight.mul_(mask)
            masks[names[id(lin)]] = mask
        if inputs is not None:
            inputs = run_block(block, inputs)
    return masks


@torch.no_grad()
def sensitivity_scan(model: nn.Module, evaluate: Callable[[nn.Module], float], sparsities: Sequence[float],
                     groups: Mapping[str, Sequence[str]] | None = None, progress: bool = True) -> dict[str, list[float]]:
    """Prune one layer (or group of layers) at a time by magnitude, evaluate, restore.

    Args:
        model: any module with ``nn.Linear`` layers (modified during the scan, restored afterwards).
        evaluate: ``evaluate(model) -> float`` (accuracy, perplexity, ...).
        sparsities: levels in ``[0, 1)``.
        groups: ``{label: [qualified Linear names]}`` pruned together (each with its own per-layer mask);
            default: every Linear (except ``lm_head``) on its own.
        progress: show a progress bar.

    Returns:
        ``{label: [evaluate(...) for each sparsity]}``.
    """
    check_module(model, "model")
    from tqdm.auto import tqdm

    from .lm_quant import linear_layers

    sparsities = [check_sparsity(s, "sparsities") for s in sparsities]
    if not sparsities:
        raise ValueError("sparsities must not be empty")
    layers = linear_layers(model)
    if groups is None:
        groups = {name: [name] for name in layers}
    for label, names in groups.items():
        for n in names:
            if n not in layers:
                raise ValueError(f"groups[{label!r}] names {n!r}, which is not a Linear of the model")
    results: dict[str, list[float]] = {}
    jobs = [(label, s) for label in groups for s in sparsities]
    for label, s in tqdm(jobs, desc="sensitivity scan", disable=not progress, leave=False):
        saved = {n: layers[n].weight.detach().clone() for n in groups[label]}
        try:
            for n in groups[label]:
                layers[n].weight.mul_(magnitude_mask(layers[n].weight, s))
            results.setdefault(label, []).append(float(evaluate(model)))
        finally:
            for n, w in saved.items():
                layers[n].weight.copy_(w)
    return results


# ----------------------------------------------------------------------------------------------
# digits classifier: train, prune, fine-tune
class DigitsMLP(nn.Module):
    """``64 -> hidden -> hidden -> 10`` ReLU MLP for the 8x8 digits (layers ``fc1``, ``fc2``, ``fc3``)."""

    def __init__(self, hidden: int = 256, hidden2: int | None = None):
        super().__init__()
        check_int(hidden, "hidden", low=1)
        hidden2 = hidden if hidden2 is None else hidden2
        self.fc1 = nn.Linear(64, hidden)
        self.fc2 = nn.Linear(hidden, hidden2)
        self.fc3 = nn.Linear(hidden2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def train_classifier(model: nn.Module, X: torch.Tensor, y: torch.Tensor, epochs: int = 20, lr: float = 3e-3,
                     batch_size: int = 64, masks: Mapping[str, torch.Tensor] | None = None, seed: int = 0,
                     progress: bool = True, desc: str = "training") -> list[float]:
    """Adam with cross-entropy; with ``masks`` (``{linear name: bool mask}``) the pruned weights stay exactly 0.

    After every optimizer step the masked weights are multiplied by their mask again (Adam's momentum
    would otherwise revive them), the way ``torch.nn.utils.prune``'s reparametrization keeps them at 0.

    Args:
        model: trained in place.
        X, y: inputs ``[N, features]`` and int64 labels ``[N]``.
        epochs, lr, batch_size: Adam settings.
        masks: ``{linear name: bool mask}`` kept applied, or None.
        seed: seed of the shuffling.
        progress, desc: tqdm bar and its label.

    Returns:
        the mean training loss of every epoch.
    """
    check_module(model, "model")
    check_int(epochs, "epochs", low=0)
    check_int(batch_size, "batch_size", low=1)
    check_tensor(X, "X", dtypes=FLOAT_DTYPES, ndim=2)
    device = next(model.parameters()).device
    X, y = X.to(device), y.to(device)
    modules = dict(model.named_modules())
    masks = {n: m.to(device) for n, m in (masks or {}).items()}
    for n in masks:
        if n not in modules or not hasattr(modules[n], "weight"):
            raise ValueError(f"masks names {n!r}, which is not a layer of the model")
    def reapply_masks() -> None:
        with torch.no_grad():
            for n, m in masks.items():
                modules[n].weight.mul_(m)

    return train_epochs(model, X, y, epochs, lr, batch_size, seed=seed, progress=progress, desc=desc,
                        after_step=reapply_masks if masks else None)


# ----------------------------------------------------------------------------------------------
# gradual pruning (Zhu and Gupta 2017) and prune-then-distill on a causal LM
def cubic_sparsity(step: int, final_sparsity: float, initial_sparsity: float = 0.0, start_step: int = 0,
                   n_prunings: int = 10, frequency: int = 1) -> float:
    """The gradual pruning schedule of Zhu and Gupta (2017, arXiv 1710.01878), at training step ``step``.

    The sparsity is raised at the pruning steps ``t = t0, t0 + dt, ..., t0 + n dt`` (``t0 = start_step``,
    ``dt = frequency``, ``n = n_prunings``) to

    ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n dt))**3``,

    and held between them: at any step the value of the last pruning step reached. Before ``t0`` it is ``s_i``,
    from ``t0 + n dt`` on ``s_f``. The cube front-loads the pruning: half-way through, ``7/8`` of the way from
    ``s_i`` to ``s_f`` is done, while the network still has many weights to adapt with; the last steps remove few.

    Args:
        step: the training step ``t``, an int ``>= 0``.
        final_sparsity: ``s_f``, in ``[0, 1)``.
        initial_sparsity: ``s_i``, in ``[0, final_sparsity]``.
        start_step: ``t0``, the first pruning step (int ``>= 0``).
        n_prunings: ``n``, the number of pruning steps after ``t0`` (int ``>= 1``).
        frequency: ``dt``, training steps between two pruning steps (int ``>= 1``).

    Returns:
        float: the sparsity in ``[s_i, s_f]``, non-decreasing in ``step``.
    """
    check_int(step, "step", low=0)
    final_sparsity = check_sparsity(final_sparsity, "final_sparsity")
    initial_sparsity = check_sparsity(initial_sparsity, "initial_sparsity")
    if initial_sparsity > final_sparsity:
        raise ValueError(f"initial_sparsity must be <= final_sparsity (the schedule only prunes more), got "
                         f"{initial_sparsity} > {final_sparsity}")
    check_int(start_step, "start_step", low=0)
    check_int(n_prunings, "n_prunings", low=1)
    check_int(frequency, "frequency", low=1)
    done = min(max((step - start_step) // frequency, 0), n_prunings)  # pruning steps reached so far
    return final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - done / n_prunings) ** 3


def gradual_targets(final: float | tuple[int, int], stages: int = 4) -> list[float | tuple[int, int]]:
    """The pruning targets of a gradual run, one per stage, for :func:`prune_and_distill`.

    - a sparsity ``s_f``: :func:`cubic_sparsity` at its ``stages`` pruning steps from ``s_i = 0``,
      ``[cubic_sparsity(j, s_f, n_prunings=stages) for j = 1 .. stages]`` (the last one is ``s_f``);
    - an N:M pattern ``(n, m)``: the course's choice, since a cubic fraction is not an N:M pattern: the patterns
      ``(m - 1, m), (m - 2, m), ..., (n, m)`` (2:4: 3:4, then 2:4); ``stages`` is not used.

    Args:
        final: the sparsity in ``[0, 1)`` or the N:M pattern ``(n, m)`` to reach.
        stages: pruning stages for a sparsity (int ``>= 1``).

    Returns:
        list of sparsities (floats) or of ``(n, m)`` tuples, the last one ``final``.
    """
    if isinstance(final, tuple):
        n, m = _check_nm_pattern(final)
        return [(k, m) for k in range(m - 1, n - 1, -1)] or [(n, m)]
    final = check_sparsity(final, "final")
    check_int(stages, "stages", low=1)
    return [cubic_sparsity(j, final, n_prunings=stages) for j in range(1, stages + 1)]


def _check_nm_pattern(nm) -> tuple[int, int]:
    if not (isinstance(nm, tuple) and len(nm) == 2):
        raise TypeError(f"an N:M pattern must be a tuple (n, m), e.g. (2, 4), got {nm!r}")
    n, m = nm
    check_int(m, "m of an N:M pattern", low=1)
    check_int(n, "n of an N:M pattern", low=1, high=m)
    return n, m


def distill_with_masks(model: nn.Module, teacher: nn.Module | None, windows: torch.Tensor,
                       masks: Mapping[str, torch.Tensor], batch_size: int = 8, lr: float = 1e-3,
                       temperature: float = 1.0, alpha: float = 1.0, seed: int = 0, progress: bool = False,
                       desc: str = "distilling with fixed masks") -> list[float]:
    """Fine-tune a pruned causal LM with its masks fixed, distilled from ``teacher`` (notebook 11's loss).

    One pass of :func:`course_lib.distill.train_lm` over ``windows`` (``len(windows) // batch_size`` AdamW steps, cosine
    schedule, no weight decay) with ``alpha * T**2 * KL(teacher || model) + (1 - alpha) * cross-entropy`` on every
    next-token position; ``teacher=None`` trains on the cross-entropy alone. The masks stay fixed through the
    gradients: while it trains, every masked weight's gradient is multiplied by its mask, so a pruned weight (0) gets
    a zero gradient at every step, AdamW's two moments of it stay 0 and so does its update: it stays exactly 0.
    (:func:`train_classifier` multiplies the weights by the masks after each step instead; with no weight decay the
    two agree.)

    Args:
        model: the pruned causal LM, trained in place (left in eval mode).
        teacher: the dense model it was pruned from (same vocabulary), or None.
        windows: int64 token ids ``[n, seq_len]`` (``lm_quant.calibration_ids``; never the evaluation text).
        masks: ``{qualified Linear name: bool mask}`` as returned by :func:`prune_model`; applied first.
        batch_size, lr: AdamW settings.
        temperature, alpha: :func:`course_lib.distill.distillation_loss` settings.
        seed: seed of the window order.
        progress, desc: tqdm bar and its label.

    Returns:
        list[float]: the loss of every step.
    """
    from .distill import train_lm

    check_module(model, "model")
    if not isinstance(masks, Mapping) or not masks:
        raise TypeError("masks must be a non-empty mapping {linear name: bool mask} (from prune_model)")
    modules = dict(model.named_modules())
    missing = [name for name in masks if not isinstance(modules.get(name), nn.Linear)]
    if missing:
        raise ValueError(f"masks names {missing[0]!r}, which is not an nn.Linear of the model")
    layers = {name: modules[name] for name in masks}
    apply_masks(layers, masks)
    handles = [layers[name].weight.register_hook(lambda grad, keep=mask.to(layers[name].weight.device): grad * keep)
               for name, mask in masks.items()]
    try:
        return train_lm(model, windows, teacher=teacher, temperature=temperature, alpha=alpha, batch_size=batch_size,
                        lr=lr, seed=seed, progress=progress, desc=desc)
    finally:
        for handle in handles:
            handle.remove()


def prune_and_distill(model: nn.Module, teacher: nn.Module | None, windows: torch.Tensor,
                      targets: Sequence[float | tuple[int, int]], method: str = "wanda", tokenizer=None,
                      calib_ids: torch.Tensor | None = None, batch_size: int = 8, lr: float = 1e-3,
                      temperature: float = 1.0, alpha: float = 1.0, seed: int = 0,
                      progress: bool = False) -> dict[str, torch.Tensor]:
    """Prune a causal LM in stages, each followed by fine-tuning with fixed masks distilled from ``teacher``.

    ``windows`` is split into ``len(targets)`` equal consecutive parts. Stage ``j`` prunes the model to
    ``targets[j]`` with :func:`prune_model` (``method``, block by block, on ``calib_ids``), then runs
    :func:`distill_with_masks` on part ``j``. One target is one-shot pruning then distillation; the targets of
    :func:`gradual_targets` are Zhu and Gupta's gradual pruning, with the same total number of steps.
    A later stage's mask contains the earlier ones' zeros for magnitude and Wanda (a zero weight scores lowest);
    SparseGPT's update may revive a pruned weight, and its new mask is then the one kept fixed.

    Args:
        model: a transformers causal LM, pruned and trained in place (left in eval mode).
        teacher: the dense model (same vocabulary), or None for cross-entropy fine-tuning.
        windows: int64 training windows ``[n, seq_len]``, ``n >= len(targets) * batch_size``.
        targets: sparsities in ``[0, 1)`` and/or N:M patterns ``(n, m)``, in order.
        method: ``"magnitude"``, ``"wanda"`` or ``"sparsegpt"`` (see :func:`prune_model`).
        tokenizer, calib_ids: calibration data of :func:`prune_model` (the same windows at every stage).
        batch_size, lr, temperature, alpha, seed: :func:`distill_with_masks` settings (stage ``j`` shuffles
            with ``seed + j``).
        progress: show progress bars.

    Returns:
        ``{qualified layer name: mask}`` of the last stage.
    """
    check_module(model, "model")
    if isinstance(targets, (str, tuple)) or not isinstance(targets, Sequence) or not targets:
        raise TypeError("targets must be a non-empty list of sparsities and/or (n, m) patterns, e.g. [0.5] or [(2, 4)]")
    targets = [_check_nm_pattern(t) if isinstance(t, tuple) else check_sparsity(t, "targets") for t in targets]
    check_tensor(windows, "windows", ndim=2)
    check_int(batch_size, "batch_size", low=1)
    per_stage = windows.shape[0] // len(targets)
    if per_stage < batch_size:
        raise ValueError(f"windows must hold at least len(targets) * batch_size = {len(targets) * batch_size} rows "
                         f"(one batch per stage), got {windows.shape[0]}")
    masks: dict[str, torch.Tensor] = {}
    for j, target in enumerate(targets):
        nm = target if isinstance(target, tuple) else None
        masks = prune_model(model, tokenizer, 0.5 if nm else target, method, nm=nm, calib_ids=calib_ids,
                            progress=progress)
        distill_with_masks(model, teacher, windows[j * per_stage:(j + 1) * per_stage], masks, batch_size=batch_size,
                           lr=lr, temperature=temperature, alpha=alpha, seed=seed + j, progress=progress,
                           desc=f"stage {j + 1}/{len(targets)}: {target}")
    return masks


# ----------------------------------------------------------------------------------------------
# storage
SPARSE_FORMATS = ("dense", "bitmask", "nm")


def sparse_bits_per_weight(sparsity: float, value_bits: float, fmt: str = "bitmask", m: int = 4) -> float:
    """Bits per weight (of the dense matrix) to store a pruned matrix.

    - ``"dense"``: zeros stored like any value: ``value_bits``.
    - ``"bitmask"``: one bit per position plus the kept values: ``1 + (1 - sparsity) * value_bits``.
    - ``"nm"``: N:M with ``n = (1 - sparsity) * m`` kept per group of ``m``; each kept value carries its
      position in the group, ``ceil(log2 m)`` bits (2:4: 2 bits, NVIDIA's metadata):
      ``(1 - sparsity) * (value_bits + ceil(log2 m))``.

    Scales of quantized values are not included (add them as in ``evaluate.model_size_bytes``).

    Args:
        sparsity: fraction of zeros in [0, 1).
        value_bits: bits of each stored value.
        fmt: ``"dense"``, ``"bitmask"`` or ``"nm"``.
        m: the group length M of N:M.

    Returns:
        float: bits per weight of the dense shape.
    """
    sparsity = check_sparsity(sparsity)
    if isinstance(value_bits, bool) or not isinstance(value_bits, (int, float)) or not 0 < value_bits <= 64:
        raise ValueError(f"value_bits must be a number in (0, 64], got {value_bits!r}")
    if fmt not in SPARSE_FORMATS:
        raise ValueError(f"fmt must be one of {SPARSE_FORMATS}, got {fmt!r}")
    keep = 1.0 - sparsity
    if fmt == "dense":
        return float(value_bits)
    if fmt == "bitmask":
        return 1.0 + keep * value_bits
    check_int(m, "m", low=2)
    return keep * (value_bits + math.ceil(math.log2(m)))
