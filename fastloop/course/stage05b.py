"""What notebook 05b (early stopping) exported in ``exp.nb_05b``: the `Runner` with cancellation by exceptions,
and the ``param_groups`` flavour of `LR_Find`.
"""

from __future__ import annotations

from typing import Any

import torch

from ._engine import ignore_returns
from .callbacks import Callback, CancelBatchException, CancelEpochException, CancelTrainException
from .stage04 import Runner as _Runner04

__all__ = ["Runner", "LR_Find"]


class Runner(_Runner04):
    """The 05b Runner: control flow by exceptions; the return values of events are ignored.

    Same construction and read-only ``model/opt/loss_func/data`` views as the 04 `Runner`.  Every callback sees
    every event (the exported ``nb_05b`` ANDed the results starting from False, so ``run('begin_epoch')`` is always
    False).  To steer the loop, raise:

    * `CancelBatchException` in a batch event: the rest of the batch is skipped -> ``after_cancel_batch`` ->
      ``after_batch`` (it runs in a ``finally``) -> next batch;
    * `CancelEpochException` in a batch event: ``after_batch`` -> ``after_cancel_epoch``; the current loop ends
      (after training, validation still runs);
    * `CancelTrainException` anywhere: ``after_cancel_train`` -> ``after_fit`` (no ``after_epoch``).

    Raised from the wrong place (`CancelBatchException` in ``after_batch``, `CancelEpochException` in an
    epoch-level event) the exception escapes `fit`; ``after_fit`` still runs.  Any exception stops the event:
    callbacks later in the order do not see it.  ``in_train`` is False before the first epoch.
    """

    def __init__(self, cbs: Any = None, cb_funcs: Any = None):
        self.in_train = False
        super().__init__(cbs, cb_funcs)

    def one_batch(self, xb: Any, yb: Any) -> None:
        try:
            self.xb, self.yb = xb, yb
            self("begin_batch")
            self.pred = self.model(self.xb)
            self("after_pred")
            self.loss = self.loss_func(self.pred, self.yb)
            self("after_loss")
            if not self.in_train:
                return  # validation: no backward (the finally below still fires after_batch)
            self.loss.backward()
            self("after_backward")
            self.opt.step()
            self("after_step")
            self.opt.zero_grad()
        except CancelBatchException:
            self("after_cancel_batch")
        finally:
            self("after_batch")

    def all_batches(self, dl: Any) -> None:
        self.iters = len(dl)
        try:
            for xb, yb in dl:
                self.one_batch(xb, yb)
        except CancelEpochException:
            self("after_cancel_epoch")

    def fit(self, epochs: int, learn: Any) -> None:
        self.epochs, self.learn, self.loss = epochs, learn, torch.tensor(0.0)
        try:
            for cb in self.cbs:
                cb.set_runner(self)
            self("begin_fit")
            for epoch in range(epochs):
                self.epoch = epoch
                if not self("begin_epoch"):
                    self.all_batches(self.data.train_dl)
                with torch.no_grad():
                    if not self("begin_validate"):
                        self.all_batches(self.data.valid_dl)
                self("after_epoch")
        except CancelTrainException:
            self("after_cancel_train")
        finally:
            self("after_fit")
            self.learn = None

    def __call__(self, cb_name: str) -> bool:
        "Fire `cb_name` on every callback; always False (returns are ignored, as in the exported nb_05b)."
        return self._dispatch.fire(self.cbs, cb_name, ignore_returns)


class LR_Find(Callback):  # noqa: N801 -- the course's name
    """Exponential learning-rate sweep from `min_lr` to `max_lr` over `max_iter` batches; stops the fit by itself.

    Events: ``begin_batch`` (training only; reads ``n_iter``; sets every ``opt.param_groups[i]['lr']``),
    ``after_step`` (reads ``n_iter`` and the *raw* ``loss``): raises `CancelTrainException` once ``n_iter >=
    max_iter`` or the loss exceeds 10x the best loss so far.  ``_order`` 1: after `TrainEvalCallback` updates
    ``n_iter``.  The weights are not saved or restored.  Registered as ``lr__find`` (camel2snake of ``LR_Find``).

    (fastai v1's `LRFinder` compares the *smoothed* loss with 4x the best.)  ``best_loss`` is kept across fits
    when the instance comes from ``cb_funcs``.
    """

    _order = 1

    def __init__(self, max_iter: int = 100, min_lr: float = 1e-6, max_lr: float = 10):
        self.max_iter, self.min_lr, self.max_lr = max_iter, min_lr, max_lr
        self.best_loss = 1e9

    def begin_batch(self) -> None:
        if not self.in_train:
            return
        pos = self.n_iter / self.max_iter
        lr = self.min_lr * (self.max_lr / self.min_lr) ** pos
        for group in self._groups():
            group["lr"] = lr

    def _groups(self) -> Any:
        "Where the lr is written: torch's ``param_groups`` (05b); ``opt.hypers`` from notebook 09."
        return self.opt.param_groups

    def after_step(self) -> None:
        if self.n_iter >= self.max_iter or self.loss > self.best_loss * 10:
            raise CancelTrainException()
        if self.loss < self.best_loss:
            self.best_loss = self.loss
