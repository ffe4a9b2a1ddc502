"""The training loops that the topic modules share (qat, prune: epochs; bitnet, distill: steps).

Each topic module keeps its own ``train_classifier`` / ``train_lm`` with the checks and the loss that
belong to its topic; the loop itself (optimizer, schedule, progress bar, loss bookkeeping) lives here once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn


def progress_bar(iterable: Iterable, desc: str, progress: bool, leave: bool = True) -> Iterable:
    """``iterable`` wrapped in a tqdm.auto bar labelled ``desc`` (the iterable itself when ``progress`` is False).

    Args:
        iterable: what to iterate over.
        desc: the bar's label.
        progress: show the bar.
        leave: keep the finished bar on screen.

    Returns:
        The bar, or ``iterable`` unchanged.
    """
    if not progress:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=leave)


def train_steps(model: nn.Module, params: Iterable[torch.Tensor], steps: int, lr: float,
                loss_at: Callable[[int], torch.Tensor], progress: bool = True, desc: str = "training") -> list[float]:
    """AdamW (no weight decay) with a cosine schedule for ``steps`` steps of ``loss_at(step)``.

    Args:
        model: put in train mode for the loop and in eval mode after it.
        params: the tensors AdamW updates (the model's, plus e.g. a distillation projection's).
        steps: number of optimizer steps (>= 1; the caller checks it).
        lr: AdamW's learning rate, annealed to 0 over ``steps``.
        loss_at: ``loss_at(step)`` draws a batch and returns its scalar loss.
        progress, desc: tqdm bar and its label.

    Returns:
        The loss of every step (Python floats).
    """
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    losses = []
    for step in progress_bar(range(steps), desc, progress):
        loss = loss_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return losses


def train_epochs(model: nn.Module, X: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, batch_size: int,
                 seed: int = 0, weight_decay: float = 0.0, progress: bool = True, desc: str = "training",
                 on_epoch_start: Callable[[int], None] | None = None,
                 after_step: Callable[[], None] | None = None) -> list[float]:
    """Adam and cross-entropy over shuffled mini-batches of ``(X, y)``, ``epochs`` times.

    Args:
        model: maps ``X``'s rows to logits; trained in place, left in eval mode.
        X, y: inputs ``[N, ...]`` and int64 labels ``[N]``, on the model's device (the caller moves them).
        epochs, lr, batch_size, weight_decay: Adam settings (the caller checks them).
        seed: seed of the shuffling.
        progress, desc: tqdm bar over the epochs (it shows the last epoch's loss) and its label.
        on_epoch_start: optional ``f(epoch)`` run before each epoch (QAT switches phases there).
        after_step: optional ``f()`` run after every optimizer step (pruning re-applies its masks there).

    Returns:
        The mean training loss of each epoch.
    """
    device = X.device
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    bar = progress_bar(range(epochs), desc, progress, leave=False)
    for epoch in bar:
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        perm = torch.randperm(X.shape[0], generator=gen).to(device)
        total = 0.0
        for start in range(0, X.shape[0], batch_size):
            idx = perm[start:start + batch_size]
            loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step()
            total += loss.item() * idx.numel()
        losses.append(total / X.shape[0])
        if progress:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses
