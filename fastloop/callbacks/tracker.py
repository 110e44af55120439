"""Callbacks that watch a quantity and act on it: early stopping, saving the best model, reducing the lr on
a plateau, stopping on a NaN loss, and keeping the epoch number on disk (fastai v1's ``callbacks.tracker``)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from .._io import atomic_write_text
from .._sync_free import LazyLoss
from ..basic_train import Learner, LearnerCallback
from ..callback import Callback

__all__ = ["TerminateOnNaNCallback", "EarlyStoppingCallback", "SaveModelCallback", "TrackerCallback",
           "ReduceLROnPlateauCallback", "TrackEpochCallback"]


def _plain(x: Any) -> Any:
    "A tensor as a numpy value for the comparison ufuncs (numpy 2 deprecates ufuncs on tensors); the rest as is."
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x


def _isnan(x: Any) -> bool:
    "NaN test for a tensor (any NaN element) or a plain number; False for anything else."
    if isinstance(x, torch.Tensor):
        return bool(torch.isnan(x).any())
    if isinstance(x, (float, np.floating)):
        return bool(np.isnan(x))
    return False


class TerminateOnNaNCallback(Callback):
    """Stop the fit at the end of the first batch (training or validation) whose loss is NaN.

    It prints ``Epoch/Batch ({epoch}/{num_batch}): Invalid loss, terminating training.`` and returns
    ``{'stop_epoch': True, 'stop_training': True, 'skip_validate': True}``: the running loader loop breaks,
    no (further) validation runs, and the fit ends after this epoch's ``on_epoch_end``.  As in v1 the loss
    tested is the one ``loss_batch`` returned, so a loss a callback scaled (MixedPrecision) is the one seen.
    As in v1 the NaN batch's backward and step have already run.

    ``skip_nan_step=True`` (fastloop, opt-in) also looks at the loss at ``on_backward_begin`` and, when it is
    NaN, returns ``{'skip_bwd': True, 'skip_step': True}``: that batch is neither backpropagated nor stepped,
    so the weights stay those of the last good step.

    Events and state: ``on_batch_end`` reads ``last_loss``, ``epoch``, ``num_batch``; with `skip_nan_step`,
    ``on_backward_begin`` reads ``last_loss``.  ``get_preds`` hands batch_end an ``(output, target)`` pair as
    ``last_loss``: only tensors and numbers are tested (v1 raised a TypeError there).

    ``_order = 0`` (v1): it only reads the loss and sets flags, read by the loop after all callbacks ran.
    ``_sync_free = True``: in a sync-free fit (fastloop's default) ``last_loss`` at ``on_batch_end`` is the loss
    on its device, tested there -- the same value; ``smooth_loss`` is never read.
    """

    _sync_free = True  # see fastloop/_sync_free.py

    def __init__(self, skip_nan_step: bool = False):
        self.stop, self.skip_nan_step = False, skip_nan_step

    def on_backward_begin(self, last_loss: Any, **kwargs: Any) -> dict | None:
        "With `skip_nan_step`: skip backward and step for a NaN loss."
        if self.skip_nan_step and _isnan(last_loss.detach() if isinstance(last_loss, torch.Tensor) else last_loss):
            return {"skip_bwd": True, "skip_step": True}
        return None

    def on_batch_end(self, last_loss: Any, epoch: int, num_batch: int, **kwargs: Any) -> dict | None:
        "Stop everything on a NaN loss."
        if _isnan(last_loss):
            print(f"Epoch/Batch ({epoch}/{num_batch}): Invalid loss, terminating training.")
            return {"stop_epoch": True, "stop_training": True, "skip_validate": True}
        return None


class TrackerCallback(LearnerCallback):
    """Base class of the callbacks that track the best value of `monitor` (a Recorder column).

    `monitor` is ``'train_loss'``, ``'valid_loss'`` or the name of a metric column; `mode` ``'min'``,
    ``'max'`` or ``'auto'`` (``'auto'``: less is better when the name contains ``loss`` or ``error``).  An
    invalid mode warns and becomes ``'auto'``.  ``self.operator`` is ``np.less`` or ``np.greater``.

    Events and state: ``on_train_begin`` resets ``self.best`` to +inf (less is better) or -inf.  The values
    come from ``learn.recorder``, which (``_order`` -10) has filled its lists before these (order 0) run at
    ``on_epoch_end``.  ``get_state()`` (v1's) returns the tracked state (``best``, ``wait``...) without the
    learner; ``operator`` is left out of the minimal state, being derived from `monitor` and `mode`.

    ``_order = 0`` (v1): after the Recorder, whose row for this epoch is then complete.
    """

    def __init__(self, learn: Learner, monitor: str = "valid_loss", mode: str = "auto"):
        super().__init__(learn)
        self.monitor, self.mode = monitor, mode
        if self.mode not in ("auto", "min", "max"):
            import warnings

            warnings.warn(f'{self.__class__} mode {self.mode} is invalid, falling back to "auto" mode.', stacklevel=2)
            self.mode = "auto"
        mode_dict = {"min": np.less, "max": np.greater}
        mode_dict["auto"] = np.less if "loss" in self.monitor or "error" in self.monitor else np.greater
        self.operator = mode_dict[self.mode]
        self.not_min.append("operator")

    def on_train_begin(self, **kwargs: Any) -> None:
        "Reset the best value."
        self.best = float("inf") if self.operator == np.less else -float("inf")

    def _metric_names(self) -> list[str]:
        """The Recorder's metric column names: after epoch/train_loss/valid_loss, before the time column.

        v1 took ``names[3:-1]``, which drops the last metric when the learner has no time column
        (``add_time=False``); fastloop drops the last name only when it is the time column.
        """
        rec = self.learn.recorder
        names = list(rec.names)
        end = -1 if getattr(rec, "add_time", True) and names and names[-1] == "time" else len(names)
        return names[3:end]

    def get_monitor_value(self) -> Any:
        """The last value of `monitor`: the validation loss, the last smoothed training loss (a numpy value),
        or the last value of a metric column.  None when the epoch was not validated; None with a warning
        naming the available columns when `monitor` is not one of them."""
        rec = self.learn.recorder
        if not rec.val_losses or rec.val_losses[-1] is None:
            return None
        last_loss = rec.losses[-1] if rec.losses else None
        if type(last_loss) is LazyLoss:  # a sync-free Recorder's entry not read yet
            last_loss = last_loss.value
        if isinstance(last_loss, torch.Tensor):
            last_loss = last_loss.detach().cpu().numpy()
        values = {"train_loss": last_loss, "valid_loss": rec.val_losses[-1]}
        if rec.metrics:
            for m, n in zip(rec.metrics[-1], self._metric_names()):
                values[n] = m
        if values.get(self.monitor) is None:
            import warnings

            available = ", ".join(map(str, rec.names[1:-1]))
            warnings.warn(f"{self.__class__} conditioned on metric `{self.monitor}` which is not available. "
                          f"Available metrics are: {available}", stacklevel=2)
        return values.get(self.monitor)


class EarlyStoppingCallback(TrackerCallback):
    """Stop the fit when `monitor` has not improved by more than `min_delta` for more than `patience` epochs.

    Improvement: ``operator(current - min_delta, best)`` (`min_delta` is negated when less is better).  On
    improvement ``best = current, wait = 0``; otherwise ``wait += 1`` and when ``wait > patience`` it prints
    ``Epoch {epoch}: early stopping`` and returns ``{'stop_training': True}``.

    Events and state: ``on_train_begin`` resets ``wait`` and ``best``; ``on_epoch_end`` reads ``epoch``,
    returns ``stop_training``.  Nothing happens for an epoch that was not validated.  State for a
    checkpoint: ``get_state()`` (``best``, ``wait``, ``patience``, ``min_delta``...).
    ``_order = 0``: after the Recorder (see `TrackerCallback`).
    """

    def __init__(self, learn: Learner, monitor: str = "valid_loss", mode: str = "auto", min_delta: float = 0,
                 patience: int = 0):
        super().__init__(learn, monitor=monitor, mode=mode)
        self.min_delta, self.patience = min_delta, patience
        if self.operator == np.less:
            self.min_delta *= -1

    def on_train_begin(self, **kwargs: Any) -> None:
        "Reset the wait count and the best value."
        self.wait = 0
        super().on_train_begin(**kwargs)

    def on_epoch_end(self, epoch: int, **kwargs: Any) -> dict | None:
        "Compare with the best value; stop after `patience` epochs without improvement."
        current = self.get_monitor_value()
        if current is None:
            return None
        if self.operator(_plain(current - self.min_delta), _plain(self.best)):
            self.best, self.wait = current, 0
        else:
            self.wait += 1
            if self.wait > self.patience:
                print(f"Epoch {epoch}: early stopping")
                return {"stop_training": True}
        return None


class SaveModelCallback(TrackerCallback):
    """Save the model when `monitor` improves (``every='improvement'``, to ``models/{name}.pth``) or at every
    epoch (``every='epoch'``, to ``models/{name}_{epoch}.pth``); with ``'improvement'``, load the best model
    back at the end of training -- even when the fit ended with an exception, as in v1.

    Writes go through ``learn.save``, which is atomic (temporary file + fsync + rename): a crash mid-save
    leaves the previous best file intact.  An improvement is strictly better (no `min_delta`); it prints
    ``Better model found at epoch {epoch} with {monitor} value: {current}.``.  An invalid `every` warns and
    becomes ``'improvement'``.

    Events and state: ``on_train_begin`` resets ``best``; ``on_epoch_end`` reads ``epoch``; ``on_train_end``
    loads the best model; ``jump_to_epoch(epoch)`` (resume) loads ``{name}_{epoch-1}`` when it exists.
    Returns nothing.  ``_order = 0``: after the Recorder (see `TrackerCallback`).
    """

    def __init__(self, learn: Learner, monitor: str = "valid_loss", mode: str = "auto", every: str = "improvement",
                 name: str = "bestmodel"):
        super().__init__(learn, monitor=monitor, mode=mode)
        self.every, self.name = every, name
        if self.every not in ("improvement", "epoch"):
            import warnings

            warnings.warn(f'SaveModel every {self.every} is invalid, falling back to "improvement".', stacklevel=2)
            self.every = "improvement"

    def jump_to_epoch(self, epoch: int) -> None:
        "On resume, load the model saved at the end of the previous epoch (``every='epoch'`` files)."
        try:
            self.learn.load(f"{self.name}_{epoch - 1}", purge=False)
            print(f"Loaded {self.name}_{epoch - 1}")
        except Exception:
            print(f"Model {self.name}_{epoch - 1} not found.")

    def on_epoch_end(self, epoch: int, **kwargs: Any) -> None:
        "Save every epoch, or when the monitored value improves."
        if self.every == "epoch":
            self.learn.save(f"{self.name}_{epoch}")
            return
        current = self.get_monitor_value()
        if current is not None and self.operator(_plain(current), _plain(self.best)):
            print(f"Better model found at epoch {epoch} with {self.monitor} value: {current}.")
            self.best = current
            self.learn.save(f"{self.name}")

    def on_train_end(self, **kwargs: Any) -> None:
        "Load the best model (``every='improvement'``) if it was saved."
        if self.every == "improvement" and (self.learn.path / f"{self.learn.model_dir}/{self.name}.pth").is_file():
            self.learn.load(f"{self.name}", purge=False)


class ReduceLROnPlateauCallback(TrackerCallback):
    """Multiply the lr by `factor` when `monitor` has not improved by more than `min_delta` for more than
    `patience` epochs, as long as the lr is above `min_lr`.

    On a reduction: ``opt.lr *= factor`` (as in v1 this sets every layer group to the last group's reduced lr:
    discriminative lrs collapse), ``wait = 0``, and it prints ``Epoch {epoch}: reducing lr to {lr}``.  Once
    ``opt.lr <= min_lr`` the wait count keeps growing but nothing more happens (v1).

    fastloop addition: ``self.lr_history`` lists ``(epoch, new_lr)`` for every reduction of the last fit.

    Events and state: ``on_train_begin`` resets ``wait``, ``best`` and ``lr_history``; ``on_epoch_end`` reads
    ``epoch``; returns nothing.  ``_order = 0``: after the Recorder (see `TrackerCallback`).
    """

    def __init__(self, learn: Learner, monitor: str = "valid_loss", mode: str = "auto", patience: int = 0,
                 factor: float = 0.2, min_delta: float = 0, min_lr: float = 0.001):
        super().__init__(learn, monitor=monitor, mode=mode)
        self.patience, self.factor, self.min_delta, self.min_lr = patience, factor, min_delta, min_lr
        if self.operator == np.less:
            self.min_delta *= -1
        self.lr_history: list[tuple[int, Any]] = []

    def on_train_begin(self, **kwargs: Any) -> None:
        "Reset the wait count, the best value and the history."
        self.wait, self.lr_history = 0, []
        super().on_train_begin(**kwargs)

    def on_epoch_end(self, epoch: int, **kwargs: Any) -> None:
        "Compare with the best value; reduce the lr after `patience` epochs without improvement."
        current = self.get_monitor_value()
        if current is None:
            return
        opt = self.learn.opt
        if self.operator(_plain(current - self.min_delta), _plain(self.best)):
            self.best, self.wait = current, 0
        else:
            self.wait += 1
            if self.wait > self.patience and opt.lr > self.min_lr:
                opt.lr *= self.factor
                self.wait = 0
                self.lr_history.append((epoch, opt.lr))
                print(f"Epoch {epoch}: reducing lr to {opt.lr}")


class TrackEpochCallback(LearnerCallback):
    """Keep the number of the last finished epoch in ``path/model_dir/{name}`` so that a new fit resumes after it.

    At ``on_train_begin`` it reads the file (absent or unreadable: start at 0), or uses `epoch_offset` when
    given, and returns ``{'epoch': start_epoch}``: the handler then skips that many epochs and calls every
    callback's ``jump_to_epoch``.  At ``on_epoch_end`` (reads ``epoch``) it writes the epoch number -- atomically
    in fastloop (temporary file + rename), so a crash never leaves a truncated number.  ``restart()`` deletes
    the file.

    ``_order = -20`` (v1): its ``on_train_begin`` runs first, so every later callback already sees the resumed
    ``epoch`` in its own ``on_train_begin``; the handler calls ``jump_to_epoch`` on all of them afterwards.
    """

    _order = -20

    def __init__(self, learn: Learner, name: str = "epoch", epoch_offset: int | None = None):
        super().__init__(learn)
        learn.path.mkdir(parents=True, exist_ok=True)
        self.path = learn.path / learn.model_dir / name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.name, self.start_epoch, self.epoch_offset = name, 0, epoch_offset
        self.not_min.append("path")  # derived from learn.path, model_dir and `name`

    def on_train_begin(self, **kwargs: Any) -> dict:
        "Return the epoch to resume from."
        if self.epoch_offset is None:
            if self.path.exists():
                try:
                    self.start_epoch = int(self.path.read_text()) + 1
                except ValueError:
                    self.start_epoch = 0
            else:
                self.start_epoch = 0
        else:
            self.start_epoch = self.epoch_offset
        return {"epoch": self.start_epoch}

    def on_epoch_end(self, epoch: int, **kwargs: Any) -> None:
        "Write the number of the epoch just finished."
        atomic_write_text(self.path, f"{epoch}")

    def restart(self) -> None:
        "Forget the saved epoch: the next fit starts at 0."
        os.remove(self.path)
