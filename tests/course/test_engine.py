"""The course style on the one dispatch core (fastloop/course/_engine.py): call lists, order, checks, notes."""

from __future__ import annotations

import warnings

import pytest
import torch.nn.functional as F

from fastloop import _dispatch
from fastloop.core import defaults
from fastloop.course._engine import CourseDispatch, course_hook, first_true, ignore_returns
from fastloop.course.callbacks import Callback
from fastloop.course.stage09b import Learner

from .helpers import Trace, make_data, make_model


class A(Callback):
    def begin_fit(self):
        self.run.order.append("A")


class B(Callback):
    _order = -5

    def begin_fit(self):
        self.run.order.append("B")


class C(Callback):
    def begin_fit(self):
        self.run.order.append("C")
        return True


class Holder:
    def __init__(self):
        self.order = []


def _attach(cbs, run):
    for cb in cbs:
        cb.set_runner(run)
    return cbs


def test_stable_sort_by_order_and_only_implementers_are_called():
    run = Holder()
    cbs = _attach([A(), C(), B(), A()], run)
    d = CourseDispatch()
    assert d.fire(cbs, "begin_fit", ignore_returns) is False
    assert run.order == ["B", "A", "C", "A"]
    assert d.implementers(cbs, "after_batch") == []  # nobody implements it: nothing is called


def test_first_true_stops_the_event_at_the_first_true():
    run = Holder()
    cbs = _attach([C(), A()], run)
    assert CourseDispatch().fire(cbs, "begin_fit", first_true) is True
    assert run.order == ["C"]  # A never saw the event


def test_call_lists_follow_changes_of_the_list_and_of_order():
    run = Holder()
    a, b = A(), A()
    cbs = _attach([a, b], run)
    d = CourseDispatch()
    assert d.implementers(cbs, "begin_fit") == [a, b]
    b._order = -1
    assert d.implementers(cbs, "begin_fit") == [b, a]
    cbs.remove(a)
    assert d.implementers(cbs, "begin_fit") == [b]


def test_the_course_style_goes_through_the_core_fire(monkeypatch):
    calls = []
    real = _dispatch.fire

    def spy(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(_dispatch, "fire", spy)
    Learner(make_model(), make_data(n_train=8, n_valid=8), F.cross_entropy, cbs=[Trace()]).fit(1)
    assert calls.count("begin_batch") == 2 and "after_fit" in calls


def test_hook_lookup_does_not_fall_through_to_the_runner():
    class Runnerish:
        def begin_fit(self):  # a runner attribute with an event's name must not become a hook
            raise AssertionError

    cb = Callback()
    cb.set_runner(Runnerish())
    assert course_hook(cb, "begin_fit") is None


def test_overridden_call_sees_every_event():
    seen = []

    class Debug(Callback):
        def __call__(self, cb_name):
            seen.append(cb_name)

    learn = Learner(make_model(), make_data(n_train=8, n_valid=8), F.cross_entropy, cbs=[Debug()])
    learn.fit(1)
    assert seen[0] == "begin_fit" and seen[-1] == "after_fit" and seen.count("begin_batch") == 2


def test_fastai2_spelling_warns_with_the_course_event():
    class Fa2(Callback):
        def before_fit(self):
            pass

    with pytest.warns(UserWarning, match="Fa2.before_fit is not a callback event.*did you mean `begin_fit`"):
        Learner(make_model(), make_data(), F.cross_entropy, cbs=[Fa2()]).fit(1)


def test_strict_mode_makes_a_misspelling_an_error(monkeypatch):
    class Typo(Callback):
        def after_batches(self):
            pass

    monkeypatch.setattr(defaults, "strict_callbacks", True)
    learn = Learner(make_model(), make_data(), F.cross_entropy, cbs=[Typo()])
    with pytest.raises(AttributeError, match="did you mean `after_batch`"):
        learn.fit(1)


def test_a_hook_with_an_argument_is_refused_with_a_clear_message():
    class HandlerEra(Callback):
        def begin_fit(self, learn):  # the 04 handler-era signature
            pass

    learn = Learner(make_model(), make_data(), F.cross_entropy, cbs=[HandlerEra()])
    with pytest.raises(_dispatch.CallbackSignatureError, match="course-style events are called without arguments"):
        learn.fit(1)


def test_an_error_in_a_course_hook_names_the_callback_and_event():
    class Boom(Callback):
        def after_pred(self):
            raise ValueError("boom")

    learn = Learner(make_model(), make_data(), F.cross_entropy, cbs=[Boom()])
    with pytest.raises(ValueError, match="boom") as info:
        learn.fit(1)
    assert "fastloop: raised in callback Boom.after_pred." in info.value.__notes__
    assert learn.exception is info.value


def test_no_warning_for_the_shipped_callbacks():
    from fastloop.course import nb_12a

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in nb_12a.__all__:
            obj = getattr(nb_12a, name)
            if isinstance(obj, type) and issubclass(obj, Callback):
                _dispatch.check_hooks(obj.__new__(obj), events=tuple(sorted(nb_12a.ALL_CBS)), prefix="",
                                      candidates=("begin_", "after_", "before_"))
