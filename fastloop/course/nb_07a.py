"""``from fastloop.course.nb_07a import *`` gives what ``from exp.nb_07a import *`` gave (notebook 07a_lsuv).

New here: ``get_batch(dl, run)``, the Runner flavour (fires ``begin_batch`` outside a fit).
"""

# ruff: noqa: F401, F403

from . import nb_07 as _prev
from .nb_07 import *
from .stage06 import get_batch

__all__ = list(dict.fromkeys([*_prev.__all__, "get_batch"]))
