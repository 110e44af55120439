"""The 09b Learner (fastloop/course/stage09b.py): event flow, exceptions, callbacks' lifetime, v1 flags (spec §6)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastloop.course.callbacks import (
    Callback,
    CancelBatchException,
    CancelEpochException,
    CancelTrainException,
)
from fastloop.course.optim import Optimizer
from fastloop.course.stage04 import accuracy
from fastloop.course.stage08 import DataBunch as DataBunch08
from fastloop.course.stage09 import LR_Find, Recorder
from fastloop.course.stage09b import AvgStatsCallback, Learner, get_learner

from .helpers import Trace, fit_events, make_data, make_model


def _learn(**kwargs) -> Learner:
    data_kw = {k: kwargs.pop(k) for k in ("n_train", "n_valid") if k in kwargs}
    return Learner(make_model(), make_data(**data_kw), F.cross_entropy, **kwargs)


def test_event_sequence_of_a_plain_fit():
    trace = Trace()
    _learn(cbs=[trace]).fit(2)
    assert trace.events == fit_events(2, 3, 1)
    c = trace.counts()
    assert c["begin_batch"] == 8 and c["after_backward"] == 6 and c["begin_epoch"] == 2  # once per epoch


def test_attributes_during_the_fit():
    seen = {}

    class Look(Callback):
        _order = 1

        def begin_fit(self):
            seen["begin_fit"] = (self.epochs, float(self.loss), self.in_train, type(self.opt).__name__)

        def after_step(self):
            seen.setdefault("grad_at_after_step", self.model[1].weight.grad is not None)

        def after_batch(self):
            if self.in_train:
                g = self.model[1].weight.grad
                seen.setdefault("grad_at_after_batch", g is None or bool((g == 0).all()))
            else:
                seen["valid"] = (self.iter, self.iters, self.dl is self.data.valid_dl, torch.is_grad_enabled())

    learn = _learn(cbs=[Look()])
    learn.fit(1)
    assert seen["begin_fit"] == (1, 0.0, False, "Optimizer")
    assert seen["grad_at_after_step"] and seen["grad_at_after_batch"]  # the course Optimizer zeroes in place
    assert seen["valid"] == (0, 1, True, False)
    assert learn.iter == 0 and learn.epoch == 0  # stale values stay after the fit


def test_fit_time_callbacks_are_removed_but_their_attribute_stays():
    learn = _learn()
    rec = Recorder()
    learn.fit(1, [rec])
    assert rec not in learn.cbs and learn.recorder is rec and len(rec.losses) == 3
    assert [type(cb).__name__ for cb in learn.cbs] == ["TrainEvalCallback"]


def test_every_callback_is_registered_by_name_and_cb_funcs_keep_state_across_fits():
    learn = _learn(cbs=[Recorder()], cb_funcs=[lambda: LR_Find(max_iter=2)])
    assert isinstance(learn.recorder, Recorder) and isinstance(learn.lr__find, LR_Find)
    assert learn.train_eval is learn.cbs[0]
    learn.fit(1)
    best = learn.lr__find.best_loss
    assert torch.is_tensor(best)
    learn.fit(1)
    assert learn.lr__find.best_loss is best or learn.lr__find.best_loss <= best  # same instance, state kept


def test_lr_find_and_recorder_cover_cancel_train_and_recorder_survives():
    trace = Trace(order=2)
    # a torch optimizer: the 09 LR_Find and Recorder reach its lr through opt.hypers
    learn = _learn(cbs=[trace], opt_func=lambda params, lr: torch.optim.SGD(params, lr=lr))
    learn.fit(3, [LR_Find(max_iter=4, min_lr=1e-3, max_lr=1.0), Recorder()])
    assert trace.events[-2:] == ["after_cancel_train", "after_fit"]
    assert trace.counts()["after_epoch"] == 1
    assert learn.recorder.lrs == pytest.approx([1e-3 * 1000 ** (i / 4) for i in range(5)])
    assert [type(cb).__name__ for cb in learn.cbs] == ["TrainEvalCallback", "Trace"]


def test_sched_lin_on_the_learner_records_0_1_0_07_0_04():
    from fastloop.course.schedules import sched_lin
    from fastloop.course.stage09 import ParamScheduler

    learn = _learn(cb_funcs=[Recorder, lambda: ParamScheduler("lr", sched_lin(0.1, 0.01))])
    learn.fit(1)
    assert learn.recorder.lrs == pytest.approx([0.1, 0.07, 0.04])


class _Raise(Callback):
    _order = 1

    def __init__(self, event, exc, train_only=True):
        self.event, self.exc, self.train_only = event, exc, train_only
        setattr(self, event, self._raise)

    def _raise(self):
        if not self.train_only or self.in_train:
            raise self.exc()


def _trace_with(event, exc, epochs=1, train_only=True):
    trace = Trace(order=2)
    learn = _learn(cbs=[_Raise(event, exc, train_only), trace])
    return learn, trace


def test_cancel_batch_skips_the_rest_of_the_batch():
    learn, trace = _trace_with("after_loss", CancelBatchException)
    learn.fit(1)
    c = trace.counts()
    assert c["after_cancel_batch"] == 3 and c["after_backward"] == 0 and c["after_batch"] == 4
    assert trace.events[:4] == ["begin_fit", "begin_epoch", "begin_batch", "after_pred"]
    assert trace.events[4:6] == ["after_cancel_batch", "after_batch"]


def test_cancel_epoch_in_a_batch_event_ends_the_loop_and_validation_still_runs():
    learn, trace = _trace_with("begin_batch", CancelEpochException)
    learn.fit(2)
    c = trace.counts()
    assert c["after_cancel_epoch"] == 2 and c["begin_validate"] == 2 and c["after_epoch"] == 2
    i = trace.events.index("after_cancel_epoch")
    assert trace.events[i - 1] == "after_batch"  # the finally ran first


def test_cancel_train_in_a_batch_event():
    learn, trace = _trace_with("after_backward", CancelTrainException)
    learn.fit(2)
    assert trace.events[-4:] == ["after_loss", "after_batch", "after_cancel_train", "after_fit"]
    assert "after_epoch" not in trace.events


def test_cancel_train_in_an_epoch_event():
    learn, trace = _trace_with("begin_epoch", CancelTrainException, train_only=False)
    learn.fit(2)
    assert trace.events == ["begin_fit", "after_cancel_train", "after_fit"]


@pytest.mark.parametrize("event, exc", [
    ("begin_fit", CancelEpochException), ("begin_epoch", CancelBatchException),
    ("begin_validate", CancelEpochException), ("after_epoch", CancelBatchException),
    ("after_batch", CancelBatchException),
])
def test_cancel_exceptions_raised_in_the_wrong_place_escape_fit_and_after_fit_still_runs(event, exc):
    learn, trace = _trace_with(event, exc, train_only=False)
    with pytest.raises(exc):
        learn.fit(1)
    assert trace.events[-1] == "after_fit"
    assert learn.exception is not False


def test_an_exception_stops_dispatch_for_later_callbacks():
    learn, trace = _trace_with("begin_fit", CancelTrainException, train_only=False)
    learn.fit(1)
    assert "begin_fit" not in trace.events  # the trace (order 2) comes after the raiser (order 1)


def test_call_refuses_an_unknown_event_with_a_suggestion():
    with pytest.raises(AssertionError, match="did you mean 'after_batch'"):
        _learn()("after_batches")


def test_fit_with_a_number_sets_the_lr():
    learn = _learn()
    learn.fit(1, 0.3)
    assert all(h["lr"] == 0.3 for h in learn.opt.hypers)


def test_reset_opt_builds_a_new_optimizer():
    learn = _learn()
    learn.fit(1)
    opt = learn.opt
    learn.fit(1)
    assert learn.opt is opt
    learn.fit(1, reset_opt=True)
    assert learn.opt is not opt


def test_v1_flags_skip_step_and_stop_epoch_set_by_a_course_callback():
    class Flags(Callback):
        def after_backward(self):
            self.run.skip_step = True

        def after_batch(self):
            if self.in_train and self.iter == 1:
                self.run.stop_epoch = True

    trace = Trace(order=1)
    learn = _learn(cbs=[Flags(), trace])
    w0 = learn.model[1].weight.detach().clone()
    learn.fit(1)
    assert torch.equal(learn.model[1].weight, w0)  # no step ran
    c = trace.counts()
    assert c["after_step"] == 2 and c["begin_validate"] == 1  # stop_epoch ended training after 2 batches
    assert learn.iteration == 2 and learn.num_batch == 2


def test_skip_validate_and_stop_training():
    class Flags(Callback):
        def begin_fit(self):
            self.run.skip_validate = True

        def after_epoch(self):
            self.run.stop_training = self.epoch == 1

    trace = Trace(order=1)
    learn = _learn(cbs=[Flags(), trace])
    learn.fit(5)
    c = trace.counts()
    assert c["begin_validate"] == 0 and c["after_epoch"] == 2 and learn.epochs_done == 2
    assert learn.last_metrics == [None]


def test_smooth_loss_is_v1s_debiased_moving_average_of_the_raw_training_loss():
    losses = []

    class Keep(Callback):
        def after_loss(self):
            if self.in_train:
                losses.append(self.loss.item())

    learn = _learn(cbs=[Keep()])
    learn.fit(1)
    mov = 0.0
    for v in losses:
        mov = 0.98 * mov + 0.02 * v
    assert learn.smooth_loss.item() == pytest.approx(mov / (1 - 0.98 ** len(losses)), rel=1e-6)


def test_model_and_loss_unpack_list_inputs():
    class TwoInputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 2)

        def forward(self, a, b):
            return self.lin(a + b)

    class Pair(Callback):
        def begin_batch(self):
            self.run.xb = [self.xb, torch.zeros_like(self.xb)]

    learn = Learner(TwoInputs(), make_data(), F.cross_entropy, cbs=[Pair()])
    learn.fit(1)
    assert learn.n_iter == 3


def test_avg_stats_09b_writes_through_the_logger():
    lines = []
    learn = _learn(cb_funcs=[lambda: AvgStatsCallback([accuracy])])
    learn.logger = lines.append
    learn.fit(2)
    assert [repr(o).split(":")[0] for o in lines] == ["train", "valid", "train", "valid"]
    assert learn.avg_stats.valid_stats.count == 8


def test_get_learner_builds_a_cnn_learner_with_the_course_optimizer():
    x = torch.randn(16, 1, 8, 8)
    y = torch.randint(0, 3, (16,))
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    learn = get_learner([4, 8], DataBunch08(dl, dl, 1, 3), 0.1, cb_funcs=[Recorder])
    learn.fit(1)
    assert isinstance(learn.opt, Optimizer) and len(learn.recorder.lrs) == 2
    assert learn.model(x).shape == (16, 3)
