"""`CallbackTimer`: how long each callback takes at each event, and a warning naming a slow one.

    learn.time_callbacks()            # or Learner(..., callback_fns=[CallbackTimer])
    learn.fit(2)
    learn.callback_times()            # a table: HTML in a notebook, text in a console

Each row is one callback at one event: calls, total and mean time, and the share of the *training batch
time* -- the wall time from the start of ``on_batch_begin`` to the end of ``on_batch_end`` of the training
batches, i.e. forward, loss, backward, step and every per-batch callback (not the data loader, not
validation).  Batch events in validation are rows of their own (``batch_end (valid)``).  Times are host
wall-clock times (``time.perf_counter_ns``): on a GPU a callback that only queues work looks cheap, and one
that reads a value from the device is charged for the wait.

When one callback's calls inside training batches take more than ``warn_share`` of the training batch
time (checked after each epoch, once at least ``min_batches`` batches were timed), a `SlowCallbackWarning`
names it, once per fit.

How it works and what it costs: `CallbackTimer` is a *probe* (see `fastloop._dispatch.fire_probed`): the
handler tells it where each event begins and ends and lets it wrap each callback call, which it does with
one ``perf_counter_ns`` pair.  It implements no ``on_*`` hook, so it takes no part in training, and it
declares ``_sync_free`` (it reads no loss), so it keeps a sync-free fit sync-free.  It is off by default:
with it, every event goes through the probed dispatch path, which costs a few microseconds per batch (see
benchmarks/RESULTS.md); without it that path costs one truthiness check per event.
"""

from __future__ import annotations

import html
import time
import warnings
import weakref
from collections.abc import Mapping
from typing import Any

import attrs

from ..callback import AverageMetric, Callback

__all__ = ["CallbackTimer", "CallbackTimes", "TimingRow", "SlowCallbackWarning", "callback_times", "time_callbacks"]

_BATCH_EVENTS = frozenset({"batch_begin", "loss_begin", "backward_begin", "backward_end", "step_end", "batch_end"})
_TRAIN, _VALID, _OTHER = 0, 1, 2  # where a call happened: in a training batch, a validation batch, elsewhere


class SlowCallbackWarning(UserWarning):
    "A callback takes more than the set share of the training batch time."


def _label(cb: Any) -> str:
    return cb.name if isinstance(cb, AverageMetric) else type(cb).__name__


@attrs.frozen
class TimingRow:
    """One callback at one event: ``calls``, ``total_s`` (seconds), ``mean_us`` and ``share`` of the training
    batch time (None when no training batch was timed)."""

    callback: str
    event: str
    calls: int
    total_s: float
    mean_us: float
    share: float | None


@attrs.frozen
class CallbackTimes:
    """The table `Learner.callback_times` returns: rows sorted by total time, plus the batch totals.

    ``print(t)`` or ``str(t)`` gives a text table; a notebook shows it as HTML; ``to_records()`` gives plain dicts.
    """

    rows: tuple[TimingRow, ...]
    n_batches: int  # training batches timed
    batch_time_s: float  # wall time inside training batches (on_batch_begin .. on_batch_end)
    note: str = ""

    @property
    def batch_mean_us(self) -> float:
        "Mean wall time of one training batch, in microseconds."
        return self.batch_time_s / self.n_batches * 1e6 if self.n_batches else 0.0

    def to_records(self) -> list[dict[str, Any]]:
        "One dict per row."
        return [attrs.asdict(r) for r in self.rows]

    def _cells(self) -> list[list[str]]:
        out = []
        for r in self.rows:
            share = "" if r.share is None else f"{100 * r.share:.1f}%"
            out.append([r.callback, r.event, str(r.calls), f"{1e3 * r.total_s:.2f}", f"{r.mean_us:.1f}", share])
        return out

    _HEAD = ("callback", "event", "calls", "total ms", "mean µs", "share of batch time")

    def _summary(self) -> str:
        if self.note:
            return self.note
        return (f"{self.n_batches} training batches, {1e3 * self.batch_time_s:.1f} ms inside them "
                f"({self.batch_mean_us:.1f} µs per batch).")

    def __str__(self) -> str:
        lines = [list(self._HEAD)] + self._cells()
        widths = [max(len(line[i]) for line in lines) for i in range(len(self._HEAD))]
        text = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
                for line in lines]
        text.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join([*text, self._summary()])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self._HEAD)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in self._cells())
        return (f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
                f"<p>{html.escape(self._summary())}</p>")


class CallbackTimer(Callback):
    """Times every callback at every event (a probe: it has no ``on_*`` hook and changes nothing).

    ``CallbackTimer(learn)`` (so it works in ``callback_fns``) registers itself as ``learn.callback_timer`` when
    a fit begins (``get_preds``, which also builds ``callback_fns``, fires no ``train_begin`` and so does not
    replace the fit's timer); ``CallbackTimer()`` works too (``fit(callbacks=[...])``).  Statistics restart at
    each ``train_begin``, so they are the last fit's.  `warn_share` (None: never warn) and `min_batches`: see
    the module docstring.
    """

    _sync_free = True  # reads no loss: a sync-free fit stays sync-free with the timer on

    def __init__(self, learn: Any = None, warn_share: float | None = 0.25, min_batches: int = 10):
        self.warn_share, self.min_batches = warn_share, min_batches
        self._learn = weakref.ref(learn) if learn is not None else None
        self.reset()

    def reset(self) -> None:
        "Forget every measurement."
        self._stats: dict[tuple[int, str], tuple[Any, list[list[int]]]] = {}  # (id(cb), event) -> (cb, [[n, ns]] * 3)
        self._wrappers: dict[tuple[int, str], tuple[Any, Any]] = {}  # (id(cb), event) -> (meth, wrapper)
        self._starts: list[int] = []
        self._phase = _OTHER
        self._batch_start = 0
        self.n_batches, self.batch_ns = 0, 0
        self._warned: set[int] = set()

    # -- the probe
    def probe_begin(self, event: str, state: Mapping[str, Any], extras: Mapping[str, Any]) -> None:
        if event == "train_begin":
            self.reset()
            learn = self._learn() if self._learn is not None else None
            if learn is not None:
                learn.callback_timer = self
        if event in _BATCH_EVENTS:
            self._phase = _TRAIN if state.get("train", True) else _VALID
        else:
            self._phase = _OTHER
        now = time.perf_counter_ns()
        if event == "batch_begin" and self._phase == _TRAIN:
            self._batch_start = now
        self._starts.append(now)

    def probe_wrap(self, cb: Any, event: str, meth: Any) -> Any:
        key = (id(cb), event)
        cached = self._wrappers.get(key)
        if cached is not None and cached[0] is meth:
            return cached[1]
        entry = self._stats.get(key)
        if entry is None or entry[0] is not cb:
            entry = self._stats[key] = (cb, [[0, 0], [0, 0], [0, 0]])
        per_phase = entry[1]
        clock = time.perf_counter_ns

        def timed(**kwargs: Any) -> Any:
            stat = per_phase[self._phase]
            t0 = clock()
            try:
                return meth(**kwargs)
            finally:
                stat[1] += clock() - t0
                stat[0] += 1

        self._wrappers[key] = (meth, timed)
        return timed

    def probe_end(self, event: str, state: Mapping[str, Any], error: BaseException | None) -> None:
        now = time.perf_counter_ns()
        if self._starts:
            self._starts.pop()
        if event == "batch_end" and self._phase == _TRAIN and self._batch_start:
            self.batch_ns += now - self._batch_start
            self.n_batches += 1
            self._batch_start = 0
        elif event in ("epoch_end", "train_end") and error is None:
            self._check_slow()

    # -- results
    def _check_slow(self) -> None:
        if self.warn_share is None or self.n_batches < self.min_batches or not self.batch_ns:
            return
        per_cb: dict[int, tuple[Any, int, list[str]]] = {}
        for (cb_id, event), (cb, phases) in self._stats.items():
            ns = phases[_TRAIN][1]
            if ns:
                _, total, events = per_cb.get(cb_id, (cb, 0, []))
                per_cb[cb_id] = (cb, total + ns, [*events, f"on_{event} {ns / self.batch_ns:.0%}"])
        for cb_id, (cb, total, events) in per_cb.items():
            share = total / self.batch_ns
            if share > self.warn_share and cb_id not in self._warned:
                self._warned.add(cb_id)
                warnings.warn(
                    f"fastloop: callback {_label(cb)} takes {share:.0%} of the training batch time "
                    f"({total / self.n_batches / 1e3:.1f} µs per batch; {', '.join(events)}), more than "
                    f"warn_share={self.warn_share:.0%}. See learn.callback_times().",
                    SlowCallbackWarning, stacklevel=2)

    def table(self) -> CallbackTimes:
        "The measurements as a `CallbackTimes` table, slowest first."
        rows = []
        for (_, event), (cb, phases) in self._stats.items():
            for phase, (n, ns) in enumerate(phases):
                if not n:
                    continue
                name = event + (" (valid)" if phase == _VALID else "")
                share = ns / self.batch_ns if self.batch_ns else None
                rows.append(TimingRow(_label(cb), name, n, ns / 1e9, ns / n / 1e3, share))
        rows.sort(key=lambda r: -r.total_s)
        return CallbackTimes(tuple(rows), self.n_batches, self.batch_ns / 1e9)


# ------------------------------------------------------------------------------------- Learner helpers
def time_callbacks(learn: Any, on: bool = True, warn_share: float | None = 0.25, min_batches: int = 10) -> Any:
    """Turn per-callback timing on (or off) for the learner's next fits: adds (removes) a `CallbackTimer` in
    ``learn.callback_fns``.  Returns the learner."""
    from functools import partial

    learn.callback_fns = [f for f in learn.callback_fns
                          if not (f is CallbackTimer or getattr(f, "func", None) is CallbackTimer)]
    if on:
        learn.callback_fns.append(partial(CallbackTimer, warn_share=warn_share, min_batches=min_batches))
    return learn


def callback_times(learn: Any) -> CallbackTimes:
    """The per-callback table of the learner's last timed fit (`CallbackTimer`); an empty table saying how to
    turn timing on if none ran."""
    timer = learn.__dict__.get("callback_timer") or next(
        (cb for cb in getattr(learn, "callbacks", []) if isinstance(cb, CallbackTimer)), None)
    if timer is None:
        return CallbackTimes((), 0, 0.0, note="No callback was timed: call learn.time_callbacks() (or add "
                                              "CallbackTimer to callback_fns) before fit.")
    return timer.table()
