"""Recorder, ParamScheduler (param_groups flavour) and the 05b LR_Find on the 05b Runner (spec §6: 3, 4)."""

from __future__ import annotations

import pytest
import torch.nn.functional as F
from torch import optim

from fastloop.course.schedules import sched_lin
from fastloop.course.stage04 import Learner
from fastloop.course.stage05 import ParamScheduler, Recorder
from fastloop.course.stage05b import LR_Find, Runner

from .helpers import Trace, make_data, make_model


def _container(groups: int = 1, n_train: int = 24) -> Learner:
    model = make_model()
    params = list(model.parameters())
    pgs = [{"params": params}] if groups == 1 else [{"params": params[:2]}, {"params": params[2:]}]
    return Learner(model, optim.SGD(pgs, lr=0.5), F.cross_entropy, make_data(n_train=n_train))


def test_sched_lin_over_three_batches_records_0_1_0_07_0_04():
    run = Runner(cb_funcs=[Recorder, lambda: ParamScheduler("lr", sched_lin(0.1, 0.01))])
    run.fit(1, _container())
    assert run.recorder.lrs[0] == pytest.approx([0.1, 0.07, 0.04])
    assert len(run.recorder.losses) == 3  # training batches only


def test_per_group_schedules_and_per_group_lrs():
    scheds = [sched_lin(0.1, 0.01), sched_lin(1.0, 0.1)]
    run = Runner(cb_funcs=[Recorder, lambda: ParamScheduler("lr", scheds)])
    run.fit(2, _container(groups=2))
    assert run.recorder.lrs[0] == pytest.approx([0.1, 0.085, 0.07, 0.055, 0.04, 0.025])
    assert run.recorder.lrs[1] == pytest.approx([1.0, 0.85, 0.7, 0.55, 0.4, 0.25])


def test_lr_find_with_recorder_cancels_training_and_fires_after_cancel_train_then_after_fit():
    trace = Trace(order=2)
    run = Runner(cb_funcs=[lambda: LR_Find(max_iter=5, min_lr=1e-4, max_lr=1e-1), Recorder])
    run.cbs.append(trace)
    run.fit(10, _container())
    lrs = run.recorder.lrs[0]
    assert len(lrs) == 6  # batches 0..5: the 6th after_step (n_iter 5) cancelled, after_batch still recorded it
    assert lrs[0] == pytest.approx(1e-4) and lrs[5] == pytest.approx(1e-1)
    assert lrs[1] == pytest.approx(1e-4 * 1000 ** 0.2)
    assert trace.events[-2:] == ["after_cancel_train", "after_fit"]
    assert "after_epoch" in trace.events  # two full epochs of 3 batches ran before the cancel
    assert trace.counts()["after_epoch"] == 1


def test_plots_draw_without_error():
    import matplotlib

    matplotlib.use("Agg")
    run = Runner(cb_funcs=[Recorder])
    run.fit(1, _container())
    run.recorder.plot(skip_last=1)
    run.recorder.plot_lr()
    run.recorder.plot_loss()
