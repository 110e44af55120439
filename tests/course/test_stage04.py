"""The 04 Runner (a True return stops the event), the container Learner and the printing AvgStatsCallback."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import optim

from fastloop.course.callbacks import Callback
from fastloop.course.stage04 import AvgStats, AvgStatsCallback, DataBunch, Dataset, Learner, Runner, accuracy, get_model

from .helpers import Trace, make_data, make_model


def _container(lr: float = 0.1) -> Learner:
    model = make_model()
    return Learner(model, optim.SGD(model.parameters(), lr=lr), F.cross_entropy, make_data())


def test_plain_runner_fit_event_counts_per_epoch():
    """3 train + 1 valid batch: 4 begin_batch, 3 after_backward, 1 begin_epoch per epoch."""
    trace = Trace()
    run = Runner(cbs=[trace])
    run.fit(2, _container())
    c = trace.counts()
    assert c["begin_epoch"] == 2 and c["begin_batch"] == 8 and c["after_backward"] == 6 and c["after_batch"] == 8
    assert c["begin_fit"] == c["after_fit"] == 1 and c["begin_validate"] == 2
    assert run.learn is None  # reset in the finally


def test_cb_funcs_are_registered_by_name_and_appended_to_the_callers_list():
    mine = [Trace()]
    run = Runner(cbs=mine, cb_funcs=[lambda: AvgStatsCallback([accuracy])])
    assert isinstance(run.avg_stats, AvgStatsCallback)
    assert mine[-1] is run.avg_stats and len(mine) == 2  # the caller's list was mutated, as in the course
    assert isinstance(run.cbs[0], type(run.cbs[0])) and run.cbs[0].name == "train_eval"
    assert not hasattr(run, "train_eval")  # TrainEvalCallback is not registered on a Runner


def test_runner_views_of_the_container_are_read_only():
    run = Runner()
    learn = _container()
    run.learn = learn
    assert run.model is learn.model and run.opt is learn.opt and run.data is learn.data
    with pytest.raises(AttributeError):
        run.model = None


def test_true_from_begin_batch_skips_the_batch_and_stops_later_callbacks():
    class SkipTrain(Callback):
        def begin_batch(self):
            return self.in_train

    after = Trace(order=1)
    run = Runner(cbs=[SkipTrain(), after])
    learn = _container()
    w0 = learn.model[1].weight.detach().clone()
    run.fit(1, learn)
    c = after.counts()
    assert c["begin_batch"] == 1  # only the validation batch reached the later callback
    assert c["after_batch"] == 4 and c["after_backward"] == 0
    assert torch.equal(learn.model[1].weight, w0)


def test_true_from_begin_fit_runs_only_after_fit():
    class NoFit(Callback):
        def begin_fit(self):
            return True

    trace = Trace(order=1)
    Runner(cbs=[NoFit(), trace]).fit(3, _container())
    assert trace.events == ["after_fit"]


def test_true_from_after_epoch_ends_the_fit_and_run_stop_ends_a_loop():
    class StopAfterOneEpoch(Callback):
        def after_epoch(self):
            return True

    class StopAfterTwoBatches(Callback):
        def after_batch(self):
            if self.in_train and self.n_iter >= 2:
                self.run.stop = True

    trace = Trace(order=1)
    run = Runner(cbs=[StopAfterOneEpoch(), StopAfterTwoBatches(), trace])
    run.fit(5, _container())
    c = trace.counts()
    assert c["begin_epoch"] == 1 and c["after_backward"] == 2 and c["begin_batch"] == 3
    assert run.stop is False  # reset after the loop


def test_runner_refuses_v1_callbacks_with_a_pointer_to_the_learner():
    from fastloop.callback import Callback as V1Callback

    with pytest.raises(TypeError, match="fastloop.course.Learner"):
        Runner(cbs=[V1Callback()])


def test_avg_stats_accumulates_per_sample_and_prints(capsys):
    data = make_data()
    model = make_model()
    learn = Learner(model, optim.SGD(model.parameters(), lr=0.0), F.cross_entropy, data)
    run = Runner(cb_funcs=[lambda: AvgStatsCallback([accuracy])])
    run.fit(1, learn)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("train: [") and out[1].startswith("valid: [")
    # lr 0: the model never changes, so the stats are the plain per-sample means
    with torch.no_grad():
        x, y = data.valid_ds.tensors
        pred = model(x)
        expected = F.cross_entropy(pred, y).item(), accuracy(pred, y).item()
    loss, acc = run.avg_stats.valid_stats.avg_stats
    assert loss == pytest.approx(expected[0], rel=1e-6) and float(acc) == pytest.approx(expected[1])
    assert run.avg_stats.valid_stats.count == 8 and run.avg_stats.train_stats.count == 24


def test_avg_stats_repr_is_empty_before_any_batch():
    s = AvgStats([accuracy], True)
    s.reset()
    assert repr(s) == ""


def test_get_model_builds_an_mlp_and_sgd_for_flat_data():
    x = torch.randn(10, 6)
    dl = torch.utils.data.DataLoader(Dataset(x, torch.zeros(10, dtype=torch.long)))
    model, opt = get_model(DataBunch(dl, dl, c=3), lr=0.3, nh=5)
    assert model(x).shape == (10, 3) and opt.param_groups[0]["lr"] == 0.3
