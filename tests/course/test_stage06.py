"""Device and batch-transform callbacks, CNN builders, get_learn_run, hooks, 07a get_batch (spec §6: 6, 11)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastloop.course.callbacks import Callback
from fastloop.course.stage04 import AvgStatsCallback, DataBunch, accuracy
from fastloop.course.stage05b import Runner
from fastloop.course.stage06 import (
    BatchTransformXCallback,
    CudaCallback,
    Hooks,
    ListContainer,
    append_stats,
    conv_layer,
    get_batch,
    get_cnn_model,
    get_learn_run,
    view_tfm,
)

from .helpers import Trace, make_xy


def _flat_data(n_train=24, n_valid=8, bs=8) -> DataBunch:
    "Flat 16-pixel rows (the course's flat MNIST, 4x4 here)."
    x, y = make_xy(n_train + n_valid, n_in=16)
    ds = torch.utils.data.TensorDataset
    return DataBunch(torch.utils.data.DataLoader(ds(x[:n_train], y[:n_train]), batch_size=bs),
                     torch.utils.data.DataLoader(ds(x[n_train:], y[n_train:]), batch_size=2 * bs), c=2)


def test_view_tfm_with_batch_transform_reshapes_in_train_and_valid():
    shapes = []

    class See(Callback):
        _order = 3

        def begin_batch(self):
            shapes.append((self.in_train, tuple(self.xb.shape)))

    mnist_view = view_tfm(1, 4, 4)
    learn, run = get_learn_run([4, 8], _flat_data(), 0.1, conv_layer,
                               cbs=[lambda: BatchTransformXCallback(mnist_view), See])
    run.fit(1, learn)
    assert shapes == [(True, (8, 1, 4, 4))] * 3 + [(False, (8, 1, 4, 4))]
    assert isinstance(run.batch_transform_x, BatchTransformXCallback)


def test_cuda_callback_is_device_agnostic():
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    cb = CudaCallback()
    assert cb.device.type == dev and cb.name == "cuda" and cb._order == 0
    learn, run = get_learn_run([4], _flat_data(), 0.1, conv_layer,
                               cbs=[CudaCallback, lambda: BatchTransformXCallback(view_tfm(1, 4, 4))])
    run.fit(1, learn)
    assert next(learn.model.parameters()).device.type == dev


def test_07a_get_batch_fires_begin_batch_outside_a_fit():
    trace = Trace()
    run = Runner(cbs=[trace], cb_funcs=[lambda: BatchTransformXCallback(view_tfm(1, 4, 4))])
    xb, yb = get_batch(_flat_data().train_dl, run)
    assert xb.shape == (8, 1, 4, 4) and yb.shape == (8,)
    assert trace.events == ["begin_batch"] and run.xb is xb


def test_get_learn_run_with_avg_stats_trains_a_cnn():
    learn, run = get_learn_run([4, 8], _flat_data(), 0.4, conv_layer, leak=0.1, sub=0.4, maxv=6.0,
                               cbs=[lambda: AvgStatsCallback([accuracy]),
                                    lambda: BatchTransformXCallback(view_tfm(1, 4, 4))])
    run.fit(2, learn)
    assert run.avg_stats.train_stats.count == 24
    assert isinstance(learn.model[0][1].leak, float)


def test_hooks_record_stats_during_a_fit_and_are_removed():
    data = _flat_data()
    model = get_cnn_model(data, [4, 8], conv_layer)
    with Hooks(model[:2], append_stats) as hooks:
        model(torch.randn(8, 1, 4, 4))
        means, stds, hists = hooks[0].stats
        assert len(means) == 1 and hists[0].shape == (40,)
    model(torch.randn(8, 1, 4, 4))
    assert len(hooks[0].stats[0]) == 1  # removed on exit
    lc = ListContainer(["a", "b", "c"])
    assert lc[[0, 2]] == ["a", "c"] and lc[[True, False, True]] == ["a", "c"] and len(lc) == 3


def test_cnn_model_output_shape():
    model = get_cnn_model(_flat_data(), [4, 8], conv_layer)
    assert model(torch.randn(2, 1, 4, 4)).shape == (2, 2)
    assert isinstance(model[0][0], nn.Conv2d) and model[0][0].kernel_size == (5, 5)
    assert F.relu is not None
