"""``from fastloop.course.nb_04 import *`` gives what ``from exp.nb_04 import *`` gave (notebook 04_callbacks).

New here: the 04 container ``Learner(model, opt, loss_func, data)``, the 04 ``Runner`` (a callback returning True stops
the event and steers the loop), ``AvgStatsCallback`` printing its stats.
"""

# ruff: noqa: F401, F403

import math
import re
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn, optim, tensor
from torch.nn import init
from torch.utils.data import DataLoader

from .callbacks import Callback, TrainEvalCallback, camel2snake, listify
from .stage04 import (
    AvgStats,
    AvgStatsCallback,
    DataBunch,
    Dataset,
    Learner,
    Runner,
    accuracy,
    get_dls,
    get_model,
    normalize,
)

__all__ = [
    "math",
    "re",
    "time",
    "partial",
    "Path",
    "torch",
    "tensor",
    "F",
    "nn",
    "optim",
    "init",
    "DataLoader",
    "Callback",
    "TrainEvalCallback",
    "listify",
    "camel2snake",
    "Dataset",
    "get_dls",
    "DataBunch",
    "Learner",
    "Runner",
    "AvgStats",
    "AvgStatsCallback",
    "accuracy",
    "normalize",
    "get_model",
]
