"""`LRFinder`: the learning-rate range test behind ``learn.lr_find()`` (fastai v1)."""

from __future__ import annotations

import io
import warnings
from typing import Any

import torch

from .. import _checkpoint
from ..basic_train import Learner, LearnerCallback
from ..callback import Scheduler, annealing_exp
from ..torch_core import num_distrib

__all__ = ["LRFinder"]


class LRFinder(LearnerCallback):
    """Train with an lr growing exponentially from `start_lr` to `end_lr` over `num_it` batches, then put the
    model and the optimizer state back as they were.

    Stops when the schedule is done or, with `stop_div`, when the smoothed loss exceeds four times the best
    smoothed loss seen (or is NaN).  Validation is skipped.  Afterwards ``learn.recorder.lrs``/``losses``
    hold one value per batch run: plot them with ``learn.recorder.plot()``.

    Restoring (v1): at train begin the learner is saved to ``models/tmp.pth`` (``learn.save('tmp')``) and at
    train end reloaded (``learn.load('tmp')``) -- weights, BatchNorm running stats and the optimizer's state
    buffers come back bit for bit.  As in v1 the torch param groups then hold the lr of the save (the start
    lr) while the wrapper keeps the finder's last scheduled lr (``learn.opt.lr``); the next ``fit`` sets it.

    fastloop additions (opt-in or only where v1 fails):

    * when ``models/tmp.pth`` cannot be written (read-only learner path, a file in the way...), the snapshot is
      kept in memory instead, with a warning; v1 raised;
    * ``restore_rng=True`` also saves and restores the random generators (torch CPU and CUDA, numpy, Python
      `random`), so that ``seed; lr_find(); fit()`` trains exactly as ``seed; fit()``.

    Events and state:

    * ``on_train_begin`` reads ``pbar`` (sets ``pbar.clean_on_interrupt``); returns ``{'skip_validate': True}``.
    * ``on_batch_end`` reads ``iteration`` and ``smooth_loss``; sets the next lr; returns
      ``{'stop_epoch': True, 'stop_training': True}`` on the stop rule (not in distributed runs).
    * ``on_epoch_end`` returns ``{'stop_training': True}`` once stopped.
    * ``on_train_end`` reloads the snapshot, resets the model and the learner's callbacks that have a
      ``reset()``, prints where to look.

    ``_order = 0`` (v1): after the Recorder (-10), which therefore records for each batch the lr it used.
    """

    def __init__(self, learn: Learner, start_lr: Any = 1e-7, end_lr: Any = 10, num_it: int = 100,
                 stop_div: bool = True, restore_rng: bool = False):
        super().__init__(learn)
        self.data, self.stop_div, self.restore_rng = learn.data, stop_div, restore_rng
        self.sched = Scheduler((start_lr, end_lr), num_it, annealing_exp)
        self.not_min += ["_snapshot", "_rng_state"]

    # -- snapshot of the learner (v1: models/tmp.pth)
    def _save_snapshot(self) -> None:
        self._snapshot: io.BytesIO | None = None
        try:
            self.learn.save("tmp")
        except OSError as e:  # read-only path, no space, a file where the models folder should be...
            warnings.warn(f"LRFinder could not write {self.learn.path / self.learn.model_dir / 'tmp.pth'} ({e}); "
                          "the model and optimizer state are kept in memory instead.", stacklevel=2)
            self._snapshot = io.BytesIO()
            self.learn.save(self._snapshot)

    def _load_snapshot(self) -> None:
        if self._snapshot is None:
            self.learn.load("tmp", purge=False)
        else:
            self._snapshot.seek(0)
            self.learn.load(self._snapshot, purge=False)
            self._snapshot = None

    # -- events
    def on_train_begin(self, pbar: Any, **kwargs: Any) -> dict:
        "Snapshot the learner, start the lr at `start_lr`; no validation during the sweep."
        pbar.clean_on_interrupt = True  # as v1: a pbar=None caller fails here
        if self.restore_rng:
            self._rng_state = _checkpoint.capture_rng()  # the same capture a checkpoint makes
        self._save_snapshot()
        self.learn.opt.lr = self.sched.start
        self.stop, self.best_loss = False, 0.0
        return {"skip_validate": True}

    def on_batch_end(self, iteration: int, smooth_loss: torch.Tensor, **kwargs: Any) -> dict | None:
        "Track the best smoothed loss, move the lr one step, and stop on the v1 rule."
        if iteration == 0 or smooth_loss < self.best_loss:
            self.best_loss = smooth_loss
        self.learn.opt.lr = self.sched.step()
        diverged = self.stop_div and (smooth_loss > 4 * self.best_loss or _isnan(smooth_loss))
        if self.sched.is_done or diverged:
            # the smoothed loss decides, being less shaky than the raw one
            if not self.stop:
                self.stop = iteration
            if num_distrib() <= 1:
                return {"stop_epoch": True, "stop_training": True}
        return None

    def on_epoch_end(self, **kwargs: Any) -> dict | None:
        "Keep the fit stopped once the sweep has stopped (v1: needed in distributed runs)."
        if self.stop:
            return {"stop_training": True}
        return None

    def on_train_end(self, epoch: int = 0, num_batch: int = 0, **kwargs: Any) -> None:
        "Put the learner back as it was at train begin; reset stateful models and callbacks."
        self._load_snapshot()
        if hasattr(self.learn.model, "reset"):
            self.learn.model.reset()
        for cb in self.learn.callbacks:
            if hasattr(cb, "reset"):
                cb.reset()
        if self.restore_rng and getattr(self, "_rng_state", None) is not None:
            _checkpoint.restore_rng(self._rng_state)
            self._rng_state = None
        print("LR Finder is complete, type {learner_name}.recorder.plot() to see the graph.")
        total_batches = epoch * num_batch
        if self.stop and total_batches - self.stop > 10:
            print(f"Best loss at batch #{self.stop}/{total_batches}, "
                  f"may consider .plot(skip_end={total_batches - self.stop + 3})")


def _isnan(x: Any) -> bool:
    "NaN test for a 0-dim tensor or a plain number."
    return bool(torch.isnan(x)) if isinstance(x, torch.Tensor) else x != x
