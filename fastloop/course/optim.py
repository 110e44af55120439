"""Optimizer hyper-parameters the course way (09): ``opt.hypers[i]['lr']``, for the course's own `Optimizer` and
for torch optimizers.

The course's optimizer keeps ``param_groups`` as lists of tensors and the hyper-parameters in ``opt.hypers``: one
dict per group with the keys ``lr``, ``mom``, ``sqr_mom``, ``wd`` and ``eps``.  From notebook 09 on, `Recorder`,
`ParamScheduler` and `LR_Find` read and write ``opt.hypers``.  With a torch optimizer they failed ("'SGD' object has
no attribute 'hypers'"); `add_hypers` gives a torch optimizer a ``hypers`` attribute: one `HyperView` per param
group, a dict view with these aliases:

==========  ===============================================================
course key  torch param-group key
==========  ===============================================================
``lr``      ``lr``
``mom``     ``momentum`` (SGD, RMSprop), or ``betas[0]`` (Adam, AdamW...)
``sqr_mom`` ``betas[1]`` (Adam...), or ``alpha`` (RMSprop's squared-gradient average)
``wd``      ``weight_decay``
``eps``     ``eps``
==========  ===============================================================

Any other key is the param group's own.  Nothing is patched globally: the 09b `Learner` calls `add_hypers` on the
optimizer its ``opt_func`` built (and the `Runner` on ``learn.opt`` at fit).

The steppers below are written with today's torch calls (``add_(t, alpha=...)``), not the deprecated
positional-alpha overloads the course used; the arithmetic is the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from functools import partial
from typing import Any

import torch

from .callbacks import listify

__all__ = [
    "HyperView", "add_hypers", "Optimizer", "StatefulOptimizer", "Stat", "AverageGrad", "AverageSqrGrad",
    "StepCount", "sgd_step", "weight_decay", "l2_reg", "momentum_step", "adam_step", "debias", "lamb_step",
    "sgd_opt", "sgd_mom_opt", "adam_opt", "lamb", "compose", "maybe_update", "get_defaults",
]


# ------------------------------------------------------------------------------------- hypers for torch
class HyperView(MutableMapping):
    "A torch param group seen with the course's keys (``mom`` -> ``momentum`` or ``betas[0]``, ...)."

    def __init__(self, group: dict):
        self.group = group

    def _where(self, key: str) -> tuple[str, int | None]:
        "(torch key, index in a tuple or None) for a course key."
        g = self.group
        if key == "mom":
            if "momentum" in g:
                return "momentum", None
            if "betas" in g:
                return "betas", 0
        elif key == "sqr_mom":
            if "betas" in g:
                return "betas", 1
            if "alpha" in g:
                return "alpha", None
        elif key == "wd" and "weight_decay" in g:
            return "weight_decay", None
        return key, None

    def __getitem__(self, key: str) -> Any:
        if key == "params":
            raise KeyError("params: the parameters are in opt.param_groups, not in the hyper-parameters")
        tkey, idx = self._where(key)
        value = self.group[tkey]
        return value if idx is None else value[idx]

    def __setitem__(self, key: str, value: Any) -> None:
        tkey, idx = self._where(key)
        if idx is None:
            self.group[tkey] = value
        else:
            pair = list(self.group[tkey])
            pair[idx] = value
            self.group[tkey] = tuple(pair)

    def __delitem__(self, key: str) -> None:
        tkey, idx = self._where(key)
        if idx is not None:
            raise KeyError(f"{key} is part of {tkey}: it cannot be deleted")
        del self.group[tkey]

    def _keys(self) -> list[str]:
        g = self.group
        aliased = {"momentum", "betas", "weight_decay"} | ({"alpha"} if "betas" not in g else set())
        keys = ["lr"] if "lr" in g else []
        keys += ["mom"] if ("momentum" in g or "betas" in g) else []
        keys += ["sqr_mom"] if ("betas" in g or "alpha" in g) else []
        keys += ["wd"] if "weight_decay" in g else []
        keys += [k for k in g if k not in aliased and k not in ("params", "lr")]
        return keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def __repr__(self) -> str:
        return repr(dict(self))


def add_hypers(opt: Any) -> Any:
    """Give a torch optimizer a ``hypers`` list of `HyperView` (one per param group); return `opt`.

    An optimizer that already has ``hypers`` (the course's `Optimizer`) is returned unchanged.  The list is
    rebuilt if param groups are added later (``opt.add_param_group``) and `add_hypers` is called again.
    """
    if isinstance(opt, torch.optim.Optimizer):
        views = getattr(opt, "hypers", None)
        if not isinstance(views, list) or len(views) != len(opt.param_groups) or any(
                v.group is not g for v, g in zip(views, opt.param_groups)):
            opt.hypers = [HyperView(g) for g in opt.param_groups]
    return opt


# --------------------------------------------------------------------------------- the course's optimizer
def get_defaults(d: Any) -> dict:
    "A stepper's or stat's ``_defaults`` hyper-parameters."
    return getattr(d, "_defaults", {})


def maybe_update(os: Any, dest: dict, f: Callable[[Any], dict]) -> None:
    "Add to `dest` every key of ``f(o)`` (for `o` in `os`) that `dest` lacks."
    for o in os:
        for k, v in f(o).items():
            if k not in dest:
                dest[k] = v


def compose(x: Any, funcs: Any, *args: Any, order_key: str = "_order", **kwargs: Any) -> Any:
    "Apply `funcs` to `x` one after the other, sorted by their ``_order``, each with ``**kwargs``."
    for f in sorted(listify(funcs), key=lambda o: getattr(o, order_key, 0)):
        x = f(x, **kwargs)
    return x


class Optimizer:
    """The course optimizer (09): ``param_groups`` is a list of lists of tensors, ``hypers`` one dict per group.

    ``step()`` applies the `steppers` (functions ``f(p, **hyper)``) to each parameter that has a gradient;
    missing hyper-parameters are filled from the steppers' ``_defaults``.
    """

    def __init__(self, params: Any, steppers: Any, **defaults: Any):
        self.steppers = listify(steppers)
        maybe_update(self.steppers, defaults, get_defaults)
        self.param_groups = list(params)
        if not isinstance(self.param_groups[0], list):  # a single group of parameters
            self.param_groups = [self.param_groups]
        self.hypers = [{**defaults} for _ in self.param_groups]

    def grad_params(self) -> list[tuple[torch.Tensor, dict]]:
        "``(param, its group's hypers)`` for every parameter that has a gradient."
        return [(p, hyper) for pg, hyper in zip(self.param_groups, self.hypers) for p in pg if p.grad is not None]

    def zero_grad(self) -> None:
        "Zero the gradients in place (the course never set them to None)."
        for p, _ in self.grad_params():
            p.grad.detach_()
            p.grad.zero_()

    def step(self) -> None:
        for p, hyper in self.grad_params():
            compose(p, self.steppers, **hyper)


def sgd_step(p: torch.Tensor, lr: float, **kwargs: Any) -> torch.Tensor:
    "``p -= lr * grad``."
    p.data.add_(p.grad.data, alpha=-lr)
    return p


def weight_decay(p: torch.Tensor, lr: float, wd: float, **kwargs: Any) -> torch.Tensor:
    "True weight decay: ``p *= 1 - lr*wd``."
    p.data.mul_(1 - lr * wd)
    return p


weight_decay._defaults = dict(wd=0.0)


def l2_reg(p: torch.Tensor, lr: float, wd: float, **kwargs: Any) -> torch.Tensor:
    "L2 regularisation: ``grad += wd * p``."
    p.grad.data.add_(p.data, alpha=wd)
    return p


l2_reg._defaults = dict(wd=0.0)


class StatefulOptimizer(Optimizer):
    "An `Optimizer` whose `stats` keep per-parameter state (moving averages, step count) for the steppers."

    def __init__(self, params: Any, steppers: Any, stats: Any = None, **defaults: Any):
        self.stats = listify(stats)
        maybe_update(self.stats, defaults, get_defaults)
        super().__init__(params, steppers, **defaults)
        self.state: dict[torch.Tensor, dict] = {}

    def step(self) -> None:
        for p, hyper in self.grad_params():
            if p not in self.state:
                # a new parameter: each stat initialises its part of the state
                self.state[p] = {}
                maybe_update(self.stats, self.state[p], lambda o, p=p: o.init_state(p))
            state = self.state[p]
            for stat in self.stats:
                state = stat.update(p, state, **hyper)
            compose(p, self.steppers, **state, **hyper)
            self.state[p] = state


class Stat:
    "Per-parameter state for a `StatefulOptimizer`: ``init_state(p) -> dict``, ``update(p, state, **hypers)``."

    _defaults: dict = {}

    def init_state(self, p: torch.Tensor) -> dict:
        raise NotImplementedError

    def update(self, p: torch.Tensor, state: dict, **kwargs: Any) -> dict:
        raise NotImplementedError


class AverageGrad(Stat):
    "``grad_avg = mom*grad_avg + damp*grad`` (damp ``1-mom`` with `dampening`, else 1)."

    _defaults = dict(mom=0.9)

    def __init__(self, dampening: bool = False):
        self.dampening = dampening

    def init_state(self, p: torch.Tensor) -> dict:
        return {"grad_avg": torch.zeros_like(p.grad.data)}

    def update(self, p: torch.Tensor, state: dict, mom: float, **kwargs: Any) -> dict:
        state["mom_damp"] = 1 - mom if self.dampening else 1.0
        state["grad_avg"].mul_(mom).add_(p.grad.data, alpha=state["mom_damp"])
        return state


class AverageSqrGrad(Stat):
    "``sqr_avg = sqr_mom*sqr_avg + damp*grad**2`` (damp ``1-sqr_mom`` with `dampening`, else 1)."

    _defaults = dict(sqr_mom=0.99)

    def __init__(self, dampening: bool = True):
        self.dampening = dampening

    def init_state(self, p: torch.Tensor) -> dict:
        return {"sqr_avg": torch.zeros_like(p.grad.data)}

    def update(self, p: torch.Tensor, state: dict, sqr_mom: float, **kwargs: Any) -> dict:
        state["sqr_damp"] = 1 - sqr_mom if self.dampening else 1.0
        state["sqr_avg"].mul_(sqr_mom).addcmul_(p.grad.data, p.grad.data, value=state["sqr_damp"])
        return state


class StepCount(Stat):
    "Number of steps taken for this parameter."

    def init_state(self, p: torch.Tensor) -> dict:
        return {"step": 0}

    def update(self, p: torch.Tensor, state: dict, **kwargs: Any) -> dict:
        state["step"] += 1
        return state


def momentum_step(p: torch.Tensor, lr: float, grad_avg: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    "``p -= lr * grad_avg``."
    p.data.add_(grad_avg, alpha=-lr)
    return p


def debias(mom: float, damp: float, step: int) -> float:
    "The debiasing factor of a (dampened) moving average after `step` steps."
    return damp * (1 - mom**step) / (1 - mom)


def adam_step(p: torch.Tensor, lr: float, mom: float, mom_damp: float, step: int, sqr_mom: float, sqr_damp: float,
              grad_avg: torch.Tensor, sqr_avg: torch.Tensor, eps: float, **kwargs: Any) -> torch.Tensor:
    "Adam: ``p -= lr/debias1 * grad_avg / (sqrt(sqr_avg/debias2) + eps)``."
    debias1 = debias(mom, mom_damp, step)
    debias2 = debias(sqr_mom, sqr_damp, step)
    p.data.addcdiv_(grad_avg, (sqr_avg / debias2).sqrt() + eps, value=-lr / debias1)
    return p


adam_step._defaults = dict(eps=1e-5)


def lamb_step(p: torch.Tensor, lr: float, mom: float, mom_damp: float, step: int, sqr_mom: float, sqr_damp: float,
              grad_avg: torch.Tensor, sqr_avg: torch.Tensor, eps: float, wd: float, **kwargs: Any) -> torch.Tensor:
    "LAMB: the Adam step plus weight decay, scaled by the ratio of the weights' norm to the step's norm."
    debias1 = debias(mom, mom_damp, step)
    debias2 = debias(sqr_mom, sqr_damp, step)
    r1 = p.data.pow(2).mean().sqrt()
    step_ = (grad_avg / debias1) / ((sqr_avg / debias2).sqrt() + eps) + wd * p.data
    r2 = step_.pow(2).mean().sqrt()
    p.data.add_(step_, alpha=-lr * min(float(r1 / r2), 10))
    return p


lamb_step._defaults = dict(eps=1e-6, wd=0.0)

#: SGD with true weight decay (the 09b `Learner`'s default ``opt_func``).
sgd_opt = partial(Optimizer, steppers=[weight_decay, sgd_step])

#: SGD with momentum (undampened) and true weight decay 0.01.
sgd_mom_opt = partial(StatefulOptimizer, steppers=[momentum_step, weight_decay], stats=AverageGrad(), wd=0.01)


def adam_opt(xtra_step: Any = None, **kwargs: Any) -> Callable[..., StatefulOptimizer]:
    """Adam with true weight decay: ``adam_opt(wd=0.01)(params, lr=1e-3)``.

    Keyword arguments become hyper-parameters, unchecked: ``adam_opt(mom_sqr=0.99)`` (a typo of the 11/11a
    notebooks) silently adds an unused key ``mom_sqr`` and leaves ``sqr_mom`` at 0.99.
    """
    return partial(StatefulOptimizer, steppers=[adam_step, weight_decay] + listify(xtra_step),
                   stats=[AverageGrad(dampening=True), AverageSqrGrad(), StepCount()], **kwargs)


def lamb(**kwargs: Any) -> Callable[..., StatefulOptimizer]:
    "The LAMB optimizer of notebook 09."
    return partial(StatefulOptimizer, steppers=lamb_step,
                   stats=[AverageGrad(dampening=True), AverageSqrGrad(), StepCount()], **kwargs)
