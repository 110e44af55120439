"""The loop in `fastloop.basic_train`: event traces of fit/validate/get_preds, flags, loss plumbing, exceptions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fastloop.basic_train import fit, loss_batch, validate
from fastloop.callback import Callback

from .conftest import make_learner
from .tracing import Tracer, canonical_fit, table_lines

T, V = 4, 2  # the `learn` fixture: 4 training batches, 2 validation batches per epoch

INITIAL = ["epoch", "iteration", "num_batch", "skip_validate"]
AT_TRAIN_BEGIN = sorted(INITIAL + ["metrics", "metrics_names", "n_epochs", "pbar"])
AT_TRAIN_END = sorted(["epoch", "exception", "iteration", "last_input", "last_loss", "last_metrics", "last_output",
                       "last_target", "metrics", "n_epochs", "num_batch", "pbar", "skip_bwd", "skip_step",
                       "skip_validate", "skip_zero", "smooth_loss", "stop_epoch", "stop_training", "train"])


def first_keys(tracer: Tracer, event: str) -> list[str]:
    return list(next(keys for e, keys in tracer.keys if e == event))


def half_accuracy(out, targ):
    return (out.argmax(-1) == targ).float().mean()


# ---------------------------------------------------------------------------------------- event traces
def test_fit_with_validation_and_metrics_follows_the_canonical_sequence(learn):
    tracer, met = Tracer(), Tracer()
    learn.metrics = [half_accuracy, met]
    learn.fit(2, 1e-2, callbacks=[tracer])
    assert tracer.events() == canonical_fit(2, T, V)
    assert met.events() == canonical_fit(2, T, V, metric=True)
    assert learn.recorder.names == ["epoch", "train_loss", "valid_loss", "half_accuracy", "tracer", "time"]


def test_fit_counters_move_after_dispatch_and_only_for_training_batches(learn):
    tracer = Tracer()
    learn.fit(2, 1e-2, callbacks=[tracer])
    train_begins = [r for r in tracer.records if r[0] == "batch_begin" and r[1]]
    expected = [(e, e * T + b, b) for e in range(2) for b in range(T)]
    assert [(ep, it, nb) for _, _, ep, it, nb in train_begins] == expected
    train_ends = [r for r in tracer.records if r[0] == "batch_end" and r[1]]
    assert [(it, nb) for *_, it, nb in train_ends] == [(e * T + b, b) for e in range(2) for b in range(T)]
    valid = [r for r in tracer.records if r[0] in ("batch_begin", "batch_end") and r[1] is False]
    assert {(ep, it, nb) for _, _, ep, it, nb in valid} == {(0, T, T), (1, 2 * T, T)}
    epoch_ends = [r for r in tracer.records if r[0] == "epoch_end"]
    assert [(ep, nb) for _, _, ep, _, nb in epoch_ends] == [(0, T), (1, T)]
    assert tracer.records[-1] == ("train_end", False, 2, 2 * T, T)  # train is False: validation ran last


def test_fit_state_keys_appear_lazily_at_the_spec_events(learn):
    tracer = Tracer()
    learn.fit(1, 1e-2, callbacks=[tracer])
    assert first_keys(tracer, "train_begin") == AT_TRAIN_BEGIN
    assert sorted(set(first_keys(tracer, "epoch_begin")) ^ set(AT_TRAIN_BEGIN)) == ["metrics_names", "stop_training"]
    batch_keys = set(first_keys(tracer, "batch_begin")) - set(first_keys(tracer, "epoch_begin"))
    assert batch_keys == {"last_input", "last_target", "train", "stop_epoch", "skip_step", "skip_zero", "skip_bwd"}
    assert set(first_keys(tracer, "loss_begin")) - set(first_keys(tracer, "batch_begin")) == {"last_output"}
    assert set(first_keys(tracer, "backward_begin")) - set(first_keys(tracer, "loss_begin")) == {"last_loss",
                                                                                                 "smooth_loss"}
    assert "last_metrics" not in first_keys(tracer, "epoch_begin")
    assert "last_metrics" in first_keys(tracer, "epoch_end")
    assert first_keys(tracer, "train_end") == AT_TRAIN_END


def test_fit_with_skip_validate_runs_no_validation_and_metrics_skip_epoch_end(learn, capsys):
    tracer, met = Tracer(actions={("train_begin", 0): {"skip_validate": True}}), Tracer()
    learn.metrics = [met]
    learn.fit(2, 1e-2, callbacks=[tracer])
    assert tracer.events() == canonical_fit(2, T, V, validate=False)
    assert met.events() == ["train_begin", "epoch_begin", "epoch_begin", "train_end"]
    last_metrics = [kw["last_metrics"] for e, kw in tracer.kwargs if e == "epoch_end"]
    assert last_metrics == [[None], [None]]
    header, *rows = table_lines(capsys.readouterr().out)
    assert header.split() == ["epoch", "train_loss", "valid_loss", "tracer", "time"]
    assert [r.split()[0] for r in rows] == ["0", "1"] and [r.split()[2] for r in rows] == ["#na#", "#na#"]
    assert all(len(r.split()) == 4 for r in rows)  # the metric column is missing: last_metrics is [None]
    assert learn.recorder.val_losses == [None, None] and learn.recorder.metrics == []


def test_resume_from_epoch_returned_at_train_begin_runs_the_remaining_epochs(learn, capsys):
    tracer = Tracer(actions={("train_begin", 0): {"epoch": 1}})
    learn.fit(3, 1e-2, callbacks=[tracer])
    assert tracer.jumps == [1]
    assert tracer.events() == canonical_fit(2, T, V)
    epochs = [r[2] for r in tracer.records if r[0] == "epoch_begin"]
    assert epochs == [1, 2]
    assert tracer.kwargs[-1][1]["n_epochs"] == 3
    first_train_batch = next(r for r in tracer.records if r[0] == "batch_begin")
    assert first_train_batch[3] == 0  # iteration is not advanced on resume
    rows = [line.split()[0] for line in table_lines(capsys.readouterr().out)[1:]]
    assert rows == ["1", "2"]


def test_a_jump_at_train_begin_that_leaves_no_epoch_runs_none_and_ends_the_fit_cleanly(learn):
    """v1 (fastprogress 0.2) ran nothing; fastprogress 1.x iterated a 0-total bar and crashed on `start_t`."""
    tracer = Tracer(actions={("train_begin", 0): {"epoch": 2}})
    learn.fit(2, 1e-2, callbacks=[tracer])
    assert tracer.events() == ["train_begin", "train_end"]
    assert learn.recorder.losses == []


# ------------------------------------------------------------------------------------------------ flags
class Counting:
    """Wraps learn.opt's step and zero_grad to count calls."""

    def __init__(self, learn):
        self.steps, self.zeros = 0, 0
        opt = learn.opt
        step, zero = opt.step, opt.zero_grad

        def counted_step():
            self.steps += 1
            step()

        def counted_zero():
            self.zeros += 1
            zero()

        opt.step, opt.zero_grad = counted_step, counted_zero


def test_skip_bwd_skips_backward_but_step_and_zero_grad_still_run(learn):
    learn.create_opt(1e-2, 0.0)
    counts = Counting(learn)
    grads = []

    class Probe(Callback):
        _order = 1

        def on_backward_end(self, **kwargs):
            grads.append([p.grad for p in learn.model.parameters()])

    tracer = Tracer(actions={("backward_begin", 0): {"skip_bwd": True}})
    learn.fit(1, 1e-2, callbacks=[tracer, Probe()])
    assert all(g is None for g in grads[0])  # no backward for batch 0: grads never allocated
    assert all(g is not None for g in grads[1])
    assert counts.steps == T and counts.zeros == T
    assert "backward_end" in tracer.events() and tracer.seen["step_end"] == T


def test_skip_step_returned_at_batch_begin_skips_only_that_batchs_step(learn):
    learn.create_opt(1e-2, 0.0)
    counts = Counting(learn)
    learn.fit(1, 1e-2, callbacks=[Tracer(actions={("batch_begin", 1): {"skip_step": True}})])
    assert counts.steps == T - 1 and counts.zeros == T


def test_skip_zero_at_step_end_keeps_gradients_accumulating(learn):
    learn.create_opt(1e-2, 0.0)
    counts = Counting(learn)
    learn.fit(1, 1e-2, callbacks=[Tracer(actions={("step_end", i): {"skip_zero": True} for i in range(T)})])
    assert counts.zeros == 0 and counts.steps == T


def test_stop_epoch_in_training_breaks_the_loop_but_validation_still_runs(learn):
    tracer = Tracer(actions={("batch_end", 1): {"stop_epoch": True}})
    learn.fit(1, 1e-2, callbacks=[tracer])
    train_batches = [r for r in tracer.records if r[0] == "batch_end" and r[1]]
    assert len(train_batches) == 2
    assert sum(1 for r in tracer.records if r[0] == "batch_end" and r[1] is False) == V
    assert learn.recorder.nb_batches == [2]


def test_stop_epoch_in_validation_ends_it_early_and_averages_the_seen_batches(learn):
    tracer = Tracer(actions={("batch_end", T): {"stop_epoch": True}})  # the first validation batch_end
    learn.fit(1, 1e-2, callbacks=[tracer])
    valid_ends = [kw for e, kw in tracer.kwargs if e == "batch_end" and kw["train"] is False]
    assert len(valid_ends) == 1
    assert learn.recorder.val_losses[0] == pytest.approx(float(valid_ends[0]["last_loss"]))
    epoch_end = next(kw for e, kw in tracer.kwargs if e == "epoch_end")
    assert epoch_end["stop_epoch"] is True  # still set at epoch_end: reset only at the next batch_begin


def test_stop_training_at_batch_end_stops_after_that_epochs_validation(learn):
    tracer = Tracer(actions={("batch_end", 1): {"stop_training": True}})
    learn.fit(3, 1e-2, callbacks=[tracer])
    assert tracer.events() == canonical_fit(1, T, V)


def test_stop_training_is_reset_at_each_epoch_begin(learn):
    seen = []

    class Watch(Callback):
        def on_epoch_begin(self, stop_training, **kwargs):
            seen.append(stop_training)

        def on_epoch_end(self, epoch, **kwargs):
            return {"stop_training": False}

    learn.fit(2, 1e-2, callbacks=[Watch()])
    assert seen == [False, False]


def test_empty_training_loader_fails_with_a_message_quoting_batch_size_and_length():
    learn = make_learner(n_train=8, bs=16)
    with pytest.raises(AssertionError, match=r"batch size=16\) for a dataset of length 8"):
        learn.fit(1)


# --------------------------------------------------------------------------------------- loss plumbing
def test_loss_returned_at_backward_begin_drives_backward_and_reaches_batch_end_detached_on_cpu(learn):
    seen = {}

    class Doubler(Callback):
        def on_backward_begin(self, last_loss, smooth_loss, **kwargs):
            seen.setdefault("raw", last_loss.detach().clone())
            seen.setdefault("smooth", smooth_loss)
            return {"last_loss": last_loss * 2}

        def on_batch_end(self, last_loss, train, **kwargs):
            if train:
                seen.setdefault("end", last_loss)

    learn.fit(1, 1e-2, callbacks=[Doubler()])
    assert torch.equal(seen["end"], seen["raw"] * 2)
    assert not seen["end"].requires_grad and seen["end"].device.type == "cpu"
    assert torch.equal(seen["smooth"], seen["raw"].float())  # smoothing used the raw loss
    assert torch.equal(learn.recorder.losses[0], seen["raw"])


def test_loss_batch_without_loss_func_returns_detached_output_and_first_target():
    model = nn.Linear(3, 2)
    x, y = torch.randn(4, 3), torch.arange(4)
    out, targ = loss_batch(model, x, [y, y + 1])
    assert torch.equal(out, model(x).detach()) and torch.equal(targ, y) and not out.requires_grad


def test_loss_batch_unpacks_list_inputs_into_several_model_arguments():
    class Two(nn.Module):
        def forward(self, a, b):
            return a + b

    out, _ = loss_batch(Two(), [torch.ones(2), torch.ones(2)], torch.zeros(2))
    assert torch.equal(out, torch.full((2,), 2.0))


def test_validate_returns_the_batch_size_weighted_mean_as_numpy_float32():
    learn = make_learner(n_valid=40, bs=16)  # valid batches of 16, 16 and 8
    loss = validate(learn.model, learn.data.valid_dl, learn.loss_func)
    assert isinstance(loss, np.float32)
    x, y = learn.data.valid_ds.tensors
    with torch.no_grad():
        losses = [nn.functional.cross_entropy(learn.model(x[i:i + 16]), y[i:i + 16]) for i in (0, 16, 32)]
    expected = (losses[0] * 16 + losses[1] * 16 + losses[2] * 8) / 40
    assert loss == pytest.approx(expected.item(), rel=1e-6)


def test_model_is_left_in_eval_mode_after_a_fit_that_validated(learn):
    learn.fit(1, 1e-2)
    assert not learn.model.training


# ------------------------------------------------------------------------------------------- exceptions
def test_exception_inside_fit_reaches_train_end_then_is_reraised_with_a_note(learn):
    class Boom(Callback):
        def on_batch_end(self, iteration, **kwargs):
            if iteration == 2:
                raise ValueError("bad batch")

    tracer = Tracer(order=5)
    with pytest.raises(ValueError) as info:
        learn.fit(2, 1e-2, callbacks=[Boom(), tracer])
    assert tracer.events()[-1] == "train_end"
    assert tracer.kwargs[-1][1]["exception"] is info.value
    assert "fastloop: raised in callback Boom.on_batch_end." in info.value.__notes__
    assert tracer.seen["batch_end"] == 2  # batch_end of the failing batch never reached the later callback


def test_keyboard_interrupt_gives_train_end_exception_false_and_propagates(learn):
    class Interrupt(Callback):
        def on_batch_end(self, iteration, **kwargs):
            if iteration == 1:
                raise KeyboardInterrupt

    tracer = Tracer(order=5)
    with pytest.raises(KeyboardInterrupt):
        learn.fit(1, 1e-2, callbacks=[Interrupt(), tracer])
    assert tracer.events()[-1] == "train_end" and tracer.kwargs[-1][1]["exception"] is False


def test_error_in_on_train_begin_fires_no_train_end(learn):
    class BadStart(Callback):
        def on_train_begin(self, **kwargs):
            raise RuntimeError("no start")

    tracer = Tracer(order=-50)
    with pytest.raises(RuntimeError, match="no start"):
        learn.fit(1, 1e-2, callbacks=[tracer, BadStart()])
    assert tracer.events() == ["train_begin"]


def test_a_list_appended_to_learn_callbacks_fails_with_v1s_attribute_error(learn):
    learn.callbacks.append([Tracer()])
    with pytest.raises(AttributeError, match="'list' object has no attribute 'on_train_begin'"):
        learn.fit(1)


def test_after_a_callback_error_model_optimizer_and_history_are_intact_and_fit_works_again(learn):
    """An error at batch 3's backward_begin: weights and Adam state are those after batch 2, history is kept."""
    snapshots = {}

    class Snapshot(Callback):
        _order = 10

        def on_batch_end(self, iteration, train, **kwargs):
            if train:
                snapshots["model"] = {k: v.clone() for k, v in learn.model.state_dict().items()}
                snapshots["opt"] = {k: {n: t.clone() for n, t in s.items()} for k, s in learn.opt.opt.state.items()}
                snapshots["losses"] = list(learn.recorder.losses)

    class BadReturn(Callback):
        def on_backward_begin(self, iteration, **kwargs):
            if iteration == 2:
                return {"last_los": 0}

    with pytest.raises(Exception, match="last_los isn't a valid key") as info:
        learn.fit(1, 1e-2, callbacks=[Snapshot(), BadReturn()])
    assert "BadReturn.on_backward_begin" in " ".join(info.value.__notes__)
    for k, v in learn.model.state_dict().items():
        assert torch.equal(v, snapshots["model"][k])
    for p, s in learn.opt.opt.state.items():
        for n, t in s.items():
            assert torch.equal(t, snapshots["opt"][p][n])
    assert len(learn.recorder.lrs) == 3 and len(learn.recorder.losses) == 3  # the 3rd batch's lr and loss recorded
    assert learn.recorder.losses[:2] == snapshots["losses"]
    learn.fit(1, 1e-2)
    assert len(learn.recorder.losses) == T


# ------------------------------------------------------------------------------ validate and get_preds
def test_learner_validate_trace_has_no_train_end_no_recorder_and_pbar_none(learn):
    tracer = Tracer()
    learn.callbacks.append(tracer)
    assert not hasattr(learn, "recorder")
    res = learn.validate(metrics=[half_accuracy])
    assert tracer.events() == ["train_begin", "epoch_begin"] + ["batch_begin", "loss_begin", "batch_end"] * V + [
        "epoch_end"]
    assert tracer.kwargs[0][1]["pbar"] is None and tracer.kwargs[0][1]["n_epochs"] == 1
    assert not hasattr(learn, "recorder")
    assert isinstance(res[0], np.float32) and isinstance(res[1], torch.Tensor) and len(res) == 2


def test_get_preds_trace_has_only_batch_events_and_last_loss_is_the_output_target_pair(learn):
    tracer = Tracer()
    learn.callbacks.append(tracer)
    learn.fit(1, 1e-2)
    old_recorder = learn.recorder
    tracer.__init__()
    preds, targets = learn.get_preds()
    assert tracer.events() == ["batch_begin", "loss_begin", "batch_end"] * V
    keys = set(tracer.keys[-1][1])
    assert not keys & {"n_epochs", "pbar", "metrics", "smooth_loss", "stop_training"}
    assert {r[2:] for r in tracer.records} == {(0, 0, 0)}
    out, y = tracer.kwargs[-1][1]["last_loss"]
    assert torch.equal(y, targets[-out.shape[0]:])
    assert learn.recorder is not old_recorder and not hasattr(learn.recorder, "losses")
    assert preds.shape == (32, 2) and torch.allclose(preds.sum(1), torch.ones(32))  # softmax for CrossEntropy
    assert targets.dtype == torch.long


def test_fit_module_function_accepts_callbacks_and_metrics_directly(learn):
    learn.create_opt(1e-2, 0.0)
    tracer = Tracer()
    fit(1, learn, callbacks=[tracer], metrics=[half_accuracy])
    assert tracer.events() == canonical_fit(1, T, V)
    assert len(tracer.kwargs[-1][1]["last_metrics"]) == 2


def test_handler_smoother_restarts_with_each_fit(learn):
    firsts = []

    class First(Callback):
        def on_backward_begin(self, num_batch, smooth_loss, last_loss, epoch, **kwargs):
            if num_batch == 0 and epoch == 0:
                firsts.append((smooth_loss, last_loss.detach().float()))

    learn.fit(1, 1e-2, callbacks=[First()])
    learn.fit(1, 1e-2, callbacks=[First()])
    for smooth, raw in firsts:
        assert torch.equal(smooth, raw)
    assert len(firsts) == 2  # one first batch per fit: each fit's smoother starts over


def test_the_documented_key_table_matches_what_a_fit_shows_callbacks(learn):
    """Every key of STATE_KEY_TABLE (README's table) first appears at the event it names, and no other key exists."""
    from fastloop._dispatch import EVENT_EXTRAS, STATE_KEYS

    tracer = Tracer()
    learn.fit(1, 1e-2, callbacks=[tracer])
    first_seen: dict[str, str] = {}
    for event, keys in tracer.keys:
        for k in keys:
            first_seen.setdefault(k, event)
    extras = set().union(*EVENT_EXTRAS.values())
    assert {k: e for k, e in first_seen.items() if k not in extras} == STATE_KEYS


class NestedTargets(torch.utils.data.Dataset):
    "Items shaped ``x, [[y1, y2], z]``: the batch size comes from the first nested target."

    def __init__(self, n):
        self.x = torch.randn(n, 4)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], [[torch.tensor(0), torch.tensor(1)], torch.tensor(2.0)]


def test_validation_takes_the_batch_size_from_the_first_nested_target():
    from fastloop.basic_data import DataBunch
    from fastloop.basic_train import Learner

    data = DataBunch.create(NestedTargets(8), NestedTargets(6), bs=4, num_workers=0, device="cpu")
    learn = Learner(data, nn.Linear(4, 2), loss_func=lambda out, ys, z: out.float().mean() * 0 + z.mean())
    assert learn.validate()[0] == pytest.approx(2.0)


def test_a_tuple_batch_reaches_callbacks_as_a_list_as_in_v1(learn):
    seen = []

    class Look(Callback):
        def on_batch_begin(self, last_input, **kwargs):
            seen.append(type(last_input))

    def two_inputs(items):  # a custom collate_fn returning ((x, x), y)
        x = torch.stack([i[0] for i in items])
        return (x, x), torch.stack([i[1] for i in items])

    learn.data.train_dl.dl.collate_fn = learn.data.valid_dl.dl.collate_fn = two_inputs
    learn.model = _TwoInputs()
    learn.fit(1, 1e-2, callbacks=[Look()])
    assert seen and all(t is list for t in seen)


class _TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, a, b):
        return self.lin(a + b)
