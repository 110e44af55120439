"""`RNNTrainer`: hidden-state reset and AR/TAR regularisation for AWD-LSTM-style models, as in fastai v1."""

from __future__ import annotations

from typing import Any

import torch

from ..basic_train import Learner, LearnerCallback

__all__ = ["RNNTrainer"]


class RNNTrainer(LearnerCallback):
    """Resets the model's hidden state each epoch and adds activation regularisation (AR) and temporal activation
    regularisation (TAR) to the loss.

    The model must have a ``reset()`` method and return the triple ``(output, raw_outputs, outputs)`` of fastai
    v1's RNN models: the lists of the hidden states of each layer before (``raw_outputs``) and after
    (``outputs``) dropout, each ``(batch, seq_len, n_hidden)``.

    Events and state keys:

    * ``on_epoch_begin``: ``learn.model.reset()``.
    * ``on_loss_begin`` (reads ``last_output``; training and validation): keeps ``raw_outputs`` and ``outputs``
      as ``self.raw_out`` / ``self.out`` and returns ``last_output = output``, so the loss and the metrics see
      the plain output.
    * ``on_backward_begin`` (reads ``last_loss``): returns ``last_loss + alpha * mean(outputs[-1] ** 2)`` (AR, if
      `alpha`) ``+ beta * mean((h[:, 1:] - h[:, :-1]) ** 2)`` with ``h = raw_outputs[-1]`` (TAR, if `beta`).

    ``_order = 0``: it must run before `MixedPrecision` (order 999), which scales the final loss.

    Differences from fastai v1 (same numbers otherwise): the terms are added out of place (v1 added them in
    place to the loss tensor other callbacks had been handed), and TAR is skipped when the sequence has a
    single step -- v1 only tested the batch size there and turned the loss into NaN.
    """

    def __init__(self, learn: Learner, alpha: float = 0.0, beta: float = 0.0):
        super().__init__(learn)
        self.not_min += ["raw_out", "out"]
        self.alpha, self.beta = alpha, beta

    def on_epoch_begin(self, **kwargs: Any) -> None:
        "Reset the hidden state of the model."
        self.learn.model.reset()

    def on_loss_begin(self, last_output: Any, **kwargs: Any) -> dict:
        "Save the extra outputs for later and only return the true output."
        if not isinstance(last_output, (tuple, list)) or len(last_output) != 3:
            raise TypeError("RNNTrainer.on_loss_begin: last_output must be the (output, raw_outputs, outputs) "
                            f"triple of an RNN model, got {type(last_output).__name__}.")
        self.raw_out, self.out = last_output[1], last_output[2]
        return {"last_output": last_output[0]}

    def on_backward_begin(self, last_loss: torch.Tensor, **kwargs: Any) -> dict:
        "Add AR and TAR to `last_loss`."
        if self.alpha != 0.0:
            last_loss = last_loss + self.alpha * self.out[-1].float().pow(2).mean()
        if self.beta != 0.0:
            h = self.raw_out[-1]
            if len(h) > 1 and h.dim() > 1 and h.size(1) > 1:
                last_loss = last_loss + self.beta * (h[:, 1:] - h[:, :-1]).float().pow(2).mean()
        return {"last_loss": last_loss}
