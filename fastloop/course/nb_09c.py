"""``from fastloop.course.nb_09c import *`` gives what ``from exp.nb_09c import *`` gave
(notebook 09c_add_progress_bar).

New here: ``ProgressCallback`` and the ``AvgStatsCallback`` with a header and timed rows.
"""

# ruff: noqa: F401, F403

from . import nb_09b as _prev
from .nb_09b import *
from .stage09c import AvgStatsCallback, ProgressCallback, format_time

__all__ = list(dict.fromkeys([*_prev.__all__, "AvgStatsCallback", "ProgressCallback", "format_time"]))
