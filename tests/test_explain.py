"""`show_training_loop` (fastloop/explain.py), its HTML, and the tables docs/engine.md is generated from."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fastloop.callback import Callback, CallbackHandler
from fastloop.explain import FLAG_TABLE, LOOP_STEPS, engine_markdown, hook_reads, show_training_loop
from fastloop.metrics import accuracy

from .conftest import make_learner
from .tracing import canonical_fit

ROOT = Path(__file__).resolve().parents[1]


class ScaleInput(Callback):
    "Halves the training inputs (returns last_input at training batch_begin only)."

    _order = -20

    def on_batch_begin(self, last_input, train, **kwargs):
        return {"last_input": last_input * 0.5} if train else None


class StopWhenGood(Callback):
    "Stops the fit once accuracy passes 0.99 (returns stop_training at every epoch_end)."

    def on_epoch_end(self, last_metrics, **kwargs):
        return {"stop_training": last_metrics[-1] > 0.99}


def known_learner():
    "Recorder + a metric + two user callbacks, given out of `_order` order."
    return make_learner(metrics=[accuracy], callbacks=[StopWhenGood(), ScaleInput()], silent=True)


# Written from spec §3.3-§4.2 and the callbacks above: metrics first and only at their events, callbacks
# sorted by _order (ScaleInput -20, Recorder -10, StopWhenGood 0), each hook's named parameters, and the
# keys the traced fit saw returned.
EXPECTED = """\
fastloop training loop (learn.fit): 1 metric, 3 callbacks; at each event, in call order
    order    who                                           reads                                        returned
once per fit
  on_train_begin
    handler  the state is replaced: epoch = iteration = num_batch = 0, skip_validate = False;
             n_epochs, pbar, metrics; extra argument: metrics_names
    -10      Recorder                                      pbar, metrics_names                          -
    handler  if a callback returned epoch = k (resume): the bar skips k epochs and every callback's
             jump_to_epoch(k) is called
each epoch
  on_epoch_begin
    handler  num_batch = 0, stop_training = False
    metric   accuracy (AverageMetric)                      **kwargs                                     -
    -10      Recorder                                      **kwargs                                     -
    handler  model.train(); the training batches start
each training batch
  on_batch_begin
    handler  last_input, last_target = the batch (on the device); train = True; stop_epoch =
             skip_step = skip_zero = skip_bwd = False
    -20      ScaleInput                                    last_input, train                            last_input
    -10      Recorder                                      train                                        -
    handler  the loop takes last_input and last_target back; out = model(*last_input)
  on_loss_begin
    handler  last_output = out
             (no callback implements it)
    handler  the loop takes last_output back; loss = loss_func(last_output, *last_target)
  on_backward_begin
    handler  smooth_loss = debiased moving average of this raw loss; last_loss = loss (with its
             graph)
    -10      Recorder                                      smooth_loss                                  -
    handler  reads last_loss (the loss to backprop) and skip_bwd: last_loss.backward() unless
             skip_bwd
  on_backward_end
             (no callback implements it)
    handler  reads skip_step: opt.step() unless skip_step
  on_step_end
             (no callback implements it)
    handler  reads skip_zero: opt.zero_grad() unless skip_zero
  on_batch_end
    handler  last_loss = the batch's loss, detached, on the CPU
             (no callback implements it)
    handler  iteration += 1, num_batch += 1; reads stop_epoch: leave the training loop if set
after the training loop
    handler  reads skip_validate: validate unless skip_validate is set or there is no validation set
             (then val_loss = None)
each validation batch
  on_batch_begin
    handler  last_input, last_target = the batch; train = False; stop_epoch = skip_step = skip_zero
             = skip_bwd = False
    -20      ScaleInput                                    last_input, train                            -
    -10      Recorder                                      train                                        -
    handler  the loop takes last_input and last_target back; out = model(*last_input), without grad
  on_loss_begin
    handler  last_output = out
             (no callback implements it)
    handler  the loop takes last_output back; loss = loss_func(last_output, *last_target)
  on_batch_end
    handler  last_loss = the batch's validation loss
    metric   accuracy (AverageMetric)                      last_output, last_target                     -
    handler  reads stop_epoch: end the validation early if set
end of each epoch
  on_epoch_end
    handler  last_metrics = [val_loss] ([None] without validation)
    metric   accuracy (AverageMetric) [if validation ran]  last_metrics                                 last_metrics
    -10      Recorder                                      epoch, num_batch, smooth_loss, last_metrics  -
    0        StopWhenGood                                  last_metrics                                 stop_training
    handler  epoch += 1; reads stop_training: end the fit if set
once per fit
  on_train_end
    handler  extra argument: exception
    -10      Recorder                                      **kwargs                                     -
    handler  fit returns (or re-raises the exception)"""


def test_show_training_loop_of_a_known_learner_after_a_trace_is_the_expected_text():
    learn = known_learner()
    with learn.trace() as t:
        learn.fit(1)
    assert str(learn.show_training_loop(trace=t)) == EXPECTED


def _call_rows_of_text(text: str) -> list[list[str]]:
    "(order, who, reads, returned) of each call line of the text report."
    rows = []
    for line in text.splitlines()[2:]:
        cells = re.split(r"\s{2,}", line.strip())
        if line.startswith("    ") and cells[0] != "handler" and not line.strip().startswith("(") and len(cells) == 4:
            rows.append(cells)
    return rows


def test_html_rendering_holds_the_same_call_rows_and_handler_notes_in_the_same_order():
    learn = known_learner()
    with learn.trace() as t:
        learn.fit(1)
    report = learn.show_training_loop(trace=t)
    html = report._repr_html_()
    html_rows = [[re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td>(.*?)</td>", tr)]
                 for tr in re.findall(r"<tr>(.*?)</tr>", html)]
    html_calls = [r[1:] for r in html_rows if len(r) == 5]
    assert html_calls == _call_rows_of_text(EXPECTED)
    assert len(html_calls) == 13
    for step in LOOP_STEPS:
        if step.after != "-":
            assert step.after.replace("'", "&#x27;") in html
    # the handler's before and after notes, for the training and the validation batch_begin
    assert html.count("<tr><td><code>on_batch_begin</code></td><td>handler</td>") == 4


def test_without_a_trace_the_returned_column_says_unknown_and_a_handlers_own_tracer_is_used():
    learn = known_learner()
    text = str(learn.show_training_loop())
    assert "(returns: run a learn.trace())" in text.splitlines()[0]
    assert all(row[3] == "?" for row in _call_rows_of_text(text))
    from fastloop.explain import StateTracer

    tracer = StateTracer()
    h = CallbackHandler([ScaleInput(), tracer])
    h.on_train_begin(1, None, [])
    h.on_batch_begin(1.0, 0)
    rows = _call_rows_of_text(str(show_training_loop(h)))
    assert rows[0] == ["-20", "ScaleInput", "last_input, train", "last_input"]  # training batch_begin
    assert rows[1] == ["-20", "ScaleInput", "last_input, train", "-"]  # validation batch_begin: not seen


def test_showing_the_loop_of_a_learner_changes_nothing_on_it():
    """Making the callback_fns instances (the Recorder creates the optimizer, registers itself) is undone."""
    from fastloop.basic_train import LearnerCallback

    class AppendsACallback(LearnerCallback):
        def __init__(self, learn):
            super().__init__(learn)
            learn.callbacks.append(Callback())

    learn = known_learner()
    learn.callback_fns.append(AppendsACallback)
    before, callbacks = dict(learn.__dict__), list(learn.callbacks)
    text = str(learn.show_training_loop(callbacks=[ScaleInput()]))
    assert learn.__dict__ == before and learn.callbacks == callbacks
    assert learn.opt is None and not hasattr(learn, "recorder") and not hasattr(learn, "appends_a_callback")
    assert "Recorder" in text


def test_per_fit_callbacks_are_sorted_in_and_a_hook_without_kwargs_is_flagged():
    class NoKwargs(Callback):
        _order = -15

        def on_batch_end(self, last_loss):
            pass

    learn = known_learner()
    rows = _call_rows_of_text(str(learn.show_training_loop(callbacks=[NoKwargs()])))
    assert ["-15", "NoKwargs", "last_loss (no **kwargs!)", "?"] in rows
    assert hook_reads(NoKwargs().on_batch_end) == (("last_loss",), False)
    assert hook_reads(ScaleInput().on_batch_begin) == (("last_input", "train"), True)


def test_show_training_loop_refuses_other_objects():
    with pytest.raises(TypeError, match="Learner or a CallbackHandler"):
        show_training_loop(object())


def test_loop_steps_follow_the_canonical_sequence_and_call_metrics_where_the_handler_does():
    """The table's event order is spec §5.4's, and its `metrics` column is what a traced fit shows."""
    assert [s.event for s in LOOP_STEPS if s.event] == canonical_fit(1, 1, 1)

    class AllEvents(Callback):
        "A metric callback implementing every event, to see where metrics are called."

    for e in ("train_begin", "epoch_begin", "batch_begin", "loss_begin", "backward_begin", "backward_end",
              "step_end", "batch_end", "epoch_end", "train_end"):
        setattr(AllEvents, f"on_{e}", lambda self, **kwargs: None)
    learn = make_learner(metrics=[AllEvents()], silent=True)
    with learn.trace() as t:
        learn.fit(1)
    for step in (s for s in LOOP_STEPS if s.event):
        recs = [r for r in t.to_records() if r["event"] == step.event
                and (step.event not in ("batch_begin", "loss_begin", "batch_end") or r["train"] == step.train)]
        called = {"AllEvents" in r["called"] for r in recs}
        assert called == ({False} if step.metrics == "no" else {True}), step


def test_each_flag_is_reset_where_the_flag_table_says_and_nowhere_else():
    """Drive a handler through two epochs and a second fit: a flag set once stays set until its reset event."""
    from fastloop._dispatch import STATE_KEYS
    from fastloop.explain import StateTracer

    for flag in FLAG_TABLE:
        class SetOnce(Callback):
            done = False

        def setter(self, _flag=flag.name, **kwargs):
            if not self.done:
                self.done = True
                return {_flag: True}

        setattr(SetOnce, f"on_{STATE_KEYS[flag.name]}", setter)
        tracer = StateTracer()
        h = CallbackHandler([SetOnce(), tracer])
        x = y = loss = __import__("torch").tensor(1.0)
        for _ in range(2):  # two fits on one handler: the second on_train_begin replaces the state
            h.on_train_begin(2, None, [])
            for _ in range(2):
                h.on_epoch_begin()
                for _ in range(2):
                    h.on_batch_begin(x, y)
                    h.on_loss_begin(x)
                    h.on_backward_begin(loss)
                    h.on_backward_end()
                    h.on_step_end()
                    h.on_batch_end(loss)
                h.on_epoch_end(loss)
            h.on_train_end(False)
        recs = tracer.to_records()
        set_at = next(i for i, r in enumerate(recs) if r["changed"].get(flag.name) == "True")
        reset = next(i for i, r in enumerate(recs) if i > set_at and r["event"] == flag.reset_at)
        assert all(r["flags"][flag.name] for r in recs[set_at + 1:reset]), flag.name
        assert recs[reset]["flags"][flag.name] is False, flag.name
        assert f"on_{flag.reset_at}" in flag.reset and (flag.read_after is None or f"on_{flag.read_after}"
                                                        in flag.read_where)


def test_docs_engine_page_holds_the_generated_tables():
    """docs/engine.md's tables are `engine_markdown()` (regenerate with ``python -m fastloop.explain``)."""
    page = (ROOT / "docs" / "engine.md").read_text()
    assert engine_markdown() in page
