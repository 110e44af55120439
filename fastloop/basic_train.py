"""The training loop (`fit`, `loss_batch`, `validate`), the `Learner`, `LearnerCallback` and the `Recorder`.

Read `fit` and `loss_batch` top to bottom: each line is one event of fastai v1's loop, in order.
"""

from __future__ import annotations

import dataclasses
import gc
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import _checkpoint
from ._bars import master_bar, progress_bar  # fastprogress's bars; silent ones on ranks other than 0
from ._io import atomic_save
from ._sync_free import LazyLoss, LazyText
from .basic_data import DataBunch, DatasetType
from .callback import Callback, CallbackHandler, OptimWrapper
from .core import camel2snake, defaults, ifnone, is_listy, listify
from .torch_core import (
    AdamW,
    bn_types,
    first_el,
    flatten_model,
    get_model,
    is_pathlike,
    rank_distrib,
    requires_grad,
    split_model,
    to_detach,
    to_float,
)

__all__ = ["Learner", "LearnerCallback", "Recorder", "RecordOnCPU", "fit", "loss_batch", "validate", "get_preds",
           "train_epoch", "AdamW", "format_time", "load_learner", "load_callback"]


# ================================================================================================ the loop
def loss_batch(model: nn.Module, xb: Any, yb: Any, loss_func: Callable | None = None,
               opt: OptimWrapper | None = None, cb_handler: CallbackHandler | None = None) -> Any:
    """One batch: forward, loss, and (with an `opt`) backward, step and zero_grad -- each behind its event.

    Returns the loss detached on the CPU (what ``on_batch_end`` then sees as ``last_loss``), or, without a
    `loss_func`, the detached ``(output, target)`` pair used by `get_preds`.
    """
    if cb_handler is None:
        cb_handler = CallbackHandler()
    if not is_listy(xb):
        xb = [xb]
    if not is_listy(yb):
        yb = [yb]
    model_out = model(*xb)  # a callback that returned a list as last_input feeds several model inputs
    out = cb_handler.on_loss_begin(model_out)  # last_output enters the state; a callback may replace it
    if loss_func is None:
        return to_detach(out), to_detach(yb[0])
    try:
        loss = loss_func(out, *yb)
    except Exception as e:  # name the callback that replaced the output, if one did (a wrong shape, say)
        if out is not model_out:
            _note_replaced_output(e, cb_handler, model_out, out)
        raise
    if opt is not None:
        # smooth_loss is computed inside on_backward_begin, from this raw loss; the loss that comes back
        # (state 'last_loss') is the one we backprop -- a callback may have scaled or replaced it
        loss, skip_bwd = cb_handler.on_backward_begin(loss)
        if not skip_bwd:  # skip_bwd is read here: step and zero_grad still run
            loss.backward()
        if not cb_handler.on_backward_end():  # skip_step is read here
            opt.step()
        if not cb_handler.on_step_end():  # skip_zero is read here
            opt.zero_grad()
    if opt is not None and getattr(cb_handler, "defers_losses", False):
        return loss.detach()  # sync-free: stays on its device; the handler reads it when a callback needs it
    return loss.detach().cpu()


def _note_replaced_output(e: BaseException, cb_handler: CallbackHandler, model_out: Any, out: Any) -> None:
    "on_loss_begin's callbacks replaced the model output: say who (and the shapes) on the loss function's error."
    shape = lambda o: tuple(o.shape) if hasattr(o, "shape") else type(o).__name__  # noqa: E731
    names = [type(cb).__name__ for cb in cb_handler.implementers("loss_begin", call_mets=False)]
    who = f"{names[0]}.on_loss_begin" if len(names) == 1 else f"one of {', '.join(n + '.on_loss_begin' for n in names)}"
    from ._dispatch import note

    note(e, f"fastloop: the loss function failed on a last_output replaced by callback {who} "
            f"(the model's output had shape {shape(model_out)}, the replacement {shape(out)}).")


def validate(model: nn.Module, dl: Any, loss_func: Callable | None = None, cb_handler: CallbackHandler | None = None,
             pbar: Any = None, average: bool = True, n_batch: int | None = None) -> Any:
    """Run `dl` through `model` without grad; return the batch-size-weighted mean loss (numpy float32).

    With ``average=False``, the list of per-batch results.  Each batch fires batch_begin (``train=False``),
    loss_begin and batch_end, metrics included; ``stop_epoch`` ends validation early.
    """
    model.eval()
    with torch.no_grad():
        val_losses, nums = [], []
        if cb_handler is not None:
            cb_handler.set_dl(dl)
        for xb, yb in progress_bar(dl, parent=pbar, leave=(pbar is not None)):
            if cb_handler is not None:
                xb, yb = cb_handler.on_batch_begin(xb, yb, train=False)
            val_loss = loss_batch(model, xb, yb, loss_func, cb_handler=cb_handler)
            val_losses.append(val_loss)
            nums.append(first_el(yb).shape[0])  # the batch size, from the first (possibly nested) target
            if cb_handler is not None and cb_handler.on_batch_end(val_losses[-1]):  # stop_epoch read here
                break
            if n_batch and len(nums) >= n_batch:
                break
        if not average:
            return val_losses
        nums = np.array(nums, dtype=np.float32)
        return (torch.stack(val_losses).cpu().numpy() * nums).sum() / nums.sum()


def train_epoch(model: nn.Module, dl: Any, opt: Any, loss_func: Callable) -> None:
    "Simple training of `model` for 1 epoch of `dl` using optim `opt` and loss function `loss_func`."
    model.train()
    for xb, yb in dl:
        loss = loss_func(model(xb), yb)
        loss.backward()
        opt.step()
        opt.zero_grad()


def fit(epochs: int, learn: Learner, callbacks: Sequence[Callback] | None = None, metrics: Any = None,
        resume_from: Any = None, save_on_interrupt: Any = None) -> None:
    """Fit `learn.model` for `epochs` epochs, firing every callback event on the way (spec §5.1).

    ``learn.model``, ``learn.opt``, ``learn.loss_func`` and the loaders are read again at every use, so a
    callback may swap them during the fit.

    fastloop additions (see `fastloop._checkpoint`): `resume_from` continues a fit from a checkpoint written by
    ``learn.save_checkpoint`` or `CheckpointCallback` -- bit for bit on the CPU; `save_on_interrupt` (a name, or
    True for ``'interrupt'``) writes a checkpoint when Ctrl-C stops the fit.
    """
    assert len(learn.data.train_dl) != 0, (
        f"Your training dataloader is empty, can't train a model. Use a smaller batch size "
        f"(batch size={learn.data.train_dl.batch_size}) for a dataset of length {len(learn.data.train_dl.dataset)}."
    )
    # sync_free="auto" (Learner's default): training losses are read from the device only when looked at
    cb_handler = CallbackHandler(callbacks, metrics, sync_free=getattr(learn, "sync_free", False))
    pbar = master_bar(range(epochs))
    # checkpoints: requests are written at the safe points (after a training batch, after an epoch), Ctrl-C
    # waits for one when save_on_interrupt is set, and a resumed fit is put back where its checkpoint was taken
    with _checkpoint.FitRun(learn, cb_handler, resume_from, save_on_interrupt) as run:
        cb_handler.on_train_begin(epochs, pbar=pbar, metrics=metrics)  # outside the try: its errors fire no train_end
        exception: BaseException | bool = False
        try:
            run.resume_after_train_begin(pbar)  # resuming: callbacks, optimizer, counters as checkpointed
            for _ in pbar:
                # nothing left: resumed from a checkpoint written as the fit was ending, or a callback's
                # {'epoch': k} jump at train_begin left no epoch (fastprogress 1.x would iterate a 0-total bar)
                if run.stop_before_epoch() or cb_handler.state_dict["epoch"] >= epochs:
                    break
                learn.model.train()
                cb_handler.set_dl(learn.data.train_dl)
                train_dl = run.resumed_epoch()  # resuming inside this epoch: its remaining batches
                if train_dl is None:
                    cb_handler.on_epoch_begin()  # num_batch = 0, stop_training = False
                    train_dl = run.epoch_loader(learn.data.train_dl)  # (notes the RNG its shuffle draws from)
                for xb, yb in progress_bar(train_dl, parent=pbar):
                    xb, yb = cb_handler.on_batch_begin(xb, yb)  # last_input/last_target enter the state; flags reset
                    loss = loss_batch(learn.model, xb, yb, learn.loss_func, learn.opt, cb_handler)
                    # the loop hands on_batch_end only the loss: every other key is already in state_dict
                    if cb_handler.on_batch_end(loss):  # stop_epoch is read here
                        break
                if not cb_handler.skip_validate and not learn.data.empty_val:  # skip_validate is read here
                    val_loss = validate(learn.model, learn.data.valid_dl, loss_func=learn.loss_func,
                                        cb_handler=cb_handler, pbar=pbar)
                else:
                    val_loss = None
                if cb_handler.on_epoch_end(val_loss):  # stop_training is read here
                    break
        except Exception as e:  # KeyboardInterrupt is no Exception: train_end then gets exception=False
            exception = e
            raise
        finally:
            run.detach()  # save_checkpoint in on_train_end writes at once (the interrupt checkpoint comes after)
            cb_handler.on_train_end(exception)


# ============================================================================================ LearnerCallback
@dataclasses.dataclass(init=False, repr=False, eq=False)
class LearnerCallback(Callback):
    """A callback bound to a `Learner` (through a weak reference) and registered on it at construction.

    ``LearnerCallback(learn)`` sets ``learn.<camel2snake(class name)> = self`` (``learn.recorder``,
    ``learn.gradient_clipping``...).  Attributes the callback lacks are read from the learner, so
    ``self.model``, ``self.data`` or ``self.opt`` work inside hooks.

    Both ways fastai v1 users subclass it work: an ``__init__(self, learn, ...)`` that calls
    ``super().__init__(learn)``, and a ``@dataclass`` subclass -- with or without a ``learn`` field and a
    ``__post_init__`` calling ``super().__init__(self.learn)``.
    """

    learn: Any  # a dataclass field, so that @dataclass subclasses take `learn` as their first argument

    def __init__(self, learn: Learner):
        self.learn = learn
        self._register()

    def __post_init__(self) -> None:
        # reached from the __init__ that @dataclass generates for a subclass without its own __post_init__
        self._register()

    def _register(self) -> None:
        self.exclude, self.not_min = ["_learn"], []
        setattr(self.learn, self.cb_name, self)

    def __getattr__(self, k: str) -> Any:
        # only reached for attributes the callback lacks: fall through to the learner
        learn = None if k == "_learn" or (k.startswith("__") and k.endswith("__")) else self.learn
        if learn is None:  # not bound to a learner (yet): no fall-through, and no endless recursion as in v1
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {k!r}")
        return getattr(learn, k)

    def __setstate__(self, data: Any) -> None:
        self.__dict__.update(data)

    @property
    def cb_name(self) -> str:
        "The attribute name under which the learner holds this callback."
        return camel2snake(self.__class__.__name__)


def _get_learn(self: LearnerCallback) -> Any:
    ref = self.__dict__.get("_learn")
    return ref() if ref is not None else None


def _set_learn(self: LearnerCallback, learn: Any) -> None:
    self._learn = weakref.ref(learn)


# `learn` is a dataclass field *and* a property storing a weak reference (set after @dataclass has run)
LearnerCallback.learn = property(_get_learn, _set_learn, doc="The learner (held through a weak reference).")


# =================================================================================================== Recorder
def format_time(t: float) -> str:
    "Format seconds as ``mm:ss``, or ``h:mm:ss`` from one hour."
    t = int(t)
    h, m, s = t // 3600, (t // 60) % 60, t % 60
    return f"{h}:{m:02d}:{s:02d}" if h != 0 else f"{m:02d}:{s:02d}"


class Recorder(LearnerCallback):
    """Records lrs, moms, losses, validation losses and metrics; prints the table of epochs.

    Always part of ``Learner.fit`` (``callback_fns[0]``), so ``learn.recorder`` is the last fit's.
    ``_order = -10``: it runs before the order-0 schedulers (so ``lrs`` holds the lr each batch used) and
    after callbacks with ``_order < -10`` that add metric columns.

    Events: ``on_train_begin`` (reads ``pbar``, ``metrics_names``; prints the header), ``on_epoch_begin``
    (timer), ``on_batch_begin`` (reads ``train``; records ``opt.lr``/``opt.mom``), ``on_backward_begin``
    (reads ``smooth_loss``; records it and shows it on the bar), ``on_epoch_end`` (reads ``epoch``,
    ``num_batch``, ``smooth_loss``, ``last_metrics``; records and prints a row).  Returns nothing.

    Sync-free (``_sync_free = True``): in a sync-free fit ``smooth_loss`` may be a `LazyLoss`.  ``losses``
    keeps it, and it turns into its CPU tensor in the list when read -- at the latest at ``on_epoch_end``
    (which prints it) or ``on_train_end`` -- so after each epoch ``losses`` holds v1's tensors.  The bar's
    comment is a `LazyText`, formatted only when fastprogress redraws.
    """

    _order = -10
    _sync_free = True  # reads smooth_loss lazily (see fastloop/_sync_free.py); only this class, not subclasses

    def __init__(self, learn: Learner, add_time: bool = True, silent: bool = False):
        super().__init__(learn)
        if learn.opt is None:
            learn.create_opt(defaults.lr, learn.wd)
        self.opt = self.learn.opt
        self.train_dl = self.learn.data.train_dl
        self.no_val, self.silent, self.add_time = False, silent, add_time

    def on_train_begin(self, pbar: Any, metrics_names: list[str], **kwargs: Any) -> None:
        "Initialize recording status at beginning of training."
        self.pbar = pbar
        self.names = ["epoch", "train_loss"] if self.no_val else ["epoch", "train_loss", "valid_loss"]
        self.metrics_names = metrics_names
        if "_added_met_names" in self.__dict__:
            self.metrics_names += self._added_met_names  # extends the handler's list in place, as v1
        self.names += self.metrics_names
        if self.add_time:
            self.names.append("time")
        if not self.silent:
            self.pbar.write(self.names, table=True)
        self.losses, self.val_losses, self.lrs, self.moms, self.metrics, self.nb_batches = [], [], [], [], [], []

    def on_epoch_begin(self, **kwargs: Any) -> None:
        "Start the epoch timer."
        if self.add_time:
            self.start_epoch = time.time()

    def on_batch_begin(self, train: bool, **kwargs: Any) -> None:
        "Record learning rate and momentum at beginning of batch."
        if train:
            self.lrs.append(self.opt.lr)
            self.moms.append(self.opt.mom)

    def on_backward_begin(self, smooth_loss: torch.Tensor, **kwargs: Any) -> None:
        "Record the loss before any other callback has a chance to modify it."
        losses = self.losses
        losses.append(smooth_loss)
        if type(smooth_loss) is LazyLoss:  # sync-free: becomes its CPU tensor in `losses` once read
            smooth_loss.store_in(losses, len(losses) - 1)
        if self.pbar is not None and hasattr(self.pbar, "child"):
            # f"{smooth_loss:.4f}", formatted only if fastprogress redraws before the next batch (it throttles)
            self.pbar.child.comment = LazyText(smooth_loss, ".4f")

    def on_epoch_end(self, epoch: int, num_batch: int, smooth_loss: torch.Tensor, last_metrics: list,
                     **kwargs: Any) -> None:
        "Save epoch info: num_batch, smooth_loss, metrics."
        self.nb_batches.append(num_batch)
        if last_metrics is not None:
            self.val_losses.append(last_metrics[0])
        else:
            last_metrics = [] if self.no_val else [None]
        if len(last_metrics) > 1:
            self.metrics.append(last_metrics[1:])
        if type(smooth_loss) is LazyLoss:  # sync-free: read the epoch's losses (one copy); `losses` gets tensors
            smooth_loss = smooth_loss.value
        # no_val (set by CycleGANTrainer): the header has no valid_loss column, so the row leaves out the
        # valid-loss slot; fastai 1.0.61 printed it and shifted every metric one column to the right
        self.format_stats([epoch, smooth_loss] + (last_metrics[1:] if self.no_val else last_metrics))

    def on_train_end(self, **kwargs: Any) -> None:
        "Sync-free: a fit cut short mid-epoch still leaves CPU tensors in `losses` (v1 has no on_train_end here)."
        if self.losses and type(self.losses[-1]) is LazyLoss:
            self.losses[-1] = self.losses[-1].value  # reads every pending loss; each handle replaces itself

    def format_stats(self, stats: Sequence[Any]) -> None:
        "Format and print one row: ints as they are, None as #na#, the rest with 6 decimals."
        str_stats = []
        for _name, stat in zip(self.names, stats):
            str_stats.append("#na#" if stat is None else str(stat) if isinstance(stat, int) else f"{stat:.6f}")
        if self.add_time:
            str_stats.append(format_time(time.time() - self.start_epoch))
        if not self.silent:
            self.pbar.write(str_stats, table=True)

    def add_metric_names(self, names: Sequence[str]) -> None:
        "Add column names (call it in ``on_train_begin`` of a callback with ``_order < -10``)."
        self.__dict__.setdefault("_added_met_names", [])
        self._added_met_names += list(names)

    # -- plots (matplotlib is imported only when a plot is asked for)
    @staticmethod
    def _split_list(vals: Sequence[Any], skip_start: int, skip_end: int) -> Sequence[Any]:
        return vals[skip_start:-skip_end] if skip_end > 0 else vals[skip_start:]

    @staticmethod
    def _finish(fig: Any, return_fig: bool | None) -> Any:
        if ifnone(return_fig, defaults.return_fig):
            return fig
        import matplotlib
        import matplotlib.pyplot as plt

        if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "ps", "cairo", "template"):
            plt.show()
        return None

    def plot_lr(self, show_moms: bool = False, skip_start: int = 0, skip_end: int = 0,
                return_fig: bool | None = None) -> Any:
        "Plot learning rate (and momentum with `show_moms`) against iterations."
        import matplotlib.pyplot as plt

        lrs = self._split_list(self.lrs, skip_start, skip_end)
        iterations = self._split_list(list(range(len(self.lrs))), skip_start, skip_end)
        if show_moms:
            moms = self._split_list(self.moms, skip_start, skip_end)
            fig, axs = plt.subplots(1, 2, figsize=(12, 4))
            axs[0].plot(iterations, lrs)
            axs[0].set_xlabel("Iterations")
            axs[0].set_ylabel("Learning Rate")
            axs[1].plot(iterations, moms)
            axs[1].set_xlabel("Iterations")
            axs[1].set_ylabel("Momentum")
        else:
            fig, ax = plt.subplots()
            ax.plot(iterations, lrs)
            ax.set_xlabel("Iterations")
            ax.set_ylabel("Learning Rate")
        return self._finish(fig, return_fig)

    def plot(self, skip_start: int = 10, skip_end: int = 5, suggestion: bool = False,
             return_fig: bool | None = None, show_grid: bool = False, **kwargs: Any) -> Any:
        """Plot loss against learning rate (log scale); with `suggestion`, print and mark the lr of the steepest
        descent (stored in ``self.min_grad_lr``) and print the lr of the minimum loss / 10.  A ``k=`` keyword
        (with the other `kwargs`) smooths the losses with ``scipy.interpolate.UnivariateSpline`` first, as v1."""
        import matplotlib.pyplot as plt

        lrs = self._split_list(self.lrs, skip_start, skip_end)
        losses = [float(x) for x in self._split_list(self.losses, skip_start, skip_end)]
        if "k" in kwargs:  # v1's spline smoothing (needs scipy, imported only here)
            from scipy.interpolate import UnivariateSpline

            xs = np.arange(len(losses))
            losses = list(UnivariateSpline(xs, losses, **kwargs)(xs))
        fig, ax = plt.subplots(1, 1)
        ax.plot(lrs, losses)
        ax.set_ylabel("Loss")
        ax.set_xlabel("Learning Rate")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(plt.FormatStrFormatter("%.0e"))
        if suggestion:
            try:
                mg = int(np.gradient(np.array(losses)).argmin())
            except (ValueError, IndexError):
                print("Failed to compute the gradients, there might not be enough points.")
                return None
            print(f"Min numerical gradient: {lrs[mg]:.2E}")
            ax.plot(lrs[mg], losses[mg], markersize=10, marker="o", color="red")
            self.min_grad_lr = lrs[mg]
            ml = int(np.argmin(losses))
            print(f"Min loss divided by 10: {lrs[ml] / 10:.2E}")
        if show_grid:
            ax.grid(True)
        return self._finish(fig, return_fig)

    def plot_losses(self, skip_start: int = 0, skip_end: int = 0, return_fig: bool | None = None,
                    show_grid: bool = False) -> Any:
        "Plot training (smoothed, per batch) and validation (per epoch) losses."
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 1)
        losses = [float(x) for x in self._split_list(self.losses, skip_start, skip_end)]
        iterations = self._split_list(list(range(len(self.losses))), skip_start, skip_end)
        ax.plot(iterations, losses, label="Train")
        val_iter = np.cumsum(self.nb_batches)
        points = [(i, float(v)) for i, v in zip(val_iter, self.val_losses) if v is not None]
        points = [(i, v) for i, v in points if skip_start <= i <= len(self.losses) - skip_end]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], label="Validation")
        ax.set_ylabel("Loss")
        ax.set_xlabel("Batches processed")
        ax.legend()
        if show_grid:
            ax.grid(True)
        return self._finish(fig, return_fig)

    def plot_metrics(self, skip_start: int = 0, skip_end: int = 0, return_fig: bool | None = None,
                     show_grid: bool = False) -> Any:
        "Plot each metric column against the batches processed at each validation."
        import matplotlib.pyplot as plt

        assert len(self.metrics) != 0, "There are no metrics to plot."
        n_cols = len(self.metrics[0])
        fig, axes = plt.subplots(n_cols, 1, figsize=(6, 4 * n_cols), squeeze=False)
        val_iter = [i for i, v in zip(np.cumsum(self.nb_batches), self.val_losses) if v is not None]
        val_iter = self._split_list(val_iter, skip_start, skip_end)
        names = self.names[3:3 + n_cols] if len(self.names) > 3 else [f"metric {i}" for i in range(n_cols)]
        for i, ax in enumerate(axes.flatten()):
            values = [float(m[i]) for m in self._split_list(self.metrics, skip_start, skip_end)]
            ax.plot(val_iter[:len(values)], values)
            ax.set_ylabel(names[i] if i < len(names) else f"metric {i}")
            ax.set_xlabel("Batches processed")
            if show_grid:
                ax.grid(True)
        return self._finish(fig, return_fig)


class RecordOnCPU(Callback):
    """Keep CPU copies of the batch's input and target.

    Event: ``on_batch_begin`` (reads ``last_input``, ``last_target``; returns nothing).  ``_order`` 0: it only
    copies, so it may run anywhere among the order-0 callbacks.
    """

    def on_batch_begin(self, last_input: Any, last_target: Any, **kwargs: Any) -> None:
        self.input, self.target = to_detach(last_input), to_detach(last_target)


# ==================================================================================================== Learner
def _loss_func2activ(loss_func: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation that turns a loss's raw outputs into predictions (softmax, exp, sigmoid, or none)."""
    keywords = getattr(loss_func, "keywords", None) or {}
    if not keywords.get("log_input", True):
        return _identity
    axis = getattr(loss_func, "axis", -1)
    loss_func = getattr(loss_func, "func", loss_func)  # a partial or a flattened loss
    loss_func = getattr(loss_func, "crit", loss_func)  # MixUpLoss wraps the real one
    # looked up by name, as v1 does: a subclass of a torch loss gets no activation
    by_name = {"cross_entropy_loss": partial(F.softmax, dim=axis), "nll_loss": torch.exp,
               "poisson_nll_loss": torch.exp, "kl_div_loss": torch.exp, "bce_with_logits_loss": torch.sigmoid,
               "cross_entropy": partial(F.softmax, dim=axis), "kl_div": torch.exp,
               "binary_cross_entropy_with_logits": torch.sigmoid}
    class_name = camel2snake(type(loss_func).__name__)
    if class_name in by_name:
        if class_name == "poisson_nll_loss" and not getattr(loss_func, "log_input", True):
            return _identity
        return by_name[class_name]
    return by_name.get(getattr(loss_func, "__name__", ""), _identity)


def _identity(x: Any) -> Any:
    return x


def get_preds(model: nn.Module, dl: Any, pbar: Any = None, cb_handler: CallbackHandler | None = None,
              activ: Callable | None = None, loss_func: Callable | None = None, n_batch: int | None = None) -> list:
    "Predictions and targets of `model` on `dl` (plus per-item losses with `loss_func`), activated by `activ`."
    results = validate(model, dl, cb_handler=cb_handler, pbar=pbar, average=False, n_batch=n_batch)
    res = [to_float(torch.cat(o).cpu()) for o in zip(*results)]
    if loss_func is not None:
        res.append(_unreduced_loss(loss_func, res[0], res[1]))
    if activ is not None:
        res[0] = activ(res[0])
    return res


def _unreduced_loss(loss_func: Callable, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    "Per-item losses: the loss's `reduction` set to 'none' for the call (or passed as a keyword)."
    if hasattr(loss_func, "reduction"):
        old = loss_func.reduction
        loss_func.reduction = "none"
        try:
            return loss_func(out, target)
        finally:
            loss_func.reduction = old
    return loss_func(out, target, reduction="none")


def _plain(x: Any) -> Any:
    """numpy scalars/arrays in optimizer param groups -> Python numbers/lists, so checkpoints load with
    ``torch.load(weights_only=True)``."""
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, tuple):
        return tuple(_plain(o) for o in x)
    if isinstance(x, list):
        return [_plain(o) for o in x]
    if isinstance(x, slice):  # fastai v1's freeze quirk stores slice(3e-3) as an lr until the next fit
        return _plain(x.stop)
    return x


class Learner:
    """Trains `model` on `data` with `opt_func`, `loss_func`, `metrics` and callbacks (fastai v1's Learner).

    Callbacks come from three places, merged at each `fit` in this order and then stably sorted by
    ``_order``: ``learn.callbacks`` (instances kept across fits), ``callback_fns`` (functions of the
    learner, called anew at each fit; ``callback_fns[0]`` makes the `Recorder`), and ``fit(callbacks=...)``.

    ``layer_groups`` defaults to one group of all leaf modules; ``wd`` is applied as true weight decay
    unless ``true_wd=False``; ``bn_wd=False`` spares biases and norm layers.

    ``sync_free`` (fastloop): training losses stay on the device and are read only when looked at.  "auto"
    (default) is invisible: a callback that does not declare ``_sync_free = True`` still gets v1's CPU
    tensors (read just before it is called); True hands every callback the device values (``last_loss``
    a detached device tensor, ``smooth_loss`` a `LazyLoss`); False reads every loss at once, as v1.
    """

    def __init__(self, data: DataBunch, model: nn.Module, opt_func: Callable = AdamW, loss_func: Callable | None = None,
                 metrics: Any = None, true_wd: bool = True, bn_wd: bool = True, wd: Any = defaults.wd,
                 train_bn: bool = True, path: str | Path | None = None, model_dir: str | Path = "models",
                 callback_fns: Any = None, callbacks: Any = None, layer_groups: Sequence[nn.Module] | None = None,
                 add_time: bool = True, silent: bool | None = None, sync_free: bool | str = "auto"):
        self.data, self.opt_func, self.metrics = data, opt_func, listify(metrics)
        self.sync_free = sync_free  # read by fit: "auto" (invisible), True (callbacks see device values), False (v1)
        self.true_wd, self.bn_wd, self.wd, self.train_bn = true_wd, bn_wd, wd, train_bn
        self.model_dir, self.add_time, self.silent = model_dir, add_time, ifnone(silent, defaults.silent)
        self.path = Path(ifnone(path, data.path))
        self.model = model.to(data.device)
        self.loss_func = ifnone(loss_func, data.loss_func)
        self.opt: OptimWrapper | None = None
        self.layer_groups = list(layer_groups) if layer_groups else [nn.Sequential(*flatten_model(self.model))]
        self.callbacks = listify(callbacks)
        if defaults.extra_callbacks is not None:
            self.callbacks += defaults.extra_callbacks
        self.callback_fns = [partial(Recorder, add_time=self.add_time, silent=self.silent)] + listify(callback_fns)

    def __repr__(self) -> str:
        return (f"Learner(data={type(self.data).__name__}, model={type(self.model).__name__}, "
                f"opt_func={getattr(self.opt_func, '__name__', self.opt_func)}, loss_func={self.loss_func}, "
                f"metrics={[getattr(m, '__name__', type(m).__name__) for m in self.metrics]}, "
                f"callbacks={[type(cb).__name__ for cb in self.callbacks]}, path={self.path})")

    # -- optimizer and layer groups
    def init(self, init: Callable[[torch.Tensor], Any]) -> None:
        """Initialise the weights of the model's trainable, non-BatchNorm modules with `init` and zero their
        biases (`fastloop.torch_core.apply_init`, as fastai v1)."""
        from .torch_core import apply_init

        apply_init(self.model, init)

    def lr_range(self, lr: float | slice) -> Any:
        "A slice becomes one lr per layer group: ``slice(hi)`` -> hi/10 then hi; ``slice(lo, hi)`` -> geometric."
        if not isinstance(lr, slice):
            return lr
        n = len(self.layer_groups)
        if lr.start:
            from .core import even_mults

            return even_mults(lr.start, lr.stop, n)
        return np.array([lr.stop / 10] * (n - 1) + [lr.stop])

    def create_opt(self, lr: Any, wd: Any = 0.0) -> None:
        "Create the optimizer (an `OptimWrapper`, two param groups per layer group) with `lr` and `wd`."
        self.opt = OptimWrapper.create(self.opt_func, lr, self.layer_groups, wd=wd, true_wd=self.true_wd,
                                       bn_wd=self.bn_wd)

    def split(self, split_on: Any) -> Learner:
        "Split the model into layer groups at `split_on` (modules, or a function of the model)."
        if callable(split_on) and not isinstance(split_on, nn.Module):
            split_on = split_on(self.model)
        self.layer_groups = split_model(self.model, split_on)
        return self

    def freeze_to(self, n: int) -> None:
        "Freeze the layer groups before `n` (BatchNorm stays trainable if `train_bn`); recreate the optimizer."
        if hasattr(self.model, "reset"):
            self.model.reset()
        for g in self.layer_groups[:n]:
            for layer in g:
                if not self.train_bn or not isinstance(layer, bn_types):
                    requires_grad(layer, False)
        for g in self.layer_groups[n:]:
            requires_grad(g, True)
        self.create_opt(defaults.lr)

    def freeze(self) -> None:
        "Freeze all layer groups but the last."
        assert len(self.layer_groups) > 1
        self.freeze_to(-1)

    def unfreeze(self) -> None:
        "Make every layer group trainable."
        self.freeze_to(0)

    # -- training
    def fit(self, epochs: int, lr: Any = defaults.lr, wd: Any = None, callbacks: Any = None, resume_from: Any = None,
            save_on_interrupt: Any = None) -> None:
        """Fit for `epochs` with `lr` (a slice gives one lr per layer group) and `wd`; `callbacks` for this fit only.

        fastloop additions: `resume_from` (a checkpoint name or path) continues the fit where the checkpoint was
        taken -- pass the same epochs and callbacks as the interrupted fit; `save_on_interrupt` (a name, or True
        for ``'interrupt'``) writes a checkpoint if Ctrl-C stops the fit.  See ``docs/reliability.md``.
        """
        lr = self.lr_range(lr)
        if wd is None:
            wd = self.wd
        if self.opt is None:
            self.create_opt(lr, wd)
        else:  # mom and beta are kept: after fit_one_cycle a plain fit keeps the last momentum (v1)
            self.opt.lr, self.opt.wd = lr, wd
        callbacks = self._new_callbacks_from_fns() + listify(callbacks)
        fit(epochs, self, metrics=self.metrics, callbacks=self.callbacks + callbacks, resume_from=resume_from,
            save_on_interrupt=save_on_interrupt)

    def _new_callbacks_from_fns(self) -> list[Callback]:
        "Fresh instances from `callback_fns` (the Recorder first) and `defaults.extra_callback_fns`."
        return [cb(self) for cb in self.callback_fns + listify(defaults.extra_callback_fns)]

    # -- per-callback timing (fastloop.callbacks.timing; imported when asked for)
    def time_callbacks(self, on: bool = True, warn_share: float | None = 0.25, min_batches: int = 10) -> Learner:
        "Time every callback at every event in the next fits (off by default); read it with `callback_times`."
        from .callbacks.timing import time_callbacks

        return time_callbacks(self, on=on, warn_share=warn_share, min_batches=min_batches)

    def callback_times(self) -> Any:
        "Per callback and event: calls, total/mean time, share of the training batch time (last timed fit)."
        from .callbacks.timing import callback_times

        return callback_times(self)

    # -- explaining the loop (fastloop.explain; imported when asked for)
    def show_training_loop(self, callbacks: Any = None, trace: Any = None) -> Any:
        "Who runs at each event of the next `fit`, what each reads and returns (see `fastloop.explain`)."
        from .explain import show_training_loop

        return show_training_loop(self, callbacks=callbacks, trace=trace)

    def trace(self, events: Any = None, max_records: int = 100_000) -> Any:
        "``with learn.trace() as t: learn.fit(1)``: record the state at every event (`fastloop.callbacks.tracer`)."
        from .callbacks.tracer import trace

        return trace(self, events=events, max_records=max_records)

    def dl(self, ds_type: DatasetType = DatasetType.Valid) -> Any:
        "The loader of `ds_type`."
        return self.data.dl(ds_type)

    def validate(self, dl: Any = None, callbacks: Any = None, metrics: Any = None) -> list:
        """Validate on `dl` (the validation set by default); return ``[val_loss, *metrics]``.

        Runs ``learn.callbacks`` plus `callbacks` -- no `callback_fns`, so no Recorder -- with train_begin
        (``pbar=None``), epoch_begin, the validation batches and epoch_end; no train_end (as v1).
        """
        dl = ifnone(dl, self.data.valid_dl)
        metrics = ifnone(metrics, self.metrics)
        cb_handler = CallbackHandler(self.callbacks + ifnone(callbacks, []), metrics)
        cb_handler.on_train_begin(1, None, metrics)
        cb_handler.on_epoch_begin()
        val_metrics = validate(self.model, dl, self.loss_func, cb_handler)
        cb_handler.on_epoch_end(val_metrics)
        return cb_handler.state_dict["last_metrics"]

    def get_preds(self, ds_type: DatasetType = DatasetType.Valid, activ: Callable | None = None,
                  with_loss: bool = False, n_batch: int | None = None, pbar: Any = None) -> list:
        """``[predictions, targets]`` (plus per-item losses `with_loss`) on the `ds_type` set.

        As in v1, ``callback_fns`` are instantiated (so ``learn.recorder`` becomes a new, empty Recorder)
        and only batch events fire.
        """
        if self.opt is None:
            self.create_opt(defaults.lr, self.wd)
        lf = self.loss_func if with_loss else None
        activ = ifnone(activ, _loss_func2activ(self.loss_func))
        callbacks = self._new_callbacks_from_fns() + listify(self.callbacks)
        return get_preds(self.model, self.dl(ds_type), cb_handler=CallbackHandler(callbacks), activ=activ,
                         loss_func=lf, n_batch=n_batch, pbar=pbar)

    def pred_batch(self, ds_type: DatasetType = DatasetType.Valid, batch: tuple | None = None,
                   reconstruct: bool = False, with_dropout: bool = False, activ: Callable | None = None) -> Any:
        """Activated predictions for one batch (`batch`, or the first of `ds_type`); batch_begin and loss_begin fire.

        ``reconstruct=True`` needs fastai's ItemList, which fastloop does not have: it raises ValueError.
        """
        if reconstruct:
            raise ValueError("pred_batch(reconstruct=True) needs fastai ItemLists; fastloop returns tensors only.")
        if batch is not None:
            xb, yb = batch
        else:
            xb, yb = self.data.one_batch(ds_type, detach=False, denorm=False)
        cb_handler = CallbackHandler(self.callbacks)
        xb, yb = cb_handler.on_batch_begin(xb, yb, train=False)
        activ = ifnone(activ, _loss_func2activ(self.loss_func))
        with torch.no_grad():
            self.model.eval()
            if with_dropout:
                self.model.apply(_dropout_train)
            preds = loss_batch(self.model, xb, yb, cb_handler=cb_handler)
            return activ(preds[0])

    def predict(self, item: torch.Tensor,
                activ: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predict one un-batched input tensor `item`; returns ``(prediction, index, activations)``.

        fastloop has no ItemList to decode with, so for classification losses (softmax/sigmoid/exp
        activations) the prediction and the index are the argmax of the activations; for others all three
        are the activated output.
        """
        x = item.unsqueeze(0).to(self.data.device)
        activ = ifnone(activ, _loss_func2activ(self.loss_func))
        probs = self.pred_batch(batch=(x, torch.zeros(1)), activ=activ)[0]
        if activ is _identity:
            return probs, probs, probs
        idx = probs.argmax(dim=-1)
        return idx, idx, probs

    # -- persistence
    def save(self, file: Any = None, return_path: bool = False, with_opt: bool = True) -> Path | None:
        """Save the model (and optimizer state) to ``path/model_dir/{file}.pth``, or into a file object.

        The file holds tensors, numbers, strings, lists and dicts only, so ``torch.load`` with torch's
        ``weights_only=True`` default reads it.  Does nothing on distributed ranks other than 0 (v1).
        The write is atomic (`fastloop._io.atomic_save`).
        """
        if rank_distrib():
            return None
        if is_pathlike(file):
            target = self.path / self.model_dir / f"{file}.pth"
            target.parent.mkdir(parents=True, exist_ok=True)
        else:
            target = file
        if self.opt is None:
            with_opt = False
        model_state = get_model(self.model).state_dict()
        if with_opt:
            opt_state = self.opt.state_dict()
            opt_state["param_groups"] = [{k: _plain(v) for k, v in pg.items()} for pg in opt_state["param_groups"]]
            state = {"model": model_state, "opt": opt_state}
        else:
            state = model_state
        atomic_save(state, target)  # temp file + fsync + os.replace: a crash leaves the old file intact
        return target if return_path else None

    def save_checkpoint(self, name: Any) -> Path:
        """Write a resumable checkpoint ``path/model_dir/{name}.pth`` (see `fastloop._checkpoint`); returns its path.

        From a callback during a fit this is a request, written at the next safe point: after the running training
        batch (resume continues at the next batch) or, during validation or at ``on_epoch_end``, after the epoch
        (resume starts the next epoch).  Between fits it writes at once: model, optimizer, RNG states and
        ``learn.callbacks``.  The write is atomic.  Resume with ``learn.fit(..., resume_from=name)``.
        """
        return _checkpoint.save_checkpoint(self, name)

    def load_checkpoint(self, name: Any) -> Learner:
        """Load the model, optimizer and RNG states of checkpoint `name` (and ``learn.callbacks``' states when it
        was taken between fits).  To continue an interrupted fit, use ``fit(..., resume_from=name)`` instead."""
        return _checkpoint.load_checkpoint(self, name)

    def __delattr__(self, name: str) -> None:
        # a callback deleting the optimizer (or the model, the data) mid-fit would break the loop later, far from
        # the culprit: refuse it here, inside the callback, so the error names the callback and the event
        if name in ("opt", "model", "data") and _checkpoint.current_run(self) is not None:
            raise AttributeError(f"learn.{name} cannot be deleted during fit: the training loop reads it at every "
                                 f"batch. Replace it (learn.{name} = ...) instead.")
        super().__delattr__(name)

    def load(self, file: Any = None, device: Any = None, strict: bool = True, with_opt: bool | None = None,
             purge: bool = False, remove_module: bool = False) -> Learner:
        """Load ``path/model_dir/{file}.pth`` (or a file object) into the model, and the optimizer state if saved.

        As in v1, a failing optimizer load is ignored, and the wrapper's ``lr``/``mom`` lists keep their values.
        With ``purge=True``, `purge` runs first (``clear_opt=with_opt or False``, as v1).
        """
        if purge:
            self.purge(clear_opt=ifnone(with_opt, False))
        if device is None:
            device = self.data.device
        elif isinstance(device, int):
            device = torch.device("cuda", device)
        source = self.path / self.model_dir / f"{file}.pth" if is_pathlike(file) else file
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        state = _load_checkpoint(source, device)
        if set(state.keys()) == {"model", "opt"}:
            model_state = state["model"]
            if remove_module:
                model_state = {k.removeprefix("module."): v for k, v in model_state.items()}
            get_model(self.model).load_state_dict(model_state, strict=strict)
            if ifnone(with_opt, True):
                if self.opt is None:
                    self.create_opt(defaults.lr, self.wd)
                try:
                    self.opt.load_state_dict(_steps_on_cpu(state["opt"]))
                except Exception:  # as v1: a mismatching optimizer state is ignored
                    pass
        else:
            if with_opt:
                warnings.warn("Saved file doesn't contain an optimizer state.", stacklevel=2)
            if remove_module:
                state = {k.removeprefix("module."): v for k, v in state.items()}
            get_model(self.model).load_state_dict(state, strict=strict)
        del state
        gc.collect()
        return self

    # -- housekeeping between experiments (fastloop/_housekeeping.py)
    def export(self, file: Any = "export.pkl", destroy: bool = False) -> None:
        """Save what inference needs -- model, loss, metrics, settings, callbacks' states, data settings without
        the datasets -- to ``path/file`` (or a file object), for `load_learner`; then `destroy` if asked.

        The weights load with ``torch.load`` under ``weights_only=True``; rebuilding the learner unpickles the
        classes and functions it names (see `fastloop._housekeeping`).
        """
        from ._housekeeping import export

        export(self, file, destroy_after=destroy)

    def purge(self, clear_opt: bool = True) -> Learner:
        """Release memory between experiments: delete every attribute but ``data`` and ``recorder``, reload the
        settings, model and layer groups as fresh copies, rebuild ``learn.callbacks`` from their state, and the
        optimizer too unless `clear_opt` (spec §10.5)."""
        from ._housekeeping import purge

        return purge(self, clear_opt=clear_opt)

    def destroy(self) -> None:
        """Free the learner's internals, leaving an empty shell: attributes read as None and methods do nothing,
        each printing ``this object has been destroyed``."""
        from ._housekeeping import destroy

        destroy(self)

    def show_results(self, ds_type: DatasetType = DatasetType.Valid, rows: int = 5, **kwargs: Any) -> None:
        """Print the targets and predictions of the first `rows` items of `ds_type` (v1 drew them with its
        ItemLists, which fastloop's plain datasets do not have)."""
        from ._housekeeping import show_results

        show_results(self, ds_type, rows, **kwargs)


def load_learner(path: Any, file: Any = "export.pkl", test: Any = None, tfm_y: Any = None, **db_kwargs: Any) -> Learner:
    """Rebuild a learner saved with `Learner.export` (from ``path/file``, or the file object `file`), with empty
    data; `test` (a dataset) becomes its ``test_dl``.  Unpickles the classes the file names: trusted files only."""
    from ._housekeeping import load_learner as _load_learner

    return _load_learner(path, file, test=test, tfm_y=tfm_y, **db_kwargs)


def load_callback(class_func: type, state: dict, learn: Learner) -> Callback:
    """Re-create a callback from its class and ``get_state()`` (``__init__`` arguments first, then attributes)."""
    from ._housekeeping import load_callback as _load_callback

    return _load_callback(class_func, state, learn)


def _steps_on_cpu(opt_state: dict) -> dict:
    """`opt_state` with its ``step`` counters on the CPU, where torch's optimizers keep them.

    A checkpoint read with ``map_location=cuda`` (v1's ``learn.load``, and so after every ``lr_find``) puts
    them on the GPU, and torch's optimizers then leave them there: each step reads the counter back, one
    host-device sync per step.  Groups that are ``capturable`` or ``fused`` keep theirs on the device.
    """
    on_device = {pid for g in opt_state.get("param_groups", []) if g.get("capturable") or g.get("fused")
                 for pid in g.get("params", [])}
    for pid, param_state in opt_state.get("state", {}).items():
        step = param_state.get("step")
        if isinstance(step, torch.Tensor) and pid not in on_device:
            param_state["step"] = step.cpu()
    return opt_state


def _load_checkpoint(source: Any, device: Any) -> Any:
    """``torch.load`` with torch's safe ``weights_only=True``; files written by fastai v1 itself hold numpy
    scalars in their optimizer state, so those (and only those) numpy types are allowed on a second try."""
    import pickle

    try:
        return torch.load(source, map_location=device)
    except pickle.UnpicklingError:
        if hasattr(source, "seek"):
            source.seek(0)
        numpy_scalars = [np.dtype, type(np.dtype(np.float64)), type(np.dtype(np.float32)), type(np.dtype(np.int64))]
        try:
            numpy_scalars.append(np._core.multiarray.scalar)
        except AttributeError:  # numpy < 2
            numpy_scalars.append(np.core.multiarray.scalar)
        with torch.serialization.safe_globals(numpy_scalars):
            return torch.load(source, map_location=device)


def _dropout_train(m: nn.Module) -> None:
    if isinstance(m, nn.modules.dropout._DropoutNd):
        m.train()


# Last, once everything above exists: `fastloop.train` attaches fit_one_cycle, lr_find, to_fp16, mixup... to
# Learner, so a script importing only this module has them too (see the docstring of fastloop/train.py).
from . import train as _train  # noqa: E402, F401  (isort: skip)

