"""Learner housekeeping (spec §10.5, §6.1, §19): purge, destroy, export/load_learner, defaults.extra_callbacks,
init, dl, show_results and load(purge=True)."""

from __future__ import annotations

import io
import pickle

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fastloop.basic_data import DataBunch, DatasetType
from fastloop.basic_train import Learner, LearnerCallback, load_learner
from fastloop.callback import Callback
from fastloop.core import defaults
from fastloop.metrics import accuracy

from .conftest import make_data, make_learner, make_model

DESTROYED = "this object has been destroyed"


class KeepsLearner(Callback):
    """A plain callback holding the learner and a setting, as ported v1 callbacks often do."""

    def __init__(self, learn, k: int = 3):
        self.learn, self.k = learn, k
        self.seen = 0

    def on_epoch_end(self, **kwargs):
        self.seen += 1


class Registered(LearnerCallback):
    """A LearnerCallback with a constructor argument and a tensor in its state."""

    def __init__(self, learn, a: int = 1):
        super().__init__(learn)
        self.a, self.scale = a, torch.ones(2)


class MetricColumn(LearnerCallback):
    """A LearnerCallback used as a metric (it holds the learner through a weak reference)."""

    _order = -20

    def on_epoch_end(self, last_metrics, **kwargs):
        return {"last_metrics": last_metrics + [1.0]}


def _fitted(tmp_path, **kwargs) -> Learner:
    learn = make_learner(tmp_path, metrics=accuracy, silent=True, **kwargs)
    learn.fit(1)
    return learn


# ============================================================================================== purge
def test_purge_reloads_model_and_settings_as_new_objects_and_drops_the_optimizer(tmp_path):
    learn = _fitted(tmp_path)
    model, weights = learn.model, [p.detach().clone() for p in learn.model.parameters()]
    recorder, data = learn.recorder, learn.data
    learn.my_cache = torch.zeros(10)  # anything else goes, as in v1
    assert learn.purge() is learn
    assert learn.model is not model
    assert all(torch.equal(a, b) for a, b in zip(weights, learn.model.parameters()))
    assert learn.recorder is recorder and learn.data is data
    assert learn.opt is None and not hasattr(learn, "my_cache")
    assert learn.metrics == [accuracy] and learn.wd == defaults.wd and learn.silent
    # layer groups point into the new model, so a new optimizer trains it
    assert {id(p) for g in learn.layer_groups for p in g.parameters()} == {id(p) for p in learn.model.parameters()}
    learn.fit(1)
    assert not all(torch.equal(a, b) for a, b in zip(weights, learn.model.parameters()))


def test_purge_with_clear_opt_false_rebuilds_the_optimizer_state(tmp_path):
    learn = _fitted(tmp_path)
    state = learn.opt.state_dict()["state"]
    learn.purge(clear_opt=False)
    assert learn.opt is not None
    new_state = learn.opt.state_dict()["state"]
    assert state.keys() == new_state.keys()
    assert all(torch.equal(state[k]["exp_avg"], new_state[k]["exp_avg"]) for k in state)
    assert {id(p) for g in learn.opt.opt.param_groups for p in g["params"]} == {
        id(p) for p in learn.model.parameters()}
    learn.fit(1)


def test_purge_works_with_model_dir_dot_and_writes_no_file(tmp_path):
    learn = _fitted(tmp_path, model_dir=".")
    before = sorted(p.name for p in tmp_path.iterdir())
    learn.purge()
    learn.purge(clear_opt=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    learn.fit(1)


def test_purge_rebuilds_learn_callbacks_from_their_state(tmp_path):
    learn = make_learner(tmp_path, silent=True)
    keeper = KeepsLearner(learn, k=5)
    learn.callbacks += [keeper, Registered(learn, a=7)]
    learn.fit(2)
    learn.purge()
    new_keeper, registered = learn.callbacks
    assert new_keeper is not keeper and (new_keeper.k, new_keeper.seen) == (5, 2)
    assert new_keeper.learn is learn  # the reference to the learner is the learner, not a copy
    assert registered.a == 7 and learn.registered is registered and registered.learn is learn
    learn.fit(1)
    assert new_keeper.seen == 3


def test_purge_and_export_bring_back_a_learner_callback_metric_bound_to_the_learner(tmp_path):
    learn = make_learner(tmp_path, silent=True)
    learn.metrics = [MetricColumn(learn)]
    learn.purge()
    assert learn.metrics[0].learn is learn and learn.metric_column is learn.metrics[0]
    learn.export()
    new = load_learner(tmp_path)
    assert new.metrics[0].learn is new and new.metric_column is new.metrics[0]


def test_purge_of_an_unpicklable_model_fails_before_touching_the_learner(tmp_path):
    learn = make_learner(tmp_path, silent=True)
    learn.model.add_module("lam", nn.Identity())
    learn.model.lam.fn = lambda x: x  # a lambda cannot be pickled
    with pytest.raises(Exception) as info:
        learn.purge()
    assert any("lambda" in n for n in getattr(info.value, "__notes__", []))
    assert learn.model is not None and learn.loss_func is not None
    learn.fit(1)


def test_load_with_purge_purges_first(tmp_path):
    learn = _fitted(tmp_path)
    learn.save("w")
    model = learn.model
    learn.load("w", purge=True)
    assert learn.model is not model
    assert learn.opt is not None  # purge(clear_opt=with_opt or False) kept it; load then restored its state


# ============================================================================================== destroy
def test_destroy_prints_its_messages_and_leaves_an_empty_shell(tmp_path, capsys):
    learn = _fitted(tmp_path)
    capsys.readouterr()
    learn.destroy()
    assert capsys.readouterr().out == "this Learner object self-destroyed - it still exists, but no longer usable\n"
    assert learn.model is None
    assert capsys.readouterr().out == DESTROYED + "\n"
    assert learn.fit(1) is None and learn.save("x") is None
    assert capsys.readouterr().out == (DESTROYED + "\n") * 2
    assert isinstance(learn, Learner) and not learn.__dict__.keys() - {
        n for n in dir(Learner) if callable(getattr(Learner, n, None))}
    assert "destroyed" in repr(learn)


def test_a_new_learner_still_fits_after_another_was_destroyed(tmp_path, capsys):
    make_learner(tmp_path).destroy()
    learn = make_learner(tmp_path)
    learn.fit(1)
    out = capsys.readouterr().out
    assert "epoch" in out and "train_loss" in out


# ============================================================================================== export / load_learner
def _export_roundtrip(tmp_path, learn, **kwargs):
    learn.export()
    assert (tmp_path / "export.pkl").exists()
    return load_learner(tmp_path, **kwargs)


def test_export_and_load_learner_restore_model_loss_metrics_and_settings(tmp_path):
    learn = make_learner(tmp_path, metrics=accuracy, wd=0.1, true_wd=False, silent=True,
                         loss_func=nn.CrossEntropyLoss(weight=torch.tensor([1.0, 3.0])))
    learn.fit(1)
    new = _export_roundtrip(tmp_path, learn)
    assert type(new) is Learner and new is not learn
    for a, b in zip(learn.model.state_dict().values(), new.model.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(new.loss_func.weight, torch.tensor([1.0, 3.0]))
    assert new.metrics == [accuracy] and (new.wd, new.true_wd, new.silent) == (0.1, False, True)
    assert len(new.callback_fns) == len(learn.callback_fns)  # no second Recorder
    x = torch.randn(5, 4)
    learn.model.eval()
    new.model.eval()
    assert torch.equal(learn.model(x), new.model(x))


def test_load_learner_gives_empty_data_that_cannot_train_and_takes_a_test_set(tmp_path):
    learn = _fitted(tmp_path)
    new = _export_roundtrip(tmp_path, learn)
    assert new.data.is_empty and not learn.data.is_empty
    assert new.data.train_dl.batch_size == learn.data.train_dl.batch_size
    with pytest.raises(AssertionError, match="Your training dataloader is empty"):
        new.fit(1)
    x = torch.randn(10, 4)
    with_test = load_learner(tmp_path, test=TensorDataset(x, torch.zeros(10).long()))
    preds, _ = with_test.get_preds(DatasetType.Test)
    learn.model.eval()
    assert torch.allclose(preds, torch.softmax(learn.model(x), dim=1))


def test_load_learner_summary_raises_the_empty_learner_error(tmp_path):
    hooks = pytest.importorskip("fastloop.callbacks.hooks")
    new = _export_roundtrip(tmp_path, _fitted(tmp_path))
    with pytest.raises(Exception, match="This is an empty `Learner`"):
        hooks.model_summary(new)


def test_export_to_a_buffer_and_load_from_it():
    learn = make_learner(silent=True)
    buffer = io.BytesIO()
    learn.export(buffer)
    buffer.seek(0)
    new = load_learner(".", buffer)
    assert torch.equal(new.model[0].weight, learn.model[0].weight)


def test_the_export_file_loads_under_torchs_weights_only_default(tmp_path):
    learn = _fitted(tmp_path)
    learn.export("inference.pkl")
    state = torch.load(tmp_path / "inference.pkl", weights_only=True)
    model = make_model()
    model.load_state_dict(state["model_state"])  # the weights, without trusting the pickled objects
    assert torch.equal(model[0].weight, learn.model[0].weight)


def test_load_learner_restores_callbacks_layer_groups_and_references_to_the_learner(tmp_path):
    learn = make_learner(tmp_path, silent=True)
    learn.callbacks += [KeepsLearner(learn, k=4), KeepsLearner(learn, k=9), Registered(learn, a=5)]
    learn.split(lambda m: [m[2]])
    new = _export_roundtrip(tmp_path, learn)
    first, second, registered = new.callbacks
    assert (first.k, second.k) == (4, 9)  # two callbacks of one class both survive
    assert first.learn is new and registered.learn is new and new.registered is registered
    assert torch.equal(registered.scale, torch.ones(2))
    assert len(new.layer_groups) == 2
    assert new.layer_groups[1][0] is new.model[2]


def test_export_with_destroy_leaves_a_shell(tmp_path, capsys):
    learn = _fitted(tmp_path)
    learn.export(destroy=True)
    assert "self-destroyed" in capsys.readouterr().out
    assert load_learner(tmp_path).model is not None


def test_export_of_a_lambda_loss_says_what_cannot_be_pickled(tmp_path):
    learn = make_learner(tmp_path, loss_func=lambda out, y: nn.functional.cross_entropy(out, y))
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)) as info:
        learn.export()
    assert any("lambda" in n for n in getattr(info.value, "__notes__", []))


def test_load_learner_rejects_a_file_it_did_not_write(tmp_path):
    torch.save({"model": {}}, tmp_path / "other.pkl")
    with pytest.raises(ValueError, match="not a file written by fastloop"):
        load_learner(tmp_path, "other.pkl")


def test_export_does_nothing_on_a_non_zero_rank(tmp_path, monkeypatch):
    learn = make_learner(tmp_path)
    monkeypatch.setenv("RANK", "1")
    learn.export()
    assert not (tmp_path / "export.pkl").exists()


# ============================================================================================== defaults, init, dl
class StopAfter2(Callback):
    def on_batch_end(self, iteration, **kwargs):
        if iteration >= 1:
            return {"stop_epoch": True, "stop_training": True, "skip_validate": True}


def test_defaults_extra_callbacks_join_every_new_learner_as_v1s_own_test(monkeypatch, capsys):
    """fastai's test_callbacks_misc: a StopAfterNBatches set in defaults.extra_callbacks stops the fit."""
    monkeypatch.setattr(defaults, "extra_callbacks", [StopAfter2()])
    learn = make_learner()
    learn.fit(3)
    out = capsys.readouterr().out
    assert "train_loss" in out and "valid_loss" in out
    assert len(learn.recorder.losses) == 2 and len(learn.recorder.nb_batches) == 1


def test_learner_init_skips_batchnorm_and_frozen_layers_as_v1():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    learn = Learner(make_data(), model)
    with torch.no_grad():
        model[1].bias.fill_(0.5)
    model[2].requires_grad_(False)
    frozen = model[2].weight.detach().clone()
    learn.init(nn.init.ones_)
    assert torch.all(model[0].weight == 1) and torch.all(model[0].bias == 0)
    assert torch.all(model[1].bias == 0.5) and torch.all(model[1].weight == 1)  # BatchNorm untouched
    assert torch.equal(model[2].weight, frozen)


def test_dl_returns_the_loader_of_each_dataset_type():
    learn = make_learner()
    assert learn.dl() is learn.data.valid_dl
    assert learn.dl(DatasetType.Train) is learn.data.train_dl
    assert learn.dl(DatasetType.Fix) is learn.data.fix_dl


# ============================================================================================== show_results
def test_show_results_prints_targets_and_predicted_classes_for_plain_tensors(capsys):
    learn = make_learner()
    learn.show_results(rows=3)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["target", "prediction"]
    x, y = learn.data.one_batch(DatasetType.Valid)
    learn.model.eval()
    expected = learn.model(x).argmax(1)[:3]
    assert [line.split() for line in lines[1:]] == [[str(int(t)), str(int(p))] for t, p in zip(y[:3], expected)]


def test_show_results_of_a_regression_shows_values_and_large_targets_by_shape(capsys):
    x = torch.randn(16, 4)
    data = make_data()
    data.valid_dl.dl = torch.utils.data.DataLoader(TensorDataset(x, torch.randn(16, 3, 4, 4)), batch_size=8)
    learn = Learner(data, nn.Sequential(nn.Linear(4, 48), nn.Unflatten(1, (3, 4, 4))), loss_func=nn.MSELoss())
    learn.show_results(rows=2)
    out = capsys.readouterr().out
    assert out.count("tensor of shape (3, 4, 4)") == 4
    assert learn.callbacks == []  # the recording callback is removed again


# ============================================================================================== CUDA
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_purge_export_and_load_learner_on_cuda(tmp_path):
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    data = DataBunch.create(TensorDataset(x[:48], y[:48]), TensorDataset(x[48:], y[48:]), bs=16, num_workers=0,
                            device="cuda")
    learn = Learner(data, make_model(), loss_func=nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0]).cuda()),
                    path=tmp_path, silent=True)
    learn.fit(1)
    learn.purge(clear_opt=False)
    assert next(learn.model.parameters()).is_cuda and learn.opt is not None
    learn.fit(1)
    learn.export()
    new = load_learner(tmp_path, device="cuda")
    assert next(new.model.parameters()).is_cuda and new.loss_func.weight.is_cuda
    on_cpu = load_learner(tmp_path, device="cpu")
    assert not next(on_cpu.model.parameters()).is_cuda
    x = torch.randn(4, 4)
    learn.model.eval()
    on_cpu.model.eval()
    assert torch.allclose(learn.model(x.cuda()).cpu(), on_cpu.model(x), atol=1e-6)
