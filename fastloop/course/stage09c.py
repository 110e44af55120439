"""What notebook 09c (add progress bar) exported: `ProgressCallback` and the `AvgStatsCallback` that writes a
header and one timed row per epoch through ``learn.logger``.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import torch

from ..basic_train import format_time
from .callbacks import Callback
from .stage04 import AvgStats

__all__ = ["AvgStatsCallback", "ProgressCallback", "format_time"]


class AvgStatsCallback(Callback):
    """The 09c flavour: a header row at ``begin_fit``, then per epoch ``[epoch, train stats, valid stats, time]``.

    Events: ``begin_fit`` (writes ``['epoch', 'train_loss', 'train_<metric>'..., 'valid_loss', ..., 'time']`` through
    ``logger``; the metric names are ``metric.__name__``), ``begin_epoch`` (reset, start the timer), ``after_loss``
    (accumulates under ``no_grad``), ``after_epoch`` (writes the row, values as ``f'{v:.6f}'``).  ``_order`` 0:
    after `ProgressCallback` (-1) has pointed ``logger`` at the progress bar's table.  Registered as ``avg_stats``.
    """

    def __init__(self, metrics: Any):
        self.train_stats, self.valid_stats = AvgStats(metrics, True), AvgStats(metrics, False)

    def begin_fit(self) -> None:
        met_names = ["loss"] + [m.__name__ for m in self.train_stats.metrics]
        names = ["epoch"] + [f"train_{n}" for n in met_names] + [f"valid_{n}" for n in met_names] + ["time"]
        self.logger(names)

    def begin_epoch(self) -> None:
        self.train_stats.reset()
        self.valid_stats.reset()
        self.start_time = time.time()

    def after_loss(self) -> None:
        stats = self.train_stats if self.in_train else self.valid_stats
        with torch.no_grad():
            stats.accumulate(self.run)

    def after_epoch(self) -> None:
        stats = [str(self.epoch)]
        for o in [self.train_stats, self.valid_stats]:
            stats += [f"{v:.6f}" for v in o.avg_stats]
        stats += [format_time(time.time() - self.start_time)]
        self.logger(stats)


class ProgressCallback(Callback):
    """fastprogress bars: a master bar over the epochs, a child bar over each training and validation loop.

    Events: ``begin_fit`` (reads ``epochs``; creates ``self.mbar`` and **replaces** ``run.logger`` with the bar's
    table writer -- never restored, as in the course), ``begin_epoch``/``begin_validate`` (reads ``dl``,
    ``epoch``; a new child bar), ``after_batch`` (reads ``iter``; advances the child bar), ``after_fit`` (closes
    the master bar).  ``_order`` -1: before `AvgStatsCallback` writes its header at ``begin_fit``.
    Registered as ``progress``.  Works with fastprogress 0.2.x and 1.0.x.
    """

    _order = -1

    def begin_fit(self) -> None:
        from fastprogress.fastprogress import master_bar

        self.mbar = master_bar(range(self.epochs))
        self.mbar.on_iter_begin()
        self.run.logger = partial(self.mbar.write, table=True)

    def after_fit(self) -> None:
        self.mbar.on_iter_end()

    def after_batch(self) -> None:
        self.pb.update(self.iter)

    def begin_epoch(self) -> None:
        self.set_pb()

    def begin_validate(self) -> None:
        self.set_pb()

    def set_pb(self) -> None:
        from fastprogress.fastprogress import progress_bar

        self.pb = progress_bar(self.dl, parent=self.mbar)
        self.mbar.update(self.epoch)
