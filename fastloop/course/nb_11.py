"""``from fastloop.course.nb_11 import *`` gives what ``from exp.nb_11 import *`` gave (notebook 11_train_imagenette).

New here: ``get_batch(dl, learn)``, the Learner flavour.
"""

# ruff: noqa: F401, F403

from . import nb_10c as _prev
from .nb_10c import *
from .stage11 import get_batch

__all__ = list(dict.fromkeys([*_prev.__all__, "get_batch"]))
