"""On CUDA: no host-device sync inside a training batch of a default fit (Recorder + progress bar on).

``torch.cuda.set_sync_debug_mode("error")`` is switched on at the start of each training ``on_batch_begin``
and off at the end of ``on_batch_end`` by a sync-free probe, so any synchronising call in between -- the
forward pass, the loss, the handler, backward, the optimizer step, the Recorder, the bar's comment --
raises.  The bar's redraws happen between batches (fastprogress updates after the batch), so they are
outside the window ("refresh excluded"); so is the loader's host-to-device copy.

A positive control checks that the detector is live: a plain v1 callback that reads ``last_loss`` at
``on_batch_end`` makes the handler copy it to the CPU there, and in "warn" mode that sync is reported.
Skipped without CUDA (the CI machine has none).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fastloop.basic_data import DataBunch
from fastloop.basic_train import Learner
from fastloop.callback import Callback

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class SyncWindow(Callback):
    """A sync-free probe: sync debug mode `mode` from the start of a training batch_begin to the end of its
    batch_end; counts the batches it covered."""

    _sync_free = True

    def __init__(self, mode: str = "error") -> None:
        self.mode, self.batches, self.open = mode, 0, False

    def probe_begin(self, event: str, state: dict, extras: dict) -> None:
        if event == "batch_begin" and state.get("train"):
            torch.cuda.set_sync_debug_mode(self.mode)
            self.open = True

    def probe_wrap(self, cb: Any, event: str, meth: Any) -> Any:
        return meth

    def probe_end(self, event: str, state: dict, error: BaseException | None) -> None:
        if (event == "batch_end" and self.open) or error is not None:
            torch.cuda.set_sync_debug_mode("default")
            if self.open and error is None:
                self.batches += 1
            self.open = False


class ReadsLoss(Callback):
    "A plain fastai v1 callback: reads last_loss (so the handler must hand it a CPU tensor)."

    def on_batch_end(self, last_loss: Any, train: bool, **kwargs: Any) -> None:
        if train:
            self.last = last_loss


def _learner(sync_free: Any = "auto", n: int = 512, bs: int = 64) -> Learner:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 32, generator=g)
    y = (x[:, :4].sum(1) > 0).long()
    cut = 3 * n // 4  # 3/4 training, 1/4 validation
    data = DataBunch.create(TensorDataset(x[:cut], y[:cut]), TensorDataset(x[cut:], y[cut:]), bs=bs, num_workers=0,
                            device="cuda")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 2))
    return Learner(data, model, loss_func=nn.CrossEntropyLoss(), sync_free=sync_free)


def _fit(learn: Learner, callbacks: list, epochs: int = 1) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        learn.fit(epochs, lr=1e-3, callbacks=callbacks)
    return out.getvalue()


@pytest.fixture(autouse=True)
def _restore_sync_mode():
    yield
    torch.cuda.set_sync_debug_mode("default")


def test_a_default_fit_makes_no_sync_inside_training_batches_with_recorder_and_bar():
    import fastprogress.fastprogress as fp

    old = fp.NO_BAR
    fp.NO_BAR = False  # the bar on: its comment must not read the loss inside the batch
    try:
        learn = _learner()
        _fit(learn, [])  # warm-up: cuBLAS handles, allocator, Adam state
        window = SyncWindow("error")
        out = _fit(learn, [window], epochs=2)
    finally:
        fp.NO_BAR = old
    assert window.batches == 2 * len(learn.data.train_dl) > 0
    losses = learn.recorder.losses
    assert len(losses) == window.batches and all(type(v) is torch.Tensor and v.device.type == "cpu" for v in losses)
    assert f"{losses[-1]:.6f}" in out  # the table row printed the last smooth loss


def test_the_detector_is_live_a_v1_callback_reading_last_loss_syncs_there_and_sees_a_cpu_tensor():
    learn = _learner()
    _fit(learn, [])
    reader, window = ReadsLoss(), SyncWindow("warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(learn, [reader, window])
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    assert window.batches > 0 and len(syncs) >= 1  # (torch may report a repeated sync once)
    assert reader.last.device.type == "cpu" and reader.last.dim() == 0


def test_sync_free_and_eager_fits_give_the_same_numbers_on_cuda():
    runs = []
    for mode in ("auto", False):
        learn = _learner(sync_free=mode)
        torch.manual_seed(1)
        _fit(learn, [], epochs=2)
        runs.append(learn)
    a, b = runs
    assert all(torch.equal(x, y) for x, y in zip(a.recorder.losses, b.recorder.losses))
    assert all(torch.equal(x, y) for x, y in zip(a.model.parameters(), b.model.parameters()))
