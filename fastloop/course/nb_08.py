"""``from fastloop.course.nb_08 import *`` gives what ``from exp.nb_08 import *`` gave (notebook 08_data_block).

New here: ``DataBunch(train_dl, valid_dl, c_in, c_out)``; ``norm_imagenette`` without import-time CUDA.
"""

# ruff: noqa: F401, F403

from . import nb_07a as _prev
from .nb_07a import *
from .stage08 import DataBunch, imagenette_stats, norm_imagenette, normalize_chan

__all__ = list(dict.fromkeys([*_prev.__all__, "DataBunch", "normalize_chan", "norm_imagenette", "imagenette_stats"]))
