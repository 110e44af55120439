"""Mixed-precision training: fastai v1's `MixedPrecision` (half model, fp32 master weights) and an opt-in
``torch.amp`` path (`AmpMixedPrecision`).  `fastloop.train.to_fp16` / `to_fp32` switch a learner between them.

Which one to use:

* ``learn.to_fp16()`` -- fastai v1's scheme, the default.  The model itself is converted to float16 (BatchNorm
  stays float32), the batches' inputs are cast to half by a loader transform, an fp32 copy of the weights (the
  "master" weights) is what the optimizer steps, and the loss is scaled dynamically.  Ported callbacks see the
  dtypes they saw under fastai v1 (a half model and half inputs, a float32 output and loss).
* ``learn.to_fp16(amp=True)`` -- PyTorch's automatic mixed precision.  The model stays float32, its forward runs
  under ``torch.autocast`` (float16 on CUDA with a ``torch.amp.GradScaler``, bfloat16 on the CPU), the optimizer
  keeps its state across fits, and the scaler's state can be checkpointed.  Faster and more robust on current
  GPUs; choose it unless a ported callback relies on the model's parameters being half.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parameters_to_vector

from ..basic_train import Learner, LearnerCallback
from ..core import ifnone
from ..torch_core import batch_to_half, model2half, split_no_wd_params, to_float

__all__ = ["MixedPrecision", "AmpMixedPrecision", "to_fp16", "to_fp32", "get_master", "model_g2master_g",
           "master2model", "grad_overflow"]

ParamGroups = list[list[torch.Tensor]]


# ------------------------------------------------------------------------------- master weights (v1 scheme)
def get_master(layer_groups: Sequence[nn.Module], flat_master: bool = False) -> tuple[ParamGroups, ParamGroups]:
    """``(model_params, master_params)``: per split param group (two per layer group), the trainable parameters
    of the (half) model and their float32 copies, which the optimizer will step.

    With `flat_master`, each group's copies are one flat float32 vector (a single parameter per group).
    """
    split = split_no_wd_params(layer_groups)
    model_params = [[p for p in group if p.requires_grad] for group in split]
    master_params: ParamGroups = []
    for group in model_params:
        if flat_master:
            if not group:
                master_params.append([])
                continue
            flat = nn.Parameter(parameters_to_vector([p.detach().float() for p in group]), requires_grad=True)
            flat.grad = torch.zeros_like(flat)  # v1 allocated it uninitialised; zeros are the same once copied into
            master_params.append([flat])
        else:
            master_params.append([p.detach().clone().float().requires_grad_(True) for p in group])
    return model_params, master_params


def model_g2master_g(model_params: ParamGroups, master_params: ParamGroups, flat_master: bool = False) -> None:
    """Copy the model's (half) gradients into the master parameters' float32 gradients.

    A model parameter without a gradient leaves its master's gradient None (so the optimizer skips it); in flat
    mode its slice of the flat gradient is zero (fastai v1 crashed on a None gradient there).
    """
    for model_group, master_group in zip(model_params, master_params):
        if flat_master:
            if not master_group:
                continue
            flat = master_group[0]
            grads = [p.grad.detach().float() if p.grad is not None else torch.zeros_like(p, dtype=torch.float32)
                     for p in model_group]
            if flat.grad is None:
                flat.grad = torch.empty_like(flat)
            flat.grad.copy_(parameters_to_vector(grads))
            continue
        for model, master in zip(model_group, master_group):
            if model.grad is None:
                master.grad = None
                continue
            if master.grad is None:
                master.grad = torch.empty_like(master)
            master.grad.copy_(model.grad.detach())


def master2model(model_params: ParamGroups, master_params: ParamGroups, flat_master: bool = False) -> None:
    """Copy the (just stepped) float32 master weights back into the half model."""
    with torch.no_grad():
        for model_group, master_group in zip(model_params, master_params):
            if flat_master:
                if not model_group:
                    continue
                offset = 0
                flat = master_group[0].detach()
                for p in model_group:  # the inverse of parameters_to_vector
                    n = p.numel()
                    p.copy_(flat[offset:offset + n].view_as(p))
                    offset += n
                continue
            for model, master in zip(model_group, master_group):
                model.copy_(master.detach())


def grad_overflow(param_groups: ParamGroups) -> bool:
    """True if any gradient in `param_groups` holds an inf or a NaN (one host-device sync for all of them)."""
    sums = [p.grad.detach().float().sum() for group in param_groups for p in group if p.grad is not None]
    if not sums:
        return False
    return not math.isfinite(torch.stack(sums).sum().item())  # inf - inf is NaN: any non-finite sum shows


# ------------------------------------------------------------------------------------------- MixedPrecision
class MixedPrecision(LearnerCallback):
    """fastai v1's mixed-precision training: a half model, float32 master weights and dynamic loss scaling.

    Use it through ``learn.to_fp16()``, which also converts the model to half (BatchNorm stays float32) and casts
    each batch's input to half.  The optimizer steps float32 copies of the trainable parameters, rebuilt at every
    ``on_train_begin`` (so, as in fastai v1, the optimizer state does not survive from one fit to the next).

    Events and state keys:

    * ``on_train_begin``: builds the master copies (`get_master`) and points ``learn.opt.opt`` at a new torch
      optimizer over them, with the wrapper's hyper-parameters; ``noskip = 0``.
    * ``on_loss_begin`` (reads ``last_output``; training and validation): with `loss_fp32`, returns
      ``last_output`` cast to float32, so the loss and the metrics are computed in float32.
    * ``on_backward_begin`` (reads ``last_loss``): returns ``last_loss * loss_scale``; that scaled loss is also
      what ``on_batch_end`` sees as ``last_loss`` (as in fastai v1; ``smooth_loss`` is the unscaled one).
    * ``on_backward_end``: if `dynamic` and a model gradient overflowed (and ``loss_scale > 1``), halves the scale
      and leaves the master gradients as they are -- None after the last ``zero_grad``, so the optimizer leaves
      the weights alone (true weight decay still applies); it does not return ``skip_step``, as in v1.  Otherwise
      copies the gradients to the masters, divides them by the scale, clips them per param group (`clip`), and
      after `max_noskip` clean steps doubles the scale, up to `max_scale`.  Returns nothing.
    * ``on_step_end``: zeroes the model's gradients and copies the master weights back into the model.

    ``_order = 999``: it must run after every callback that changes ``last_output`` or ``last_loss`` (the loss is
    scaled last) and reads the gradients after other callbacks' ``on_backward_end``.  Those callbacks therefore
    see scaled half gradients, as in fastai v1: clip with ``to_fp16(clip=...)``, not `GradientClipping`.

    ``get_state()`` holds ``loss_scale`` and ``noskip`` (plus the settings, and v1's ``opt`` -- always None);
    ``load_state(state)`` restores them.
    """

    _order = 999

    def __init__(self, learn: Learner, loss_scale: float | None = None, max_noskip: int = 1000, dynamic: bool = True,
                 clip: float | None = None, flat_master: bool = False, max_scale: float = 2**24,
                 loss_fp32: bool = True):
        super().__init__(learn)
        self.flat_master, self.dynamic, self.max_noskip, self.clip = flat_master, dynamic, max_noskip, clip
        self.max_scale, self.loss_fp32 = max_scale, loss_fp32
        self.loss_scale = ifnone(loss_scale, 2**16 if dynamic else 512)
        self.not_min += ["model_params", "master_params"]
        assert torch.backends.cudnn.enabled, "Mixed precision training requires cudnn."
        self.opt = None  # fastai v1 keeps this (unused) attribute; it shadows learn.opt in the fall-through
        self.noskip = 0

    def on_train_begin(self, **kwargs: Any) -> None:
        "Copy the trainable parameters to float32 masters and make the optimizer step those."
        self.model_params, self.master_params = get_master(self.learn.layer_groups, self.flat_master)
        new_opt = self.learn.opt.new_with_params(self.master_params)
        self.learn.opt.opt = new_opt.opt
        self.noskip = 0

    def on_loss_begin(self, last_output: Any, **kwargs: Any) -> dict | None:
        "Cast the (half) output to float32 so the loss is reduced without overflow."
        if self.loss_fp32:
            return {"last_output": to_float(last_output)}
        return None

    def on_backward_begin(self, last_loss: torch.Tensor, **kwargs: Any) -> dict:
        "Scale the loss up by `loss_scale` so that small half gradients do not underflow."
        return {"last_loss": last_loss * self.loss_scale}

    def on_backward_end(self, **kwargs: Any) -> None:
        "Overflow check and scale update; else unscaled (and clipped) gradients into the masters."
        if self.dynamic and grad_overflow(self.model_params) and self.loss_scale > 1:
            self.loss_scale /= 2
            self.noskip = 0
            return
        model_g2master_g(self.model_params, self.master_params, self.flat_master)
        for group in self.master_params:
            for p in group:
                if p.grad is not None:
                    p.grad.div_(self.loss_scale)
        if self.clip is not None:
            for group in self.master_params:
                nn.utils.clip_grad_norm_(group, self.clip)
        if not self.dynamic:
            return
        self.noskip += 1
        if self.noskip >= self.max_noskip and self.loss_scale < self.max_scale:
            self.loss_scale *= 2
            self.noskip = 0

    def on_step_end(self, **kwargs: Any) -> None:
        "Zero the model's gradients and copy the stepped master weights into the model."
        self.learn.model.zero_grad()
        master2model(self.model_params, self.master_params, self.flat_master)

    def load_state(self, state: dict) -> None:
        "Restore the loss scale and the clean-step counter from `get_state()` (for checkpoints)."
        for k in ("loss_scale", "noskip"):
            if k in state:
                setattr(self, k, state[k])

    def remove(self) -> None:
        "Called by `to_fp32` when the callback is taken off the learner (nothing to undo in v1's scheme)."


# ------------------------------------------------------------------------------------------- torch.amp path
class _AutocastEnter:
    "Forward pre-hook: enter ``torch.autocast`` for the model's forward (picklable: no reference to a learner)."

    def __init__(self, device_type: str, dtype: torch.dtype):
        self.device_type, self.dtype = device_type, dtype
        self.stack: list[Any] = []

    def __call__(self, module: nn.Module, args: Any) -> None:
        ctx = torch.autocast(self.device_type, dtype=self.dtype)
        ctx.__enter__()
        self.stack.append(ctx)

    def __getstate__(self) -> dict:
        return {"device_type": self.device_type, "dtype": self.dtype, "stack": []}


class _AutocastExit:
    "Forward hook run even when the forward raises: leave the autocast context `enter` opened."

    def __init__(self, enter: _AutocastEnter):
        self.enter = enter

    def __call__(self, module: nn.Module, args: Any, output: Any) -> None:
        if self.enter.stack:
            self.enter.stack.pop().__exit__(None, None, None)


def _grad_scaler(device_type: str, **kwargs: Any) -> Any:
    "``torch.amp.GradScaler`` (torch >= 2.3), or on older torch the CUDA one (CPU float16 scaling needs 2.3)."
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler(device_type, **kwargs)
    if device_type == "cuda" or not kwargs.get("enabled", True):
        return torch.cuda.amp.GradScaler(**kwargs)
    raise RuntimeError(f"AmpMixedPrecision: float16 loss scaling on {device_type!r} needs torch >= 2.3 "
                       f"(this is {torch.__version__}); use bfloat16 (amp_dtype=torch.bfloat16).")


class AmpMixedPrecision(MixedPrecision):
    """Opt-in ``torch.amp`` mixed precision (``learn.to_fp16(amp=True)``): float32 model, autocast forward.

    The model's forward runs under ``torch.autocast`` -- float16 on CUDA, bfloat16 on the CPU, or `amp_dtype` --
    through a pre/post forward hook pair on ``learn.model``, so `fit`, `validate`, `get_preds` and `predict` all
    use it; the loss is computed outside autocast.  With float16, a ``torch.amp.GradScaler`` scales the loss; a
    step whose gradients overflow is skipped and reported through ``skip_step``.  bfloat16 needs no scaling.
    The model, its parameters and the optimizer (and its state, across fits) stay float32.

    Events and state keys:

    * ``on_train_begin``: (re)hooks ``learn.model`` if it was replaced.
    * ``on_loss_begin`` (reads ``last_output``): with `loss_fp32`, returns it cast to float32.
    * ``on_backward_begin`` (reads ``last_loss``): with a scaler, returns ``scaler.scale(last_loss)`` (what
      ``on_batch_end`` then sees, as with v1's scheme).
    * ``on_backward_end`` (reads ``skip_step``): unless another callback already asked to skip the step (gradient
      accumulation: the gradients are left scaled and summing), unscales the gradients in place; if one
      overflowed, returns ``{'skip_step': True}``; otherwise clips them per param group (`clip`).
    * ``on_step_end``: updates the scaler (halve after an overflow, double after `max_noskip` clean steps, never
      above `max_scale`; constant when not `dynamic`).

    `loss_scale`, `max_noskip`, `dynamic`, `clip`, `max_scale` and `loss_fp32` mean what they mean for
    `MixedPrecision` (initial scale, growth interval...); `flat_master` is ignored.  ``get_state()`` adds the
    scaler's ``state_dict()`` under ``'scaler'``; ``load_state(state)`` restores it.  ``_order = 999``, as
    `MixedPrecision`, for the same reasons.
    """

    def __init__(self, learn: Learner, loss_scale: float | None = None, max_noskip: int = 1000, dynamic: bool = True,
                 clip: float | None = None, flat_master: bool = False, max_scale: float = 2**24,
                 loss_fp32: bool = True, amp_dtype: torch.dtype | None = None):
        LearnerCallback.__init__(self, learn)
        self.dynamic, self.max_noskip, self.clip, self.max_scale = dynamic, max_noskip, clip, max_scale
        self.loss_fp32, self.flat_master = loss_fp32, flat_master
        self.device_type = torch.device(learn.data.device).type
        if amp_dtype is None:
            amp_dtype = torch.float16 if self.device_type == "cuda" else torch.bfloat16
        if amp_dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"AmpMixedPrecision: amp_dtype must be torch.float16 or torch.bfloat16, not {amp_dtype}.")
        self.amp_dtype = amp_dtype
        self.init_scale = float(ifnone(loss_scale, 2**16 if dynamic else 512))
        # float16 needs loss scaling; bfloat16 has float32's range and does not
        self.scaler = _grad_scaler(self.device_type, init_scale=self.init_scale,
                                   growth_interval=max(1, int(max_noskip)), enabled=(amp_dtype == torch.float16))
        self.noskip, self._unscaled = 0, False
        self._hooked_model: nn.Module | None = None
        self._handles: list[Any] = []
        self.exclude += ["scaler", "_hooked_model", "_handles", "_unscaled"]
        self._hook(learn.model)

    # -- autocast hooks on the model
    def _hook(self, model: nn.Module) -> None:
        self._unhook()
        enter = _AutocastEnter(self.device_type, self.amp_dtype)
        self._handles = [model.register_forward_pre_hook(enter),
                         model.register_forward_hook(_AutocastExit(enter), always_call=True)]
        self._hooked_model = model

    def _unhook(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles, self._hooked_model = [], None

    def remove(self) -> None:
        "Take the autocast hooks off the model (`to_fp32` calls it)."
        self._unhook()

    @property
    def loss_scale(self) -> float:
        "The scaler's current scale (1.0 without scaling); reading it syncs with the device."
        return self.scaler.get_scale() if self.scaler.is_enabled() else 1.0

    # -- events
    def on_train_begin(self, **kwargs: Any) -> None:
        "Hook the current model (a callback may have replaced it); clear a step left half done by an error."
        if self._hooked_model is not self.learn.model:
            self._hook(self.learn.model)
        if self._unscaled:  # the last fit raised between on_backward_end and on_step_end
            self.scaler.update()
            self._unscaled = False

    def on_backward_begin(self, last_loss: torch.Tensor, **kwargs: Any) -> dict | None:
        "Scale the loss (float16 only)."
        if not self.scaler.is_enabled():
            return None
        return {"last_loss": self.scaler.scale(last_loss)}

    def on_backward_end(self, skip_step: bool, **kwargs: Any) -> dict | None:
        "Unscale the gradients; skip the step if they overflowed; clip them."
        if skip_step:  # another callback accumulates gradients: they stay scaled until the step
            return None
        opt = self.learn.opt.opt
        if self.scaler.is_enabled():
            self.scaler.unscale_(opt)
            self._unscaled = True
            # GradScaler records, per device, whether unscale_ met an inf/NaN; one sync to read it
            found_inf = sum(v.item() for v in self.scaler._found_inf_per_device(opt).values())
            if found_inf:
                self.noskip = 0
                return {"skip_step": True}
            self.noskip += 1
        if self.clip is not None:
            for group in opt.param_groups:
                nn.utils.clip_grad_norm_(group["params"], self.clip)
        return None

    def on_step_end(self, **kwargs: Any) -> None:
        "Update the scale after an unscaled step: halve after an overflow, grow after `max_noskip` clean steps."
        if not self._unscaled:
            return
        self._unscaled = False
        if not self.dynamic:
            self.scaler.update(new_scale=self.init_scale)
            return
        self.scaler.update()
        if self.noskip >= self.max_noskip:  # the scaler has just grown the scale: keep it under max_scale
            self.noskip = 0
            if self.scaler.get_scale() > self.max_scale:
                self.scaler.update(new_scale=float(self.max_scale))

    # -- checkpoints
    def get_state(self, minimal: bool = True) -> dict:
        "The callback's settings and counters, plus the scaler's ``state_dict()`` under ``'scaler'``."
        state = super().get_state(minimal)
        state["scaler"] = self.scaler.state_dict()
        return state

    def load_state(self, state: dict) -> None:
        "Restore the scaler (and the clean-step counter) from `get_state()`."
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if "noskip" in state:
            self.noskip = state["noskip"]


# ------------------------------------------------------------------------------------- Learner functions
def to_fp16(learn: Learner, loss_scale: float | None = None, max_noskip: int = 1000, dynamic: bool = True,
            clip: float | None = None, flat_master: bool = False, max_scale: float = 2**24, loss_fp32: bool = True,
            amp: bool = False, amp_dtype: torch.dtype | None = None) -> Learner:
    """Put `learn` in mixed precision; returns `learn` (also ``Learner.to_fp16``).

    By default fastai v1's scheme: ``to_fp32()`` first, the model to half with BatchNorm kept float32
    (`model2half`), `batch_to_half` added to the loaders' transforms, and ``learn.mp_cb = MixedPrecision(...)``
    appended to ``learn.callbacks``.  With ``amp=True`` (fastloop's opt-in): the model stays float32, no loader
    transform, and ``learn.mp_cb`` is an `AmpMixedPrecision` (autocast float16 + GradScaler on CUDA, bfloat16 on
    the CPU, or `amp_dtype`).  See the module docstring for which to choose.
    """
    to_fp32(learn)
    if amp:
        learn.mp_cb = AmpMixedPrecision(learn, loss_scale=loss_scale, max_noskip=max_noskip, dynamic=dynamic,
                                        clip=clip, flat_master=flat_master, max_scale=max_scale,
                                        loss_fp32=loss_fp32, amp_dtype=amp_dtype)
    else:
        learn.model = model2half(learn.model)
        learn.data.add_tfm(batch_to_half)
        learn.mp_cb = MixedPrecision(learn, loss_scale=loss_scale, max_noskip=max_noskip, dynamic=dynamic, clip=clip,
                                     flat_master=flat_master, max_scale=max_scale, loss_fp32=loss_fp32)
    learn.callbacks.append(learn.mp_cb)
    return learn


def to_fp32(learn: Learner) -> Learner:
    """Put `learn` back in float32; returns `learn` (also ``Learner.to_fp32``).

    Removes `batch_to_half` from the loaders and every `MixedPrecision` (amp ones too, with their hooks) from
    ``learn.callbacks``, and converts the model to float32.  Two fixes over fastai v1: every such callback is
    removed (v1 removed while iterating, so it could miss one), and if a `MixedPrecision` had pointed the
    optimizer at its master copies, the optimizer is rebuilt over the model's own parameters (same
    hyper-parameters, fresh state) -- in v1 a later fit stepped the detached masters and the model never moved.
    """
    learn.data.remove_tfm(batch_to_half)
    removed = [cb for cb in learn.callbacks if isinstance(cb, MixedPrecision)]
    for cb in removed:
        learn.callbacks.remove(cb)
        cb.remove()
    learn.model = learn.model.float()
    swapped = [cb for cb in removed if cb.__dict__.get("master_params") is not None]
    if swapped and learn.opt is not None:
        learn.opt.opt = learn.opt.new(learn.layer_groups).opt
    return learn
