"""Small debugging callbacks (fastai v1's ``callbacks.misc``)."""

from __future__ import annotations

from typing import Any

from ..callback import Callback

__all__ = ["StopAfterNBatches"]


class StopAfterNBatches(Callback):
    """Stop the fit after `n_batches` training batches: a quick way to check that a script runs end to end.

    Event: ``on_batch_end`` reads ``iteration``; at the `n_batches`-th training batch it returns
    ``{'stop_epoch': True, 'stop_training': True, 'skip_validate': True}`` (no validation runs, so the
    Recorder's row shows ``#na#``).  ``_order = 0`` (v1): it only sets flags.  ``_sync_free = True``: it reads no
    loss (fastloop/_sync_free.py).
    """

    _sync_free = True

    def __init__(self, n_batches: int = 2):
        self.stop, self.n_batches = False, n_batches - 1  # `iteration` counts from 0

    def on_batch_end(self, iteration: int, **kwargs: Any) -> dict | None:
        "Stop at the `n_batches`-th training batch."
        if iteration == self.n_batches:
            return {"stop_epoch": True, "stop_training": True, "skip_validate": True}
        return None
