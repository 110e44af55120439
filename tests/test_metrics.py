"""fastloop.metrics: values checked against numpy / scikit-learn, and metrics run end to end through Learner."""

from __future__ import annotations

import warnings
from functools import partial

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from torch import nn
from torch.utils.data import TensorDataset

from fastloop.basic_data import DataBunch
from fastloop.basic_train import Learner
from fastloop.callback import AverageMetric, Callback
from fastloop.metrics import (
    AUROC,
    RMSE,
    ConfusionMatrix,
    ExplainedVariance,
    ExpRMSPE,
    FBeta,
    KappaScore,
    MatthewsCorreff,
    MultiLabelFbeta,
    Perplexity,
    Precision,
    R2Score,
    Recall,
    accuracy,
    accuracy_thresh,
    auc_roc_score,
    dice,
    error_rate,
    exp_rmspe,
    explained_variance,
    fbeta,
    foreground_acc,
    mae,
    mean_absolute_error,
    mean_squared_error,
    mean_squared_logarithmic_error,
    mse,
    msle,
    r2_score,
    rmse,
    roc_curve,
    root_mean_squared_error,
    top_k_accuracy,
)

from .conftest import make_data, make_learner

APPROX = dict(rel=1e-5, abs=1e-6)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _is_scalar_tensor(v) -> bool:
    return isinstance(v, torch.Tensor) and v.dim() == 0


# ------------------------------------------------------------------------------ classification functions
def test_accuracy_is_share_of_argmax_equal_to_target():
    out = torch.randn(50, 4, generator=_gen(0))
    targ = torch.randint(0, 4, (50,), generator=_gen(1))
    expected = np.mean(out.numpy().argmax(-1) == targ.numpy())
    res = accuracy(out, targ)
    assert _is_scalar_tensor(res)
    assert res.item() == pytest.approx(expected, **APPROX)


def test_accuracy_argmaxes_last_axis_and_views_targets_as_n_by_rest():
    """Sequence outputs (n, seq, c) against targets (n, seq): every position counts."""
    out = torch.randn(6, 5, 3, generator=_gen(2))
    targ = torch.randint(0, 3, (6, 5), generator=_gen(3))
    expected = np.mean(out.numpy().argmax(-1) == targ.numpy())
    assert accuracy(out, targ).item() == pytest.approx(expected, **APPROX)


def test_accuracy_hand_computed():
    out = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    targ = torch.tensor([0, 1, 1, 1])
    assert accuracy(out, targ).item() == pytest.approx(0.75)
    assert error_rate(out, targ).item() == pytest.approx(0.25)


def test_error_rate_is_one_minus_accuracy():
    out = torch.randn(40, 3, generator=_gen(4))
    targ = torch.randint(0, 3, (40,), generator=_gen(5))
    res = error_rate(out, targ)
    assert _is_scalar_tensor(res)
    assert res.item() == pytest.approx(1 - accuracy(out, targ).item(), **APPROX)


@pytest.mark.parametrize("sigmoid", [True, False])
def test_accuracy_thresh_compares_thresholded_scores_to_binary_targets(sigmoid):
    out = torch.randn(20, 6, generator=_gen(6))
    targ = (torch.rand(20, 6, generator=_gen(7)) > 0.5).float()
    scores = 1 / (1 + np.exp(-out.numpy())) if sigmoid else out.numpy()
    expected = np.mean((scores > 0.3) == targ.numpy().astype(bool))
    res = accuracy_thresh(out, targ, thresh=0.3, sigmoid=sigmoid)
    assert _is_scalar_tensor(res)
    assert res.item() == pytest.approx(expected, **APPROX)


def test_top_k_accuracy_counts_target_among_k_best():
    out = torch.randn(60, 6, generator=_gen(8))
    targ = torch.randint(0, 6, (60,), generator=_gen(9))
    top2 = np.argsort(-out.numpy(), axis=-1)[:, :2]
    expected = np.mean([t in row for t, row in zip(targ.numpy(), top2)])
    assert top_k_accuracy(out, targ, k=2).item() == pytest.approx(expected, **APPROX)
    assert top_k_accuracy(out, targ, k=1).item() == pytest.approx(accuracy(out, targ).item())
    assert top_k_accuracy(out, targ, k=6).item() == 1.0
    assert top_k_accuracy(out, targ).item() == pytest.approx(  # default k=5
        skm.top_k_accuracy_score(targ.numpy(), out.numpy(), k=5, labels=range(6)), **APPROX)


def test_foreground_acc_ignores_void_pixels():
    # 1 image, 3 classes, 2x2 pixels; predicted classes [[0, 1], [2, 2]]
    preds = torch.tensor([[0, 1], [2, 2]])
    out = nn.functional.one_hot(preds, 3).permute(2, 0, 1).float()[None]  # (1, 3, 2, 2)
    targ = torch.tensor([[[[0, 2], [2, 0]]]])  # (1, 1, 2, 2); void code 0 masks two pixels
    # non-void pixels: (0,1) target 2 pred 1 (wrong), (1,0) target 2 pred 2 (right)
    assert foreground_acc(out, targ, void_code=0).item() == pytest.approx(0.5)
    assert foreground_acc(out, targ, void_code=99).item() == pytest.approx(0.5)  # nothing masked: 2 of 4


@pytest.mark.parametrize("iou", [False, True])
def test_dice_and_iou_of_argmax_masks(iou):
    out = torch.randn(3, 2, 8, 8, generator=_gen(10))
    targ = (torch.rand(3, 1, 8, 8, generator=_gen(11)) > 0.5).long()
    a = out.numpy().argmax(1).astype(bool).ravel()
    b = targ.numpy().astype(bool).ravel()
    inter, total = np.sum(a & b), a.sum() + b.sum()
    expected = inter / (total - inter) if iou else 2 * inter / total
    res = dice(out, targ, iou=iou)
    assert _is_scalar_tensor(res)
    assert res.item() == pytest.approx(expected, **APPROX)
    if iou:
        assert res.item() == pytest.approx(skm.jaccard_score(b, a), **APPROX)
    else:
        assert res.item() == pytest.approx(skm.f1_score(b, a), **APPROX)


@pytest.mark.parametrize("iou", [False, True])
def test_dice_is_one_when_prediction_and_target_are_empty(iou):
    out = torch.zeros(2, 2, 4, 4)
    out[:, 0] = 1.0  # argmax is class 0 everywhere
    res = dice(out, torch.zeros(2, 1, 4, 4, dtype=torch.long), iou=iou)
    assert _is_scalar_tensor(res) and res.item() == 1.0


def test_fbeta_is_mean_of_per_item_fbeta_like_sklearn_samples_average():
    out = torch.randn(30, 5, generator=_gen(12))
    targ = (torch.rand(30, 5, generator=_gen(13)) > 0.5).float()
    targ[:, 0] = 1  # every item has a label (so sklearn's per-sample scores are defined)
    out[:, 0] = 5.0  # and predicts one
    pred = (torch.sigmoid(out) > 0.2).numpy().astype(int)
    expected = skm.fbeta_score(targ.numpy().astype(int), pred, beta=2, average="samples")
    res = fbeta(out, targ)
    assert _is_scalar_tensor(res)
    assert res.item() == pytest.approx(expected, rel=1e-5)
    # without sigmoid, thresh applies to the raw scores
    pred_raw = (out > 0.5).numpy().astype(int)
    expected_raw = skm.fbeta_score(targ.numpy().astype(int), pred_raw, beta=1, average="samples")
    assert fbeta(out, targ, thresh=0.5, beta=1, sigmoid=False).item() == pytest.approx(expected_raw, rel=1e-5)


# ---------------------------------------------------------------------------------- regression functions
def _reg_data():
    pred = torch.rand(40, 1, generator=_gen(14)) * 3
    targ = torch.rand(40, generator=_gen(15)) * 3 + 0.1  # (n,) against (n, 1): flattened
    return pred, targ


@pytest.mark.parametrize("func, sk_func", [
    (mean_squared_error, skm.mean_squared_error),
    (mean_absolute_error, skm.mean_absolute_error),
    (root_mean_squared_error, lambda t, p: np.sqrt(skm.mean_squared_error(t, p))),
    (mean_squared_logarithmic_error, skm.mean_squared_log_error),
    (r2_score, skm.r2_score),
    (explained_variance, skm.explained_variance_score),
])
def test_regression_function_matches_sklearn(func, sk_func):
    pred, targ = _reg_data()
    res = func(pred, targ)
    assert _is_scalar_tensor(res)
    assert res.item() == pytest.approx(sk_func(targ.numpy(), pred.numpy().ravel()), rel=1e-5)


def test_exp_rmspe_is_rmspe_of_exponentiated_values():
    pred, targ = _reg_data()
    p, t = np.exp(pred.numpy().ravel()), np.exp(targ.numpy())
    expected = np.sqrt(np.mean(((t - p) / t) ** 2))
    assert exp_rmspe(pred, targ).item() == pytest.approx(expected, rel=1e-5)


def test_short_aliases_are_the_long_functions():
    assert (mse, mae, rmse, msle) == (mean_squared_error, mean_absolute_error, root_mean_squared_error,
                                      mean_squared_logarithmic_error)
    assert AverageMetric(mse).name == "mean_squared_error"


def test_regression_function_rejects_different_numbers_of_elements():
    with pytest.raises(AssertionError, match="same number of elements"):
        r2_score(torch.zeros(3), torch.zeros(4))


# ------------------------------------------------------------------------------------------- ROC / AUC
def test_roc_curve_and_auc_match_sklearn_with_ties():
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.4, 0.9, 0.2, 0.4, 0.7, 0.05])
    targ = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1, 0, 0])
    fpr, tpr = roc_curve(scores, targ)
    sk_fpr, sk_tpr, _ = skm.roc_curve(targ.numpy(), scores.numpy(), drop_intermediate=False)
    np.testing.assert_allclose(fpr.numpy(), sk_fpr, rtol=1e-6)
    np.testing.assert_allclose(tpr.numpy(), sk_tpr, rtol=1e-6)
    res = auc_roc_score(scores, targ)
    assert _is_scalar_tensor(res)
    assert res.item() == pytest.approx(skm.roc_auc_score(targ.numpy(), scores.numpy()), **APPROX)


def test_auc_of_perfect_and_reversed_rankings():
    targ = torch.tensor([0, 0, 1, 1])
    assert auc_roc_score(torch.tensor([0.1, 0.2, 0.8, 0.9]), targ).item() == pytest.approx(1.0)
    assert auc_roc_score(torch.tensor([0.9, 0.8, 0.2, 0.1]), targ).item() == pytest.approx(0.0)


# ----------------------------------------------------------------- callback metrics, driven event by event
def _run(cb: Callback, outputs, targets, last_metrics=None):
    """Fire on a metric callback the events a validation epoch fires on metrics; return on_epoch_end's result."""
    last_metrics = [np.float32(0.5)] if last_metrics is None else last_metrics
    cb.on_train_begin()
    cb.on_epoch_begin()
    for o, t in zip(outputs, targets):
        cb.on_batch_end(last_output=o, last_target=t, train=False)
    return cb.on_epoch_end(last_metrics=last_metrics)


def _cls_batches(n_classes: int, seed: int, n: int = 60, bs: int = 16):
    out = torch.randn(n, n_classes, generator=_gen(seed))
    targ = torch.randint(0, n_classes, (n,), generator=_gen(seed + 1))
    out[torch.arange(n)[: n // 2], targ[: n // 2]] += 2.0  # some signal, so scores are not degenerate
    return out, targ, list(out.split(bs)), list(targ.split(bs))


def _value(res: dict):
    """The single value a metric callback appended after the 0.5 loss."""
    assert list(res) == ["last_metrics"]
    lm = res["last_metrics"]
    assert lm[0] == np.float32(0.5) and len(lm) == 2
    return lm[1]


def test_confusion_matrix_accumulates_over_batches_rows_are_targets():
    out, targ, outs, targs = _cls_batches(3, 20)
    cm = ConfusionMatrix()
    assert _run(cm, outs, targs) is None  # appends nothing
    expected = skm.confusion_matrix(targ.numpy(), out.argmax(-1).numpy(), labels=[0, 1, 2])
    np.testing.assert_array_equal(cm.metric.numpy(), expected)
    assert cm.n_classes == 3
    # a new epoch starts from zero
    _run(cm, outs[:1], targs[:1])
    assert cm.metric.sum().item() == len(targs[0])


@pytest.mark.parametrize("average", ["micro", "macro", "weighted", None])
@pytest.mark.parametrize("cls, sk_func", [
    (Precision, skm.precision_score), (Recall, skm.recall_score),
    (FBeta, partial(skm.fbeta_score, beta=2)),
])
def test_cm_scores_match_sklearn_multiclass(cls, sk_func, average):
    out, targ, outs, targs = _cls_batches(4, 30)
    res = _run(cls(average=average), outs, targs)
    expected = sk_func(targ.numpy(), out.argmax(-1).numpy(), average=average, labels=[0, 1, 2, 3], zero_division=0)
    if average is None:  # one value (one column) per class
        values = res["last_metrics"][1:]
        assert len(values) == 4 and all(_is_scalar_tensor(v) for v in values)
        np.testing.assert_allclose([v.item() for v in values], expected, rtol=1e-5, atol=1e-7)
    else:
        v = _value(res)
        assert _is_scalar_tensor(v)
        assert v.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("pos_label", [0, 1])
@pytest.mark.parametrize("cls, sk_func", [
    (Precision, skm.precision_score), (Recall, skm.recall_score),
    (FBeta, partial(skm.fbeta_score, beta=2)), (partial(FBeta, beta=0.5), partial(skm.fbeta_score, beta=0.5)),
])
def test_cm_scores_binary_default_scores_pos_label(cls, sk_func, pos_label):
    out, targ, outs, targs = _cls_batches(2, 40)
    v = _value(_run(cls(pos_label=pos_label), outs, targs))
    assert v.item() == pytest.approx(sk_func(targ.numpy(), out.argmax(-1).numpy(), pos_label=pos_label), rel=1e-5)


def test_cm_scores_defaults_are_binary_pos_label_1_eps_1e9_and_fbeta_beta_2():
    p, f = Precision(), FBeta()
    assert (p.average, p.pos_label, p.eps) == ("binary", 1, 1e-9)
    assert (f.average, f.pos_label, f.eps, f.beta) == ("binary", 1, 1e-9, 2)
    assert FBeta("macro", 0, 1e-9, 1).beta == 1  # dataclass field order, as fastai v1


@pytest.mark.parametrize("cls", [Precision, Recall, FBeta])
def test_binary_average_with_more_than_two_classes_warns_and_uses_macro(cls):
    out, targ, outs, targs = _cls_batches(3, 50)
    metric = cls()
    with pytest.warns(UserWarning, match="macro"):
        v = _value(_run(metric, outs, targs))
    assert metric.average == "macro"
    expected = _value(_run(cls(average="macro"), outs, targs))
    assert v.item() == pytest.approx(expected.item())
    with warnings.catch_warnings():  # the same instance stays macro, without warning again, next epoch
        warnings.simplefilter("error")
        assert _value(_run(metric, outs, targs)).item() == pytest.approx(v.item())


def test_unknown_average_is_a_value_error():
    out, targ, outs, targs = _cls_batches(2, 55)
    with pytest.raises(ValueError, match="average"):
        _run(Precision(average="samples"), outs, targs)


def test_precision_of_a_class_never_predicted_is_zero_not_nan():
    out = torch.tensor([[2.0, 0.0]] * 4)  # always predicts class 0
    targ = torch.tensor([0, 1, 1, 0])
    assert _value(_run(Precision(), [out], [targ])).item() == 0.0
    assert _value(_run(Recall(), [out], [targ])).item() == 0.0
    assert _value(_run(FBeta(), [out], [targ])).item() == 0.0
    assert _value(_run(Precision(pos_label=0), [out], [targ])).item() == pytest.approx(0.5)


@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_kappa_score_matches_sklearn(weights):
    out, targ, outs, targs = _cls_batches(4, 60)
    v = _value(_run(KappaScore(weights=weights), outs, targs))
    assert v.item() == pytest.approx(skm.cohen_kappa_score(targ.numpy(), out.argmax(-1).numpy(), weights=weights),
                                     rel=1e-5)


def test_matthews_correff_matches_sklearn():
    out, targ, outs, targs = _cls_batches(3, 70)
    v = _value(_run(MatthewsCorreff(), outs, targs))
    assert v.item() == pytest.approx(skm.matthews_corrcoef(targ.numpy(), out.argmax(-1).numpy()), rel=1e-5)


def test_auroc_uses_softmax_of_last_column_and_matches_sklearn():
    out, targ, outs, targs = _cls_batches(2, 80)
    v = _value(_run(AUROC(), outs, targs))
    probs = torch.softmax(out, dim=1)[:, -1].numpy()
    assert _is_scalar_tensor(v)
    assert v.item() == pytest.approx(skm.roc_auc_score(targ.numpy(), probs), rel=1e-5)


@pytest.mark.parametrize("cls, func", [
    (R2Score, skm.r2_score), (ExplainedVariance, skm.explained_variance_score),
    (RMSE, lambda t, p: np.sqrt(skm.mean_squared_error(t, p))),
    (ExpRMSPE, lambda t, p: np.sqrt(np.mean(((np.exp(t) - np.exp(p)) / np.exp(t)) ** 2))),
])
def test_regression_callbacks_compute_on_the_whole_epoch(cls, func):
    pred, targ = _reg_data()
    v = _value(_run(cls(), pred.split(16), targ.split(16)))
    assert _is_scalar_tensor(v)
    assert v.item() == pytest.approx(func(targ.numpy(), pred.numpy().ravel()), rel=1e-5)


def test_perplexity_is_exp_of_sequence_length_weighted_cross_entropy():
    out = torch.randn(2, 4, 5, 7, generator=_gen(90))  # 2 batches of (bs=4, seq=5, vocab=7)
    targ = torch.randint(0, 7, (2, 4, 5), generator=_gen(91))
    v = _value(_run(Perplexity(), list(out), list(targ)))
    logp = torch.log_softmax(out, -1).numpy()
    ce = -np.take_along_axis(logp, targ.numpy()[..., None], -1).mean()  # equal seq lengths: plain mean
    assert v.item() == pytest.approx(np.exp(ce), rel=1e-5)


@pytest.mark.parametrize("cls", [ConfusionMatrix, Precision, Recall, FBeta, KappaScore, MatthewsCorreff, AUROC,
                                 R2Score, ExplainedVariance, RMSE, ExpRMSPE, Perplexity])
def test_metric_callbacks_are_order_0_callbacks_whose_docstring_says_so(cls):
    assert issubclass(cls, Callback) and cls._order == 0
    assert "``_order`` 0" in cls.__doc__


# ------------------------------------------------------------------------------- end to end, with Learner
def test_validate_with_accuracy_returns_loss_and_accuracy_from_get_preds(learn):
    res = learn.validate(metrics=[accuracy])
    assert len(res) == 2
    assert isinstance(res[0], np.float32)
    assert _is_scalar_tensor(res[1])
    preds, targs = learn.get_preds()
    assert res[1].item() == pytest.approx(accuracy(preds, targs).item(), **APPROX)


def test_validate_with_metric_callbacks_matches_sklearn_on_get_preds(learn):
    res = learn.validate(metrics=[Precision(), Recall(), FBeta(average="macro"), AUROC(), MatthewsCorreff()])
    preds, targs = learn.get_preds()
    y, p = targs.numpy(), preds.argmax(-1).numpy()
    expected = [skm.precision_score(y, p, zero_division=0), skm.recall_score(y, p),
                skm.fbeta_score(y, p, beta=2, average="macro"), skm.roc_auc_score(y, preds[:, 1].numpy()),
                skm.matthews_corrcoef(y, p)]
    assert len(res) == 6
    np.testing.assert_allclose([v.item() for v in res[1:]], expected, rtol=1e-5, atol=1e-7)


def test_fit_records_metric_names_and_last_epoch_values(learn):
    learn.metrics = [accuracy, error_rate, Precision(), Recall(), FBeta(), AUROC()]
    learn.fit(2, lr=1e-2)
    assert learn.recorder.names[3:] == ["accuracy", "error_rate", "precision", "recall", "f_beta", "auroc", "time"]
    assert len(learn.recorder.metrics) == 2 and all(len(row) == 6 for row in learn.recorder.metrics)
    last_row = learn.recorder.metrics[-1]  # read first: get_preds replaces learn.recorder (as in v1)
    # the last epoch's values are those of the final model alone (callback metrics reset every epoch)
    preds, targs = learn.get_preds()
    y, p = targs.numpy(), preds.argmax(-1).numpy()
    expected = [np.mean(y == p), np.mean(y != p), skm.precision_score(y, p, zero_division=0),
                skm.recall_score(y, p), skm.fbeta_score(y, p, beta=2), skm.roc_auc_score(y, preds[:, 1].numpy())]
    np.testing.assert_allclose([float(v) for v in last_row], expected, rtol=1e-5, atol=1e-6)


def test_confusion_matrix_metric_appends_nothing_so_later_values_shift_left(learn):
    cm = ConfusionMatrix()
    learn.metrics = [cm, accuracy]
    learn.fit(1, lr=1e-2)
    assert learn.recorder.names[3:5] == ["confusion_matrix", "accuracy"]
    last_row = learn.recorder.metrics[-1]
    assert len(last_row) == 1  # only accuracy's value
    preds, targs = learn.get_preds()
    expected = skm.confusion_matrix(targs.numpy(), preds.argmax(-1).numpy(), labels=[0, 1])
    np.testing.assert_array_equal(cm.metric.numpy(), expected)
    assert cm.metric.sum().item() == 32  # the validation set only, not the training batches
    assert float(last_row[0]) == pytest.approx(np.trace(expected) / 32)


def test_metric_names_of_functions_partials_and_average_metric(tmp_path):
    """§19: function name, a partial's own __name__, an unnamed partial's function name, AverageMetric's name."""
    top2 = partial(top_k_accuracy, k=2)
    top2.__name__ = "top2_accuracy"
    top4 = partial(top_k_accuracy, k=4)
    top4.__name__ = "top4_accuracy"
    learn = Learner(make_data(), nn.Linear(4, 5), loss_func=nn.CrossEntropyLoss(), path=tmp_path,
                    metrics=[accuracy, top2, partial(top_k_accuracy), AverageMetric(top4)])
    learn.fit(1)
    assert learn.recorder.names[3:7] == ["accuracy", "top2_accuracy", "top_k_accuracy", "top4_accuracy"]
    assert len(learn.recorder.metrics[-1]) == 4
    assert float(learn.recorder.metrics[-1][2]) == 1.0  # top-5 of 5 classes


class DummyMetric(Callback):
    """A metric callback appending 9876**k at the k-th epoch (k counted in its own on_epoch_begin)."""

    name = "dummy"

    def __init__(self):
        self.epoch = 0

    def on_epoch_begin(self, **kwargs):
        self.epoch += 1

    def on_epoch_end(self, last_metrics, **kwargs):
        return {"last_metrics": last_metrics + [torch.tensor(9876**self.epoch)]}


def test_dummy_metric_callback_name_and_values_are_printed(tmp_path, capsys):
    learn = make_learner(tmp_path, metrics=[DummyMetric()])
    learn.fit(2)
    out = capsys.readouterr().out
    assert "dummy" in out
    assert "9876.00" in out
    assert "97535376.00" in out
    assert learn.recorder.names[3] == "dummy"


def _reg_learner(tmp_path, **kwargs) -> Learner:
    g = _gen(100)
    x = torch.randn(96, 4, generator=g)
    y = x @ torch.tensor([[0.5], [-1.0], [0.3], [0.2]]) + 2.0  # (n, 1) float targets, positive-ish
    data = DataBunch.create(TensorDataset(x[:64], y[:64]), TensorDataset(x[64:], y[64:]), bs=16, num_workers=0,
                            device="cpu")
    torch.manual_seed(0)
    return Learner(data, nn.Linear(4, 1), loss_func=nn.MSELoss(), path=tmp_path, **kwargs)


def test_regression_callback_metrics_end_to_end_match_sklearn(tmp_path):
    learn = _reg_learner(tmp_path, metrics=[R2Score(), ExplainedVariance(), RMSE(), ExpRMSPE(), mse])
    learn.fit(2, lr=1e-2)
    assert learn.recorder.names[3:8] == ["r2_score", "explained_variance", "rmse", "exp_rmspe",
                                         "mean_squared_error"]
    last_row = learn.recorder.metrics[-1]
    preds, targs = learn.get_preds()
    p, t = preds.numpy().ravel(), targs.numpy().ravel()
    expected = [skm.r2_score(t, p), skm.explained_variance_score(t, p), np.sqrt(skm.mean_squared_error(t, p)),
                np.sqrt(np.mean(((np.exp(t) - np.exp(p)) / np.exp(t)) ** 2)), skm.mean_squared_error(t, p)]
    np.testing.assert_allclose([float(v) for v in last_row], expected, rtol=1e-4)


def test_multilabel_fbeta_adds_its_column_and_matches_sklearn_micro(tmp_path):
    g = _gen(110)
    x = torch.randn(96, 4, generator=g)
    y = (x[:, :3] > 0).float()  # 3 labels
    train = TensorDataset(x[:64], y[:64])
    train.c = 3
    data = DataBunch.create(train, TensorDataset(x[64:], y[64:]), bs=16, num_workers=0, device="cpu")
    torch.manual_seed(0)
    learn = Learner(data, nn.Linear(4, 3), loss_func=nn.BCEWithLogitsLoss(), path=tmp_path,
                    callback_fns=[partial(MultiLabelFbeta, average="micro")])
    learn.fit(1, lr=1e-2)
    assert learn.recorder.names[3] == "micro_fbeta"
    last_row = learn.recorder.metrics[-1]
    preds, targs = learn.get_preds()
    expected = skm.fbeta_score(targs.numpy().astype(int), (preds > 0.3).numpy().astype(int), beta=2, average="micro")
    assert float(last_row[0]) == pytest.approx(expected, rel=1e-5)
