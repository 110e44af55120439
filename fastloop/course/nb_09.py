"""``from fastloop.course.nb_09 import *`` gives what ``from exp.nb_09 import *`` gave (notebook 09_optimizers).

New here: the course ``Optimizer`` family; ``Recorder``, ``ParamScheduler`` and ``LR_Find`` over ``opt.hypers``.
"""

# ruff: noqa: F401, F403

from . import nb_08 as _prev
from .nb_08 import *
from .optim import (
    AverageGrad,
    AverageSqrGrad,
    HyperView,
    Optimizer,
    Stat,
    StatefulOptimizer,
    StepCount,
    adam_opt,
    adam_step,
    add_hypers,
    compose,
    debias,
    get_defaults,
    l2_reg,
    lamb,
    lamb_step,
    maybe_update,
    momentum_step,
    sgd_mom_opt,
    sgd_opt,
    sgd_step,
    weight_decay,
)
from .stage09 import LR_Find, ParamScheduler, Recorder

__all__ = list(
    dict.fromkeys(
        [
            *_prev.__all__,
            "Optimizer",
            "StatefulOptimizer",
            "Stat",
            "AverageGrad",
            "AverageSqrGrad",
            "StepCount",
            "sgd_step",
            "weight_decay",
            "l2_reg",
            "momentum_step",
            "adam_step",
            "debias",
            "lamb_step",
            "sgd_opt",
            "sgd_mom_opt",
            "adam_opt",
            "lamb",
            "compose",
            "maybe_update",
            "get_defaults",
            "HyperView",
            "add_hypers",
            "Recorder",
            "ParamScheduler",
            "LR_Find",
        ]
    )
)
