"""Notebook 10c's `MixedPrecision`, rebuilt on ``torch.amp`` (the course's needed NVIDIA apex, CUDA and the course
`Optimizer`).

The course version kept an fp16 copy of the model and fp32 master weights, scaled the loss, and on a gradient
overflow returned True from ``after_backward`` to ask for the step to be skipped -- which the 09b Learner ignored,
so the step still ran (on zero master gradients).  This one runs the forward pass under ``torch.autocast`` (the
model keeps fp32 weights, so no master copy is needed) and keeps the course's dynamic loss scaling; an overflow
sets fastloop's ``skip_step`` flag on the learner, which the loop honours: the step really is skipped.
"""

from __future__ import annotations

from typing import Any

import torch

from .callbacks import Callback

__all__ = ["MixedPrecision"]


class MixedPrecision(Callback):
    """Mixed-precision training with ``torch.autocast`` and dynamic loss scaling (09b `Learner` only).

    Events: ``begin_fit`` (reads ``model``: its device picks the autocast device), ``begin_batch`` (enters
    autocast), ``after_pred`` (leaves autocast; writes ``pred`` as fp32), ``after_loss`` (training only; writes
    ``loss`` multiplied by the loss scale), ``after_backward`` (divides the gradients by the scale; on an
    overflow (inf/nan) sets ``run.skip_step`` and halves the scale, otherwise doubles it every `scale_wait`
    clean steps, up to `max_loss_scale`), ``after_batch`` (leaves autocast if an exception skipped
    ``after_pred``).  ``_order`` 99: last, so the other callbacks see each event before it acts (as in the course:
    a gradient-clipping callback at ``after_backward`` sees the still-scaled gradients).  Registered as
    ``mixed_precision``.

    `dtype` defaults to float16 on CUDA and bfloat16 on the CPU.  Loss scaling is switched off for bfloat16
    (its range is fp32's) unless `dynamic` is given explicitly.
    """

    _order = 99

    def __init__(self, loss_scale: float = 512, flat_master: bool = False, dynamic: bool | None = None,
                 max_loss_scale: float = 2.0**24, div_factor: float = 2.0, scale_wait: int = 500,
                 dtype: torch.dtype | None = None):
        self.loss_scale = max_loss_scale if dynamic is not False else loss_scale
        self.flat_master, self.dynamic, self.max_loss_scale = flat_master, dynamic, max_loss_scale
        self.div_factor, self.scale_wait, self.dtype = div_factor, scale_wait, dtype
        self._autocast: Any = None

    def begin_fit(self) -> None:
        param = next(self.model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        self.device_type = device.type
        if self.dtype is None:
            self.dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        self.scaling = self.dynamic if self.dynamic is not None else self.dtype == torch.float16
        if not self.scaling:
            self.loss_scale = 1.0
        self.count = 0

    def begin_batch(self) -> None:
        self._autocast = torch.autocast(self.device_type, dtype=self.dtype)
        self._autocast.__enter__()

    def _leave(self) -> None:
        if self._autocast is not None:
            self._autocast.__exit__(None, None, None)
            self._autocast = None

    def after_pred(self) -> None:
        self._leave()
        self.run.pred = self.pred.float()

    def after_loss(self) -> None:
        if self.in_train and self.scaling:
            self.run.loss = self.loss * self.loss_scale

    def after_backward(self) -> None:
        if not self.scaling:
            return
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        for g in grads:
            g.div_(self.loss_scale)
        overflow = any(not torch.isfinite(g).all() for g in grads)
        if overflow:
            self.run.skip_step = True  # fastloop's flag: the loop does not step
            self.loss_scale /= self.div_factor
            self.count = 0
            return
        self.count += 1
        if self.count == self.scale_wait:
            self.count = 0
            self.loss_scale = min(self.loss_scale * self.div_factor, self.max_loss_scale)

    def after_batch(self) -> None:
        self._leave()
