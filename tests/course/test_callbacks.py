"""The course `Callback` base, `TrainEvalCallback` and the event names (fastloop/course/callbacks.py)."""

from __future__ import annotations

import pytest
import torch.nn.functional as F

from fastloop.course.callbacks import ALL_CBS, COURSE_EVENTS, Callback, TrainEvalCallback, cb_types, listify
from fastloop.course.stage09 import LR_Find
from fastloop.course.stage09b import Learner
from fastloop.course.stage09c import AvgStatsCallback

from .helpers import Trace, make_data, make_model


def test_name_strips_callback_suffix_and_snake_cases():
    class MyRecorderCallback(Callback):
        pass

    class Callback2(Callback):
        pass

    assert AvgStatsCallback([]).name == "avg_stats"
    assert LR_Find().name == "lr__find"  # camel2snake's double underscore, as in the course
    assert MyRecorderCallback().name == "my_recorder"
    assert TrainEvalCallback().name == "train_eval"
    assert type("Callback", (Callback,), {})().name == "callback"  # empty after stripping
    assert Callback2().name == "callback2"


def test_reads_fall_through_to_the_runner_but_writes_stay_on_the_callback():
    class Holder:
        x, loss = 1, 10

    cb = Callback()
    cb.set_runner(Holder())
    assert cb.x == 1 and cb.run.x == 1
    cb.loss += 5  # reads the runner's loss, stores the sum on the callback
    assert cb.loss == 15 and Holder.loss == 10


def test_reading_before_set_runner_is_an_attribute_error_not_a_recursion():
    with pytest.raises(AttributeError, match="set_runner has not been called"):
        Callback().run  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'xb'"):
        Callback().xb  # noqa: B018


def test_missing_attribute_is_reported_as_missing_on_the_runner():
    learn = Learner(make_model(), make_data(), F.cross_entropy)
    with pytest.raises(AttributeError, match="'Learner' object has no attribute 'epoch'"):
        learn.train_eval.epoch  # noqa: B018


def test_call_returns_true_only_for_a_truthy_return():
    class C(Callback):
        def begin_fit(self):
            return 1

        def after_fit(self):
            return None

    c = C()
    assert c("begin_fit") is True and c("after_fit") is False and c("begin_epoch") is False


def test_event_names_and_cb_types():
    assert len(ALL_CBS) == 14 and ALL_CBS == set(COURSE_EVENTS)
    assert cb_types.after_batch == "after_batch"
    with pytest.raises(AttributeError):
        cb_types.after_batches  # noqa: B018


def test_listify_returns_the_same_list_and_wraps_the_rest():
    a = [1]
    assert listify(a) is a
    assert listify(None) == [] and listify("ab") == ["ab"] and listify((1, 2)) == [1, 2] and listify(3) == [3]


def test_train_eval_counters_and_model_mode_across_a_fit():
    """3 train batches + 1 valid batch, 2 epochs: n_epochs is fractional progress, n_iter counts training batches."""
    seen = []

    class Probe(Callback):
        _order = 1  # after TrainEvalCallback: counters already moved at after_batch

        def begin_epoch(self):
            seen.append(("begin_epoch", self.n_epochs, self.n_iter, self.model.training, self.in_train))

        def begin_validate(self):
            seen.append(("begin_validate", self.n_epochs, self.n_iter, self.model.training, self.in_train))

        def after_batch(self):
            seen.append(("after_batch", round(self.n_epochs, 6), self.n_iter, self.model.training, self.in_train))

    learn = Learner(make_model(), make_data(), F.cross_entropy, cbs=[Probe()])
    assert learn.in_train is False  # before the first epoch
    learn.fit(2)
    assert seen[:6] == [
        ("begin_epoch", 0, 0, True, True),
        ("after_batch", round(1 / 3, 6), 1, True, True),
        ("after_batch", round(2 / 3, 6), 2, True, True),
        ("after_batch", 1.0, 3, True, True),
        ("begin_validate", 1.0, 3, False, False),
        ("after_batch", 1.0, 3, False, False),  # validation batches move nothing
    ]
    assert seen[6][:3] == ("begin_epoch", 1, 3)  # n_epochs reset to the epoch index
    assert learn.n_iter == 6 and learn.n_epochs == pytest.approx(2.0)


def test_negative_order_sees_counters_before_the_increment():
    early, late = Trace(order=-1), Trace(order=1)
    Learner(make_model(), make_data(), F.cross_entropy, cbs=[early, late]).fit(1)
    first_after_batch = [r for r in early.records if r[0] == "after_batch"][0]
    assert first_after_batch[2] == 0
    assert [r for r in late.records if r[0] == "after_batch"][0][2] == 1
