"""MixUp (https://arxiv.org/abs/1710.09412): train on convex combinations of pairs of items, as in fastai v1."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from ..basic_train import Learner, LearnerCallback

__all__ = ["MixUpCallback", "MixUpLoss", "mixup"]


class MixUpCallback(LearnerCallback):
    """Mixes each training batch with a shuffled copy of itself.

    Events and state keys:

    * ``on_train_begin``: with `stack_y`, wraps ``learn.loss_func`` in `MixUpLoss`.
    * ``on_batch_begin`` (reads ``last_input``, ``last_target``, ``train``; training batches only): draws one
      ``lambda ~ Beta(alpha, alpha)`` per item from numpy's global generator, keeps ``max(lambda, 1 - lambda)``,
      shuffles the batch with ``torch.randperm`` (torch's global generator), and returns ``last_input`` -- the
      list ``[x, x_shuffled, lambda]`` with `stack_x`, else ``lambda * x + (1 - lambda) * x_shuffled`` -- and
      ``last_target`` -- with `stack_y` an ``(n, 3)`` float tensor ``[y, y_shuffled, lambda]`` that `MixUpLoss`
      reads, else the blended float targets.
    * ``on_train_end``: puts the original loss function back.  Validation runs inside the fit, so it uses
      `MixUpLoss` on plain targets, which is the original loss (as in fastai v1).

    ``_order = 0``: it only needs to run before the model sees the batch; a callback that must see the mixed
    batch needs a higher ``_order``.
    """

    def __init__(self, learn: Learner, alpha: float = 0.4, stack_x: bool = False, stack_y: bool = True):
        super().__init__(learn)
        self.alpha, self.stack_x, self.stack_y = alpha, stack_x, stack_y

    def on_train_begin(self, **kwargs: Any) -> None:
        "Wrap the loss function so that it reads the stacked targets."
        if self.stack_y:
            self.learn.loss_func = MixUpLoss(self.learn.loss_func)

    def on_batch_begin(self, last_input: Any, last_target: torch.Tensor, train: bool, **kwargs: Any) -> dict | None:
        "Mix the training batch with a shuffled copy of itself."
        if not train:
            return None
        n = last_target.size(0)
        lambd = np.random.beta(self.alpha, self.alpha, n)
        lambd = np.maximum(lambd, 1 - lambd)  # the item itself always weighs at least one half
        lambd = torch.as_tensor(lambd, dtype=last_input.dtype, device=last_input.device)
        shuffle = torch.randperm(n).to(last_input.device)
        x1, y1 = last_input[shuffle], last_target[shuffle]
        if self.stack_x:
            new_input = [last_input, x1, lambd]
        else:
            shape = [n] + [1] * (x1.dim() - 1)  # lambda broadcast over the item's dimensions
            new_input = last_input * lambd.view(shape) + x1 * (1 - lambd).view(shape)
        if self.stack_y:
            new_target = torch.cat([last_target[:, None].float(), y1[:, None].float(), lambd[:, None].float()], 1)
        else:
            weight = lambd.unsqueeze(1).float() if last_target.dim() == 2 else lambd.float()
            new_target = last_target.float() * weight + y1.float() * (1 - weight)
        return {"last_input": new_input, "last_target": new_target}

    def on_train_end(self, **kwargs: Any) -> None:
        "Restore the loss function the fit started with."
        if self.stack_y and isinstance(self.learn.loss_func, MixUpLoss):
            self.learn.loss_func = self.learn.loss_func.get_old()


class MixUpLoss(nn.Module):
    """Wraps the loss `crit` for MixUp: a 2-D target ``[y1, y2, lambda]`` gives
    ``lambda * crit(out, y1) + (1 - lambda) * crit(out, y2)`` per item; any other target ``crit(out, target)``.

    The per-item losses are then averaged (``reduction='mean'``), summed (``'sum'``) or returned as they are.
    A `crit` with a ``reduction`` attribute has it set to ``'none'`` while wrapped (and restored by `get_old`);
    any other `crit` is called with ``reduction='none'``.
    """

    def __init__(self, crit: Callable, reduction: str = "mean"):
        super().__init__()
        if hasattr(crit, "reduction"):
            self.crit = crit
            self.old_red = crit.reduction
            crit.reduction = "none"
        else:
            self.crit = partial(crit, reduction="none")
            self.old_crit = crit
        self.reduction = reduction

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.dim() == 2:
            loss1 = self.crit(output, target[:, 0].long())
            loss2 = self.crit(output, target[:, 1].long())
            d = loss1 * target[:, 2] + loss2 * (1 - target[:, 2])
        else:
            d = self.crit(output, target)
        if self.reduction == "mean":
            return d.mean()
        if self.reduction == "sum":
            return d.sum()
        return d

    def get_old(self) -> Callable:
        "The wrapped loss function, with its ``reduction`` restored."
        if hasattr(self, "old_crit"):
            return self.old_crit
        self.crit.reduction = self.old_red
        return self.crit


def mixup(learn: Learner, alpha: float = 0.4, stack_x: bool = False, stack_y: bool = True) -> Learner:
    """Add MixUp to `learn` (a `MixUpCallback` in ``callback_fns``, so a fresh one per fit); returns `learn`."""
    learn.callback_fns.append(partial(MixUpCallback, alpha=alpha, stack_x=stack_x, stack_y=stack_y))
    return learn
