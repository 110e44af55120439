"""What notebooks 05 (annealing) and 05b exported in ``exp.nb_05``: the torch-``param_groups`` flavours of
`Recorder` and `ParamScheduler` (one value per parameter group).

From notebook 09 on, both read the course optimizer's ``opt.hypers`` instead: `fastloop.course.stage09`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .callbacks import Callback

__all__ = ["Recorder", "ParamScheduler"]


class Recorder(Callback):
    """Records, for each training batch, every param group's lr and the raw (unsmoothed) loss.

    Events: ``begin_fit`` (reads ``opt.param_groups``; empties ``lrs`` -- one list per group -- and ``losses``),
    ``after_batch`` (training only; reads ``opt.param_groups`` and ``loss``).  ``_order`` 0: schedulers set the lr at
    ``begin_batch``, so the lr recorded at ``after_batch`` is the one this batch used, whatever the order.
    Registered as ``recorder``.

    ``plot(skip_last, pgid)`` trims the *end* of the curve (fastai v1's ``plot(skip_start, skip_end)`` trims the
    start first): ``plot(3)`` means something else in each library.
    """

    def begin_fit(self) -> None:
        self.lrs: list[list[Any]] = [[] for _ in self.opt.param_groups]
        self.losses: list[Any] = []

    def after_batch(self) -> None:
        if not self.in_train:
            return
        for pg, lr in zip(self.opt.param_groups, self.lrs):
            lr.append(pg["lr"])
        self.losses.append(self.loss.detach().cpu())

    def plot_lr(self, pgid: int = -1) -> None:
        import matplotlib.pyplot as plt

        plt.plot(self.lrs[pgid])

    def plot_loss(self, skip_last: int = 0) -> None:
        import matplotlib.pyplot as plt

        plt.plot(self.losses[:len(self.losses) - skip_last])

    def plot(self, skip_last: int = 0, pgid: int = -1) -> None:
        "Loss against lr (log scale), without the last `skip_last` batches."
        import matplotlib.pyplot as plt

        losses = [o.item() for o in self.losses]
        lrs = self.lrs[pgid]
        n = len(losses) - skip_last
        plt.xscale("log")
        plt.plot(lrs[:n], losses[:n])


class ParamScheduler(Callback):
    """Sets hyper-parameter `pname` of each param group to ``f(n_epochs/epochs)`` before each training batch.

    `sched_funcs`: one schedule per param group, or a single one used for every group.  Events: ``begin_fit``
    (reads ``opt.param_groups``: a single schedule is repeated), ``begin_batch`` (training only; reads
    ``n_epochs``, ``epochs``; writes ``opt.param_groups[i][pname]``).  ``_order`` 1: after `TrainEvalCallback`
    (order 0), so ``n_epochs`` is up to date.  The key is written as given: ``'mom'`` is *not* torch SGD's
    ``'momentum'`` here (use the 09 flavour with ``opt.hypers`` for aliases).
    """

    _order = 1

    def __init__(self, pname: str, sched_funcs: Callable[[float], Any] | list | tuple):
        self.pname, self.sched_funcs = pname, sched_funcs

    def begin_fit(self) -> None:
        if not isinstance(self.sched_funcs, (list, tuple)):
            self.sched_funcs = [self.sched_funcs] * len(self.opt.param_groups)

    def _groups(self) -> Any:
        "Where the hyper-parameters are written: torch's ``param_groups`` (05); ``opt.hypers`` from notebook 09."
        return self.opt.param_groups

    def set_param(self) -> None:
        assert len(self.opt.param_groups) == len(self.sched_funcs)
        for group, f in zip(self._groups(), self.sched_funcs):
            group[self.pname] = f(self.n_epochs / self.epochs)

    def begin_batch(self) -> None:
        if self.in_train:
            self.set_param()
