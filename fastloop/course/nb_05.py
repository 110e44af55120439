"""``from fastloop.course.nb_05 import *`` gives what ``from exp.nb_05 import *`` gave (notebook 05_anneal).

New here: the schedules; ``Recorder`` and ``ParamScheduler`` over torch ``param_groups`` (one value per group).
"""

# ruff: noqa: F401, F403

from . import nb_04 as _prev
from .nb_04 import *
from .schedules import annealer, combine_scheds, cos_1cycle_anneal, sched_cos, sched_exp, sched_lin, sched_no
from .stage04 import get_model_func
from .stage05 import ParamScheduler, Recorder

__all__ = list(
    dict.fromkeys(
        [
            *_prev.__all__,
            "annealer",
            "sched_lin",
            "sched_cos",
            "sched_no",
            "sched_exp",
            "cos_1cycle_anneal",
            "combine_scheds",
            "get_model_func",
            "Recorder",
            "ParamScheduler",
        ]
    )
)
