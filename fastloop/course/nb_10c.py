"""``from fastloop.course.nb_10c import *`` gives what ``from exp.nb_10c import *`` gave (notebook 10c_fp16).

New here: ``MixedPrecision`` (on ``torch.amp``; no apex needed to import it).
"""

# ruff: noqa: F401, F403

from . import nb_10b as _prev
from .nb_10b import *
from .stage10c import MixedPrecision

__all__ = list(dict.fromkeys([*_prev.__all__, "MixedPrecision"]))
