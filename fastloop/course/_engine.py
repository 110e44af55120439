"""The course style on fastloop's one dispatch core (`fastloop._dispatch`).

`CourseDispatch` keeps, for one runner, the per-event call lists of its callbacks, built by
`fastloop._dispatch.build_call_lists` and fired by `fastloop._dispatch.fire` -- the same functions fastai v1's
`CallbackHandler` uses.  What differs from the v1 style is only plugged in:

* **hook lookup** (`course_hook`): the event method is found on the callback's class or instance, never through
  the course ``__getattr__`` (which would fall through to the runner); a callback that overrides ``__call__``
  (`DebugCallback`) is called as ``cb(event)`` at every event, as in the course; an object with a
  ``course_hook(event)`` method (the v1 adapter) says itself what to call.  A callback without the method is
  left out of that event's list, so it costs nothing there.
* **return values** (`on_return`): course returns are bools, not dicts of state updates.  The 04 Runner stops
  an event at the first True (`first_true`); from 05b on, returns are ignored (`ignore_returns`).
* **hook checks**: ``before_fit`` (fastai2's name), ``after_batches`` and the like are reported with the nearest
  course event, and a hook with a required argument is refused (course events pass none).

The course re-sorted the callbacks by ``_order`` at every event.  Here the sorted call lists are rebuilt when the
list of callbacks or one of their ``_order`` values changed since the last event, which gives the same order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import _dispatch
from ..core import defaults
from .callbacks import COURSE_EVENTS, Callback

__all__ = ["CourseDispatch", "course_hook", "first_true", "ignore_returns"]

#: Name prefixes checked for misspelled course hooks (``before_*`` is fastai2's spelling of ``begin_*``).
_CANDIDATES = ("begin_", "after_", "before_")


def first_true(cb: Any, ret: Any) -> bool:
    "04 Runner rule: a truthy return stops the event (later callbacks do not see it) and the runner acts on it."
    return bool(ret)


def ignore_returns(cb: Any, ret: Any) -> bool:
    "05b and 09b rule (the exported modules): the return value of a course event is ignored."
    return False


def _defined(obj: Any, name: str) -> bool:
    "Whether `name` is set on the instance or one of its classes (without the course ``__getattr__``)."
    if name in getattr(obj, "__dict__", {}):
        return True
    return any(name in vars(klass) for klass in type(obj).__mro__)


def course_hook(obj: Any, name: str) -> Callable[[], Any] | None:
    "What a course event `name` calls on `obj` (no arguments), or None if `obj` does not take part in it."
    own = getattr(obj, "course_hook", None) if _defined(obj, "course_hook") else None
    if own is not None:  # the v1 adapter
        return own(name)
    if isinstance(obj, Callback) and type(obj).__call__ is not Callback.__call__:
        return lambda: obj(name)  # DebugCallback-style: sees every event through __call__
    if not _defined(obj, name):
        return None
    meth = getattr(obj, name)
    return meth if callable(meth) else None


def _order(cb: Any) -> Any:
    return getattr(cb, "_order", 0)


class CourseDispatch:
    """Call lists for one runner's callbacks, rebuilt only when the callbacks (or their ``_order``) change.

    `fire(cbs, event, on_return)` fires `event` on `cbs` (sorted stably by ``_order``) through
    `fastloop._dispatch.fire` and returns True if `on_return` stopped it.
    """

    def __init__(self, strict: bool | None = None):
        self.strict = defaults.strict_callbacks if strict is None else strict
        self._seen: list[Any] = []
        self._orders: list[Any] = []
        self._calls: dict[str, list[tuple[Any, Callable[..., Any]]]] = {}

    def _stale(self, cbs: list[Any]) -> bool:
        seen = self._seen
        if len(cbs) != len(seen):
            return True
        for cb, old, order in zip(cbs, seen, self._orders):
            if cb is not old or _order(cb) != order:
                return True
        return False

    def calls(self, cbs: list[Any]) -> dict[str, list[tuple[Any, Callable[..., Any]]]]:
        "The per-event call lists for `cbs` (rebuilt if `cbs` or an ``_order`` changed)."
        if self._stale(cbs):
            for cb in cbs:  # the checks are cached per class: cheap after the first time
                if not _defined(cb, "course_hook"):  # the v1 adapter checks its v1 callback itself
                    _dispatch.check_hooks(cb, strict=self.strict, events=COURSE_EVENTS, prefix="",
                                          candidates=_CANDIDATES)
            ordered = sorted(cbs, key=_order)  # stable: ties keep the order of the list
            self._calls = _dispatch.build_call_lists(ordered, COURSE_EVENTS, {}, prefix="", get_hook=course_hook)
            self._seen, self._orders = list(cbs), [_order(cb) for cb in cbs]
        return self._calls

    def implementers(self, cbs: list[Any], event: str) -> list[Any]:
        "The callbacks `event` calls, in call order."
        return [cb for cb, _ in self.calls(cbs)[event]]

    def fire(self, cbs: list[Any], event: str, on_return: Callable[[Any, Any], bool]) -> bool:
        "Fire `event` on `cbs`; True if `on_return` stopped it at some callback."
        calls = self.calls(cbs).get(event)
        if calls is None:  # an event of the user's own: every callback that has the method
            calls = _dispatch.build_call_lists(sorted(cbs, key=_order), [event], {}, prefix="",
                                               get_hook=course_hook)[event]
        if not calls:
            return False
        return _dispatch.fire(calls, event, {}, None, "", on_return)
