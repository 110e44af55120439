"""A handler that survives bad callbacks: each failure mode names the callback and the event, nothing is swallowed,
and fastloop itself changes nothing -- model, optimizer state and Recorder history stay at the last completed step.
Ends with a hypothesis state machine over random sets of misbehaving callbacks."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from fastloop._dispatch import EVENTS, STATE_KEYS
from fastloop.basic_train import LearnerCallback
from fastloop.callback import Callback
from tests.conftest import make_learner

# the order in which a fit first meets each event (validation's batch events come after training's)
_EVENT_RANK = {e: i for i, e in enumerate(EVENTS)}


class Watcher(LearnerCallback):
    """Runs first at every event: snapshots the weights and optimizer state after every optimizer step (and at
    train_begin), counts train_end calls, and records, per event, which state keys exist."""

    _order = -(10**6)

    def on_train_begin(self, **kwargs: Any) -> None:
        self.train_ends, self.end_exception, self.key_errors = 0, None, []
        self.seen: set[str] = set()
        self.backward_begins = 0
        self._snap()
        self._keys("train_begin", kwargs)

    def _snap(self) -> None:
        self.model = {k: v.clone() for k, v in self.learn.model.state_dict().items()}
        self.opt = {k: {n: t.clone() for n, t in s.items()} for k, s in self.learn.opt.opt.state.items()}

    def _keys(self, event: str, kwargs: dict) -> None:
        "A state key must not exist before its first event (spec §4.1 lifetimes)."
        self.seen.add(event)
        for k in kwargs:
            if k in STATE_KEYS and STATE_KEYS[k] not in self.seen:
                self.key_errors.append((k, event))

    def on_epoch_begin(self, **kwargs: Any) -> None:
        self._keys("epoch_begin", kwargs)

    def on_batch_begin(self, **kwargs: Any) -> None:
        self._keys("batch_begin", kwargs)

    def on_loss_begin(self, **kwargs: Any) -> None:
        self._keys("loss_begin", kwargs)

    def on_backward_begin(self, **kwargs: Any) -> None:
        self.backward_begins += 1
        self._keys("backward_begin", kwargs)

    def on_backward_end(self, **kwargs: Any) -> None:
        self._keys("backward_end", kwargs)

    def on_step_end(self, **kwargs: Any) -> None:
        self._snap()  # first at step_end: the step of this batch is complete
        self._keys("step_end", kwargs)

    def on_batch_end(self, **kwargs: Any) -> None:
        self._keys("batch_end", kwargs)

    def on_epoch_end(self, **kwargs: Any) -> None:
        self._keys("epoch_end", kwargs)

    def on_train_end(self, exception: Any, **kwargs: Any) -> None:
        self.train_ends += 1
        self.end_exception = exception
        self._keys("train_end", kwargs)

    def assert_untouched(self) -> None:
        "The model and optimizer state are those of the last completed step."
        for k, v in self.learn.model.state_dict().items():
            assert torch.equal(v, self.model[k]), f"weight {k} changed after the error"
        state = self.learn.opt.opt.state
        assert set(state) == set(self.opt)
        for p, s in state.items():
            for n, t in s.items():
                assert torch.equal(t, self.opt[p][n]), f"optimizer state {n} changed after the error"


def _notes(e: BaseException) -> str:
    return " ".join(getattr(e, "__notes__", []))


# ================================================================================== each failure mode
class Misbehave(LearnerCallback):
    """Does `action` the first time it sees `event` after a first completed step: in a training batch from the
    second one, at the second epoch_begin, at the first epoch_end or train_end."""

    def __init__(self, learn, event: str, action: str):
        super().__init__(learn)
        self.event, self.action, self.done = event, action, False

    def _act(self, event: str, kwargs: dict) -> Any:
        if event != self.event or self.done:
            return None
        if event in _BATCH_EVENTS and (not kwargs["train"] or kwargs["iteration"] < 1):
            return None
        if event == "epoch_begin" and kwargs["epoch"] < 1:
            return None
        self.done = True
        if self.action == "raise":
            raise RuntimeError(f"boom at {event}")
        if self.action == "bad_type":
            return 3
        if self.action == "unknown_key":
            return {"stop_trainin": True}
        if self.action == "del_opt":
            del self.learn.opt
        if self.action == "wrong_shape":
            return {"last_output": kwargs["last_output"][:3]}
        return None


for _e in EVENTS:
    setattr(Misbehave, f"on_{_e}", (lambda ev: lambda self, **kw: self._act(ev, kw))(_e))


_BATCH_EVENTS = ["batch_begin", "loss_begin", "backward_begin", "backward_end", "step_end", "batch_end"]
_ALL = ["epoch_begin", *_BATCH_EVENTS, "epoch_end", "train_end"]


def _fit_and_check(learn, cb, watcher, expected_type, note_part):
    with pytest.raises(expected_type) as info:
        learn.fit(2, 1e-2, callbacks=[watcher, cb])
    assert note_part in _notes(info.value), _notes(info.value)
    # on_train_end ran once, with the error (an error raised in on_train_end itself: the fit had ended cleanly)
    assert watcher.train_ends == 1
    assert watcher.end_exception is (False if "on_train_end" in note_part else info.value)
    watcher.assert_untouched()
    # Recorder history: one smoothed loss per backward_begin the fit reached (the failing batch's included)
    assert len(learn.recorder.losses) == watcher.backward_begins
    learn.fit(1, 1e-2)  # and the learner trains again
    return info.value


@pytest.mark.parametrize("event", _ALL)
def test_an_exception_in_any_event_names_the_callback_and_event_and_changes_nothing(tmp_path, event):
    learn = make_learner(tmp_path)
    watcher = Watcher(learn)
    e = _fit_and_check(learn, Misbehave(learn, event, "raise"), watcher, RuntimeError,
                       f"raised in callback Misbehave.on_{event}.")
    assert str(e) == f"boom at {event}"


def test_an_exception_in_on_train_begin_names_it_and_fires_no_train_end(tmp_path):
    learn = make_learner(tmp_path)
    watcher = Watcher(learn)

    class Bad(Callback):
        def on_train_begin(self, **kwargs):
            raise ValueError("no")

    with pytest.raises(ValueError, match="no") as info:
        learn.fit(1, 1e-2, callbacks=[watcher, Bad()])
    assert "Bad.on_train_begin" in _notes(info.value) and watcher.train_ends == 0
    watcher.assert_untouched()


@pytest.mark.parametrize("event", _ALL[:-1])
@pytest.mark.parametrize(("action", "exc", "text"), [
    ("bad_type", AttributeError, "returned int 3"),
    ("unknown_key", Exception,
     "returned the key 'stop_trainin': it is not a state key (did you mean 'stop_training'?)"),
])
def test_a_bad_return_names_the_callback_event_and_key_and_changes_nothing(tmp_path, event, action, exc, text):
    learn = make_learner(tmp_path)
    _fit_and_check(learn, Misbehave(learn, event, action), Watcher(learn), exc, f"Misbehave.on_{event} {text}")


@pytest.mark.parametrize(("event", "key"), [("epoch_begin", "last_output"), ("batch_begin", "smooth_loss"),
                                            ("loss_begin", "last_metrics")])
def test_a_key_returned_before_it_exists_names_when_it_first_appears(tmp_path, event, key):
    class Early(Callback):
        pass

    setattr(Early, f"on_{event}", lambda self, **kwargs: {key: 0})
    learn = make_learner(tmp_path)
    e = _fit_and_check(learn, Early(), Watcher(learn), Exception,
                       f"Early.on_{event} returned the key '{key}': it does not exist yet at on_{event} "
                       f"(first at on_{STATE_KEYS[key]})")
    assert str(e) == f"{key} isn't a valid key in the state of the callbacks."


@pytest.mark.parametrize("event", ["batch_begin", "backward_end", "batch_end", "epoch_end"])
def test_a_callback_deleting_learn_opt_is_stopped_in_the_act_naming_it(tmp_path, event):
    learn = make_learner(tmp_path)
    learn.fit(1, 1e-2)
    opt = learn.opt
    e = _fit_and_check(learn, Misbehave(learn, event, "del_opt"), Watcher(learn), AttributeError,
                       f"raised in callback Misbehave.on_{event}.")
    assert "learn.opt cannot be deleted during fit" in str(e)
    assert learn.opt is opt


def test_deleting_learn_opt_between_fits_still_works_as_in_v1(tmp_path):
    learn = make_learner(tmp_path)
    learn.fit(1, 1e-2)
    del learn.opt
    assert "opt" not in learn.__dict__


def test_a_wrong_shape_last_output_names_the_callback_that_replaced_it(tmp_path):
    """With several on_loss_begin implementers the note lists them all ("one of ..."); here only the culprit."""

    class QuietWatcher(Watcher):
        on_loss_begin = Callback.on_loss_begin  # a no-op: not an on_loss_begin implementer

    learn = make_learner(tmp_path)
    e = _fit_and_check(learn, Misbehave(learn, "loss_begin", "wrong_shape"), QuietWatcher(learn), ValueError,
                       "replaced by callback Misbehave.on_loss_begin (the model's output had shape (16, 2), "
                       "the replacement (3, 2))")
    assert "batch_size" in str(e)  # torch's own message is kept


# ============================================================================== the state machine
ACTIONS = ["raise", "bad_type", "unknown_key", "too_early", "flag", "del_opt", "wrong_shape", "nothing"]
_FLAGS = ["stop_epoch", "skip_step", "skip_zero", "skip_bwd", "stop_training", "skip_validate"]


class Random(LearnerCallback):
    """At the `nth` time it sees `event`, does `action`; records in `log` the (label, event) of an action that must
    make the fit fail, before doing it."""

    def __init__(self, learn, label: str, event: str, action: str, nth: int, order: int, flag: str, log: list):
        super().__init__(learn)
        self.label, self.event, self.action, self.nth, self.flag, self.log = label, event, action, nth, flag, log
        self._order, self.count = order, 0

    def _act(self, event: str, kwargs: dict) -> Any:
        if event != self.event:
            return None
        self.count += 1
        if self.count - 1 != self.nth:
            return None
        a = self.action
        if a == "raise":
            self.log.append((self.label, event))
            raise RuntimeError(self.label)
        if a == "bad_type":
            self.log.append((self.label, event))
            return 1
        if a == "unknown_key":
            self.log.append((self.label, event))
            return {"no_such_key": 1}
        if a == "too_early":
            missing = [k for k in STATE_KEYS if k not in kwargs]
            if missing:
                self.log.append((self.label, event))
                return {missing[0]: 0}
        if a == "flag" and self.flag in kwargs:
            return {self.flag: True}
        if a == "del_opt" and event != "train_end":  # after the fit, deleting is allowed (v1)
            self.log.append((self.label, event))
            del self.learn.opt
        if a == "wrong_shape" and event == "loss_begin":
            self.log.append((self.label, event))
            return {"last_output": kwargs["last_output"][:1]}
        return None


for _e in EVENTS:
    setattr(Random, f"on_{_e}", (lambda ev: lambda self, **kw: self._act(ev, kw))(_e))


class HandlerMachine(RuleBasedStateMachine):
    """Fits a tiny learner again and again with random sets of misbehaving callbacks."""

    @initialize()
    def setup(self) -> None:
        self.learn = make_learner(n_train=32, n_valid=16, bs=16)
        self.pending: list[tuple] = []
        self.fits = 0

    @rule(event=st.sampled_from(EVENTS), action=st.sampled_from(ACTIONS), nth=st.integers(0, 3),
          order=st.integers(-20, 20), flag=st.sampled_from(_FLAGS))
    def add_callback(self, event: str, action: str, nth: int, order: int, flag: str) -> None:
        if len(self.pending) < 3:
            self.pending.append((event, action, nth, order, flag))

    @rule(epochs=st.integers(1, 2))
    def fit(self, epochs: int) -> None:
        log: list[tuple[str, str]] = []
        # one class per callback, so that an error note (which names the class) tells them apart
        cbs = [type(f"Cb{i}", (Random,), {})(self.learn, f"Cb{i}", *spec, log) for i, spec in enumerate(self.pending)]
        watcher = Watcher(self.learn)
        error = None
        try:
            self.learn.fit(epochs, 1e-2, callbacks=[watcher, *cbs])
        except Exception as e:  # noqa: BLE001 - every error is checked below
            error = e
        self.pending = []
        self.fits += 1
        # no silent swallow: a misbehaviour that must fail did fail, and nothing failed without one
        assert (error is None) == (not log), (error, log)
        if error is not None:
            label, event = log[0]
            chain, e = [], error
            while e is not None:
                chain.append(e)
                e = e.__context__
            text = " ".join(_notes(x) for x in chain)
            assert f"{label}.on_{event}" in text, (text, log)
            began = not (event == "train_begin")
            assert watcher.train_ends == (1 if began else 0)
            if event == "train_end":  # the first error came from on_train_end itself: the fit had ended cleanly
                assert watcher.end_exception is False
            elif began:
                assert watcher.end_exception in chain  # on_train_end got the error (or one it caused)
            watcher.assert_untouched()
        else:
            assert watcher.train_ends == 1 and watcher.end_exception is False
        assert watcher.key_errors == []

    @invariant()
    def learner_is_whole(self) -> None:
        assert "opt" in self.learn.__dict__ and (self.fits == 0 or self.learn.opt is not None)
        assert "_fit_run" not in self.learn.__dict__


HandlerMachine.TestCase.settings = settings(max_examples=20, stateful_step_count=5, deadline=None,
                                            suppress_health_check=[HealthCheck.too_slow])
test_handler_state_machine = HandlerMachine.TestCase
