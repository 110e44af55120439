"""LossMetrics: the loss's published parts become columns, averaged over validation batches by size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastloop.callbacks.loss_metrics import LossMetrics

from ..conftest import make_learner
from ..tracing import table_lines


class PartsLoss(nn.Module):
    def __init__(self):
        super().__init__()
        self.metric_names = ["double", "sq"]

    def forward(self, out, y):
        loss = nn.functional.cross_entropy(out, y)
        self.metrics = {"double": 2 * loss, "sq": loss * loss}
        return loss


def test_columns_are_added_before_the_recorder_prints_and_hold_weighted_means(tmp_path, capsys):
    learn = make_learner(tmp_path, n_valid=40, callback_fns=[LossMetrics])  # validation batches of 16, 16, 8
    learn.loss_func = PartsLoss()
    learn.fit(1, 1e-2)
    header, row = table_lines(capsys.readouterr().out)
    assert header.split() == ["epoch", "train_loss", "valid_loss", "double", "sq", "time"]
    assert LossMetrics._order == -20
    rec = learn.recorder  # get_preds makes a new Recorder (v1)
    preds, targets = learn.get_preds(activ=lambda x: x)
    batches = [(preds[i:i + 16], targets[i:i + 16]) for i in (0, 16, 32)]
    per_batch = [nn.functional.cross_entropy(p, t) for p, t in batches]
    double = sum(len(t) * 2 * v for (_, t), v in zip(batches, per_batch)) / 40
    sq = sum(len(t) * v * v for (_, t), v in zip(batches, per_batch)) / 40
    assert [float(v) for v in rec.metrics[0]] == pytest.approx([float(double), float(sq)], rel=1e-5)
    assert float(rec.metrics[0][0]) == pytest.approx(2 * float(rec.val_losses[0]), rel=1e-5)
    assert isinstance(rec.metrics[0][0], torch.Tensor)


def test_a_loss_without_metric_names_warns_and_adds_nothing(tmp_path, capsys):
    learn = make_learner(tmp_path, callback_fns=[LossMetrics])
    with pytest.warns(UserWarning, match="no loss_func.metric_names"):
        learn.fit(1, 1e-2)
    assert learn.recorder.names == ["epoch", "train_loss", "valid_loss", "time"]
