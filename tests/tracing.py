"""A tracer callback for the event-trace tests, and the canonical traces written from the spec (§5.4)."""

from __future__ import annotations

from typing import Any

from fastloop.callback import Callback

EVENTS = ("train_begin", "epoch_begin", "batch_begin", "loss_begin", "backward_begin", "backward_end",
          "step_end", "batch_end", "epoch_end", "train_end")


class Tracer(Callback):
    """Records, at every event: (event, train flag, epoch, iteration, num_batch) and the sorted kwargs keys.

    Optional `actions` maps ``(event, n)`` -- the n-th time (0-based) the tracer sees `event` -- to a dict that
    the tracer returns there, so tests can set flags at precise points.
    """

    def __init__(self, order: int = 0, actions: dict | None = None, name: str = "tracer"):
        self._order, self.actions, self.name = order, actions or {}, name
        self.records: list[tuple] = []
        self.keys: list[tuple[str, tuple[str, ...]]] = []
        self.seen: dict[str, int] = {}
        self.kwargs: list[tuple[str, dict]] = []
        self.jumps: list[int] = []

    def _record(self, event: str, kwargs: dict[str, Any]) -> Any:
        n = self.seen.get(event, 0)
        self.seen[event] = n + 1
        self.records.append((event, kwargs.get("train"), kwargs["epoch"], kwargs["iteration"], kwargs["num_batch"]))
        self.keys.append((event, tuple(sorted(kwargs))))
        self.kwargs.append((event, dict(kwargs)))
        return self.actions.get((event, n))

    def jump_to_epoch(self, epoch: int) -> None:
        self.jumps.append(epoch)

    def events(self) -> list[str]:
        return [r[0] for r in self.records]


def _make_hook(event: str):
    def hook(self: Tracer, **kwargs: Any) -> Any:
        return self._record(event, kwargs)

    hook.__name__ = f"on_{event}"
    return hook


for _e in EVENTS:
    setattr(Tracer, f"on_{_e}", _make_hook(_e))


def canonical_fit(n_epochs: int, n_train: int, n_valid: int, validate: bool = True, metric: bool = False) -> list[str]:
    """The event sequence of spec §5.4 as seen by a callback (`metric=False`) or by a metric (`metric=True`)."""
    seq = ["train_begin"]
    for _ in range(n_epochs):
        seq.append("epoch_begin")
        if not metric:
            seq += ["batch_begin", "loss_begin", "backward_begin", "backward_end", "step_end", "batch_end"] * n_train
        if validate:
            seq += (["batch_begin", "batch_end"] if metric else ["batch_begin", "loss_begin", "batch_end"]) * n_valid
        if validate or not metric:
            seq.append("epoch_end")
    seq.append("train_end")
    return seq


def table_lines(out: str) -> list[str]:
    """The lines a console shows once the progress bars' carriage returns are applied (the Recorder's table)."""
    lines = [line.split("\r")[-1].rstrip() for line in out.split("\n")]
    return [line for line in lines if line]
