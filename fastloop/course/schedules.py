"""The course's schedules (05, 11a): ``f(pos) -> value`` for ``pos`` = training progress in [0, 1).

``sched_lin(0.1, 0.01)`` is a function of the position: ``sched_lin(0.1, 0.01)(0.5) == 0.055``.  `ParamScheduler`
calls it with ``n_epochs/epochs`` at each training batch.  `sched_1cycle` lives with the 09 `ParamScheduler`
(`fastloop.course.stage11`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch

from .callbacks import listify

__all__ = ["annealer", "sched_lin", "sched_cos", "sched_no", "sched_exp", "cos_1cycle_anneal", "combine_scheds",
           "create_phases"]

Schedule = Callable[[float], Any]


def annealer(f: Callable[[Any, Any, float], Any]) -> Callable[[Any, Any], Schedule]:
    "Turn ``f(start, end, pos)`` into ``f(start, end) -> (pos -> value)``."

    def _inner(start: Any, end: Any) -> Schedule:
        return partial(f, start, end)

    return _inner


@annealer
def sched_lin(start: Any, end: Any, pos: float) -> Any:
    "Linear from `start` (pos 0) to `end` (pos 1)."
    return start + pos * (end - start)


@annealer
def sched_cos(start: Any, end: Any, pos: float) -> Any:
    "Half a cosine from `start` (pos 0) to `end` (pos 1)."
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


@annealer
def sched_no(start: Any, end: Any, pos: float) -> Any:
    "Always `start`."
    return start


@annealer
def sched_exp(start: Any, end: Any, pos: float) -> Any:
    "Exponential from `start` to `end`."
    return start * (end / start) ** pos


def cos_1cycle_anneal(start: Any, high: Any, end: Any) -> list[Schedule]:
    "Two cosine phases, `start` -> `high` -> `end`, for `combine_scheds`."
    return [sched_cos(start, high), sched_cos(high, end)]


def combine_scheds(pcts: Sequence[float], scheds: Sequence[Schedule]) -> Schedule:
    """One schedule made of `scheds` placed one after the other, the i-th over a share ``pcts[i]`` of training.

    ``pcts`` must sum to 1.  Each phase gets its own position from 0 to 1.

    fastloop: the position passed to a phase is a Python float (the course passed a 0-dim tensor, which made
    `sched_lin` return tensors), and ``pos == 1.0`` stays in the last phase as in the notebook cell (the
    exported ``nb_05`` indexed past it and raised IndexError).
    """
    assert sum(pcts) == 1.0
    pcts = torch.tensor([0] + listify(pcts))
    assert torch.all(pcts >= 0)
    pcts = torch.cumsum(pcts, 0)
    last = len(scheds) - 1

    def _inner(pos: float) -> Any:
        idx = min(int((pos >= pcts).nonzero().max()), last)  # the phase `pos` is in (1.0: the last one)
        actual_pos = float((pos - pcts[idx]) / (pcts[idx + 1] - pcts[idx]))
        return scheds[idx](actual_pos)

    return _inner


def create_phases(phases: Any) -> list[float]:
    "``create_phases(0.3) == [0.3, 0.7]``: the phases given, plus one that makes them sum to 1 (11a)."
    phases = listify(phases)
    return phases + [1 - sum(phases)]
