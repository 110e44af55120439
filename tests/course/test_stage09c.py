"""ProgressCallback with the 09c AvgStatsCallback (spec §6: 2 and 7)."""

from __future__ import annotations

import re

import torch.nn.functional as F

from fastloop.course.stage04 import accuracy
from fastloop.course.stage09b import Learner
from fastloop.course.stage09c import AvgStatsCallback, ProgressCallback

from .helpers import make_data, make_model


def test_progress_replaces_the_logger_and_the_header_row_is_printed(capsys):
    learn = Learner(make_model(), make_data(), F.cross_entropy, cb_funcs=[lambda: AvgStatsCallback([accuracy]),
                                                                         ProgressCallback])
    assert learn.logger is print
    learn.fit(2)
    assert learn.logger is not print and learn.logger.func == learn.progress.mbar.write  # never restored
    out = capsys.readouterr().out
    assert "epoch     train_loss  train_accuracy  valid_loss  valid_accuracy  time" in out
    # in console mode a row follows the bar's text on the same line: pick the rows out by their shape
    rows = re.findall(r"(\d+) +(\d+\.\d{6}) +(\d+\.\d{6}) +(\d+\.\d{6}) +(\d+\.\d{6}) +(\d\d:\d\d)", out)
    assert [r[0] for r in rows] == ["0", "1"]
    valid_loss = learn.avg_stats.valid_stats.avg_stats[0]
    assert rows[1][3] == f"{valid_loss:.6f}" and rows[1][5] == "00:00"


def test_avg_stats_09c_with_print_logger(capsys):
    learn = Learner(make_model(), make_data(), F.cross_entropy, cb_funcs=[lambda: AvgStatsCallback([accuracy])])
    learn.fit(1)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "['epoch', 'train_loss', 'train_accuracy', 'valid_loss', 'valid_accuracy', 'time']"
    assert out[1].startswith("['0', ")
