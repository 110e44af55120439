"""`LossMetrics`: show the parts of a composite loss as metric columns (fastai v1's ``callbacks.loss_metrics``)."""

from __future__ import annotations

import warnings
from typing import Any

from ..basic_train import LearnerCallback

__all__ = ["LossMetrics"]


class LossMetrics(LearnerCallback):
    """Average, over the validation set, the values a loss function publishes and add them as columns.

    The loss function declares ``metric_names`` (a list of str) and, at each call, stores a dict
    ``metrics`` of 0-dim tensors under those names; each column is the batch-size-weighted mean over the
    validation batches.

    Events and state: ``on_train_begin`` adds the names to the Recorder (``add_metric_names``); a loss
    without ``metric_names`` warns (v1 raised AttributeError for a loss without the attribute).
    ``on_epoch_begin`` resets the sums; ``on_batch_end`` reads ``last_target`` and ``train`` (validation
    batches only); ``on_epoch_end`` reads ``last_metrics`` and returns it with the averages appended.

    In ``get_preds`` (batch events only, no train begin) it does nothing; v1 raised AttributeError there.

    ``_order = -20`` (v1): before the Recorder (-10), so its columns are in the header and in each row.
    """

    _order = -20
    _sync_free = True  # it reads the loss function's `metrics`, never last_loss/smooth_loss (fastloop/_sync_free.py)

    def __init__(self, learn: Any):
        super().__init__(learn)
        # empty until train begin: `get_preds` runs callback_fns' batch events without a train begin (v1 raised)
        self.names, self.metrics, self.nums = [], {}, 0

    def on_train_begin(self, **kwargs: Any) -> None:
        "Register the loss's metric names as Recorder columns."
        self.names = list(getattr(self.learn.loss_func, "metric_names", None) or [])
        if not self.names:
            warnings.warn("LossMetrics requested but no loss_func.metric_names provided", stacklevel=2)
        self.learn.recorder.add_metric_names(self.names)

    def on_epoch_begin(self, **kwargs: Any) -> None:
        "Reset the sums."
        self.metrics = {name: 0.0 for name in self.names}
        self.nums = 0

    def on_batch_end(self, last_target: Any, train: bool, **kwargs: Any) -> None:
        "Add this validation batch's values, weighted by its size."
        if train:
            return
        bs = last_target.size(0)
        for name in self.names:
            self.metrics[name] += bs * self.learn.loss_func.metrics[name].detach().cpu()
        self.nums += bs

    def on_epoch_end(self, last_metrics: list, **kwargs: Any) -> dict | None:
        "Append the averages to `last_metrics`."
        if self.nums == 0:
            return None
        metrics = [self.metrics[name] / self.nums for name in self.names]
        return {"last_metrics": last_metrics + metrics}
