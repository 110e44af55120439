"""Resumable checkpoints: what a checkpoint holds, how it is written and read, and how `fit` resumes from one.

The guarantee: interrupt a fit at any batch, resume from the checkpoint (in a fresh process if you like), and
the model, the optimizer, the Recorder's history and every callback's state end up as in a run that was never
interrupted -- bit for bit on the CPU (see docs/reliability.md for the exact scope and the CUDA caveats).

**Safe points.**  A checkpoint is only ever taken where the whole training state is consistent:

* after a *training* batch, once every ``on_batch_end`` hook has run and the counters have moved
  (resuming continues at the next batch of the same epoch, in the same shuffled order);
* after an epoch, once every ``on_epoch_end`` hook has run and ``epoch`` has moved (resuming starts the next
  epoch; callbacks get v1's ``jump_to_epoch(epoch)`` first, as when v1 resumed at an epoch start).

``learn.save_checkpoint(name)`` called by a callback during a fit is a *request*: the file is written at the
next safe point (so callbacks running after the requester, and the handler's counters, are included).  A
request made during validation is written at the end of that epoch.  Called between fits, it writes at once
(a "between fits" checkpoint: model, optimizer, RNG and ``learn.callbacks``; resuming from it starts a fit
from epoch 0).

**What is saved** (every value is a tensor, number, string, bool, None, list, tuple or dict, so the file loads
under torch's ``weights_only=True``): the model's state dict; the optimizer's state dict and the
`OptimWrapper` settings (lr/mom/beta/wd per layer group, other hyper-parameters, ``true_wd``, ``bn_wd``);
every callback's and metric's state (below); the handler's counters, flags, ``smooth_loss``/``last_loss``/
``last_metrics`` and loss smoother; the RNG states (python, numpy, torch CPU, CUDA when initialised, and the
generators of the train/valid loaders), both now and at the start of the running epoch (the shuffle of the
epoch is drawn from those, so resuming re-draws the same order and skips the done batches at the index
level: no batch is loaded or run twice).

**Callback state: the protocol.**

* A callback with a ``load_state(state)`` method: its ``get_state()`` is saved (it must return plain data
  -- an error names the callback and the key otherwise) and ``load_state(state)`` gets it back on resume,
  *after* the resumed fit's ``on_train_begin`` has rebuilt the callback.
* Any other callback: fastai v1's ``get_state(minimal=True)`` (the instance attributes, without the names in
  ``exclude`` and ``not_min``) is saved attribute by attribute, and restored by setting the attributes back
  (v1's ``load_callback`` rule), after ``on_train_begin``.  attrs fields with ``metadata={'transient': True}``
  are left out.  Values that are references to the learner's parts (the model, the optimizer, loaders,
  progress bars, other callbacks, functions) are skipped silently: they are restored, or rebuilt, elsewhere.
  fastloop's own state holders (`Scheduler`, `SmoothenValue`) and attrs instances are restored *in place*
  into the objects ``on_train_begin`` rebuilt (a one-cycle schedule's position, for instance).  Any other
  value that is not plain data is skipped with a warning (once per class and attribute) -- or, for an attrs
  field not marked transient, refused with an error naming it.
"""

from __future__ import annotations

import io
import random
import signal
import sys
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn

from ._io import atomic_write_bytes

__all__ = ["CheckpointError", "CheckpointMismatchError", "FORMAT", "VERSION", "save_checkpoint", "load_checkpoint",
           "read_checkpoint", "checkpoint_path", "capture_rng", "restore_rng", "encode", "decode", "FitRun",
           "current_run"]

FORMAT, VERSION = "fastloop-checkpoint", 1
_TAG = "__fastloop__"  # marks an encoded non-builtin value (numpy scalar/array, dtype, in-place object)


class CheckpointError(ValueError):
    "A checkpoint cannot be written or read (not plain data, not a fastloop checkpoint, wrong version)."


class CheckpointMismatchError(CheckpointError):
    "The checkpoint was written by a different model or a different set of callbacks; the message names the difference."


# ============================================================================================== plain data
class _NotPlainError(Exception):
    """Raised by `encode` for a value that is not plain data; `reference` says whether it is a link to the
    learner's parts (skipped silently) or real state that cannot be saved (warned about)."""

    def __init__(self, value: Any, reference: bool):
        super().__init__(type(value).__name__)
        self.value, self.reference = value, reference


def _is_holder(x: Any) -> bool:
    "Objects restored in place, attribute by attribute: fastloop's Scheduler/SmoothenValue and attrs instances."
    from .callback import Scheduler, SmoothenValue

    return isinstance(x, (Scheduler, SmoothenValue)) or attrs.has(type(x))


def _is_reference(x: Any) -> bool:
    "A link to something restored or rebuilt elsewhere (model, optimizer, loaders, bars, callbacks, functions)."
    if callable(x) or isinstance(x, (nn.Module, torch.optim.Optimizer, torch.Generator, io.IOBase)):
        return True
    module = type(x).__module__ or ""
    return module.split(".")[0] in ("fastloop", "fastprogress", "torch", "weakref", "fastai")


def _qualname(cls: type) -> str:
    return cls.__qualname__


def encode(x: Any, clone: bool = False) -> Any:
    """`x` as plain data that ``torch.load(weights_only=True)`` reads; raises `_NotPlainError` for anything else.

    numpy scalars and arrays keep their dtype through a tagged dict; tensors are detached (and cloned with
    `clone`, for a snapshot that later training must not change).
    """
    if type(x).__name__ == "LazyLoss":  # a sync-free smooth_loss (fastloop._sync_free): its CPU value
        return encode(x.value, clone)
    if isinstance(x, np.generic):  # before the builtins: np.float64 is a float subclass
        if isinstance(x, (np.floating, np.integer, np.bool_)):
            return {_TAG: "np", "dtype": x.dtype.str, "v": x.item()}
        raise _NotPlainError(x, reference=False)
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, torch.Tensor):
        t = x.detach()
        return t.clone() if clone else t
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise _NotPlainError(x, reference=False)
        arr = x.astype(np.int64) if x.dtype.kind == "u" and x.dtype != np.uint8 else x
        return {_TAG: "nd", "dtype": x.dtype.str, "v": torch.from_numpy(np.array(arr, copy=True))}
    if isinstance(x, torch.dtype):
        return {_TAG: "dtype", "v": str(x).removeprefix("torch.")}
    if isinstance(x, list):
        return [encode(o, clone) for o in x]
    if isinstance(x, tuple):  # torch.Size and namedtuples become plain tuples
        return tuple(encode(o, clone) for o in x)
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            if not (k is None or isinstance(k, (bool, int, float, str))):
                raise _NotPlainError(k, reference=False)
            out[k] = encode(v, clone)
        return out
    if _is_holder(x):
        return {_TAG: "obj", "cls": _qualname(type(x)), "state": _encode_attrs(_attributes(x), clone)}
    raise _NotPlainError(x, reference=_is_reference(x))


def _attributes(x: Any) -> dict[str, Any]:
    "An object's attributes (attrs fields, or its __dict__), without attrs fields marked transient."
    if attrs.has(type(x)):
        return {f.name: getattr(x, f.name) for f in attrs.fields(type(x)) if not f.metadata.get("transient")}
    return dict(vars(x))


def _encode_attrs(values: dict[str, Any], clone: bool) -> dict[str, Any]:
    "Encode each attribute that is plain data; skip the others (inside a state holder: silently)."
    out = {}
    for k, v in values.items():
        try:
            out[k] = encode(v, clone)
        except _NotPlainError:
            continue
    return out


def _is_tag(x: Any, kind: str) -> bool:
    return isinstance(x, dict) and x.get(_TAG) == kind


def decode(x: Any) -> Any:
    "The inverse of `encode` (in-place objects stay encoded: `_restore` puts them back into live objects)."
    if isinstance(x, dict):
        tag = x.get(_TAG)
        if tag == "np":
            return np.dtype(x["dtype"]).type(x["v"])
        if tag == "nd":
            return x["v"].numpy().astype(np.dtype(x["dtype"]))
        if tag == "dtype":
            return getattr(torch, x["v"])
        if tag == "obj":
            return x
        return {k: decode(v) for k, v in x.items()}
    if isinstance(x, list):
        return [decode(o) for o in x]
    if isinstance(x, tuple):
        return tuple(decode(o) for o in x)
    return x


class _CannotRestoreError(Exception):
    pass


def _has_obj(x: Any) -> bool:
    if _is_tag(x, "obj"):
        return True
    if isinstance(x, (list, tuple)):
        return any(_has_obj(o) for o in x)
    return False


def _restore(cur: Any, saved: Any) -> Any:
    """The value to put back where `cur` lives now: saved objects are restored *into* `cur` (rebuilt by
    on_train_begin), everything else is decoded; a tensor goes to the device of the tensor it replaces."""
    if _is_tag(saved, "obj"):
        if cur is None or _qualname(type(cur)) != saved["cls"]:
            raise _CannotRestoreError(f"a {saved['cls']} was saved, the callback now holds {type(cur).__name__}")
        for k, v in saved["state"].items():
            now = getattr(cur, k, None)
            object.__setattr__(cur, k, _restore(now, v)) if attrs.has(type(cur)) else setattr(cur, k, _restore(now, v))
        return cur
    if isinstance(saved, (list, tuple)) and _has_obj(saved):
        if not isinstance(cur, (list, tuple)) or len(cur) != len(saved):
            raise _CannotRestoreError("a list of state objects was saved; the callback now holds something else")
        items = [_restore(c, s) for c, s in zip(cur, saved)]
        return items if isinstance(saved, list) else tuple(items)
    value = decode(saved)
    if isinstance(value, torch.Tensor) and isinstance(cur, torch.Tensor) and cur.device != value.device:
        value = value.to(cur.device)
    return value


# ========================================================================================= callback state
_warned: set[tuple[str, str]] = set()


def _own_attr(obj: Any, name: str) -> Any:
    "The object's own attribute, or None (without ``__getattr__``: a LearnerCallback would read the learner's)."
    try:
        return object.__getattribute__(obj, name)
    except AttributeError:
        return None


def capture_callback(cb: Any, clone: bool = False) -> dict[str, Any]:
    "One callback's (or metric's) state, following the protocol in the module docstring."
    label = type(cb).__name__
    if callable(getattr(cb, "load_state", None)):
        raw = cb.get_state()
        items = raw.items() if isinstance(raw, dict) else [(None, raw)]
        out = {}
        for k, v in items:
            try:
                out[k] = encode(v, clone)
            except _NotPlainError as e:
                if e.reference and k is not None:  # a link to the learner's parts (v1's `opt`...): not state
                    continue
                where = f"[{k!r}]" if k is not None else ""
                raise CheckpointError(
                    f"{label}.get_state(){where} is a {type(e.value).__name__}, which a checkpoint cannot hold: "
                    f"get_state() must return tensors, numbers, strings, lists, tuples and dicts only "
                    f"(it is restored with {label}.load_state).") from None
        return {"protocol": "load_state", "state": out if isinstance(raw, dict) else out[None]}
    if hasattr(cb, "get_state"):
        try:
            raw = cb.get_state(minimal=True)
        except TypeError:
            raw = cb.get_state()
    else:
        raw = dict(vars(cb))
    transient, fields = set(), set()
    if attrs.has(type(cb)):  # attrs fields may live in slots, which get_state's __dict__ does not show
        transient = {f.name for f in attrs.fields(type(cb)) if f.metadata.get("transient")}
        fields = {f.name for f in attrs.fields(type(cb))}
        excluded = set(getattr(cb, "exclude", ())) | {"exclude", "not_min"}
        raw = {**{f: getattr(cb, f) for f in fields if f not in excluded}, **raw}
    out = {}
    for k, v in raw.items():
        if k in transient:
            continue
        try:
            out[k] = encode(v, clone)
        except _NotPlainError as e:
            if k in fields and not e.reference:
                raise CheckpointError(
                    f"{label}.{k} holds a {type(e.value).__name__}, which a checkpoint cannot hold: mark the attrs "
                    f"field transient (metadata={{'transient': True}}) or give {label} get_state/load_state.") from None
            if not e.reference and (label, k) not in _warned:
                _warned.add((label, k))
                warnings.warn(
                    f"{label}.{k} ({type(e.value).__name__}) is not plain data and is not saved in checkpoints; a "
                    f"resumed fit keeps whatever on_train_begin sets it to. Give {label} get_state/load_state "
                    f"methods, or list the attribute in `exclude`, to silence this.", UserWarning, stacklevel=3)
    return {"protocol": "attributes", "state": out}


def restore_callback(cb: Any, saved: dict[str, Any]) -> None:
    "Put a state captured by `capture_callback` back into `cb`."
    if saved["protocol"] == "load_state":
        if not callable(getattr(cb, "load_state", None)):
            raise CheckpointMismatchError(f"{type(cb).__name__} was saved through get_state/load_state, but has no "
                                          f"load_state method now.")
        cb.load_state(decode(saved["state"]))
        return
    for k, v in saved["state"].items():
        try:
            value = _restore(_own_attr(cb, k), v)
        except _CannotRestoreError as e:
            warnings.warn(f"{type(cb).__name__}.{k} could not be restored ({e}); it keeps its value.", UserWarning,
                          stacklevel=3)
            continue
        if attrs.has(type(cb)):
            object.__setattr__(cb, k, value)
        else:
            setattr(cb, k, value)


# ==================================================================================================== RNG
def _loader_generators(learn: Any) -> list[torch.Generator]:
    "The torch generators the train and valid loaders draw from (their own `generator`, their sampler's)."
    gens: list[torch.Generator] = []
    data = getattr(learn, "data", None)
    for dl in (getattr(data, "train_dl", None), getattr(data, "valid_dl", None)):
        inner = getattr(dl, "dl", dl)
        for g in (getattr(inner, "generator", None), getattr(getattr(inner, "sampler", None), "generator", None),
                  getattr(getattr(getattr(inner, "batch_sampler", None), "sampler", None), "generator", None)):
            if isinstance(g, torch.Generator) and all(g is not o for o in gens):
                gens.append(g)
    return gens


def capture_rng(generators: Iterable[torch.Generator] = ()) -> dict[str, Any]:
    "The states of python's, numpy's and torch's global RNGs (CUDA's once initialised) and of `generators`."
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {"python": (version, internal, gauss),
             "numpy": (np_state[0], encode(np_state[1]), int(np_state[2]), int(np_state[3]), float(np_state[4])),
             "torch": torch.get_rng_state(),
             "generators": [g.get_state() for g in generators]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], generators: Iterable[torch.Generator] = ()) -> None:
    "Set the RNGs back to a `capture_rng` state."
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, decode(keys).astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            warnings.warn(f"The checkpoint has the CUDA RNG states of {len(state['cuda'])} devices, this process sees "
                          f"{torch.cuda.device_count()}: CUDA RNGs are not restored.", UserWarning, stacklevel=2)
    generators = list(generators)
    if len(generators) != len(state["generators"]):
        warnings.warn(f"The checkpoint has {len(state['generators'])} loader generator states, the loaders now have "
                      f"{len(generators)}: they are not restored.", UserWarning, stacklevel=2)
        return
    for g, s in zip(generators, state["generators"]):
        g.set_state(s)


# ============================================================================================ the payload
#: Handler state keys saved in a checkpoint (the batch tensors last_input/last_target/last_output are not:
#: they are restored as None when they existed).
_HANDLER_KEYS = ("epoch", "iteration", "num_batch", "skip_validate", "n_epochs", "stop_training", "stop_epoch",
                 "skip_step", "skip_zero", "skip_bwd", "train", "last_loss", "smooth_loss", "last_metrics")


def _model_state(learn: Any, clone: bool) -> dict[str, torch.Tensor]:
    from .torch_core import get_model

    sd = get_model(learn.model).state_dict()
    return {k: (v.detach().clone() if clone else v.detach()) for k, v in sd.items()}


def _capture_opt(opt: Any, clone: bool) -> dict[str, Any] | None:
    if opt is None:
        return None
    out = {"state_dict": encode(opt.state_dict(), clone), "opt_func": getattr(getattr(opt, "opt_func", None),
                                                                                "__name__", type(opt).__name__)}
    if hasattr(opt, "_lr"):  # an OptimWrapper: its per-layer-group lists and settings
        out["wrapper"] = encode({"lr": opt._lr, "mom": opt._mom, "beta": opt._beta, "wd": opt._wd,
                                 "stats": getattr(opt, "_stats", {}), "true_wd": opt.true_wd, "bn_wd": opt.bn_wd})
    return out


def _restore_opt(opt: Any, saved: dict[str, Any] | None, hypers: bool) -> None:
    """Load the optimizer state; with `hypers` also the wrapper's lr/mom/beta/wd lists.  Without (a between-fits
    checkpoint), lr and wd stay what this fit was given, and mom/beta come back (v1 keeps them across fits)."""
    if saved is None or opt is None:
        return
    lr, wd = (list(opt._lr), list(opt._wd)) if hasattr(opt, "_lr") else (None, None)
    opt.load_state_dict(decode(saved["state_dict"]))
    w = decode(saved.get("wrapper")) if saved.get("wrapper") is not None else None
    if w is None or not hasattr(opt, "_lr"):
        return
    opt.true_wd, opt.bn_wd = w["true_wd"], w["bn_wd"]
    if hypers:
        opt._lr, opt._mom, opt._beta, opt._wd, opt._stats = w["lr"], w["mom"], w["beta"], w["wd"], w["stats"]
    else:  # the param groups now hold the saved lr/wd: write this fit's back
        opt._mom, opt._beta = w["mom"], w["beta"]
        opt.lr, opt.wd = lr, wd


def _checked_callbacks(handler: Any) -> list[Any]:
    "The handler's callbacks that a checkpoint covers: all but probes (tracer, timer) and a dataset-callback."
    from ._dispatch import is_probe

    cb_dl = getattr(handler, "cb_dl", None)
    return [cb for cb in handler.callbacks if cb is not cb_dl and not is_probe(cb)]


def _metric_name(m: Any) -> str:
    return getattr(m, "name", None) or _qualname(type(m))


def _capture_handler(handler: Any, clone: bool) -> dict[str, Any]:
    state = handler.state_dict
    saved = {}
    for k in _HANDLER_KEYS:
        if k in state:
            try:
                saved[k] = encode(state[k], clone)
            except _NotPlainError:
                pass
    smoother = handler.smoothener
    return {"state": saved, "present": sorted(state), "smoother": _encode_attrs(vars(smoother), clone)}


def _restore_handler(handler: Any, saved: dict[str, Any]) -> None:
    state = handler.state_dict
    for k in saved["present"]:
        if k in saved["state"]:
            state[k] = decode(saved["state"][k])
        elif k not in state:  # the batch tensors: the key exists again, as in the interrupted run
            state[k] = None
    for k, v in saved["smoother"].items():
        setattr(handler.smoothener, k, _restore(_own_attr(handler.smoothener, k), v))


def build_payload(learn: Any, handler: Any = None, kind: str = "between_fits", epoch_rng: Any = None,
                  clone: bool = False) -> dict[str, Any]:
    "Everything a checkpoint holds, as plain data (see the module docstring)."
    payload: dict[str, Any] = {"format": FORMAT, "version": VERSION, "model": _model_state(learn, clone),
                               "opt": _capture_opt(learn.opt, clone),
                               "rng": capture_rng(_loader_generators(learn))}
    if handler is None:
        payload["position"] = {"kind": "between_fits"}
        payload["callbacks"] = [{"class": _qualname(type(cb)), **capture_callback(cb, clone)}
                                for cb in learn.callbacks]
        return payload
    flush = getattr(handler.smoothener, "flush", None)
    if callable(flush):  # sync-free fits keep raw losses on the device: read them (one copy) before saving
        flush()
    state = handler.state_dict
    payload["position"] = {"kind": kind, "epoch": state["epoch"], "num_batch": state["num_batch"],
                           "iteration": state["iteration"]}
    payload["callbacks"] = [{"class": _qualname(type(cb)), **capture_callback(cb, clone)}
                            for cb in _checked_callbacks(handler)]
    payload["metrics"] = [{"class": _metric_name(m), **capture_callback(m, clone)} for m in handler.metrics]
    payload["handler"] = _capture_handler(handler, clone)
    if kind == "batch":
        payload["epoch_rng"] = epoch_rng
    return payload


# ============================================================================================= files
def checkpoint_path(learn: Any, name: Any) -> Path:
    """Where checkpoint `name` lives: ``learn.path/learn.model_dir/{name}.pth``; a path ending in ``.pth`` (or an
    absolute one) is used as it is."""
    p = Path(name)
    if p.suffix == ".pth" or p.is_absolute():
        return p
    return Path(learn.path) / learn.model_dir / f"{name}.pth"


def _serialise(payload: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)  # temp file + fsync + os.replace: a crash leaves the previous file intact


def read_checkpoint(learn: Any, name: Any) -> dict[str, Any]:
    "Load a checkpoint file (under ``weights_only=True``, on the CPU) and check that it is one."
    if isinstance(name, dict):
        payload = name
    else:
        path = checkpoint_path(learn, name)
        if not path.exists():
            raise FileNotFoundError(f"No checkpoint at {path}.")
        payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{name} is not a fastloop checkpoint (written by Learner.save? use learn.load).")
    if payload.get("version", 0) > VERSION:
        raise CheckpointError(f"{name} was written by a newer fastloop (checkpoint version {payload['version']}, "
                              f"this one reads up to {VERSION}).")
    return payload


def _check_model(learn: Any, payload: dict[str, Any], name: Any) -> None:
    "Refuse a checkpoint written by a model of a different shape, naming the parameters that differ."
    from .torch_core import get_model

    cur, saved = get_model(learn.model).state_dict(), payload["model"]
    missing = [k for k in cur if k not in saved]
    unexpected = [k for k in saved if k not in cur]
    shapes = [f"{k}: {tuple(saved[k].shape)} in the checkpoint, {tuple(cur[k].shape)} in the model"
              for k in cur if k in saved and tuple(saved[k].shape) != tuple(cur[k].shape)]
    parts = []
    if missing:
        parts.append(f"missing from the checkpoint: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        parts.append(f"not in the model: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
    if shapes:
        parts.append("shapes differ: " + "; ".join(shapes[:8]))
    if parts:
        raise CheckpointMismatchError(f"Checkpoint {name} was written by a different model ({' | '.join(parts)}).")


def _check_list(what: str, saved: list[str], now: list[str], name: Any) -> None:
    if saved == now:
        return
    missing = list((Counter(saved) - Counter(now)).elements())
    extra = list((Counter(now) - Counter(saved)).elements())
    detail = []
    if missing:
        detail.append(f"missing now: {', '.join(missing)}")
    if extra:
        detail.append(f"not in the checkpoint: {', '.join(extra)}")
    if not detail:
        detail.append("the same classes in another order")
    raise CheckpointMismatchError(f"Checkpoint {name} was written with the {what} [{', '.join(saved)}]; this fit has "
                                  f"[{', '.join(now)}] ({'; '.join(detail)}).")


def save_checkpoint(learn: Any, name: Any, on_written: Callable[[], None] | None = None) -> Path:
    """``learn.save_checkpoint(name)``: during a fit, a request written at the next safe point; between fits, now."""
    from .torch_core import rank_distrib

    path = checkpoint_path(learn, name)
    run = current_run(learn)
    if run is not None:
        run.request(path, on_written)
        return path
    if not rank_distrib():
        _write(path, _serialise(build_payload(learn)))
    if on_written is not None:
        on_written()
    return path


def load_checkpoint(learn: Any, name: Any) -> Any:
    """``learn.load_checkpoint(name)``: model, optimizer (state and hyper-parameters), RNG states and, for a
    between-fits checkpoint, ``learn.callbacks``' states.  The position inside a fit is only used by
    ``fit(..., resume_from=name)``."""
    payload = read_checkpoint(learn, name)
    _check_model(learn, payload, name)
    _load_model(learn, payload)
    if learn.opt is None and payload["opt"] is not None:
        from .core import defaults

        learn.create_opt(defaults.lr, learn.wd)
    _restore_opt(learn.opt, payload["opt"], hypers=True)
    if payload["position"]["kind"] == "between_fits":
        _restore_learn_callbacks(learn, payload, name)
    restore_rng(payload["rng"], _loader_generators(learn))
    return learn


def _load_model(learn: Any, payload: dict[str, Any]) -> None:
    from .torch_core import get_model

    get_model(learn.model).load_state_dict(payload["model"])


def _restore_learn_callbacks(learn: Any, payload: dict[str, Any], name: Any) -> None:
    _check_list("learn.callbacks", [c["class"] for c in payload["callbacks"]],
                [_qualname(type(cb)) for cb in learn.callbacks], name)
    for cb, saved in zip(learn.callbacks, payload["callbacks"]):
        restore_callback(cb, saved)


# ============================================================================================ during fit
def current_run(learn: Any) -> FitRun | None:
    "The `FitRun` of the fit running on `learn`, or None between fits."
    return getattr(learn, "__dict__", {}).get("_fit_run")


class FitRun:
    """Checkpointing for one `fit`: the safe points, Ctrl-C, and resuming.  Used as a context manager by `fit`.

    * At each safe point the handler calls `safe_point`: pending `save_checkpoint` requests are written there,
      and a Ctrl-C received since (with `save_on_interrupt`) becomes a KeyboardInterrupt there.
    * With `save_on_interrupt`, SIGINT is handled while fitting (main thread only): the first Ctrl-C stops the
      fit at the next safe point -- the end of the running training batch, or of the epoch during validation --
      so that the checkpoint is exact; a second Ctrl-C interrupts at once.  The interrupt runs
      ``on_train_end(exception=False)`` (v1), *then* the checkpoint is written, then the KeyboardInterrupt
      propagates.  A KeyboardInterrupt that does not come from that handler (raised by code, or the second
      Ctrl-C) lands mid-batch, where no exact checkpoint exists: a warning says so and nothing is written.
    * With `resume_from`, the checkpoint is read and checked before anything runs; see `resume_after_train_begin`.
    """

    def __init__(self, learn: Any, handler: Any, resume_from: Any = None, save_on_interrupt: Any = None):
        self.learn, self.handler = learn, handler
        self.pending: list[tuple[Path, Callable[[], None] | None]] = []
        self.epoch_rng: dict[str, Any] | None = None
        self.interrupt_path: Path | None = None
        self.interrupt_requested = False
        self.captured: bytes | None = None
        self._prev_sigint: Any = None
        self._sigint_installed = False
        self.resume: dict[str, Any] | None = None
        self._resume_name = resume_from
        self._resume_pending_epoch = False
        self._first_epoch = True
        if resume_from is not None:
            self._prepare_resume(resume_from)
        if save_on_interrupt:
            self.save_on_interrupt("interrupt" if save_on_interrupt is True else save_on_interrupt)

    # -- context manager: attach to the learner and the handler for the fit
    def __enter__(self) -> FitRun:
        self._outer = current_run(self.learn)
        self.learn.__dict__["_fit_run"] = self
        self.handler._safe_point = self.safe_point
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.detach()
        self._uninstall_sigint()
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt) and self.interrupt_path is not None:
            if self.captured is not None:
                _write(self.interrupt_path, self.captured)
            else:
                warnings.warn(f"The fit was interrupted in the middle of a batch, where no exact checkpoint exists: "
                              f"{self.interrupt_path} was not written. (Ctrl-C is deferred to the end of the batch "
                              f"when save_on_interrupt is set; a KeyboardInterrupt raised by code is not.)",
                              UserWarning, stacklevel=2)

    def detach(self) -> None:
        """The fit is ending (``on_train_end`` is next): from now on ``save_checkpoint`` writes at once (a
        between-fits checkpoint).  Requests no safe point could honour are dropped with a warning."""
        if self.learn.__dict__.get("_fit_run") is self:
            if self._outer is None:
                self.learn.__dict__.pop("_fit_run", None)
            else:
                self.learn.__dict__["_fit_run"] = self._outer
        self.handler._safe_point = None
        if self.pending:
            names = ", ".join(str(p) for p, _ in self.pending)
            self.pending = []
            warnings.warn(f"Checkpoint(s) {names} requested during the fit were not written: the fit stopped before "
                          f"the next safe point (the end of a training batch or of an epoch).", UserWarning,
                          stacklevel=2)

    # -- requests and safe points
    def request(self, path: Path, on_written: Callable[[], None] | None = None) -> None:
        "Write a checkpoint to `path` at the next safe point."
        self.pending.append((path, on_written))

    def save_on_interrupt(self, name: Any) -> Path:
        "Write checkpoint `name` if the fit is interrupted (Ctrl-C), at the safe point the interrupt waits for."
        self.interrupt_path = checkpoint_path(self.learn, name)
        self._install_sigint()
        return self.interrupt_path

    def safe_point(self, kind: str) -> None:
        "Called by the handler after a training batch (`kind` 'batch') or an epoch ('epoch') is complete."
        if not self.pending and not self.interrupt_requested:
            return
        from .torch_core import rank_distrib

        data = None
        if self.pending:
            pending, self.pending = self.pending, []
            data = _serialise(build_payload(self.learn, self.handler, kind, self.epoch_rng))
            for path, on_written in pending:
                if not rank_distrib():
                    _write(path, data)
                if on_written is not None:
                    on_written()
        if self.interrupt_requested and self.interrupt_path is not None:
            # serialised now (a copy): on_train_end may change the model (SaveModelCallback reloads the best one)
            self.captured = data if data is not None else _serialise(
                build_payload(self.learn, self.handler, kind, self.epoch_rng, clone=True))
            if rank_distrib():
                self.captured = None
            where = "the batch" if kind == "batch" else "the epoch"
            raise KeyboardInterrupt(f"fastloop: interrupted at the end of {where}; writing checkpoint "
                                    f"{self.interrupt_path}")

    # -- Ctrl-C
    def _install_sigint(self) -> None:
        if self._sigint_installed or threading.current_thread() is not threading.main_thread():
            return
        try:
            self._prev_sigint = signal.signal(signal.SIGINT, self._on_sigint)
        except (ValueError, OSError):  # not in the main interpreter thread / no signals here
            return
        self._sigint_installed = True

    def _uninstall_sigint(self) -> None:
        if self._sigint_installed:
            prev = self._prev_sigint if self._prev_sigint is not None else signal.default_int_handler
            signal.signal(signal.SIGINT, prev)
            self._sigint_installed = False

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.interrupt_requested:  # the second Ctrl-C: stop now, as without save_on_interrupt
            self._uninstall_sigint()
            raise KeyboardInterrupt
        self.interrupt_requested = True
        sys.stderr.write(f"\nfastloop: interrupt received; stopping at the end of this batch to write "
                         f"{self.interrupt_path} (press Ctrl-C again to stop at once)\n")

    # -- the loop's hooks
    def epoch_loader(self, dl: Any) -> Any:
        "Note the RNG states the epoch's shuffle will be drawn from (a mid-epoch checkpoint needs them); return `dl`."
        self.epoch_rng = capture_rng(_loader_generators(self.learn))
        return dl

    # -- resuming
    def _prepare_resume(self, name: Any) -> None:
        """Read and check the checkpoint; load the model weights (before on_train_begin, so callbacks that copy
        the weights there -- master copies for mixed precision -- copy the resumed ones)."""
        payload = read_checkpoint(self.learn, name)
        _check_model(self.learn, payload, name)
        kind = payload["position"]["kind"]
        if kind != "between_fits":
            _check_list("callbacks", [c["class"] for c in payload["callbacks"]],
                        [_qualname(type(cb)) for cb in _checked_callbacks(self.handler)], name)
            _check_list("metrics", [m["class"] for m in payload["metrics"]],
                        [_metric_name(m) for m in self.handler.metrics], name)
        _load_model(self.learn, payload)
        if kind == "between_fits":  # a plain continuation: weights, optimizer, RNG and learn.callbacks, then fit
            if self.learn.opt is not None:
                _restore_opt(self.learn.opt, payload["opt"], hypers=False)
            _restore_learn_callbacks(self.learn, payload, name)
            restore_rng(payload["rng"], _loader_generators(self.learn))
            return
        self.resume = payload

    def resume_after_train_begin(self, pbar: Any) -> None:
        """Resuming: after ``on_train_begin`` rebuilt the callbacks, put back their states, the optimizer, the
        handler's counters and flags, and (at an epoch start) the RNGs; callbacks get ``jump_to_epoch`` first
        when the checkpoint is an epoch boundary (v1's contract).  Nothing happens on a plain fit."""
        payload = self.resume
        if payload is None:
            return
        handler, state = self.handler, self.handler.state_dict
        if state["epoch"] != 0:
            warnings.warn(f"A callback returned {{'epoch': {state['epoch']}}} from on_train_begin; resume_from wins.",
                          UserWarning, stacklevel=2)
        pos = payload["position"]
        epoch = pos["epoch"]
        if pos["kind"] == "epoch" and epoch:
            for cb in handler.callbacks:
                cb.jump_to_epoch(epoch)
        for cb, saved in zip(_checked_callbacks(handler), payload["callbacks"]):
            restore_callback(cb, saved)
        for m, saved in zip(handler.metrics, payload["metrics"]):
            restore_callback(m, saved)
        _load_model(self.learn, payload)  # again: a jump_to_epoch may have loaded a model file
        _restore_opt(self.learn.opt, payload["opt"], hypers=True)
        n_epochs = state.get("n_epochs")
        _restore_handler(handler, payload["handler"])
        if n_epochs is not None and n_epochs != state.get("n_epochs"):
            warnings.warn(f"Resuming a fit of {state.get('n_epochs')} epochs as a fit of {n_epochs} epochs: callbacks "
                          f"that planned for {state.get('n_epochs')} (one-cycle...) keep their plan.", UserWarning,
                          stacklevel=2)
            state["n_epochs"] = n_epochs
        if pbar is not None and epoch:
            pbar.main_bar.total -= epoch
        if pos["kind"] == "epoch":
            restore_rng(payload["rng"], _loader_generators(self.learn))
        else:
            self._resume_pending_epoch = True

    def stop_before_epoch(self) -> bool:
        "Resuming from a checkpoint written as the fit was ending (stop_training set, or every epoch done)."
        first, self._first_epoch = self._first_epoch, False
        if not first or self.resume is None:
            return False
        state = self.handler.state_dict
        if self.resume["position"]["kind"] == "epoch":
            return bool(state.get("stop_training")) or state["epoch"] >= state["n_epochs"]
        return state["epoch"] >= state["n_epochs"]

    def resumed_epoch(self) -> Any:
        """Resuming inside an epoch: the loader of its remaining batches (same shuffle, the done batches skipped
        without being loaded), or None when the epoch starts normally."""
        if not self._resume_pending_epoch:
            return None
        self._resume_pending_epoch = False
        payload = self.resume
        gens = _loader_generators(self.learn)
        if self.handler.state_dict.get("stop_epoch"):  # the checkpointed batch ended the epoch's training
            restore_rng(payload["rng"], gens)
            return []
        self.epoch_rng = payload["epoch_rng"]
        restore_rng(payload["epoch_rng"], gens)  # the loader re-draws this epoch's shuffle from here...
        dl = self.learn.data.train_dl
        n_done = payload["position"]["num_batch"]

        def at_position() -> None:  # ...and once the done batches are skipped, the RNGs are as checkpointed
            restore_rng(payload["rng"], gens)

        if hasattr(dl, "skip_batches"):
            return dl.skip_batches(n_done, at_position)
        return _skip_by_loading(dl, n_done, at_position)


def _skip_by_loading(dl: Any, n: int, then: Callable[[], None]) -> Iterable[Any]:
    "A loader fastloop cannot skip at the index level: load and drop the done batches (warned)."
    warnings.warn(f"Resuming: the training loader is not a torch DataLoader, so its first {n} batches are loaded and "
                  f"dropped to reach the checkpointed position.", UserWarning, stacklevel=3)

    def gen() -> Any:
        it = iter(dl)
        for _ in range(n):
            next(it, None)
        then()
        yield from it

    return gen()

