"""GeneralScheduler and TrainingPhase: values per batch worked out from the spec, set_stat of any
hyper-parameter, the phase-0-only restart quirk and resume."""

from __future__ import annotations

import math

import pytest

from fastloop.callback import annealing_cos, annealing_linear
from fastloop.callbacks.general_sched import GeneralScheduler, TrainingPhase

from ..tracing import Tracer


def two_phases() -> list[TrainingPhase]:
    return [TrainingPhase(3).schedule_hp("lr", (1e-3, 1e-2), anneal=annealing_cos).schedule_hp("mom", 0.9),
            TrainingPhase(5).schedule_hp("lr", 1e-2, anneal=annealing_linear).schedule_hp("mom", (0.9, 0.8))]


def test_schedule_hp_returns_the_phase_and_only_tuples_are_ranges():
    phase = TrainingPhase(4)
    assert phase.schedule_hp("lr", (1.0, 2.0)) is phase
    assert phase.scheds["lr"].start == 1.0 and phase.scheds["lr"].end == 2.0
    phase.schedule_hp("mom", [0.9, 0.8])  # a list is a constant (per layer group), not a range
    assert phase.scheds["mom"].step() == [0.9, 0.8]


def test_values_at_every_batch_follow_the_phases(learn):
    """8 batches: phase 1 (3) cos 1e-3 -> 1e-2 at constant mom; phase 2 (5) linear 1e-2 -> 0, mom 0.9 -> 0.8."""
    sched = GeneralScheduler(learn, two_phases())
    assert learn.general_scheduler is sched and GeneralScheduler._order == 0
    learn.fit(2, 1e-3, callbacks=[sched])
    cos = [1e-2 + (1e-3 - 1e-2) / 2 * (1 + math.cos(math.pi * k / 3)) for k in (1, 2, 3)]
    lin = [1e-2 * (1 - k / 5) for k in (1, 2, 3, 4)]
    assert learn.recorder.lrs == pytest.approx([1e-3] + cos + lin)
    # phase 2's first momentum is its first step (0.9 - 0.02), not its start: spec §14.1
    assert learn.recorder.moms == pytest.approx([0.9] * 4 + [0.9 - 0.02 * k for k in (1, 2, 3, 4)])
    assert learn.opt.lr == pytest.approx(0.0) and learn.opt.mom == pytest.approx(0.8)


def test_any_param_group_key_can_be_scheduled(learn):
    phases = [TrainingPhase(8).schedule_hp("eps", (1e-8, 1e-4)).schedule_hp("wd", 0.1)]
    learn.fit(2, 1e-3, callbacks=[GeneralScheduler(learn, phases)])
    assert [g["eps"] for g in learn.opt.opt.param_groups] == pytest.approx([1e-4, 1e-4])
    assert learn.opt.wd == 0.1


def test_stop_flags_once_every_phase_is_done(learn):
    phases = [TrainingPhase(2).schedule_hp("lr", 1e-3)]
    learn.fit(3, 1e-3, callbacks=[GeneralScheduler(learn, phases)])
    # batch 0 and 1 step phase 0 (done after 2 steps); batch 2 finds no phase left and stops the fit
    assert len(learn.recorder.lrs) == 3 and len(learn.recorder.nb_batches) == 1


def test_reusing_an_instance_restarts_only_phase_0_as_in_v1(learn):
    sched = GeneralScheduler(learn, two_phases())
    learn.fit(2, 1e-3, callbacks=[sched])
    learn.fit(1, 1e-3, callbacks=[sched])
    lrs = learn.recorder.lrs
    assert lrs[3] == pytest.approx(1e-2)
    assert len(lrs) == 4  # phase 2 was exhausted: after phase 0's 3 steps its next step ends everything
    assert learn.opt.lr == pytest.approx(1e-2 * (1 - 6 / 5))  # one step past phase 2's end


def test_start_epoch_is_returned_and_the_schedule_jumps(learn):
    tracer = Tracer()
    learn.fit(2, 1e-3, callbacks=[GeneralScheduler(learn, two_phases(), start_epoch=1), tracer])
    assert tracer.jumps == [1]
    lin = [1e-2 * (1 - k / 5) for k in (1, 2, 3, 4)]
    assert learn.recorder.lrs == pytest.approx(lin)  # the 4 batches of epoch 0 were replayed
