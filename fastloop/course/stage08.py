"""What notebook 08 (data block API) changed in the names later notebooks use: `DataBunch` knows the number of
input channels and of classes (``c_in``, ``c_out``), and the Imagenette normalisation.

The data block API itself (``ItemList``, ``ImageList``, splitters, labellers, PIL transforms) reads image folders
from disk and is not part of fastloop.course.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

__all__ = ["DataBunch", "normalize_chan", "norm_imagenette", "imagenette_stats"]


class DataBunch:
    "The course's data container from 08 on: two loaders, ``c_in`` input channels and ``c_out`` classes."

    def __init__(self, train_dl: Any, valid_dl: Any, c_in: Any = None, c_out: Any = None):
        self.train_dl, self.valid_dl, self.c_in, self.c_out = train_dl, valid_dl, c_in, c_out

    @property
    def train_ds(self) -> Any:
        return self.train_dl.dataset

    @property
    def valid_ds(self) -> Any:
        return self.valid_dl.dataset


def normalize_chan(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per-channel normalisation of ``(bs, c, h, w)`` images.

    `mean`/`std` are moved to ``x``'s device here, at call time: ``exp.nb_08`` built ``norm_imagenette`` with
    ``.cuda()`` when the module was imported, so importing it (and every later module) failed without a GPU.
    """
    mean, std = mean.to(x.device), std.to(x.device)
    return (x - mean[..., None, None]) / std[..., None, None]


#: Imagenette's channel means and standard deviations (CPU tensors).
imagenette_stats = (torch.tensor([0.47, 0.48, 0.45]), torch.tensor([0.29, 0.28, 0.30]))

#: ``norm_imagenette(x)``: `normalize_chan` with Imagenette's statistics, on ``x``'s device.
norm_imagenette = partial(normalize_chan, mean=imagenette_stats[0], std=imagenette_stats[1])
