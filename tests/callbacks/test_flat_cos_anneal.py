"""FlatCosAnnealScheduler: a flat lr, then an annealing to 0, and fit_fc (spec §10.4)."""

from __future__ import annotations

import math

import pytest

from fastloop.callbacks.flat_cos_anneal import FlatCosAnnealScheduler
from fastloop.callbacks.general_sched import GeneralScheduler

from ..conftest import make_learner


def test_flat_then_cosine_to_zero_with_the_two_momentums(learn):
    """2 epochs x 4 batches, start_pct 0.72: int(8*0.72)=5 flat batches, then 3 cosine steps to 0."""
    sched = FlatCosAnnealScheduler(learn, 1e-2, tot_epochs=2, moms=(0.95, 0.85))
    assert isinstance(sched, GeneralScheduler)
    learn.fit(2, 1e-2, callbacks=[sched])
    cos = [1e-2 / 2 * (1 + math.cos(math.pi * k / 3)) for k in (1, 2)]
    assert learn.recorder.lrs == pytest.approx([1e-2] * 6 + cos)
    assert learn.recorder.moms == pytest.approx([0.95] * 6 + [0.85] * 2)
    assert learn.opt.lr == pytest.approx(0.0, abs=1e-18)


@pytest.mark.parametrize("curve, last", [("linear", 1e-2 / 2), ("exponential", 0.0)])
def test_linear_and_exponential_curves(curve, last):
    learn = make_learner(n_train=80)  # 5 batches: 3 flat, 2 annealing steps
    learn.fit(1, 1e-2, callbacks=[FlatCosAnnealScheduler(learn, 1e-2, curve=curve)])
    assert learn.recorder.lrs == pytest.approx([1e-2] * 4 + [last])


def test_an_unknown_curve_is_a_clear_value_error(learn):
    with pytest.raises(ValueError, match="curve must be one of"):
        FlatCosAnnealScheduler(learn, curve="bogus")  # v1 raised NameError (a typo in v1)


def test_fit_fc_uses_the_schedule_and_accepts_v1s_default_slice_lr(learn):
    learn.fit_fc(2, 1e-2)
    assert learn.recorder.lrs[:6] == [1e-2] * 6 and learn.recorder.moms[-1] == 0.85
    learn2 = make_learner()
    learn2.fit_fc()  # lr=slice(3e-3): v1 crashed at the first step (float * slice)
    assert learn2.recorder.lrs[:2] == pytest.approx([3e-3, 3e-3])
