"""The course-style callback base: `Callback`, `TrainEvalCallback`, the ``Cancel*Exception``s and the event names.

A course callback (fast.ai course v3 part 2, notebooks 04-12a) is written like this::

    class MyCallback(Callback):
        _order = 1
        def begin_batch(self):
            if self.in_train: self.run.xb = self.xb * 2   # reads fall through to the runner; writes say self.run

Events are called with no argument.  Everything the callback reads that it does not own itself (``self.xb``,
``self.in_train``, ``self.model``...) is looked up on the runner (the 04/05b `Runner` or the 09b `Learner`) by
``__getattr__``.  Control flow goes through exceptions: raise `CancelBatchException`, `CancelEpochException` or
`CancelTrainException`; the loop catches each at its level and fires ``after_cancel_batch/epoch/train``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

from ..core import camel2snake

__all__ = [
    "Callback", "TrainEvalCallback", "CancelTrainException", "CancelEpochException", "CancelBatchException",
    "ALL_CBS", "COURSE_EVENTS", "cb_types", "listify", "camel2snake",
]

#: The 14 course events, in the order a fit meets them (the ``after_cancel_*`` ones only on cancellation).
COURSE_EVENTS: tuple[str, ...] = (
    "begin_fit", "begin_epoch", "begin_batch", "after_pred", "after_loss", "after_backward", "after_step",
    "after_cancel_batch", "after_batch", "after_cancel_epoch", "begin_validate", "after_epoch",
    "after_cancel_train", "after_fit",
)

#: The course's ``Learner.ALL_CBS``: the set of event names ``learn(name)`` accepts (09b).
ALL_CBS: set[str] = set(COURSE_EVENTS)

#: ``cb_types.after_batch == 'after_batch'`` (11a), so a typo is an AttributeError instead of a silent no-op.
cb_types = SimpleNamespace(**{name: name for name in COURSE_EVENTS})


class CancelTrainException(Exception):  # noqa: N818 -- the course's name
    """Raise it from any event to end the fit: ``after_cancel_train`` then ``after_fit`` fire (no ``after_epoch``)."""


class CancelEpochException(Exception):  # noqa: N818 -- the course's name
    """Raise it from a batch event to end the current loop (training or validation): ``after_cancel_epoch`` fires."""


class CancelBatchException(Exception):  # noqa: N818 -- the course's name
    """Raise it from a batch event to abandon the rest of the batch: ``after_cancel_batch``, then ``after_batch``."""


def listify(o: Any) -> list:
    """The course's `listify`: None -> ``[]``; a list is returned *as is* (not copied); a string -> ``[o]``;
    any other iterable -> ``list(o)``; anything else -> ``[o]``.

    Returning the same list matters: ``Runner(cbs=my_list, cb_funcs=...)`` appends to the caller's list, as
    in the course.  (fastai v1's `fastloop.core.listify` takes a second argument and copies.)
    """
    if o is None:
        return []
    if isinstance(o, list):
        return o
    if isinstance(o, str):
        return [o]
    if isinstance(o, Iterable):
        return list(o)
    return [o]


_callback_suffix = re.compile("Callback$")


class Callback:
    """Base class of course-style callbacks.

    * ``_order`` (0): callbacks run sorted by it, stably (ties keep the order they were added in).
    * ``set_runner(run)`` stores the runner (a `Runner`, or the 09b `Learner`) as ``self.run``.
    * Reading an attribute the callback lacks falls through to the runner (``self.xb`` is ``self.run.xb``).
      Only *reads* fall through: write with ``self.run.xb = ...``; ``self.loss += 1`` reads the runner's loss
      but stores the sum on the callback.  A missing attribute is reported as missing on the runner.
    * ``name``: the class name without a trailing ``Callback``, in snake case (``AvgStatsCallback`` ->
      ``avg_stats``, ``LR_Find`` -> ``lr__find``); the runner registers ``cb_funcs`` instances under it
      (the 09b Learner registers every callback under it).
    * ``cb(event)`` calls the event method and returns True if it returned something truthy (05b).  Override
      ``__call__`` to see every event (`DebugCallback` does).
    """

    _order = 0

    def set_runner(self, run: Any) -> None:
        "Attach the runner (or learner) whose attributes this callback reads."
        self.run = run

    def __getattr__(self, k: str) -> Any:
        # only reached for attributes the callback lacks
        if k.startswith("__") and k.endswith("__"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {k!r}")
        run = self.__dict__.get("run")
        if run is None:
            # not attached yet: no fall-through (the course version recursed until the stack overflowed)
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {k!r} (reads fall through to the runner, but "
                f"set_runner has not been called: the runner attaches its callbacks at fit)"
            )
        return getattr(run, k)

    @property
    def name(self) -> str:
        "``AvgStatsCallback`` -> ``'avg_stats'``: the attribute name the runner registers this callback under."
        name = _callback_suffix.sub("", type(self).__name__)
        return camel2snake(name or "callback")

    def __call__(self, cb_name: str) -> bool:
        "Call the event method `cb_name` if this callback has it; True if it returned something truthy."
        f = getattr(self, cb_name, None)
        if f and f():
            return True
        return False


class TrainEvalCallback(Callback):
    """Switches train/eval mode and keeps the progress counters; every runner adds one, first in its list.

    Events: ``begin_fit`` (``run.n_epochs = 0.``, ``run.n_iter = 0``), ``begin_epoch`` (reads ``epoch``;
    ``run.n_epochs = epoch``, ``model.train()``, ``run.in_train = True``), ``after_batch`` (training only, reads
    ``iters``; ``n_epochs += 1/iters``, ``n_iter += 1``), ``begin_validate`` (``model.eval()``,
    ``run.in_train = False``).

    ``n_epochs`` is fractional progress (epoch plus the share of it done) -- not fastai v1's ``n_epochs``, which
    is the number of epochs asked for (the course calls that ``epochs``).  ``n_iter`` counts training batches
    in this fit.  ``_order`` 0 and first in the list: callbacks with a negative ``_order`` see the counters
    before the increment at ``after_batch``, the others after it.
    """

    def begin_fit(self) -> None:
        self.run.n_epochs = 0.0
        self.run.n_iter = 0

    def after_batch(self) -> None:
        if not self.in_train:
            return
        self.run.n_epochs += 1.0 / self.iters
        self.run.n_iter += 1

    def begin_epoch(self) -> None:
        self.run.n_epochs = self.epoch
        self.model.train()
        self.run.in_train = True

    def begin_validate(self) -> None:
        self.model.eval()
        self.run.in_train = False
