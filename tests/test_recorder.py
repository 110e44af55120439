"""Recorder: what it records, the printed table (format and values) and its plots."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from fastloop.basic_train import format_time  # noqa: E402
from fastloop.callback import Callback  # noqa: E402

from .conftest import make_learner  # noqa: E402
from .tracing import Tracer, table_lines  # noqa: E402


def test_recorder_records_one_lr_mom_and_smooth_loss_per_training_batch_and_one_row_per_epoch(learn):
    tracer = Tracer()
    learn.fit(2, 1e-2, callbacks=[tracer])
    rec = learn.recorder
    assert len(rec.lrs) == len(rec.moms) == len(rec.losses) == 8
    assert rec.nb_batches == [4, 4]
    smooth = [kw["smooth_loss"] for e, kw in tracer.kwargs if e == "backward_begin"]
    assert all(torch.equal(a, b) for a, b in zip(rec.losses, smooth))
    assert all(isinstance(v, np.float32) for v in rec.val_losses) and len(rec.val_losses) == 2
    assert rec.metrics == []


def test_train_loss_column_is_smooth_loss_at_epoch_end_and_rows_use_v1_formatting(learn, capsys):
    def acc(out, targ):
        return (out.argmax(-1) == targ).float().mean()

    learn.metrics = [acc]
    learn.fit(2, 1e-2)
    header, *rows = table_lines(capsys.readouterr().out)
    assert header == "epoch     train_loss  valid_loss  acc       time"
    rec = learn.recorder
    for epoch, row in enumerate(rows):
        cells = row.split()
        assert cells[0] == str(epoch)
        assert cells[1] == f"{rec.losses[4 * epoch + 3]:.6f}"  # smooth_loss of the epoch's last batch
        assert cells[2] == f"{rec.val_losses[epoch]:.6f}"
        assert cells[3] == f"{rec.metrics[epoch][0]:.6f}"
        assert cells[4] == "00:00"
        # each value is followed by 2 + len(name) - len(value) spaces (fastprogress's console table)
        assert row.startswith(f"{epoch}" + " " * (2 + 8 - 1) + cells[1] + " " * (2 + 10 - 8))


def test_silent_recorder_prints_nothing_but_still_records():
    learn = make_learner(silent=True)
    import io
    import sys

    out = io.StringIO()
    old, sys.stdout = sys.stdout, out
    try:
        learn.fit(1, 1e-2)
    finally:
        sys.stdout = old
    assert "train_loss" not in out.getvalue() and len(learn.recorder.losses) == 4


def test_add_time_false_drops_the_time_column(capsys):
    learn = make_learner(add_time=False)
    learn.fit(1, 1e-2)
    header, row = table_lines(capsys.readouterr().out)
    assert header.split() == ["epoch", "train_loss", "valid_loss"] and len(row.split()) == 3


def test_no_val_removes_the_valid_loss_column(capsys):
    learn = make_learner()

    class NoVal(Callback):
        _order = -20

        def on_train_begin(self, **kwargs):
            learn.recorder.no_val = True
            return {"skip_validate": True}

    learn.fit(1, 1e-2, callbacks=[NoVal()])
    header, row = table_lines(capsys.readouterr().out)
    assert header.split() == ["epoch", "train_loss", "time"]


def test_format_time_uses_minutes_then_hours():
    assert format_time(5.9) == "00:05" and format_time(125) == "02:05" and format_time(3725) == "1:02:05"


def test_plots_return_figures_and_suggestion_sets_min_grad_lr(learn, capsys):
    learn.metrics = [lambda out, targ: (out.argmax(-1) == targ).float().mean()]
    learn.metrics[0].__name__ = "acc"
    learn.fit(3, 1e-2)
    rec = learn.recorder
    for fig in (rec.plot_lr(return_fig=True), rec.plot_lr(show_moms=True, return_fig=True),
                rec.plot_losses(return_fig=True), rec.plot_metrics(return_fig=True)):
        assert fig is not None and fig.axes
    rec.lrs = list(np.logspace(-5, -1, 12))
    fig = rec.plot(skip_start=0, skip_end=0, suggestion=True, return_fig=True)
    assert rec.min_grad_lr in rec.lrs and "Min numerical gradient" in capsys.readouterr().out
    assert fig.axes[0].get_xscale() == "log"


def test_plot_metrics_without_metrics_fails_clearly(learn):
    learn.fit(1, 1e-2)
    with pytest.raises(AssertionError, match="no metrics"):
        learn.recorder.plot_metrics()


def test_progress_bars_show_training_and_validation_under_the_epoch_bar(learn, capsys, monkeypatch):
    import fastprogress.fastprogress as fp

    monkeypatch.setattr(fp, "printing", lambda: True)  # as on a terminal (fastprogress 0.2 checks isatty)
    learn.fit(2, 1e-2)
    out = capsys.readouterr().out
    for epoch in (1, 2):
        assert f"Epoch {epoch}/2 :" in out
    assert "[4/4 " in out and "[2/2 " in out  # 4 training batches, then 2 validation batches


def test_no_bar_hides_the_progress_bars_and_keeps_the_table(learn, capsys, monkeypatch):
    import fastprogress.fastprogress as fp

    monkeypatch.setattr(fp, "NO_BAR", True)
    learn.fit(1, 1e-2)
    out = capsys.readouterr().out
    assert "Epoch 1/1" not in out and "[4/4" not in out
    assert [line.split()[0] for line in table_lines(out) if line.strip("█")] == ["epoch", "0"]
