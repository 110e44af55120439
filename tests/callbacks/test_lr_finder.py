"""LRFinder / lr_find: the exponential schedule, the stop rule, the bitwise restore (read-only path too) and the
opt-in RNG restore."""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from fastloop.basic_train import Learner
from fastloop.callbacks.lr_finder import LRFinder

from ..conftest import make_data, make_learner
from ..tracing import Tracer


def bn_learner(tmp_path, **kwargs) -> Learner:
    "A learner whose model has BatchNorm (running stats) and Dropout (uses the RNG)."
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))
    return Learner(make_data(), model, loss_func=nn.CrossEntropyLoss(), path=tmp_path, **kwargs)


def snapshot(learn: Learner) -> dict:
    "Deep copies of the model state (weights and BN buffers) and the optimizer state (Adam moments, steps)."
    model = {k: v.clone() for k, v in learn.model.state_dict().items()}
    opt = learn.opt.state_dict()
    state = {i: {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in s.items()}
             for i, s in opt["state"].items()}
    return {"model": model, "opt": state}


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a["model"].keys() == b["model"].keys() and a["opt"].keys() == b["opt"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for i in a["opt"]:
        assert a["opt"][i].keys() == b["opt"][i].keys()
        for k in a["opt"][i]:
            assert torch.equal(torch.as_tensor(a["opt"][i][k]), torch.as_tensor(b["opt"][i][k])), (i, k)


def test_lrs_grow_exponentially_from_start_to_end_over_num_it_batches(learn, capsys):
    """stop_div=False: exactly num_it batches, lr_i = start * (end/start)^(i/num_it), over ceil(num_it/4) epochs."""
    learn.lr_find(1e-5, 1e-1, num_it=10, stop_div=False)
    rec = learn.recorder
    assert rec.lrs == pytest.approx([1e-5 * (1e4) ** (i / 10) for i in range(10)], rel=1e-9)
    assert rec.nb_batches == [4, 4, 2]  # ceil(10 / 4) = 3 epochs, the last cut short
    assert rec.val_losses == [None, None, None]  # skip_validate
    out = capsys.readouterr().out
    assert "LR Finder is complete, type {learner_name}.recorder.plot() to see the graph." in out


def test_fastai_test_train_assertions_for_lr_find(tmp_path):
    """fastai's test_train: len(moms)==len(lrs), lrs[0]==start_lr, moms[0]==0.9, lrs[-1] < opt.lr, wd kept;
    stop_div=False gives exactly num_it lrs (2 batches per epoch: 45 epochs)."""
    learn = make_learner(tmp_path, n_train=32)
    learn.lr_find(start_lr=1e-6, end_lr=10, num_it=90, stop_div=True, wd=0.002)
    rec = learn.recorder
    assert len(rec.moms) == len(rec.lrs) and rec.lrs[0] == 1e-6 and rec.moms[0] == 0.9
    assert rec.lrs[-1] < rec.opt.lr and rec.opt.wd == 0.002
    learn.lr_find(start_lr=1e-6, end_lr=10, num_it=90, stop_div=False)
    assert len(learn.recorder.lrs) == 90 and len(learn.recorder.nb_batches) == 45


def finder(learn: Learner, **kwargs) -> LRFinder:
    learn.create_opt(1e-3)
    cb = LRFinder(learn, 1e-4, 1.0, **kwargs)
    assert cb.on_train_begin(pbar=SimpleNamespace()) == {"skip_validate": True}
    return cb


def test_stop_rule_is_smooth_loss_above_four_times_the_best(learn):
    cb = finder(learn, num_it=100)
    losses = [1.0, 0.8, 0.5, 1.9, 2.0, 2.01]  # best 0.5; 2.0 is not > 4*0.5, 2.01 is
    results = [cb.on_batch_end(iteration=i, smooth_loss=torch.tensor(v)) for i, v in enumerate(losses)]
    assert results[:5] == [None] * 5
    assert results[5] == {"stop_epoch": True, "stop_training": True}
    assert cb.stop == 5 and float(cb.best_loss) == 0.5
    assert cb.on_epoch_end() == {"stop_training": True}


def test_nan_smooth_loss_stops_and_stop_div_false_ignores_divergence(learn):
    cb = finder(learn, num_it=100)
    assert cb.on_batch_end(iteration=0, smooth_loss=torch.tensor(1.0)) is None
    assert cb.on_batch_end(iteration=1, smooth_loss=torch.tensor(float("nan"))) == {"stop_epoch": True,
                                                                                    "stop_training": True}
    cb = finder(learn, num_it=3, stop_div=False)
    assert cb.on_batch_end(iteration=0, smooth_loss=torch.tensor(1.0)) is None
    assert cb.on_batch_end(iteration=1, smooth_loss=torch.tensor(100.0)) is None
    assert cb.on_batch_end(iteration=2, smooth_loss=torch.tensor(100.0)) is not None  # the schedule is done


def test_the_first_batch_sets_the_best_loss_even_when_it_is_higher(learn):
    cb = finder(learn, num_it=100)
    cb.on_batch_end(iteration=0, smooth_loss=torch.tensor(3.0))
    assert float(cb.best_loss) == 3.0  # best_loss starts at 0: only iteration 0 can set it


def test_lr_find_restores_weights_bn_stats_and_optimizer_buffers_bitwise(tmp_path):
    learn = bn_learner(tmp_path)
    learn.fit(1, 1e-3)  # Adam moments and steps now exist
    before = snapshot(learn)
    learn.lr_find(num_it=12)
    assert_bitwise_equal(before, snapshot(learn))
    assert (tmp_path / "models" / "tmp.pth").is_file()  # as v1: saved and left there
    # spec §20.9: the torch param groups hold the start lr of the save, the wrapper keeps the last scheduled lr
    assert [g["lr"] for g in learn.opt.opt.param_groups] == [1e-7, 1e-7]
    assert learn.opt.lr > learn.recorder.lrs[-1]


def test_read_only_path_falls_back_to_an_in_memory_snapshot(tmp_path):
    """A learner whose models folder cannot be created (a file is in the way) still finds and restores."""
    (tmp_path / "models").write_text("not a folder")
    learn = bn_learner(tmp_path)
    learn.fit(1, 1e-3)
    before = snapshot(learn)
    with pytest.warns(UserWarning, match="kept in memory"):
        learn.lr_find(num_it=12)
    assert_bitwise_equal(before, snapshot(learn))
    assert (tmp_path / "models").read_text() == "not a folder"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_folder_falls_back_to_an_in_memory_snapshot(tmp_path):
    (tmp_path / "models").mkdir()
    os.chmod(tmp_path / "models", 0o555)
    try:
        learn = bn_learner(tmp_path)
        before = snapshot(learn)
        with pytest.warns(UserWarning, match="kept in memory"):
            learn.lr_find(num_it=6)
        assert_bitwise_equal(before, snapshot(learn))
    finally:
        os.chmod(tmp_path / "models", 0o755)


def train_after(tmp_path, find: bool, restore_rng: bool = False) -> list[torch.Tensor]:
    torch.manual_seed(42)
    learn = bn_learner(tmp_path)
    if find:
        learn.lr_find(num_it=6, restore_rng=restore_rng)
    learn.fit(2, 1e-2)
    return [p.detach().clone() for p in learn.model.parameters()]


def test_restore_rng_makes_lr_find_leave_no_trace_on_the_next_fit(tmp_path):
    """seed; lr_find(restore_rng=True); fit() == seed; fit()  (shuffling and dropout use the RNG)."""
    plain = train_after(tmp_path / "a", find=False)
    restored = train_after(tmp_path / "b", find=True, restore_rng=True)
    assert all(torch.equal(a, b) for a, b in zip(plain, restored))
    default = train_after(tmp_path / "c", find=True)  # v1's default: the sweep consumed random numbers
    assert not all(torch.equal(a, b) for a, b in zip(plain, default))


def test_events_skip_validation_and_reset_the_model_and_callbacks(tmp_path):
    class Resettable(Tracer):
        def __init__(self):
            super().__init__()
            self.resets = 0

        def reset(self):
            self.resets += 1

    learn = bn_learner(tmp_path)
    learn.model.reset = lambda: setattr(learn, "model_resets", getattr(learn, "model_resets", 0) + 1)
    tracer = Resettable()
    learn.callbacks.append(tracer)
    learn.lr_find(num_it=5, stop_div=False)
    assert not any(r[1] is False for r in tracer.records)  # no validation batch
    assert tracer.resets == 1 and learn.model_resets == 1
    assert math.ceil(5 / 4) == len(learn.recorder.nb_batches)


def test_order_registration_and_pbar_none_fails_as_in_v1(learn):
    cb = LRFinder(learn)
    assert learn.lr_finder is cb and LRFinder._order == 0
    with pytest.raises(AttributeError):
        cb.on_train_begin(pbar=None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_lr_find_restores_bitwise_and_restore_rng_covers_the_cuda_generator(tmp_path):
    """Dropout on the GPU draws from the CUDA generator: restore_rng must put it back too."""
    from torch.utils.data import TensorDataset

    from fastloop.basic_data import DataBunch

    def cuda_learner(path):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(96, 4, generator=g)
        y = (x.sum(1) > 0).long()
        data = DataBunch.create(TensorDataset(x[:64], y[:64]), TensorDataset(x[64:], y[64:]), bs=16, num_workers=0,
                                device="cuda")
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))
        return Learner(data, model, loss_func=nn.CrossEntropyLoss(), path=path)

    learn = cuda_learner(tmp_path / "a")
    learn.fit(1, 1e-3)
    before = snapshot(learn)
    learn.lr_find(num_it=6)
    assert_bitwise_equal(before, snapshot(learn))

    def weights_after(path, find):
        torch.manual_seed(42)
        torch.cuda.manual_seed_all(42)
        lrn = cuda_learner(path)
        if find:
            lrn.lr_find(num_it=6, restore_rng=True)
        lrn.fit(2, 1e-2)
        return [p.detach().cpu().clone() for p in lrn.model.parameters()]

    plain, restored = weights_after(tmp_path / "b", False), weights_after(tmp_path / "c", True)
    assert all(torch.equal(a, b) for a, b in zip(plain, restored))
