"""StopAfterNBatches: fastai's test_callbacks_misc, through defaults.extra_callbacks and learn.callbacks."""

from __future__ import annotations

import pytest

from fastloop.callbacks.misc import StopAfterNBatches
from fastloop.core import defaults

from ..conftest import make_learner
from .v1_scenarios_a import console_lines


def check_stopped_after_two(learn, out):
    header, *rows = console_lines(out)  # fastprogress 1.0 leaves cut-short bars before the row: strip them
    assert "train_loss" in header and "valid_loss" in header
    assert len(rows) == 1 and rows[0].split()[0] == "0" and rows[0].split()[2] == "#na#"
    assert len(learn.recorder.losses) == 2


def test_stop_after_two_batches_through_extra_callbacks(capsys, monkeypatch):
    monkeypatch.setattr(defaults, "extra_callbacks", [StopAfterNBatches(2)])
    learn = make_learner()
    learn.fit_one_cycle(3)
    check_stopped_after_two(learn, capsys.readouterr().out)


def test_stop_after_two_batches_through_learn_callbacks(capsys):
    learn = make_learner()
    learn.callbacks.append(StopAfterNBatches(2))
    learn.fit_one_cycle(3)
    check_stopped_after_two(learn, capsys.readouterr().out)


@pytest.mark.parametrize("n", [1, 3])
def test_the_flags_come_at_the_nth_training_batch(n):
    cb = StopAfterNBatches(n)
    flags = {"stop_epoch": True, "stop_training": True, "skip_validate": True}
    assert [cb.on_batch_end(iteration=i) for i in range(4)] == [flags if i == n - 1 else None for i in range(4)]
