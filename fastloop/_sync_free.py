"""Sync-free training batches: loss values that are read from the device only when someone looks at them.

fastai v1 copies every training loss to the CPU twice per batch (``loss.detach().cpu()`` for ``last_loss``,
``loss.float().detach().cpu()`` for the loss smoother, before ``backward()``) and formats ``smooth_loss`` into
the progress bar's comment.  On a GPU each of those is a blocking sync: the host waits for the forward pass
before it can queue the backward.  In a sync-free fit (``Learner(sync_free="auto")``, the default):

* the handler's loss smoother only *keeps* each raw loss (still on the device) and hands out a `LazyLoss`
  for ``smooth_loss``; all pending losses are copied to the CPU in one go when a value is first read, and
  smoothed there with v1's float32 arithmetic (the same bits);
* ``last_loss`` at ``on_batch_end`` is the detached loss on its device;
* the `Recorder` stores the `LazyLoss` handles (each one replaces itself by its CPU tensor in the
  Recorder's list when it is read) and puts a `LazyText` on the bar, which fastprogress formats only when
  it redraws (at most every 0.2 s);
* before any callback or probe that does not declare ``_sync_free = True`` is called, the handler swaps
  the pending values in the state for the CPU tensors fastai v1 would have put there.  So such a
  callback sees exactly what v1 shows it, and pays v1's sync -- at the events it implements, only.

See ``CallbackHandler`` (``sync_free``) for the three modes and README's "Sync-free batches" for the rule
and its cost model.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["LazyLoss", "LazyText", "resolve"]


def resolve(x: Any) -> Any:
    "`x`'s CPU value: a `LazyLoss` is read (one device-to-host copy for all pending losses); a tensor moved."
    return x.value if type(x) is LazyLoss else x.cpu()


def _read_all(x: Any) -> Any:
    "`x` with every `LazyLoss` in it (in lists and tuples too: ``torch.stack([a, b])``) replaced by its value."
    if type(x) is LazyLoss:
        return x.value
    if isinstance(x, (list, tuple)):
        return type(x)(_read_all(o) for o in x)
    return x


def _lazy_binop(op: Callable[[Any, Any], Any], reflected: bool = False) -> Callable[[LazyLoss, Any], Any]:
    def method(self: LazyLoss, other: Any) -> Any:
        other = other.value if type(other) is LazyLoss else other
        return op(other, self.value) if reflected else op(self.value, other)

    return method


class LazyLoss:
    """The ``smooth_loss`` of one training batch, computed when it is first read.

    ``value`` is the 0-dim CPU float32 tensor fastai v1 would have given (same bits).  Reading it -- through
    ``value``, ``float()``, ``format``, ``.item()``, a comparison, arithmetic, a torch function, or any tensor
    attribute -- copies every pending loss of the fit to the CPU at once (one sync) and smooths them.

    A callback that declares ``_sync_free = True`` may receive one as ``smooth_loss``; every other callback
    receives ``value`` itself (the handler reads it first), unless the learner was built with
    ``sync_free=True``.
    """

    __slots__ = ("_value", "_smoother", "_sink")

    def __init__(self, smoother: Any):
        self._value: torch.Tensor | None = None
        self._smoother = smoother  # dropped once the value is known
        self._sink: tuple[list, int] | None = None

    # -- the value
    @property
    def value(self) -> torch.Tensor:
        "The smoothed loss as a 0-dim CPU float32 tensor (reads the pending losses on first use)."
        if self._value is None:
            self._smoother.flush()
        return self._value

    @property
    def is_read(self) -> bool:
        "Whether the value is known (no device read left to do)."
        return self._value is not None

    def store_in(self, container: list, index: int) -> None:
        "Once read, replace ``container[index]`` (this handle) by the CPU tensor: the Recorder's list ends up as v1's."
        if self._value is not None:
            container[index] = self._value
        else:
            self._sink = (container, index)

    def _set(self, value: torch.Tensor) -> None:
        "Called by the smoother when it has read and smoothed this batch's loss."
        self._value, self._smoother = value, None
        if self._sink is not None:
            container, index = self._sink
            self._sink = None
            if index < len(container) and container[index] is self:
                container[index] = value

    # -- reading it like a tensor
    def item(self) -> float:
        return self.value.item()

    def cpu(self) -> torch.Tensor:
        return self.value

    def __float__(self) -> float:
        return float(self.value)

    def __int__(self) -> int:
        return int(self.value)

    def __bool__(self) -> bool:
        return bool(self.value)

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    def __repr__(self) -> str:
        return repr(self._value) if self._value is not None else "LazyLoss(<not read yet>)"

    def __str__(self) -> str:
        return str(self.value)

    def __getattr__(self, name: str) -> Any:  # dtype, shape, numpy(), detach(), ...: the tensor's
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return getattr(self.value, name)

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        "``torch.isnan(smooth_loss)`` and friends work: the handle is read and the function gets the tensor."
        return func(*_read_all(args), **{k: _read_all(v) for k, v in (kwargs or {}).items()})

    __lt__ = _lazy_binop(operator.lt)
    __le__ = _lazy_binop(operator.le)
    __gt__ = _lazy_binop(operator.gt)
    __ge__ = _lazy_binop(operator.ge)
    __eq__ = _lazy_binop(operator.eq)  # type: ignore[assignment]
    __ne__ = _lazy_binop(operator.ne)  # type: ignore[assignment]
    __add__ = _lazy_binop(operator.add)
    __radd__ = _lazy_binop(operator.add, reflected=True)
    __sub__ = _lazy_binop(operator.sub)
    __rsub__ = _lazy_binop(operator.sub, reflected=True)
    __mul__ = _lazy_binop(operator.mul)
    __rmul__ = _lazy_binop(operator.mul, reflected=True)
    __truediv__ = _lazy_binop(operator.truediv)
    __rtruediv__ = _lazy_binop(operator.truediv, reflected=True)
    __hash__ = object.__hash__

    def __neg__(self) -> torch.Tensor:
        return -self.value


class LazyText:
    """Text formatted from a value only when it is shown: the Recorder's progress-bar comment.

    fastprogress reads a bar's ``comment`` (``len`` then ``f' {comment}'``) only when it redraws, which it
    throttles to about every 0.2 s; formatting ``smooth_loss`` for every batch would read the loss from the
    device every batch.  Behaves as the string it stands for (``str``, ``format``, ``len``, ``==``, ``+``).
    """

    __slots__ = ("_value", "_spec", "_text")

    def __init__(self, value: Any, spec: str = ".4f"):
        self._value, self._spec, self._text = value, spec, None

    def __str__(self) -> str:
        if self._text is None:
            self._text = format(self._value, self._spec)
            self._value = None
        return self._text

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __repr__(self) -> str:
        return repr(str(self))

    def __len__(self) -> int:
        return len(str(self))

    def __eq__(self, other: object) -> bool:
        return str(self) == (str(other) if isinstance(other, LazyText) else other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __add__(self, other: str) -> str:
        return str(self) + other

    def __radd__(self, other: str) -> str:
        return other + str(self)
