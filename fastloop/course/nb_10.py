"""``from fastloop.course.nb_10 import *`` gives what ``from exp.nb_10 import *`` gave (notebook 10_augmentation).

New here: nothing new about training (the PIL transforms are not ported).
"""

# ruff: noqa: F401, F403

from . import nb_09c as _prev
from .nb_09c import *

__all__ = list(_prev.__all__)
