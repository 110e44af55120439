"""Metrics, as in fastai v1's ``fastai.metrics``: plain functions and metric callbacks.

Two kinds of metric go in ``Learner(..., metrics=[...])``:

* **plain functions** ``f(output, target) -> 0-dim tensor`` (`accuracy`, `error_rate`, `fbeta`, `rmse`...).
  The `CallbackHandler` wraps each in `AverageMetric`, which averages it over the validation batches,
  weighted by batch size.  Metrics that are not averages (``r2_score``, ``exp_rmspe``...) are therefore only
  approximated that way; use their callback version (`R2Score`, `ExpRMSPE`...) for the exact epoch value.
* **metric callbacks** (`Callback` subclasses used as they are): they reset in ``on_epoch_begin``, accumulate
  in ``on_batch_end(last_output, last_target)`` -- which metrics only receive for validation batches -- and
  append their value to ``last_metrics`` in ``on_epoch_end`` by returning `add_metrics`.  Their column name
  is ``.name`` if they have one, else ``camel2snake`` of the class name (``FBeta`` -> ``f_beta``).

Deliberate differences from fastai v1 (values only differ where v1 gave nan or a wrong number):

* `Precision`/`Recall`/`FBeta`: a class never predicted (precision) or absent from the targets (recall)
  scores 0 instead of nan, as scikit-learn does; with ``average='binary'`` and more than two classes,
  `FBeta` falls back to a macro average of per-class F scores at every epoch (v1 switched to the F score of
  the macro precision and recall from the second epoch on).
* `auc_roc_score` integrates tpr over fpr (the ROC AUC, equal to scikit-learn's ``roc_auc_score``).
* `MultiLabelFbeta` only counts validation batches.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .basic_train import LearnerCallback
from .callback import Callback
from .torch_core import add_metrics

__all__ = [
    "error_rate", "accuracy", "accuracy_thresh", "dice", "exp_rmspe", "fbeta", "FBeta", "mse",
    "mean_squared_error", "mae", "mean_absolute_error", "rmse", "root_mean_squared_error", "msle",
    "mean_squared_logarithmic_error", "explained_variance", "r2_score", "top_k_accuracy", "KappaScore",
    "ConfusionMatrix", "CMScores", "MatthewsCorreff", "Precision", "Recall", "RegMetrics", "R2Score",
    "ExplainedVariance", "ExpRMSPE", "RMSE", "Perplexity", "AUROC", "auc_roc_score", "roc_curve",
    "MultiLabelFbeta", "foreground_acc",
]


# ---------------------------------------------------------------------------------- classification functions
def accuracy(input: Tensor, targs: Tensor) -> Tensor:
    """Share of items whose argmax over the last axis equals the target (targets viewed as ``(n, -1)``)."""
    n = targs.shape[0]
    preds = input.argmax(dim=-1).view(n, -1)
    return (preds == targs.view(n, -1)).float().mean()


def error_rate(input: Tensor, targs: Tensor) -> Tensor:
    """``1 - accuracy``."""
    return 1 - accuracy(input, targs)


def accuracy_thresh(input: Tensor, targs: Tensor, thresh: float = 0.5, sigmoid: bool = True) -> Tensor:
    """Multi-label accuracy: share of (item, label) pairs where ``score > thresh`` matches the 0/1 target.

    The scores are passed through a sigmoid first when `sigmoid` (the model outputs logits).
    """
    if sigmoid:
        input = input.sigmoid()
    return ((input > thresh) == targs.bool()).float().mean()


def top_k_accuracy(input: Tensor, targs: Tensor, k: int = 5) -> Tensor:
    """Share of items whose target is among the `k` highest scores (last axis)."""
    top = input.topk(k=k, dim=-1)[1]  # (n, k) indices of the k best classes
    hits = top == targs.unsqueeze(dim=-1)  # broadcast each target against its k candidates
    return hits.any(dim=-1).float().mean()


def foreground_acc(input: Tensor, target: Tensor, void_code: int) -> Tensor:
    """Segmentation accuracy ignoring the pixels whose target is `void_code` (argmax over the class axis 1).

    `target` is ``(n, 1, h, w)`` or ``(n, h, w)``; `input` is ``(n, c, h, w)``.
    """
    target = target.squeeze(1)
    mask = target != void_code
    return (input.argmax(dim=1)[mask] == target[mask]).float().mean()


def dice(input: Tensor, targs: Tensor, iou: bool = False, eps: float = 1e-8) -> Tensor:
    """Dice coefficient (or IoU if `iou`) of the binary segmentation ``argmax(input, dim=1)`` against `targs`.

    Dice is ``2·|A∩B| / (|A|+|B|)``; IoU is ``|A∩B| / (|A|+|B|-|A∩B| + eps)``.  Both are 1 when prediction
    and target are both empty.
    """
    n = targs.shape[0]
    preds = input.argmax(dim=1).view(n, -1)
    targs = targs.view(n, -1)
    intersect = (preds * targs).sum().float()
    union = (preds + targs).sum().float()  # |A| + |B|
    if union <= 0:
        return union.new_ones(())
    return intersect / (union - intersect + eps) if iou else 2.0 * intersect / union


def fbeta(y_pred: Tensor, y_true: Tensor, thresh: float = 0.2, beta: float = 2, eps: float = 1e-9,
          sigmoid: bool = True) -> Tensor:
    """Multi-label F-beta: per item, F-beta of the labels predicted (``score > thresh``) vs `y_true`; then the mean.

    Scores go through a sigmoid first when `sigmoid`.  ``beta=2`` weighs recall more than precision.
    """
    beta2 = beta**2
    if sigmoid:
        y_pred = y_pred.sigmoid()
    y_pred = (y_pred > thresh).float()
    y_true = y_true.float()
    tp = (y_pred * y_true).sum(dim=1)  # true positives per item
    prec = tp / (y_pred.sum(dim=1) + eps)
    rec = tp / (y_true.sum(dim=1) + eps)
    res = (prec * rec) / (prec * beta2 + rec + eps) * (1 + beta2)
    return res.mean()


# -------------------------------------------------------------------------------------- regression functions
def flatten_check(out: Tensor, targ: Tensor) -> tuple[Tensor, Tensor]:
    """`out` and `targ` flattened to 1-d, after checking they have the same number of elements."""
    out, targ = out.contiguous().view(-1), targ.contiguous().view(-1)
    assert len(out) == len(targ), (
        f"Expected output and target to have the same number of elements but got {len(out)} and {len(targ)}.")
    return out, targ


def mean_absolute_error(pred: Tensor, targ: Tensor) -> Tensor:
    """Mean of ``|targ - pred|``."""
    pred, targ = flatten_check(pred, targ)
    return torch.abs(targ - pred).mean()


def mean_squared_error(pred: Tensor, targ: Tensor) -> Tensor:
    """Mean of ``(targ - pred)²``."""
    pred, targ = flatten_check(pred, targ)
    return F.mse_loss(pred, targ)


def root_mean_squared_error(pred: Tensor, targ: Tensor) -> Tensor:
    """Square root of `mean_squared_error`."""
    pred, targ = flatten_check(pred, targ)
    return torch.sqrt(F.mse_loss(pred, targ))


def mean_squared_logarithmic_error(pred: Tensor, targ: Tensor) -> Tensor:
    """Mean of ``(log(1+targ) - log(1+pred))²``."""
    pred, targ = flatten_check(pred, targ)
    return F.mse_loss(torch.log(1 + pred), torch.log(1 + targ))


def exp_rmspe(pred: Tensor, targ: Tensor) -> Tensor:
    """Root mean squared percentage error of ``exp(pred)`` against ``exp(targ)`` (for log-space targets)."""
    pred, targ = flatten_check(pred, targ)
    pred, targ = torch.exp(pred), torch.exp(targ)
    pct_var = (targ - pred) / targ
    return torch.sqrt((pct_var**2).mean())


def explained_variance(pred: Tensor, targ: Tensor) -> Tensor:
    """``1 - Var(targ - pred) / Var(targ)``."""
    pred, targ = flatten_check(pred, targ)
    var_pct = torch.var(targ - pred) / torch.var(targ)
    return 1 - var_pct


def r2_score(pred: Tensor, targ: Tensor) -> Tensor:
    """Coefficient of determination: ``1 - Σ(targ - pred)² / Σ(targ - mean(targ))²``."""
    pred, targ = flatten_check(pred, targ)
    u = torch.sum((targ - pred) ** 2)
    d = torch.sum((targ - targ.mean()) ** 2)
    return 1 - u / d


# fastai v1's short names: the same functions, so their column name is the long one
mae = mean_absolute_error
mse = mean_squared_error
rmse = root_mean_squared_error
msle = mean_squared_logarithmic_error


# ------------------------------------------------------------------------------------------------ ROC / AUC
def roc_curve(input: Tensor, targ: Tensor) -> tuple[Tensor, Tensor]:
    """``(fpr, tpr)`` of binary scores `input` against 0/1 targets `targ`, one point per distinct score.

    The curve starts at (0, 0) and ends at (1, 1); both classes must be present in `targ`.
    """
    targ = (targ == 1).long()
    order = torch.argsort(input, descending=True, stable=True)
    input, targ = input[order], targ[order]
    # the last index of each run of equal scores: the thresholds where the curve gets a point
    distinct = torch.nonzero(input[1:] != input[:-1]).view(-1)
    threshold_idxs = torch.cat((distinct, distinct.new_tensor([len(targ) - 1])))
    tps = torch.cumsum(targ, dim=-1)[threshold_idxs]  # positives ranked at or above each threshold
    fps = 1 + threshold_idxs - tps  # negatives ranked at or above each threshold
    zero = tps.new_zeros(1)
    tps, fps = torch.cat((zero, tps)), torch.cat((zero, fps))
    return fps.float() / fps[-1], tps.float() / tps[-1]


def auc_roc_score(input: Tensor, targ: Tensor) -> Tensor:
    """Area under the ROC curve of binary scores `input` against 0/1 targets `targ` (trapezoid rule)."""
    fpr, tpr = roc_curve(input, targ)
    return torch.trapezoid(tpr, fpr)


# ----------------------------------------------------------------------------------- confusion-matrix family
@dataclass(eq=False)
class ConfusionMatrix(Callback):
    """Accumulates the confusion matrix of the validation set in ``.cm``; at epoch end stores it in ``.metric``.

    ``cm[i, j]`` counts the items of target class ``i`` predicted as class ``j`` (prediction: argmax over the
    last axis), as scikit-learn's ``confusion_matrix``.  ``n_classes`` is read from the output's last axis on
    the first batch of a fit.  It appends nothing to ``last_metrics``, so its column (``confusion_matrix``)
    stays empty and later metrics shift left.

    ``_order`` 0.  Events: ``on_train_begin`` (resets ``n_classes``), ``on_epoch_begin`` (resets ``cm``),
    ``on_batch_end`` (reads ``last_output``, ``last_target``), ``on_epoch_end`` (sets ``.metric``; returns
    nothing).
    """

    def __post_init__(self) -> None:
        self.n_classes, self.cm = 0, None

    def on_train_begin(self, **kwargs: Any) -> None:
        "Forget the number of classes (read again from the next batch)."
        self.n_classes = 0

    def on_epoch_begin(self, **kwargs: Any) -> None:
        "Start a new confusion matrix."
        self.cm = None

    def on_batch_end(self, last_output: Tensor, last_target: Tensor, **kwargs: Any) -> None:
        "Add the batch's (target, prediction) counts to ``cm``."
        preds = last_output.argmax(-1).view(-1).cpu()
        targs = last_target.view(-1).cpu().long()
        if self.n_classes == 0:
            self.n_classes = last_output.shape[-1]
            self.x = torch.arange(0, self.n_classes)
        n = self.n_classes
        # each (target, prediction) pair gets a bin of its own: row-major index target * n + prediction
        cm = torch.bincount(targs * n + preds, minlength=n * n).view(n, n).float()
        self.cm = cm if self.cm is None else self.cm + cm

    def sync_shards(self, reduce: Any) -> None:
        "Distributed validation (see `AverageMetric.sync_shards`): sum the confusion matrices of all ranks."
        if self.cm is not None:
            self.cm = reduce(self.cm.double()).to(self.cm.dtype)

    def on_epoch_end(self, **kwargs: Any) -> None:
        "Expose the epoch's matrix as ``.metric``."
        self.metric = self.cm


_AVERAGES = ("binary", "micro", "macro", "weighted", None)


@dataclass(eq=False)
class CMScores(ConfusionMatrix):
    """Base of the metrics computed from the confusion matrix: per-class precision and recall, and averaging.

    `average` is ``'binary'`` (the score of class `pos_label`, which must be 0 or 1), ``'micro'`` (from the
    global counts: equals the accuracy), ``'macro'`` (plain mean over classes), ``'weighted'`` (mean weighted
    by each class's number of targets) or None (one value per class, i.e. one column each).  ``'binary'`` with
    more than two classes warns and switches `average` to ``'macro'``.  `eps` keeps F scores finite.

    ``_order`` 0.  Events: those of `ConfusionMatrix`; subclasses return ``{'last_metrics': ...}`` at epoch end.
    """

    average: str | None = "binary"
    pos_label: int = 1
    eps: float = 1e-9

    @staticmethod
    def _ratio(num: Tensor, den: Tensor) -> Tensor:
        # num/den, with 0 where den is 0 (a class never predicted, or absent from the targets)
        return torch.where(den > 0, num / den, torch.zeros_like(num))

    def _per_class(self) -> tuple[Tensor, Tensor]:
        "Per-class (precision, recall): true positives over predicted counts (columns) and target counts (rows)."
        tp = torch.diag(self.cm)
        return self._ratio(tp, self.cm.sum(dim=0)), self._ratio(tp, self.cm.sum(dim=1))

    def _check_average(self) -> str | None:
        "The averaging to use, after checking `average` and `pos_label` (warning and fixing them if needed)."
        if self.average not in _AVERAGES:
            raise ValueError(f"average={self.average!r}; expected one of {_AVERAGES}.")
        if self.average == "binary" and self.n_classes != 2:
            self.average = "macro"
            warnings.warn("average=`binary` was selected for a non binary case. Value for average has now been "
                          "set to `macro` instead.", stacklevel=3)
        if self.average == "binary" and self.pos_label not in (0, 1):
            self.pos_label = 1
            warnings.warn("Invalid value for pos_label. It has now been set to 1.", stacklevel=3)
        return self.average

    def _average(self, per_class: Tensor, avg: str | None) -> Tensor:
        "Reduce per-class scores with `avg` (binary, macro, weighted or None; micro is computed by the caller)."
        if avg is None:
            return per_class
        if avg == "binary":
            return per_class[self.pos_label]
        if avg == "macro":
            return per_class.mean()
        support = self.cm.sum(dim=1)  # 'weighted': by the number of targets of each class
        return (per_class * support).sum() / support.sum()

    def _micro(self) -> Tensor:
        "Micro-averaged precision (and recall): all true positives over all items."
        return torch.trace(self.cm) / self.cm.sum()

    def _precision(self) -> Tensor:
        avg = self._check_average()
        return self._micro() if avg == "micro" else self._average(self._per_class()[0], avg)

    def _recall(self) -> Tensor:
        avg = self._check_average()
        return self._micro() if avg == "micro" else self._average(self._per_class()[1], avg)


@dataclass(eq=False)
class Precision(CMScores):
    """Precision ``TP / (TP + FP)`` over the validation set, averaged as set by `average` (see `CMScores`).

    ``_order`` 0.  Events: ``on_train_begin``, ``on_epoch_begin``, ``on_batch_end`` (reads ``last_output``,
    ``last_target``), ``on_epoch_end`` (reads ``last_metrics``; returns ``{'last_metrics': ... + [precision]}``).
    """

    def on_epoch_end(self, last_metrics: Any, **kwargs: Any) -> dict:
        "Append the precision."
        return add_metrics(last_metrics, self._precision())


@dataclass(eq=False)
class Recall(CMScores):
    """Recall ``TP / (TP + FN)`` over the validation set, averaged as set by `average` (see `CMScores`).

    ``_order`` 0.  Events: ``on_train_begin``, ``on_epoch_begin``, ``on_batch_end`` (reads ``last_output``,
    ``last_target``), ``on_epoch_end`` (reads ``last_metrics``; returns ``{'last_metrics': ... + [recall]}``).
    """

    def on_epoch_end(self, last_metrics: Any, **kwargs: Any) -> dict:
        "Append the recall."
        return add_metrics(last_metrics, self._recall())


@dataclass(eq=False)
class FBeta(CMScores):
    """F-beta ``(1+β²)·P·R / (β²·P + R)`` over the validation set (``beta=2`` by default).

    Per-class F scores are averaged as set by `average` (macro/weighted/binary/None); ``'micro'`` is the F
    score of the micro precision and recall.  Column name ``f_beta``.

    ``_order`` 0.  Events: ``on_train_begin``, ``on_epoch_begin``, ``on_batch_end`` (reads ``last_output``,
    ``last_target``), ``on_epoch_end`` (reads ``last_metrics``; returns ``{'last_metrics': ... + [fbeta]}``).
    """

    beta: float = 2

    def _f(self, prec: Tensor, rec: Tensor) -> Tensor:
        beta2 = self.beta**2
        res = (1 + beta2) * prec * rec / (prec * beta2 + rec + self.eps)
        return torch.nan_to_num(res, nan=0.0)

    def on_epoch_end(self, last_metrics: Any, **kwargs: Any) -> dict:
        "Append the F-beta score."
        avg = self._check_average()
        if avg == "micro":
            micro = self._micro()
            return add_metrics(last_metrics, self._f(micro, micro))
        prec, rec = self._per_class()
        return add_metrics(last_metrics, self._average(self._f(prec, rec), avg))


@dataclass(eq=False)
class KappaScore(ConfusionMatrix):
    """Cohen's kappa of predictions vs targets; `weights` None, ``'linear'`` or ``'quadratic'`` (ordinal classes).

    ``_order`` 0.  Events: those of `ConfusionMatrix`, and ``on_epoch_end`` reads ``last_metrics`` and returns
    ``{'last_metrics': ... + [kappa]}``.
    """

    weights: str | None = None

    def on_epoch_end(self, last_metrics: Any, **kwargs: Any) -> dict:
        "Append kappa = 1 - Σ w·observed / Σ w·expected."
        n = self.n_classes
        expected = torch.outer(self.cm.sum(dim=1), self.cm.sum(dim=0)) / self.cm.sum()  # independent marginals
        idx = torch.arange(n, dtype=torch.float)
        dist = idx[None, :] - idx[:, None]  # j - i
        if self.weights is None:
            w = (dist != 0).float()
        elif self.weights == "linear":
            w = dist.abs()
        elif self.weights == "quadratic":
            w = dist**2
        else:
            raise ValueError('Unknown weights. Expected None, "linear", or "quadratic".')
        k = torch.sum(w * self.cm) / torch.sum(w * expected)
        return add_metrics(last_metrics, 1 - k)


@dataclass(eq=False)
class MatthewsCorreff(ConfusionMatrix):
    """Matthews correlation coefficient (multi-class form); 0 when it is undefined (a constant prediction).

    ``_order`` 0.  Events: those of `ConfusionMatrix`, and ``on_epoch_end`` reads ``last_metrics`` and returns
    ``{'last_metrics': ... + [mcc]}``.
    """

    def on_epoch_end(self, last_metrics: Any, **kwargs: Any) -> dict:
        "Append the MCC."
        t_sum, p_sum = self.cm.sum(dim=1), self.cm.sum(dim=0)
        n_correct, n_samples = torch.trace(self.cm), self.cm.sum()
        cov_ytyp = n_correct * n_samples - torch.dot(t_sum, p_sum)
        cov_ypyp = n_samples**2 - torch.dot(p_sum, p_sum)
        cov_ytyt = n_samples**2 - torch.dot(t_sum, t_sum)
        den = torch.sqrt(cov_ytyt * cov_ypyp)
        return add_metrics(last_metrics, cov_ytyp / den if den > 0 else den.new_zeros(()))


# --------------------------------------------------------------------------------------- other metric callbacks
class AUROC(Callback):
    """Area under the ROC curve for binary classification: ``softmax(output)[:, -1]`` scores the positive class.

    ``_order`` 0.  Events: ``on_epoch_begin`` (resets), ``on_batch_end`` (reads ``last_output``,
    ``last_target``; keeps CPU scores and targets), ``on_epoch_end`` (reads ``last_metrics``; returns
    ``{'last_metrics': ... + [auroc]}``).  Both classes must be in the validation targets (else nan).
    """

    def on_epoch_begin(self, **kwargs: Any) -> None:
        "Forget the scores and targets."
        self.preds: list[Tensor] = []
        self.targs: list[Tensor] = []

    def on_batch_end(self, last_output: Tensor, last_target: Tensor, **kwargs: Any) -> None:
        "Keep the batch's positive-class probabilities and targets."
        self.preds.append(F.softmax(last_output.detach().float(), dim=1)[:, -1].cpu())
        self.targs.append(last_target.detach().view(-1).cpu().long())

    def on_epoch_end(self, last_metrics: Any, **kwargs: Any) -> dict:
        "Append the AUC of the epoch's scores."
        return add_metrics(last_metrics, auc_roc_score(torch.cat(self.preds), torch.cat(self.targs)))


class Perplexity(Callback):
    """Perplexity ``exp(mean cross-entropy)`` of a language model; outputs ``(bs, seq_len, vocab)``.

    Each batch's loss is weighted by its sequence length (``last_target.size(1)``), as in fastai v1.

    ``_order`` 0.  Events: ``on_epoch_begin`` (resets), ``on_batch_end`` (reads ``last_output``,
    ``last_target``), ``on_epoch_end`` (reads ``last_metrics``; returns ``{'last_metrics': ... + [ppl]}``).
    """

    def on_epoch_begin(self, **kwargs: Any) -> None:
        "Reset the weighted loss sum and the total length."
        self.loss, self.len = 0.0, 0

    def on_batch_end(self, last_output: Tensor, last_target: Tensor, **kwargs: Any) -> None:
        "Add the batch's flattened cross-entropy, weighted by its sequence length."
        ce = F.cross_entropy(last_output.reshape(-1, last_output.shape[-1]), last_target.reshape(-1))
        self.loss += last_target.size(1) * ce.detach().cpu()
        self.len += last_target.size(1)

    def on_epoch_end(self, last_metrics: Any, **kwargs: Any) -> dict:
        "Append the perplexity."
        return add_metrics(last_metrics, torch.exp(self.loss / self.len))


class RegMetrics(Callback):
    """Base of the exact regression metrics: keeps every validation prediction and target (on the CPU).

    Subclasses apply a regression function to the whole validation set at epoch end, so the value is exact
    (a plain function in ``metrics`` is averaged over batches instead).

    ``_order`` 0.  Events: ``on_epoch_begin`` (resets), ``on_batch_end`` (reads ``last_output``,
    ``last_target``); subclasses' ``on_epoch_end`` reads ``last_metrics`` and returns ``{'last_metrics': ...}``.
    """

    def on_epoch_begin(self, **kwargs: Any) -> None:
        "Forget the predictions and targets."
        self._preds: list[Tensor] = []
        self._targs: list[Tensor] = []

    def on_batch_end(self, last_output: Tensor, last_target: Tensor, **kwargs: Any) -> None:
        "Keep the batch's predictions and targets, flattened."
        assert last_output.numel() == last_target.numel(), "Expected same numbers of elements in pred & targ"
        self._preds.append(last_output.detach().reshape(-1).cpu())
        self._targs.append(last_target.detach().reshape(-1).cpu())

    @property
    def preds(self) -> Tensor:
        "All the epoch's predictions, flattened."
        return torch.cat(self._preds) if self._preds else torch.tensor([])

    @property
    def targs(self) -> Tensor:
        "All the epoch's targets, flattened."
        return torch.cat(self._targs) if self._targs else torch.tensor([])


class R2Score(RegMetrics):
    """`r2_score` of the whole validation set.  ``_order`` 0; events and state keys as `RegMetrics`."""

    def on_epoch_end(self, last_metrics: Any, **kwargs: Any) -> dict:
        "Append R²."
        return add_metrics(last_metrics, r2_score(self.preds, self.targs))


class ExplainedVariance(RegMetrics):
    """`explained_variance` of the whole validation set.  ``_order`` 0; events and state keys as `RegMetrics`."""

    def on_epoch_end(self, last_metrics: Any, **kwargs: Any) -> dict:
        "Append the explained variance."
        return add_metrics(last_metrics, explained_variance(self.preds, self.targs))


class RMSE(RegMetrics):
    """`root_mean_squared_error` of the whole validation set.  ``_order`` 0; events and keys as `RegMetrics`."""

    def on_epoch_end(self, last_metrics: Any, **kwargs: Any) -> dict:
        "Append the RMSE."
        return add_metrics(last_metrics, root_mean_squared_error(self.preds, self.targs))


class ExpRMSPE(RegMetrics):
    """`exp_rmspe` of the whole validation set.  ``_order`` 0; events and state keys as `RegMetrics`."""

    def on_epoch_end(self, last_metrics: Any, **kwargs: Any) -> dict:
        "Append the exp RMSPE."
        return add_metrics(last_metrics, exp_rmspe(self.preds, self.targs))


# -------------------------------------------------------------------------------------------- multi-label
class MultiLabelFbeta(LearnerCallback):
    """Multi-label F-beta over the validation set, from per-label TP / predicted / target counts.

    A `LearnerCallback` for ``callback_fns`` (not ``metrics``): ``_order = -20`` so that its column names,
    added with ``recorder.add_metric_names`` at train begin, reach the Recorder.  Labels are predicted where
    ``score > thresh`` (after a sigmoid if `sigmoid`).  `average`: ``'micro'`` (global counts), ``'macro'``,
    ``'weighted'`` (by label support) or ``'none'`` (one column per label, named ``fbeta_<class>``).

    Events: ``on_train_begin`` (adds the column names; number of labels from ``learn.data.c``),
    ``on_epoch_begin`` (resets), ``on_batch_end`` (reads ``last_output``, ``last_target``, ``train``; counts
    validation batches only), ``on_epoch_end`` (reads ``last_metrics``; returns ``{'last_metrics': ...}``).
    """

    _order = -20

    def __init__(self, learn: Any, beta: float = 2, eps: float = 1e-15, thresh: float = 0.3, sigmoid: bool = True,
                 average: str = "micro"):
        super().__init__(learn)
        self.beta, self.eps, self.thresh, self.sigmoid, self.average = beta, eps, thresh, sigmoid, average
        self.beta2 = beta**2
        if average not in ("micro", "macro", "weighted", "none"):
            raise ValueError('Choose one of the average types: "micro", "macro", "weighted" or "none".')
        self.on_epoch_begin()  # get_preds fires batch events without an epoch_begin

    def on_train_begin(self, **kwargs: Any) -> None:
        "Read the number of labels and add this metric's column name(s)."
        self.c = self.learn.data.c
        if self.average != "none":
            self.learn.recorder.add_metric_names([f"{self.average}_fbeta"])
        else:
            classes = getattr(self.learn.data, "classes", None) or range(self.c)
            self.learn.recorder.add_metric_names([f"fbeta_{c}" for c in classes])

    def on_epoch_begin(self, **kwargs: Any) -> None:
        "Reset the per-label counts."
        self.tp = self.total_pred = self.total_targ = 0.0

    def on_batch_end(self, last_output: Tensor, last_target: Tensor, train: bool, **kwargs: Any) -> None:
        "Add the validation batch's per-label counts."
        if train:
            return
        scores = last_output.detach().sigmoid() if self.sigmoid else last_output.detach()
        pred, targ = (scores > self.thresh).float().cpu(), last_target.detach().float().cpu()
        self.tp = self.tp + (pred * targ).sum(0)
        self.total_pred = self.total_pred + pred.sum(0)
        self.total_targ = self.total_targ + targ.sum(0)

    def _fbeta(self, precision: Tensor, recall: Tensor) -> Tensor:
        return (1 + self.beta2) * (precision * recall) / ((self.beta2 * precision + recall) + self.eps)

    def on_epoch_end(self, last_metrics: Any, **kwargs: Any) -> dict:
        "Append the F-beta score(s)."
        total_pred, total_targ = self.total_pred + self.eps, self.total_targ + self.eps
        if self.average == "micro":
            res = self._fbeta(self.tp.sum() / total_pred.sum(), self.tp.sum() / total_targ.sum())
        else:
            scores = self._fbeta(self.tp / total_pred, self.tp / total_targ)
            if self.average == "macro":
                res = scores.mean()
            elif self.average == "weighted":
                res = (scores * total_targ).sum() / total_targ.sum()
            else:  # 'none': one value per label
                res = list(scores)
        return add_metrics(last_metrics, res)
