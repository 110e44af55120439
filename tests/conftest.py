"""Shared fixtures: tiny deterministic data and learners, all on the CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fastloop.basic_data import DataBunch
from fastloop.basic_train import Learner


def make_data(n_train: int = 64, n_valid: int = 32, bs: int = 16, n_in: int = 4, seed: int = 0) -> DataBunch:
    """A linearly separable two-class problem: `n_train`/`n_valid` items, CPU, no worker processes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_valid, n_in, generator=g)
    y = (x.sum(1) > 0).long()
    train = TensorDataset(x[:n_train], y[:n_train])
    valid = TensorDataset(x[n_train:], y[n_train:])
    return DataBunch.create(train, valid, bs=bs, num_workers=0, device="cpu")


def make_model(n_in: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, 8), nn.ReLU(), nn.Linear(8, 2))


def make_learner(tmp_path=None, **kwargs) -> Learner:
    data_kw = {k: kwargs.pop(k) for k in ("n_train", "n_valid", "bs") if k in kwargs}
    data = make_data(**data_kw)
    kwargs.setdefault("loss_func", nn.CrossEntropyLoss())
    if tmp_path is not None:
        kwargs.setdefault("path", tmp_path)
    return Learner(data, make_model(), **kwargs)


@pytest.fixture
def learn(tmp_path) -> Learner:
    """A 2-class learner: 64 training items in 4 batches of 16, 32 validation items in 2 batches."""
    return make_learner(tmp_path)
