"""``from fastloop.course.nb_11a import *`` gives what ``from exp.nb_11a import *`` gave
(notebook 11a_transfer_learning).

New here: ``DebugCallback``, ``cb_types``, ``sched_1cycle``.
"""

# ruff: noqa: F401, F403

from . import nb_11 as _prev
from .callbacks import cb_types
from .nb_11 import *
from .schedules import create_phases
from .stage11 import DebugCallback, sched_1cycle

__all__ = list(dict.fromkeys([*_prev.__all__, "cb_types", "create_phases", "DebugCallback", "sched_1cycle"]))
