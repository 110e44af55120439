"""What notebook 10b (mixup and label smoothing) exported: `MixUp`, `NoneReduce`, `reduce_loss`, `unsqueeze`,
`lin_comb` and `LabelSmoothingCrossEntropy` (keyword names ``α`` and ``ε`` kept).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions.beta import Beta

from .callbacks import Callback, listify

__all__ = ["NoneReduce", "unsqueeze", "reduce_loss", "lin_comb", "MixUp", "LabelSmoothingCrossEntropy"]


class NoneReduce:
    """Context manager: the loss function `loss_func` with ``reduction='none'`` inside, restored on exit.

    A loss with a ``reduction`` attribute (a torch loss module, `LabelSmoothingCrossEntropy`) is changed in place
    and given back; a plain function gets ``partial(loss_func, reduction='none')``.
    """

    def __init__(self, loss_func: Callable):
        self.loss_func, self.old_red = loss_func, None

    def __enter__(self) -> Callable:
        if hasattr(self.loss_func, "reduction"):
            self.old_red = self.loss_func.reduction
            self.loss_func.reduction = "none"
            return self.loss_func
        return partial(self.loss_func, reduction="none")

    def __exit__(self, *exc: Any) -> None:
        if self.old_red is not None:
            self.loss_func.reduction = self.old_red


def unsqueeze(input: torch.Tensor, dims: Any) -> torch.Tensor:
    "Unsqueeze `input` at each of `dims`, in order."
    for dim in listify(dims):
        input = torch.unsqueeze(input, dim)
    return input


def reduce_loss(loss: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    "Mean, sum, or the unreduced `loss`, as `reduction` says."
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def lin_comb(v1: Any, v2: Any, beta: Any) -> Any:
    "``beta*v1 + (1-beta)*v2``."
    return beta * v1 + (1 - beta) * v2


class MixUp(Callback):
    """mixup: each training batch is mixed with a shuffled copy of itself, and the loss with it.

    One ``Beta(α, α)`` draw per sample, λ = max(λ, 1-λ), shaped ``(bs, 1, 1, 1)`` for image batches.  Events:
    ``begin_fit`` (reads ``loss_func``; puts this callback's `loss_func` in its place), ``begin_batch`` (training
    only; reads ``xb``, ``yb``; writes the mixed ``xb``), ``after_fit`` (puts the original loss back).  ``_order``
    90: after the device and normalisation callbacks.  Registered as ``mix_up``.

    Kept as the course wrote it (do not "fix" it in a port): the per-sample losses (shape ``(bs,)``) are combined
    with λ of shape ``(bs, 1, 1, 1)``, which broadcasts to ``(bs, 1, 1, bs)``; after the mean, each sample's loss
    is weighted with the *batch mean* of λ instead of its own.
    """

    _order = 90  # runs after normalization and cuda

    def __init__(self, α: float = 0.4):  # α: the course's keyword name
        self.distrib = Beta(torch.tensor([α]), torch.tensor([α]))

    def begin_fit(self) -> None:
        self.old_loss_func, self.run.loss_func = self.run.loss_func, self.loss_func

    def begin_batch(self) -> None:
        if not self.in_train:
            return  # only mix during training
        λ = self.distrib.sample((self.yb.size(0),)).squeeze().to(self.xb.device)
        λ = torch.stack([λ, 1 - λ], 1)
        self.λ = unsqueeze(λ.max(1)[0], (1, 2, 3))
        shuffle = torch.randperm(self.yb.size(0)).to(self.xb.device)
        xb1, self.yb1 = self.xb[shuffle], self.yb[shuffle]
        self.run.xb = lin_comb(self.xb, xb1, self.λ)

    def after_fit(self) -> None:
        self.run.loss_func = self.old_loss_func

    def loss_func(self, pred: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        "In training, the λ-weighted losses against both targets, reduced as the original loss reduces."
        if not self.in_train:
            return self.old_loss_func(pred, yb)
        with NoneReduce(self.old_loss_func) as loss_func:
            loss1 = loss_func(pred, yb)
            loss2 = loss_func(pred, self.yb1)
        loss = lin_comb(loss1, loss2, self.λ)
        return reduce_loss(loss, getattr(self.old_loss_func, "reduction", "mean"))


class LabelSmoothingCrossEntropy(nn.Module):
    "Cross-entropy against targets smoothed by `ε`: ``ε * mean(-log p) + (1-ε) * nll``; has a ``reduction``."

    def __init__(self, ε: float = 0.1, reduction: str = "mean"):
        super().__init__()
        self.ε, self.reduction = ε, reduction

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        c = output.size()[-1]
        log_preds = F.log_softmax(output, dim=-1)
        loss = reduce_loss(-log_preds.sum(dim=-1), self.reduction)
        nll = F.nll_loss(log_preds, target, reduction=self.reduction)
        return lin_comb(loss / c, nll, self.ε)
