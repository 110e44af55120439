"""OneCycleScheduler: lr and momentum at every batch (worked out from the spec's formulas), resume, state."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastloop.callbacks.one_cycle import OneCycleScheduler

from ..conftest import make_learner
from ..tracing import Tracer


def cos_anneal(start: float, end: float, pct: float) -> float:
    "Spec §13: end + (start - end)/2 * (1 + cos(pi * pct))."
    return end + (start - end) / 2 * (1 + math.cos(math.pi * pct))


def expected_cycle(n: int, lr_max: float, moms=(0.95, 0.85), div=25.0, pct_start=0.3, final_div=None):
    """The lr/mom each of the `n` batches trains with, and the values set after the last batch (spec §14.1)."""
    final_div = div * 1e4 if final_div is None else final_div
    a1 = int(n * pct_start)
    a2 = n - a1
    lrs, moms_out = [lr_max / div], [moms[0]]  # set at train_begin, used by batch 0
    for k in range(1, n + 1):  # the value stepped at the end of batch k-1 is used by batch k
        if k <= a1:
            lr = cos_anneal(lr_max / div, lr_max, k / a1)
            mom = cos_anneal(moms[0], moms[1], k / a1)
        else:
            lr = cos_anneal(lr_max, lr_max / final_div, (k - a1) / a2)
            mom = cos_anneal(moms[1], moms[0], (k - a1) / a2)
        lrs.append(lr)
        moms_out.append(mom)
    return lrs[:n], moms_out[:n], lrs[n], moms_out[n]


def test_two_epoch_cycle_gives_the_spec_lr_and_momentum_at_every_batch(learn):
    """fit_one_cycle(2, 1e-2) on 4 batches/epoch: n=8, a1=int(8*0.3)=2 warm-up steps, 6 annealing steps."""
    learn.fit_one_cycle(2, 1e-2)
    rec = learn.recorder
    lrs, moms, last_lr, last_mom = expected_cycle(8, 1e-2)
    assert rec.lrs == pytest.approx(lrs, rel=1e-12)
    assert rec.moms == pytest.approx(moms, rel=1e-12)
    assert rec.lrs[0] == pytest.approx(4e-4) and max(rec.lrs) == 1e-2 == rec.lrs[2]  # exactly lr_max at the peak
    assert min(rec.moms) == 0.85 == rec.moms[2]
    # after the fit the optimizer holds the last stepped values: lr_max/final_div and moms[0]
    assert learn.opt.lr == pytest.approx(last_lr) == pytest.approx(1e-2 / 25e4)
    assert learn.opt.mom == pytest.approx(last_mom) == pytest.approx(0.95)


def test_options_pct_start_div_factor_final_div_and_moms_shape_the_cycle():
    learn = make_learner(n_train=80)  # 5 batches per epoch
    learn.fit_one_cycle(2, 5e-3, moms=(0.9, 0.8), div_factor=10.0, pct_start=0.5, final_div=100.0)
    lrs, moms, last_lr, _ = expected_cycle(10, 5e-3, moms=(0.9, 0.8), div=10.0, pct_start=0.5, final_div=100.0)
    assert learn.recorder.lrs == pytest.approx(lrs, rel=1e-12)
    assert learn.recorder.moms == pytest.approx(moms, rel=1e-12)
    assert learn.opt.lr == pytest.approx(5e-5)


def test_a_single_momentum_stays_constant():
    learn = make_learner()
    learn.fit_one_cycle(1, 1e-2, moms=0.9)
    assert set(learn.recorder.moms) == {0.9}


def test_discriminative_lrs_are_annealed_per_layer_group():
    learn = make_learner()
    learn.split(lambda m: [m[2]])
    learn.fit_one_cycle(1, slice(1e-3, 1e-2))  # lr_range: [1e-3, 1e-2]
    lrs_last, _, last, _ = expected_cycle(4, 1e-2)
    lrs_first, _, first, _ = expected_cycle(4, 1e-3)
    assert learn.recorder.lrs == pytest.approx(lrs_last)  # the Recorder records the last group
    assert learn.opt._lr == pytest.approx([first, last])
    groups = learn.opt.opt.param_groups
    assert [g["lr"] for g in groups] == pytest.approx([first, first, last, last])


def test_fastai_test_train_assertions_hold_for_a_four_epoch_cycle():
    """fastai's own test: the max lr is where the min mom is, and in each half min lr is where max mom is."""
    learn = make_learner()
    learn.fit_one_cycle(4, 3e-3)
    lrs, moms = np.array(learn.recorder.lrs), np.array(learn.recorder.moms)
    assert lrs.argmax() == moms.argmin()
    half = lrs.argmax()
    assert lrs[:half].argmin() == moms[:half].argmax()
    assert lrs[half:].argmin() == moms[half:].argmax()


def test_registers_on_the_learner_with_order_0_and_starts_the_optimizer_at_the_low_values(learn):
    sched = OneCycleScheduler(learn, 1e-2)
    assert learn.one_cycle_scheduler is sched and OneCycleScheduler._order == 0
    learn.create_opt(1e-3)
    assert sched.on_train_begin(n_epochs=2, epoch=0) is None  # no start_epoch: nothing returned
    assert learn.opt.lr == pytest.approx(4e-4) and learn.opt.mom == 0.95
    assert sched.on_batch_end(train=False) is None and learn.opt.lr == pytest.approx(4e-4)  # validation: no step


def test_start_epoch_is_returned_at_train_begin_and_the_schedule_jumps(learn):
    """start_epoch=1 of tot_epochs=2: the handler skips an epoch and jump_to_epoch replays its 4 batches."""
    tracer = Tracer()
    learn.fit_one_cycle(2, 1e-2, tot_epochs=2, start_epoch=1, callbacks=[tracer])
    assert tracer.jumps == [1]
    lrs, moms, _, _ = expected_cycle(8, 1e-2)
    assert learn.recorder.lrs == pytest.approx(lrs[4:]) and learn.recorder.moms == pytest.approx(moms[4:])
    assert [r[2] for r in tracer.records if r[0] == "epoch_begin"] == [1]


def test_stop_flags_once_all_phases_are_done_and_after_tot_epochs(learn):
    learn.create_opt(1e-3)
    sched = OneCycleScheduler(learn, 1e-2)
    sched.on_train_begin(n_epochs=1, epoch=0)
    results = [sched.on_batch_end(train=True) for _ in range(5)]  # 4 batches in the cycle
    assert results[:4] == [None] * 4
    assert results[4] == {"stop_training": True, "stop_epoch": True}
    assert sched.on_epoch_end(epoch=1) is None
    assert sched.on_epoch_end(epoch=2) == {"stop_training": True}


def test_a_second_fit_rebuilds_the_cycle_from_its_own_n_epochs(learn):
    learn.fit_one_cycle(1, 1e-2)
    learn.fit_one_cycle(2, 1e-2)
    lrs, _, _, _ = expected_cycle(8, 1e-2)
    assert learn.recorder.lrs == pytest.approx(lrs)
