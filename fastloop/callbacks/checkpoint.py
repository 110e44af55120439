"""`CheckpointCallback`: resumable checkpoints every N training batches and/or every epoch, keeping the last K.

A checkpoint written here resumes bit for bit (on the CPU) with ``learn.fit(..., resume_from=name)``: see
`fastloop._checkpoint` for what a checkpoint holds and the callback-state protocol, and ``docs/reliability.md``
for the guarantee and its scope.  The helpers `latest_checkpoint`, `CheckpointError` and
`CheckpointMismatchError` are re-exported here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .._checkpoint import CheckpointError, CheckpointMismatchError, checkpoint_path, current_run, save_checkpoint
from ..basic_train import Learner, LearnerCallback

__all__ = ["CheckpointCallback", "latest_checkpoint", "CheckpointError", "CheckpointMismatchError"]


class CheckpointCallback(LearnerCallback):
    """Write ``{name}_{n:06d}.pth`` (n = 1, 2, ...) in ``learn.path/learn.model_dir`` every `every_n_batches`
    training batches and/or after every epoch (`every_epoch`), deleting older ones beyond the last `keep`.

    With `save_on_interrupt`, a Ctrl-C during the fit stops it at the end of the running batch and writes
    ``{name}_interrupt.pth`` (after ``on_train_end``, before the KeyboardInterrupt propagates).

    Events: ``on_train_begin`` (registers the interrupt checkpoint), ``on_batch_end`` (reads ``train``,
    ``iteration``), ``on_epoch_end``.  Returns nothing.  It only *requests* checkpoints: each is written at the
    safe point that follows (after every callback's ``on_batch_end`` and the counters, or after the epoch), so
    its ``_order`` (0) does not matter.  Its own state (how many it wrote, which files it keeps) is part of each
    checkpoint, so a resumed fit goes on numbering and rotating where the interrupted one was.
    """

    def __init__(self, learn: Learner, name: str = "checkpoint", every_n_batches: int | None = None,
                 every_epoch: bool = True, keep: int | None = 3, save_on_interrupt: bool = False):
        super().__init__(learn)
        if every_n_batches is not None and every_n_batches < 1:
            raise ValueError(f"every_n_batches must be a positive number of batches, not {every_n_batches!r}")
        if keep is not None and keep < 1:
            raise ValueError(f"keep must be at least 1 (or None to keep every checkpoint), not {keep!r}")
        self.name, self.every_n_batches, self.every_epoch = name, every_n_batches, every_epoch
        self.keep, self.save_on_interrupt = keep, save_on_interrupt
        self.n_written, self.kept = 0, []

    def on_train_begin(self, **kwargs: Any) -> None:
        "Register the interrupt checkpoint with the running fit."
        run = current_run(self.learn)
        if self.save_on_interrupt and run is not None:
            run.save_on_interrupt(f"{self.name}_interrupt")

    def on_batch_end(self, train: bool, iteration: int, **kwargs: Any) -> None:
        "Every `every_n_batches` training batches (counted over the fit), request a checkpoint."
        if train and self.every_n_batches and (iteration + 1) % self.every_n_batches == 0:
            self._request()

    def on_epoch_end(self, **kwargs: Any) -> None:
        "After every epoch (with `every_epoch`), request a checkpoint."
        if self.every_epoch:
            self._request()

    def _request(self) -> None:
        self.n_written += 1
        name = f"{self.name}_{self.n_written:06d}"
        self.kept.append(name)
        dropped = []
        if self.keep is not None and len(self.kept) > self.keep:
            dropped, self.kept = self.kept[:-self.keep], self.kept[-self.keep:]
        paths = [checkpoint_path(self.learn, n) for n in dropped]

        def delete_old() -> None:  # only once the new file is safely written
            for p in paths:
                p.unlink(missing_ok=True)

        save_checkpoint(self.learn, name, on_written=delete_old)


_NUMBERED = re.compile(r"^(?P<name>.+)_(?P<n>\d{6})\.pth$")


def latest_checkpoint(learn: Learner, name: str = "checkpoint") -> str | None:
    """The newest ``{name}_{n:06d}`` checkpoint that a `CheckpointCallback` named `name` wrote for `learn` (a name
    to pass as ``resume_from``), or None if there is none."""
    folder = Path(learn.path) / learn.model_dir
    if not folder.is_dir():
        return None
    found = []
    for p in folder.iterdir():
        m = _NUMBERED.match(p.name)
        if m and m.group("name") == name:
            found.append((int(m.group("n")), p.stem))
    return max(found)[1] if found else None
