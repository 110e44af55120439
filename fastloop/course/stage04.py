"""What notebook 04 (callbacks) defined and ``exp.nb_04`` exported, with the helpers it took from 01-03.

* the data helpers: `Dataset`, `get_dls`, `DataBunch` (``(train_dl, valid_dl, c)``), `accuracy`, `normalize`;
* the 04 `Learner`: a plain container ``(model, opt, loss_func, data)`` that a `Runner` trains;
* the 04 `Runner`, whose event returns steer the loop ("True = stop or skip", see its docstring);
* `AvgStats` and the 04 `AvgStatsCallback`, which prints the epoch's averages.

The later `Runner` (05b, cancellation by exceptions) is `fastloop.course.stage05b.Runner`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn, optim
from torch.utils.data import DataLoader

from ._engine import CourseDispatch, first_true
from .callbacks import Callback, TrainEvalCallback, listify

__all__ = ["Dataset", "get_dls", "DataBunch", "Learner", "Runner", "AvgStats", "AvgStatsCallback", "accuracy",
           "normalize", "get_model", "get_model_func"]


# ------------------------------------------------------------------------------------------------ data (02-03)
class Dataset:
    "Items ``(x[i], y[i])`` of two tensors of the same length."

    def __init__(self, x: Any, y: Any):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: Any) -> tuple[Any, Any]:
        return self.x[i], self.y[i]


def get_dls(train_ds: Any, valid_ds: Any, bs: int, **kwargs: Any) -> tuple[DataLoader, DataLoader]:
    "A shuffled training loader of batch size `bs` and a validation loader of batch size ``2*bs``."
    return (DataLoader(train_ds, batch_size=bs, shuffle=True, **kwargs),
            DataLoader(valid_ds, batch_size=bs * 2, **kwargs))


class DataBunch:
    "The course's (03-07) data container: two loaders and the number of classes `c`."

    def __init__(self, train_dl: Any, valid_dl: Any, c: Any = None):
        self.train_dl, self.valid_dl, self.c = train_dl, valid_dl, c

    @property
    def train_ds(self) -> Any:
        return self.train_dl.dataset

    @property
    def valid_ds(self) -> Any:
        return self.valid_dl.dataset


def accuracy(out: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    "Share of rows whose argmax is the target."
    return (torch.argmax(out, dim=1) == yb).float().mean()


def normalize(x: torch.Tensor, m: Any, s: Any) -> torch.Tensor:
    "``(x - m) / s``."
    return (x - m) / s


def get_model(data: DataBunch, lr: float = 0.5, nh: int = 50) -> tuple[nn.Module, optim.Optimizer]:
    "A two-layer MLP for the flat inputs of `data` (``nh`` hidden units) and an SGD optimizer with `lr`."
    m = data.train_ds.x.shape[1]
    model = nn.Sequential(nn.Linear(m, nh), nn.ReLU(), nn.Linear(nh, data.c))
    return model, optim.SGD(model.parameters(), lr=lr)


def get_model_func(lr: float = 0.5) -> Callable[[DataBunch], tuple[nn.Module, optim.Optimizer]]:
    "`get_model` with its learning rate fixed (05)."
    from functools import partial

    return partial(get_model, lr=lr)


# --------------------------------------------------------------------------------------------- the container
class Learner:
    """The 04 learner: nothing but ``model``, ``opt``, ``loss_func`` and ``data``; a `Runner` does the training.

    (From notebook 09b on, ``Learner`` is the class that trains: `fastloop.course.stage09b.Learner`.)
    """

    def __init__(self, model: nn.Module, opt: Any, loss_func: Callable, data: Any):
        self.model, self.opt, self.loss_func, self.data = model, opt, loss_func, data


# -------------------------------------------------------------------------------------------------- Runner
class Runner:
    """The 04 Runner: trains ``learn`` (a container `Learner`) with course callbacks; returns steer the loop.

    ``Runner(cbs, cb_funcs)``: `cbs` are instances, `cb_funcs` factories called with no argument, each result
    registered as ``run.<cb.name>`` (``run.avg_stats``) *and appended to the caller's `cbs` list* (as in the
    course).  The callbacks are ``[TrainEvalCallback()] + cbs`` (+ the `cb_funcs` instances).  ``model``,
    ``opt``, ``loss_func`` and ``data`` are read-only views of ``run.learn``, which exists during `fit` only.

    An event is fired as ``run('begin_batch')``: callbacks in ``_order`` (stable), each event method called with
    no argument.  **A callback returning True stops the event** -- the callbacks after it do not see it -- and
    the loop acts on it: ``begin_fit`` -> only ``after_fit`` runs; ``begin_epoch`` -> no training this epoch;
    ``begin_validate`` -> no validation; ``after_epoch`` -> the fit ends; a batch event -> the rest of the batch
    is abandoned (``after_batch`` still fires).  ``run.stop = True`` ends the current loop before its next batch.
    """

    def __init__(self, cbs: Any = None, cb_funcs: Any = None):
        cbs = listify(cbs)
        for cbf in listify(cb_funcs):
            cb = cbf()
            setattr(self, cb.name, cb)
            cbs.append(cb)
        _refuse_v1(cbs, type(self))
        self.stop, self.cbs = False, [TrainEvalCallback()] + cbs
        self._dispatch = CourseDispatch()

    # read-only views of the container: a callback cannot replace the model on a Runner (as in the course)
    @property
    def opt(self) -> Any:
        return self.learn.opt

    @property
    def model(self) -> nn.Module:
        return self.learn.model

    @property
    def loss_func(self) -> Callable:
        return self.learn.loss_func

    @property
    def data(self) -> Any:
        return self.learn.data

    def one_batch(self, xb: Any, yb: Any) -> None:
        "Forward, loss, and in training backward, step and zero_grad; an event returning True ends the batch."
        self.xb, self.yb = xb, yb
        if self("begin_batch"):
            return
        self.pred = self.model(self.xb)
        if self("after_pred"):
            return
        self.loss = self.loss_func(self.pred, self.yb)
        if self("after_loss") or not self.in_train:
            return
        self.loss.backward()
        if self("after_backward"):
            return
        self.opt.step()
        if self("after_step"):
            return
        self.opt.zero_grad()

    def all_batches(self, dl: Any) -> None:
        "Every batch of `dl` (``after_batch`` after each) until ``run.stop``; then reset ``stop``."
        self.iters = len(dl)
        for xb, yb in dl:
            if self.stop:
                break
            self.one_batch(xb, yb)
            self("after_batch")
        self.stop = False

    def fit(self, epochs: int, learn: Learner) -> None:
        "Train ``learn`` for `epochs`: each epoch a training loop, then a validation loop under ``no_grad``."
        self.epochs, self.learn, self.loss = epochs, learn, torch.tensor(0.0)
        try:
            for cb in self.cbs:
                cb.set_runner(self)
            if self("begin_fit"):
                return
            for epoch in range(epochs):
                self.epoch = epoch
                if not self("begin_epoch"):
                    self.all_batches(self.data.train_dl)
                with torch.no_grad():
                    if not self("begin_validate"):
                        self.all_batches(self.data.valid_dl)
                if self("after_epoch"):
                    break
        finally:
            self("after_fit")
            self.learn = None

    def __call__(self, cb_name: str) -> bool:
        "Fire `cb_name`; True as soon as one callback returns True (the later ones are not called)."
        return self._dispatch.fire(self.cbs, cb_name, first_true)


def _refuse_v1(cbs: Sequence[Any], runner: type) -> None:
    "fastai v1 callbacks run in the 09b `Learner` (through the adapter), not in a Runner: say so clearly."
    from .adapter import is_v1_callback

    for cb in cbs:
        if is_v1_callback(cb):
            raise TypeError(
                f"{type(cb).__name__} is a fastai v1-style callback (on_* events): a course {runner.__name__} cannot "
                f"run it. Use fastloop.course.Learner (the 09b Learner), which wraps v1 callbacks in an adapter."
            )


# ------------------------------------------------------------------------------------------------ AvgStats
class AvgStats:
    """Per-sample sums of the loss and of each metric over an epoch's training (or validation) batches.

    ``accumulate(run)`` reads ``run.xb`` (batch size), ``run.loss``, ``run.pred`` and ``run.yb``.  ``avg_stats`` is
    ``[mean loss, *mean metrics]``: the loss as a Python float, the metrics as 0-dim tensors (as in the course).
    """

    def __init__(self, metrics: Any, in_train: bool):
        self.metrics, self.in_train = listify(metrics), in_train

    def reset(self) -> None:
        self.tot_loss, self.count = 0.0, 0
        self.tot_mets = [0.0] * len(self.metrics)

    @property
    def all_stats(self) -> list:
        return [self.tot_loss.item()] + self.tot_mets

    @property
    def avg_stats(self) -> list:
        return [o / self.count for o in self.all_stats]

    def __repr__(self) -> str:
        if not self.count:
            return ""
        return f"{'train' if self.in_train else 'valid'}: {self.avg_stats}"

    def accumulate(self, run: Any) -> None:
        bn = run.xb.shape[0]
        self.tot_loss += run.loss * bn
        self.count += bn
        for i, m in enumerate(self.metrics):
            self.tot_mets[i] += m(run.pred, run.yb) * bn


class AvgStatsCallback(Callback):
    """The 04 flavour: prints ``train: [loss, *metrics]`` and ``valid: [...]`` after each epoch.

    Events: ``begin_epoch`` (reset both `AvgStats`), ``after_loss`` (reads ``in_train``; accumulates the batch
    under ``no_grad``), ``after_epoch`` (prints).  ``_order`` 0: after `TrainEvalCallback`, so ``in_train`` is
    already set for the epoch.  Registered as ``avg_stats``.
    """

    def __init__(self, metrics: Any):
        self.train_stats, self.valid_stats = AvgStats(metrics, True), AvgStats(metrics, False)

    def begin_epoch(self) -> None:
        self.train_stats.reset()
        self.valid_stats.reset()

    def after_loss(self) -> None:
        stats = self.train_stats if self.in_train else self.valid_stats
        with torch.no_grad():
            stats.accumulate(self.run)

    def after_epoch(self) -> None:
        print(self.train_stats)
        print(self.valid_stats)
