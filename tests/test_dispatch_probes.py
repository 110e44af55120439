"""Probes: objects among the callbacks that watch dispatch (the tracer and the timer are built on them)."""

from __future__ import annotations

from typing import Any

import pytest

from fastloop import _dispatch
from fastloop.callback import Callback, CallbackHandler


class RecordingProbe(Callback):
    "A probe that logs begin/call/end and the value each wrapped call returned."

    def __init__(self) -> None:
        self.log: list[tuple] = []

    def probe_begin(self, event: str, state: dict, extras: dict) -> None:
        self.log.append(("begin", event, sorted(extras)))

    def probe_wrap(self, cb: Any, event: str, meth: Any) -> Any:
        def wrapped(**kwargs: Any) -> Any:
            ret = meth(**kwargs)
            self.log.append(("call", event, type(cb).__name__, ret))
            return ret
        return wrapped

    def probe_end(self, event: str, state: dict, error: BaseException | None) -> None:
        self.log.append(("end", event, type(error).__name__ if error else None))


class Returner(Callback):
    def on_batch_begin(self, last_input: Any, **kwargs: Any) -> dict:
        return {"last_input": last_input * 2}


class Raiser(Callback):
    def on_epoch_begin(self, **kwargs: Any) -> None:
        raise RuntimeError("boom")


def test_is_probe_needs_all_three_methods() -> None:
    assert _dispatch.is_probe(RecordingProbe())
    assert not _dispatch.is_probe(Returner())


def test_a_probe_sees_every_event_and_the_value_each_call_returned() -> None:
    probe = RecordingProbe()
    h = CallbackHandler([Returner(), probe])
    h.on_train_begin(1, None, None)
    xb, _ = h.on_batch_begin(3, 0)
    assert xb == 6  # the wrapped call's return was still applied
    h.on_train_end(False)
    assert probe.log[0] == ("begin", "train_begin", ["metrics_names"])
    assert ("call", "batch_begin", "Returner", {"last_input": 6}) in probe.log
    # the event nobody implements is still seen by the probe, and train_end gets its extra
    assert ("begin", "train_end", ["exception"]) in probe.log
    assert probe.log[-1] == ("end", "train_end", None)


def test_a_probe_does_not_wrap_its_own_hooks() -> None:
    class SelfProbe(RecordingProbe):
        def on_epoch_begin(self, **kwargs: Any) -> None:
            self.log.append(("own hook",))

    probe = SelfProbe()
    h = CallbackHandler([probe])
    h.on_train_begin(1, None, None)
    h.on_epoch_begin()
    calls = [e for e in probe.log if e[0] == "call"]
    assert calls == [] and ("own hook",) in probe.log


def test_probe_end_receives_the_error_and_the_error_still_propagates_with_its_note() -> None:
    probe = RecordingProbe()
    h = CallbackHandler([Raiser(), probe])
    h.on_train_begin(1, None, None)
    with pytest.raises(RuntimeError, match="boom") as info:
        h.on_epoch_begin()
    assert probe.log[-1] == ("end", "epoch_begin", "RuntimeError")
    assert any("Raiser.on_epoch_begin" in n for n in getattr(info.value, "__notes__", []))


def test_without_probes_the_handler_uses_the_plain_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("fire_probed called without probes")

    monkeypatch.setattr(_dispatch, "fire_probed", fail)
    h = CallbackHandler([Returner()])
    h.on_train_begin(1, None, None)
    assert h.on_batch_begin(2, 0)[0] == 4


def test_adding_a_probe_to_the_callback_list_switches_probing_on() -> None:
    h = CallbackHandler([Returner()])
    probe = RecordingProbe()
    h.callbacks.append(probe)
    h.on_train_begin(1, None, None)
    assert probe.log and probe.log[0][1] == "train_begin"
