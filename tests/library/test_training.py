"""course_lib.training: the loops shared by qat, prune (epochs) and bitnet, distill (steps)."""

import pytest
import torch
from torch import nn

from course_lib.training import progress_bar, train_epochs, train_steps


def _blobs(device, n=256, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=gen)
    centers = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.0]])
    X = centers[y] + 0.3 * torch.randn(n, 2, generator=gen)
    return X.to(device), y.to(device)


def _model(device):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3)).to(device)


def test_train_epochs_learns_calls_its_hooks_and_is_deterministic(device):
    X, y = _blobs(device)
    starts, steps = [], []
    model = _model(device)
    losses = train_epochs(model, X, y, epochs=5, lr=1e-2, batch_size=32, progress=False,
                          on_epoch_start=starts.append, after_step=lambda: steps.append(1))
    assert len(losses) == 5 and losses[-1] < 0.5 * losses[0], f"the loss should fall, got {losses}"
    assert starts == [0, 1, 2, 3, 4], "on_epoch_start must get each epoch's index, in order"
    assert len(steps) == 5 * 8, "after_step must run after every optimizer step (256 rows / 32 = 8 per epoch)"
    assert not model.training, "the model must be left in eval mode"
    again = train_epochs(_model(device), X, y, epochs=5, lr=1e-2, batch_size=32, progress=False)
    assert again == pytest.approx(losses, rel=1e-5), "the same seed must give the same losses"


def test_train_steps_anneals_to_zero_and_returns_every_loss(device):
    X, y = _blobs(device)
    model = _model(device)
    seen = []

    def loss_at(step):
        seen.append(step)
        return nn.functional.cross_entropy(model(X), y)

    losses = train_steps(model, model.parameters(), steps=40, lr=1e-2, loss_at=loss_at, progress=False)
    assert seen == list(range(40)) and len(losses) == 40
    assert losses[-1] < 0.5 * losses[0], f"the loss should fall, got {losses[0]:.3f} -> {losses[-1]:.3f}"
    assert not model.training
    # lr = 0: AdamW (no weight decay) must not move the weights
    frozen = _model(device)
    before = [p.detach().clone() for p in frozen.parameters()]
    train_steps(frozen, frozen.parameters(), steps=1, lr=0.0,
                loss_at=lambda _s: nn.functional.cross_entropy(frozen(X), y), progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, frozen.parameters())), "lr=0 must leave the weights alone"


def test_progress_bar_is_the_iterable_when_off():
    items = [1, 2, 3]
    assert progress_bar(items, "x", progress=False) is items
    assert list(progress_bar(items, "x", progress=True, leave=False)) == items
