"""`StateTracer` and `learn.trace()` (fastloop/callbacks/tracer.py): what it records, and that it costs nothing off."""

from __future__ import annotations

import pytest
import torch

from fastloop.callback import Callback, CallbackHandler
from fastloop.callbacks.tracer import StateTracer, short_repr
from fastloop.metrics import accuracy

from .conftest import make_learner
from .tracing import canonical_fit

T, V = 4, 2  # the `learn` fixture: 4 training batches, 2 validation batches per epoch


class Double(Callback):
    "Returns a new last_input at every batch_begin (training and validation)."

    def on_batch_begin(self, last_input, **kwargs):
        return {"last_input": last_input * 2}


class StopAfterTwo(Callback):
    "Asks the loop to leave the training loop after its second training batch."

    def on_batch_end(self, num_batch, train, **kwargs):
        if train and num_batch == 1:
            return {"stop_epoch": True}


def traced_fit(learn, epochs: int = 1, **kw) -> StateTracer:
    with learn.trace(**kw) as t:
        learn.fit(epochs, 1e-2)
    return t


def test_records_of_a_one_epoch_fit_with_validation_follow_the_spec_canonical_sequence(learn):
    learn.metrics = [accuracy]
    t = traced_fit(learn)
    assert t.events_seen() == canonical_fit(1, T, V)
    recs = t.to_records()
    assert {r["run"] for r in recs} == {0}
    # the metric is called where spec §3.3 says: epoch_begin, validation batch_begin/batch_end, epoch_end, ...
    called_accuracy = [(r["event"], r["train"]) for r in recs if "accuracy" in r["called"]]
    assert called_accuracy == [("epoch_begin", None), ("batch_end", False), ("batch_end", False),
                               ("epoch_end", False)]  # AverageMetric implements only these three events
    # training batches: the counters are those of the running batch, moved after batch_end
    train_begins = [r for r in recs if r["event"] == "batch_begin" and r["train"]]
    assert [(r["iteration"], r["num_batch"]) for r in train_begins] == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert recs[-1]["event"] == "train_end" and recs[-1]["epoch"] == 1 and recs[-1]["extras"] == ["exception"]


def test_returned_updates_are_recorded_by_callback_name_and_metric_name(learn):
    learn.metrics = [accuracy]
    learn.callbacks.append(Double())
    t = traced_fit(learn)
    recs = t.to_records()
    epoch_end = next(r for r in recs if r["event"] == "epoch_end")
    assert [u["callback"] for u in epoch_end["updates"]] == ["accuracy"]
    assert list(epoch_end["updates"][0]["returned"]) == ["last_metrics"]
    assert epoch_end["changed"] == {"last_metrics": epoch_end["updates"][0]["returned"]["last_metrics"]}
    begins = [r for r in recs if r["event"] == "batch_begin"]
    assert len(begins) == T + V
    for r in begins:
        assert r["updates"] == [{"callback": "Double", "returned": {"last_input": "Tensor[16, 4] float32"}}]
        assert "last_input" in r["changed"]
    assert t.returned_keys() == {("Double", "batch_begin", True): {"last_input"},
                                 ("Double", "batch_begin", False): {"last_input"},
                                 ("accuracy", "epoch_end", None): {"last_metrics"}}


def test_batch_end_has_last_input_because_batch_begin_wrote_it_and_fit_passes_only_the_loss(learn):
    """The forum question: the handler writes last_input at batch_begin; at batch_end it writes only last_loss."""
    t = traced_fit(learn)
    recs = [r for r in t.to_records() if r["train"] and r["event"] in ("batch_begin", "batch_end")]
    first_begin, first_end = recs[0], recs[1]
    assert {"last_input", "last_target", "train"} <= set(first_begin["written"])
    assert first_end["written"] == ["last_loss"]
    assert "last_input" in first_end["keys"] and "last_output" in first_end["keys"]
    second_begin = recs[2]
    assert set(second_begin["written"]) == {"iteration", "num_batch", "last_input", "last_target"}


def test_flags_set_by_a_callback_show_as_changed_and_are_reset_by_the_handler(learn):
    learn.callbacks.append(StopAfterTwo())
    t = traced_fit(learn)
    recs = t.to_records()
    train_ends = [r for r in recs if r["event"] == "batch_end" and r["train"]]
    assert len(train_ends) == 2  # the loop left the training loop after the second batch
    assert train_ends[1]["updates"] == [{"callback": "StopAfterTwo", "returned": {"stop_epoch": "True"}}]
    assert train_ends[1]["changed"] == {"stop_epoch": "True"}
    first_valid = next(r for r in recs if r["event"] == "batch_begin" and r["train"] is False)
    assert first_valid["flags"]["stop_epoch"] is False  # on_batch_begin reset it before the callbacks ran
    assert "stop_epoch" in first_valid["written"] and "train" in first_valid["written"]


def test_the_tracer_is_removed_when_the_block_ends_even_on_error_and_later_handlers_have_no_probes(learn):
    class Boom(Callback):
        def on_epoch_begin(self, **kwargs):
            raise RuntimeError("boom")

    learn.callbacks.append(Boom())
    with pytest.raises(RuntimeError, match="boom"):
        with learn.trace() as t:
            learn.fit(1)
    assert not any(isinstance(cb, StateTracer) for cb in learn.callbacks)
    assert [(r["event"], r["error"]) for r in t.to_records()][-2:] == [("epoch_begin", "RuntimeError"),
                                                                       ("train_end", None)]
    assert CallbackHandler(learn.callbacks)._probes == []


def test_tracing_changes_no_number_of_the_fit():
    plain, traced = make_learner(), make_learner()
    torch.manual_seed(1)
    plain.fit(2, 1e-2)
    torch.manual_seed(1)
    with traced.trace():
        traced.fit(2, 1e-2)
    assert [float(x) for x in plain.recorder.losses] == [float(x) for x in traced.recorder.losses]
    for p, q in zip(plain.model.parameters(), traced.model.parameters()):
        assert torch.equal(p, q)


def test_each_handler_is_a_new_run_and_validate_is_traced_too(learn):
    with learn.trace() as t:
        learn.fit(1)
        learn.validate()
    runs = {}
    for r in t.to_records():
        runs.setdefault(r["run"], []).append(r["event"])
    assert runs[0] == canonical_fit(1, T, V)
    assert runs[1] == ["train_begin", "epoch_begin"] + ["batch_begin", "loss_begin", "batch_end"] * V + ["epoch_end"]


def test_events_filter_and_max_records_limit_what_is_kept(learn):
    t = traced_fit(learn, events=["on_epoch_end", "train_end"])
    assert t.events_seen() == ["epoch_end", "train_end"]
    t = traced_fit(learn, max_records=5)
    assert len(t.records) == 5 and t.dropped == len(canonical_fit(1, T, V)) - 5
    assert "events not recorded" in str(t.timeline())


def test_a_tracer_added_by_hand_sees_user_events_and_a_non_dict_return():
    class Bad(Callback):
        def on_my_event(self, **kwargs):
            return True

    t = StateTracer()
    h = CallbackHandler([Bad(), t])
    with pytest.raises(AttributeError):
        h("my_event", foo=1)
    (rec,) = t.to_records()
    assert rec["event"] == "my_event" and rec["extras"] == ["foo"] and rec["error"] == "AttributeError"
    assert rec["updates"] == [{"callback": "Bad", "returned": {"<not a dict>": "True"}}]


def test_timeline_folds_repeated_batches_and_renders_text_and_html(learn):
    learn.callbacks.append(Double())
    t = traced_fit(learn)
    text = str(t.timeline())
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["#", "event", "train"]
    # batch 0 (new keys appear) and batch 1 are shown; batches 2 and 3 repeat batch 1 and are folded
    assert "... 2 more training batches like the one above (iterations 2-3)" in lines
    assert sum(1 for line in lines if line.split()[1:3] == ["batch_begin", "train"]) == 2
    full = str(t.timeline(compact=False))
    assert sum(1 for line in full.splitlines() if line.split()[1:3] == ["batch_begin", "train"]) == T
    html = t.timeline()._repr_html_()
    assert html.count("<tr>") == len(lines)  # header + one row per line
    assert "Double: last_input" in html and "2 more training batches" in html


def test_short_repr_of_state_values():
    assert short_repr(torch.tensor(0.5)) == "tensor(0.5)"
    assert short_repr(torch.zeros(2, 3, dtype=torch.long)) == "Tensor[2, 3] int64"
    assert short_repr([1.0, torch.tensor(2.0)]) == "[1, tensor(2)]"
    assert short_repr(None) == "None" and short_repr(True) == "True"
    assert short_repr(object()) == "<object>"
