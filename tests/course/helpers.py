"""Synthetic data and an event tracer for the course-style tests (no MNIST download)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fastloop.basic_train import LearnerCallback
from fastloop.course.callbacks import COURSE_EVENTS, Callback
from fastloop.course.stage04 import DataBunch


def make_xy(n: int, n_in: int = 4, seed: int = 0, image: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    "A linearly separable two-class problem; ``image=True`` shapes the inputs ``(n, 1, 2, n_in//2)``."
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_in, generator=g)
    y = (x.sum(1) > 0).long()
    if image:
        x = x.view(n, 1, 2, n_in // 2)
    return x, y


def make_data(n_train: int = 24, n_valid: int = 8, bs: int = 8, n_in: int = 4, image: bool = False,
              cls: Any = DataBunch) -> Any:
    """3 training batches of 8 and 1 validation batch of 8 by default, unshuffled (deterministic traces)."""
    x, y = make_xy(n_train + n_valid, n_in, image=image)
    train = DataLoader(TensorDataset(x[:n_train], y[:n_train]), batch_size=bs)
    valid = DataLoader(TensorDataset(x[n_train:], y[n_train:]), batch_size=2 * bs)
    if cls is DataBunch:
        return cls(train, valid, c=2)
    return cls(train, valid, 1, 2)


def make_model(n_in: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(n_in, 8), nn.ReLU(), nn.Linear(8, 2))


class Trace(Callback):
    """Records every course event it sees with the runner's counters: ``(event, in_train, n_iter, iter)``.

    ``_order`` is configurable so tests can put it before or after the callback under test.
    """

    def __init__(self, order: int = 0):
        self._order = order
        self.records: list[tuple] = []

    def _rec(self, event: str) -> None:
        run = self.run
        self.records.append((event, getattr(run, "in_train", None), getattr(run, "n_iter", None),
                             getattr(run, "iter", None)))

    @property
    def events(self) -> list[str]:
        return [r[0] for r in self.records]

    def counts(self) -> Counter:
        return Counter(self.events)


def _make(event: str):
    def hook(self: Trace) -> None:
        self._rec(event)

    hook.__name__ = event
    return hook


for _e in COURSE_EVENTS:
    setattr(Trace, _e, _make(_e))


def fit_events(n_epochs: int, n_train: int, n_valid: int) -> list[str]:
    "The course Learner's event sequence of a fit that nothing interrupts (09b, begin_epoch once per epoch)."
    seq = ["begin_fit"]
    train = ["begin_batch", "after_pred", "after_loss", "after_backward", "after_step", "after_batch"]
    valid = ["begin_batch", "after_pred", "after_loss", "after_batch"]
    for _ in range(n_epochs):
        seq += ["begin_epoch"] + train * n_train + ["begin_validate"] + valid * n_valid + ["after_epoch"]
    return seq + ["after_fit"]


class TeacherForcing(LearnerCallback):  # the translation notebook's callback, as written (imports changed only)
    def __init__(self, learn, end_epoch):
        super().__init__(learn)
        self.end_epoch = end_epoch

    def on_batch_begin(self, last_input, last_target, train, **kwargs):
        if train:
            return {"last_input": [last_input, last_target]}

    def on_epoch_begin(self, epoch, **kwargs):
        self.learn.model.pr_force = 1 - epoch / self.end_epoch


class Seq2Seq(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 2)
        self.pr_force, self.calls = 1.0, []

    def forward(self, inp, targ=None):
        self.calls.append((targ is not None, self.pr_force))
        return self.lin(inp)
