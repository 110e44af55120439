"""``from fastloop.course.nb_07 import *`` gives what ``from exp.nb_07 import *`` gave (notebook 07_batchnorm).

New here: ``conv_layer`` with batchnorm (used by ``get_learn_run``).
"""

# ruff: noqa: F401, F403

from . import nb_06 as _prev
from .nb_06 import *
from .stage06 import conv_layer

__all__ = list(dict.fromkeys([*_prev.__all__, "conv_layer"]))
