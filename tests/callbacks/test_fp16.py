"""Mixed precision: fastai v1's `MixedPrecision` (half model, fp32 masters, loss scaling), the opt-in torch.amp
path (`AmpMixedPrecision`), `to_fp16` / `to_fp32`, and the half helpers of `fastloop.torch_core`."""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fastloop.basic_data import DataBunch
from fastloop.basic_train import Learner
from fastloop.callback import Callback
from fastloop.callbacks.fp16 import (
    AmpMixedPrecision,
    MixedPrecision,
    get_master,
    grad_overflow,
    master2model,
    model_g2master_g,
    to_fp16,
    to_fp32,
)
from fastloop.torch_core import batch_to_half, bn2float, model2half, to_half
from tests.callbacks.v1_scenarios_b import assert_close
from tests.callbacks.v1_scenarios_b import run as run_scenarios
from tests.conftest import make_data

REFERENCE = json.loads((Path(__file__).parent / "v1_reference_b.json").read_text())
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def bn_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def bn_learner(tmp_path, **kwargs) -> Learner:
    kwargs.setdefault("loss_func", nn.CrossEntropyLoss())
    return Learner(make_data(), bn_model(), path=tmp_path, silent=True, **kwargs)


class Seen(Callback):
    "Records, per event, what it is handed (its `_order` decides whether it runs before or after MixedPrecision)."

    def __init__(self, order: int):
        self._order = order
        self.input, self.output, self.bwd_loss, self.smooth, self.end_loss, self.skip = [], [], [], [], [], []

    def on_batch_begin(self, last_input, train, **kwargs):
        if train:
            self.input.append(last_input.dtype)

    def on_loss_begin(self, last_output, **kwargs):
        self.output.append(last_output.dtype)

    def on_backward_begin(self, last_loss, smooth_loss, **kwargs):
        self.bwd_loss.append(last_loss.detach().clone())
        self.smooth.append(float(smooth_loss))

    def on_backward_end(self, skip_step, **kwargs):
        self.skip.append(skip_step)

    def on_batch_end(self, last_loss, train, **kwargs):
        if train:
            self.end_loss.append(float(last_loss))


# ------------------------------------------------------------------------------------------ half helpers
def test_to_half_converts_floats_and_leaves_integer_tensors_alone():
    b = [torch.randn(2), (torch.arange(3), torch.arange(3, dtype=torch.int32)), {"m": torch.ones(1)}, "s"]
    h = to_half(b)
    assert h[0].dtype == torch.float16
    assert [t.dtype for t in h[1]] == [torch.int64, torch.int32]
    assert h[2]["m"].dtype == torch.float16 and h[3] == "s"


def test_batch_to_half_converts_only_the_input():
    x, y = batch_to_half((torch.randn(3, 2), torch.randn(3)))
    assert x.dtype == torch.float16 and y.dtype == torch.float32


def test_model2half_keeps_batchnorm_in_float32_at_any_depth():
    m = nn.Sequential(nn.Linear(2, 4), nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 2)), nn.BatchNorm2d(3))
    assert model2half(m) is m
    assert m[0].weight.dtype == m[1][1].weight.dtype == torch.float16
    for bn in (m[1][0], m[2]):
        assert bn.weight.dtype == bn.running_mean.dtype == torch.float32
    assert bn2float(nn.BatchNorm1d(2).half()).weight.dtype == torch.float32


def test_half_linear_and_batchnorm_run_on_the_cpu():
    "The v1 path trains on the CPU only if this torch has CPU float16 kernels for these layers."
    out = model2half(bn_model())(torch.randn(5, 4).half())
    assert out.dtype == torch.float16 and torch.isfinite(out).all()


# ------------------------------------------------------------------------------------------ master helpers
def test_get_master_gives_float32_copies_per_split_group_of_trainable_params_only():
    m = model2half(bn_model())
    m[0].weight.requires_grad_(False)
    model_p, master_p = get_master([m])
    assert len(model_p) == len(master_p) == 2  # weights, then the no-wd group (biases and BatchNorm)
    assert all(p.requires_grad for g in model_p for p in g) and all(p is not m[0].weight for p in model_p[0])
    for mg, sg in zip(model_p, master_p):
        for p, s in zip(mg, sg):
            assert s.dtype == torch.float32 and s.requires_grad and s.data_ptr() != p.data_ptr()
            assert torch.equal(s, p.float())
    _, flat = get_master([m], flat_master=True)
    assert [len(g) for g in flat] == [1, 1]
    assert flat[0][0].numel() == sum(p.numel() for p in model_p[0])


def test_grads_go_to_the_masters_and_weights_come_back_flat_or_not():
    for flat in (False, True):
        m = model2half(bn_model())
        model_p, master_p = get_master([m], flat_master=flat)
        m(torch.randn(6, 4).half()).float().sum().backward()
        m[3].bias.grad = None  # a parameter without a gradient (v1 crashed on it in flat mode)
        model_g2master_g(model_p, master_p, flat)
        if flat:
            expected = torch.cat([(p.grad.float() if p.grad is not None else torch.zeros(p.numel())).flatten()
                                  for p in model_p[1]])
            assert torch.equal(master_p[1][0].grad, expected)
        else:
            assert master_p[1][-1].grad is None
            assert torch.equal(master_p[0][0].grad, model_p[0][0].grad.float())
        with torch.no_grad():
            for g in master_p:
                for s in g:
                    s.add_(0.5)
        master2model(model_p, master_p, flat)
        assert torch.equal(m[0].weight, (bn_model()[0].weight.half().float() + 0.5).half())


def test_grad_overflow_spots_inf_and_nan():
    p = torch.zeros(3, requires_grad=True)
    assert grad_overflow([[p]]) is False  # no grad at all
    p.grad = torch.ones(3)
    assert grad_overflow([[p]]) is False
    for bad in (math.inf, -math.inf, math.nan):
        p.grad = torch.tensor([1.0, bad, 1.0])
        assert grad_overflow([[p]]) is True


# ------------------------------------------------------------------------------------------ v1 path
def test_to_fp16_sets_up_v1_mixed_precision(tmp_path):
    learn = bn_learner(tmp_path)
    assert to_fp16(learn) is learn
    assert isinstance(learn.mp_cb, MixedPrecision) and learn.callbacks == [learn.mp_cb]
    assert learn.mixed_precision is learn.mp_cb  # registered under camel2snake of its class, as v1
    assert learn.mp_cb._order == 999 and learn.mp_cb.loss_scale == 2**16
    assert [p.dtype for p in learn.model.parameters()] == [torch.float16] * 2 + [torch.float32] * 2 + [
        torch.float16] * 2
    assert batch_to_half in learn.data.train_dl.tfms and batch_to_half in learn.data.valid_dl.tfms
    assert learn.mp_cb.not_min == ["model_params", "master_params"]
    assert MixedPrecision(learn, dynamic=False).loss_scale == 512


def test_v1_path_events_dtypes_and_loss_scaling(tmp_path):
    """Half input; a callback before MixedPrecision sees the half output, one after it the float32 output;
    the loss is scaled at backward_begin and stays scaled at batch_end, smooth_loss is not scaled."""
    learn = to_fp16(bn_learner(tmp_path))
    before, after = Seen(order=0), Seen(order=1000)
    learn.fit(1, 1e-3, callbacks=[before, after])
    assert set(before.input) == {torch.float16}
    assert set(before.output) == {torch.float16} and set(after.output) == {torch.float32}
    for raw, scaled in zip(before.bwd_loss, after.bwd_loss):
        assert raw.dtype == torch.float32 and torch.equal(scaled, raw * 2**16)
    assert after.end_loss == pytest.approx([float(s) for s in after.bwd_loss])
    assert before.smooth[0] == pytest.approx(float(before.bwd_loss[0]))
    assert after.skip == [False] * 4


def test_v1_path_optimizer_steps_float32_masters_copied_into_the_model(tmp_path):
    learn = to_fp16(bn_learner(tmp_path))
    learn.fit(1, 1e-2)
    cb = learn.mp_cb
    opt_params = [p for g in learn.opt.opt.param_groups for p in g["params"]]
    assert all(p.dtype == torch.float32 for p in opt_params)
    assert [id(p) for p in opt_params] == [id(p) for g in cb.master_params for p in g]
    for model_g, master_g in zip(cb.model_params, cb.master_params):
        for p, s in zip(model_g, master_g):
            assert torch.equal(p, s.to(p.dtype))
            assert p.grad is None  # zeroed at step_end
    assert learn.model[0].weight.dtype == torch.float16


def test_v1_path_numbers_match_fastai_1_0_61():
    """Five settings (default, flat master, clip, static scale, overflowing scale): losses, the scaled loss at
    batch_end, final half weights and get_state() as fastai 1.0.61 gives them (v1_reference_b.json)."""
    ours = run_scenarios("fastloop", only=["fp16"])["fp16"]
    # float16 kernels may round differently on another CPU: a looser tolerance than for float32 results
    assert_close(ours, REFERENCE["fp16"], rel=2e-3, abs_=2e-3, where="fp16")


def test_overflow_halves_the_scale_and_moves_no_weight_without_returning_skip_step(tmp_path):
    "v1: on overflow the masters keep no gradient (None), so Adam leaves them; skip_step is not returned."
    learn = bn_learner(tmp_path)
    to_fp16(learn, loss_scale=2.0**60)
    before = [p.detach().clone() for p in learn.model.parameters()]
    after = Seen(order=1000)
    learn.fit(1, 1e-2, wd=0.0, callbacks=[after])
    assert learn.mp_cb.loss_scale == 2.0**56 and learn.mp_cb.noskip == 0
    assert after.skip == [False] * 4
    assert all(torch.equal(a, b) for a, b in zip(before, learn.model.parameters()))


def test_scale_doubles_after_max_noskip_clean_steps_up_to_max_scale(tmp_path):
    learn = bn_learner(tmp_path)
    to_fp16(learn, loss_scale=4.0, max_noskip=2, max_scale=16)
    scales = []

    class Watch(Callback):
        _order = 1000

        def on_step_end(self, **kwargs):
            scales.append((learn.mp_cb.loss_scale, learn.mp_cb.noskip))

    learn.fit(2, 1e-3, callbacks=[Watch()])
    assert scales == [(4.0, 1), (8.0, 0), (8.0, 1), (16.0, 0), (16.0, 1), (16.0, 2), (16.0, 3), (16.0, 4)]


def test_static_scale_never_changes(tmp_path):
    learn = bn_learner(tmp_path)
    to_fp16(learn, dynamic=False, max_noskip=1)
    learn.fit(1, 1e-3)
    assert learn.mp_cb.loss_scale == 512 and learn.mp_cb.noskip == 0


def test_clip_bounds_the_norm_of_each_master_group(tmp_path):
    learn = bn_learner(tmp_path)
    to_fp16(learn, clip=1e-3)
    norms = []

    class Watch(Callback):
        _order = 1000

        def on_backward_end(self, **kwargs):
            norms.append([torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in g])).item()
                          for g in learn.mp_cb.master_params])

    learn.fit(1, 1e-3, callbacks=[Watch()])
    assert len(norms) == 4 and all(n <= 1e-3 * (1 + 1e-5) for row in norms for n in row)


def test_optimizer_state_is_rebuilt_at_every_fit_as_in_v1(tmp_path):
    learn = to_fp16(bn_learner(tmp_path))
    learn.fit(1, 1e-3)
    first = learn.opt.opt
    learn.fit(1, 1e-3)
    assert learn.opt.opt is not first
    assert all(len(s) > 0 for s in learn.opt.opt.state.values())


def test_get_state_returns_v1_keys_and_load_state_restores_the_scale(tmp_path):
    learn = to_fp16(bn_learner(tmp_path), loss_scale=2.0**40)
    learn.fit(1, 1e-3)
    state = learn.mp_cb.get_state()
    assert set(state) == {"flat_master", "dynamic", "max_noskip", "clip", "max_scale", "loss_fp32", "loss_scale",
                          "opt", "noskip"}
    assert state["loss_scale"] == 2.0**36 and state["opt"] is None
    fresh = to_fp16(bn_learner(tmp_path)).mp_cb
    fresh.load_state(state)
    assert fresh.loss_scale == 2.0**36 and fresh.noskip == state["noskip"]


def test_to_fp32_undoes_to_fp16_and_the_next_fit_trains_the_model(tmp_path):
    """Model back to float32, transform and every MixedPrecision removed; the optimizer steps the model again
    (fastai v1 left it stepping the detached masters, so the model stopped learning)."""
    learn = to_fp16(bn_learner(tmp_path))
    learn.fit(1, 1e-3)
    learn.callbacks.append(MixedPrecision(learn))  # a second one: to_fp32 removes them all
    assert to_fp32(learn) is learn
    assert learn.callbacks == [] and batch_to_half not in learn.data.train_dl.tfms
    assert all(p.dtype == torch.float32 for p in learn.model.parameters())
    before = [p.detach().clone() for p in learn.model.parameters()]
    learn.fit(1, 1e-3)
    assert all(not torch.equal(a, b) for a, b in zip(before, learn.model.parameters()))
    opt_ids = {id(p) for g in learn.opt.opt.param_groups for p in g["params"]}
    assert opt_ids <= {id(p) for p in learn.model.parameters()}


def test_to_fp16_twice_keeps_one_callback_and_one_transform(tmp_path):
    learn = to_fp16(to_fp16(bn_learner(tmp_path)))
    assert len(learn.callbacks) == 1 and learn.data.train_dl.tfms.count(batch_to_half) == 1


# ------------------------------------------------------------------------------------------ amp path
class DtypeProbe(nn.Module):
    "Records, at each forward, whether autocast is on and the dtype of its Linear's output."

    def __init__(self):
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(4, 8), nn.Linear(8, 2)
        self.seen = []

    def forward(self, x):
        h = self.lin1(x)
        self.seen.append((torch.is_autocast_enabled(x.device.type), h.dtype))
        return self.lin2(torch.relu(h))


def probe_learner(tmp_path) -> Learner:
    torch.manual_seed(0)
    return Learner(make_data(), DtypeProbe(), loss_func=nn.CrossEntropyLoss(), path=tmp_path, silent=True)


def test_amp_on_cpu_runs_the_forward_in_bfloat16_and_keeps_the_model_float32(tmp_path):
    learn = probe_learner(tmp_path)
    to_fp16(learn, amp=True)
    assert isinstance(learn.mp_cb, AmpMixedPrecision) and isinstance(learn.mp_cb, MixedPrecision)
    assert learn.mp_cb.amp_dtype == torch.bfloat16 and not learn.mp_cb.scaler.is_enabled()
    assert batch_to_half not in learn.data.train_dl.tfms
    after = Seen(order=1000)
    learn.fit(1, 1e-2, callbacks=[after])
    assert set(learn.model.seen) == {(True, torch.bfloat16)}  # training and validation forwards
    assert len(learn.model.seen) == 4 + 2
    assert set(after.output) == {torch.float32} and set(after.input) == {torch.float32}
    assert not torch.is_autocast_enabled("cpu")  # autocast covers the forward only
    assert all(p.dtype == torch.float32 for p in learn.model.parameters())
    assert learn.opt.opt.param_groups[0]["params"][0] is learn.model.lin1.weight  # no master copies
    learn.get_preds()
    assert learn.model.seen[-1] == (True, torch.bfloat16)


def test_amp_bf16_on_cpu_trains_and_matches_float32_losses(tmp_path):
    ref = bn_learner(tmp_path)
    ref.fit(2, 1e-2)
    learn = to_fp16(bn_learner(tmp_path), amp=True)
    learn.fit(2, 1e-2)
    assert [float(v) for v in learn.recorder.losses] == pytest.approx([float(v) for v in ref.recorder.losses],
                                                                      abs=5e-3)
    assert learn.recorder.val_losses == pytest.approx(ref.recorder.val_losses, abs=5e-3)
    assert learn.recorder.val_losses[-1] < learn.recorder.val_losses[0]


def test_amp_leaves_autocast_when_the_forward_raises(tmp_path):
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    learn = Learner(make_data(), nn.Sequential(nn.Linear(4, 2), Boom()), loss_func=nn.CrossEntropyLoss(),
                    path=tmp_path, silent=True)
    to_fp16(learn, amp=True)
    with pytest.raises(RuntimeError, match="boom"):
        learn.fit(1, 1e-3)
    assert not torch.is_autocast_enabled("cpu")


def test_amp_float16_gradscaler_skips_an_overflowing_step_and_halves_the_scale(tmp_path):
    """float16 autocast with a GradScaler (runs on the CPU too): a batch whose gradients hold an inf returns
    skip_step (seen by later callbacks), leaves the weights alone, and halves the scale; clean steps count."""
    learn = bn_learner(tmp_path)
    to_fp16(learn, amp=True, amp_dtype=torch.float16)
    assert learn.mp_cb.scaler.is_enabled() and learn.mp_cb.loss_scale == 2.0**16
    weights = []

    class Poison(Callback):  # runs before AmpMixedPrecision's on_backward_end
        def on_backward_end(self, iteration, **kwargs):
            weights.append([p.detach().clone() for p in learn.model.parameters()])
            if iteration == 2:
                learn.model[0].weight.grad[0, 0] = math.inf

    before, after = Seen(order=0), Seen(order=1000)
    learn.fit(1, 1e-2, callbacks=[Poison(), before, after])
    assert after.skip == [False, False, True, False]
    assert all(torch.equal(a, b) for a, b in zip(weights[2], weights[3]))  # batch 2 moved nothing
    assert not all(torch.equal(a, b) for a, b in zip(weights[1], weights[2]))
    assert learn.mp_cb.loss_scale == 2.0**15 and learn.mp_cb.noskip == 1
    for raw, scaled in zip(before.bwd_loss, after.bwd_loss):
        assert torch.allclose(scaled, raw * 2.0**16) or torch.allclose(scaled, raw * 2.0**15)


def test_amp_scale_grows_after_max_noskip_and_stays_under_max_scale_or_constant(tmp_path):
    learn = to_fp16(bn_learner(tmp_path), amp=True, amp_dtype=torch.float16, loss_scale=4.0, max_noskip=2,
                    max_scale=16)
    learn.fit(2, 1e-3)
    assert learn.mp_cb.loss_scale == 16.0
    learn = to_fp16(bn_learner(tmp_path), amp=True, amp_dtype=torch.float16, loss_scale=4.0, max_noskip=1,
                    dynamic=False)
    learn.fit(1, 1e-3)
    assert learn.mp_cb.loss_scale == 4.0


def test_amp_leaves_scaled_gradients_alone_while_another_callback_accumulates(tmp_path):
    """A callback that returns skip_step/skip_zero at backward_end (gradient accumulation) runs before
    AmpMixedPrecision, which then neither unscales nor updates: only the stepping batches move the scaler."""
    learn = to_fp16(bn_learner(tmp_path), amp=True, amp_dtype=torch.float16)

    class Accumulate(Callback):
        def on_backward_end(self, num_batch, **kwargs):
            if num_batch % 2 == 0:
                return {"skip_step": True, "skip_zero": True}

    learn.fit(2, 1e-3, callbacks=[Accumulate()])
    assert learn.mp_cb.scaler.state_dict()["_growth_tracker"] == 4 and learn.mp_cb.noskip == 4


def test_amp_get_state_holds_the_scaler_and_load_state_restores_it(tmp_path):
    learn = to_fp16(bn_learner(tmp_path), amp=True, amp_dtype=torch.float16, loss_scale=2.0**10)
    learn.fit(1, 1e-3)
    state = learn.mp_cb.get_state()
    assert state["scaler"] == {"scale": 2.0**10, "growth_factor": 2.0, "backoff_factor": 0.5,
                               "growth_interval": 1000, "_growth_tracker": 4}
    assert "_handles" not in state and "scaler" in state and state["noskip"] == 4
    other = to_fp16(bn_learner(tmp_path), amp=True, amp_dtype=torch.float16)
    other.mp_cb.load_state(state)
    assert other.mp_cb.loss_scale == 2.0**10 and other.mp_cb.scaler.state_dict() == state["scaler"]
    assert pickle.loads(pickle.dumps(state)) == state


def test_amp_checkpoint_protocol_accepts_its_state(tmp_path):
    "The checkpoint module (issue #8) saves a callback with load_state through get_state(): plain data only."
    _checkpoint = pytest.importorskip("fastloop._checkpoint")
    learn = to_fp16(bn_learner(tmp_path), amp=True, amp_dtype=torch.float16, loss_scale=2.0**10)
    learn.fit(1, 1e-3)
    saved = _checkpoint.capture_callback(learn.mp_cb)
    other = to_fp16(bn_learner(tmp_path), amp=True, amp_dtype=torch.float16)
    _checkpoint.restore_callback(other.mp_cb, saved)
    assert other.mp_cb.loss_scale == 2.0**10
    v1 = to_fp16(bn_learner(tmp_path), loss_scale=2.0**40)
    v1.fit(1, 1e-3)
    fresh = to_fp16(bn_learner(tmp_path))
    _checkpoint.restore_callback(fresh.mp_cb, _checkpoint.capture_callback(v1.mp_cb))
    assert fresh.mp_cb.loss_scale == 2.0**36


def test_amp_to_fp32_removes_the_autocast_hooks_and_a_replaced_model_is_rehooked(tmp_path):
    learn = probe_learner(tmp_path)
    to_fp16(learn, amp=True)
    old = learn.model
    learn.model = DtypeProbe()
    learn.fit(1, 1e-3)
    assert learn.model.seen and set(learn.model.seen) == {(True, torch.bfloat16)}
    assert not old._forward_hooks and not old._forward_pre_hooks
    to_fp32(learn)
    assert not learn.model._forward_hooks and not learn.model._forward_pre_hooks
    learn.fit(1, 1e-3)
    assert learn.model.seen[-1] == (False, torch.float32)


def test_amp_model_pickles_with_its_autocast_hooks(tmp_path):
    learn = probe_learner(tmp_path)
    to_fp16(learn, amp=True)
    model = pickle.loads(pickle.dumps(learn.model))
    model(torch.randn(2, 4))
    assert model.seen[-1] == (True, torch.bfloat16) and not torch.is_autocast_enabled("cpu")


def test_amp_rejects_an_unknown_dtype(tmp_path):
    with pytest.raises(ValueError, match="AmpMixedPrecision: amp_dtype"):
        to_fp16(bn_learner(tmp_path), amp=True, amp_dtype=torch.float64)


# ------------------------------------------------------------------------------------------ CUDA only
def cuda_learner(tmp_path, model: nn.Module | None = None) -> Learner:
    "The conftest problem, bigger (256 training items), on the GPU."
    g = torch.Generator().manual_seed(0)
    x = torch.randn(320, 4, generator=g)
    y = (x.sum(1) > 0).long()
    data = DataBunch.create(TensorDataset(x[:256], y[:256]), TensorDataset(x[256:], y[256:]), bs=32, num_workers=0,
                            device="cuda")
    return Learner(data, model if model is not None else bn_model(), loss_func=nn.CrossEntropyLoss(), path=tmp_path,
                   silent=True)


@cuda
def test_cuda_v1_path_trains_with_a_half_model_and_float32_masters(tmp_path):
    learn = to_fp16(cuda_learner(tmp_path))
    after = Seen(order=1000)
    learn.fit(3, 1e-2, callbacks=[after])
    assert learn.model[0].weight.dtype == torch.float16 and learn.model[0].weight.is_cuda
    assert learn.model[1].weight.dtype == torch.float32
    assert all(p.dtype == torch.float32 and p.is_cuda for g in learn.opt.opt.param_groups for p in g["params"])
    assert set(after.input) == {torch.float16} and set(after.output) == {torch.float32}
    assert all(math.isfinite(float(v)) for v in learn.recorder.losses)
    assert learn.recorder.val_losses[-1] < learn.recorder.val_losses[0]


@cuda
def test_cuda_amp_uses_float16_autocast_and_a_gradscaler_and_matches_float32(tmp_path):
    torch.manual_seed(0)
    ref = cuda_learner(tmp_path, bn_model())
    ref.fit(3, 1e-2)
    torch.manual_seed(0)
    # a small initial scale: no step of this short run is skipped, so its numbers stay close to float32's
    learn = to_fp16(cuda_learner(tmp_path, bn_model()), amp=True, loss_scale=2.0**8)
    assert learn.mp_cb.amp_dtype == torch.float16 and learn.mp_cb.scaler.is_enabled()
    seen = []
    learn.model[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    learn.fit(3, 1e-2)
    assert set(seen) == {torch.float16}
    assert all(p.dtype == torch.float32 for p in learn.model.parameters())
    assert learn.recorder.val_losses == pytest.approx(ref.recorder.val_losses, abs=2e-2)
    assert learn.recorder.val_losses[-1] < learn.recorder.val_losses[0]
    state = learn.mp_cb.get_state()["scaler"]
    assert state["scale"] == learn.mp_cb.loss_scale and state["_growth_tracker"] == learn.mp_cb.noskip


@cuda
def test_cuda_amp_overflow_is_reported_through_skip_step(tmp_path):
    torch.manual_seed(0)
    learn = to_fp16(cuda_learner(tmp_path, bn_model()), amp=True, loss_scale=2.0**8)  # no natural overflow
    scale = learn.mp_cb.loss_scale

    class Poison(Callback):
        def on_backward_end(self, iteration, **kwargs):
            if iteration == 1:
                learn.model[0].weight.grad[0, 0] = math.inf

    after = Seen(order=1000)
    learn.fit(1, 1e-3, callbacks=[Poison(), after])
    assert after.skip[1] is True and after.skip.count(True) == 1
    assert learn.mp_cb.loss_scale == scale / 2
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())


# ------------------------------------------------------------------------------------------ live oracle
@pytest.mark.skipif(not os.environ.get("FASTLOOP_ORACLE_PYTHON"), reason="set FASTLOOP_ORACLE_PYTHON (spec §22)")
def test_part_b_scenarios_match_a_live_fastai_1_0_61_bit_for_bit(tmp_path):
    """v1_scenarios_b.py on a live fastai 1.0.61 (fp16, mixup, hooks, rnn) gives the recorded reference, and
    fastloop gives exactly the same numbers on this machine."""
    out = tmp_path / "oracle.json"
    subprocess.run([os.environ["FASTLOOP_ORACLE_PYTHON"], str(Path(__file__).parent / "v1_scenarios_b.py"), "--lib",
                    "fastai", "--out", str(out)], check=True, capture_output=True, env={**os.environ, "PYTHONPATH": ""})
    live = json.loads(out.read_text())
    assert_close(live, REFERENCE, rel=0.0, abs_=0.0, where="oracle")
    assert_close(run_scenarios("fastloop"), live, rel=0.0, abs_=0.0, where="fastloop")
