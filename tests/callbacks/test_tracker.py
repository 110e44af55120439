"""Trackers: EarlyStopping, SaveModel (atomic, best model reloaded), ReduceLROnPlateau, TerminateOnNaN (v1 and
the opt-in skip), TrackEpoch; driven by a scripted metric so every decision can be worked out by hand."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import fastloop._io as fio
from fastloop.callback import Callback
from fastloop.callbacks.misc import StopAfterNBatches
from fastloop.callbacks.tracker import (
    EarlyStoppingCallback,
    ReduceLROnPlateauCallback,
    SaveModelCallback,
    TerminateOnNaNCallback,
    TrackEpochCallback,
    TrackerCallback,
)

from ..conftest import make_learner
from ..tracing import table_lines


class Scripted(Callback):
    "A metric Callback named `name` whose value at epoch k is values[k]."

    def __init__(self, values, name="score"):
        self.values, self.name, self.k = list(values), name, 0

    def on_epoch_end(self, last_metrics, **kwargs):
        v = self.values[self.k]
        self.k += 1
        return {"last_metrics": last_metrics + [v]}


def scripted_learner(tmp_path, values, **kwargs):
    return make_learner(tmp_path, metrics=[Scripted(values)], **kwargs)


# ------------------------------------------------------------------------------------------ TrackerCallback
def test_mode_auto_means_less_for_losses_and_errors_greater_otherwise(learn):
    assert TrackerCallback(learn).operator is np.less
    assert TrackerCallback(learn, monitor="error_rate").operator is np.less
    assert TrackerCallback(learn, monitor="accuracy").operator is np.greater
    assert TrackerCallback(learn, monitor="accuracy", mode="min").operator is np.less
    with pytest.warns(UserWarning, match='mode bogus is invalid, falling back to "auto" mode'):
        cb = TrackerCallback(learn, monitor="valid_loss", mode="bogus")
    assert cb.mode == "auto" and cb.operator is np.less


def test_best_resets_at_train_begin_and_unknown_monitors_warn_with_the_available_names(tmp_path):
    learn = scripted_learner(tmp_path, [0.5])
    cb = EarlyStoppingCallback(learn, monitor="nope")
    cb.best = 123.0
    with pytest.warns(UserWarning, match="`nope` which is not available. Available metrics are: train_loss, "
                                         "valid_loss, score"):
        learn.fit(1, 1e-3, callbacks=[cb])
    assert cb.best == -float("inf") and cb.wait == 0  # 'nope' -> greater is better


def test_train_loss_is_monitored_as_a_numpy_value(tmp_path):
    learn = make_learner(tmp_path)
    cb = EarlyStoppingCallback(learn, monitor="train_loss", patience=5)
    learn.fit(1, 1e-3, callbacks=[cb])
    assert isinstance(cb.best, np.ndarray) and cb.best == pytest.approx(float(learn.recorder.losses[-1]))


def test_the_last_metric_is_monitored_even_without_a_time_column(tmp_path):
    """v1 mapped metrics onto names[3:-1], losing the last metric when add_time=False; fastloop does not."""
    learn = scripted_learner(tmp_path, [0.1, 0.2], add_time=False)
    cb = EarlyStoppingCallback(learn, monitor="score", patience=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        learn.fit(2, 1e-3, callbacks=[cb])
    assert cb.best == 0.2


# ------------------------------------------------------------------------------------------ EarlyStopping
def test_early_stopping_stops_after_patience_epochs_without_improvement(tmp_path, capsys):
    """score: 0.5, 0.6, 0.6, 0.55, ... with patience 1 (greater is better): waits 1, 2 -> stop at epoch 3."""
    learn = scripted_learner(tmp_path, [0.5, 0.6, 0.6, 0.55, 0.9, 0.9])
    cb = EarlyStoppingCallback(learn, monitor="score", patience=1)
    learn.fit(6, 1e-3, callbacks=[cb])
    assert len(learn.recorder.nb_batches) == 4
    assert "Epoch 3: early stopping" in capsys.readouterr().out
    assert cb.best == 0.6 and cb.wait == 2


def test_min_delta_is_required_for_an_improvement(tmp_path, capsys):
    learn = scripted_learner(tmp_path, [0.5, 0.505, 0.52, 0.6])
    cb = EarlyStoppingCallback(learn, monitor="score", min_delta=0.01, patience=0)
    learn.fit(4, 1e-3, callbacks=[cb])
    assert len(learn.recorder.nb_batches) == 2 and "Epoch 1: early stopping" in capsys.readouterr().out


def test_min_delta_is_negated_when_less_is_better(tmp_path):
    learn = make_learner(tmp_path)
    cb = EarlyStoppingCallback(learn, min_delta=0.01)
    assert cb.min_delta == -0.01


def test_unvalidated_epochs_change_nothing(tmp_path):
    learn = make_learner(tmp_path)
    cb = EarlyStoppingCallback(learn, patience=0)
    learn.fit(1, 1e-3, callbacks=[cb, StopAfterNBatches(2)])
    assert cb.wait == 0 and cb.best == float("inf")


def test_get_state_exposes_best_and_wait_but_not_the_learner_or_the_operator(tmp_path):
    learn = scripted_learner(tmp_path, [0.5, 0.4])
    cb = EarlyStoppingCallback(learn, monitor="score", patience=3)
    learn.fit(2, 1e-3, callbacks=[cb])
    state = cb.get_state()
    assert state["best"] == 0.5 and state["wait"] == 1 and state["patience"] == 3
    assert "_learn" not in state and "operator" not in state
    assert cb.get_state(minimal=False)["operator"] is np.greater


# ------------------------------------------------------------------------------------------ SaveModel
def weights(learn):
    return [p.detach().clone() for p in learn.model.parameters()]


def test_save_model_keeps_the_best_epoch_and_loads_it_at_the_end(tmp_path, capsys):
    class Snap(Callback):
        _order = 5  # after SaveModel's epoch_end: the weights of each epoch

        def __init__(self):
            self.w = []

        def on_epoch_end(self, **kwargs):
            self.w.append(weights(learn))

    learn = scripted_learner(tmp_path, [0.5, 0.7, 0.6])
    snap = Snap()
    cb = SaveModelCallback(learn, monitor="score", name="best")
    learn.fit(3, 1e-2, callbacks=[cb, snap])
    out = capsys.readouterr().out
    assert "Better model found at epoch 0 with score value: 0.5." in out
    assert "Better model found at epoch 1 with score value: 0.7." in out and "epoch 2" not in out
    assert all(torch.equal(a, b) for a, b in zip(weights(learn), snap.w[1]))  # epoch 1's model reloaded
    assert not all(torch.equal(a, b) for a, b in zip(snap.w[1], snap.w[2]))
    assert sorted(os.listdir(tmp_path / "models")) == ["best.pth"]  # no temporary file left behind


def test_save_model_every_epoch_writes_one_file_per_epoch(tmp_path):
    learn = make_learner(tmp_path)
    learn.fit(2, 1e-3, callbacks=[SaveModelCallback(learn, every="epoch", name="ep")])
    assert sorted(os.listdir(tmp_path / "models")) == ["ep_0.pth", "ep_1.pth"]
    with pytest.warns(UserWarning, match='SaveModel every bogus is invalid, falling back to "improvement"'):
        assert SaveModelCallback(learn, every="bogus").every == "improvement"


def test_a_failed_save_leaves_the_previous_best_file_intact(tmp_path, monkeypatch):
    learn = scripted_learner(tmp_path, [0.5, 0.7])
    cb = SaveModelCallback(learn, monitor="score", name="best")
    learn.fit(1, 1e-2, callbacks=[cb])
    good = (tmp_path / "models" / "best.pth").read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(fio.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        learn.fit(1, 1e-2, callbacks=[cb])  # best resets to -inf: epoch 0 improves and saves -> the rename fails
    assert (tmp_path / "models" / "best.pth").read_bytes() == good
    assert sorted(os.listdir(tmp_path / "models")) == ["best.pth"]


def test_the_best_model_is_loaded_even_when_the_fit_raises(tmp_path):
    class Boom(Callback):
        def on_epoch_end(self, epoch, **kwargs):
            if epoch == 1:
                raise ValueError("boom")

    learn = scripted_learner(tmp_path, [0.9, 0.1])
    cb = SaveModelCallback(learn, monitor="score", name="best")

    class Snap(Callback):
        _order = 5

        def on_epoch_end(self, epoch, **kwargs):
            if epoch == 0:
                self.w = weights(learn)

    snap = Snap()
    with pytest.raises(ValueError, match="boom"):
        learn.fit(3, 1e-2, callbacks=[cb, Boom(), snap])
    assert all(torch.equal(a, b) for a, b in zip(weights(learn), snap.w))


def test_jump_to_epoch_loads_the_previous_epochs_file(tmp_path, capsys):
    learn = make_learner(tmp_path)
    learn.fit(1, 1e-3, callbacks=[SaveModelCallback(learn, every="epoch", name="ep")])
    saved = weights(learn)
    learn.fit(1, 1e-2)
    cb = SaveModelCallback(learn, every="epoch", name="ep")
    cb.jump_to_epoch(1)
    assert "Loaded ep_0" in capsys.readouterr().out
    assert all(torch.equal(a, b) for a, b in zip(weights(learn), saved))
    cb.jump_to_epoch(5)
    assert "Model ep_4 not found." in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ ReduceLROnPlateau
def test_reduce_lr_multiplies_the_lr_after_patience_epochs_and_records_it(tmp_path, capsys):
    """score 0.5, 0.4, 0.4, 0.45, 0.3, 0.6 with patience 1, factor 0.5 (greater is better)."""
    learn = scripted_learner(tmp_path, [0.5, 0.4, 0.4, 0.45, 0.3, 0.6])
    cb = ReduceLROnPlateauCallback(learn, monitor="score", patience=1, factor=0.5, min_lr=1e-5)
    learn.fit(6, 1e-2, callbacks=[cb])
    lrs = learn.recorder.lrs
    per_epoch = [lrs[4 * e] for e in range(6)]
    # epoch 1: wait 1; epoch 2: wait 2 > 1 -> 5e-3; epoch 3: wait 1; epoch 4: wait 2 -> 2.5e-3; epoch 5 improves
    assert per_epoch == pytest.approx([1e-2, 1e-2, 1e-2, 5e-3, 5e-3, 2.5e-3])
    out = capsys.readouterr().out
    assert "Epoch 2: reducing lr to 0.005" in out and "Epoch 4: reducing lr to 0.0025" in out
    assert cb.lr_history == [(2, pytest.approx(5e-3)), (4, pytest.approx(2.5e-3))]
    assert cb.best == 0.6 and cb.wait == 0


def test_reduce_lr_stops_at_min_lr_while_the_wait_keeps_counting(tmp_path):
    learn = scripted_learner(tmp_path, [0.5, 0.4, 0.4, 0.4])
    cb = ReduceLROnPlateauCallback(learn, monitor="score", patience=0, factor=0.5, min_lr=4e-3)
    learn.fit(4, 1e-2, callbacks=[cb])
    assert learn.opt.lr == pytest.approx(2.5e-3)  # 1e-2 -> 5e-3 -> 2.5e-3, then 2.5e-3 <= min_lr
    assert cb.wait == 1 and len(cb.lr_history) == 2


def test_reduce_lr_collapses_discriminative_lrs_as_in_v1(tmp_path):
    learn = scripted_learner(tmp_path, [0.5, 0.4])
    learn.split(lambda m: [m[2]])
    learn.fit(2, slice(1e-3, 1e-2), callbacks=[ReduceLROnPlateauCallback(learn, monitor="score", factor=0.5)])
    assert learn.opt._lr == pytest.approx([5e-3, 5e-3])


# ------------------------------------------------------------------------------------------ TerminateOnNaN
class NanAt(nn.Module):
    "Cross-entropy, NaN at call `at` (1-based)."

    def __init__(self, at):
        super().__init__()
        self.n, self.at = 0, at

    def forward(self, out, y):
        self.n += 1
        loss = nn.functional.cross_entropy(out, y)
        return loss * float("nan") if self.n == self.at else loss


def test_terminate_on_nan_stops_at_the_nan_batch_without_validation(tmp_path, capsys):
    learn = make_learner(tmp_path, loss_func=NanAt(3))
    learn.fit(3, 1e-2, callbacks=[TerminateOnNaNCallback()])
    out = capsys.readouterr().out
    assert "Epoch/Batch (0/2): Invalid loss, terminating training." in out
    assert learn.recorder.nb_batches == [3] and learn.recorder.val_losses == [None]
    assert any(torch.isnan(p).any() for p in learn.model.parameters())  # v1: the NaN step was taken


def test_skip_nan_step_keeps_the_last_good_weights(tmp_path):
    learn = make_learner(tmp_path, loss_func=NanAt(3))
    learn.fit(3, 1e-2, callbacks=[TerminateOnNaNCallback(skip_nan_step=True)])
    reference = make_learner(tmp_path)
    reference.fit(1, 1e-2, callbacks=[StopAfterNBatches(2)])  # the same two good steps, then stop
    assert learn.recorder.nb_batches == [3]
    assert all(torch.equal(a, b) for a, b in zip(learn.model.parameters(), reference.model.parameters()))


def test_nan_in_validation_stops_too_and_get_preds_is_not_broken(tmp_path, capsys):
    learn = make_learner(tmp_path, loss_func=NanAt(5))  # 4 training batches, then validation batch 1
    learn.callbacks.append(TerminateOnNaNCallback())
    learn.fit(2, 1e-3)
    assert "Epoch/Batch (0/4)" in capsys.readouterr().out and len(learn.recorder.nb_batches) == 1
    preds, targets = learn.get_preds()  # last_loss is an (output, target) pair here: v1 raised TypeError
    assert len(preds) == len(targets) == 32


# ------------------------------------------------------------------------------------------ TrackEpoch
def test_track_epoch_writes_the_epoch_and_a_new_fit_resumes_after_it(tmp_path, capsys):
    learn = make_learner(tmp_path)
    learn.fit(2, 1e-3, callbacks=[TrackEpochCallback(learn)])
    path = tmp_path / "models" / "epoch"
    assert path.read_text() == "1" and TrackEpochCallback._order == -20
    capsys.readouterr()
    learn.fit(4, 1e-3, callbacks=[TrackEpochCallback(learn)])
    rows = table_lines(capsys.readouterr().out)[1:]
    assert [r.split()[0] for r in rows] == ["2", "3"] and path.read_text() == "3"
    TrackEpochCallback(learn).restart()
    assert not path.exists()


def test_track_epoch_offset_and_an_unreadable_file(tmp_path):
    learn = make_learner(tmp_path)
    assert TrackEpochCallback(learn, epoch_offset=3).on_train_begin() == {"epoch": 3}  # v1: AttributeError
    cb = TrackEpochCallback(learn)
    cb.path.write_text("garbage")
    assert cb.on_train_begin() == {"epoch": 0}


def test_track_epoch_writes_atomically(tmp_path, monkeypatch):
    learn = make_learner(tmp_path)
    cb = TrackEpochCallback(learn)
    cb.on_epoch_end(epoch=4)
    monkeypatch.setattr(fio.os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError("crash")))
    with pytest.raises(OSError):
        cb.on_epoch_end(epoch=5)
    assert cb.path.read_text() == "4" and os.listdir(cb.path.parent) == ["epoch"]
