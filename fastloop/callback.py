"""Callbacks and the `CallbackHandler` that runs them, as in fastai v1's ``fastai.callback``.

How a callback gets its arguments (the question the forums ask most): the training loop only hands the
handler what is new -- ``cb_handler.on_batch_end(loss)`` -- and the handler writes that into its
``state_dict``.  Then every callback's ``on_batch_end(**state_dict)`` is called, so a callback declares
the keys it wants (``def on_batch_end(self, last_input, last_output, **kwargs)``) and lets ``**kwargs``
swallow the rest.  If it returns a dict, each key must already be in the state and is written back
before the next callback runs.  See README.md for the table of keys.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from . import _dispatch
from ._dispatch import EVENTS, STATE_KEY_TABLE, CallbackSignatureError, StateKey
from ._sync_free import LazyLoss, resolve
from .core import camel2snake, defaults, is_listy, is_tuple, listify
from .torch_core import add_metrics, first_el, rank_distrib, split_no_wd_params, trainable_params

__all__ = [
    "Callback", "CallbackHandler", "CallbackSignatureError", "SmoothenValue", "OptimWrapper", "Scheduler",
    "AverageMetric", "annealing_no", "annealing_linear", "annealing_exp", "annealing_cos", "do_annealing_poly",
    "annealing_poly", "add_metrics", "EVENTS", "STATE_KEY_TABLE", "StateKey",
]


# ---------------------------------------------------------------------------------------------- Callback
class Callback:
    """Base class of fastai v1 callbacks: ten no-op events, an `_order`, `jump_to_epoch` and `get_state`.

    Each ``on_<event>`` receives the handler's whole state as keyword arguments (plus ``metrics_names`` at
    ``on_train_begin`` and ``exception`` at ``on_train_end``) and may return a dict of state updates.
    Callbacks run sorted by ``_order`` (stable: equal orders keep the order they were given in).
    """

    _order = 0

    def on_train_begin(self, **kwargs: Any) -> None:
        "To initialize constants in the callback."

    def on_epoch_begin(self, **kwargs: Any) -> None:
        "At the beginning of each epoch."

    def on_batch_begin(self, **kwargs: Any) -> None:
        "Set HP before the output and loss are computed."

    def on_loss_begin(self, **kwargs: Any) -> None:
        "Called after forward pass but before loss has been computed."

    def on_backward_begin(self, **kwargs: Any) -> None:
        "Called after the forward pass and the loss has been computed, but before backprop."

    def on_backward_end(self, **kwargs: Any) -> None:
        "Called after backprop but before optimizer step. Useful for true weight decay in AdamW."

    def on_step_end(self, **kwargs: Any) -> None:
        "Called after the step of the optimizer but before the gradients are zeroed."

    def on_batch_end(self, **kwargs: Any) -> None:
        "Called at the end of the batch."

    def on_epoch_end(self, **kwargs: Any) -> None:
        "Called at the end of an epoch."

    def on_train_end(self, **kwargs: Any) -> None:
        "Useful for cleaning up things and saving files/models."

    def jump_to_epoch(self, epoch: int) -> None:
        "To resume training at `epoch` (called after `on_train_begin` returned a non-zero `epoch`)."

    def get_state(self, minimal: bool = True) -> dict:
        """A copy of the instance's attributes, without those named in ``exclude`` (and ``not_min`` if `minimal`)."""
        to_remove = ["exclude", "not_min"] + list(getattr(self, "exclude", []))
        if minimal:
            to_remove += list(getattr(self, "not_min", []))
        return {k: v for k, v in self.__dict__.items() if k not in to_remove}

    def __repr__(self) -> str:
        try:
            params = list(inspect.signature(type(self).__init__).parameters)[1:]
        except (TypeError, ValueError):
            params = []
        exclude = list(getattr(self, "exclude", []))
        lines = [type(self).__name__]
        for name in params:
            if name in exclude or name in ("args", "kwargs"):
                continue
            lines.append(f"{name}: {getattr(self, name, None)}")
        return "\n".join(lines)


#: Base no-ops per event: a callback whose method is one of these is not called for that event.
_NOOPS = {e: getattr(Callback, "on_" + e) for e in EVENTS}


# -------------------------------------------------------------------------------------------- smoothing
class SmoothenValue:
    """Debiased exponential moving average; the handler feeds it the raw loss to make ``smooth_loss``.

    ``mov_avg = beta * mov_avg + (1 - beta) * v`` and ``smooth = mov_avg / (1 - beta ** n)``, so the first
    smooth value equals the first loss.
    """

    def __init__(self, beta: float):
        self.beta, self.n, self.mov_avg = beta, 0, 0

    def add_value(self, val: Any) -> None:
        "Add `val` to calculate updated smoothed value."
        self.n += 1
        self.mov_avg = self.beta * self.mov_avg + (1 - self.beta) * val
        self.smooth = self.mov_avg / (1 - self.beta**self.n)


class _LossSmoother(SmoothenValue):
    """The handler's `SmoothenValue` for ``smooth_loss``: the same float32 arithmetic, done on numpy scalars.

    fastai v1 smooths ``loss.float().detach().cpu()`` with 0-dim tensor ops; float32 numpy scalars give the
    same bits (tested) for about half the cost per batch.  ``smooth`` is a 0-dim CPU float32 tensor, as in v1.

    Two ways in: `add_value` reads the loss now (v1: a device-to-host copy per batch); `add_lazy` only keeps
    the loss (on its device) and returns a `LazyLoss`.  Kept losses are read all at once -- one copy -- by
    `flush`, which any read of a `LazyLoss`, ``smooth``, ``mov_avg`` or ``n`` triggers; the numbers are the
    same either way.  Every 256 kept losses are stacked on the device (no sync) so a long epoch holds few
    tensors.
    """

    _CHUNK = 256

    def __init__(self, beta: float):
        self.beta = beta
        self._n, self._mov_avg, self._smooth = 0, np.float32(0.0), None
        self._beta32, self._one_minus_beta32 = np.float32(beta), np.float32(1 - beta)
        self._kept: list[torch.Tensor] = []  # raw losses not read yet (0-dim, float32, on their device)
        self._chunks: list[torch.Tensor] = []  # ... and older ones, stacked
        self._handles: list[LazyLoss] = []  # one per kept loss, in order

    def add_value(self, val: Any) -> None:
        "Add a loss (a tensor of any float dtype, or a number) and read it now."
        if self._handles:
            self.flush()
        self._n += 1
        v = np.float32(val.detach().float().item() if isinstance(val, torch.Tensor) else val)
        self._mov_avg = self._beta32 * self._mov_avg + self._one_minus_beta32 * v
        smooth = self._mov_avg / np.float32(1 - self.beta**self._n)
        self._smooth = torch.scalar_tensor(float(smooth), dtype=torch.float32)  # exact: a float32 value

    def add_lazy(self, val: torch.Tensor) -> LazyLoss:
        "Keep a 0-dim loss tensor without reading it; its smoothed value is a `LazyLoss` (read on first use)."
        raw = val.detach()
        if raw.dtype != torch.float32:
            raw = raw.float()  # v1 smooths loss.float(): a cast on the device, no read
        self._kept.append(raw)
        handle = LazyLoss(self)
        self._handles.append(handle)
        if len(self._kept) >= self._CHUNK:
            self._chunks.append(torch.stack(self._kept))
            self._kept = []
        return handle

    def flush(self) -> None:
        "Read every kept loss (one device-to-host copy) and smooth them in order, giving each handle its value."
        handles = self._handles
        if not handles:
            return
        parts = self._chunks + ([torch.stack(self._kept)] if self._kept else [])
        self._kept, self._chunks, self._handles = [], [], []
        values = (torch.cat(parts) if len(parts) > 1 else parts[0]).cpu().numpy()  # the one sync
        n, mov_avg, beta, b32, omb32 = self._n, self._mov_avg, self.beta, self._beta32, self._one_minus_beta32
        smooth = self._smooth
        for handle, v in zip(handles, values):  # v: np.float32, as add_value's
            n += 1
            mov_avg = b32 * mov_avg + omb32 * v
            smooth = torch.scalar_tensor(float(mov_avg / np.float32(1 - beta**n)), dtype=torch.float32)
            handle._set(smooth)
        self._n, self._mov_avg, self._smooth = n, mov_avg, smooth

    # v1's attributes, read after the kept losses are smoothed
    @property
    def smooth(self) -> Any:
        "The last smoothed value (0-dim CPU float32 tensor)."
        self.flush()
        return self._smooth

    @smooth.setter
    def smooth(self, v: Any) -> None:
        self.flush()
        self._smooth = v

    @property
    def mov_avg(self) -> Any:
        "The running (biased) average, a float32 numpy scalar."
        self.flush()
        return self._mov_avg

    @mov_avg.setter
    def mov_avg(self, v: Any) -> None:
        self.flush()
        self._mov_avg = np.float32(v)

    @property
    def n(self) -> int:
        "How many losses were added (kept ones included)."
        return self._n + len(self._handles)

    @n.setter
    def n(self, v: int) -> None:
        self.flush()
        self._n = v


# -------------------------------------------------------------------------------------------- the handler
class _CallbackList(list):
    """The handler's callback list: a change to it re-plans the handler's per-event call lists."""

    def __init__(self, items: Iterable[Any], on_change: Callable[[], None]):
        super().__init__(items)
        self._on_change = on_change

    def append(self, cb: Any) -> None:
        super().append(cb)
        self._on_change()

    def extend(self, cbs: Iterable[Any]) -> None:
        super().extend(cbs)
        self._on_change()

    def insert(self, i: Any, cb: Any) -> None:
        super().insert(i, cb)
        self._on_change()

    def remove(self, cb: Any) -> None:
        super().remove(cb)
        self._on_change()

    def pop(self, i: Any = -1) -> Any:
        cb = super().pop(i)
        self._on_change()
        return cb

    def clear(self) -> None:
        super().clear()
        self._on_change()

    def __setitem__(self, i: Any, cb: Any) -> None:
        super().__setitem__(i, cb)
        self._on_change()

    def __delitem__(self, i: Any) -> None:
        super().__delitem__(i)
        self._on_change()

    def __iadd__(self, cbs: Iterable[Any]) -> _CallbackList:
        super().__iadd__(cbs)
        self._on_change()
        return self

    def __imul__(self, n: Any) -> _CallbackList:
        super().__imul__(n)
        self._on_change()
        return self

    def sort(self, *args: Any, **kwargs: Any) -> None:
        super().sort(*args, **kwargs)
        self._on_change()

    def reverse(self) -> None:
        super().reverse()
        self._on_change()


def _runs_on_this_rank(cb: Any) -> bool:
    """Whether `cb` takes part in this process: ``ranks = 'all'`` (the default) or ``'zero'`` (rank 0 only)."""
    ranks = getattr(cb, "ranks", "all")
    if ranks not in ("all", "zero"):
        raise ValueError(f"{type(cb).__name__}.ranks is {ranks!r}: a callback runs on 'all' ranks or on rank 'zero'.")
    return ranks == "all" or rank_distrib() == 0


def _is_sync_free(obj: Any) -> bool:
    """Whether `obj`'s own class declares ``_sync_free = True`` (it reads ``last_loss``/``smooth_loss`` as device
    values or a `LazyLoss`, or not at all).  Not inherited: a subclass's new hooks may read them, so it must
    declare it again."""
    return type(obj).__dict__.get("_sync_free", False) is True


class CallbackHandler:
    """Runs callbacks and metrics at every event and keeps the ``state_dict`` they all read.

    Built anew for every ``fit``, ``validate``, ``get_preds`` and ``pred_batch``.  Metrics that are plain
    functions are wrapped in `AverageMetric`; metrics always run first, in the order given, and only at the
    events listed in the spec (§3.3).  Callbacks are sorted by ``_order`` once, stably.

    fastloop additions (behaviour seen by callbacks is unchanged):

    * per event, only callbacks that override that event are called (base-class no-ops are skipped);
    * a misspelled hook (``on_epoch_start``) warns at construction -- an error with ``strict=True`` or
      ``defaults.strict_callbacks = True`` -- and an impossible hook signature raises
      `CallbackSignatureError`;
    * an exception raised by a callback carries a note naming the callback and the event;
    * *probes* (objects with ``probe_begin``/``probe_wrap``/``probe_end``, see `fastloop._dispatch`) among
      the callbacks watch every event and wrap every call -- the tracer and the timer are built on them;
      with no probe, firing an event is the plain loop.
    """

    def __init__(self, callbacks: Any = None, metrics: Any = None, beta: float = 0.98, strict: bool | None = None,
                 sync_free: bool | str = False):
        self.beta = beta
        self.strict = defaults.strict_callbacks if strict is None else strict
        # sync_free (fastloop/_sync_free.py): False reads every training loss at once (v1); "auto" keeps them on
        # the device and reads them before a callback that is not `_sync_free` is called (what Learner.fit
        # uses); True never reads them for callbacks (smooth_loss is a LazyLoss, last_loss a device tensor)
        if sync_free not in (False, True, "auto"):
            raise ValueError(f"sync_free must be False, True or 'auto', not {sync_free!r}")
        self.sync_free = sync_free
        self._pending: dict[str, Any] = {}  # state keys holding values not read yet -> those values
        # plain metric functions become AverageMetric callbacks; metric Callbacks are used as they are
        self.metrics = [m if isinstance(m, Callback) else AverageMetric(m) for m in listify(metrics)]
        # a stable sort: equal `_order`s keep the order of learn.callbacks, callback_fns, per-call callbacks
        self._callbacks = _CallbackList(sorted(callbacks or [], key=lambda o: getattr(o, "_order", 0)), self._rebuild)
        self._rebuild()
        self.smoothener: SmoothenValue = _LossSmoother(beta)
        self.state_dict: dict[str, Any] = self._initial_state()
        # checkpoints (fastloop._checkpoint.FitRun): called after each training batch and each epoch is complete
        self._safe_point: Callable[[str], None] | None = None
        # the sum-reduction of a validation loader sharded across ranks (fastloop.distributed); set by set_dl
        self._shard_reducer: Callable[[torch.Tensor], torch.Tensor] | None = None

    @staticmethod
    def _initial_state() -> dict[str, Any]:
        # Only these four keys exist before on_train_begin; the others appear lazily (spec §4.1).
        return {"epoch": 0, "iteration": 0, "num_batch": 0, "skip_validate": False}

    @property
    def callbacks(self) -> list:
        "The sorted callbacks (changing this list re-plans the dispatch)."
        return self._callbacks

    @callbacks.setter
    def callbacks(self, cbs: Iterable[Any]) -> None:
        self._callbacks = _CallbackList(cbs, self._rebuild)
        self._rebuild()

    def _rebuild(self) -> None:
        """Check every callback's hooks and precompute, per event, who is called (metrics first)."""
        for obj in self.metrics + list(self._callbacks):
            _dispatch.check_hooks(obj, strict=self.strict)
        # a callback declaring ranks = 'zero' (loggers, file writers) is left out on distributed ranks other than 0
        here = [cb for cb in self._callbacks if _runs_on_this_rank(cb)]
        mets = _dispatch.build_call_lists(self.metrics, EVENTS, _NOOPS)
        cbs = _dispatch.build_call_lists(here, EVENTS, _NOOPS)
        self._cb_calls = cbs
        self._all_calls = {e: mets[e] + cbs[e] for e in EVENTS}
        # probes (the tracer, the timer: see _dispatch.fire_probed) are found once here; none -> plain loop
        self._probes = [obj for obj in self.metrics + here if _dispatch.is_probe(obj)]
        # sync-free "auto": the events before which pending losses must be read for a callback (or probe) that
        # does not declare `_sync_free = True` -- (callbacks only, metrics too)
        if not all(_is_sync_free(p) for p in self._probes):
            self._read_before = (frozenset(EVENTS), frozenset(EVENTS))
        else:
            self._read_before = tuple(frozenset(e for e in EVENTS if not all(_is_sync_free(cb) for cb, _ in t[e]))
                                      for t in (cbs, self._all_calls))
        # distributed training (fastloop.distributed.DistributedTrainer): the callback that reduces the loop's
        # stop/skip flags across ranks, so that every rank takes the same branch
        self._flag_reducer = next((f for f in (getattr(cb, "reduce_flag", None) for cb in here) if callable(f)), None)

    def implementers(self, event: str, call_mets: bool = True) -> list:
        "The metrics (if `call_mets`) and callbacks that `event` calls, in call order: those that override it."
        calls = self._all_calls[event] if call_mets else self._cb_calls[event]
        return [cb for cb, _ in calls]

    # -- dispatch
    def _call_and_update(self, cb: Any, cb_name: str, **kwargs: Any) -> None:
        "Call `cb.on_<cb_name>` with the state and `kwargs`, then apply the returned dict (fastai v1's name)."
        meth = getattr(cb, f"on_{cb_name}")
        if self._pending:  # sync-free: a direct call sees the CPU values, as in v1
            self._read_pending()
        _dispatch.fire([(cb, meth)], cb_name, self.state_dict, kwargs)

    def __call__(self, cb_name: str, call_mets: bool = True, **kwargs: Any) -> None:
        "Fire event `cb_name` on the metrics (if `call_mets`) then on the callbacks, with extras `kwargs`."
        self._run(cb_name, call_mets, kwargs)

    def _run(self, event: str, call_mets: bool, extras: dict[str, Any] | None = None) -> None:
        "Fire `event`: nothing is called when nobody implements it (the handler methods come straight here)."
        table = self._all_calls if call_mets else self._cb_calls
        calls = table.get(event)
        if calls is None:  # an event of the user's own (handler('my_event')): every object is called, as in v1
            objs = (self.metrics if call_mets else []) + list(self._callbacks)
            calls = _dispatch.build_call_lists(objs, [event], {})[event]
            if self._pending:
                self._read_pending()
        elif self._pending and event in self._read_before[call_mets]:
            self._read_pending()  # sync-free "auto": a callback here may read last_loss/smooth_loss as v1 gives them
        if self._probes:  # tracing or timing is on: the probes see every event, even one nobody implements
            _dispatch.fire_probed(calls, event, self.state_dict, extras, self._probes)
        elif calls:
            _dispatch.fire(calls, event, self.state_dict, extras)

    def _read_pending(self) -> None:
        "Sync-free: put the CPU values of the pending keys in the state (those no callback replaced meanwhile)."
        state = self.state_dict
        for key, value in self._pending.items():
            if state.get(key) is value:
                state[key] = resolve(value)
        self._pending = {}

    @property
    def defers_losses(self) -> bool:
        "Whether training losses stay on their device until read (``sync_free`` is True or 'auto')."
        return self.sync_free is not False

    def set_dl(self, dl: Any) -> None:
        "A dataset that is itself a Callback takes part in the epoch (appended, unsorted)."
        # a validation loader sharded across ranks (fastloop.distributed) carries the reduction its metrics need
        self._shard_reducer = getattr(dl, "shard_reducer", None)
        if hasattr(self, "cb_dl"):
            self.callbacks.remove(self.cb_dl)
        if isinstance(getattr(dl, "dataset", None), Callback):
            self.callbacks.append(dl.dataset)
            self.cb_dl = dl.dataset

    # -- the handler's events, in the order fit calls them (see basic_train.fit)
    def on_train_begin(self, epochs: int, pbar: Any, metrics: Any) -> None:
        "Reset the state, fire train_begin (metrics too, with `metrics_names`), then jump if resuming."
        self.state_dict = self._initial_state()
        self._pending = {}
        self.state_dict.update(n_epochs=epochs, pbar=pbar, metrics=metrics)
        names = [(m.name if hasattr(m, "name") else camel2snake(m.__class__.__name__)) for m in self.metrics]
        self("train_begin", metrics_names=names)
        epoch = self.state_dict["epoch"]
        if epoch != 0:  # a callback returned {'epoch': k}: run only the remaining epochs
            if pbar is not None:
                pbar.main_bar.total -= epoch
            for cb in self.callbacks:
                cb.jump_to_epoch(epoch)

    def on_epoch_begin(self) -> None:
        "Reset `num_batch` and `stop_training` (which first appears here), then fire epoch_begin."
        self.state_dict["num_batch"], self.state_dict["stop_training"] = 0, False
        self._run("epoch_begin", True)

    def on_batch_begin(self, xb: Any, yb: Any, train: bool = True) -> tuple[Any, Any]:
        "Put the batch in the state, reset the per-batch flags, fire batch_begin; return the (new) batch."
        state = self.state_dict
        state["last_input"], state["last_target"], state["train"] = xb, yb, train  # last_input enters the state
        state["stop_epoch"] = state["skip_step"] = state["skip_zero"] = state["skip_bwd"] = False
        self._run("batch_begin", not train)
        return state["last_input"], state["last_target"]

    def on_loss_begin(self, out: Any) -> Any:
        "Put the model output in the state, fire loss_begin; return the (new) output."
        self.state_dict["last_output"] = out
        self._run("loss_begin", False)
        return self.state_dict["last_output"]

    def on_backward_begin(self, loss: torch.Tensor) -> tuple[Any, bool]:
        "Smooth the raw loss into `smooth_loss`, fire backward_begin; return (loss to backprop, skip_bwd)."
        # smooth_loss is computed here, from the loss *before* any callback replaces it
        add_lazy = getattr(self.smoothener, "add_lazy", None) if self.sync_free is not False else None
        if add_lazy is not None and isinstance(loss, torch.Tensor) and loss.dim() == 0:
            # sync-free: the loss is kept on its device, smooth_loss is a LazyLoss read on first use; the
            # graph loss in last_loss is what v1 has there too, so only smooth_loss is pending
            smooth = add_lazy(loss)
            self._pending = {"smooth_loss": smooth} if self.sync_free == "auto" else {}
        else:
            self.smoothener.add_value(loss)
            smooth = self.smoothener.smooth
        self.state_dict["last_loss"], self.state_dict["smooth_loss"] = loss, smooth
        self._run("backward_begin", False)
        return self.state_dict["last_loss"], self.state_dict["skip_bwd"]

    def on_backward_end(self) -> bool:
        "Fire backward_end; return `skip_step`."
        self._run("backward_end", False)
        return self.state_dict["skip_step"]

    def on_step_end(self) -> bool:
        "Fire step_end; return `skip_zero`."
        self._run("step_end", False)
        return self.state_dict["skip_zero"]

    def on_batch_end(self, loss: Any) -> bool:
        "Put the batch's (detached) loss in the state, fire batch_end, then move the counters; return `stop_epoch`."
        state = self.state_dict
        state["last_loss"] = loss
        if self.sync_free == "auto" and not getattr(loss, "is_cpu", True):  # sync-free: read when a callback needs it
            self._pending["last_loss"] = loss
        self._run("batch_end", not state["train"])
        if state["train"]:  # counters move after the callbacks, and only for training batches
            state["iteration"] += 1
            state["num_batch"] += 1
            if self._flag_reducer is not None:  # distributed: one rank stopping the epoch stops it on all
                state["stop_epoch"] = self._flag_reducer(state["stop_epoch"])
            if self._safe_point is not None:  # the batch is complete: requested checkpoints are written here
                self._safe_point("batch")
        return state["stop_epoch"]

    def on_epoch_end(self, val_loss: Any) -> bool:
        "`last_metrics = [val_loss]`, fire epoch_end (metrics if validation ran), `epoch += 1`; return `stop_training`."
        self.state_dict["last_metrics"] = [val_loss] if val_loss is not None else [None]
        if val_loss is not None and self._shard_reducer is not None:
            # distributed validation ran on this rank's shard only: metrics sum their counts over all ranks
            for m in self.metrics:
                if callable(getattr(m, "sync_shards", None)):
                    m.sync_shards(self._shard_reducer)
                else:
                    warnings.warn(f"Metric {type(m).__name__} has no sync_shards(reduce) method: under distributed "
                                  f"validation its value is computed on this rank's shard only.", stacklevel=2)
        self._run("epoch_end", val_loss is not None)
        self.state_dict["epoch"] += 1
        if self._flag_reducer is not None:  # distributed: one rank stopping the training stops it on all
            self.state_dict["stop_training"] = self._flag_reducer(self.state_dict["stop_training"])
        if self._safe_point is not None:  # the epoch is complete: requested checkpoints are written here
            self._safe_point("epoch")
        return self.state_dict["stop_training"]

    def on_train_end(self, exception: BaseException | bool) -> None:
        "Fire train_end with `exception` (the Exception raised during fit, or False)."
        self("train_end", exception=exception)

    @property
    def skip_validate(self) -> bool:
        "The state's `skip_validate` flag (read by fit after each epoch's training loop)."
        if self._flag_reducer is not None:  # distributed: validation is skipped on all ranks or on none
            self.state_dict["skip_validate"] = self._flag_reducer(self.state_dict["skip_validate"])
        return self.state_dict["skip_validate"]


# -------------------------------------------------------------------------------------------- metrics
class AverageMetric(Callback):
    """Wraps a metric function ``f(output, *targets)`` into a callback averaging it over validation batches.

    Events: ``on_epoch_begin`` (reset), ``on_batch_end`` (reads ``last_output``, ``last_target``; validation
    only, since metrics get batch events only when ``train`` is False), ``on_epoch_end`` (reads
    ``last_metrics``, returns it with the batch-size-weighted mean appended).  ``_order`` stays 0: metrics
    are never sorted, they run in the order given, before every callback.
    """

    def __init__(self, func: Callable[..., torch.Tensor]):
        # a partial given its own __name__ uses it; an unnamed partial uses the wrapped function's name
        self.func = func
        self.name = getattr(func, "__name__", None) or func.func.__name__

    def on_epoch_begin(self, **kwargs: Any) -> None:
        "Set the inner values to 0."
        self.val, self.count = 0.0, 0

    def on_batch_end(self, last_output: Any, last_target: Any, **kwargs: Any) -> None:
        "Update metric computation with `last_output` and `last_target`."
        if not is_listy(last_target):
            last_target = [last_target]
        bs = first_el(last_target).size(0)
        self.count += bs
        val = self.func(last_output, *last_target)
        # fastai v1 all-reduced each batch's value here and divided by the world size: an average of averages
        # that counts a padded sampler's duplicates, and a collective per batch that hangs when the shards have
        # different numbers of batches.  fastloop sums locally and reduces (sum, count) once: `sync_shards`.
        self.val += bs * val.detach().cpu()

    def sync_shards(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Distributed validation: replace the local (sum, count) by their sums over all ranks.

        Called by the handler at epoch end, before ``on_epoch_end``, when the validation loader was sharded
        by `fastloop.distributed.DistributedTrainer`; `reduce` sum-reduces a float64 tensor across ranks.
        """
        local = torch.as_tensor(self.val, dtype=torch.float64).reshape(-1)
        total = reduce(torch.cat([local, torch.tensor([float(self.count)], dtype=torch.float64)]))
        dtype = self.val.dtype if isinstance(self.val, torch.Tensor) else torch.float32
        shape = self.val.shape if isinstance(self.val, torch.Tensor) else ()
        self.val, self.count = total[:-1].reshape(shape).to(dtype), int(total[-1].item())

    def on_epoch_end(self, last_metrics: Any, **kwargs: Any) -> dict:
        "Set the final result in `last_metrics`."
        return add_metrics(last_metrics, self.val / self.count)


# ------------------------------------------------------------------------------------ annealing/scheduler
def annealing_no(start: Any, end: Any, pct: float) -> Any:
    "No annealing, always return `start`."
    return start


def annealing_linear(start: Any, end: Any, pct: float) -> Any:
    "Linearly anneal from `start` to `end` as pct goes from 0.0 to 1.0."
    return start + pct * (end - start)


def annealing_exp(start: Any, end: Any, pct: float) -> Any:
    "Exponentially anneal from `start` to `end` as pct goes from 0.0 to 1.0."
    return start * (end / start) ** pct


def annealing_cos(start: Any, end: Any, pct: float) -> Any:
    "Cosine anneal from `start` to `end` as pct goes from 0.0 to 1.0 (exactly `end` at 1.0)."
    cos_out = np.cos(np.pi * pct) + 1
    return end + (start - end) / 2 * cos_out


def do_annealing_poly(start: Any, end: Any, pct: float, degree: float) -> Any:
    "Helper function for `annealing_poly`."
    return end + (start - end) * (1 - pct) ** degree


def annealing_poly(degree: float) -> Callable[[Any, Any, float], Any]:
    "Anneal polynomially from `start` to `end` as pct goes from 0.0 to 1.0."
    return functools.partial(do_annealing_poly, degree=degree)


class Scheduler:
    """Steps a hyper-parameter from ``start`` to ``end`` over `n_iter` iterations with `func`.

    Only a *tuple* is a ``(start, end)`` range (default: linear); anything else is a constant (default:
    `annealing_no`).  ``step()`` moves first, so it never returns ``start``: callers set it themselves.
    """

    def __init__(self, vals: Any, n_iter: int, func: Callable | None = None):
        self.start, self.end = (vals[0], vals[1]) if is_tuple(vals) else (vals, 0)
        self.n_iter = max(1, n_iter)
        if func is None:
            self.func = annealing_linear if is_tuple(vals) else annealing_no
        else:
            self.func = func
        self.n = 0

    def restart(self) -> None:
        "Start the schedule over."
        self.n = 0

    def step(self) -> Any:
        "Return next value along annealed schedule."
        self.n += 1
        return self.func(self.start, self.end, self.n / self.n_iter)

    @property
    def is_done(self) -> bool:
        "Return `True` if schedule completed."
        return self.n >= self.n_iter


# -------------------------------------------------------------------------------------------- OptimWrapper
class OptimWrapper:
    """A torch optimizer with fastai v1's hyper-parameter API: per layer group `lr`, `mom`, `beta`, `wd`.

    Every layer group owns two torch param groups (weights, then the "no weight decay" ones: biases and
    norm layers).  The getters return the *last* layer group's value; the setters take a scalar (broadcast)
    or one value per layer group, and write both param groups.  With ``true_wd`` the weight decay is applied
    by hand before the step (``p *= 1 - lr*wd``), to the no-wd group too when ``bn_wd``.

    ``zero_grad()`` keeps torch's default and sets grads to None, which is what fastai 1.0.61 does on
    today's torch: numbers match it bit for bit (a batch whose backward is skipped leaves Adam's state
    alone).  ``zero_grad(set_to_none=False)`` zeroes them in place, as torch 1.x did.  Unknown attributes
    are looked up on the torch optimizer, and read as None if it lacks them too (v1 behaviour).
    """

    def __init__(self, opt: torch.optim.Optimizer, wd: Any = 0.0, true_wd: bool = False, bn_wd: bool = True):
        assert not isinstance(opt, OptimWrapper), "OptimWrapper cannot wrap another OptimWrapper"
        self.opt, self.true_wd, self.bn_wd = opt, true_wd, bn_wd
        self.opt_keys = [k for k in self.opt.param_groups[0] if k != "params"]
        self.read_defaults()
        self.wd = wd

    @classmethod
    def create(cls, opt_func: Callable, lr: Any, layer_groups: Sequence[nn.Module], wd: Any = 0.0,
               true_wd: bool = False, bn_wd: bool = True, split_no_wd: bool = True) -> OptimWrapper:
        "Create an `optim.Optimizer` from `opt_func` with `lr`, two param groups per layer group."
        if split_no_wd:
            split_params = split_no_wd_params(layer_groups)
        else:
            split_params = [p for lg in layer_groups for p in (trainable_params(lg), [])]
        opt = opt_func([{"params": p, "lr": 0} for p in split_params])
        opt = cls(opt, wd=wd, true_wd=true_wd, bn_wd=bn_wd)
        opt.lr, opt.opt_func = listify(lr, layer_groups), opt_func
        return opt

    def new(self, layer_groups: Sequence[nn.Module], split_no_wd: bool = True) -> OptimWrapper:
        "A wrapper of the same kind over `layer_groups`, with the same hyper-parameters."
        opt_func = getattr(self, "opt_func", self.opt.__class__)
        res = self.create(opt_func, self.lr, layer_groups, wd=self.wd, true_wd=self.true_wd, bn_wd=self.bn_wd,
                          split_no_wd=split_no_wd)
        res.mom, res.beta = self.mom, self.beta
        return res

    def new_with_params(self, param_groups: Sequence[Sequence[torch.Tensor]]) -> OptimWrapper:
        "A wrapper of the same kind over explicit `param_groups` (two per layer group)."
        opt_func = getattr(self, "opt_func", self.opt.__class__)
        opt = opt_func([{"params": p, "lr": 0} for p in param_groups])
        opt = self.__class__(opt, wd=self.wd, true_wd=self.true_wd, bn_wd=self.bn_wd)
        opt.lr, opt.opt_func, opt.mom, opt.beta = self.lr, opt_func, self.mom, self.beta
        return opt

    def __repr__(self) -> str:
        return f"OptimWrapper over {self.opt!r}.\nTrue weight decay: {self.true_wd}"

    # -- the optimizer's own methods
    def step(self) -> None:
        "Apply true weight decay (if on): ``p *= 1 - lr*wd`` for each layer group; then the inner optimizer's step."
        if self.true_wd:
            groups = self.opt.param_groups
            for lr, wd, pg_wd, pg_no_wd in zip(self._lr, self._wd, groups[::2], groups[1::2]):
                factor = 1 - wd * lr
                params = pg_wd["params"] + pg_no_wd["params"] if self.bn_wd else pg_wd["params"]
                # frozen parameters are left alone: v1 also shrank the frozen biases it keeps in the no-wd group
                params = [p for p in params if p.requires_grad]
                if params and factor != 1:  # one fused multiply: the same arithmetic as p.mul_(factor) per param
                    with torch.no_grad():
                        torch._foreach_mul_(params, factor)
                pg_wd["weight_decay"] = pg_no_wd["weight_decay"] = 0  # the decay is done: torch must not add its own
        self.opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        "Clear the gradients: None by default (torch 2, as v1 on today's torch); zeros with ``set_to_none=False``."
        self.opt.zero_grad(set_to_none=set_to_none)

    def __getattr__(self, k: str) -> Any:
        # only reached for attributes the wrapper lacks: look on the torch optimizer, None if absent (v1)
        if k == "opt" or (k.startswith("__") and k.endswith("__")):
            raise AttributeError(k)
        return getattr(self.opt, k, None)

    def __setstate__(self, data: Any) -> None:
        self.__dict__.update(data)

    def state_dict(self) -> dict:
        "The inner optimizer's state dict."
        return self.opt.state_dict()

    def load_state_dict(self, sd: dict) -> None:
        "Load the inner optimizer's state dict (the wrapper's own lr/mom/... lists are not changed, as in v1)."
        self.opt.load_state_dict(sd)

    def clear(self) -> None:
        "Reset the state of the inner optimizer."
        sd = self.state_dict()
        sd["state"] = {}
        self.load_state_dict(sd)

    @property
    def n_params(self) -> int:
        "Number of parameters handled by the optimizer."
        return sum(len(pg["params"]) for pg in self.opt.param_groups)

    # -- hyper-parameters
    @property
    def lr(self) -> Any:
        "Learning rate of the last layer group."
        return self._lr[-1]

    @lr.setter
    def lr(self, val: Any) -> None:
        self._lr = self.set_val("lr", listify(val, self._lr))

    @property
    def mom(self) -> Any:
        "Momentum (or Adam's beta1) of the last layer group."
        return self._mom[-1]

    @mom.setter
    def mom(self, val: Any) -> None:
        if "momentum" in self.opt_keys:
            self.set_val("momentum", listify(val, self._mom))
        elif "betas" in self.opt_keys:
            self.set_val("betas", (listify(val, self._mom), self._beta))
        self._mom = listify(val, self._mom)

    @property
    def beta(self) -> Any:
        "Adam's beta2 (or RMSprop's alpha) of the last layer group; None if the optimizer has none."
        return None if self._beta is None else self._beta[-1]

    @beta.setter
    def beta(self, val: Any) -> None:
        if val is None:
            return
        if "betas" in self.opt_keys:
            self.set_val("betas", (self._mom, listify(val, self._beta)))
        elif "alpha" in self.opt_keys:
            self.set_val("alpha", listify(val, self._beta))
        self._beta = listify(val, self._beta)

    @property
    def wd(self) -> Any:
        "Weight decay of the last layer group."
        return self._wd[-1]

    @wd.setter
    def wd(self, val: Any) -> None:
        if not self.true_wd:
            self.set_val("weight_decay", listify(val, self._wd), bn_groups=self.bn_wd)
        self._wd = listify(val, self._wd)

    def read_defaults(self) -> None:
        "Read the wrapper's lists from the torch param groups (even-indexed ones: one per layer group)."
        self._mom, self._beta = None, None
        self._lr = self.read_val("lr")
        if "momentum" in self.opt_keys:
            self._mom = self.read_val("momentum")
        if "alpha" in self.opt_keys:
            self._beta = self.read_val("alpha")
        if "betas" in self.opt_keys:
            self._mom, self._beta = self.read_val("betas")
        n_groups = len(self.opt.param_groups[::2])
        self._wd = self.read_val("weight_decay") if "weight_decay" in self.opt_keys else [0.0] * n_groups
        reserved = ["params", "lr", "momentum", "alpha", "betas", "weight_decay"]
        self._stats = {n: self.read_val(n) for n in self.opt_keys if n not in reserved}

    def get_stat(self, name: str) -> Any:
        "Read hyper-parameter `name` (lr/mom/beta/wd through the properties, others from the param groups)."
        if name in ["lr", "mom", "beta", "wd"]:
            return getattr(self, name)
        return self._stats[name][-1]

    def set_stat(self, name: str, value: Any) -> None:
        "Set hyper-parameter `name` to `value` (scalar broadcast, or one per layer group)."
        if name in ["lr", "mom", "beta", "wd"]:
            setattr(self, name, value)
        else:
            value = listify(value, self._stats[name])
            self.set_val(name, value)
            self._stats[name] = value

    def set_val(self, key: str, val: Any, bn_groups: bool = True) -> Any:
        "Write `val` (one per layer group; a pair of lists for tuples) into both param groups of each layer group."
        if is_tuple(val):
            val = [(v1, v2) for v1, v2 in zip(*val)]
        groups = self.opt.param_groups
        for v, pg1, pg2 in zip(val, groups[::2], groups[1::2]):
            pg1[key] = v
            if bn_groups:
                pg2[key] = v
        return val

    def read_val(self, key: str) -> Any:
        "Read a hyper-parameter from the even-indexed param groups (a pair of lists for tuple values)."
        val = [pg[key] for pg in self.opt.param_groups[::2]]
        if is_tuple(val[0]):
            val = [o[0] for o in val], [o[1] for o in val]
        return val

    def get_state(self) -> dict:
        "The wrapper's state: optimizer state dict and hyper-parameter lists."
        return {"opt_state": self.opt.state_dict(), "lr": self._lr, "wd": self._wd, "beta": self._beta,
                "mom": self._mom, "opt_func": getattr(self, "opt_func", None), "true_wd": self.true_wd,
                "bn_wd": self.bn_wd}

    @classmethod
    def load_with_state_and_layer_group(cls, state: dict, layer_groups: Sequence[nn.Module]) -> OptimWrapper:
        "Rebuild a wrapper from `get_state()` over `layer_groups`."
        res = cls.create(state["opt_func"], state["lr"], layer_groups, wd=state["wd"], true_wd=state["true_wd"],
                         bn_wd=state["bn_wd"])
        res._mom, res._beta = state["mom"], state["beta"]
        res.load_state_dict(state["opt_state"])
        return res

