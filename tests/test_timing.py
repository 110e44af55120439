"""Per-callback timing: `CallbackTimer`, `Learner.time_callbacks` / `Learner.callback_times`, the slow warning."""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from typing import Any

import pytest
import torch

from fastloop.callback import Callback
from fastloop.callbacks.timing import CallbackTimer, CallbackTimes, SlowCallbackWarning

from .conftest import make_learner


class Sleepy(Callback):
    "Spends `secs` (busy wait: sleep granularity is coarse) at every training on_batch_end."

    def __init__(self, secs: float = 0.002) -> None:
        self.secs = secs

    def on_batch_end(self, train: bool, **kwargs: Any) -> None:
        if train:
            end = time.perf_counter() + self.secs
            while time.perf_counter() < end:
                pass


def _fit(learn: Any, epochs: int = 1, **kw: Any) -> list:
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("always")
        learn.fit(epochs, **kw)
    return [w for w in caught if issubclass(w.category, SlowCallbackWarning)]


def test_callback_times_has_one_row_per_callback_and_event_with_calls_and_times():
    learn = make_learner().time_callbacks(warn_share=None)
    _fit(learn, 2, callbacks=[Sleepy()])
    t = learn.callback_times()
    rows = {(r.callback, r.event): r for r in t.rows}
    # 4 training batches and 2 validation batches per epoch
    assert rows[("Sleepy", "batch_end")].calls == 8 and rows[("Sleepy", "batch_end (valid)")].calls == 4
    assert rows[("Recorder", "backward_begin")].calls == 8 and rows[("Recorder", "epoch_end")].calls == 2
    assert rows[("Recorder", "train_begin")].calls == 1
    sleepy = rows[("Sleepy", "batch_end")]
    assert sleepy.total_s >= 8 * 0.002 and sleepy.mean_us == pytest.approx(sleepy.total_s / 8 * 1e6)
    assert t.n_batches == 8 and t.batch_time_s >= sleepy.total_s
    assert 0 < sleepy.share <= 1 and sleepy.share == pytest.approx(sleepy.total_s / t.batch_time_s)
    assert [r.total_s for r in t.rows] == sorted((r.total_s for r in t.rows), reverse=True)  # slowest first
    # callbacks that implement nothing at an event have no row there (they are not called)
    assert ("Sleepy", "batch_begin") not in rows


def test_the_table_renders_as_text_and_html_and_as_records():
    learn = make_learner().time_callbacks(warn_share=None)
    _fit(learn, callbacks=[Sleepy()])
    t = learn.callback_times()
    text = str(t)
    assert text.splitlines()[0].split()[:3] == ["callback", "event", "calls"] and "Sleepy" in text
    assert "4 training batches" in text
    html = t._repr_html_()
    assert html.startswith("<table>") and "<td>Sleepy</td>" in html and "<td>batch_end</td>" in html
    recs = t.to_records()
    assert len(recs) == len(t.rows) and {"Sleepy", "Recorder"} == {r["callback"] for r in recs}
    assert set(recs[0]) == {"callback", "event", "calls", "total_s", "mean_us", "share"}


def test_a_callback_above_the_warn_share_is_named_in_one_warning_per_fit():
    learn = make_learner().time_callbacks(warn_share=0.05, min_batches=2)
    caught = _fit(learn, 3, callbacks=[Sleepy(0.005)])
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert "callback Sleepy" in msg and "on_batch_end" in msg and "learn.callback_times()" in msg


def test_no_warning_below_the_share_before_min_batches_or_with_warn_share_none():
    for kw in (dict(warn_share=0.99), dict(warn_share=0.01, min_batches=1000), dict(warn_share=None)):
        learn = make_learner().time_callbacks(**kw)
        assert _fit(learn, callbacks=[Sleepy(0.002)]) == []


def test_timing_is_off_by_default_and_callback_times_says_how_to_turn_it_on():
    learn = make_learner()
    _fit(learn)
    t = learn.callback_times()
    assert isinstance(t, CallbackTimes) and t.rows == () and "learn.time_callbacks()" in str(t)
    learn.time_callbacks()
    learn.time_callbacks()  # idempotent: one timer
    assert sum(getattr(f, "func", f) is CallbackTimer for f in learn.callback_fns) == 1
    learn.time_callbacks(on=False)
    assert not any(getattr(f, "func", f) is CallbackTimer for f in learn.callback_fns)


def test_the_timer_changes_no_number_and_keeps_a_sync_free_fit_sync_free():
    from fastloop._sync_free import LazyLoss

    class Aware(Callback):
        _sync_free = True

        def on_backward_begin(self, smooth_loss: Any, **kwargs: Any) -> None:
            self.types = getattr(self, "types", set()) | {type(smooth_loss)}

    plain, timed = make_learner(), make_learner().time_callbacks()
    aware = Aware()
    torch.manual_seed(1)  # the same shuffles
    _fit(plain, 2)
    torch.manual_seed(1)
    _fit(timed, 2, callbacks=[aware])
    assert aware.types == {LazyLoss}
    assert all(torch.equal(a, b) for a, b in zip(plain.model.parameters(), timed.model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(plain.recorder.losses, timed.recorder.losses))


def test_a_timer_given_by_hand_restarts_at_each_fit_and_reports_the_last():
    learn = make_learner()
    timer = CallbackTimer()
    _fit(learn, 2, callbacks=[timer])
    _fit(learn, 1, callbacks=[timer])
    assert timer.table().n_batches == 4
    rows = {(r.callback, r.event): r.calls for r in timer.table().rows}
    assert rows[("Recorder", "epoch_end")] == 1


def test_get_preds_after_a_timed_fit_does_not_replace_the_fits_table():
    learn = make_learner().time_callbacks(warn_share=None)
    _fit(learn, 1)
    n = learn.callback_times().n_batches
    with contextlib.redirect_stdout(io.StringIO()):
        learn.get_preds()
    assert n == 4 and learn.callback_times().n_batches == 4
