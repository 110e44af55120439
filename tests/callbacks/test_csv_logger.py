"""CSVLogger: the file holds the Recorder's table (fastai's own test), is rewritten atomically, appends."""

from __future__ import annotations

import os
import sys

import pytest

import fastloop._io as fio
from fastloop.callback import Callback
from fastloop.callbacks.csv_logger import CSVLogger
from fastloop.callbacks.misc import StopAfterNBatches
from fastloop.metrics import accuracy, error_rate

from ..conftest import make_learner
from ..tracing import table_lines


def test_file_equals_the_printed_table_and_the_recorder(tmp_path, capsys):
    """fastai's test_callbacks_csv_logger: CSV rows == stdout rows; == the Recorder's values without time."""
    learn = make_learner(tmp_path, metrics=[accuracy, error_rate], callback_fns=[CSVLogger])
    learn.fit_one_cycle(3)
    printed = [line.split() for line in table_lines(capsys.readouterr().out)]
    lines = (tmp_path / "history.csv").read_text().splitlines()
    assert [line.split(",") for line in lines] == printed  # header and rows, time column included
    rec = learn.recorder
    assert lines[0] == ",".join(rec.names) == "epoch,train_loss,valid_loss,accuracy,error_rate,time"
    for epoch, line in enumerate(lines[1:]):
        cells = line.split(",")
        assert cells[0] == str(epoch)
        assert cells[1] == f"{float(rec.losses[4 * epoch + 3]):.6f}"  # the epoch's last smooth loss
        assert cells[2] == f"{rec.val_losses[epoch]:.6f}"
        assert cells[3:5] == [f"{float(m):.6f}" for m in rec.metrics[epoch]]
    assert learn.csv_logger.read_logged_rows()[2]["epoch"] == "2"


def test_each_row_is_on_disk_when_its_epoch_ends(tmp_path):
    class Reader(Callback):
        _order = 5  # after CSVLogger's on_epoch_end

        def __init__(self):
            self.seen = []

        def on_epoch_end(self, **kwargs):
            self.seen.append(len((tmp_path / "history.csv").read_text().splitlines()))

    learn = make_learner(tmp_path)
    reader = Reader()
    learn.fit(3, 1e-3, callbacks=[CSVLogger(learn), reader])
    assert reader.seen == [2, 3, 4]


def test_a_crash_while_writing_leaves_the_previous_complete_file(tmp_path, monkeypatch):
    learn = make_learner(tmp_path)
    learn.fit(1, 1e-3, callbacks=[CSVLogger(learn)])
    before = (tmp_path / "history.csv").read_text()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(fio.os, "replace", crash)
    logger = CSVLogger(learn, append=True)
    logger.on_train_begin()
    logger.on_epoch_begin()
    with pytest.raises(OSError):
        logger.on_epoch_end(epoch=1, smooth_loss=0.5, last_metrics=[0.25])
    assert (tmp_path / "history.csv").read_text() == before
    assert sorted(os.listdir(tmp_path)) == ["history.csv"]  # no temporary file left


def test_append_keeps_old_rows_without_a_second_header(tmp_path):
    learn = make_learner(tmp_path)
    learn.fit(1, 1e-3, callbacks=[CSVLogger(learn, "log")])
    learn.fit(2, 1e-3, callbacks=[CSVLogger(learn, "log", append=True)])
    lines = (tmp_path / "log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines] == ["epoch", "0", "0", "1"]
    learn.fit(1, 1e-3, callbacks=[CSVLogger(learn, "log")])  # append=False starts over
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 2


def test_skipped_validation_is_na_and_the_folder_is_created(tmp_path):
    learn = make_learner(tmp_path)
    learn.fit(1, 1e-3, callbacks=[CSVLogger(learn, "sub/dir/h"), StopAfterNBatches(2)])
    header, row = (tmp_path / "sub" / "dir" / "h.csv").read_text().splitlines()
    assert header == "epoch,train_loss,valid_loss,time"
    assert row.split(",")[2] == "#na#" and len(row.split(",")) == 4


def test_without_a_time_column_the_rows_match_the_header(tmp_path):
    """v1 wrote a time cell in every row even when the header had none (add_time=False)."""
    learn = make_learner(tmp_path, add_time=False)
    learn.fit(1, 1e-3, callbacks=[CSVLogger(learn)])
    header, row = (tmp_path / "history.csv").read_text().splitlines()
    assert header == "epoch,train_loss,valid_loss" and len(row.split(",")) == 3


def test_read_logged_file_needs_pandas_and_says_so(tmp_path, monkeypatch):
    learn = make_learner(tmp_path)
    logger = CSVLogger(learn)
    learn.fit(1, 1e-3, callbacks=[logger])
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="read_logged_rows"):
        logger.read_logged_file()


def test_read_logged_file_is_a_dataframe_when_pandas_is_installed(tmp_path):
    pd = pytest.importorskip("pandas")
    learn = make_learner(tmp_path)
    logger = CSVLogger(learn)
    learn.fit(2, 1e-3, callbacks=[logger])
    df = logger.read_logged_file()
    assert isinstance(df, pd.DataFrame) and list(df.columns) == learn.recorder.names and len(df) == 2


def test_a_resumed_fit_keeps_the_rows_written_before_the_checkpoint(tmp_path):
    """The file's content is part of the callback's state, so resume_from= continues the same file."""
    from fastloop.callbacks.checkpoint import CheckpointCallback

    interrupt = [True]

    class Interrupt(Callback):
        def on_epoch_begin(self, epoch, **kwargs):
            if interrupt[0] and epoch == 2:
                raise KeyboardInterrupt

    learn = make_learner(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        learn.fit(4, 1e-3, callbacks=[CSVLogger(learn), CheckpointCallback(learn), Interrupt()])
    interrupt[0] = False
    learn = make_learner(tmp_path)
    learn.fit(4, 1e-3, callbacks=[CSVLogger(learn), CheckpointCallback(learn), Interrupt()],
              resume_from="checkpoint_000002")
    lines = (tmp_path / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines] == ["epoch", "0", "1", "2", "3"]
