"""Checkpoints (fastloop._checkpoint, fastloop.callbacks.checkpoint): resume equivalence, Ctrl-C, atomicity, checks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch
from torch import nn

import fastloop._io
from fastloop._checkpoint import CheckpointError, CheckpointMismatchError
from fastloop.basic_train import Learner, LearnerCallback
from fastloop.callback import Callback, Scheduler, annealing_cos
from fastloop.callbacks.checkpoint import CheckpointCallback, latest_checkpoint
from tests import resume_scenario
from tests.conftest import make_data, make_learner
from tests.tracing import Tracer

REPO = Path(__file__).resolve().parent.parent


# ============================================================================ resume in a fresh process
@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """Runs tests/resume_scenario.py: one process writes the reference and the checkpoints, a second (fresh)
    process resumes from every checkpoint.  Two processes in all, to keep the suite fast."""
    folder = tmp_path_factory.mktemp("resume")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for args in (["write", str(folder)], ["resume", str(folder), *resume_scenario.NAMES]):
        proc = subprocess.run([sys.executable, "-m", "tests.resume_scenario", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return folder


def _assert_bitwise_equal(ref, res, path="state"):
    if isinstance(ref, torch.Tensor):
        assert ref.dtype == res.dtype and torch.equal(ref, res), f"{path} differs"
    elif isinstance(ref, dict):
        assert ref.keys() == res.keys(), f"{path}: keys differ"
        for k in ref:
            _assert_bitwise_equal(ref[k], res[k], f"{path}[{k!r}]")
    elif isinstance(ref, (list, tuple)):
        assert len(ref) == len(res), f"{path}: lengths differ"
        for i, (a, b) in enumerate(zip(ref, res)):
            _assert_bitwise_equal(a, b, f"{path}[{i}]")
    else:
        assert type(ref) is type(res) and ref == res, f"{path}: {ref!r} != {res!r}"


@pytest.mark.parametrize("name", resume_scenario.NAMES)
def test_resuming_in_a_fresh_process_ends_bitwise_equal_to_the_uninterrupted_fit(scenario, name):
    """Seeded 3-epoch fit (shuffle, dropout, one-cycle, early stopping, a metric), checkpointed mid-epoch (b1, b6),
    at an epoch's last batch (b3), at an epoch end (e0), by Ctrl-C during validation (int_val) and during a
    training batch (int_train): the resumed fit's weights, optimizer state, Recorder history, callback states,
    final counters and even the final RNG state equal the uninterrupted run's, bit for bit."""
    ref = torch.load(scenario / "ref.pth", weights_only=False)
    res = torch.load(scenario / f"res_{name}.pth", weights_only=False)
    assert ref["final"] == {"epoch": 3, "iteration": 12} and ref["early"]["wait"] == 2  # early stopping fired at 2
    _assert_bitwise_equal(ref, res)


def test_scenario_checkpoints_load_under_weights_only_and_sit_where_they_were_requested(scenario):
    "Every checkpoint loads with torch.load(weights_only=True); Ctrl-C in validation waits for the epoch end."
    positions = {}
    for name in resume_scenario.NAMES:
        payload = torch.load(scenario / "models" / f"{name}.pth", weights_only=True)
        positions[name] = payload["position"]
    assert positions["b1"] == {"kind": "batch", "epoch": 0, "num_batch": 2, "iteration": 2}
    assert positions["b3"] == {"kind": "batch", "epoch": 0, "num_batch": 4, "iteration": 4}
    assert positions["e0"]["kind"] == "epoch" and positions["e0"]["epoch"] == 1
    assert positions["int_val"]["kind"] == "epoch" and positions["int_val"]["epoch"] == 2
    assert positions["int_train"] == {"kind": "batch", "epoch": 2, "num_batch": 2, "iteration": 10}


# ======================================================================================= helpers
def _snapshot(learn: Learner) -> dict:
    return {"model": {k: v.clone() for k, v in learn.model.state_dict().items()},
            "opt": {k: {n: t.clone() for n, t in s.items()} for k, s in learn.opt.state_dict()["state"].items()},
            "losses": [float(x) for x in learn.recorder.losses], "lrs": list(learn.recorder.lrs)}


def _same(a: dict, b: dict) -> bool:
    return (all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
            and all(torch.equal(a["opt"][p][n], b["opt"][p][n]) for p in a["opt"] for n in a["opt"][p])
            and a["losses"] == b["losses"] and a["lrs"] == b["lrs"])


def _dropout_learner(tmp_path, seed=0) -> Learner:
    torch.manual_seed(seed)
    data = make_data(n_train=64, n_valid=32, bs=16)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2))
    return Learner(data, model, loss_func=nn.CrossEntropyLoss(), path=tmp_path, silent=True)


class SaveAt(Callback):
    "Requests checkpoint `name` at the on_batch_end of training iteration `it` or the on_epoch_end of `epoch`."

    def __init__(self, learn, name="ck", it=None, epoch=None, valid_epoch=None):
        self.learn, self.name, self.it, self.epoch, self.valid_epoch = learn, name, it, epoch, valid_epoch
        self.exclude = ["learn", "name", "it", "epoch", "valid_epoch"]

    def on_batch_end(self, train, iteration, epoch, **kwargs):
        if train and iteration == self.it or not train and epoch == self.valid_epoch:
            self.path = str(self.learn.save_checkpoint(self.name))
            self.valid_epoch = None

    def on_epoch_end(self, epoch, **kwargs):
        if epoch == self.epoch:
            self.learn.save_checkpoint(self.name)


# ===================================================================================== between fits
def test_a_checkpoint_between_fits_continues_like_the_same_process_would(tmp_path):
    """fit, save_checkpoint, fit == fit, then (fresh learner, other seed) fit(resume_from=...): same weights, Adam
    state and losses -- lr/wd come from the new fit's arguments, mom/beta/RNG/optimizer state from the file."""
    learn = _dropout_learner(tmp_path)
    learn.fit(1, 1e-2)
    learn.save_checkpoint("between")
    learn.fit(1, 3e-3)
    ref = _snapshot(learn)
    other = _dropout_learner(tmp_path, seed=99)
    other.fit(1, 3e-3, resume_from="between")
    assert _same(ref, _snapshot(other))
    assert other.opt.lr == 3e-3


def test_load_checkpoint_restores_weights_optimizer_and_rng(tmp_path):
    learn = _dropout_learner(tmp_path)
    learn.fit(1, 1e-2)
    path = learn.save_checkpoint("ck")
    expected_draw = torch.rand(3)
    other = _dropout_learner(tmp_path, seed=5)
    other.load_checkpoint("ck")
    assert torch.equal(torch.rand(3), expected_draw)
    for k, v in learn.model.state_dict().items():
        assert torch.equal(other.model.state_dict()[k], v)
    assert other.opt.state_dict()["state"].keys() == learn.opt.state_dict()["state"].keys()
    assert path == tmp_path / "models" / "ck.pth"


def test_learn_callbacks_state_is_saved_between_fits_and_restored_by_resume(tmp_path):
    class Counter(Callback):
        def __init__(self):
            self.batches = 0

        def on_batch_end(self, train, **kwargs):
            self.batches += train

    learn = _dropout_learner(tmp_path)
    learn.callbacks.append(Counter())
    learn.fit(1, 1e-2)
    learn.save_checkpoint("cb")
    other = _dropout_learner(tmp_path)
    other.callbacks.append(Counter())
    other.fit(1, 1e-2, resume_from="cb")
    assert other.callbacks[0].batches == 8


# =========================================================================================== Ctrl-C
def test_ctrl_c_runs_train_end_then_writes_the_checkpoint_then_propagates(tmp_path):
    """A SIGINT in batch 2's on_batch_begin: batch 2 finishes (all on_batch_end hooks run), on_train_end gets
    exception=False and runs before the file exists, the checkpoint sits after batch 2, the interrupt propagates,
    and the previous SIGINT handler is back."""
    learn = _dropout_learner(tmp_path)
    target = tmp_path / "models" / "stop.pth"
    seen = {}

    class Interrupt(Callback):
        def on_batch_begin(self, iteration, **kwargs):
            if iteration == 1:
                os.kill(os.getpid(), signal.SIGINT)

        def on_train_end(self, exception, **kwargs):
            seen["exception"], seen["file_then"] = exception, target.exists()

    tracer = Tracer(order=10)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        learn.fit(2, 1e-2, callbacks=[Interrupt(), tracer], save_on_interrupt="stop")
    assert signal.getsignal(signal.SIGINT) is before
    assert seen == {"exception": False, "file_then": False}
    assert tracer.events()[-2:] == ["batch_end", "train_end"] and tracer.seen["batch_end"] == 2
    payload = torch.load(target, weights_only=True)
    assert payload["position"] == {"kind": "batch", "epoch": 0, "num_batch": 2, "iteration": 2}


def test_a_second_ctrl_c_interrupts_at_once_and_writes_nothing(tmp_path):
    learn = _dropout_learner(tmp_path)

    class TwoInterrupts(Callback):
        def on_backward_begin(self, iteration, **kwargs):
            if iteration == 1:
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)

    tracer = Tracer(order=10)
    with pytest.warns(UserWarning, match="middle of a batch"), pytest.raises(KeyboardInterrupt):
        learn.fit(1, 1e-2, callbacks=[TwoInterrupts(), tracer], save_on_interrupt=True)
    assert tracer.seen["batch_end"] == 1 and tracer.events()[-1] == "train_end"
    assert not (tmp_path / "models" / "interrupt.pth").exists()


def test_a_keyboard_interrupt_raised_by_code_mid_batch_is_not_swallowed_and_writes_no_inexact_checkpoint(tmp_path):
    learn = _dropout_learner(tmp_path)

    class Raise(Callback):
        def on_step_end(self, iteration, **kwargs):
            if iteration == 1:
                raise KeyboardInterrupt

    tracer = Tracer(order=10)
    with pytest.warns(UserWarning, match="was not written"), pytest.raises(KeyboardInterrupt):
        learn.fit(1, 1e-2, callbacks=[Raise(), tracer], save_on_interrupt="ki")
    assert tracer.kwargs[-1] == ("train_end", {**tracer.kwargs[-1][1], "exception": False})
    assert not (tmp_path / "models" / "ki.pth").exists()


def test_without_save_on_interrupt_sigint_is_not_intercepted(tmp_path):
    learn = _dropout_learner(tmp_path)
    handlers = []

    class Look(Callback):
        def on_batch_begin(self, **kwargs):
            handlers.append(signal.getsignal(signal.SIGINT))

    learn.fit(1, 1e-2, callbacks=[Look()])
    assert all(h is signal.getsignal(signal.SIGINT) for h in handlers)


# ====================================================================================== safe points
def test_a_request_during_validation_is_written_after_the_epoch(tmp_path):
    learn = _dropout_learner(tmp_path)
    learn.fit(2, 1e-2, callbacks=[SaveAt(learn, "val", valid_epoch=0)])
    payload = torch.load(tmp_path / "models" / "val.pth", weights_only=True)
    assert payload["position"] == {"kind": "epoch", "epoch": 1, "num_batch": 4, "iteration": 4}


def test_a_request_at_on_batch_end_includes_the_callbacks_that_run_after_the_requester(tmp_path):
    "The file is written after every on_batch_end hook: a later callback's update of that batch is in it."

    class Late(Callback):
        _order = 20

        def __init__(self):
            self.n = 0

        def on_batch_end(self, **kwargs):
            self.n += 1

    learn = _dropout_learner(tmp_path)
    learn.fit(1, 1e-2, callbacks=[SaveAt(learn, "late", it=1), Late()])
    payload = torch.load(tmp_path / "models" / "late.pth", weights_only=True)
    late = next(c for c in payload["callbacks"] if c["class"].endswith(".Late"))
    assert late["state"]["n"] == 2


def test_save_checkpoint_in_on_train_end_writes_at_once_as_a_between_fits_checkpoint(tmp_path):
    class AtEnd(LearnerCallback):
        def on_train_end(self, **kwargs):
            self.learn.save_checkpoint("end")
            self.existed = (self.learn.path / "models" / "end.pth").exists()

    learn = _dropout_learner(tmp_path)
    cb = AtEnd(learn)
    learn.fit(1, 1e-2, callbacks=[cb])
    assert cb.existed
    assert torch.load(tmp_path / "models" / "end.pth", weights_only=True)["position"] == {"kind": "between_fits"}


def test_a_request_that_no_safe_point_honours_is_dropped_with_a_warning(tmp_path):
    class RequestThenFail(LearnerCallback):
        def on_backward_end(self, **kwargs):
            self.learn.save_checkpoint("never")
            raise RuntimeError("boom")

    learn = _dropout_learner(tmp_path)
    with pytest.warns(UserWarning, match="were not written"), pytest.raises(RuntimeError, match="boom"):
        learn.fit(1, 1e-2, callbacks=[RequestThenFail(learn)])
    assert not (tmp_path / "models" / "never.pth").exists()


# ======================================================================================= resuming
def _fit_with(learn, name=None, **kw):
    learn.fit(2, 1e-2, callbacks=[SaveAt(learn, **kw)] if kw else [SaveAt(learn)], resume_from=name)
    return _snapshot(learn)


@pytest.mark.parametrize("where", [{"it": 2}, {"it": 3}, {"it": 5}, {"epoch": 0}])
def test_resuming_in_process_matches_the_uninterrupted_fit(tmp_path, where):
    ref = _fit_with(_dropout_learner(tmp_path), **where)
    res = _fit_with(_dropout_learner(tmp_path, seed=7), "ck")
    assert _same(ref, res)


def test_resuming_mid_epoch_skips_the_done_batches_without_loading_them(tmp_path):
    learn = _dropout_learner(tmp_path)
    learn.fit(1, 1e-2, callbacks=[SaveAt(learn, it=1)])
    other = _dropout_learner(tmp_path)
    ds = other.data.train_dl.dl.dataset
    loaded = []
    original = type(ds).__getitem__
    type(ds).__getitem__ = lambda self, i: (loaded.append(i), original(self, i))[1]
    try:
        other.fit(1, 1e-2, callbacks=[SaveAt(other)], resume_from="ck")
    finally:
        type(ds).__getitem__ = original
    assert len(loaded) == 2 * 16 + 32  # the last two training batches and the validation set
    assert len(other.recorder.losses) == 4  # two restored, two new


def test_resuming_at_an_epoch_boundary_calls_jump_to_epoch_then_restores_state(tmp_path):
    class Jumpy(Callback):
        def __init__(self):
            self.count, self.jumps = 0, []
            self.exclude = ["jumps"]  # not checkpointed: what the resumed fit calls stays visible

        def on_train_begin(self, **kwargs):
            self.count = 0

        def on_epoch_end(self, **kwargs):
            self.count += 1

        def jump_to_epoch(self, epoch):
            self.jumps.append(epoch)

    learn = _dropout_learner(tmp_path)
    learn.fit(3, 1e-2, callbacks=[Jumpy(), SaveAt(learn, epoch=1)])
    other = _dropout_learner(tmp_path)
    jumpy = Jumpy()
    other.fit(3, 1e-2, callbacks=[jumpy, SaveAt(other)], resume_from="ck")
    assert jumpy.count == 3  # 2 restored (jump_to_epoch ran before the restore) + the last epoch
    assert jumpy.jumps == [2]
    learn.fit(3, 1e-2, callbacks=[Jumpy(), SaveAt(learn, it=5)])
    mid = Jumpy()
    other.fit(3, 1e-2, callbacks=[mid, SaveAt(other)], resume_from=str(tmp_path / "models" / "ck.pth"))
    assert mid.jumps == [] and mid.count == 3  # resuming inside an epoch: no jump_to_epoch


def test_resuming_from_a_checkpoint_written_as_early_stopping_fired_runs_no_more_epochs(tmp_path):
    class StopAtOne(Callback):
        def on_epoch_end(self, epoch, **kwargs):
            return {"stop_training": epoch == 1}

    class Log(Tracer):
        def __init__(self):
            super().__init__()
            self.exclude = ["records", "keys", "seen", "kwargs", "jumps"]  # not checkpointed: this fit's events only

    learn = _dropout_learner(tmp_path)
    learn.fit(3, 1e-2, callbacks=[StopAtOne(), SaveAt(learn, epoch=1), Log()])
    other = _dropout_learner(tmp_path)
    log = Log()
    other.fit(3, 1e-2, callbacks=[StopAtOne(), SaveAt(other), log], resume_from="ck")
    assert log.events() == ["train_begin", "train_end"]
    assert log.kwargs[-1][1]["epoch"] == 2


# ========================================================================================== refusals
def test_a_checkpoint_of_another_model_shape_is_refused_naming_the_parameter_and_shapes(tmp_path):
    learn = make_learner(tmp_path)
    learn.fit(1, 1e-2, callbacks=[SaveAt(learn, it=1)])
    other = Learner(make_data(), nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)),
                    loss_func=nn.CrossEntropyLoss(), path=tmp_path)
    with pytest.raises(CheckpointMismatchError, match=r"0\.weight: \(8, 4\) in the checkpoint, \(16, 4\) in the model"):
        other.fit(1, 1e-2, callbacks=[SaveAt(other)], resume_from="ck")
    with pytest.raises(CheckpointMismatchError, match="different model"):
        other.load_checkpoint("ck")


def test_a_checkpoint_of_another_callback_set_is_refused_naming_what_differs(tmp_path):
    class Extra(Callback):
        pass

    learn = make_learner(tmp_path)
    learn.fit(1, 1e-2, callbacks=[SaveAt(learn, it=1)])
    other = make_learner(tmp_path)
    with pytest.raises(CheckpointMismatchError, match=r"missing now: SaveAt; not in the checkpoint: .*<locals>\.Extra"):
        other.fit(1, 1e-2, callbacks=[Extra()], resume_from="ck")


def test_a_file_written_by_learn_save_is_not_taken_for_a_checkpoint(tmp_path):
    learn = make_learner(tmp_path)
    learn.save("plain")
    with pytest.raises(CheckpointError, match="not a fastloop checkpoint"):
        learn.fit(1, resume_from="plain")
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        learn.fit(1, resume_from="missing")


# ========================================================================================= atomicity
def test_a_crash_between_write_and_replace_leaves_the_previous_checkpoint_readable(tmp_path, monkeypatch):
    learn = _dropout_learner(tmp_path)
    learn.fit(1, 1e-2)
    path = learn.save_checkpoint("ck")
    before = path.read_bytes()
    learn.fit(1, 1e-2)

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(fastloop._io.os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        learn.save_checkpoint("ck")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert torch.load(path, weights_only=True)["format"] == "fastloop-checkpoint"
    assert sorted(p.name for p in path.parent.iterdir()) == ["ck.pth"]  # the temporary file is gone


def test_a_crash_while_a_periodic_checkpoint_is_written_leaves_the_previous_one_and_stops_the_fit(tmp_path,
                                                                                                   monkeypatch):
    learn = _dropout_learner(tmp_path)
    cb = CheckpointCallback(learn, every_n_batches=1, every_epoch=False, keep=None)
    calls = {"n": 0}
    real = fastloop._io.os.replace

    def crash_on_third(src, dst):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("power cut")
        return real(src, dst)

    monkeypatch.setattr(fastloop._io.os, "replace", crash_on_third)
    with pytest.raises(OSError, match="power cut"):
        learn.fit(1, 1e-2, callbacks=[cb])
    monkeypatch.undo()
    folder = tmp_path / "models"
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint_000001.pth", "checkpoint_000002.pth"]
    assert torch.load(folder / "checkpoint_000002.pth", weights_only=True)["position"]["iteration"] == 2


# ================================================================================ CheckpointCallback
def test_checkpoint_callback_writes_every_n_batches_and_epochs_keeping_the_last_k(tmp_path):
    learn = _dropout_learner(tmp_path)
    cb = CheckpointCallback(learn, "run", every_n_batches=3, every_epoch=True, keep=2)
    learn.fit(2, 1e-2, callbacks=[cb])
    # batch 3 (1), epoch 0 (2), batch 6 (3), epoch 1 (4): the last two are kept
    folder = tmp_path / "models"
    assert sorted(p.name for p in folder.iterdir()) == ["run_000003.pth", "run_000004.pth"]
    assert latest_checkpoint(learn, "run") == "run_000004"
    assert torch.load(folder / "run_000003.pth", weights_only=True)["position"]["iteration"] == 6
    assert latest_checkpoint(learn, "other") is None


def test_checkpoint_callback_resumes_from_the_latest_and_goes_on_numbering(tmp_path):
    ref_learn = _dropout_learner(tmp_path / "ref")
    ref_learn.fit(2, 1e-2, callbacks=[CheckpointCallback(ref_learn, every_n_batches=3, keep=2)])
    ref = _snapshot(ref_learn)

    learn = _dropout_learner(tmp_path)

    class Crash(Callback):
        def __init__(self, active):
            self.active, self.exclude = active, ["active"]

        def on_batch_begin(self, iteration, **kwargs):
            if self.active and iteration == 5:
                raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        learn.fit(2, 1e-2, callbacks=[CheckpointCallback(learn, every_n_batches=3, keep=2), Crash(True)])
    name = latest_checkpoint(learn)
    assert name == "checkpoint_000002"  # batch 3, then epoch 0
    other = _dropout_learner(tmp_path, seed=3)
    other.fit(2, 1e-2, callbacks=[CheckpointCallback(other, every_n_batches=3, keep=2), Crash(False)],
              resume_from=name)
    assert _same(ref, _snapshot(other))
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["checkpoint_000003.pth",
                                                                        "checkpoint_000004.pth"]


def test_checkpoint_callback_rejects_nonsense_settings(tmp_path):
    learn = make_learner(tmp_path)
    with pytest.raises(ValueError, match="every_n_batches"):
        CheckpointCallback(learn, every_n_batches=0)
    with pytest.raises(ValueError, match="keep"):
        CheckpointCallback(learn, keep=0)


# ===================================================================================== state protocol
def test_a_callback_with_load_state_gets_its_get_state_back(tmp_path):
    class Custom(Callback):
        def __init__(self):
            self.inner = {"count": 0}

        def on_batch_end(self, train, **kwargs):
            self.inner["count"] += train

        def get_state(self, minimal=True):
            return {"count": self.inner["count"], "scale": np.float32(0.5)}

        def load_state(self, state):
            self.loaded = state
            self.inner = {"count": state["count"]}

    learn = _dropout_learner(tmp_path)
    learn.fit(1, 1e-2, callbacks=[Custom(), SaveAt(learn, it=1)])
    other = _dropout_learner(tmp_path)
    cb = Custom()
    other.fit(1, 1e-2, callbacks=[cb, SaveAt(other)], resume_from="ck")
    assert cb.loaded == {"count": 2, "scale": np.float32(0.5)} and type(cb.loaded["scale"]) is np.float32
    assert cb.inner["count"] == 4


def test_get_state_returning_something_that_is_not_plain_data_is_refused_naming_the_key(tmp_path):
    class Bad(Callback):
        def get_state(self, minimal=True):
            return {"thing": object()}

        def load_state(self, state):
            pass

    learn = make_learner(tmp_path)
    with pytest.raises(CheckpointError, match=r"Bad.get_state\(\)\['thing'\] is a object"):
        learn.fit(1, 1e-2, callbacks=[Bad(), SaveAt(learn, it=0)])


def test_schedulers_are_restored_in_place_and_references_skipped(tmp_path):
    "A plain callback's Scheduler (rebuilt by on_train_begin) gets its position back; its learner link is skipped."

    class Sched(LearnerCallback):
        def on_train_begin(self, **kwargs):
            self.scheds = [Scheduler((1.0, 0.0), 8, annealing_cos)]

        def on_batch_end(self, train, **kwargs):
            if train:
                self.last = self.scheds[0].step()

    learn = _dropout_learner(tmp_path)
    learn.fit(1, 1e-2, callbacks=[Sched(learn), SaveAt(learn, it=2)])
    other = _dropout_learner(tmp_path)
    cb = Sched(other)
    other.fit(1, 1e-2, callbacks=[cb, SaveAt(other)], resume_from="ck")
    assert cb.scheds[0].n == 4 and cb.last == annealing_cos(1.0, 0.0, 4 / 8)


def test_an_unsaveable_attribute_warns_once_and_attrs_fields_must_be_plain_or_transient(tmp_path):
    class Opaque:
        pass

    class Holder(Callback):
        def __init__(self):
            self.thing = Opaque()

    learn = make_learner(tmp_path)
    with pytest.warns(UserWarning, match=r"Holder.thing \(Opaque\) is not plain data"):
        learn.fit(1, 1e-2, callbacks=[Holder(), SaveAt(learn, it=0)])

    @attrs.define(eq=False)
    class AttrsCb(Callback):
        count: int = 0
        cache: Opaque = attrs.field(factory=Opaque, metadata={"transient": True})

    learn.fit(1, 1e-2, callbacks=[AttrsCb(), SaveAt(learn, it=0)])
    payload = torch.load(tmp_path / "models" / "ck.pth", weights_only=True)
    assert next(c for c in payload["callbacks"] if c["class"].endswith("AttrsCb"))["state"] == {"count": 0}

    @attrs.define(eq=False)
    class AttrsBad(Callback):
        cache: Opaque = attrs.field(factory=Opaque)

    with pytest.raises(CheckpointError, match=r"AttrsBad.cache holds a Opaque.*transient"):
        learn.fit(1, 1e-2, callbacks=[AttrsBad(), SaveAt(learn, it=0)])


def test_resuming_with_a_different_number_of_epochs_warns(tmp_path):
    learn = _dropout_learner(tmp_path)
    learn.fit(2, 1e-2, callbacks=[SaveAt(learn, it=1)])
    other = _dropout_learner(tmp_path)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        other.fit(3, 1e-2, callbacks=[SaveAt(other)], resume_from="ck")
    assert any("as a fit of 3 epochs" in str(x.message) for x in w)
    assert other.recorder.nb_batches == [4, 4, 4]


# ============================================================================== DeviceDataLoader.skip_batches
def test_skip_batches_draws_the_same_shuffle_and_calls_then_once_the_done_batches_are_skipped():
    data = make_data(n_train=64, bs=16)
    torch.manual_seed(3)
    full = [yb.tolist() for _, yb in data.train_dl]
    calls = []
    torch.manual_seed(3)
    rest = data.train_dl.skip_batches(2, then=lambda: calls.append("then"))
    assert len(rest) == 2 and calls == []
    assert [yb.tolist() for _, yb in rest] == full[2:] and calls == ["then"]
