"""Learner and LearnerCallback: construction, callback registration, optimizer handling, layer groups, persistence."""

from __future__ import annotations

import io
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastloop.basic_train import Learner, LearnerCallback, Recorder
from fastloop.callback import Callback, OptimWrapper
from fastloop.core import defaults

from .conftest import make_data, make_learner, make_model
from .tracing import Tracer, table_lines


# ------------------------------------------------------------------------------------------ construction
def test_learner_defaults_follow_fastai_v1():
    data = make_data()
    learn = Learner(data, make_model())
    assert learn.loss_func is F.nll_loss  # a TensorDataset has no y.loss_func
    assert learn.wd == 1e-2 and learn.true_wd and learn.bn_wd and learn.train_bn
    assert str(learn.path) == "." and learn.model_dir == "models" and learn.metrics == []
    assert len(learn.layer_groups) == 1 and list(learn.layer_groups[0]) == list(learn.model)
    assert learn.callback_fns[0].func is Recorder and learn.callback_fns[0].keywords == {"add_time": True,
                                                                                           "silent": False}
    assert learn.opt is None


def test_callback_fns_may_be_a_bare_class_and_extra_callbacks_are_appended(monkeypatch):
    extra = Tracer()
    monkeypatch.setattr(defaults, "extra_callbacks", [extra])
    learn = Learner(make_data(), make_model(), callback_fns=Tracer, callbacks=Tracer(name="own"))
    assert learn.callback_fns[1] is Tracer
    assert [getattr(cb, "name", None) for cb in learn.callbacks] == ["own", "tracer"] and learn.callbacks[1] is extra


def test_callback_order_is_learn_callbacks_then_callback_fns_then_per_call_then_stable_sort(capsys):
    """Spec §6.1's live example: orders -30 (per-call), -10 (Recorder), -10 (per-call), 0 (learn),
    0 (per-call) and 5 (learn) run in exactly that order."""
    calls = []

    class Named(Callback):
        def __init__(self, name, order):
            self.name, self._order = name, order

        def on_train_begin(self, **kwargs):
            calls.append(self.name)

    class SpyRecorder(Recorder):
        def on_train_begin(self, **kwargs):
            calls.append("recorder")
            super().on_train_begin(**kwargs)

    learn = make_learner(callbacks=[Named("learn0", 0), Named("learn5", 5)])
    learn.callback_fns[0] = SpyRecorder
    learn.fit(1, 1e-3, callbacks=[Named("call-30", -30), Named("call-10", -10), Named("call0", 0)])
    assert calls == ["call-30", "recorder", "call-10", "learn0", "call0", "learn5"]


# ------------------------------------------------------------------------------------- LearnerCallback
def test_learner_callback_registers_under_its_snake_case_name_and_holds_a_weak_reference():
    learn = make_learner()

    class MyFancyCallback(LearnerCallback):
        pass

    cb = MyFancyCallback(learn)
    assert learn.my_fancy_callback is cb and cb.cb_name == "my_fancy_callback"
    assert cb.learn is learn and isinstance(cb.__dict__["_learn"], type(__import__("weakref").ref(learn)))
    assert cb.exclude == ["_learn"] and cb.not_min == []
    assert "_learn" not in cb.get_state()


def test_learner_callback_reads_unknown_attributes_from_the_learner():
    learn = make_learner()
    cb = LearnerCallback(learn)
    assert cb.model is learn.model and cb.data is learn.data and cb.loss_func is learn.loss_func
    with pytest.raises(AttributeError):
        _ = cb.no_such_attribute


def test_callback_fns_are_instantiated_anew_on_every_fit_and_replace_the_learner_attribute():
    learn = make_learner()
    learn.fit(1, 1e-3)
    first = learn.recorder
    learn.fit(1, 1e-3)
    assert learn.recorder is not first and isinstance(learn.recorder, Recorder)


class ColumnAdder(LearnerCallback):
    """fastai v1's test_callback.py: adds two metric columns from a callback with _order -20."""

    _order = -20

    def on_train_begin(self, **kwargs):
        self.learn.recorder.add_metric_names(["col_a", "col_b"])

    def on_epoch_end(self, last_metrics, **kwargs):
        return {"last_metrics": last_metrics + [0.123456, 0.654321]}


@pytest.mark.parametrize("how", ["callback_fns class", "callback_fns list", "learn.callbacks", "fit instance",
                                 "fit list"])
def test_a_metric_adding_callback_shows_its_columns_however_it_is_registered(how, capsys):
    learn = make_learner()
    callbacks = None
    if how == "callback_fns class":
        learn = make_learner(callback_fns=ColumnAdder)
    elif how == "callback_fns list":
        learn = make_learner(callback_fns=[ColumnAdder])
    elif how == "learn.callbacks":
        learn.callbacks.append(ColumnAdder(learn))
    elif how == "fit instance":
        callbacks = ColumnAdder(learn)
    else:
        callbacks = [ColumnAdder(learn)]
    learn.fit(1, 1e-3, callbacks=callbacks)
    header, row = table_lines(capsys.readouterr().out)
    assert header.split() == ["epoch", "train_loss", "valid_loss", "col_a", "col_b", "time"]
    assert row.split()[3:5] == ["0.123456", "0.654321"]


# --------------------------------------------------------------------------------- optimizer and lrs
def test_lr_range_turns_slices_into_one_lr_per_layer_group():
    learn = make_learner()
    learn.split(lambda m: [m[1], m[2]])
    assert len(learn.layer_groups) == 3
    assert learn.lr_range(0.1) == 0.1
    np.testing.assert_allclose(learn.lr_range(slice(1e-2)), [1e-3, 1e-3, 1e-2])
    np.testing.assert_allclose(learn.lr_range(slice(1e-4, 1e-2)), [1e-4, 1e-3, 1e-2])


def test_lr_range_with_a_start_and_a_single_group_divides_by_zero_as_v1():
    with pytest.raises(ZeroDivisionError):
        make_learner().lr_range(slice(1e-4, 1e-2))


def test_fit_creates_the_optimizer_then_resets_lr_and_wd_but_keeps_mom_and_beta():
    learn = make_learner()
    learn.fit(1, 1e-2, wd=0.1)
    assert isinstance(learn.opt, OptimWrapper) and learn.opt.lr == 1e-2 and learn.opt.wd == 0.1
    assert learn.opt.mom == 0.9 and learn.opt.beta == 0.99
    learn.opt.mom = 0.95
    learn.fit(1, 3e-3)
    assert learn.opt.lr == 3e-3 and learn.opt.wd == learn.wd and learn.opt.mom == 0.95
    assert learn.recorder.lrs == [3e-3] * 4 and set(learn.recorder.moms) == {0.95}


def test_recorder_lrs_hold_numpy_floats_when_the_lr_came_from_a_slice():
    learn = make_learner()
    learn.fit(1, slice(3e-3))
    assert all(isinstance(v, np.float64) for v in learn.recorder.lrs) and learn.recorder.lrs[0] == 3e-3


def test_freeze_keeps_batchnorm_trainable_and_unfreeze_restores_everything():
    learn = make_learner()
    learn.model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    learn.split(lambda m: [m[3]])
    learn.freeze()
    assert not learn.model[0].weight.requires_grad and learn.model[1].weight.requires_grad
    assert learn.model[3].weight.requires_grad
    assert learn.opt.lr == defaults.lr  # a slice stored as-is until the next fit (v1 quirk)
    learn.fit(1, 1e-3)
    learn.unfreeze()
    assert all(p.requires_grad for p in learn.model.parameters())
    learn.train_bn = False
    learn.freeze_to(1)
    assert not learn.model[1].weight.requires_grad


def test_freeze_needs_more_than_one_layer_group():
    with pytest.raises(AssertionError):
        make_learner().freeze()


# ------------------------------------------------------------------------------------------ persistence
def test_save_and_load_round_trip_the_model_and_optimizer_state(tmp_path):
    learn = make_learner(tmp_path)
    learn.fit(1, slice(1e-2))
    path = learn.save("stage1", return_path=True)
    assert path == tmp_path / "models" / "stage1.pth"
    saved = {k: v.clone() for k, v in learn.model.state_dict().items()}
    opt_state = {k: {n: t.clone() for n, t in s.items()} for k, s in learn.opt.state_dict()["state"].items()}
    learn.fit(1, 1e-2)
    learn.load("stage1")
    for k, v in learn.model.state_dict().items():
        assert torch.equal(v, saved[k])
    for k, s in learn.opt.state_dict()["state"].items():
        for n, t in s.items():
            assert torch.equal(t, opt_state[k][n])


def test_saved_files_load_under_torchs_weights_only_default_even_with_numpy_lrs(tmp_path):
    learn = make_learner(tmp_path)
    learn.fit(1, slice(3e-3))  # the lr is a numpy array
    path = learn.save("w", return_path=True)
    state = torch.load(path, weights_only=True)
    assert set(state) == {"model", "opt"} and state["opt"]["param_groups"][0]["lr"] == pytest.approx(3e-3)


def test_load_keeps_the_wrappers_lr_as_v1(tmp_path):
    learn = make_learner(tmp_path)
    learn.fit(1, 1e-2)
    learn.save("a")
    learn.opt.lr = 0.5
    learn.load("a")
    assert learn.opt.lr == 0.5 and learn.opt.opt.param_groups[0]["lr"] == 1e-2


def test_save_and_load_work_with_byte_buffers_and_without_optimizer():
    learn = make_learner()
    learn.fit(1, 1e-2)
    buf = io.BytesIO()
    learn.save(buf, with_opt=False)
    buf.seek(0)
    other = make_learner()
    with pytest.warns(UserWarning, match="doesn't contain an optimizer state"):
        other.load(buf, with_opt=True)
    for a, b in zip(learn.model.parameters(), other.model.parameters()):
        assert torch.equal(a, b)


def test_save_does_nothing_on_a_non_zero_rank(tmp_path, monkeypatch):
    learn = make_learner(tmp_path)
    monkeypatch.setenv("RANK", "1")
    assert learn.save("x", return_path=True) is None
    assert not (tmp_path / "models" / "x.pth").exists()


# ------------------------------------------------------------------------------------------ predictions
def test_get_preds_with_loss_returns_per_item_losses_and_activations_by_loss_type():
    learn = make_learner()
    preds, targets, losses = learn.get_preds(with_loss=True)
    raw = learn.model(learn.data.valid_ds.tensors[0]).detach()
    assert torch.allclose(preds, raw.softmax(-1), atol=1e-6)
    assert torch.allclose(losses, F.cross_entropy(raw, targets, reduction="none"), atol=1e-6)
    assert learn.loss_func.reduction == "mean"  # restored
    learn.loss_func = nn.BCEWithLogitsLoss()
    assert torch.allclose(learn.get_preds()[0], raw.sigmoid(), atol=1e-6)
    learn.loss_func = partial(F.nll_loss)
    assert torch.allclose(learn.get_preds()[0], raw.exp(), atol=1e-6)
    learn.loss_func = nn.MSELoss()
    assert torch.allclose(learn.get_preds()[0], raw, atol=1e-6)


def test_pred_batch_and_predict_return_activated_outputs():
    learn = make_learner()
    x, y = learn.data.one_batch()
    probs = learn.pred_batch(batch=(x, y))
    assert torch.allclose(probs, learn.model(x).detach().softmax(-1), atol=1e-6)
    pred, idx, p = learn.predict(x[0])
    assert torch.equal(pred, probs[0].argmax()) and torch.equal(idx, pred) and torch.allclose(p, probs[0])
    with pytest.raises(ValueError, match="ItemList"):
        learn.pred_batch(reconstruct=True)


def test_learner_callbacks_run_in_pred_batch_with_batch_begin_and_loss_begin_only():
    learn = make_learner()
    tracer = Tracer()
    learn.callbacks.append(tracer)
    learn.pred_batch()
    assert tracer.events() == ["batch_begin", "loss_begin"]


def test_an_unbound_learner_callback_raises_a_plain_attribute_error_instead_of_recursing():
    cb = LearnerCallback.__new__(LearnerCallback)  # as when a subclass reads an attribute before __init__
    with pytest.raises(AttributeError, match="'LearnerCallback' object has no attribute 'model'"):
        _ = cb.model


def test_a_checkpoint_written_by_fastai_v1_with_numpy_numbers_loads(tmp_path):
    """fastai 1.0.61's save keeps numpy floats in the optimizer's param groups; load() allows exactly those."""
    learn = make_learner(tmp_path)
    learn.fit(1, 1e-2)
    opt_state = learn.opt.state_dict()
    opt_state["param_groups"] = [{**pg, "lr": np.float64(pg["lr"])} for pg in opt_state["param_groups"]]
    path = tmp_path / "models" / "v1.pth"
    path.parent.mkdir()
    torch.save({"model": learn.model.state_dict(), "opt": opt_state}, path)
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path)  # torch's safe default refuses numpy scalars...
    other = make_learner(tmp_path)
    other.load("v1")  # ...fastloop allows exactly the numpy number types
    assert all(torch.equal(a, b) for a, b in zip(learn.model.parameters(), other.model.parameters()))
    assert other.opt.opt.state_dict()["param_groups"][0]["lr"] == pytest.approx(1e-2)


def test_get_preds_looks_activations_up_by_loss_class_name_as_v1_so_subclasses_get_none():
    class MyCE(nn.CrossEntropyLoss):
        pass

    learn = make_learner(loss_func=MyCE())
    raw = learn.model(learn.data.valid_ds.tensors[0]).detach()
    assert torch.allclose(learn.get_preds()[0], raw, atol=1e-6)


def test_get_preds_casts_bool_targets_to_float_and_keeps_integer_ones():
    from torch.utils.data import TensorDataset

    from fastloop.basic_data import DataBunch

    x = torch.randn(24, 4)
    y = x[:, :3] > 0
    data = DataBunch.create(TensorDataset(x[:16], y[:16]), TensorDataset(x[16:], y[16:]), bs=4, num_workers=0,
                            device="cpu")
    learn = Learner(data, nn.Linear(4, 3), loss_func=nn.BCEWithLogitsLoss())
    assert learn.get_preds()[1].dtype == torch.float32
    assert make_learner().get_preds()[1].dtype == torch.long


def test_frozen_layers_keep_v1s_optimizer_layout_but_true_weight_decay_leaves_them_unchanged():
    learn = make_learner()
    learn.split(lambda m: [m[2]])
    learn.freeze()
    frozen_w, frozen_b = learn.model[0].weight.clone(), learn.model[0].bias.clone()
    assert learn.opt.n_params == 3  # first group: only the frozen bias (v1 keeps it); second: weight + bias
    learn.fit(2, 1e-1, wd=0.5)
    assert torch.equal(learn.model[0].weight, frozen_w) and torch.equal(learn.model[0].bias, frozen_b)
    assert not torch.equal(learn.model[2].weight, make_learner().model[2].weight)
