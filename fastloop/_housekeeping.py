"""What fastai v1 users call on a `Learner` between experiments: `purge`, `destroy`, `export`/`load_learner`,
`show_results` (spec §10.5).  The `Learner` methods of the same names call these.

**export files.**  ``learn.export()`` writes one ``torch.save`` file (``path/export.pkl`` by default) holding

* ``model_state``: the model's state dict, on the CPU;
* ``tensors``: every other tensor the exported objects hold (a loss's class weights...), on the CPU;
* ``learner_class``, ``objects`` and ``callbacks``: pickles (bytes) of the Python objects -- the class of the
  learner; the model's modules without their tensors, the loss function, the metrics, ``opt_func``,
  ``callback_fns``, the settings (``wd``, ``true_wd``, ``bn_wd``, ``train_bn``, ``model_dir``,
  ``layer_groups``...), the data settings without the datasets (batch sizes, ``dl_tfms``, ``collate_fn``,
  ``c``, ``classes``); and each of ``learn.callbacks`` as (class, ``get_state()``).

The file itself loads with ``torch.load(path)`` under torch's safe ``weights_only=True`` default, so the
weights can be read without trusting it: ``model.load_state_dict(torch.load('export.pkl')['model_state'])``.
`load_learner` must also unpickle the ``objects`` and ``callbacks`` bytes to rebuild the classes and functions
they name -- plain ``pickle``, which runs code: load only export files you trust (fastai v1's
``load_learner`` did the same through ``torch.load``).  fastai v1's own ``export.pkl`` files hold fastai's
data-block objects and cannot be read here.

Differences from fastai 1.0.61, all additive:

* `load_learner` keeps the layer groups (v1 rebuilt a single group), ``add_time`` and ``silent``, and two
  callbacks of the same class (v1 kept the state of one, since it stored them by class).
* A callback's reference to the learner, or to its data, is restored as a reference to the new learner (or
  its data) instead of a pickled copy of the old one.
* `purge` round-trips through memory instead of a temporary file in ``path/model_dir``, so it needs no
  writable folder; on today's torch v1's ``purge`` failed at its ``torch.load`` (``weights_only``) after it had
  already deleted the learner's attributes.
* `destroy` also empties torch's CUDA cache.
"""

from __future__ import annotations

import gc
import inspect
import io
import pickle
import weakref
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ._dispatch import note
from .basic_data import DataBunch, DatasetType
from .core import defaults, ifnone, split_kwargs_by_func
from .torch_core import get_model, is_pathlike, rank_distrib

__all__ = ["load_learner", "load_callback", "DESTROYED_MESSAGE", "EXPORT_FORMAT"]

#: What every attribute read and method call of a destroyed learner prints (fastai v1's words).
DESTROYED_MESSAGE = "this object has been destroyed"
#: Version of the export file layout (the ``fastloop_export`` entry).
EXPORT_FORMAT = 1

#: The learner settings that export, load_learner and purge carry over (the constructor's, minus data and model).
_SETTINGS = ("opt_func", "loss_func", "metrics", "true_wd", "bn_wd", "wd", "train_bn", "model_dir", "callback_fns",
             "add_time", "silent")


# ============================================================================================== pickling
class _Pickler(pickle.Pickler):
    """Pickles Python objects but keeps every tensor out of the byte stream.

    Tensors are replaced by references: the model's parameters and buffers by their state-dict key, any other
    tensor by its index in `tensors`; the learner and its data by a placeholder (see `_Unpickler`).
    """

    def __init__(self, file: Any, learn: Any, model: nn.Module | None, keep_tensors: bool):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.learn, self.keep_tensors = learn, keep_tensors
        self.by_id: dict[int, str] = {}
        self.model_state: dict[str, torch.Tensor] = {}
        if model is not None:
            for key, t in model.state_dict(keep_vars=True).items():
                self.by_id.setdefault(id(t), key)
                self.model_state[key] = t
        self.tensors: list[torch.Tensor] = []
        self._tensor_ids: dict[int, int] = {}

    def persistent_id(self, obj: Any) -> Any:
        if obj is self.learn:
            return ("learner",)
        if isinstance(obj, weakref.ref) and self.learn is not None and obj() is self.learn:
            return ("learner_ref",)  # a LearnerCallback's weak reference (as a metric, or held by a callback)
        if self.learn is not None and obj is self.learn.__dict__.get("data"):
            return ("data",)
        if self.keep_tensors or not isinstance(obj, torch.Tensor):
            return None
        is_param = isinstance(obj, nn.Parameter)
        requires_grad = bool(obj.requires_grad) if is_param else False
        where = "cpu" if obj.device.type == "cpu" else "device"
        if id(obj) in self.by_id:
            return ("model", self.by_id[id(obj)], is_param, requires_grad)
        if id(obj) not in self._tensor_ids:
            self._tensor_ids[id(obj)] = len(self.tensors)
            self.tensors.append(obj)
        return ("tensor", self._tensor_ids[id(obj)], is_param, requires_grad, where)


class _Unpickler(pickle.Unpickler):
    """Undoes `_Pickler`: references become the tensors of `model_state`/`tensors`, the learner and its data."""

    def __init__(self, file: Any, learn: Any = None, data: Any = None, model_state: dict | None = None,
                 tensors: list | None = None, device: Any = None):
        super().__init__(file)
        self.learn, self.data, self.device = learn, data, device
        self.model_state, self.tensors = model_state or {}, tensors or []
        self.cache: dict[tuple, Any] = {}

    def persistent_load(self, pid: Any) -> Any:
        if pid[0] == "learner":
            return self.learn
        if pid[0] == "learner_ref":
            return weakref.ref(self.learn)
        if pid[0] == "data":
            return self.data if self.data is not None else self.learn.data
        key = tuple(pid[:2])
        if key not in self.cache:  # one object per reference, so tied weights stay tied
            if pid[0] == "model":
                _, name, is_param, requires_grad = pid
                t = self.model_state[name]
            else:
                _, idx, is_param, requires_grad, where = pid
                t = self.tensors[idx]
                if where != "cpu" and self.device is not None:
                    t = t.to(self.device)
            self.cache[key] = nn.Parameter(t, requires_grad=requires_grad) if is_param else t
        return self.cache[key]


def _dumps(obj: Any, learn: Any = None, model: nn.Module | None = None,
           keep_tensors: bool = False) -> tuple[bytes, _Pickler]:
    buf = io.BytesIO()
    pickler = _Pickler(buf, learn, model, keep_tensors)
    try:
        pickler.dump(obj)
    except (pickle.PicklingError, TypeError, AttributeError) as e:
        note(e, "fastloop: exporting or purging a Learner pickles its model, loss function, metrics, callback_fns "
                "and callbacks; a lambda or a local function or class among them cannot be pickled -- define it "
                "at the top level of a module.")
        raise
    return buf.getvalue(), pickler


def _loads(blob: bytes, **kwargs: Any) -> Any:
    return _Unpickler(io.BytesIO(blob), **kwargs).load()


# ============================================================================================== callbacks
def load_callback(class_func: type, state: dict, learn: Any) -> Any:
    """Re-create a callback of class `class_func` from its ``get_state()`` (fastai v1's ``load_callback``).

    State entries named like parameters of its ``__init__`` become arguments; the others are set as attributes
    afterwards.  A `LearnerCallback` gets `learn` as its first argument (so it registers on the learner).
    """
    from .basic_train import LearnerCallback

    state = dict(state)
    init_kwargs, others = split_kwargs_by_func(state, class_func.__init__)
    init_kwargs.pop("self", None)
    if issubclass(class_func, LearnerCallback):
        init_kwargs.pop("learn", None)
        res = class_func(learn, **init_kwargs)
    else:
        res = class_func(**init_kwargs)
    for k, v in others.items():
        setattr(res, k, v)
    return res


def _register_metric_callbacks(learn: Any) -> None:
    """Metrics that are `LearnerCallback`s come back from a pickle without their ``learn.<name>`` attribute."""
    from .basic_train import LearnerCallback

    for m in learn.metrics:
        if isinstance(m, LearnerCallback):
            setattr(learn, m.cb_name, m)


def _callback_states(learn: Any) -> list[tuple[type, dict]]:
    return [(type(cb), cb.get_state()) for cb in learn.callbacks]


# ============================================================================================== purge
def purge(learn: Any, clear_opt: bool = True) -> Any:
    """Free what the learner holds besides its settings, model, data and recorder; return the learner.

    Every attribute but ``data`` and ``recorder`` is deleted; the settings, ``model`` and ``layer_groups`` come
    back as fresh copies (so ``learn.model`` is a new object, as in v1), ``learn.callbacks`` are rebuilt from
    their ``get_state()``, and the optimizer is rebuilt from its state with ``clear_opt=False`` (else
    ``learn.opt`` is None and the next fit creates one).  Attributes set by callbacks (``learn.csv_logger``...)
    and by you are gone, as in v1.
    """
    from .callback import OptimWrapper

    keep = {"data", "recorder"}
    carry = _carried_attributes(learn)
    state = {a: learn.__dict__[a] for a in carry}
    state["cb_state"] = _callback_states(learn)
    if learn.__dict__.get("opt") is not None:
        state["opt"] = learn.opt.get_state()
    # everything in one pickle, so layer_groups and the optimizer still point into the same model; tensors are
    # pickled with the objects (this memory copy is read back below, in this process)
    blob, _ = _dumps(state, learn=learn, keep_tensors=True)
    del state
    for a in [k for k in learn.__dict__ if k not in keep and not (k.startswith("__") and k.endswith("__"))]:
        delattr(learn, a)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    state = _loads(blob, learn=learn)
    del blob
    for a in carry:
        setattr(learn, a, state[a])
    learn.opt = None
    _register_metric_callbacks(learn)
    learn.callbacks = [load_callback(c, s, learn) for c, s in state.pop("cb_state")]
    if not clear_opt and "opt" in state:
        try:
            learn.opt = OptimWrapper.load_with_state_and_layer_group(state["opt"], learn.layer_groups)
        except Exception:  # as v1: warn and go on without an optimizer
            import warnings

            warnings.warn("Wasn't able to properly load the optimizer state again.", stacklevel=3)
    return learn


def _carried_attributes(learn: Any) -> list[str]:
    """The attributes purge keeps: the constructor's parameters found on the learner, plus model and layer_groups
    (fastai v1's list was the same for v1's Learner; a subclass's own constructor arguments are kept too)."""
    try:
        params = list(inspect.signature(type(learn).__init__).parameters)[1:]
    except (TypeError, ValueError):
        params = []
    names = [*_SETTINGS, "model", "layer_groups", "path", *params]
    out = []
    for a in names:
        if a in learn.__dict__ and a not in ("data", "recorder", "callbacks", "opt") and a not in out:
            out.append(a)
    return out


# ============================================================================================== destroy
_ZOMBIES: dict[type, type] = {}


def _zombie_class(cls: type) -> type:
    """A subclass of `cls` whose missing attributes print `DESTROYED_MESSAGE` and read as None."""
    if cls not in _ZOMBIES:
        def __getattr__(self: Any, item: str) -> None:  # noqa: N807
            if item.startswith("__") and item.endswith("__"):
                raise AttributeError(item)
            print(DESTROYED_MESSAGE)
            return None

        def __repr__(self: Any) -> str:  # noqa: N807
            return f"<destroyed {cls.__name__}>"

        _ZOMBIES[cls] = type(f"Destroyed{cls.__name__}", (cls,), {"__getattr__": __getattr__, "__repr__": __repr__,
                                                                    "__module__": cls.__module__})
    return _ZOMBIES[cls]


def _destroyed(*args: Any, **kwargs: Any) -> None:
    print(DESTROYED_MESSAGE)


def destroy(learn: Any) -> None:
    """Free everything the learner holds and leave a shell: its attributes read as None and its methods do
    nothing, each printing ``this object has been destroyed``.  ``isinstance(learn, Learner)`` stays True."""
    cls = type(learn)
    # the methods, looked up on the class (a property would be evaluated by getattr on the instance)
    methods = set()
    for klass in cls.__mro__:
        for name, value in vars(klass).items():
            if name.startswith("__") and name.endswith("__"):
                continue
            if inspect.isroutine(value) or isinstance(value, (staticmethod, classmethod)):
                methods.add(name)
    for a in [k for k in learn.__dict__ if not (k.startswith("__") and k.endswith("__"))]:
        delattr(learn, a)
    for name in methods:
        object.__setattr__(learn, name, _destroyed)
    learn.__class__ = _zombie_class(cls)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    print("this Learner object self-destroyed - it still exists, but no longer usable")


# ============================================================================================== export
class _EmptyDataset(Dataset):
    """A dataset with no items that keeps what an exported learner knew about its data (``c``, ``classes``)."""

    def __init__(self, c: Any = None, classes: Any = None):
        self.items: list = []
        self.c, self.classes = c, classes

    def __len__(self) -> int:
        return 0

    def __getitem__(self, i: int) -> Any:
        raise IndexError("this dataset is empty: the learner was made by load_learner (pass test= to predict)")


def _data_settings(data: DataBunch) -> dict:
    train_ds = data.train_ds
    valid_dl = data.valid_dl
    return {
        "cls": type(data) if type(data).__init__ is DataBunch.__init__ else DataBunch,
        "bs": data.train_dl.batch_size,
        "val_bs": valid_dl.batch_size if valid_dl is not None else data.train_dl.batch_size,
        "dl_tfms": list(data.dl_tfms),
        "collate_fn": data.collate_fn,
        "c": getattr(data, "c", None),
        "classes": getattr(train_ds, "classes", None),
    }


def export(learn: Any, file: Any = "export.pkl", destroy_after: bool = False) -> None:
    """Write what is needed to rebuild `learn` for inference into ``learn.path/file`` (or the file object
    `file`); see the module docstring for what the file holds.  Nothing is written on a distributed rank
    other than 0.  With `destroy_after`, the learner is then destroyed."""
    if rank_distrib():
        return
    model = get_model(learn.model)
    settings = {a: learn.__dict__[a] for a in _SETTINGS if a in learn.__dict__}
    settings["layer_groups"] = learn.layer_groups
    objects = {"model": model, "settings": settings, "data": _data_settings(learn.data)}
    objects_blob, pickler = _dumps(objects, learn=learn, model=model)
    # the callbacks' states are a second pickle, read once the new learner exists (they may refer to it)
    callbacks_blob, cb_pickler = _dumps(_callback_states(learn), learn=learn, model=model)
    state = {
        "fastloop_export": EXPORT_FORMAT,
        "learner_class": pickle.dumps(type(learn)),  # read first: the new learner exists before the objects
        "model_state": {k: t.detach().cpu() for k, t in pickler.model_state.items()},
        "tensors": [t.detach().cpu() for t in pickler.tensors],
        "callback_tensors": [t.detach().cpu() for t in cb_pickler.tensors],
        "objects": objects_blob,
        "callbacks": callbacks_blob,
    }
    from ._io import atomic_save

    target = Path(learn.path) / file if is_pathlike(file) else file
    if is_pathlike(file):
        target.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(state, target)
    if destroy_after:
        destroy(learn)


def load_learner(path: Any, file: Any = "export.pkl", test: Dataset | None = None, tfm_y: Any = None,
                 **db_kwargs: Any) -> Any:
    """Rebuild a learner written by ``Learner.export`` from ``path/file`` (or the file object `file`).

    Its data has empty training and validation sets (so ``learn.data.is_empty`` and training is impossible)
    keeping the exported batch sizes, ``dl_tfms``, ``collate_fn``, ``c`` and ``classes``; `test` (a dataset)
    becomes ``learn.data.test_dl`` for ``learn.get_preds(DatasetType.Test)``.  `db_kwargs` may set ``bs``,
    ``val_bs``, ``num_workers`` and ``device`` (default ``defaults.device``).  `tfm_y` is accepted for fastai
    v1 compatibility and ignored (fastloop has no ItemList transforms).

    This unpickles the classes and functions the file names: load only files you trust.
    """
    del tfm_y
    source = Path(path) / file if is_pathlike(file) else file
    state = torch.load(source, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "fastloop_export" not in state:
        raise ValueError(f"{source} is not a file written by fastloop's Learner.export (fastai v1's export.pkl "
                         "files hold fastai data-block objects, which fastloop cannot rebuild).")
    device = torch.device(ifnone(db_kwargs.pop("device", None), defaults.device))
    # the learner object exists (uninitialised) before the unpickling, so that the objects that refer to it
    # (a LearnerCallback used as a metric...) get the new learner; its __init__ runs once they are all back
    cls = pickle.loads(state["learner_class"])
    res = object.__new__(cls)
    objects = _loads(state["objects"], learn=res, model_state=state["model_state"], tensors=state["tensors"],
                     device=device)
    data = _empty_databunch(objects["data"], path, device, test, **db_kwargs)
    settings = dict(objects["settings"])
    try:
        accepted = set(inspect.signature(cls.__init__).parameters)
    except (TypeError, ValueError):
        accepted = set(settings)
    init_settings = {k: v for k, v in settings.items() if k in accepted}
    cls.__init__(res, data, objects["model"], **init_settings)
    res.callback_fns = settings["callback_fns"]  # the Learner prepended a second Recorder: keep the exported list
    _register_metric_callbacks(res)
    cb_state = _loads(state["callbacks"], learn=res, data=data, model_state=state["model_state"],
                      tensors=state["callback_tensors"], device=device)
    res.callbacks = [load_callback(c, s, res) for c, s in cb_state]
    return res


def _empty_databunch(settings: dict, path: Any, device: torch.device, test: Dataset | None,
                     **db_kwargs: Any) -> DataBunch:
    bs = db_kwargs.pop("bs", settings["bs"])
    val_bs = db_kwargs.pop("val_bs", settings["val_bs"])
    num_workers = db_kwargs.pop("num_workers", 0)
    if db_kwargs:
        raise TypeError(f"load_learner got unexpected keyword arguments: {sorted(db_kwargs)}")

    def empty(b: int) -> DataLoader:
        return DataLoader(_EmptyDataset(settings["c"], settings["classes"]), batch_size=b, num_workers=0)

    test_dl = DataLoader(test, batch_size=val_bs, num_workers=num_workers) if test is not None else None
    return settings["cls"](empty(bs), empty(val_bs), test_dl=test_dl, device=device, dl_tfms=settings["dl_tfms"],
                           path=path, collate_fn=settings["collate_fn"], no_check=True)


# ============================================================================================== show_results
def show_results(learn: Any, ds_type: DatasetType = DatasetType.Valid, rows: int = 5, **kwargs: Any) -> None:
    """Print the targets and predictions of the first `rows` items of the `ds_type` set.

    fastai v1 drew inputs, targets and predictions with the dataset's ItemList; fastloop's datasets are plain
    tensors, so it prints a table instead (classification outputs shown as the predicted class, the others
    as values; large tensors by their shape).  `kwargs` (v1's display options) are ignored.
    """
    from .basic_train import RecordOnCPU, _identity, _loss_func2activ

    del kwargs
    dl = learn.dl(ds_type)
    n_items = min(rows, dl.batch_size or rows)
    recorder = RecordOnCPU()
    learn.callbacks.append(recorder)
    try:
        preds = learn.pred_batch(ds_type)
    finally:
        learn.callbacks.remove(recorder)
    target = recorder.target
    activ = _loss_func2activ(learn.loss_func)
    classify = activ is not _identity and activ is not torch.sigmoid and preds.dim() >= 2
    n_items = min(n_items, len(preds))
    rows_out = []
    for i in range(n_items):
        t = target[i] if not isinstance(target, list) else [o[i] for o in target]
        p = preds[i].argmax(dim=-1) if classify else preds[i]
        rows_out.append((_short(t), _short(p)))
    width = max([len("target")] + [len(r[0]) for r in rows_out])
    print(f"{'target':<{width}}  prediction")
    for t, p in rows_out:
        print(f"{t:<{width}}  {p}")


def _short(x: Any) -> str:
    """A short text for one item: a number, a short list, or the tensor's shape."""
    if isinstance(x, list):
        return "(" + ", ".join(_short(o) for o in x) + ")"
    if not isinstance(x, torch.Tensor):
        return str(x)
    x = x.detach().cpu()
    floating = x.is_floating_point()
    if x.numel() == 1:
        v = x.item()
        return f"{v:.4f}" if floating else str(v)
    if x.numel() <= 8:
        vals = x.flatten().tolist()
        return "[" + ", ".join(f"{v:.4f}" if floating else str(v) for v in vals) + "]"
    return f"tensor of shape {tuple(x.shape)}"
