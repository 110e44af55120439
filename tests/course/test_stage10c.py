"""MixedPrecision on torch.amp (spec §6 note: an amp re-implementation under the same name)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastloop.course.callbacks import Callback
from fastloop.course.stage09b import Learner
from fastloop.course.stage10c import MixedPrecision

from .helpers import make_data, make_model


def test_cpu_bfloat16_autocast_forward_and_fp32_pred():
    dtypes = []

    class Look(Callback):
        _order = 100

        def after_pred(self):
            dtypes.append(self.pred.dtype)

    class Inner(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = make_model()

        def forward(self, x):
            out = self.m(x)
            dtypes.append(("inner", out.dtype))
            return out

    learn = Learner(Inner(), make_data(), F.cross_entropy, cbs=[MixedPrecision(), Look()])
    learn.fit(1)
    assert ("inner", torch.bfloat16) in dtypes and torch.float32 in dtypes
    assert learn.mixed_precision.loss_scale == 1.0 and not torch.is_autocast_enabled("cpu")
    assert next(learn.model.parameters()).dtype == torch.float32


def test_overflow_sets_skip_step_and_halves_the_scale():
    class Overflow(Callback):
        _order = 98  # before MixedPrecision (99) unscales

        def after_backward(self):
            self.model[1].weight.grad[0, 0] = float("inf")

    learn = Learner(make_model(), make_data(), F.cross_entropy, cbs=[MixedPrecision(dynamic=True), Overflow()])
    w0 = learn.model[3].weight.detach().clone()
    learn.fit(1)
    assert torch.equal(learn.model[3].weight, w0)  # every step skipped: the flag is honoured
    assert learn.mixed_precision.loss_scale == 2.0**24 / 2**3


def test_dynamic_scaling_grows_after_scale_wait_clean_steps_and_scales_the_loss():
    losses = []

    class Look(Callback):
        _order = 100

        def after_loss(self):
            if self.in_train:
                losses.append(self.loss.item())

    mp = MixedPrecision(loss_scale=8, dynamic=True, max_loss_scale=64, scale_wait=2)
    learn = Learner(make_model(), make_data(), F.cross_entropy, cbs=[mp, Look()])
    learn.fit(1)
    assert mp.loss_scale == 64  # max_loss_scale is the start when dynamic, and the cap
    assert losses[0] > 10  # the scaled loss


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_float16_mixed_precision_trains():
    from fastloop.course.stage06 import CudaCallback

    learn = Learner(make_model(), make_data(), F.cross_entropy, cbs=[CudaCallback("cuda"), MixedPrecision()])
    learn.fit(2)
    assert learn.mixed_precision.dtype == torch.float16 and learn.mixed_precision.scaling
    assert next(learn.model.parameters()).is_cuda and torch.isfinite(learn.smooth_loss)
