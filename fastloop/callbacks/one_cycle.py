"""`OneCycleScheduler`: Leslie Smith's 1cycle policy for the learning rate and the momentum (fastai v1)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..basic_train import Learner, LearnerCallback
from ..callback import Scheduler, annealing_cos
from ..core import ifnone, is_listy, listify

__all__ = ["OneCycleScheduler"]


class OneCycleScheduler(LearnerCallback):
    """Anneal the lr from ``lr_max/div_factor`` up to `lr_max` then down to ``lr_max/final_div``, and the
    momentum the opposite way (``moms[0]`` -> ``moms[1]`` -> ``moms[0]``), with cosine curves.

    The cycle spans ``n = len(train_dl) * tot_epochs`` batches (`tot_epochs` defaults to the fit's
    ``n_epochs``): the first ``a1 = int(n * pct_start)`` go up, the other ``n - a1`` go down.
    ``final_div`` defaults to ``div_factor * 1e4``.  `lr_max` may be one value per layer group (a list or an
    array: annealed element-wise).

    Events and state:

    * ``on_train_begin`` reads ``n_epochs`` and ``epoch``; builds the schedules and sets ``opt.lr``/``opt.mom``
      to their starting values.  Returns ``{'epoch': start_epoch}`` when `start_epoch` is given (resume: the
      handler then calls `jump_to_epoch`), else nothing.
    * ``on_batch_end`` reads ``train``; on training batches steps lr and mom (so the value set here is the
      one the *next* batch uses, and the one the Recorder records for it).  Returns
      ``{'stop_training': True, 'stop_epoch': True}`` once every phase is done (never in a normal fit).
    * ``on_epoch_end`` reads ``epoch``; returns ``{'stop_training': True}`` if ``epoch > tot_epochs``.
    * ``jump_to_epoch(epoch)`` replays the schedule for ``epoch`` epochs of batches.

    ``_order = 0`` (v1): after the Recorder (-10), so the Recorder's ``on_batch_begin`` records the lr that
    was set at the previous batch end -- the lr this batch trains with.

    ``_sync_free = True``: it never reads ``last_loss`` or ``smooth_loss``, so in a sync-free fit (fastloop's
    default) it does not make the handler read the losses from the device at every batch.
    """

    _sync_free = True  # see fastloop/_sync_free.py

    def __init__(self, learn: Learner, lr_max: Any, moms: Any = (0.95, 0.85), div_factor: float = 25.0,
                 pct_start: float = 0.3, final_div: float | None = None, tot_epochs: int | None = None,
                 start_epoch: int | None = None):
        super().__init__(learn)
        self.lr_max, self.div_factor, self.pct_start = lr_max, div_factor, pct_start
        self.final_div = div_factor * 1e4 if final_div is None else final_div
        self.moms = tuple(listify(moms, 2))  # a single momentum becomes a constant (m, m) "cycle"
        if is_listy(self.lr_max):
            self.lr_max = np.array(self.lr_max)  # discriminative lrs: anneal element-wise
        self.tot_epochs, self.start_epoch = tot_epochs, start_epoch

    def steps(self, *steps_cfg: Any) -> list[Scheduler]:
        "One `Scheduler` per ``(start, end)`` in `steps_cfg`, paired with the phases' ``(n_iter, func)``."
        return [Scheduler(step, n_iter, func=func) for step, (n_iter, func) in zip(steps_cfg, self.phases)]

    def on_train_begin(self, n_epochs: int, epoch: int, **kwargs: Any) -> dict | None:
        "Build the two lr and two momentum phases; start the optimizer at their first values."
        res = {"epoch": self.start_epoch} if self.start_epoch is not None else None
        self.start_epoch = ifnone(self.start_epoch, epoch)
        self.tot_epochs = ifnone(self.tot_epochs, n_epochs)
        n = len(self.learn.data.train_dl) * self.tot_epochs
        a1 = int(n * self.pct_start)
        a2 = n - a1
        cos: Callable = annealing_cos
        self.phases = ((a1, cos), (a2, cos))
        low_lr = self.lr_max / self.div_factor
        self.lr_scheds = self.steps((low_lr, self.lr_max), (self.lr_max, self.lr_max / self.final_div))
        self.mom_scheds = self.steps(self.moms, (self.moms[1], self.moms[0]))
        opt = self.learn.opt
        opt.lr, opt.mom = self.lr_scheds[0].start, self.mom_scheds[0].start
        self.idx_s = 0
        return res

    def jump_to_epoch(self, epoch: int) -> None:
        "Advance the schedule as if `epoch` epochs of training batches had run."
        for _ in range(len(self.learn.data.train_dl) * epoch):
            self.on_batch_end(True)

    def on_batch_end(self, train: bool, **kwargs: Any) -> dict | None:
        "Step lr and momentum on training batches; move to the next phase when this one is done."
        if not train:
            return None
        if self.idx_s >= len(self.lr_scheds):
            return {"stop_training": True, "stop_epoch": True}
        opt = self.learn.opt  # read at each batch: a callback may have replaced the optimizer
        opt.lr = self.lr_scheds[self.idx_s].step()
        opt.mom = self.mom_scheds[self.idx_s].step()
        # when the lr schedule of this phase is done, the momentum one is too (same length)
        if self.lr_scheds[self.idx_s].is_done:
            self.idx_s += 1
        return None

    def on_epoch_end(self, epoch: int, **kwargs: Any) -> dict | None:
        "Tell the loop to stop once past `tot_epochs` (only reachable when fitting more epochs than the cycle)."
        if epoch > self.tot_epochs:
            return {"stop_training": True}
        return None
