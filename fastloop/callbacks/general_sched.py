"""`GeneralScheduler` and `TrainingPhase`: schedule any optimizer hyper-parameter in phases (fastai v1)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..basic_train import Learner, LearnerCallback
from ..callback import Scheduler
from ..core import ifnone

__all__ = ["GeneralScheduler", "TrainingPhase"]


class TrainingPhase:
    """A phase of `length` training batches, with one `Scheduler` per hyper-parameter.

    ``TrainingPhase(n).schedule_hp('lr', (1e-3, 1e-2), anneal=annealing_cos).schedule_hp('mom', 0.9)``:
    only a tuple is a ``(start, end)`` range (linear by default); anything else stays constant.
    """

    def __init__(self, length: int):
        self.length, self.scheds = length, {}

    def schedule_hp(self, name: str, vals: Any, anneal: Callable | None = None) -> TrainingPhase:
        "Schedule hyper-parameter `name` (lr, mom, beta, wd, or any key of the torch param groups); returns self."
        self.scheds[name] = Scheduler(vals, self.length, anneal)
        return self


class GeneralScheduler(LearnerCallback):
    """Run the `phases` one after the other, setting each scheduled hyper-parameter through ``opt.set_stat``.

    Events and state:

    * ``on_train_begin`` reads ``epoch``; restarts phase 0's schedules and sets their start values.  Returns
      ``{'epoch': start_epoch}`` when `start_epoch` is given, else nothing.  As in v1, only phase 0 is
      restarted: a second fit with the same instance finds the later phases already exhausted (their next
      step goes past their end) -- build a new scheduler per fit.
    * ``on_batch_end`` reads ``train``; on training batches steps every hyper-parameter of the current phase
      (the first value used in a later phase is its first *step*, not its start) and moves on when the
      phase's first schedule is done.  Returns ``{'stop_training': True, 'stop_epoch': True}`` once all
      phases are done.
    * ``jump_to_epoch(epoch)`` replays ``epoch`` epochs of batches.

    ``_order = 0`` (v1): after the Recorder, which thus records the lr each batch used.  ``_sync_free = True``:
    it reads no loss, so it does not make a sync-free fit read the losses at every batch.
    """

    _sync_free = True  # see fastloop/_sync_free.py

    def __init__(self, learn: Learner, phases: Sequence[TrainingPhase], start_epoch: int | None = None):
        super().__init__(learn)
        self.phases, self.start_epoch = phases, start_epoch

    def on_train_begin(self, epoch: int, **kwargs: Any) -> dict | None:
        "Restart the first phase and set its start values."
        res = {"epoch": self.start_epoch} if self.start_epoch is not None else None
        self.start_epoch = ifnone(self.start_epoch, epoch)
        self.scheds = [p.scheds for p in self.phases]
        opt = self.learn.opt
        for name, sched in self.scheds[0].items():
            sched.restart()
            opt.set_stat(name, sched.start)
        self.idx_s = 0
        return res

    def jump_to_epoch(self, epoch: int) -> None:
        "Advance the schedules as if `epoch` epochs of training batches had run."
        for _ in range(len(self.learn.data.train_dl) * epoch):
            self.on_batch_end(True)

    def on_batch_end(self, train: bool, **kwargs: Any) -> dict | None:
        "Step the current phase's hyper-parameters (training batches only)."
        if not train:
            return None
        if self.idx_s >= len(self.scheds):
            return {"stop_training": True, "stop_epoch": True}
        sched = self.scheds[self.idx_s]
        opt = self.learn.opt
        for name, s in sched.items():
            opt.set_stat(name, s.step())
        if next(iter(sched.values())).is_done:
            self.idx_s += 1
        return None
