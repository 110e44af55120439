"""``from fastloop.course.nb_12a import *`` gives what ``from exp.nb_12a import *`` gave (notebook 12a_awd_lstm).

New here: ``GradientClipping`` and ``RNNTrainer``.
"""

# ruff: noqa: F401, F403

from . import nb_12 as _prev
from .nb_12 import *
from .stage12a import GradientClipping, RNNTrainer

__all__ = list(dict.fromkeys([*_prev.__all__, "GradientClipping", "RNNTrainer"]))
