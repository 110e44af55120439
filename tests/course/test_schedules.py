"""Schedules (fastloop/course/schedules.py) and sched_1cycle (11a)."""

from __future__ import annotations

import math

import pytest

from fastloop.course.schedules import (
    combine_scheds,
    cos_1cycle_anneal,
    create_phases,
    sched_cos,
    sched_exp,
    sched_lin,
    sched_no,
)
from fastloop.course.stage09 import ParamScheduler
from fastloop.course.stage11 import sched_1cycle


def test_annealed_schedules_at_start_middle_end():
    assert [sched_lin(1, 2)(p) for p in (0, 0.5, 1)] == [1, 1.5, 2]
    assert sched_cos(1, 2)(0) == pytest.approx(1) and sched_cos(1, 2)(1) == pytest.approx(2)
    assert sched_cos(1, 2)(0.5) == pytest.approx(1.5)
    assert sched_no(1, 2)(0.7) == 1
    assert sched_exp(1, 4)(0.5) == pytest.approx(2)


def test_combine_scheds_places_phases_by_share_of_training():
    sched = combine_scheds([0.3, 0.7], [sched_lin(0.3, 0.6), sched_lin(0.6, 0.2)])
    assert sched(0.0) == pytest.approx(0.3)
    assert sched(0.15) == pytest.approx(0.45, rel=1e-5)
    assert sched(0.65) == pytest.approx(0.4, rel=1e-5)
    assert isinstance(sched(0.5), float)  # fastloop: a float, not a 0-dim tensor
    assert sched(1.0) == pytest.approx(0.2)  # the notebook's clamp (the export raised IndexError here)


def test_cos_1cycle_anneal_goes_up_then_down():
    up, down = cos_1cycle_anneal(0.1, 1.0, 0.01)
    assert up(0) == pytest.approx(0.1) and up(1) == pytest.approx(1.0) and down(1) == pytest.approx(0.01)


def test_create_phases_and_sched_1cycle():
    assert create_phases(0.3) == [0.3, 0.7]
    assert create_phases([0.2, 0.3]) == [0.2, 0.3, pytest.approx(0.5)]
    lr_sched, mom_sched = sched_1cycle([0.01, 0.1], pct_start=0.25)
    assert isinstance(lr_sched, ParamScheduler) and lr_sched.pname == "lr" and mom_sched.pname == "mom"
    assert len(lr_sched.sched_funcs) == 2
    f = lr_sched.sched_funcs[1]
    assert f(0) == pytest.approx(0.01) and f(0.25) == pytest.approx(0.1, rel=1e-5)
    assert f(0.999999) == pytest.approx(1e-6, abs=1e-5)
    assert mom_sched.sched_funcs(0) == pytest.approx(0.95) and mom_sched.sched_funcs(0.25) == pytest.approx(0.85)
    assert not math.isnan(mom_sched.sched_funcs(0.9))
