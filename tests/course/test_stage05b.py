"""The 05b Runner: Cancel*Exceptions, returns ignored; the 05b TestCallback; get_runner (spec §6: 5, 12, 13)."""

from __future__ import annotations

import pytest
import torch.nn.functional as F
from torch import optim

from fastloop.course.callbacks import (
    Callback,
    CancelBatchException,
    CancelEpochException,
    CancelTrainException,
)
from fastloop.course.stage04 import AvgStatsCallback, Learner, accuracy
from fastloop.course.stage05b import Runner
from fastloop.course.stage06 import get_runner

from .helpers import Trace, make_data, make_model


# -- the 05b notebook's TestCallback, as the course wrote it (imports changed only)
class TestCallback(Callback):
    _order = 1

    def after_step(self):
        print(self.n_iter)
        if self.n_iter >= 10:
            raise CancelTrainException()


def _container(n_train: int = 24) -> Learner:
    model = make_model()
    return Learner(model, optim.SGD(model.parameters(), lr=0.1), F.cross_entropy, make_data(n_train=n_train))


def test_05b_test_callback_stops_training_at_n_iter_10(capsys):
    trace = Trace(order=2)
    run = Runner(cb_funcs=[TestCallback])
    run.cbs.append(trace)
    run.fit(10, _container())
    printed = capsys.readouterr().out.split()
    assert printed == [str(i) for i in range(11)]
    c = trace.counts()
    # the 11th after_step raised inside TestCallback (order 1): the trace (order 2) never saw it
    assert c["after_step"] == 10 and c["after_cancel_train"] == 1 and c["after_fit"] == 1
    assert trace.events[-2:] == ["after_cancel_train", "after_fit"]
    assert run.n_iter == 11  # after_batch still ran for the cancelled batch (in the finally)


def test_returns_are_ignored_by_the_05b_runner():
    class SkipEverything(Callback):
        def begin_epoch(self):
            return True

        def begin_validate(self):
            return True

        def begin_batch(self):
            return True

    trace = Trace(order=1)
    Runner(cbs=[SkipEverything(), trace]).fit(1, _container())
    c = trace.counts()
    assert c["begin_batch"] == 4 and c["after_backward"] == 3  # every callback saw every event; nothing skipped


def test_get_runner_registers_cb_funcs_and_uses_torch_sgd():
    learn, run = get_runner(make_model(), make_data(), lr=0.3, cbs=[lambda: AvgStatsCallback([accuracy])])
    assert isinstance(learn.opt, optim.SGD) and learn.opt.param_groups[0]["lr"] == 0.3
    assert run.avg_stats is run.cbs[1]
    run.fit(1, learn)
    assert run.avg_stats.train_stats.count == 24


@pytest.mark.parametrize("exc, expect_epochs", [(CancelBatchException, 2), (CancelEpochException, 2)])
def test_cancel_in_a_batch_event_is_caught_at_its_level(exc, expect_epochs):
    class Cancel(Callback):
        def after_pred(self):
            if self.in_train:
                raise exc()

    trace = Trace(order=1)
    Runner(cbs=[Cancel(), trace]).fit(2, _container())
    c = trace.counts()
    assert c["after_epoch"] == expect_epochs and c["after_pred"] == 2  # only the validation batches got there
    if exc is CancelBatchException:
        assert c["after_cancel_batch"] == 6 and c["after_batch"] == 8
    else:
        assert c["after_cancel_epoch"] == 2 and c["after_batch"] == 4 and c["begin_validate"] == 2
