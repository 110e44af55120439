"""What notebooks 11 (train imagenette) and 11a (transfer learning) exported that is about training: the
learner-style `get_batch`, `DebugCallback`, and `sched_1cycle`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .callbacks import Callback
from .schedules import combine_scheds, cos_1cycle_anneal, create_phases
from .stage09 import ParamScheduler

__all__ = ["get_batch", "DebugCallback", "sched_1cycle"]


def get_batch(dl: Any, learn: Any) -> tuple[Any, Any]:
    """The first batch of `dl` after the callbacks' ``begin_batch`` (11, Learner flavour).

    Sets ``learn.xb``/``learn.yb``, calls ``do_begin_fit(0)`` -- so ``begin_fit`` fires on every callback, outside
    any fit (a `CudaCallback` moves the model, a `ProgressCallback` builds a bar over ``range(0)``) -- fires
    ``begin_batch`` and ``after_fit``, and returns the batch.
    """
    learn.xb, learn.yb = next(iter(dl))
    learn.do_begin_fit(0)
    learn("begin_batch")
    learn("after_fit")
    return learn.xb, learn.yb


class DebugCallback(Callback):
    """At event `cb_name`, calls ``f(run)`` -- or, without `f`, opens the debugger.

    It overrides ``__call__``, so it sees every event by name (``DebugCallback(cb_types.after_batch, f)``).
    ``_order`` 999: after every other callback.  Registered as ``debug``.
    """

    _order = 999

    def __init__(self, cb_name: str, f: Callable[[Any], Any] | None = None):
        self.cb_name, self.f = cb_name, f

    def __call__(self, cb_name: str) -> bool:
        if cb_name == self.cb_name:
            if self.f:
                self.f(self.run)
            else:
                breakpoint()  # noqa: T100 -- the course's set_trace()
        return False


def sched_1cycle(lrs: list[float], pct_start: float = 0.3, mom_start: float = 0.95, mom_mid: float = 0.85,
                 mom_end: float = 0.95) -> list[ParamScheduler]:
    """One-cycle: per group, lr cosine ``lr/10 -> lr`` over `pct_start` then ``lr -> lr/1e5``; momentum
    ``mom_start -> mom_mid -> mom_end``.  Two 09 `ParamScheduler`s (``'lr'`` with one schedule per group, ``'mom'``)."""
    phases = create_phases(pct_start)
    sched_lr = [combine_scheds(phases, cos_1cycle_anneal(lr / 10.0, lr, lr / 1e5)) for lr in lrs]
    sched_mom = combine_scheds(phases, cos_1cycle_anneal(mom_start, mom_mid, mom_end))
    return [ParamScheduler("lr", sched_lr), ParamScheduler("mom", sched_mom)]
