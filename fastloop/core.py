"""Tiny helpers that fastai v1 callbacks import from ``fastai.core``.

Only what ported callbacks and the engine actually use lives here; this is not a grab-bag.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

__all__ = ["camel2snake", "ifnone", "listify", "is_listy", "is_tuple", "even_mults", "defaults", "num_cpus"]

_camel_re1 = re.compile("(.)([A-Z][a-z]+)")
_camel_re2 = re.compile("([a-z0-9])([A-Z])")


def camel2snake(name: str) -> str:
    """``'OneCycleScheduler'`` -> ``'one_cycle_scheduler'``; how a `LearnerCallback` names itself on the learner.

    Two passes, as in fastai v1: an underscore goes (1) before every capital that starts a lowercase run,
    then (2) between a lowercase letter or digit and a capital.  So ``LRFinder`` -> ``lr_finder`` and
    ``TerminateOnNaNCallback`` -> ``terminate_on_na_n_callback``.
    """
    first = _camel_re1.sub(r"\1_\2", name)
    return _camel_re2.sub(r"\1_\2", first).lower()


def ifnone(a: Any, b: Any) -> Any:
    """`a` if it is not None, else `b`."""
    return b if a is None else a


def is_listy(x: Any) -> bool:
    """True for a list or a tuple."""
    return isinstance(x, (tuple, list))


def is_tuple(x: Any) -> bool:
    """True for a tuple (fastai v1 treats only tuples as ``(start, end)`` ranges)."""
    return isinstance(x, tuple)


def listify(p: Any = None, q: Any = None) -> list:
    """Make `p` a list, as long as `q` (an int, or anything with a length).

    ``None`` -> ``[]``; a string or a non-iterable (or an iterable without ``len``, such as a 0-dim tensor)
    -> ``[p]``.  A one-element list is repeated to the wanted length; any other length mismatch is an
    ``AssertionError('List len mismatch ...')``, as in fastai v1.
    """
    if p is None:
        p = []
    elif isinstance(p, str) or not isinstance(p, Iterable):
        p = [p]
    else:
        try:
            len(p)
        except TypeError:
            p = [p]
    n = q if type(q) is int else (len(p) if q is None else len(q))
    if len(p) == 1:
        p = p * n if isinstance(p, list) else list(p) * n
    assert len(p) == n, f"List len mismatch ({len(p)} vs {n})"
    return list(p)


def even_mults(start: float, stop: float, n: int) -> Any:
    """`n` values from `start` to `stop`, evenly spaced on a log scale (``n == 1`` divides by zero, as in v1)."""
    import numpy as np

    mult = stop / start
    step = mult ** (1 / (n - 1))
    return np.array([start * (step**i) for i in range(n)])


def num_cpus() -> int:
    """Number of CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class _Defaults(SimpleNamespace):
    """fastai v1's ``defaults`` namespace; ``device`` is resolved on first read so importing stays cheap."""

    def __getattr__(self, name: str) -> Any:
        if name == "device":
            import torch

            value = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
            self.device = value
            return value
        raise AttributeError(f"defaults has no attribute {name!r}")


#: Global settings, as fastai v1's ``defaults``.  ``strict_callbacks`` is fastloop's: when True, a
#: misspelled hook name (``on_epoch_start``) is an error instead of a warning.
defaults = _Defaults(
    lr=slice(3e-3),
    wd=1e-2,
    extra_callbacks=None,
    extra_callback_fns=None,
    silent=False,
    cpus=min(16, num_cpus()),
    return_fig=False,
    strict_callbacks=False,
)
