"""Progress bars that know their rank: fastprogress's bars on rank 0, silent stand-ins on the others.

Under ``torchrun`` every process runs the same script; with fastprogress's bars each of them would draw
its own bar and print its own metrics table.  `master_bar` and `progress_bar` here hand out fastprogress's
bars (looked up at call time, so the notebook/console choice and ``force_console_behavior`` still apply)
on rank 0 and in single-process runs, and `QuietMasterBar`/`QuietProgressBar` -- same attributes, no
output -- on the other ranks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import fastprogress.fastprogress as _fp

from .torch_core import rank_distrib

__all__ = ["QuietMasterBar", "QuietProgressBar", "master_bar", "progress_bar"]


class _Silent:
    "The progress-bar hooks fastprogress calls, doing nothing."

    def update(self, val: int) -> None:
        pass

    def on_iter_begin(self) -> None:
        pass

    def on_iter_end(self) -> None:
        pass

    def on_interrupt(self) -> None:
        pass


class QuietProgressBar(_Silent):
    "A progress bar that iterates like fastprogress's (``total`` included) and prints nothing."

    def __init__(self, gen: Iterable[Any], total: int | None = None, display: bool = True, leave: bool = True,
                 parent: Any = None, master: Any = None, comment: str = "", **kwargs: Any):
        self.gen, self.parent, self.master, self.comment = gen, parent, master, comment
        if total is None:
            try:
                total = len(gen)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.total, self.display, self.leave = total, False, leave
        if parent is not None:
            parent.add_child(self)

    def __iter__(self) -> Iterator[Any]:
        for i, o in enumerate(self.gen):
            if self.total is not None and i >= self.total:  # fit shortens main_bar.total when it resumes
                break
            yield o


class QuietMasterBar(_Silent):
    "fastprogress's master bar API (``main_bar``, ``child``, ``write``, ``update_graph``...) with no output."

    def __init__(self, gen: Iterable[Any], total: int | None = None, **kwargs: Any):
        self.main_bar = QuietProgressBar(gen, total=total, master=self)
        self.child: QuietProgressBar | None = None
        self.first_bar = True

    def __iter__(self) -> Iterator[Any]:
        yield from self.main_bar

    def add_child(self, child: Any) -> None:
        self.child = child

    def write(self, line: Any, table: bool = False) -> None:
        pass

    def update_graph(self, *args: Any, **kwargs: Any) -> None:
        pass

    def show_imgs(self, *args: Any, **kwargs: Any) -> None:
        pass


def master_bar(gen: Iterable[Any], **kwargs: Any) -> Any:
    "fastprogress's ``master_bar`` on rank 0 (and without distributed training); a `QuietMasterBar` elsewhere."
    if rank_distrib() != 0:
        return QuietMasterBar(gen, **kwargs)
    return _fp.master_bar(gen, **kwargs)


def progress_bar(gen: Iterable[Any], parent: Any = None, **kwargs: Any) -> Any:
    "fastprogress's ``progress_bar``, or a `QuietProgressBar` on ranks other than 0 and under a quiet parent."
    if rank_distrib() != 0 or isinstance(parent, QuietMasterBar):
        return QuietProgressBar(gen, parent=parent, **kwargs)
    return _fp.progress_bar(gen, parent=parent, **kwargs)
