"""`CSVLogger`: the Recorder's table, one row per epoch, in a CSV file (fastai v1's ``callbacks.csv_logger``)."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

from .._io import atomic_write_text
from ..basic_train import Learner, LearnerCallback, format_time

__all__ = ["CSVLogger"]


def _format_stat(stat: Any) -> str:
    "The Recorder's cell format: ints as they are, None as #na#, anything else with 6 decimals."
    if isinstance(stat, int):
        return str(stat)
    return "#na#" if stat is None else f"{stat:.6f}"


class CSVLogger(LearnerCallback):
    """Write ``learn.path/{filename}.csv``: a header of the Recorder's column names, then one line per epoch
    with the values the Recorder prints (same formatting, ``time`` last).

    The file's content is fastai v1's.  How it is written is not: v1 kept the file open and appended a line
    per epoch; fastloop rewrites the whole file **atomically** (temporary file, fsync, rename) at train begin
    and after each epoch, so a crash or a full disk never leaves a half-written line and a reader always sees
    complete rows.  With ``append=True`` the rows of an existing file are kept (and no second header is
    written, as in v1).  With ``Learner(add_time=False)`` there is no time column in the rows either
    (v1 wrote it anyway, giving rows one field longer than the header).

    Events and state: ``on_train_begin`` (reads nothing; uses ``learn.recorder.names``), ``on_epoch_begin``
    (starts the timer), ``on_epoch_end`` (reads ``epoch``, ``smooth_loss``, ``last_metrics``).  Returns
    nothing.  ``_order = 0`` (v1): after the Recorder (-10), whose ``names`` are then final.
    ``ranks = 'zero'``: in distributed training only rank 0 writes the file (v1 had every rank write it).
    """

    ranks = "zero"  # see fastloop.distributed

    def __init__(self, learn: Learner, filename: str = "history", append: bool = False):
        super().__init__(learn)
        self.filename, self.path, self.append = filename, self.learn.path / f"{filename}.csv", append
        self.add_time = True
        # `path` is derived from learn.path and `filename` (and is no plain data for a checkpoint); `_text`, the
        # file's content so far, stays in the state so that a resumed fit keeps the rows written before
        self.not_min.append("path")

    def read_logged_file(self) -> Any:
        "The logged file as a `pandas.DataFrame` (as v1; needs pandas -- `read_logged_rows` does not)."
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError("CSVLogger.read_logged_file returns a pandas DataFrame, as in fastai v1: "
                              "`pip install pandas`, or use `read_logged_rows()` for a list of dicts.") from e
        return pd.read_csv(self.path)

    def read_logged_rows(self) -> list[dict[str, str]]:
        "The logged file as a list of ``{column: text}`` dicts (fastloop; no pandas needed)."
        with Path(self.path).open(newline="") as f:
            return list(csv.DictReader(f))

    def _time_column(self) -> bool:
        return self.add_time and getattr(self.learn.recorder, "add_time", True)

    def _flush(self) -> None:
        atomic_write_text(self.path, self._text)

    def on_train_begin(self, **kwargs: Any) -> None:
        "Create the folder; start the file with its header (or keep the existing rows when appending)."
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.append and self.path.exists():
            self._text = self.path.read_text()
            if self._text and not self._text.endswith("\n"):
                self._text += "\n"
            return  # as v1: no second header in an existing file
        names = list(self.learn.recorder.names)
        if names and names[-1] == "time" and not self._time_column():
            names = names[:-1]
        self._text = ",".join(names) + "\n"
        self._flush()

    def on_epoch_begin(self, **kwargs: Any) -> None:
        "Start the epoch timer."
        if self._time_column():
            self.start_epoch = time.time()

    def on_epoch_end(self, epoch: int, smooth_loss: Any, last_metrics: Any, **kwargs: Any) -> None:
        "Add this epoch's row and rewrite the file atomically."
        last_metrics = [] if last_metrics is None else last_metrics
        values = [epoch, smooth_loss] + list(last_metrics)
        stats = [_format_stat(stat) for _name, stat in zip(self.learn.recorder.names, values)]
        if self._time_column():
            stats.append(format_time(time.time() - self.start_epoch))
        self._text += ",".join(stats) + "\n"
        self._flush()
