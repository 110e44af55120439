"""fastai v1 callbacks in the course Learner (fastloop/course/adapter.py): ordering, the state_dict view, returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fastloop.basic_train import LearnerCallback
from fastloop.callback import Callback as V1Callback
from fastloop.course.adapter import V1CallbackAdapter
from fastloop.course.callbacks import Callback
from fastloop.course.stage04 import DataBunch
from fastloop.course.stage06 import BatchTransformXCallback
from fastloop.course.stage09b import Learner

from ..conftest import make_learner
from ..tracing import Tracer, canonical_fit
from .helpers import Seq2Seq, TeacherForcing, make_data, make_model


# ------------------------------------------------------------- MRNet's callback, as posted (imports changed only)
class MRNetCallback(V1Callback):
    def on_batch_begin(self, last_input, last_target, **kwargs):
        x = torch.squeeze(last_input, dim=0)
        y = last_target.float()
        return {"last_input": x, "last_target": y}


class StudyModel(nn.Module):
    "One logit per study: a linear layer over each slice, max over the slices."

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(6, 1)
        self.shapes = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return self.lin(x).max(0)[0]


def _studies():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 3, 6, generator=g), torch.tensor([0, 1, 0, 1, 1])  # 5 studies of 3 slices
    return DataBunch(DataLoader(TensorDataset(x[:3], y[:3]), batch_size=1),
                     DataLoader(TensorDataset(x[3:], y[3:]), batch_size=1), c=1)


def test_mixed_list_runs_in_one_fit_sorted_by_order():
    order = []

    class Early(Callback):
        _order = -1

        def begin_batch(self):
            order.append(("Early", tuple(self.xb.shape)))

    class Late(Callback):
        _order = 1

        def begin_batch(self):
            order.append(("Late", tuple(self.xb.shape), self.yb.dtype))

    class V1Late(V1Callback):
        _order = 3

        def on_batch_begin(self, last_input, **kwargs):
            order.append(("V1Late", tuple(last_input.shape)))

    model = StudyModel()
    mr = MRNetCallback()
    learn = Learner(model, _studies(), nn.BCEWithLogitsLoss(), cbs=[V1Late(), Late(), mr, Early(),
                                                                    BatchTransformXCallback(lambda x: x * 1)])
    learn.fit(1)
    assert order[:4] == [("Early", (1, 3, 6)), ("Late", (3, 6), torch.float32), ("V1Late", (3, 6)),
                         ("Early", (1, 3, 6))]
    assert set(model.shapes) == {(3, 6)} and len(model.shapes) == 5
    assert learn.mr_net_callback is mr  # v1's naming rule
    assert learn.implementers("begin_batch") == sorted(learn.cbs[1:], key=lambda c: c._order)
    assert [type(cb).__name__ for cb in learn.implementers("begin_batch")] == [
        "Early", "V1CallbackAdapter", "Late", "BatchTransformXCallback", "V1CallbackAdapter"]


def test_a_v1_tracer_sees_the_same_events_counters_and_keys_as_in_fastai_v1s_learner():
    v1_tracer, course_tracer = Tracer(), Tracer()
    make_learner(n_train=24, n_valid=8, bs=8, callbacks=[v1_tracer]).fit(2, 1e-3)
    Learner(make_model(), make_data(), F.cross_entropy, cbs=[course_tracer]).fit(2)
    assert course_tracer.events() == canonical_fit(2, 3, 1)
    assert course_tracer.records == v1_tracer.records  # (event, train, epoch, iteration, num_batch)
    assert course_tracer.keys == v1_tracer.keys  # the same state keys (and extras) exist at every event


def test_the_view_holds_v1_values():
    tracer = Tracer()
    learn = Learner(make_model(), make_data(), F.cross_entropy, cbs=[tracer])
    learn.fit(2)
    kw = dict(tracer.kwargs)
    assert kw["train_begin"]["n_epochs"] == 2 and kw["train_begin"]["metrics_names"] == []
    batch_end = [k for e, k in tracer.kwargs if e == "batch_end"]
    assert all(k["last_loss"].device.type == "cpu" and not k["last_loss"].requires_grad for k in batch_end)
    backward_begin = [k for e, k in tracer.kwargs if e == "backward_begin"]
    assert all(k["last_loss"].requires_grad for k in backward_begin)
    epoch_end = [k for e, k in tracer.kwargs if e == "epoch_end"]
    assert isinstance(epoch_end[-1]["last_metrics"][0], np.float32)
    assert epoch_end[-1]["last_metrics"][0] == pytest.approx(learn.last_metrics[0])
    assert kw["train_end"]["epoch"] == 2 and kw["train_end"]["exception"] is False


def test_a_returned_dict_is_applied_with_v1s_rules():
    class Bad(V1Callback):
        def on_batch_begin(self, **kwargs):
            return {"last_inptu": 1}

    learn = Learner(make_model(), make_data(), F.cross_entropy, cbs=[Bad()])
    with pytest.raises(Exception, match="last_inptu isn't a valid key in the state of the callbacks.") as info:
        learn.fit(1)
    assert any("did you mean 'last_input'" in n for n in info.value.__notes__)


def test_v1_flags_returned_take_effect_after_the_event():
    class Flags(V1Callback):
        def on_backward_end(self, **kwargs):
            return {"skip_step": True}

        def on_batch_end(self, train, num_batch, **kwargs):
            if train and num_batch == 1:
                return {"stop_epoch": True}

        def on_epoch_end(self, epoch, **kwargs):
            return {"stop_training": epoch == 0}

    seen = []

    class After(Callback):
        _order = 5

        def after_batch(self):
            seen.append(self.stop_epoch)

    learn = Learner(make_model(), make_data(), F.cross_entropy, cbs=[Flags(), After()])
    w0 = learn.model[1].weight.detach().clone()
    learn.fit(3)
    assert torch.equal(learn.model[1].weight, w0)  # skip_step honoured
    assert learn.epochs_done == 1 and learn.iteration == 2  # stop_epoch after 2 batches, stop_training after epoch 0
    assert seen[:2] == [False, True]  # a later callback still saw after_batch with the flag set


@dataclass
class GradientClipping(LearnerCallback):  # the forum's @dataclass port, unchanged
    learn: Learner
    clip: float = 0.0

    def __post_init__(self):
        super().__init__(self.learn)

    def on_backward_end(self, **kwargs):
        if self.clip:
            nn.utils.clip_grad_norm_(self.learn.model.parameters(), self.clip)


def test_callback_fns_give_fresh_v1_instances_each_fit_bound_to_the_course_learner():
    from functools import partial

    learn = Learner(make_model(), make_data(), F.cross_entropy, callback_fns=[partial(GradientClipping, clip=1e-3)])
    learn.fit(1)
    first = learn.gradient_clipping
    assert first.learn is learn and first.clip == 1e-3
    learn.fit(1)
    assert learn.gradient_clipping is not first
    assert [type(cb).__name__ for cb in learn.cbs] == ["TrainEvalCallback"]


def test_remove_cbs_accepts_the_v1_callback():
    mr = MRNetCallback()
    learn = Learner(StudyModel(), _studies(), nn.BCEWithLogitsLoss(), cbs=[mr])
    assert isinstance(learn.cbs[1], V1CallbackAdapter) and learn.cbs[1].wrapped is mr
    learn.remove_cbs([mr])
    assert len(learn.cbs) == 1


def test_teacher_forcing_list_input_reaches_the_model_and_pr_force_follows_the_epoch():
    model = Seq2Seq()
    learn = Learner(model, make_data(), F.cross_entropy)
    learn.fit(2, [TeacherForcing(learn, end_epoch=4)])
    assert model.calls[:4] == [(True, 1.0)] * 3 + [(False, 1.0)]  # training gets (inp, targ), validation inp
    assert model.calls[4:8] == [(True, 0.75)] * 3 + [(False, 0.75)]
