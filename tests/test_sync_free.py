"""Sync-free training batches (fastloop/_sync_free.py, the handler's ``sync_free`` modes, Recorder, loss_batch).

The rule checked here: with ``sync_free="auto"`` (Learner's default) a callback that does not declare
``_sync_free = True`` sees exactly what fastai v1 gives it (CPU tensors, same bits), and nothing reads a
loss inside a training batch when every callback called there is sync-free.
"""

from __future__ import annotations

import contextlib
import io
import math
from typing import Any

import numpy as np
import pytest
import torch

from fastloop._sync_free import LazyLoss, LazyText
from fastloop.basic_train import Recorder, loss_batch
from fastloop.callback import Callback, CallbackHandler, SmoothenValue, _LossSmoother

from .conftest import make_learner

BATCH_EVENTS = ("batch_begin", "loss_begin", "backward_begin", "backward_end", "step_end", "batch_end")


class Seen(Callback):
    """A plain v1 callback (not sync-free): records the type and value of last_loss/smooth_loss at every event."""

    def __init__(self) -> None:
        self.log: list[tuple] = []

    def _rec(self, event: str, kwargs: dict) -> None:
        out = [event, kwargs.get("train")]
        for key in ("last_loss", "smooth_loss"):
            v = kwargs.get(key)
            if isinstance(v, torch.Tensor):
                out.append((key, type(v).__name__, v.device.type, v.dtype, v.detach().clone()))
            else:
                out.append((key, type(v).__name__))
        self.log.append(tuple(out))

    def on_batch_begin(self, **kwargs: Any) -> None:
        self._rec("batch_begin", kwargs)

    def on_backward_begin(self, **kwargs: Any) -> None:
        self._rec("backward_begin", kwargs)

    def on_batch_end(self, **kwargs: Any) -> None:
        self._rec("batch_end", kwargs)

    def on_epoch_end(self, **kwargs: Any) -> None:
        self._rec("epoch_end", kwargs)


class AwareSpy(Callback):
    "Declares _sync_free: checks that the running batch's smooth_loss has not been read at any batch event."

    _sync_free = True

    def __init__(self) -> None:
        self.types: set[str] = set()
        self.read_inside_batch = 0
        self.checked = 0

    def _check(self, smooth_loss: Any = None, **kwargs: Any) -> None:
        if not kwargs.get("train", True) or smooth_loss is None:
            return
        self.types.add(type(smooth_loss).__name__)
        self.checked += 1
        if type(smooth_loss) is not LazyLoss or smooth_loss.is_read:
            self.read_inside_batch += 1

    def on_backward_begin(self, **kwargs: Any) -> None:
        self._check(**kwargs)

    def on_backward_end(self, **kwargs: Any) -> None:
        self._check(**kwargs)

    def on_step_end(self, **kwargs: Any) -> None:
        self._check(**kwargs)

    def on_batch_end(self, **kwargs: Any) -> None:
        self._check(**kwargs)


def _fit(sync_free: Any, callbacks: list, epochs: int = 2, **kw: Any) -> tuple[Any, str]:
    learn = make_learner(sync_free=sync_free, metrics=[], **kw)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        learn.fit(epochs, lr=1e-2, callbacks=callbacks)
    return learn, out.getvalue()


def _same_log(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x[:2] == y[:2]
        for kx, ky in zip(x[2:], y[2:]):
            assert kx[:-1] == ky[:-1] if len(kx) == 5 else kx == ky
            if len(kx) == 5:
                assert torch.equal(kx[-1], ky[-1])


def _table(out: str) -> list[str]:
    "The printed rows without the time column (which may differ by a second)."
    return [" ".join(line.split()[:-1]) for line in out.splitlines() if line.strip()[:1].isdigit()]


# ------------------------------------------------------------------------------------------- default: invisible
def test_auto_mode_shows_a_v1_callback_the_same_cpu_tensors_as_an_eager_fit():
    """sync_free='auto' vs False: a plain callback sees identical types, devices, dtypes and bits for last_loss
    and smooth_loss at every event; the Recorder's losses, the final weights and the printed table match."""
    seen_auto, seen_eager = Seen(), Seen()
    la, out_a = _fit("auto", [seen_auto])
    le, out_e = _fit(False, [seen_eager])
    _same_log(seen_auto.log, seen_eager.log)
    assert {e[3][1] for e in seen_auto.log if e[0] != "batch_begin" or e[3][1] != "NoneType"} == {"Tensor"}
    assert all(type(v) is torch.Tensor for v in la.recorder.losses)
    assert all(torch.equal(a, b) for a, b in zip(la.recorder.losses, le.recorder.losses))
    assert len(la.recorder.losses) == 8
    assert all(torch.equal(a, b) for a, b in zip(la.model.parameters(), le.model.parameters()))
    assert _table(out_a) == _table(out_e) and len(_table(out_a)) == 2


def test_nothing_reads_the_loss_inside_a_training_batch_when_every_callback_there_is_sync_free():
    spy = AwareSpy()
    learn, _ = _fit("auto", [spy])
    assert spy.checked == 8 * 4 and spy.read_inside_batch == 0 and spy.types == {"LazyLoss"}
    # ...and the Recorder ends with v1's CPU tensors all the same
    assert all(type(v) is torch.Tensor and v.dtype == torch.float32 for v in learn.recorder.losses)


def test_a_v1_callback_at_batch_end_makes_the_handler_read_there_and_not_before():
    """The read happens just before the first event that a non-sync-free callback implements: the aware
    callback still sees an unread LazyLoss at backward_begin, backward_end and step_end."""

    class EndOnly(Callback):
        def on_batch_end(self, smooth_loss: Any, last_loss: Any, **kwargs: Any) -> None:
            self.types = (type(smooth_loss), type(last_loss))

    class AwareBefore(AwareSpy):
        _sync_free = True

        def on_batch_end(self, **kwargs: Any) -> None:  # runs after EndOnly (order 1): the value was read
            sl = kwargs["smooth_loss"]
            self.after = type(sl)

    end, spy = EndOnly(), AwareBefore()
    spy._order = 1
    _fit("auto", [end, spy])
    assert end.types == (torch.Tensor, torch.Tensor)
    assert spy.after is torch.Tensor  # the state now holds the read value, for every later callback
    assert spy.checked == 8 * 3 and spy.read_inside_batch == 0  # backward_begin/backward_end/step_end


def test_sync_free_false_is_v1_every_callback_sees_tensors_at_once():
    spy = AwareSpy()
    _fit(False, [spy])
    assert spy.types == {"Tensor"}


def test_sync_free_true_gives_every_callback_lazy_values_with_the_same_numbers():
    seen_true, seen_eager = Seen(), Seen()
    _fit(True, [seen_true])
    _fit(False, [seen_eager])
    types = {e[3][1] for e in seen_true.log if e[0] in ("backward_begin", "batch_end")}
    assert types == {"LazyLoss"}
    eager = [e[3][-1] for e in seen_eager.log if e[0] == "batch_end" and e[1]]
    assert len(eager) == 8
    # Seen cloned nothing for LazyLoss: compare the Recorder-independent values through a second run
    vals: list = []

    class Reader(Callback):
        def on_batch_end(self, smooth_loss: Any, train: bool, **kwargs: Any) -> None:
            if train:
                vals.append(smooth_loss)

    _fit(True, [Reader()])
    assert len(vals) == 8 and all(torch.equal(v.value, e) for v, e in zip(vals, eager))


def test_the_sync_free_marker_is_not_inherited_by_subclasses():
    "A Recorder subclass with new hooks may read the losses: it gets v1's tensors unless it declares it again."

    class MyRecorder(Recorder):
        def on_backward_begin(self, smooth_loss: Any, **kwargs: Any) -> None:
            self.seen_type = type(smooth_loss)
            super().on_backward_begin(smooth_loss=smooth_loss, **kwargs)

    learn = make_learner()
    learn.callback_fns[0] = MyRecorder
    with contextlib.redirect_stdout(io.StringIO()):
        learn.fit(1)
    assert learn.my_recorder.seen_type is torch.Tensor


def test_a_fit_cut_short_by_an_exception_still_leaves_cpu_tensors_in_the_recorder():
    class Boom(Callback):
        _sync_free = True

        def on_step_end(self, iteration: int, **kwargs: Any) -> None:
            if iteration == 2:
                raise RuntimeError("boom")

    learn = make_learner()
    with contextlib.redirect_stdout(io.StringIO()), pytest.raises(RuntimeError, match="boom"):
        learn.fit(1, callbacks=[Boom()])
    assert len(learn.recorder.losses) == 3 and all(type(v) is torch.Tensor for v in learn.recorder.losses)


def test_loss_batch_keeps_the_training_loss_on_its_device_only_for_a_deferring_handler():
    model = torch.nn.Linear(3, 2)
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for mode, defers in ((False, False), ("auto", True), (True, True)):
        h = CallbackHandler(sync_free=mode)
        h.on_train_begin(1, None, [])
        h.on_batch_begin(x, y)
        loss = loss_batch(model, x, y, torch.nn.functional.cross_entropy, opt, h)
        assert h.defers_losses is defers and loss.requires_grad is False and loss.dim() == 0
    # validation (no opt) and a bare handler: v1's CPU loss
    assert loss_batch(model, x, y, torch.nn.functional.cross_entropy).device.type == "cpu"


def test_a_pending_device_last_loss_is_read_before_a_v1_callback_unless_an_aware_one_replaced_it():
    "last_loss on a non-CPU device is copied with .cpu() for a plain callback; an aware callback's replacement is kept."

    class FakeDeviceLoss:
        is_cpu = False

        def __init__(self, v: float) -> None:
            self.v, self.copies = v, 0

        def cpu(self) -> torch.Tensor:
            self.copies += 1
            return torch.tensor(self.v)

    class Plain(Callback):
        def on_batch_end(self, last_loss: Any, **kwargs: Any) -> None:
            self.got = last_loss

    class Replacer(Callback):
        _sync_free = True
        _order = -1

        def on_batch_end(self, **kwargs: Any) -> dict:
            return {"last_loss": "replaced"}

    plain = Plain()
    h = CallbackHandler([plain], sync_free="auto")
    h.on_train_begin(1, None, [])
    h.on_batch_begin(1, 2)
    fake = FakeDeviceLoss(0.5)
    h.on_batch_end(fake)
    assert isinstance(plain.got, torch.Tensor) and plain.got.item() == 0.5 and fake.copies == 1

    class PlainAtEpochEnd(Callback):
        def on_epoch_end(self, last_loss: Any, **kwargs: Any) -> None:
            self.got = last_loss

    # the aware callback is alone at batch_end (no read there) and replaces the value; epoch_end's plain
    # callback gets the replacement as it is, and the device value is never copied
    plain2 = PlainAtEpochEnd()
    h = CallbackHandler([plain2, Replacer()], sync_free="auto")
    h.on_train_begin(1, None, [])
    h.on_epoch_begin()
    h.on_batch_begin(1, 2)
    fake = FakeDeviceLoss(0.5)
    h.on_batch_end(fake)
    h.on_epoch_end(None)
    assert plain2.got == "replaced" and fake.copies == 0


def test_a_probe_that_is_not_sync_free_sees_read_values_at_every_event():
    class Probe(Callback):
        def __init__(self) -> None:
            self.types: set = set()

        def probe_begin(self, event: str, state: dict, extras: dict) -> None:
            if "smooth_loss" in state:
                self.types.add(type(state["smooth_loss"]).__name__)

        def probe_wrap(self, cb: Any, event: str, meth: Any) -> Any:
            return meth

        def probe_end(self, event: str, state: dict, error: Any) -> None:
            pass

    probe = Probe()
    _fit("auto", [probe], epochs=1)
    assert probe.types == {"Tensor"}


def test_a_users_own_event_reads_the_pending_values_first():
    class Custom(Callback):
        def on_my_event(self, smooth_loss: Any, **kwargs: Any) -> None:
            self.got = type(smooth_loss)

    cb = Custom()
    h = CallbackHandler([cb], sync_free="auto")
    h.on_train_begin(1, None, [])
    h.on_batch_begin(1, 2)
    h.on_backward_begin(torch.tensor(2.0, requires_grad=True) * 1)
    assert type(h.state_dict["smooth_loss"]) is LazyLoss
    h("my_event")
    assert cb.got is torch.Tensor


def test_the_invalid_mode_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="False, True or 'auto'"):
        CallbackHandler(sync_free="yes")


# ------------------------------------------------------------------------------------------------ the smoother
def test_lazy_smoothing_gives_v1s_bits_across_chunks_and_mixed_reads():
    """600 losses (over two 256-loss device chunks), float16/32/64, read at irregular points: every handle's
    value equals v1's SmoothenValue on loss.float(), and eager adds interleave correctly."""
    g = torch.Generator().manual_seed(0)
    losses = (torch.rand(600, generator=g, dtype=torch.float64) * 10).tolist()
    dtypes = [torch.float16, torch.float32, torch.float64]
    sm, ref = _LossSmoother(0.98), SmoothenValue(0.98)
    handles, expected = [], []
    for i, v in enumerate(losses):
        t = torch.tensor(v, dtype=dtypes[i % 3])
        ref.add_value(t.float())
        if i % 97 == 50:
            sm.add_value(t)  # an eager add in the middle: flushes first
            assert torch.equal(sm.smooth, ref.smooth)
        else:
            handles.append(sm.add_lazy(t))
            expected.append(ref.smooth)
        if i == 300:
            assert handles[-1].value is not None  # a read in the middle flushes everything pending
    assert sm.n == 600
    assert all(torch.equal(h.value, e) for h, e in zip(handles, expected))
    assert torch.equal(sm.smooth, ref.smooth) and sm.mov_avg == np.float32(ref.mov_avg)


def test_the_smoothers_v1_attributes_can_be_set_after_lazy_adds():
    sm = _LossSmoother(0.98)
    sm.add_lazy(torch.tensor(1.0))
    sm.n, sm.mov_avg = 10, 0.5
    h = sm.add_lazy(torch.tensor(2.0))
    b = np.float32(0.98)
    mov = b * np.float32(0.5) + np.float32(1 - 0.98) * np.float32(2.0)
    assert sm.n == 11 and h.item() == pytest.approx(float(mov / np.float32(1 - 0.98**11)))


# ------------------------------------------------------------------------------------------- LazyLoss / LazyText
def test_a_lazy_loss_reads_like_the_tensor_it_stands_for():
    sm = _LossSmoother(0.98)
    h = sm.add_lazy(torch.tensor(2.5))
    assert repr(h) == "LazyLoss(<not read yet>)" and not h.is_read
    assert float(h) == 2.5 and h.is_read and f"{h:.4f}" == "2.5000" and h.item() == 2.5
    assert h < 3 and h > 2 and h <= 2.5 and h >= 2.5 and h == 2.5 and 3 > h
    assert torch.equal(h * 2, torch.tensor(5.0)) and torch.equal(1 + h, torch.tensor(3.5))
    assert torch.equal(-h, torch.tensor(-2.5)) and torch.equal(h / 2, torch.tensor(1.25))
    assert not torch.isnan(h) and torch.equal(torch.stack([h, h]), torch.tensor([2.5, 2.5]))
    assert h.dtype == torch.float32 and h.shape == torch.Size([]) and h.cpu() is h.value
    assert math.isclose(h.numpy(), 2.5) and bool(h) and int(h) == 2 and str(h) == str(torch.tensor(2.5))


def test_a_lazy_loss_replaces_itself_in_the_list_it_was_stored_in_once_read():
    sm = _LossSmoother(0.98)
    losses: list = []
    for v in (1.0, 2.0):
        h = sm.add_lazy(torch.tensor(v))
        losses.append(h)
        h.store_in(losses, len(losses) - 1)
    assert all(type(v) is LazyLoss for v in losses)
    losses[-1].value
    assert all(type(v) is torch.Tensor for v in losses)
    late = [0]
    sm.add_lazy(torch.tensor(3.0)).value  # already read: store_in writes at once
    h = sm.add_lazy(torch.tensor(4.0))
    h.value
    h.store_in(late, 0)
    assert late[0] is h.value


def test_lazy_text_is_formatted_only_when_shown_and_behaves_as_its_string():
    class Counting:
        n = 0

        def __format__(self, spec: str) -> str:
            Counting.n += 1
            return format(0.123456, spec)

    t = LazyText(Counting(), ".4f")
    assert Counting.n == 0
    assert len(t) == 6 and f" {t}" == " 0.1235" and str(t) == "0.1235" and t == "0.1235"
    assert t + "!" == "0.1235!" and "loss " + t == "loss 0.1235" and repr(t) == "'0.1235'"
    assert Counting.n == 1  # formatted once, then cached


def test_the_recorder_puts_a_lazy_comment_on_the_bar_that_shows_v1s_text(monkeypatch):
    import fastprogress.fastprogress as fp

    monkeypatch.setattr(fp, "NO_BAR", False)  # the bar prints (another test may have turned it off)

    class Comments(Callback):
        _sync_free = True

        def __init__(self) -> None:
            self.seen: list = []

        def on_batch_end(self, pbar: Any, train: bool, **kwargs: Any) -> None:
            if train:
                self.seen.append(pbar.child.comment)

    spy = Comments()
    learn, out = _fit("auto", [spy], epochs=1)
    assert len(spy.seen) == 4 and all(isinstance(c, LazyText) for c in spy.seen)
    assert [str(c) for c in spy.seen] == [f"{v:.4f}" for v in learn.recorder.losses]
    assert f"{learn.recorder.losses[0]:.4f}]" in out  # the first redraws show the first batches' losses
