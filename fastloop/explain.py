"""The engine explains itself: `show_training_loop`, the loop and flag tables, and the `StateTracer`.

    learn.show_training_loop()        # who runs at each event, what each reads and returns (HTML in Jupyter)
    with learn.trace() as t:          # the state, event by event, during a real fit
        learn.fit(1)
    t.timeline()

`show_training_loop` answers, for a `Learner` (the handler its next ``fit`` would build) or for a
`CallbackHandler`: for every event in the order a fit meets it, which metrics and callbacks are called
(in their resolved order, with their ``_order``), which state keys each one's signature names, which keys
each has been seen returning (from a `StateTracer` trace), what the handler writes into the state before
the callbacks run, and what the loop does with the state after them (where each flag is read, when the
counters move).  Nothing is run and nothing is changed.

The tables here (`LOOP_STEPS`, `FLAG_TABLE`, with `fastloop._dispatch.STATE_KEY_TABLE`) are the ones
``docs/engine.md`` shows: ``python -m fastloop.explain`` prints them as markdown.
"""

from __future__ import annotations

import html
import inspect
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from ._dispatch import EVENT_EXTRAS, STATE_KEY_TABLE
from .callback import CallbackHandler
from .callbacks.tracer import FLAGS, StateTracer, callback_label, trace
from .core import listify

__all__ = ["show_training_loop", "TrainingLoop", "LoopStep", "LOOP_STEPS", "FlagInfo", "FLAG_TABLE", "hook_reads",
           "StateTracer", "trace", "engine_markdown"]


# ------------------------------------------------------------------------------------------- the loop's steps
@attrs.frozen
class LoopStep:
    """One point of `fit` where the handler fires an event (or, with ``event=None``, where the loop reads state).

    ``train`` tells the training (True) and validation (False) batch events apart (None elsewhere);
    ``metrics`` says whether metrics are called ("yes", "no", "if validation ran"); ``before`` is what the
    handler writes into the state before the callbacks run, ``after`` what the handler and the loop do with
    the state after the last one.
    """

    phase: str
    event: str | None
    train: bool | None
    metrics: str
    before: str
    after: str

    @property
    def extras(self) -> tuple[str, ...]:
        "Keyword arguments this event passes besides the state (not state keys: they cannot be returned)."
        return tuple(sorted(EVENT_EXTRAS.get(self.event or "", ())))


_RESET = "stop_epoch = skip_step = skip_zero = skip_bwd = False"

#: fastai v1's `fit`, step by step (spec §3.5, §4.2, §5): what `show_training_loop` and docs/engine.md show.
LOOP_STEPS: tuple[LoopStep, ...] = (
    LoopStep("once per fit", "train_begin", None, "yes",
             "the state is replaced: epoch = iteration = num_batch = 0, skip_validate = False; n_epochs, pbar, "
             "metrics",
             "if a callback returned epoch = k (resume): the bar skips k epochs and every callback's "
             "jump_to_epoch(k) is called"),
    LoopStep("each epoch", "epoch_begin", None, "yes",
             "num_batch = 0, stop_training = False",
             "model.train(); the training batches start"),
    LoopStep("each training batch", "batch_begin", True, "no",
             f"last_input, last_target = the batch (on the device); train = True; {_RESET}",
             "the loop takes last_input and last_target back; out = model(*last_input)"),
    LoopStep("each training batch", "loss_begin", True, "no",
             "last_output = out",
             "the loop takes last_output back; loss = loss_func(last_output, *last_target)"),
    LoopStep("each training batch", "backward_begin", True, "no",
             "smooth_loss = debiased moving average of this raw loss; last_loss = loss (with its graph)",
             "reads last_loss (the loss to backprop) and skip_bwd: last_loss.backward() unless skip_bwd"),
    LoopStep("each training batch", "backward_end", True, "no",
             "-",
             "reads skip_step: opt.step() unless skip_step"),
    LoopStep("each training batch", "step_end", True, "no",
             "-",
             "reads skip_zero: opt.zero_grad() unless skip_zero"),
    LoopStep("each training batch", "batch_end", True, "no",
             "last_loss = the batch's loss, detached, on the CPU",
             "iteration += 1, num_batch += 1; reads stop_epoch: leave the training loop if set"),
    LoopStep("after the training loop", None, None, "no",
             "-",
             "reads skip_validate: validate unless skip_validate is set or there is no validation set "
             "(then val_loss = None)"),
    LoopStep("each validation batch", "batch_begin", False, "yes",
             f"last_input, last_target = the batch; train = False; {_RESET}",
             "the loop takes last_input and last_target back; out = model(*last_input), without grad"),
    LoopStep("each validation batch", "loss_begin", False, "no",
             "last_output = out",
             "the loop takes last_output back; loss = loss_func(last_output, *last_target)"),
    LoopStep("each validation batch", "batch_end", False, "yes",
             "last_loss = the batch's validation loss",
             "reads stop_epoch: end the validation early if set"),
    LoopStep("end of each epoch", "epoch_end", None, "if validation ran",
             "last_metrics = [val_loss] ([None] without validation)",
             "epoch += 1; reads stop_training: end the fit if set"),
    LoopStep("once per fit", "train_end", None, "yes",
             "-",
             "fit returns (or re-raises the exception)"),
)


# ------------------------------------------------------------------------------------------------ the flags
@attrs.frozen
class FlagInfo:
    """A state flag: who may set it, where the loop reads it, what it does, and when the handler resets it.

    ``read_after`` / ``reset_at`` are event names (``read_after`` None: read after the training loop).
    """

    name: str
    read_after: str | None
    read_where: str
    effect: str
    reset_at: str
    reset: str

    @property
    def set_by(self) -> str:
        "Who may set the flag: callbacks, by returning it, from the first event where it exists."
        first = {k.name: k.first_event for k in STATE_KEY_TABLE}[self.name]
        return f"callbacks, returning {{'{self.name}': True}} at any event from on_{first} on"


FLAG_TABLE: tuple[FlagInfo, ...] = (
    FlagInfo("skip_bwd", "backward_begin", "loss_batch, right after on_backward_begin",
             "loss.backward() is not called (on_backward_end and on_step_end still fire; the step and zero_grad "
             "still run unless their own flags are set)", "batch_begin", "to False at every on_batch_begin"),
    FlagInfo("skip_step", "backward_end", "loss_batch, right after on_backward_end",
             "opt.step() is not called", "batch_begin", "to False at every on_batch_begin"),
    FlagInfo("skip_zero", "step_end", "loss_batch, right after on_step_end",
             "opt.zero_grad() is not called (gradients accumulate)", "batch_begin", "to False at every on_batch_begin"),
    FlagInfo("stop_epoch", "batch_end", "fit and validate, right after every on_batch_end",
             "leave the current loader loop: training goes on to validation (unless skip_validate), "
             "validation ends early (the loss is averaged over the batches seen)",
             "batch_begin", "to False at every on_batch_begin (training and validation)"),
    FlagInfo("skip_validate", None, "fit, after each epoch's training loop",
             "no validation: val_loss = None, last_metrics = [None], metrics skip on_epoch_end",
             "train_begin", "only at on_train_begin: once set it holds for the rest of the fit"),
    FlagInfo("stop_training", "epoch_end", "fit, right after every on_epoch_end",
             "no more epochs (on_train_end still fires)", "epoch_begin", "to False at every on_epoch_begin"),
)
assert tuple(sorted(f.name for f in FLAG_TABLE)) == tuple(sorted(FLAGS))


# ------------------------------------------------------------------------------------------- hook signatures
def hook_reads(meth: Callable[..., Any] | None) -> tuple[tuple[str, ...], bool]:
    """``(names, takes_kwargs)``: the keyword names a hook's signature asks for, and whether it has ``**kwargs``.

    The names are the state keys (or event extras) the handler will pass it by name; a hook without
    ``**kwargs`` fails with a TypeError as soon as the state holds a key it does not name (as in v1).
    """
    if meth is None:
        return (), True
    try:
        sig = inspect.signature(meth)
    except (TypeError, ValueError):
        return (), True
    names, var_kw = [], False
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            names.append(p.name)
    return tuple(names), var_kw


# ------------------------------------------------------------------------------------ show_training_loop
@attrs.frozen
class LoopRow:
    """One line of the report: a phase title, an event title, a handler note, or a call of one metric/callback."""

    kind: str  # "phase" | "event" | "before" | "after" | "call" | "nobody"
    text: str = ""
    order: str = ""
    who: str = ""
    reads: str = ""
    returned: str = ""
    event: str = ""


class TrainingLoop:
    """What `show_training_loop` returns: ``str()``/``repr()`` give the text, ``_repr_html_`` an HTML table."""

    def __init__(self, title: str, rows: list[LoopRow]):
        self.title, self.rows = title, rows

    @property
    def text(self) -> str:
        "The plain-text report."
        return str(self)

    def __str__(self) -> str:
        calls = [r for r in self.rows if r.kind == "call"]
        w_order = max([len("handler")] + [len(r.order) for r in calls])
        w_who = max([len("who")] + [len(r.who) for r in calls])
        w_reads = max([len("reads")] + [len(r.reads) for r in calls])
        lines = [self.title, f"    {'order'.ljust(w_order)}  {'who'.ljust(w_who)}  {'reads'.ljust(w_reads)}  returned"]
        for r in self.rows:
            if r.kind == "phase":
                lines.append(r.text)
            elif r.kind == "event":
                lines.append(f"  {r.text}")
            elif r.kind in ("before", "after"):  # wrapped at 100 columns, aligned under the text
                prefix = f"    {'handler'.ljust(w_order)}  "
                lines.append(textwrap.fill(r.text, width=100, initial_indent=prefix,
                                           subsequent_indent=" " * len(prefix), break_on_hyphens=False))
            elif r.kind == "nobody":
                lines.append(f"    {''.ljust(w_order)}  {r.text}")
            else:
                lines.append(f"    {r.order.ljust(w_order)}  {r.who.ljust(w_who)}  {r.reads.ljust(w_reads)}  "
                             f"{r.returned}".rstrip())
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{c}</th>" for c in ("event", "order", "who", "reads", "returned"))
        body, event = [], ""
        esc = html.escape
        for r in self.rows:
            if r.kind == "phase":
                body.append(f'<tr><th colspan="5" style="text-align:left">{esc(r.text)}</th></tr>')
            elif r.kind == "event":
                event = r.text
            elif r.kind in ("before", "after"):
                body.append(f"<tr><td><code>{esc(event)}</code></td><td>handler</td>"
                            f'<td colspan="3"><i>{r.kind}:</i> {esc(r.text)}</td></tr>')
            elif r.kind == "nobody":
                body.append(f'<tr><td><code>{esc(event)}</code></td><td></td><td colspan="3">{esc(r.text)}</td></tr>')
            else:
                body.append(f"<tr><td><code>{esc(event)}</code></td><td>{esc(r.order)}</td><td>{esc(r.who)}</td>"
                            f"<td>{esc(r.reads)}</td><td>{esc(r.returned)}</td></tr>")
        return (f'<div><p>{esc(self.title)}</p><table class="fastloop-loop" style="text-align:left">'
                f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def _fit_handler(learn: Any, callbacks: Any = None) -> CallbackHandler:
    """The handler `learn.fit` would build: learn.callbacks + fresh callback_fns + `callbacks`, sorted by _order.

    Making the callback_fns instances registers them on the learner (``learn.recorder = ...``) and may create
    the optimizer; the learner's attributes are restored afterwards, so looking changes nothing.
    """
    saved = dict(learn.__dict__)
    lists = {k: list(v) for k, v in saved.items() if isinstance(v, list)}  # a callback may append to learn.callbacks
    try:
        fresh = learn._new_callbacks_from_fns()
    finally:
        learn.__dict__.clear()
        learn.__dict__.update(saved)
        for k, items in lists.items():
            saved[k][:] = items
    return CallbackHandler(list(learn.callbacks) + fresh + listify(callbacks), learn.metrics)


def _find_tracer(cbs: Sequence[Any]) -> StateTracer | None:
    tracers = [cb for cb in cbs if isinstance(cb, StateTracer)]
    return tracers[-1] if tracers else None


def show_training_loop(obj: Any, callbacks: Any = None, trace: StateTracer | None = None) -> TrainingLoop:
    """Who runs at each event of a fit, in order; what each reads and returns; what the handler does around them.

    Args:
        obj: a `Learner` (shows the handler its next ``fit`` builds: ``learn.callbacks``, fresh
            ``callback_fns`` -- the Recorder first -- and `callbacks`) or a `CallbackHandler`.
        callbacks: extra per-fit callbacks, as in ``learn.fit(..., callbacks=...)`` (Learner only).
        trace: a `StateTracer` whose records say which keys each callback returned; by default the last
            `StateTracer` among the callbacks, if any.  Without a trace the "returned" column says "?".

    Columns: ``order`` is the callback's ``_order`` ("metric" for metrics, which always run first, in the
    order given); ``reads`` the keyword names of its hook's signature (state keys and event extras;
    "**kwargs" alone when it names none; "no **kwargs!" when it lacks ``**kwargs`` and will fail with a
    TypeError); ``returned`` the keys a trace saw it return at this event ("-": none).
    """
    if isinstance(obj, CallbackHandler):
        handler, where = obj, "CallbackHandler"
        if callbacks is not None:
            raise TypeError("show_training_loop: `callbacks` is for a Learner; add them to the handler instead.")
    elif hasattr(obj, "callback_fns") and hasattr(obj, "metrics"):
        handler, where = _fit_handler(obj, callbacks), "learn.fit"
    else:
        raise TypeError(f"show_training_loop needs a Learner or a CallbackHandler, not {type(obj).__name__}.")
    if trace is None:
        trace = _find_tracer(list(handler.callbacks))
    seen = trace.returned_keys() if trace is not None else None

    n_m, n_c = len(handler.metrics), len(handler.callbacks)
    title = (f"fastloop training loop ({where}): {n_m} metric{'s' * (n_m != 1)}, {n_c} callback{'s' * (n_c != 1)}; "
             f"at each event, in call order" + ("" if seen is not None else " (returns: run a learn.trace())"))
    rows: list[LoopRow] = []
    phase = None
    for step in LOOP_STEPS:
        if step.phase != phase:
            phase = step.phase
            rows.append(LoopRow("phase", phase))
        if step.event is None:
            rows.append(LoopRow("after", step.after))
            continue
        rows.append(LoopRow("event", f"on_{step.event}", event=step.event))
        before = step.before if step.before != "-" else ""
        if step.extras:
            before = (before + "; " if before else "") + f"extra argument: {', '.join(step.extras)}"
        if before:
            rows.append(LoopRow("before", before, event=step.event))
        called = handler.implementers(step.event, call_mets=step.metrics != "no")
        metrics = set(map(id, handler.metrics))
        for cb in called:
            is_metric = id(cb) in metrics
            names, var_kw = hook_reads(getattr(cb, f"on_{step.event}", None))
            reads = ", ".join(names) if names else "**kwargs"
            if not var_kw:
                reads += " (no **kwargs!)"
            if seen is None:
                returned = "?"
            else:
                returned = ", ".join(sorted(seen.get((callback_label(cb), step.event, step.train), ()))) or "-"
            order = "metric" if is_metric else str(getattr(cb, "_order", 0))
            who = callback_label(cb) + (f" ({type(cb).__name__})" if callback_label(cb) != type(cb).__name__ else "")
            if is_metric and step.metrics == "if validation ran":
                who += " [if validation ran]"
            rows.append(LoopRow("call", order=order, who=who, reads=reads, returned=returned, event=step.event))
        if not called:
            rows.append(LoopRow("nobody", "(no callback implements it)", event=step.event))
        if step.after != "-":
            rows.append(LoopRow("after", step.after, event=step.event))
    return TrainingLoop(title, rows)


# ------------------------------------------------------------------------------------------------- the docs
def _md_table(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def engine_markdown() -> str:
    """The generated part of docs/engine.md: the state key table, the flag table and the loop's steps."""
    keys = _md_table(["key", "meaning", "first event where present", "written by"],
                     [[f"`{k.name}`", k.meaning, f"`on_{k.first_event}`", k.written_by] for k in STATE_KEY_TABLE])
    flags = _md_table(["flag", "who may set it", "read where", "effect when set", "reset"],
                      [[f"`{f.name}`", f.set_by, f.read_where, f.effect, f.reset] for f in FLAG_TABLE])
    steps = _md_table(["phase", "event", "metrics called", "handler, before the callbacks", "after the callbacks"],
                      [[s.phase, f"`on_{s.event}`" if s.event else "(loop)", s.metrics,
                        s.before + (f"; extra: `{', '.join(s.extras)}`" if s.extras else ""), s.after]
                       for s in LOOP_STEPS])
    return (f"### State keys\n\n{keys}\n\n### Flags\n\n{flags}\n\n### The loop, step by step\n\n{steps}\n")


if __name__ == "__main__":  # python -m fastloop.explain: the markdown that docs/engine.md holds
    print(engine_markdown(), end="")
