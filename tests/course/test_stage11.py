"""DebugCallback with cb_types (spec §6: 10) and the Learner-style get_batch (spec §6: 11)."""

from __future__ import annotations

import pytest
import torch.nn.functional as F

from fastloop.course.callbacks import CancelTrainException, cb_types
from fastloop.course.stage06 import BatchTransformXCallback, view_tfm
from fastloop.course.stage09b import Learner
from fastloop.course.stage11 import DebugCallback, get_batch

from .helpers import Trace, make_data, make_model


def test_debug_callback_at_after_batch_raising_cancel_train_as_in_11a(capsys):
    def _print_det(o):
        print(len(o.opt.hypers), o.opt.hypers[0])
        raise CancelTrainException()

    trace = Trace(order=1000)
    learn = Learner(make_model(), make_data(), F.cross_entropy, cbs=[trace],
                    cb_funcs=[lambda: DebugCallback(cb_types.after_batch, _print_det)])
    learn.fit(1)
    out = capsys.readouterr().out
    assert out.startswith("1 {") and "'lr': 0.01" in out
    assert trace.events == ["begin_fit", "begin_epoch", "begin_batch", "after_pred", "after_loss",
                            "after_backward", "after_step", "after_cancel_train", "after_fit"]
    assert learn.debug._order == 999


def test_learner_get_batch_fires_begin_fit_begin_batch_after_fit_outside_a_fit():
    trace = Trace()
    learn = Learner(make_model(), make_data(n_in=4), F.cross_entropy, cbs=[trace],
                    cb_funcs=[lambda: BatchTransformXCallback(view_tfm(1, 2, 2))])
    xb, yb = get_batch(learn.data.train_dl, learn)
    assert xb.shape == (8, 1, 2, 2) and trace.events == ["begin_fit", "begin_batch", "after_fit"]
    assert learn.epochs == 0


def test_sched_1cycle_drives_lr_and_momentum_through_hypers_of_a_torch_optimizer():
    import torch

    from fastloop.course.stage09 import Recorder
    from fastloop.course.stage11 import sched_1cycle

    moms = []

    class Mom(Trace):
        def after_batch(self):
            if self.in_train:
                moms.append(self.opt.param_groups[0]["momentum"])

    learn = Learner(make_model(), make_data(n_train=80), F.cross_entropy,
                    opt_func=lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9), cbs=[Mom(order=2)])
    learn.fit(1, [*sched_1cycle([0.1], pct_start=0.3), Recorder()])
    lrs = learn.recorder.lrs
    assert len(lrs) == 10 and lrs[0] == pytest.approx(0.01) and max(lrs) == pytest.approx(lrs[3], rel=1e-6)
    assert lrs[3] > 0.09 and lrs[-1] < lrs[4]
    assert moms[0] == pytest.approx(0.95) and min(moms) == pytest.approx(moms[3]) and moms[3] < 0.86
