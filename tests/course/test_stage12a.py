"""GradientClipping and RNNTrainer with a tiny model returning (decoded, raw_outputs, outputs) (spec §6: 9)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastloop.course.callbacks import Callback
from fastloop.course.stage09b import Learner
from fastloop.course.stage12a import GradientClipping, RNNTrainer

from .helpers import make_data


class TinyRNNLike(nn.Module):
    "Returns ``(decoded, raw_outputs, outputs)`` as the course's AWD-LSTM does; the hidden state is (bs, seq, nh)."

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.enc, self.dec = nn.Linear(1, 3), nn.Linear(3, 2)

    def forward(self, x):
        h = self.enc(x.unsqueeze(-1))  # (bs, 4, 3)
        return self.dec(h[:, -1]), [h], [h * 0.5]


class Batches(list):
    "A dataset with batchify() (the course's LM_PreLoader reshuffles there)."

    calls = 0

    def batchify(self):
        Batches.calls += 1


def test_rnn_trainer_keeps_decoded_pred_and_adds_ar_and_tar_in_train_and_valid():
    seen = []

    class Look(Callback):
        _order = 1

        def after_loss(self):
            seen.append((self.in_train, self.loss.item(), F.cross_entropy(self.pred, self.yb).item(),
                         self.rnn_trainer.raw_out[-1].detach(), self.rnn_trainer.out[-1].detach()))

    data = make_data()
    data.train_dl.dataset.batchify = Batches().batchify
    learn = Learner(TinyRNNLike(), data, F.cross_entropy, cbs=[RNNTrainer(α=2.0, β=1.0), Look()])
    learn.fit(2)
    assert Batches.calls == 2  # once per epoch (the exported nb_09b fired begin_epoch twice)
    for _in_train, loss, plain, h, out in seen:
        ar = 2.0 * out.pow(2).mean().item()
        tar = 1.0 * (h[:, 1:] - h[:, :-1]).pow(2).mean().item()
        assert loss == pytest.approx(plain + ar + tar, rel=1e-5)
    assert {s[0] for s in seen} == {True, False}


def test_gradient_clipping_bounds_the_global_norm():
    norms = []

    class Look(Callback):
        _order = 1

        def after_backward(self):
            norms.append(torch.nn.utils.clip_grad_norm_(self.model.parameters(), float("inf")).item())

    learn = Learner(TinyRNNLike(), make_data(), lambda p, y: F.cross_entropy(p[0], y) * 100,
                    cbs=[GradientClipping(clip=0.01), Look()])
    learn.fit(1)
    assert max(norms) <= 0.01 + 1e-6 and learn.gradient_clipping.clip == 0.01
    GradientClipping()  # no clip: nothing to do
