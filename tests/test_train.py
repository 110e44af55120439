"""fastloop.train: the Learner methods it attaches, GradientClipping, BnFreeze, ShowGraph, AccumulateScheduler,
ClassificationInterpretation, and Recorder.plot's suggestion."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from fastloop import train  # noqa: E402
from fastloop.basic_train import Learner  # noqa: E402
from fastloop.callback import Callback  # noqa: E402
from fastloop.train import (  # noqa: E402
    AccumulateScheduler,
    BnFreeze,
    ClassificationInterpretation,
    GradientClipping,
    ShowGraph,
    one_cycle_scheduler,
)

from .conftest import make_data, make_learner  # noqa: E402
from .tracing import Tracer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------- Learner attachments
def test_learner_gets_v1s_train_methods_from_an_import_of_basic_train_alone():
    code = ("import sys; from fastloop.basic_train import Learner; "
            "names = ['fit_one_cycle', 'fit_fc', 'lr_find', 'to_fp16', 'to_fp32', 'mixup', 'clip_grad', 'interpret', "
            "'summary']; "
            "print(all(callable(getattr(Learner, n)) for n in names), 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["True", "False"]


def test_attached_methods_are_the_train_functions():
    assert Learner.fit_one_cycle is train.fit_one_cycle and Learner.lr_find is train.lr_find
    assert Learner.to_fp16 is train.to_fp16 and Learner.mixup is train.mixup and Learner.fit_fc is train.fit_fc


def test_fit_one_cycle_keeps_the_callers_callbacks_list_and_passes_wd(learn):
    mine = [Tracer()]
    learn.fit_one_cycle(1, 1e-2, wd=0.3, callbacks=mine)
    assert len(mine) == 1 and mine[0].events()[0] == "train_begin"  # the scheduler went into a copy
    assert learn.opt.wd == 0.3 and max(learn.recorder.lrs) == 1e-2


def test_default_max_lr_is_v1s_slice_and_gives_v1s_integration_numbers():
    """fastai's test_vision_train after fit_one_cycle(3) with slice(3e-3): lrs and moms bounds."""
    learn = make_learner()
    learn.fit_one_cycle(3)
    lrs, moms = learn.recorder.lrs, learn.recorder.moms
    assert lrs[0] < 1e-3 and lrs[-1] < 1e-4 and max(lrs) == 3e-3
    assert moms[0] == 0.95 and abs(moms[-1] - 0.95) < 0.01 and min(moms) == 0.85


def test_one_cycle_scheduler_is_a_callback_fns_entry(learn):
    learn.callback_fns.append(one_cycle_scheduler(1e-2, pct_start=0.5))
    learn.fit(1, 1e-2)
    assert learn.one_cycle_scheduler.pct_start == 0.5 and max(learn.recorder.lrs) == 1e-2


# ------------------------------------------------------------------------------------- gradient clipping
class GradNorm(Callback):
    "Records the total grad norm at backward_end, after the order-0 callbacks."

    _order = 1

    def __init__(self):
        self.norms = []

    def on_backward_end(self, **kwargs):
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        self.norms.append(float(torch.norm(torch.stack([g.norm() for g in grads]))))


def test_clip_grad_adds_gradient_clipping_and_clips_the_norm(learn):
    assert learn.clip_grad(1e-3) is learn
    probe = GradNorm()
    probe.model = learn.model
    learn.fit(1, 1e-2, callbacks=[probe])
    assert isinstance(learn.gradient_clipping, GradientClipping) and learn.gradient_clipping.clip == 1e-3
    assert max(probe.norms) <= 1e-3 * (1 + 1e-4)


def test_gradient_clipping_with_clip_0_does_nothing(learn):
    probe = GradNorm()
    probe.model = learn.model
    learn.fit(1, 1e-2, callbacks=[GradientClipping(learn, clip=0.0), probe])
    assert min(probe.norms) > 1e-3


# ---------------------------------------------------------------------------------------------- BnFreeze
def test_bn_freeze_keeps_frozen_batchnorm_in_eval_and_its_stats_fixed():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Sequential(nn.BatchNorm1d(8)),
                          nn.BatchNorm1d(8, affine=False), nn.ReLU(), nn.Linear(8, 2))
    learn = Learner(make_data(), model, loss_func=nn.CrossEntropyLoss(), callback_fns=[BnFreeze])
    for bn in (model[1], model[2][0]):
        bn.weight.requires_grad_(False)
        bn.bias.requires_grad_(False)
    frozen = [model[1].running_mean.clone(), model[2][0].running_mean.clone()]
    free = model[3].running_mean.clone()
    learn.fit(1, 1e-2)
    assert torch.equal(model[1].running_mean, frozen[0]) and torch.equal(model[2][0].running_mean, frozen[1])
    assert not torch.equal(model[3].running_mean, free)  # no parameters: not frozen (v1 raised StopIteration)


# ---------------------------------------------------------------------------------------------- ShowGraph
def test_show_graph_updates_the_bar_graph_with_v1s_bounds_and_returns_an_empty_dict(learn):
    calls = []

    class Capture(Callback):
        _order = -20

        def on_train_begin(self, pbar, **kwargs):
            pbar.update_graph = lambda graphs, x_bounds=None, y_bounds=None: calls.append((graphs, x_bounds, y_bounds))

    tracer = Tracer(order=1)
    learn.fit(3, 1e-2, callbacks=[Capture(), ShowGraph(learn), tracer])
    assert len(calls) == 3
    rec = learn.recorder
    # (n_epochs - epochs done) * last nb_batches + len(losses): 2*4 + 4 after epoch 0, 0*4 + 12 after epoch 2
    assert [c[1] for c in calls] == [(0, 12), (0, 12), (0, 12)]
    (iters, losses), (val_iter, val_losses) = calls[-1][0]
    assert list(iters) == list(range(12)) and list(val_iter) == [4, 8, 12] and val_losses == rec.val_losses
    assert calls[-1][2] == (0, pytest.approx(max(max(float(v) for v in rec.losses), max(rec.val_losses))))
    epoch_end = [kw for e, kw in tracer.kwargs if e == "epoch_end"]
    assert len(epoch_end) == 3
    assert ShowGraph(learn).on_epoch_end(n_epochs=1, last_metrics=[None]) is None  # not validated: no graph


# -------------------------------------------------------------------------------------- AccumulateScheduler
def sum_loss_learner(n_train=64):
    learn = make_learner(n_train=n_train)
    learn.loss_func = nn.CrossEntropyLoss(reduction="sum")
    return learn


def test_accumulate_n_step_1_with_a_summed_loss_trains_like_the_mean_loss():
    """n_step=1: each batch's summed grads / batch size == the mean loss's grads; no extra step at epoch end."""
    acc = sum_loss_learner()
    acc.fit(2, 1e-2, callbacks=[AccumulateScheduler(acc, n_step=1)])
    plain = make_learner()
    plain.fit(2, 1e-2)
    for a, b in zip(acc.model.parameters(), plain.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_accumulate_skips_steps_between_accumulations_and_works_on_torch_2():
    """4 batches, n_step=2: steps after batches 2 and 4; v1 then divided None grads at epoch end and crashed."""
    learn = sum_loss_learner()
    tracer = Tracer(order=1)
    learn.fit(2, 1e-2, callbacks=[AccumulateScheduler(learn, n_step=2), tracer])
    flags = [(kw["skip_step"], kw["skip_zero"]) for e, kw in tracer.kwargs if e == "backward_end" and kw["train"]]
    assert flags == [(True, True), (False, False)] * 4
    assert len(learn.recorder.val_losses) == 2


def test_accumulate_steps_the_pending_grads_at_epoch_end_divided_by_all_counted_samples():
    """3 batches of 16 (n_step 2): batch 3 is pending at epoch end; v1 divides by 16 + the 32 validation samples."""
    learn = sum_loss_learner(n_train=48)
    acc = AccumulateScheduler(learn, n_step=2)

    class Grab(Callback):
        _order = -1  # before the accumulator's epoch_end: the pending grads as summed

        def __init__(self, model):
            self.model = model

        def on_epoch_end(self, **kwargs):
            self.grads = [p.grad.clone() for p in self.model.parameters()]
            self.weights = [p.detach().clone() for p in self.model.parameters()]

    grab = Grab(learn.model)
    learn.fit(1, 1e-2, callbacks=[acc, grab])
    assert acc.acc_samples == 16 + 32
    assert all(p.grad is None for p in learn.model.parameters())  # zero_grad at the end
    assert not all(torch.equal(w, p) for w, p in zip(grab.weights, learn.model.parameters()))  # stepped
    drop = sum_loss_learner(n_train=48)
    grab = Grab(drop.model)
    drop.fit(1, 1e-2, callbacks=[AccumulateScheduler(drop, n_step=2, drop_last=True), grab])
    assert all(torch.equal(w, p) for w, p in zip(grab.weights, drop.model.parameters()))  # not stepped


def test_accumulate_warns_unless_the_loss_sums(learn):
    with pytest.warns(UserWarning, match="reduction=sum"):
        learn.fit(1, 1e-2, callbacks=[AccumulateScheduler(learn, n_step=2)])


# ------------------------------------------------------------------------------------------ interpretation
def interp_tensors():
    preds = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8],
                          [0.3, 0.4, 0.3]])
    y_true = torch.tensor([0, 1, 2, 1, 0, 0])
    losses = torch.tensor([0.1, 0.3, 0.3, 1.2, 2.3, 1.2])
    return preds, y_true, losses


def test_confusion_matrix_and_most_confused_from_plain_tensors():
    interp = ClassificationInterpretation(None, *interp_tensors(), classes=["a", "b", "c"])
    # pred classes: 0, 1, 2, 0, 2, 1 ; actual: 0, 1, 2, 1, 0, 0
    expected = np.array([[1, 1, 1], [1, 1, 0], [0, 0, 1]])
    assert (interp.confusion_matrix() == expected).all()
    assert (interp.confusion_matrix(slice_size=None) == expected).all()
    assert (interp.confusion_matrix(slice_size=4) == expected).all()
    assert interp.most_confused() == [("a", "b", 1), ("a", "c", 1), ("b", "a", 1)]
    assert interp.most_confused(min_val=2) == []
    assert ClassificationInterpretation(None, *interp_tensors()).classes == [0, 1, 2]


def test_top_losses_are_torch_topk():
    interp = ClassificationInterpretation(None, *interp_tensors())
    vals, idx = interp.top_losses(2)
    assert vals.tolist() == pytest.approx([2.3, 1.2]) and idx[0] == 4
    vals, _ = interp.top_losses(largest=False)
    assert len(vals) == 6 and vals[0] == pytest.approx(0.1)


def test_from_learner_uses_get_preds_with_loss_and_plots(learn):
    learn.fit(1, 1e-2)
    interp = learn.interpret()
    preds, targets, losses = learn.get_preds(with_loss=True)
    assert torch.equal(interp.preds, preds) and torch.equal(interp.y_true, targets)
    assert torch.equal(interp.losses, losses) and interp.c == 2
    assert interp.confusion_matrix().sum() == 32
    fig = interp.plot_confusion_matrix(normalize=True, return_fig=True)
    assert fig is not None and fig.axes


# ------------------------------------------------------------------------------------------ Recorder.plot
def test_plot_suggestion_marks_the_steepest_descent_and_the_min_loss(learn, capsys):
    learn.fit(1, 1e-2)  # a Recorder; its lists are then set by hand
    rec = learn.recorder
    rec.lrs = [10.0 ** (-6 + i / 4) for i in range(20)]
    losses = [2.0] * 8 + [1.9, 1.0, 0.95, 0.9, 0.85, 0.8, 0.9, 1.5, 3.0, 5.0, 8.0, 9.0]
    rec.losses = [torch.tensor(v) for v in losses]
    fig = rec.plot(skip_start=2, skip_end=2, suggestion=True, return_fig=True)
    # np.gradient of losses[2:18] (central differences inside): most negative at losses[8], (1.0 - 2.0) / 2;
    # the next one, at losses[9], is (0.95 - 1.9) / 2.  The minimum loss is losses[13].
    assert rec.min_grad_lr == rec.lrs[8]
    out = capsys.readouterr().out
    assert f"Min numerical gradient: {rec.lrs[8]:.2E}" in out
    assert f"Min loss divided by 10: {rec.lrs[13] / 10:.2E}" in out
    red = [line for line in fig.axes[0].lines if line.get_color() == "red"]
    assert len(red) == 1 and red[0].get_xdata()[0] == rec.lrs[8]


def test_plot_suggestion_with_too_few_points_says_so(learn, capsys):
    learn.fit(1, 1e-2)
    rec = learn.recorder
    rec.lrs, rec.losses = [1e-3], [torch.tensor(1.0)]
    assert rec.plot(skip_start=0, skip_end=0, suggestion=True, return_fig=True) is None
    assert "Failed to compute the gradients" in capsys.readouterr().out


def test_plot_k_smooths_the_losses_with_a_spline(learn):
    pytest.importorskip("scipy")
    learn.fit(1, 1e-2)
    rec = learn.recorder
    rec.lrs = list(np.logspace(-5, -1, 30))
    rng = np.random.default_rng(0)
    rec.losses = [torch.tensor(float(v)) for v in np.linspace(2, 1, 30) + rng.normal(0, 0.1, 30)]
    raw = rec.plot(skip_start=0, skip_end=0, return_fig=True).axes[0].lines[0].get_ydata()
    smooth = rec.plot(skip_start=0, skip_end=0, return_fig=True, k=3).axes[0].lines[0].get_ydata()
    assert np.abs(np.diff(smooth, 2)).mean() < np.abs(np.diff(raw, 2)).mean()
