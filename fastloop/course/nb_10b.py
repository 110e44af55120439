"""``from fastloop.course.nb_10b import *`` gives what ``from exp.nb_10b import *`` gave
(notebook 10b_mixup_label_smoothing).

New here: ``MixUp`` and ``LabelSmoothingCrossEntropy``.
"""

# ruff: noqa: F401, F403

from . import nb_10 as _prev
from .nb_10 import *
from .stage10b import LabelSmoothingCrossEntropy, MixUp, NoneReduce, lin_comb, reduce_loss, unsqueeze

__all__ = list(
    dict.fromkeys(
        [*_prev.__all__, "NoneReduce", "unsqueeze", "reduce_loss", "lin_comb", "MixUp", "LabelSmoothingCrossEntropy"]
    )
)
