"""The dispatch core under `CallbackHandler` (private; every callback style goes through it).

Three jobs, all done once when a handler is built, so that firing an event is a plain loop:

1. **Call lists.** For each event, the bound methods that a callback really overrides.  A method that is
   still the base class's no-op is left out, so a callback costs nothing at events it does not implement.
   An object with no such method at all (a list appended to ``learn.callbacks`` by mistake) gets a stub
   that raises Python's own ``AttributeError`` when the event fires, exactly where fastai v1 raised it.
2. **Hook checks.** A method named like an event but not one (``on_epoch_start``) is reported with the
   nearest real name; a hook whose required parameter is neither a state key nor an extra of its event
   (``on_batch_begin(self, last_ouput, **kwargs)``) is refused with `CallbackSignatureError`.
3. **Errors that name their origin.** An exception raised by a hook keeps its type and traceback and gets a
   PEP 678 note naming the callback and the event (and, for a ``TypeError`` about a missing argument, the
   state keys that do not exist yet).  A bad return value raises fastai v1's exact exception with the same
   kind of note.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

__all__ = [
    "EVENTS", "EVENT_EXTRAS", "STATE_KEYS", "STATE_KEY_TABLE", "StateKey", "CallbackSignatureError",
    "build_call_lists", "check_hooks",
    "fire", "fire_probed", "is_probe", "apply_update", "note",
]

#: fastai v1's ten events, in the order a fit meets them.
EVENTS: tuple[str, ...] = (
    "train_begin", "epoch_begin", "batch_begin", "loss_begin", "backward_begin",
    "backward_end", "step_end", "batch_end", "epoch_end", "train_end",
)

#: Keyword arguments that an event passes besides the state; they are not state keys and cannot be returned.
EVENT_EXTRAS: dict[str, frozenset[str]] = {e: frozenset() for e in EVENTS}
EVENT_EXTRAS["train_begin"] = frozenset({"metrics_names"})
EVENT_EXTRAS["train_end"] = frozenset({"exception"})

@attrs.frozen
class StateKey:
    """One key of ``CallbackHandler.state_dict``: what it holds, the first event (in a fit) where callbacks
    see it, and who writes it.  README.md's key table is this table."""

    name: str
    first_event: str
    meaning: str
    written_by: str


STATE_KEY_TABLE: tuple[StateKey, ...] = (
    StateKey("epoch", "train_begin", "index of the running epoch; at train_end the number of epochs done",
             "handler: += 1 after each on_epoch_end"),
    StateKey("iteration", "train_begin", "training batches done in this fit (the running batch's index)",
             "handler: += 1 after each training on_batch_end"),
    StateKey("num_batch", "train_begin", "training batches done in this epoch",
             "handler: 0 at each on_epoch_begin, += 1 after each training on_batch_end"),
    StateKey("skip_validate", "train_begin", "no validation at the end of each epoch",
             "callbacks; reset only at on_train_begin"),
    StateKey("n_epochs", "train_begin", "epochs asked for in fit", "handler"),
    StateKey("pbar", "train_begin", "fastprogress master bar (None in Learner.validate)", "handler"),
    StateKey("metrics", "train_begin", "the metrics list given to fit", "handler"),
    StateKey("stop_training", "epoch_begin", "end the fit after this epoch",
             "callbacks; reset at each on_epoch_begin"),
    StateKey("last_input", "batch_begin", "the batch input, on the device, after the loader's transforms",
             "handler; callbacks may replace it"),
    StateKey("last_target", "batch_begin", "the batch target", "handler; callbacks may replace it"),
    StateKey("train", "batch_begin", "True in the training loop, False in validation", "handler"),
    StateKey("stop_epoch", "batch_begin", "break out of the current loader loop (training or validation)",
             "callbacks; reset at each on_batch_begin"),
    StateKey("skip_step", "batch_begin", "skip opt.step()", "callbacks; reset at each on_batch_begin"),
    StateKey("skip_zero", "batch_begin", "skip opt.zero_grad()", "callbacks; reset at each on_batch_begin"),
    StateKey("skip_bwd", "batch_begin", "skip loss.backward()", "callbacks; reset at each on_batch_begin"),
    StateKey("last_output", "loss_begin", "the model output", "handler; callbacks may replace it"),
    StateKey("last_loss", "backward_begin",
             "at on_backward_begin the loss with its graph (replace it to change what is backpropagated); "
             "at on_batch_end the detached CPU loss (validation-only runs: first at on_batch_end)",
             "handler; callbacks may replace it"),
    StateKey("smooth_loss", "backward_begin",
             "debiased moving average (beta 0.98) of the raw training loss, a 0-dim CPU float32 tensor",
             "handler, before the on_backward_begin callbacks"),
    StateKey("last_metrics", "epoch_end", "[val_loss, *metric values], or [None] when validation did not run",
             "handler writes [val_loss]; metrics append"),
)

#: Every state key with the first event (in a fit) at which it exists.
STATE_KEYS: dict[str, str] = {k.name: k.first_event for k in STATE_KEY_TABLE}


class CallbackSignatureError(TypeError):
    """A hook asks for a keyword argument that no event ever passes (a ``TypeError``, as v1 would raise later)."""


def note(exc: BaseException, text: str) -> None:
    """Add a PEP 678 note once (an exception that crosses nested handlers is not annotated twice).

    Python 3.10 has no ``add_note``: the note is still stored in ``__notes__`` (3.10 does not print it).
    """
    notes = getattr(exc, "__notes__", None) or []
    if text in notes:
        return
    if hasattr(exc, "add_note"):
        exc.add_note(text)
    else:
        exc.__notes__ = [*notes, text]


def _cb_label(cb: Any) -> str:
    return type(cb).__name__


# ------------------------------------------------------------------------------------------------ call lists
def _missing_hook(obj: Any, name: str) -> Callable[..., Any]:
    """A stand-in for a hook the object lacks: calling it raises Python's own AttributeError."""

    def call(**kwargs: Any) -> Any:
        return getattr(obj, name)(**kwargs)

    return call


def build_call_lists(
    objs: Iterable[Any], events: Iterable[str], noops: Mapping[str, Any], prefix: str = "on_",
    get_hook: Callable[[Any, str], Callable[..., Any] | None] | None = None,
) -> dict[str, list[tuple[Any, Callable[..., Any]]]]:
    """Per event, ``[(obj, bound_method), ...]`` for the objects whose method is not the base no-op.

    `noops` maps each event to the base class's function; an object whose method *is* that function is
    skipped for the event (its call would do nothing).  Order is preserved.

    `get_hook(obj, name)`, when given, finds the callable instead of ``getattr`` (the course style uses it:
    its callbacks may override ``__call__``, and their ``__getattr__`` must not fall through to the runner);
    an object for which it returns None is left out of that event.
    """
    objs = list(objs)
    table: dict[str, list[tuple[Any, Callable[..., Any]]]] = {}
    for event in events:
        name = prefix + event
        base = noops.get(event)
        calls = []
        for obj in objs:
            if get_hook is not None:
                hook = get_hook(obj, name)
                if hook is not None:
                    calls.append((obj, hook))
                continue
            meth = getattr(obj, name, None)
            if meth is None:
                calls.append((obj, _missing_hook(obj, name)))
            elif getattr(meth, "__func__", None) is not base or base is None:
                calls.append((obj, meth))
        table[event] = calls
    return table


# ---------------------------------------------------------------------------------------------- hook checks
@functools.cache
def _required_params(func: Callable[..., Any]) -> tuple[str, ...]:
    """Names a hook cannot be called without (keyword-able, no default); positional-only ones included."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return ()
    params = list(sig.parameters.values())
    if inspect.isfunction(func) and params:  # unbound function: drop `self`
        params = params[1:]
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_ONLY)
    return tuple(p.name for p in params if p.kind in kinds and p.default is inspect.Parameter.empty)


_SYNONYMS = {"start": "begin", "started": "begin", "starts": "begin", "begins": "begin", "begun": "begin",
             "beginning": "begin", "before": "begin", "ended": "end", "ends": "end", "ending": "end",
             "finish": "end", "finished": "end", "after": "end", "done": "end", "fit": "train", "training": "train",
             "batches": "batch", "epochs": "epoch", "backwards": "backward"}


def _suggest(name: str, valid: list[str], prefix: str) -> str | None:
    """The event a misspelled hook most likely meant: synonyms first (start -> begin), then edit distance."""
    words = [_SYNONYMS.get(w, w) for w in name[len(prefix):].split("_")]
    normalised = prefix + "_".join(words)
    if normalised in valid:
        return normalised
    # a near-exact spelling of a real name (the course's ``after_batches``) beats a synonym-normalised guess
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.85)
    if close:
        return close[0]
    close = difflib.get_close_matches(normalised, valid, n=1, cutoff=0.6)
    return close[0] if close else None


@functools.cache
def _class_report(cls: type, events: tuple[str, ...], prefix: str,
                  candidates: tuple[str, ...] | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(misspelling messages, signature-error messages) for a callback class; computed once per class.

    With `candidates` (the course style: ``("begin_", "after_", "before_")``), the methods whose names start
    with one of them are checked for misspellings, and hooks take no argument at all.
    """
    valid = [prefix + e for e in events]
    look_at = candidates or (prefix,)
    misspelled = []
    for name in dir(cls):
        if not name.startswith(look_at) or name in valid or not callable(getattr(cls, name, None)):
            continue
        close = _suggest(name, valid, prefix)
        if close:
            misspelled.append(
                f"{cls.__name__}.{name} is not a callback event, so it is never called: "
                f"did you mean `{close}`? (events: {', '.join(valid)})"
            )
    bad_sigs = []
    known = list(STATE_KEYS)
    for event in events:
        func = getattr(cls, prefix + event, None)
        if func is None or not callable(func):
            continue
        allowed = set(STATE_KEYS) | EVENT_EXTRAS.get(event, frozenset())
        for param in _required_params(func):
            if candidates is not None:  # course style: events are called with no argument
                bad_sigs.append(
                    f"{cls.__name__}.{prefix}{event} requires the parameter '{param}', but course-style events are "
                    f"called without arguments: read it as self.{param} (it falls through to the runner)."
                )
                continue
            if param in allowed:
                continue
            close = difflib.get_close_matches(param, known + sorted(EVENT_EXTRAS.get(event, ())), n=1, cutoff=0.6)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            bad_sigs.append(
                f"{cls.__name__}.{prefix}{event} requires the parameter '{param}', which is neither a state key "
                f"nor an extra argument of {prefix}{event}, so the event can never call it.{hint} "
                f"(Give it a default, or take it from **kwargs.)"
            )
    return tuple(misspelled), tuple(bad_sigs)


def check_hooks(obj: Any, strict: bool = False, events: tuple[str, ...] = EVENTS, prefix: str = "on_",
                candidates: tuple[str, ...] | None = None) -> None:
    """Warn about misspelled hook names (error if `strict`) and refuse impossible hook signatures.

    `candidates`: name prefixes to check when `prefix` is empty (the course style), see `_class_report`.
    """
    misspelled, bad_sigs = _class_report(type(obj), tuple(events), prefix, candidates)
    if bad_sigs:
        raise CallbackSignatureError(bad_sigs[0])
    for msg in misspelled:
        if strict:
            raise AttributeError(msg)
        warnings.warn(msg, UserWarning, stacklevel=4)


# --------------------------------------------------------------------------------------------------- firing
def _explain_type_error(cb: Any, event: str, state: Mapping[str, Any], extras: Mapping[str, Any], prefix: str) -> str:
    """For a TypeError inside a hook: which required parameters are not in the state at this event."""
    func = getattr(type(cb), prefix + event, None)
    if func is None:
        return ""
    missing = [p for p in _required_params(func) if p not in state and p not in extras]
    if not missing:
        return ""
    parts = []
    for p in missing:
        first = STATE_KEYS.get(p)
        when = f"it first exists at {prefix}{first}" if first else "it is not a state key"
        parts.append(f"'{p}' ({when})")
    return f" The state has no {', '.join(parts)} yet at {prefix}{event}."


def apply_update(state: dict[str, Any], ret: Any, cb: Any, event: str, prefix: str = "on_") -> None:
    """Apply a hook's returned dict to `state`, key by key, with fastai v1's checks and messages."""
    where = f"{_cb_label(cb)}.{prefix}{event}"
    try:
        items = ret.items()
    except AttributeError as e:
        note(e, f"fastloop: {where} returned {type(ret).__name__} {ret!r:.60}; a callback returns None or a "
                f"dict of state updates.")
        raise
    for k, v in items:
        if k not in state:
            err = Exception(f"{k} isn't a valid key in the state of the callbacks.")
            if k in STATE_KEYS:
                why = f"it does not exist yet at {prefix}{event} (first at {prefix}{STATE_KEYS[k]})"
            elif k in EVENT_EXTRAS.get(event, ()):
                why = f"it is an extra argument of {prefix}{event}, not a state key"
            else:
                close = difflib.get_close_matches(str(k), list(state), n=1, cutoff=0.6)
                why = "it is not a state key" + (f" (did you mean '{close[0]}'?)" if close else "")
            note(err, f"fastloop: {where} returned the key {k!r}: {why}. Keys before it were applied.")
            raise err
        state[k] = v


def fire(calls: list[tuple[Any, Callable[..., Any]]], event: str, state: dict[str, Any],
         extras: Mapping[str, Any] | None = None, prefix: str = "on_",
         on_return: Callable[[Any, Any], bool] | None = None) -> bool:
    """Call each hook with the whole state (plus `extras`) as keyword arguments; apply what it returns.

    This is fastai v1's ``_call_and_update`` for a whole event: each return is applied before the next
    callback runs, so later callbacks see the update.

    `on_return(cb, returned)`, when given, replaces the returned-dict rule (the course style: a return is a
    bool, not a dict); if it answers True, the remaining hooks are not called and `fire` returns True (the
    course Runner's "True stops the event").  Without it `fire` returns False.
    """
    for cb, meth in calls:
        try:
            ret = meth(**state, **extras) if extras else meth(**state)
        except Exception as e:
            hint = _explain_type_error(cb, event, state, extras or {}, prefix) if isinstance(e, TypeError) else ""
            note(e, f"fastloop: raised in callback {_cb_label(cb)}.{prefix}{event}.{hint}")
            raise
        if on_return is not None:
            if on_return(cb, ret):
                return True
        elif ret is not None:
            apply_update(state, ret, cb, event, prefix)
    return False


# --------------------------------------------------------------------------------------------------- probes
# A *probe* watches dispatch without taking part in it: the tracer (show what each callback returned) and
# the per-callback timer are probes.  A probe is any object -- usually a Callback placed in the callback
# list -- with these three methods:
#
#     probe_begin(event, state, extras)  before the event's first call (the handler has written its keys)
#     probe_wrap(cb, event, meth) -> fn  a callable used instead of `meth` for this call (time it, record
#                                        its return value...); it must call `meth(**kwargs)` and return
#                                        what `meth` returned, unchanged
#     probe_end(event, state, error)     after the event's last call (error: the exception, or None)
#
# With no probe in a handler, dispatch is the plain `fire` loop above: probes cost nothing when off.

def is_probe(obj: Any) -> bool:
    "Whether `obj` takes part in dispatch as a probe (has ``probe_begin``, ``probe_wrap`` and ``probe_end``)."
    return all(callable(getattr(obj, name, None)) for name in ("probe_begin", "probe_wrap", "probe_end"))


def fire_probed(calls: list[tuple[Any, Callable[..., Any]]], event: str, state: dict[str, Any],
                extras: Mapping[str, Any] | None, probes: Iterable[Any], prefix: str = "on_") -> None:
    """`fire`, with every probe told where the event begins and ends and wrapping each call.

    A probe does not wrap its own hooks.  Every probe sees every event, even one nobody implements.
    """
    probes = list(probes)
    for p in probes:
        p.probe_begin(event, state, extras or {})
    wrapped = list(calls)
    for p in probes:
        wrapped = [(cb, meth if cb is p else p.probe_wrap(cb, event, meth)) for cb, meth in wrapped]
    error: BaseException | None = None
    try:
        fire(wrapped, event, state, extras, prefix)
    except BaseException as e:
        error = e
        raise
    finally:
        for p in probes:
            p.probe_end(event, state, error)
