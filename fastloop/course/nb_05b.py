"""``from fastloop.course.nb_05b import *`` gives what ``from exp.nb_05b import *`` gave (notebook 05b_early_stopping).

New here: the ``Runner`` with ``Cancel*Exception``s (returns ignored); ``LR_Find`` over ``param_groups``.
"""

# ruff: noqa: F401, F403

from . import nb_05 as _prev
from .callbacks import CancelBatchException, CancelEpochException, CancelTrainException
from .nb_05 import *
from .stage05b import LR_Find, Runner

__all__ = list(
    dict.fromkeys(
        [*_prev.__all__, "CancelTrainException", "CancelEpochException", "CancelBatchException", "Runner", "LR_Find"]
    )
)
