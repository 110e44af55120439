"""``from fastloop.course.nb_09b import *`` gives what ``from exp.nb_09b import *`` gave (notebook 09b_learner).

New here: the 09b ``Learner`` (it trains; ``fit(epochs, cbs)``), ``AvgStatsCallback`` writing through ``learn.logger``.
"""

# ruff: noqa: F401, F403

from . import nb_09 as _prev
from .callbacks import ALL_CBS
from .nb_09 import *
from .stage09b import AvgStatsCallback, Learner, get_learner, param_getter

__all__ = list(dict.fromkeys([*_prev.__all__, "ALL_CBS", "Learner", "param_getter", "get_learner", "AvgStatsCallback"]))
