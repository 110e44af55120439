"""fastai v1 callbacks in a course `Learner`: the adapter that lets ``on_*`` callbacks run on the course loop.

A v1 callback (a subclass of `fastloop.callback.Callback`, or any object with ``on_<event>`` methods) given to the
09b `Learner` -- in ``cbs``, ``fit(epochs, cbs)`` or, for ``LearnerCallback`` factories, ``callback_fns`` -- is
wrapped in a `V1CallbackAdapter`.  The adapter takes its place in the one sorted callback list (v1 and course
``_order`` values compare directly), and turns course events into v1 events:

==================  ====================  ============================================================
course event        v1 event              state keys written before the v1 hooks run
==================  ====================  ============================================================
``begin_fit``       ``on_train_begin``    a fresh state: ``epoch=0, iteration=0, num_batch=0,
                                          skip_validate=False, n_epochs=learn.epochs, pbar=None,
                                          metrics=[]`` (extra: ``metrics_names=[]``)
``begin_epoch``     ``on_epoch_begin``    ``epoch``, ``num_batch=0``, ``stop_training=False``
``begin_batch``     ``on_batch_begin``    ``last_input=xb``, ``last_target=yb``, ``train=in_train``,
                                          the flags ``stop_epoch, skip_bwd, skip_step, skip_zero``
``after_pred``      ``on_loss_begin``     ``last_output=pred``
``after_loss``      ``on_backward_begin`` ``last_loss=loss`` (live), ``smooth_loss`` -- training only
``after_backward``  ``on_backward_end``   --
``after_step``      ``on_step_end``       --
``after_batch``     ``on_batch_end``      ``last_loss`` = the loss detached on the CPU
``after_epoch``     ``on_epoch_end``      ``last_metrics = [val_loss]`` (or ``[None]``)
``after_fit``       ``on_train_end``      ``epoch`` = epochs done (extra: ``exception``)
==================  ====================  ============================================================

``begin_validate`` and the ``after_cancel_*`` events have no v1 counterpart (v1 sees validation as
``train=False``).  The state is one dict per fit (``learn.v1_state``), shared by all adapters, so keys persist
from event to event as in v1's ``CallbackHandler.state_dict``; before each v1 call the keys above (and the
counters and flags) are refreshed from the learner.  A returned dict is applied with v1's rules (unknown key ->
v1's exception) by the same `fastloop._dispatch.fire` the v1 handler uses, and what changed is written back to
the learner: ``last_input -> xb``, ``last_target -> yb``, ``last_output -> pred``, ``last_loss -> loss``,
``last_metrics``, ``iteration``, ``num_batch`` and the six flags.  The learner's loop reads the flags where v1
reads them (``skip_bwd`` before backward, ``skip_step`` before the step, ``skip_zero`` before zero_grad,
``stop_epoch`` after ``after_batch``, ``skip_validate`` before validation, ``stop_training`` after ``after_epoch``):
a flag takes effect after the whole event, unlike a ``Cancel*`` exception, which cuts the event short.

Note ``n_epochs`` in the v1 view is the number of epochs asked for (``learn.epochs``), not the course's fractional
``learn.n_epochs``.  The v1 callback is registered on the learner under v1's name, ``camel2snake`` of the full
class name (``MRNetCallback`` -> ``learn.mr_net_callback``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from .. import _dispatch
from ..callback import _NOOPS, EVENTS
from ..callback import Callback as V1Callback
from ..core import camel2snake
from .callbacks import Callback

__all__ = ["V1CallbackAdapter", "is_v1_callback", "as_course_callback", "V1_EVENT"]

#: course event -> fastai v1 event
V1_EVENT: dict[str, str] = {
    "begin_fit": "train_begin", "begin_epoch": "epoch_begin", "begin_batch": "batch_begin",
    "after_pred": "loss_begin", "after_loss": "backward_begin", "after_backward": "backward_end",
    "after_step": "step_end", "after_batch": "batch_end", "after_epoch": "epoch_end", "after_fit": "train_end",
}

#: v1 state key -> learner attribute, for what a v1 callback may change by returning it
_WRITE_BACK: dict[str, str] = {
    "last_input": "xb", "last_target": "yb", "last_output": "pred", "last_loss": "loss",
    "last_metrics": "last_metrics", "iteration": "iteration", "num_batch": "num_batch",
    "stop_epoch": "stop_epoch", "stop_training": "stop_training", "skip_validate": "skip_validate",
    "skip_bwd": "skip_bwd", "skip_step": "skip_step", "skip_zero": "skip_zero",
}
_FLAGS = ("stop_epoch", "stop_training", "skip_validate", "skip_bwd", "skip_step", "skip_zero")
#: course events at which v1's handler writes state keys
_WRITES_STATE = frozenset({"begin_fit", "begin_epoch", "begin_batch", "after_pred", "after_loss", "after_batch",
                           "after_epoch", "after_fit"})


def is_v1_callback(obj: Any) -> bool:
    "A fastai v1-style callback: a `fastloop.callback.Callback`, or a non-course object with ``on_<event>`` methods."
    if isinstance(obj, V1Callback):
        return True
    if isinstance(obj, Callback):
        return False
    return any(callable(getattr(type(obj), "on_" + e, None)) for e in EVENTS)


def as_course_callback(obj: Any) -> Any:
    "`obj` itself for a course callback; a `V1CallbackAdapter` around a v1 one."
    return V1CallbackAdapter(obj) if is_v1_callback(obj) else obj


def _cpu_loss(learn: Any) -> Any:
    "The batch's loss detached on the CPU, computed once per batch however many adapters ask."
    loss = getattr(learn, "loss", None)
    cached = learn.__dict__.get("_v1_cpu_loss")
    if cached is not None and cached[0] is loss:
        return cached[1]
    value = loss.detach().cpu() if hasattr(loss, "detach") else loss
    learn._v1_cpu_loss = (loss, value)
    return value


def _new_state(learn: Any) -> dict[str, Any]:
    return {"epoch": 0, "iteration": 0, "num_batch": 0, "skip_validate": False,
            "n_epochs": getattr(learn, "epochs", 0), "pbar": None, "metrics": []}


def _sync_in(learn: Any, event: str) -> tuple[dict[str, Any], dict[str, Any]]:
    "Refresh the shared v1 state from the learner for `event`; return (state, extras)."
    state = learn.__dict__.get("v1_state")
    if state is None:
        state = learn.v1_state = _new_state(learn)
    extras: dict[str, Any] = {}
    # counters and flags (only the flags that exist by now: v1 adds them lazily)
    state["iteration"], state["num_batch"] = learn.iteration, learn.num_batch
    if event == "begin_epoch":
        state["stop_training"] = learn.stop_training
    elif event == "begin_batch":
        for k in ("stop_epoch", "skip_bwd", "skip_step", "skip_zero"):
            state[k] = getattr(learn, k)
    for k in _FLAGS:
        if k in state:
            state[k] = getattr(learn, k)
    # what v1's handler writes at this event
    if event == "begin_fit":
        extras["metrics_names"] = []
    elif event == "begin_epoch":
        state["epoch"] = learn.epoch
    elif event == "begin_batch":
        state["last_input"], state["last_target"], state["train"] = learn.xb, learn.yb, learn.in_train
    elif event == "after_pred":
        state["last_output"] = learn.pred
    elif event == "after_loss":
        state["last_loss"], state["smooth_loss"] = learn.loss, learn.smooth_loss
    elif event == "after_batch":
        state["last_loss"] = _cpu_loss(learn)
    elif event == "after_epoch":
        state["epoch"], state["last_metrics"] = learn.epoch, learn.last_metrics
    elif event == "after_fit":
        state["epoch"] = learn.epochs_done
        extras["exception"] = learn.exception
    return state, extras


def _sync_out(learn: Any, state: dict[str, Any], before: dict[str, Any]) -> None:
    "Write back to the learner the keys a v1 callback changed (by returning them)."
    for k, v in state.items():
        if k in _WRITE_BACK and (k not in before or before[k] is not v):
            setattr(learn, _WRITE_BACK[k], v)


class V1CallbackAdapter(Callback):
    """Runs one fastai v1 callback (`wrapped`) at the course events of the table in this module's docstring.

    ``_order`` is the v1 callback's.  The adapter takes part only in the events the v1 callback implements
    (base-class no-ops are skipped, as in v1's handler), and ``on_backward_begin`` fires in training only (v1
    runs no backward events in validation).  Its hooks are checked as v1's handler checks them (misspelled
    names warn, impossible signatures raise `CallbackSignatureError`).
    """

    def __init__(self, cb: Any, strict: bool | None = None):
        from ..core import defaults

        self.wrapped = cb
        _dispatch.check_hooks(cb, strict=defaults.strict_callbacks if strict is None else strict)
        self._v1_calls = _dispatch.build_call_lists([cb], EVENTS, _NOOPS)

    @property
    def _order(self) -> Any:  # type: ignore[override]
        return getattr(self.wrapped, "_order", 0)

    @property
    def name(self) -> str:
        "v1's naming rule: the full class name in snake case (``MRNetCallback`` -> ``mr_net_callback``)."
        return camel2snake(type(self.wrapped).__name__)

    def __repr__(self) -> str:
        return f"V1CallbackAdapter({type(self.wrapped).__name__})"

    def course_hook(self, event: str) -> Callable[[], None] | None:
        """What the course event `event` calls, or None.

        The adapter takes part in the events where v1's handler writes state keys even if its callback has no
        hook there (it then only writes the keys, so that the shared state evolves as v1's does), and in the
        others only where its callback has a hook.
        """
        v1_event = V1_EVENT.get(event)
        if v1_event is None or not (self._v1_calls[v1_event] or event in _WRITES_STATE):
            return None
        return partial(self._fire, event, v1_event)

    def _fire(self, event: str, v1_event: str) -> None:
        learn = self.run
        if event == "after_loss" and not learn.in_train:
            return  # v1 fires on_backward_begin in training only
        state, extras = _sync_in(learn, event)
        calls = self._v1_calls[v1_event]
        if calls:
            before = dict(state)
            _dispatch.fire(calls, v1_event, state, extras)
            _sync_out(learn, state, before)


def validation_loss(total: Any, count: int) -> Any:
    "v1's ``val_loss``: the batch-size-weighted mean of the validation losses, a numpy float32 (None if none)."
    if not count:
        return None
    return np.float32(float(total) / count)
