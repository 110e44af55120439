"""What notebook 12a (AWD-LSTM) exported that is about training: `GradientClipping` and `RNNTrainer`
(keyword names ``α``, ``β`` kept).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .callbacks import Callback

__all__ = ["GradientClipping", "RNNTrainer"]


class GradientClipping(Callback):
    """Clips the gradients' global norm to `clip` (when set).

    Event: ``after_backward`` (reads ``model``; changes its gradients).  ``_order`` 0.  Registered as
    ``gradient_clipping``.  (fastai v1's ``GradientClipping`` is a `LearnerCallback` in `fastloop.train`.)
    """

    def __init__(self, clip: float | None = None):
        self.clip = clip

    def after_backward(self) -> None:
        if self.clip:
            nn.utils.clip_grad_norm_(self.run.model.parameters(), self.clip)


class RNNTrainer(Callback):
    """AWD-LSTM regularisation: activation (AR, weight `α`) and temporal activation (TAR, weight `β`) penalties.

    The model returns ``(decoded, raw_outputs, outputs)``.  Events: ``after_pred`` (keeps the last two; writes
    ``pred = decoded``), ``after_loss`` (adds ``α * mean(outputs[-1]**2)`` and ``β * mean((h[:,1:] - h[:,:-1])**2)``
    with ``h = raw_outputs[-1]`` to ``loss`` -- in training *and* validation, as the course did),
    ``begin_epoch`` (reads ``dl.dataset``; calls its ``batchify()`` if it has one, to reshuffle the texts).
    ``_order`` 0: registered after `AvgStatsCallback`, so the stats record the loss before AR/TAR.  Registered as
    ``rnn_trainer``.  Under the exported ``nb_09b`` Learner ``begin_epoch`` fired twice, so the data was reshuffled
    twice per epoch; here once.
    """

    def __init__(self, α: float, β: float):  # α, β: the course's keyword names
        self.α, self.β = α, β

    def after_pred(self) -> None:
        # keep the extra outputs for the penalties; the loss sees only the decoded output
        self.raw_out, self.out = self.pred[1], self.pred[2]
        self.run.pred = self.pred[0]

    def after_loss(self) -> None:
        if self.α != 0.0:
            self.run.loss += self.α * self.out[-1].float().pow(2).mean()
        if self.β != 0.0:
            h = self.raw_out[-1]
            if len(h) > 1:
                self.run.loss += self.β * (h[:, 1:] - h[:, :-1]).float().pow(2).mean()

    def begin_epoch(self) -> None:
        ds: Any = self.dl.dataset
        if hasattr(ds, "batchify"):
            ds.batchify()
