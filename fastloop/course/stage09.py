"""What notebook 09 (optimizers) changed: `Recorder`, `ParamScheduler` and `LR_Find` read and write the
optimizer's ``hypers`` (the course `Optimizer`'s, or the `HyperView`s `add_hypers` gives a torch optimizer).
"""

from __future__ import annotations

from typing import Any

from .callbacks import Callback
from .stage05 import ParamScheduler as _ParamScheduler05
from .stage05b import LR_Find as _LR_Find05b

__all__ = ["Recorder", "ParamScheduler", "LR_Find"]


class Recorder(Callback):
    """Records, for each training batch, the last group's lr and the raw (unsmoothed) loss (09 flavour).

    Events: ``begin_fit`` (empties ``lrs`` and ``losses``), ``after_batch`` (training only; reads
    ``opt.hypers[-1]['lr']`` and ``loss``).  ``_order`` 0: schedulers set the lr at ``begin_batch``, so the lr
    recorded is the one the batch used.  Registered as ``recorder``.  ``plot(skip_last)`` trims the *end* (fastai
    v1's ``plot(skip_start, skip_end)`` trims the start first).
    """

    def begin_fit(self) -> None:
        self.lrs: list[Any] = []
        self.losses: list[Any] = []

    def after_batch(self) -> None:
        if not self.in_train:
            return
        self.lrs.append(self.opt.hypers[-1]["lr"])
        self.losses.append(self.loss.detach().cpu())

    def plot_lr(self) -> None:
        import matplotlib.pyplot as plt

        plt.plot(self.lrs)

    def plot_loss(self) -> None:
        import matplotlib.pyplot as plt

        plt.plot(self.losses)

    def plot(self, skip_last: int = 0) -> None:
        "Loss against lr (log scale), without the last `skip_last` batches."
        import matplotlib.pyplot as plt

        losses = [o.item() for o in self.losses]
        n = len(losses) - skip_last
        plt.xscale("log")
        plt.plot(self.lrs[:n], losses[:n])


class ParamScheduler(_ParamScheduler05):
    """Sets hyper-parameter `pname` of each group's ``opt.hypers`` to ``f(n_epochs/epochs)`` before each training batch.

    `sched_funcs`: one schedule per group, or a single one used for every group.  Events: ``begin_fit`` (a single
    schedule is repeated per group), ``begin_batch`` (training only; reads ``n_epochs``, ``epochs``; writes
    ``opt.hypers[i][pname]``).  ``_order`` 1: after `TrainEvalCallback` (0) has updated ``n_epochs``.  With a torch
    optimizer ``'mom'`` reaches ``momentum`` or ``betas[0]`` (see `fastloop.course.optim`).
    """

    def _groups(self) -> Any:
        "The course optimizer's ``hypers`` (or `add_hypers`' views over a torch optimizer's param groups)."
        return self.opt.hypers


class LR_Find(_LR_Find05b):  # noqa: N801 -- the course's name
    """Exponential lr sweep from `min_lr` to `max_lr` over `max_iter` batches, through ``opt.hypers`` (09 flavour).

    Events: ``begin_batch`` (training only; reads ``n_iter``; writes every ``opt.hypers[i]['lr']``), ``after_step``
    (reads ``n_iter`` and the raw ``loss``): raises `CancelTrainException` once ``n_iter >= max_iter`` or the loss
    exceeds 10x the best so far.  ``_order`` 1: after `TrainEvalCallback`.  Registered as ``lr__find``.
    """

    def _groups(self) -> Any:
        "The course optimizer's ``hypers``: the lr is written there from notebook 09 on."
        return self.opt.hypers
