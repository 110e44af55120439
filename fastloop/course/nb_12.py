"""``from fastloop.course.nb_12 import *`` gives what ``from exp.nb_12 import *`` gave (notebook 12_text).

New here: nothing new about training (the tokenizer, which needs spaCy, is not ported).
"""

# ruff: noqa: F401, F403

from . import nb_11a as _prev
from .nb_11a import *

__all__ = list(_prev.__all__)
