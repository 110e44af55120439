"""`StateTracer`: watch the ``state_dict`` evolve, event by event, during a real fit.

    with learn.trace() as t:          # adds a StateTracer to learn.callbacks for the block
        learn.fit(1)
    t.timeline()                      # a compact table (HTML in a notebook, text in a console)
    t.to_records()                    # plain dicts, one per event, for tests and pandas

Per event the tracer records the state keys present, the counters (``epoch``, ``iteration``,
``num_batch``) and the flags as the first callback sees them, the keys the *handler* wrote since the
previous event (``on_batch_end`` gets ``last_input`` because ``on_batch_begin`` wrote it and nothing
removed it), which callbacks were called, what each one *returned*, and which keys the callbacks
changed.

How it works: `StateTracer` is a *probe* (``probe_begin`` / ``probe_wrap`` / ``probe_end``, see
`fastloop._dispatch.fire_probed`): the handler tells it where each event begins and ends and lets it
wrap each callback call to see the returned dict.  It implements no ``on_*`` hook itself, so it takes
no part in the training.  A handler with no probe dispatches with the plain loop: **tracing costs
nothing when it is off** (`learn.trace()` removes the tracer when its block ends).

Where it lives: here, next to the bundled callbacks, because it is one (add it by hand with
``learn.fit(1, callbacks=[StateTracer()])``); `fastloop.explain` re-exports it, and ``Learner.trace``
is the short way.

What "changed" means: a key is changed when its value is a different object (or, for plain numbers,
bools and strings, a different value).  In-place mutation of a tensor or list (``last_metrics +=
[...]``) is not seen.  Values are recorded as short strings (``tensor(0.6931)``, ``Tensor[16, 4]
float32``): the tracer keeps no tensors alive except the last event's state, which it needs to see the
next change.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs

from ..callback import AverageMetric, Callback

__all__ = ["StateTracer", "EventRecord", "Timeline", "trace", "callback_label", "short_repr", "FLAGS", "COUNTERS"]

#: The state's flags (callbacks set them; the loop reads them at fixed points) and counters (the handler moves them).
FLAGS: tuple[str, ...] = ("skip_validate", "stop_training", "stop_epoch", "skip_bwd", "skip_step", "skip_zero")
COUNTERS: tuple[str, ...] = ("epoch", "iteration", "num_batch")

_SCALARS = (bool, int, float, str, type(None))


def callback_label(cb: Any) -> str:
    "How the tracer and `show_training_loop` name a callback: a metric by its name, anything else by its class."
    if isinstance(cb, AverageMetric):
        return cb.name
    return type(cb).__name__


def short_repr(v: Any, depth: int = 0) -> str:
    "A short, readable string for a state value (tensors by value when 0-dim, else by shape and dtype)."
    if isinstance(v, bool) or v is None or isinstance(v, int):
        return repr(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    mod = type(v).__module__
    if mod.startswith("torch") and hasattr(v, "shape") and hasattr(v, "dtype"):  # a tensor, without importing torch
        if v.dim() == 0:
            try:
                return f"tensor({v.item():.4g})"
            except (TypeError, ValueError, RuntimeError):  # a complex or meta tensor
                return f"tensor({str(v.dtype).removeprefix('torch.')})"
        return f"Tensor{list(v.shape)} {str(v.dtype).removeprefix('torch.')}"
    if mod == "numpy" and hasattr(v, "dtype") and getattr(v, "shape", None) == ():
        return f"{float(v):.4g}"
    if isinstance(v, (list, tuple)) and depth < 2:
        items = [short_repr(x, depth + 1) for x in v[:4]] + (["..."] if len(v) > 4 else [])
        open_, close = ("[", "]") if isinstance(v, list) else ("(", ")")
        return open_ + ", ".join(items) + close
    if isinstance(v, str):
        return repr(v if len(v) <= 30 else v[:27] + "...")
    return f"<{type(v).__name__}>"


def _same(a: Any, b: Any) -> bool:
    "Whether a state value is unchanged: the same object, or an equal plain scalar."
    if a is b:
        return True
    if isinstance(a, _SCALARS) and isinstance(b, _SCALARS) and type(a) is type(b):
        return a == b
    return False


@attrs.define
class EventRecord:
    """What the tracer saw at one event of one handler.

    ``run`` counts the state dicts the tracer has seen (a fit, then a `Learner.validate`, are two runs);
    ``keys``, ``counters`` and ``flags`` are the state as the first callback of the event sees it;
    ``written`` are the keys the handler (or the loop) wrote since the previous event of the same run
    (every key at a run's first event); ``called`` the callbacks called, in order; ``updates`` what each
    returned (``(label, {key: value})``); ``changed`` the keys whose value differs after the last callback
    (with their new value); ``error`` the type of an exception raised during the event.
    """

    index: int
    run: int
    event: str
    train: bool | None
    counters: dict[str, int]
    flags: dict[str, bool]
    keys: tuple[str, ...]
    extras: tuple[str, ...]
    written: tuple[str, ...]
    called: list[str] = attrs.field(factory=list)
    updates: list[tuple[str, dict[str, str]]] = attrs.field(factory=list)
    changed: dict[str, str] = attrs.field(factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        "The record as plain Python data (lists, dicts, strings, numbers)."
        return {
            "index": self.index, "run": self.run, "event": self.event, "train": self.train,
            "epoch": self.counters.get("epoch"), "iteration": self.counters.get("iteration"),
            "num_batch": self.counters.get("num_batch"), "flags": dict(self.flags), "keys": list(self.keys),
            "extras": list(self.extras), "written": list(self.written), "called": list(self.called),
            "updates": [{"callback": name, "returned": dict(ret)} for name, ret in self.updates],
            "changed": dict(self.changed), "error": self.error,
        }


class StateTracer(Callback):
    """Records the handler's state at every event of every handler it is part of (a *probe*, no hooks).

    Args:
        events: record only these events (``"batch_end"`` or ``"on_batch_end"``); default all, user events
            included.
        max_records: stop recording after this many records (``dropped`` counts the rest), so a forgotten
            tracer cannot fill the memory on a long fit.

    Events: none of its own (it implements no ``on_*`` hook, so it changes nothing and no event calls it);
    it sees every event through the probe methods.  Reads: the whole state, read-only.  Returns: nothing.
    ``_order`` is irrelevant (a probe sees each event from before the first callback to after the last) and
    stays 0.
    """

    def __init__(self, events: Iterable[str] | None = None, max_records: int = 100_000):
        self.events = None if events is None else frozenset(e.removeprefix("on_") for e in events)
        self.max_records = max_records
        self.records: list[EventRecord] = []
        self.dropped = 0
        self._state: dict[str, Any] | None = None  # the state dict of the current run
        self._prev: dict[str, Any] = {}  # its values at the end of the previous event
        self._run = -1
        self._begin: dict[str, Any] = {}  # values when the current event began
        self._current: EventRecord | None = None

    # -- the probe protocol (see fastloop._dispatch.fire_probed)
    def probe_begin(self, event: str, state: dict[str, Any], extras: Mapping[str, Any]) -> None:
        "Before the event's first callback: note what the handler wrote and the counters and flags."
        if state is not self._state:  # a new handler, or on_train_begin replaced the state: a new run
            self._state, self._prev, self._run = state, {}, self._run + 1
        written = tuple(k for k, v in state.items() if k not in self._prev or not _same(self._prev[k], v))
        self._begin = dict(state)
        self._current = None
        if self.events is not None and event not in self.events:
            return
        if len(self.records) >= self.max_records:
            self.dropped += 1
            return
        self._current = EventRecord(
            index=len(self.records), run=self._run, event=event, train=state.get("train"),
            counters={k: state[k] for k in COUNTERS if k in state},
            flags={k: bool(state[k]) for k in FLAGS if k in state},
            keys=tuple(sorted(state)), extras=tuple(sorted(extras)), written=written,
        )
        self.records.append(self._current)

    def probe_wrap(self, cb: Any, event: str, meth: Any) -> Any:
        "Wrap one callback's call: note it was called and what it returned (returned unchanged)."
        rec = self._current
        if rec is None:
            return meth
        label = callback_label(cb)

        def traced(**kwargs: Any) -> Any:
            rec.called.append(label)
            ret = meth(**kwargs)
            if ret is not None:
                if isinstance(ret, Mapping):
                    rec.updates.append((label, {str(k): short_repr(v) for k, v in ret.items()}))
                else:  # the handler raises on it right after (v1's AttributeError); keep what it was
                    rec.updates.append((label, {"<not a dict>": short_repr(ret)}))
            return ret

        return traced

    def probe_end(self, event: str, state: dict[str, Any], error: BaseException | None) -> None:
        "After the event's last callback: note which keys the callbacks changed."
        rec, begin = self._current, self._begin
        if rec is not None:
            rec.changed = {k: short_repr(v) for k, v in state.items() if k not in begin or not _same(begin[k], v)}
            rec.error = type(error).__name__ if error is not None else None
        self._prev, self._begin, self._current = dict(state), {}, None

    # -- reading the trace
    def to_records(self) -> list[dict[str, Any]]:
        "One plain dict per recorded event (see `EventRecord`)."
        return [r.to_dict() for r in self.records]

    def events_seen(self) -> list[str]:
        "The recorded event names, in order."
        return [r.event for r in self.records]

    def returned_keys(self) -> dict[tuple[str, str, bool | None], set[str]]:
        """``{(callback label, event, train): keys it returned}`` over the whole trace.

        ``train`` is the state's flag for batch events (a training and a validation ``batch_begin`` are told
        apart) and None for the other events.
        """
        seen: dict[tuple[str, str, bool | None], set[str]] = {}
        for r in self.records:
            train = r.train if r.event in _BATCH_EVENTS else None
            for label, ret in r.updates:
                seen.setdefault((label, r.event, train), set()).update(ret)
        return seen

    def timeline(self, compact: bool = True, max_rows: int | None = 200) -> Timeline:
        """A table of the trace, one row per event: HTML in a notebook, text when printed.

        With `compact`, a batch whose events, callers, returns and changes repeat the previous batch's (same
        training/validation phase) is folded into one "... more batches like this" row.  `max_rows` caps the
        rows shown (None: all).
        """
        return Timeline(self.records, compact=compact, max_rows=max_rows, dropped=self.dropped)

    def clear(self) -> None:
        "Forget every record (and the state it was watching)."
        self.__init__(events=self.events, max_records=self.max_records)

    def __repr__(self) -> str:
        return f"StateTracer({len(self.records)} records" + (f", {self.dropped} dropped)" if self.dropped else ")")


_BATCH_EVENTS = frozenset({"batch_begin", "loss_begin", "backward_begin", "backward_end", "step_end", "batch_end"})


# ------------------------------------------------------------------------------------------------- timeline
_COLUMNS = ("#", "event", "train", "epoch", "iter", "n_batch", "handler wrote", "called", "returned",
            "changed by callbacks", "flags on")


def _batch_signature(rec: EventRecord) -> tuple:
    "What must repeat for a batch to be folded: events, callers, returned keys, written and changed keys."
    return (rec.event, rec.train, tuple(rec.called), tuple((n, tuple(r)) for n, r in rec.updates),
            rec.written, tuple(rec.changed), tuple(k for k, v in rec.flags.items() if v), rec.error)


def _row(rec: EventRecord) -> list[str]:
    flags_on = [k for k in FLAGS if rec.changed.get(k) == "True" or (rec.flags.get(k) and k not in rec.changed)]
    returned = "; ".join(f"{name}: {', '.join(ret)}" for name, ret in rec.updates)
    changed = ", ".join(f"{k}={v}" if k in FLAGS or k in COUNTERS else k for k, v in rec.changed.items())
    train = "" if rec.train is None or rec.event not in _BATCH_EVENTS else ("train" if rec.train else "valid")
    values = {**rec.counters, **rec.flags}  # counters and flags are shown with the value the handler wrote
    written = ", ".join(f"{k}={values[k]}" if k in values else k for k in rec.written)
    return [str(rec.index), rec.event + (f" !{rec.error}" if rec.error else ""), train,
            str(rec.counters.get("epoch", "")), str(rec.counters.get("iteration", "")),
            str(rec.counters.get("num_batch", "")), written or "-", ", ".join(rec.called) or "-",
            returned or "-", changed or "-", ", ".join(flags_on) or "-"]


class Timeline:
    """The rendered trace: ``str()`` / ``repr()`` give a text table, ``_repr_html_`` an HTML table."""

    def __init__(self, records: list[EventRecord], compact: bool = True, max_rows: int | None = 200,
                 dropped: int = 0):
        self.rows: list[list[str] | str] = []  # a row of cells, or a note spanning the table
        self._build(records, compact)
        if max_rows is not None and len(self.rows) > max_rows:
            hidden = len(self.rows) - max_rows
            self.rows = self.rows[:max_rows] + [f"... {hidden} more rows (timeline(max_rows=None) shows all)"]
        if dropped:
            self.rows.append(f"... {dropped} events not recorded (max_records reached)")

    def _build(self, records: list[EventRecord], compact: bool) -> None:
        # batches: from a batch_begin up to its batch_end (training or validation)
        i, n = 0, len(records)
        last_sig: dict[tuple[int, bool | None], tuple] = {}
        while i < n:
            rec = records[i]
            if rec.event != "batch_begin":
                self.rows.append(_row(rec))
                if rec.event in ("epoch_begin", "epoch_end", "train_begin"):
                    last_sig = {}
                i += 1
                continue
            j = i + 1
            while j < n and records[j].event in _BATCH_EVENTS and records[j].event != "batch_begin":
                j += 1
                if records[j - 1].event == "batch_end":
                    break
            batch = records[i:j]
            key = (rec.run, rec.train)
            sig = tuple(_batch_signature(r) for r in batch)
            if compact and last_sig.get(key) == sig:
                # fold this and the following identical batches into one note
                k, folded, first_iter = j, 1, rec.counters.get("iteration")
                while k < n and records[k].event == "batch_begin":
                    m = k + len(batch)
                    if tuple(_batch_signature(r) for r in records[k:m]) != sig:
                        break
                    folded, k = folded + 1, m
                phase = "training" if rec.train else "validation"
                what = f"{folded} more {phase} batch{'es' if folded > 1 else ''} like the one above"
                if rec.train:
                    what += f" (iterations {first_iter}-{first_iter + folded - 1})"
                self.rows.append(f"... {what}")
                i = k
                continue
            self.rows.extend(_row(r) for r in batch)
            last_sig[key] = sig
            i = j

    def __str__(self) -> str:
        cells = [r for r in self.rows if not isinstance(r, str)]
        widths = [max([len(c)] + [len(_clip(r[i])) for r in cells]) for i, c in enumerate(_COLUMNS)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(_COLUMNS, widths)).rstrip()]
        for r in self.rows:
            if isinstance(r, str):
                lines.append(r)
            else:
                lines.append("  ".join(_clip(c).ljust(w) for c, w in zip(r, widths)).rstrip())
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in _COLUMNS)
        body = []
        for r in self.rows:
            if isinstance(r, str):
                body.append(f'<tr><td colspan="{len(_COLUMNS)}"><i>{html.escape(r)}</i></td></tr>')
            else:
                body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>")
        return (f'<table class="fastloop-timeline" style="font-size:85%; text-align:left"><thead><tr>{head}</tr>'
                f"</thead><tbody>{''.join(body)}</tbody></table>")


def _clip(text: str, width: int = 48) -> str:
    "Text cells are clipped for the console (the HTML table shows them whole)."
    return text if len(text) <= width else text[: width - 3] + "..."


# ------------------------------------------------------------------------------------------------ learn.trace
@contextlib.contextmanager
def trace(learn: Any, events: Iterable[str] | None = None, max_records: int = 100_000) -> Iterator[StateTracer]:
    """``with trace(learn) as t: learn.fit(1)``: a `StateTracer` in ``learn.callbacks`` for the block only.

    Every handler built inside the block (``fit``, ``validate``, ``get_preds``...) includes it.  When the block
    ends -- normally or by an exception -- the tracer is removed, so later fits run without probes.
    """
    tracer = StateTracer(events=events, max_records=max_records)
    learn.callbacks.append(tracer)
    try:
        yield tracer
    finally:
        learn.callbacks[:] = [cb for cb in learn.callbacks if cb is not tracer]
