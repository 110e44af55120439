"""What notebook 09b (learner) exported: the `Learner` that trains by itself (the `Runner` is gone), its
``param_getter`` splitter, `get_learner`, and the `AvgStatsCallback` that writes through ``learn.logger``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..callback import SmoothenValue
from ..core import is_listy
from ._engine import CourseDispatch, ignore_returns
from .adapter import V1CallbackAdapter, as_course_callback, validation_loss
from .callbacks import (
    ALL_CBS,
    CancelBatchException,
    CancelEpochException,
    CancelTrainException,
    TrainEvalCallback,
    listify,
)
from .optim import add_hypers, sgd_opt
from .stage04 import AvgStatsCallback as _AvgStatsCallback04
from .stage06 import conv_layer, get_cnn_model, init_cnn

__all__ = ["Learner", "param_getter", "get_learner", "AvgStatsCallback"]


def param_getter(m: nn.Module) -> Any:
    "The default splitter: all the model's parameters in one group."
    return m.parameters()


class Learner:
    """The 09b Learner: ``Learner(model, data, loss_func, opt_func=sgd_opt, lr=1e-2, splitter=param_getter, cbs=None,
    cb_funcs=None)``; it is its callbacks' runner (``self.run`` is the learner).

    * ``cbs`` (instances) and ``cb_funcs`` (factories called with no argument, once per learner) are added with
      `add_cb`, which registers *every* callback as ``learn.<cb.name>``; `TrainEvalCallback` comes first.
    * ``fit(epochs, cbs=None, reset_opt=False)``: the second positional argument is **callbacks**, added for
      this fit only and removed afterwards (their attribute stays: ``learn.recorder`` survives
      ``learn.fit(1, [Recorder()])``).  The optimizer ``opt_func(splitter(model), lr=lr)`` is built at the first
      fit, or again with ``reset_opt``.
    * ``model``, ``data``, ``loss_func``, ``opt``, ``lr``, ``logger`` (``print``) are plain attributes: callbacks may
      replace them (``self.run.loss_func = ...``).

    Event order (the fixed 09b notebook: ``begin_epoch`` fires **once** per epoch; the exported ``nb_09b`` fired it
    twice -- course callbacks must not count on that)::

        begin_fit
        per epoch:  begin_epoch -> training batches -> (no_grad) begin_validate -> validation batches -> after_epoch
        per batch:  begin_batch -> model -> after_pred -> loss -> after_loss -> [training only:] backward ->
                    after_backward -> step -> after_step -> zero_grad;  after_batch (always, in a finally)
        after_cancel_batch / after_cancel_epoch / after_cancel_train when the matching exception is raised
        after_fit (always, in a finally)

    Returns of events are ignored; steer the loop with the ``Cancel*`` exceptions (see `fastloop.course.stage05b.Runner`
    for where each is caught) or with the fastai v1 flags below.

    fastloop additions (additive: course callbacks do not see a difference):

    * the model is called as ``model(*xb)`` when ``xb`` is a list or tuple, and the loss as
      ``loss_func(pred, *yb)`` when ``yb`` is (fastai v1's rule; the course always passes tensors);
    * fastai v1's flags as attributes, reset where v1 resets them and read where v1 reads them:
      ``skip_bwd``, ``skip_step``, ``skip_zero``, ``stop_epoch`` (reset at each batch), ``stop_training`` (reset at
      each epoch), ``skip_validate`` (reset at each fit).  Set them as ``self.run.skip_step = True``; unlike an
      exception they take effect after every callback has seen the event;
    * v1 counters ``iteration`` and ``num_batch`` (moved after ``after_batch``, training only), ``epochs_done``,
      ``smooth_loss`` (fastai v1's debiased moving average, beta 0.98, of the raw training loss, kept on the
      loss's device), ``last_metrics`` (``[val_loss]`` at ``after_epoch``) and ``exception`` (the exception that
      ended the last fit, or False);
    * fastai v1 callbacks in ``cbs`` run through `fastloop.course.adapter.V1CallbackAdapter`; ``callback_fns`` are v1
      factories called with the learner at *every* fit (fresh instances, as in v1);
    * ``fit(epochs, lr)`` with a number as second argument sets every group's lr for this fit (the v1 habit),
      instead of failing on a number that is not a callback.
    """

    ALL_CBS = ALL_CBS

    def __init__(self, model: nn.Module, data: Any, loss_func: Callable, opt_func: Callable = sgd_opt,
                 lr: float = 1e-2, splitter: Callable = param_getter, cbs: Any = None, cb_funcs: Any = None,
                 callback_fns: Any = None):
        self.model, self.data, self.loss_func, self.opt_func, self.lr, self.splitter = (
            model, data, loss_func, opt_func, lr, splitter)
        self.in_train, self.logger, self.opt = False, print, None
        # fastloop: fastai v1's flags, counters and view (see the class docstring)
        self.skip_validate = self.stop_training = self.stop_epoch = False
        self.skip_bwd = self.skip_step = self.skip_zero = False
        self.iteration = self.num_batch = self.epochs_done = 0
        self.smooth_loss: Any = None
        self.last_metrics: Any = None
        self.exception: Any = False
        self.v1_state: dict[str, Any] | None = None
        self._smoother, self._val_total, self._val_count = SmoothenValue(0.98), 0.0, 0
        self.callback_fns = listify(callback_fns)
        self._dispatch = CourseDispatch()
        self.cbs: list[Any] = []
        self.add_cb(TrainEvalCallback())
        self.add_cbs(cbs)
        self.add_cbs(cbf() for cbf in listify(cb_funcs))

    # -- callbacks
    def add_cbs(self, cbs: Any) -> None:
        for cb in listify(cbs):
            self.add_cb(cb)

    def add_cb(self, cb: Any) -> None:
        "Attach `cb` (a v1 callback is wrapped), register it as ``self.<cb.name>`` and append it."
        cb = as_course_callback(cb)
        cb.set_runner(self)
        registered = cb.wrapped if isinstance(cb, V1CallbackAdapter) else cb
        setattr(self, cb.name, registered)  # a name collision silently overwrites (as in the course)
        self.cbs.append(cb)

    def remove_cbs(self, cbs: Any) -> None:
        "Take `cbs` out of the list (their ``self.<name>`` attribute stays, as in the course)."
        for cb in listify(cbs):
            for i, have in enumerate(self.cbs):
                if have is cb or (isinstance(have, V1CallbackAdapter) and have.wrapped is cb):
                    del self.cbs[i]
                    break
            else:
                self.cbs.remove(cb)  # not there: the course's ValueError

    # -- the loop
    def one_batch(self, i: int, xb: Any, yb: Any) -> None:
        try:
            self.iter = i
            self.xb, self.yb = xb, yb
            self.stop_epoch = self.skip_bwd = self.skip_step = self.skip_zero = False  # v1 resets them here
            self("begin_batch")
            self.pred = self.model(*self.xb) if is_listy(self.xb) else self.model(self.xb)
            self("after_pred")
            self.loss = self.loss_func(self.pred, *self.yb) if is_listy(self.yb) else self.loss_func(self.pred, self.yb)
            if self.in_train:
                self._smoother.add_value(self.loss.detach().float())  # v1's smooth_loss: raw loss, no host sync
                self.smooth_loss = self._smoother.smooth
            else:
                self._val_total = self._val_total + self.loss.detach().float() * _batch_size(self.yb)
                self._val_count += _batch_size(self.yb)
            self("after_loss")
            if not self.in_train:
                return  # validation ends here (after_batch still fires, from the finally)
            if not self.skip_bwd:
                self.loss.backward()
            self("after_backward")
            if not self.skip_step:
                self.opt.step()
            self("after_step")
            if not self.skip_zero:
                self.opt.zero_grad()
        except CancelBatchException:
            self("after_cancel_batch")
        finally:
            self("after_batch")
        if self.in_train:  # v1's counters move after every callback saw the batch end
            self.iteration += 1
            self.num_batch += 1

    def all_batches(self) -> None:
        self.iters = len(self.dl)
        try:
            for i, (xb, yb) in enumerate(self.dl):
                self.one_batch(i, xb, yb)
                if self.stop_epoch:  # v1 flag: read after every after_batch
                    break
        except CancelEpochException:
            self("after_cancel_epoch")

    def do_begin_fit(self, epochs: int) -> None:
        "Set ``epochs`` and ``loss = tensor(0.)`` (and reset fastloop's v1 view), then fire ``begin_fit``."
        self.epochs, self.loss = epochs, torch.tensor(0.0)
        self.iteration = self.num_batch = self.epochs_done = 0
        self.skip_validate, self.exception, self.last_metrics, self.v1_state = False, False, None, None
        self._smoother, self.smooth_loss = SmoothenValue(0.98), None
        self._val_total, self._val_count = 0.0, 0
        self("begin_fit")

    def do_begin_epoch(self, epoch: int) -> bool:
        "Set ``epoch`` and ``dl = data.train_dl``, fire ``begin_epoch`` and return its (ignored, always False) result."
        self.epoch, self.dl = epoch, self.data.train_dl
        self.num_batch, self.stop_training = 0, False
        return self("begin_epoch")

    def fit(self, epochs: int, cbs: Any = None, reset_opt: bool = False) -> None:
        "Train for `epochs`; `cbs` are callbacks for this fit only (a number there is taken as the lr, see above)."
        lr = None
        if isinstance(cbs, (int, float)) and not isinstance(cbs, bool):
            lr, cbs = cbs, None
        fit_cbs = listify(cbs) + [f(self) for f in self.callback_fns]  # callback_fns: fresh v1 instances
        self.add_cbs(fit_cbs)
        if reset_opt or not self.opt:
            self.opt = add_hypers(self.opt_func(self.splitter(self.model), lr=self.lr))
        if lr is not None:
            for h in add_hypers(self.opt).hypers:
                h["lr"] = lr
        try:
            self.do_begin_fit(epochs)
            for epoch in range(epochs):
                if not self.do_begin_epoch(epoch):
                    self.all_batches()
                if not self.skip_validate:  # v1 flag; the course always validates
                    with torch.no_grad():
                        self.dl = self.data.valid_dl
                        self._val_total, self._val_count = 0.0, 0
                        if not self("begin_validate"):
                            self.all_batches()
                    self.last_metrics = [validation_loss(self._val_total, self._val_count)]
                else:
                    self.last_metrics = [None]
                self("after_epoch")
                self.epochs_done = epoch + 1
                if self.stop_training:  # v1 flag: read after every after_epoch
                    break
        except CancelTrainException:
            self("after_cancel_train")
        except Exception as e:
            self.exception = e
            raise
        finally:
            self("after_fit")
            self.remove_cbs(fit_cbs)

    def __call__(self, cb_name: str) -> bool:
        "Fire `cb_name` (one of ``ALL_CBS``) on every callback in ``_order``; always False (returns are ignored)."
        if cb_name not in self.ALL_CBS:
            import difflib

            close = difflib.get_close_matches(cb_name, sorted(self.ALL_CBS), n=1)
            raise AssertionError(f"{cb_name!r} is not a course event (Learner.ALL_CBS)"
                                 + (f": did you mean {close[0]!r}?" if close else "."))
        return self._dispatch.fire(self.cbs, cb_name, ignore_returns)

    def implementers(self, cb_name: str) -> list[Any]:
        "The callbacks event `cb_name` calls, in order (those that implement it) -- fastloop's, for inspection."
        return self._dispatch.implementers(self.cbs, cb_name)


def _batch_size(yb: Any) -> int:
    while is_listy(yb):
        yb = yb[0]
    return yb.shape[0]


def get_learner(nfs: list[int], data: Any, lr: float, layer: Callable[..., nn.Module] = conv_layer,
                loss_func: Callable = F.cross_entropy, cb_funcs: Any = None, opt_func: Callable = sgd_opt,
                **kwargs: Any) -> Learner:
    "A Kaiming-initialised `get_cnn_model` in a 09b `Learner`."
    model = get_cnn_model(data, nfs, layer, **kwargs)
    init_cnn(model)
    return Learner(model, data, loss_func, lr=lr, cb_funcs=cb_funcs, opt_func=opt_func)


class AvgStatsCallback(_AvgStatsCallback04):
    """The 09b flavour: writes ``train: [loss, *metrics]`` and ``valid: [...]`` through ``learn.logger``.

    Events: ``begin_epoch`` (reset), ``after_loss`` (reads ``in_train``; accumulates under ``no_grad``),
    ``after_epoch`` (reads ``logger``).  ``_order`` 0, after `TrainEvalCallback`.  Registered as ``avg_stats``.
    """

    def after_epoch(self) -> None:
        self.logger(self.train_stats)
        self.logger(self.valid_stats)
