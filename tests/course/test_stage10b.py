"""MixUp with LabelSmoothingCrossEntropy (spec §6: 8), NoneReduce, reduce_loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastloop.course.callbacks import Callback
from fastloop.course.stage09b import Learner
from fastloop.course.stage10b import LabelSmoothingCrossEntropy, MixUp, NoneReduce, lin_comb, reduce_loss

from .helpers import make_data, make_model


def test_mixup_swaps_the_loss_in_and_out_and_reproduces_the_broadcasting_quirk():
    seen = []

    class Look(Callback):
        _order = 95  # after MixUp (90)

        def after_loss(self):
            if self.in_train:
                seen.append((self.run.loss_func, self.loss.detach(), self.pred.detach(), self.yb,
                             self.mix_up.yb1, self.mix_up.λ, self.loss_func.__self__ if hasattr(
                                 self.loss_func, "__self__") else None))

    torch.manual_seed(0)
    lsce = LabelSmoothingCrossEntropy()
    learn = Learner(make_model(), make_data(image=True), lsce, cbs=[MixUp(α=0.4), Look()])
    learn.fit(1)
    assert learn.loss_func is lsce and lsce.reduction == "mean"  # restored after the fit
    assert len(seen) == 3
    loss_func, loss, pred, yb, yb1, lam, owner = seen[0]
    assert owner is learn.mix_up  # during the fit the loss is MixUp's method
    assert lam.shape == (8, 1, 1, 1) and bool((lam >= 0.5).all())
    with torch.no_grad():
        lsce.reduction = "none"
        l1, l2 = lsce(pred, yb), lsce(pred, yb1)
        lsce.reduction = "mean"
    quirk = lam.mean() * l1.mean() + (1 - lam.mean()) * l2.mean()  # what (bs,1,1,bs) broadcasting averages to
    per_sample = (lam.view(-1) * l1 + (1 - lam.view(-1)) * l2).mean()
    assert loss.item() == pytest.approx(quirk.item(), rel=1e-5)
    assert abs(loss.item() - per_sample.item()) > 1e-6  # the course's loss, not the textbook one


def test_mixup_mixes_only_training_batches():
    seen = []

    class Before(Callback):
        _order = 89

        def begin_batch(self):
            seen.append(self.xb.clone())

    class After(Callback):
        _order = 91

        def begin_batch(self):
            seen[-1] = (self.in_train, torch.equal(seen[-1], self.xb), tuple(self.xb.shape))

    learn = Learner(make_model(), make_data(image=True), F.cross_entropy, cbs=[MixUp(), Before(), After()])
    learn.fit(1)
    assert seen == [(True, False, (8, 1, 2, 2))] * 3 + [(False, True, (8, 1, 2, 2))]


def test_none_reduce_for_a_module_and_a_function():
    lsce = LabelSmoothingCrossEntropy()
    with NoneReduce(lsce) as lf:
        assert lf is lsce and lsce.reduction == "none"
    assert lsce.reduction == "mean"
    out, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with NoneReduce(F.cross_entropy) as lf:
        assert lf(out, y).shape == (4,)


def test_label_smoothing_value_and_reduce_loss():
    out, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
    eps = 0.1
    expected = eps * (-F.log_softmax(out, -1).sum(-1)).mean() / 3 + (1 - eps) * F.cross_entropy(out, y)
    assert LabelSmoothingCrossEntropy(ε=eps)(out, y).item() == pytest.approx(expected.item(), rel=1e-6)
    v = torch.tensor([1.0, 3.0])
    assert reduce_loss(v).item() == 2 and reduce_loss(v, "sum").item() == 4 and reduce_loss(v, "none") is v
    assert lin_comb(2.0, 4.0, 0.25) == 3.5
