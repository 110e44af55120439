"""`FlatCosAnnealScheduler`: a flat lr, then an annealing to 0 (fastai v1's ``fit_fc`` schedule)."""

from __future__ import annotations

from typing import Any

from ..basic_train import Learner
from ..callback import annealing_cos, annealing_exp, annealing_linear
from ..core import listify
from .general_sched import GeneralScheduler, TrainingPhase

__all__ = ["FlatCosAnnealScheduler"]

_CURVES = {"cosine": annealing_cos, "linear": annealing_linear, "exponential": annealing_exp}


def FlatCosAnnealScheduler(learn: Learner, lr: Any = 4e-3, tot_epochs: int = 1, moms: Any = (0.95, 0.999),  # noqa: N802
                           start_pct: float = 0.72, curve: str = "cosine") -> GeneralScheduler:
    """A `GeneralScheduler` of two phases over ``n = len(train_dl) * tot_epochs`` batches.

    Phase 1, ``int(n * start_pct)`` batches: lr constant at `lr`, momentum ``moms[0]``.  Phase 2, the rest:
    lr annealed from `lr` to 0 along `curve` (``'cosine'``, ``'linear'`` or ``'exponential'``; the last
    reaches 0 at its first step, as in v1), momentum ``moms[1]``.  A function named like a class, as in v1.
    """
    if curve not in _CURVES:
        raise ValueError(f"FlatCosAnnealScheduler: curve must be one of {list(_CURVES)}, not {curve!r}.")
    moms = listify(moms, 2)
    n = len(learn.data.train_dl)
    anneal_start = int(n * tot_epochs * start_pct)
    batch_finish = n * tot_epochs - anneal_start
    phases = [TrainingPhase(anneal_start).schedule_hp("lr", lr).schedule_hp("mom", moms[0]),
              TrainingPhase(batch_finish).schedule_hp("lr", lr, anneal=_CURVES[curve]).schedule_hp("mom", moms[1])]
    return GeneralScheduler(learn, phases)
