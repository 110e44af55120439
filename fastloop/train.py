"""Training helpers that fastai v1 adds to `Learner` (``fastai.train``): one-cycle and flat-cos fits, the LR
finder, gradient clipping and accumulation, BatchNorm freezing, the live loss graph, mixed precision, MixUp,
and `ClassificationInterpretation`.

How the methods reach `Learner`: this module attaches them (``Learner.fit_one_cycle = fit_one_cycle`` ...) when
it is imported, as v1 does; and ``fastloop.basic_train`` imports this module at its very end, so a script that
only does ``from fastloop.basic_train import Learner`` can still call ``learn.fit_one_cycle`` or
``learn.lr_find`` (in v1 that needed ``fastai.train`` to have been imported somewhere, which ``from fastai.basics
import *`` or ``from fastai.vision import *`` did).  Importing stays light: no matplotlib until a plot is asked
for.  To avoid an import cycle, this module imports the callbacks it needs from their own submodules
(``fastloop.callbacks.one_cycle``...), never the ``fastloop.callbacks`` package namespace.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from functools import partial
from operator import itemgetter
from typing import Any

import numpy as np
import torch
from torch import nn

from .basic_data import DatasetType
from .basic_train import Learner, LearnerCallback
from .callbacks.flat_cos_anneal import FlatCosAnnealScheduler
from .callbacks.fp16 import to_fp16, to_fp32
from .callbacks.lr_finder import LRFinder
from .callbacks.mixup import mixup
from .callbacks.one_cycle import OneCycleScheduler
from .core import defaults, ifnone, is_listy, listify
from .torch_core import bn_types, num_distrib

__all__ = ["BnFreeze", "GradientClipping", "ShowGraph", "Interpretation", "ClassificationInterpretation",
           "fit_one_cycle", "lr_find", "one_cycle_scheduler", "to_fp16", "to_fp32", "mixup", "AccumulateScheduler",
           "fit_fc", "clip_grad"]


# ============================================================================================ fit helpers
def one_cycle_scheduler(lr_max: Any, **kwargs: Any) -> partial:
    "A `callback_fns` entry making a `OneCycleScheduler` with `lr_max` (and `kwargs`) at each fit."
    return partial(OneCycleScheduler, lr_max=lr_max, **kwargs)


def fit_one_cycle(learn: Learner, cyc_len: int, max_lr: Any = defaults.lr, moms: tuple[float, float] = (0.95, 0.85),
                  div_factor: float = 25.0, pct_start: float = 0.3, final_div: float | None = None,
                  wd: Any = None, callbacks: Any = None, tot_epochs: int | None = None,
                  start_epoch: int | None = None) -> None:
    """Fit `cyc_len` epochs with the 1cycle policy (`OneCycleScheduler`) peaking at `max_lr`.

    `max_lr` goes through ``learn.lr_range`` (a slice gives one lr per layer group); the scheduler is added to
    a copy of `callbacks`, then ``learn.fit(cyc_len, max_lr, wd=wd, callbacks=...)`` runs.
    """
    max_lr = learn.lr_range(max_lr)
    callbacks = listify(callbacks)
    callbacks.append(OneCycleScheduler(learn, max_lr, moms=moms, div_factor=div_factor, pct_start=pct_start,
                                       final_div=final_div, tot_epochs=tot_epochs, start_epoch=start_epoch))
    learn.fit(cyc_len, max_lr, wd=wd, callbacks=callbacks)


def fit_fc(learn: Learner, tot_epochs: int = 1, lr: Any = defaults.lr, moms: tuple[float, float] = (0.95, 0.85),
           start_pct: float = 0.72, wd: Any = None, callbacks: Any = None) -> None:
    """Fit `tot_epochs` epochs with a flat lr, then a cosine annealing to 0 from `start_pct` of the batches on
    (`FlatCosAnnealScheduler`; momentum ``moms[0]`` then ``moms[1]``).

    `lr` goes through ``learn.lr_range`` as in `fit_one_cycle`.  v1 did not, and its default ``lr=slice(3e-3)``
    crashed at the first optimizer step (``float * slice``); a plain float gives the same numbers as v1.
    """
    lr = learn.lr_range(lr)
    callbacks = listify(callbacks)
    callbacks.append(FlatCosAnnealScheduler(learn, lr, moms=moms, start_pct=start_pct, tot_epochs=tot_epochs))
    learn.fit(tot_epochs, lr, wd=wd, callbacks=callbacks)


def lr_find(learn: Learner, start_lr: Any = 1e-7, end_lr: Any = 10, num_it: int = 100, stop_div: bool = True,
            wd: Any = None, restore_rng: bool = False) -> None:
    """Explore lrs from `start_lr` to `end_lr` over `num_it` batches (`LRFinder`); see the result with
    ``learn.recorder.plot()``.

    Runs ``ceil(num_it / len(train_dl))`` epochs (times the number of processes when distributed) without
    validation, then restores the model and optimizer state (from ``models/tmp.pth``, or from memory when
    that file cannot be written).  ``restore_rng=True`` (fastloop) also restores the random generators, so
    the sweep leaves no trace on what follows.  The lrs go through ``learn.lr_range``; lists become arrays.
    """
    start_lr = learn.lr_range(start_lr)
    start_lr = np.array(start_lr) if is_listy(start_lr) else start_lr
    end_lr = learn.lr_range(end_lr)
    end_lr = np.array(end_lr) if is_listy(end_lr) else end_lr
    cb = LRFinder(learn, start_lr, end_lr, num_it, stop_div, restore_rng=restore_rng)
    epochs = int(math.ceil(num_it / len(learn.data.train_dl))) * max(1, num_distrib())
    learn.fit(epochs, start_lr, callbacks=[cb], wd=wd)


def clip_grad(learn: Learner, clip: float = 0.1) -> Learner:
    "Clip the gradient norm to `clip` in every later fit (adds `GradientClipping` to ``callback_fns``)."
    learn.callback_fns.append(partial(GradientClipping, clip=clip))
    return learn


# ============================================================================================== callbacks
class ShowGraph(LearnerCallback):
    """Update a live graph of the training and validation losses at the end of each validated epoch.

    Event: ``on_epoch_end`` reads ``n_epochs`` and ``last_metrics``; when the epoch was validated it calls
    ``recorder.pbar.update_graph`` with the smoothed training losses per iteration and the validation losses
    at ``cumsum(nb_batches)``, x bounds ``(0, (n_epochs - epochs done) * last nb_batches + len(losses))``,
    y bounds ``(0, max loss)``; and returns ``{}`` (as v1).  In a console fastprogress draws nothing; in a
    notebook it draws with matplotlib.

    ``_order = 0`` (v1): after the Recorder (-10), whose lists then hold this epoch.
    """

    def on_epoch_end(self, n_epochs: int, last_metrics: list, **kwargs: Any) -> dict | None:
        "Redraw the loss graph."
        if last_metrics[0] is None:
            return None
        rec = self.learn.recorder
        iters = list(range(len(rec.losses)))
        val_iter = np.array(rec.nb_batches).cumsum()
        x_bounds = (0, (n_epochs - len(rec.nb_batches)) * rec.nb_batches[-1] + len(rec.losses))
        losses = [float(x) for x in rec.losses]
        val_losses = [float(x) for x in rec.val_losses if x is not None]
        y_bounds = (0, max(max(losses, default=0.0), max(val_losses, default=0.0)))
        # plain floats (v1 passed the tensors): the values are the same, and a sync-free Recorder's entries are
        # read here rather than inside the plotting library
        rec.pbar.update_graph([(iters, losses), (val_iter, rec.val_losses)], x_bounds, y_bounds)
        return {}


def _set_bn_eval(m: nn.Module) -> None:
    "Put every BatchNorm layer whose parameters are frozen in eval mode, recursively."
    for layer in m.children():
        if isinstance(layer, bn_types):
            first = next(layer.parameters(), None)
            # a BatchNorm without affine parameters has nothing to freeze: v1 raised StopIteration there
            if first is not None and not first.requires_grad:
                layer.eval()
        _set_bn_eval(layer)


class BnFreeze(LearnerCallback):
    """Keep the running statistics of frozen BatchNorm layers fixed: at each epoch begin (after the loop's
    ``model.train()``), every BatchNorm layer whose parameters do not require grad goes to eval mode.

    Event: ``on_epoch_begin``; reads and returns nothing.  ``_order = 0`` (v1): the loop has called
    ``model.train()`` before any callback's epoch begin.
    """

    def on_epoch_begin(self, **kwargs: Any) -> None:
        "Put the frozen BatchNorm layers in eval mode."
        _set_bn_eval(self.learn.model)


class GradientClipping(LearnerCallback):
    """Clip the gradient norm of the model's parameters to `clip` (``nn.utils.clip_grad_norm_``) after each
    backward pass; ``clip=0`` does nothing.

    Event: ``on_backward_end``; reads and returns nothing.  ``_order = 0`` (v1); MixedPrecision (999) runs
    after it and clips its fp32 master gradients with its own `clip`.  ``_sync_free = True``: it reads no loss
    (fastloop/_sync_free.py).
    """

    _sync_free = True

    def __init__(self, learn: Learner, clip: float = 0.0):
        super().__init__(learn)
        self.clip = clip

    def on_backward_end(self, **kwargs: Any) -> None:
        "Clip the gradients."
        if self.clip:
            nn.utils.clip_grad_norm_(self.learn.model.parameters(), self.clip)


class AccumulateScheduler(LearnerCallback):
    """Accumulate the gradients of `n_step` batches before each optimizer step (gradient accumulation).

    Use a loss with ``reduction='sum'`` (it warns otherwise): the summed gradients are divided by the
    number of samples counted since the last step.  At the end of each epoch the gradients still pending
    are divided the same way and stepped (unless `drop_last`), then zeroed.

    As in v1, the counters also count the validation batches (``on_batch_begin`` runs for them too), so the
    last partial accumulation of an epoch is divided by a count that includes the validation samples.

    Fixed for torch 2 (documented deviation): v1 divided every ``p.grad`` in place, which fails with
    ``'NoneType' object has no attribute 'div_'`` because ``zero_grad()`` now leaves gradients None
    (fastloop's ``OptimWrapper.zero_grad`` too, as torch's default).  Here a parameter without a gradient is
    skipped, and the end-of-epoch step is left out when no gradient is pending (the epoch's last batch
    stepped): v1 on torch 1.x stepped on zero gradients there, which only applied weight decay and momentum.

    Events and state: ``on_train_begin`` (the reduction warning), ``on_epoch_begin`` (reset the counters),
    ``on_batch_begin`` (reads ``last_input``), ``on_backward_end`` (returns ``{'skip_step': True,
    'skip_zero': True}`` between steps), ``on_epoch_end``.  ``_order = 0`` (v1): before MixedPrecision (999), which
    copies the model's gradients to its master weights at ``on_backward_end`` after the division here; the
    skip flags are read by the loop only after every callback has run.  ``_sync_free = True``: it reads no loss
    (fastloop/_sync_free.py).
    """

    _sync_free = True

    def __init__(self, learn: Learner, n_step: int = 1, drop_last: bool = False):
        super().__init__(learn)
        self.n_step, self.drop_last = n_step, drop_last

    def on_train_begin(self, **kwargs: Any) -> None:
        "Warn when the loss is averaged: the accumulated gradients are divided by the sample count."
        if hasattr(self.learn.loss_func, "reduction") and self.learn.loss_func.reduction != "sum":
            warnings.warn("For better gradients consider 'reduction=sum'", stacklevel=2)

    def on_epoch_begin(self, **kwargs: Any) -> None:
        "Reset the sample and batch counters."
        self.acc_samples, self.acc_batches = 0.0, 0.0

    def on_batch_begin(self, last_input: Any, last_target: Any, **kwargs: Any) -> None:
        "Count the batch and its samples (validation batches too, as in v1)."
        self.acc_samples += _batch_size(last_input)
        self.acc_batches += 1

    def _grads(self) -> list[torch.Tensor]:
        return [p.grad for p in self.learn.model.parameters() if p.requires_grad and p.grad is not None]

    def on_backward_end(self, **kwargs: Any) -> dict | None:
        "Every `n_step` batches: average the summed gradients and let the step happen; otherwise skip it."
        if self.acc_batches % self.n_step == 0:
            for g in self._grads():
                g.div_(self.acc_samples)
            self.acc_samples = 0
            return None
        return {"skip_step": True, "skip_zero": True}

    def on_epoch_end(self, **kwargs: Any) -> None:
        "Step on the gradients still pending (unless `drop_last`), then clear them."
        grads = self._grads()
        if grads:
            for g in grads:
                g.div_(self.acc_samples)
            if not self.drop_last:
                self.learn.opt.step()
        self.learn.opt.zero_grad()


def _batch_size(x: Any) -> int:
    "The batch size of an input: the first dimension of its first tensor (a list of inputs is allowed)."
    while is_listy(x):
        x = x[0]
    return x.shape[0]


# ========================================================================================== interpretation
class Interpretation:
    """Predictions, targets and per-item losses of a model on a dataset, for looking at what went wrong.

    ``Interpretation.from_learner(learn)`` computes them with ``learn.get_preds(ds_type, with_loss=True)``;
    or pass plain tensors: ``Interpretation(learn, preds, y_true, losses)`` (`learn` may be None then).
    """

    def __init__(self, learn: Learner | None, preds: torch.Tensor, y_true: torch.Tensor, losses: torch.Tensor,
                 ds_type: DatasetType = DatasetType.Valid):
        self.learn, self.data = learn, getattr(learn, "data", None)
        self.preds, self.y_true, self.losses, self.ds_type = preds, y_true, losses, ds_type
        self.dl = self.data.dl(ds_type) if self.data is not None else None

    @classmethod
    def from_learner(cls, learn: Learner, ds_type: DatasetType = DatasetType.Valid, activ: nn.Module | None = None,
                     **kwargs: Any) -> Interpretation:
        "Gather the predictions, targets and per-item losses of `learn` on `ds_type`."
        preds_res = learn.get_preds(ds_type=ds_type, activ=activ, with_loss=True)
        return cls(learn, *preds_res, ds_type=ds_type, **kwargs)

    def top_losses(self, k: int | None = None, largest: bool = True) -> Any:
        "The `k` largest (or smallest) per-item losses and their indices (``torch.topk``); all by default."
        return self.losses.topk(ifnone(k, len(self.losses)), largest=largest)


class ClassificationInterpretation(Interpretation):
    """`Interpretation` for single-label classification: confusion matrix and most confused pairs.

    ``pred_class`` is the argmax of the predictions.  The class names are `classes` if given, else
    ``learn.data.classes`` (or the training set's ``classes``), else the class indices ``0 .. c-1``; the number
    of classes is ``learn.data.c`` when the data says, else the predictions' width.
    """

    def __init__(self, learn: Learner | None, preds: torch.Tensor, y_true: torch.Tensor, losses: torch.Tensor,
                 ds_type: DatasetType = DatasetType.Valid, classes: Sequence[Any] | None = None):
        super().__init__(learn, preds, y_true, losses, ds_type)
        self.pred_class = self.preds.argmax(dim=1)
        self.c = self._n_classes()
        self.classes = list(classes) if classes is not None else self._classes()

    def _n_classes(self) -> int:
        c = getattr(self.data, "c", None) if self.data is not None else None
        return int(c) if isinstance(c, int) else int(self.preds.shape[1])

    def _classes(self) -> list[Any]:
        for owner in (self.data, getattr(self.data, "train_ds", None)):
            names = getattr(owner, "classes", None) if owner is not None else None
            if names is not None:
                return list(names)
        return list(range(self.c))

    def confusion_matrix(self, slice_size: int | None = 1) -> np.ndarray:
        """The confusion matrix as a numpy array: row = actual class, column = predicted class.

        `slice_size` items are compared at a time (bounds the memory used); None compares all at once.
        """
        x = torch.arange(0, self.c)
        y_true, pred = self.y_true.view(-1).long(), self.pred_class.view(-1)
        if slice_size is None:
            cm = ((pred == x[:, None]) & (y_true == x[:, None, None])).long().sum(2)
        else:
            cm = torch.zeros(self.c, self.c, dtype=x.dtype)
            for i in range(0, y_true.shape[0], slice_size):
                p, t = pred[i:i + slice_size], y_true[i:i + slice_size]
                cm += ((p == x[:, None]) & (t == x[:, None, None])).long().sum(2)
        return cm.numpy()

    def plot_confusion_matrix(self, normalize: bool = False, title: str = "Confusion matrix", cmap: Any = "Blues",
                              slice_size: int = 1, norm_dec: int = 2, plot_txt: bool = True,
                              return_fig: bool | None = None, **kwargs: Any) -> Any:
        "Plot the confusion matrix (`normalize`: per actual class), with the counts written in the cells."
        import matplotlib.pyplot as plt

        cm = self.confusion_matrix(slice_size=slice_size)
        if normalize:
            cm = cm.astype("float") / cm.sum(axis=1)[:, np.newaxis]
        fig = plt.figure(**kwargs)
        plt.imshow(cm, interpolation="nearest", cmap=cmap)
        plt.title(title)
        tick_marks = np.arange(self.c)
        plt.xticks(tick_marks, self.classes, rotation=90)
        plt.yticks(tick_marks, self.classes, rotation=0)
        if plot_txt:
            thresh = cm.max() / 2.0
            for i in range(cm.shape[0]):
                for j in range(cm.shape[1]):
                    coeff = f"{cm[i, j]:.{norm_dec}f}" if normalize else f"{cm[i, j]}"
                    plt.text(j, i, coeff, horizontalalignment="center", verticalalignment="center",
                             color="white" if cm[i, j] > thresh else "black")
        ax = fig.gca()
        ax.set_ylim(len(self.classes) - 0.5, -0.5)
        plt.tight_layout()
        plt.ylabel("Actual")
        plt.xlabel("Predicted")
        plt.grid(False)
        if ifnone(return_fig, defaults.return_fig):
            return fig
        return None

    def most_confused(self, min_val: int = 1, slice_size: int = 1) -> list[tuple[Any, Any, int]]:
        "``(actual, predicted, count)`` for every off-diagonal cell with at least `min_val` items, most first."
        cm = self.confusion_matrix(slice_size=slice_size)
        np.fill_diagonal(cm, 0)
        res = [(self.classes[i], self.classes[j], int(cm[i, j])) for i, j in zip(*np.where(cm >= min_val))]
        return sorted(res, key=itemgetter(2), reverse=True)


def _learner_interpret(learn: Learner, ds_type: DatasetType = DatasetType.Valid) -> ClassificationInterpretation:
    "A `ClassificationInterpretation` of `learn` on `ds_type`."
    return ClassificationInterpretation.from_learner(learn, ds_type=ds_type)


# ===================================================================================== Learner attachments
Learner.fit_one_cycle = fit_one_cycle
Learner.fit_fc = fit_fc
Learner.lr_find = lr_find
Learner.to_fp16 = to_fp16
Learner.to_fp32 = to_fp32
Learner.mixup = mixup
Learner.clip_grad = clip_grad
Learner.interpret = _learner_interpret
