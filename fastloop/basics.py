"""``from fastloop.basics import *``: what ``from fastai.basics import *`` gave a fastai v1 script (engine side).

It brings in

* the public names of `fastloop.core`, `fastloop.torch_core`, `fastloop.layers`, `fastloop.basic_data`,
  `fastloop.basic_train`, `fastloop.callback`, `fastloop.metrics` and `fastloop.train`, and the subpackage
  `callbacks` itself (``callbacks.CSVLogger``, ``callbacks.SaveModelCallback``...);
* the third-party names v1 code uses through it: ``np``, ``torch``, ``nn``, ``F``, ``optim``, ``Tensor``,
  ``TensorDataset``, ``DataLoader``, ``Dataset``, ``weight_norm``, ``spectral_norm``, ``master_bar``,
  ``progress_bar``, numpy's ``exp``/``log``/``sin``/``cos``/``tan``/``tanh``...;
* the standard-library modules and names it re-exported: ``os``, ``re``, ``math``, ``sys``, ``time``, ``json``,
  ``pickle``, ``random``, ``partial``, ``reduce``, ``Path``, ``dataclass``, ``field``, ``deepcopy``,
  ``defaultdict``, ``OrderedDict``, ``Counter``, ``namedtuple``, ``SimpleNamespace``, ``Enum``, ``IntEnum``,
  the ``typing`` names (``Any``, ``Callable``, ``Collection``, ``Optional``, ``List``...), ``set_trace``...;
* ``plt`` (with ``patches`` and ``patheffects``) and, when pandas is installed, ``pd``, **without importing
  matplotlib or pandas**: they are stand-ins that import the real module the first time one of their
  attributes is read (``plt.plot(...)``), then pass every attribute through.

Why stand-ins rather than a module ``__getattr__``: ``from m import *`` reads every name of ``m.__all__`` with
``getattr``, so a name listed in ``__all__`` and served by the module's ``__getattr__`` would be imported at
star-import time (no laziness), and a name left out of ``__all__`` would not be star-imported at all
(``plt.plot`` would be a NameError).  An object that is already in the module and imports on first use is
the only way to have both.  The stand-in is not the module object itself (``plt is matplotlib.pyplot`` is
False); ``import matplotlib.pyplot as plt`` in your script replaces it if that matters.

Classes cannot be stand-ins (``isinstance(x, DataFrame)`` needs the real class), so ``DataFrame``,
``Series`` and ``Patch`` are not star-imported; ``from fastloop.basics import DataFrame`` still works (the
module's ``__getattr__`` imports pandas then), as do ``pd.DataFrame`` and ``patches.Patch``.

Not brought in (fastai v1's data block API, downloads and optional tools): ``ItemList`` and the other data
block classes, ``URLs``, ``untar_data``, ``download_url``, ``requests``, ``yaml``, ``scipy``.

pandas is optional: without it there is no ``pd`` (fastai v1 required pandas; fastloop does not).
"""

# ruff: noqa: F401, F403, I001  (a re-export module: its names are listed in the computed __all__)
from __future__ import annotations

# -- standard library (what fastai.basics re-exported from fastai.imports)
import abc
import bz2
import collections
import concurrent
import csv
import functools
import gc
import gzip
import hashlib
import html
import importlib
import importlib.util
import inspect
import io
import itertools
import json
import math
import mimetypes
import numbers
import operator
import os
import pathlib
import pickle
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import types
import typing
import warnings
import weakref
from abc import abstractmethod, abstractproperty
from collections import Counter, OrderedDict, defaultdict, namedtuple
from collections.abc import Iterable, Sized
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from copy import copy, deepcopy
from dataclasses import InitVar, dataclass, field
from enum import Enum, IntEnum
from functools import partial, reduce
from io import BufferedWriter, BytesIO
from numbers import Number
from operator import attrgetter, itemgetter
from pathlib import Path
from pdb import set_trace
from types import SimpleNamespace
from typing import (  # noqa: UP035  (fastai v1 code annotates with these)
    Any,
    AnyStr,
    Callable,
    Collection,
    Dict,
    Hashable,
    Iterator,
    List,
    Mapping,
    NewType,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)
from warnings import warn

# -- third party
import numpy as np
import torch
import torch.nn.functional as F
from fastprogress.fastprogress import MasterBar, ProgressBar, master_bar, progress_bar
from numpy import cos, exp, log, sin, tan, tanh
from torch import (
    BoolTensor,
    ByteTensor,
    DoubleTensor,
    FloatTensor,
    HalfTensor,
    LongTensor,
    ShortTensor,
    Tensor,
    as_tensor,
    nn,
    optim,
)
from torch.nn.parallel import DistributedDataParallel
from torch.nn.utils import spectral_norm, weight_norm
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, TensorDataset

# -- fastloop (the order of fastai.basics: later modules win on a shared name)
from . import basic_data as _basic_data
from . import basic_train as _basic_train
from . import callback as _callback
from . import callbacks
from . import core as _core
from . import layers as _layers
from . import metrics as _metrics
from . import torch_core as _torch_core
from . import train as _train
from .basic_train import *
from .callback import *
from .core import *
from .basic_data import *
from .layers import *
from .metrics import *
from .metrics import flatten_check
from .torch_core import *
from .train import *

#: fastai v1's alias for a list of callbacks (``fastai.callback.CallbackList``).
CallbackList = Collection[_callback.Callback]


# ================================================================================= lazy matplotlib and pandas
class _LazyModule(types.ModuleType):
    """Stands for the module `target` and imports it the first time one of its attributes is read or set.

    ``plt.plot(...)`` imports matplotlib.pyplot then and calls the real ``plot``; every later access is
    passed through.  `dir()` and `repr()` show the real module once it is imported.
    """

    def __init__(self, target: str):
        super().__init__(target)
        object.__setattr__(self, "_lazy_target", target)
        object.__setattr__(self, "_lazy_module", None)

    def _load(self) -> types.ModuleType:
        module = object.__getattribute__(self, "_lazy_module")
        if module is None:
            module = importlib.import_module(object.__getattribute__(self, "_lazy_target"))
            object.__setattr__(self, "_lazy_module", module)
        return module

    def __getattr__(self, name: str) -> Any:
        # only reached for what this stand-in lacks: everything but the few attributes every module object has
        return getattr(self._load(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._load(), name, value)

    def __dir__(self) -> list[str]:
        return dir(self._load())

    def __repr__(self) -> str:
        module = object.__getattribute__(self, "_lazy_module")
        target = object.__getattribute__(self, "_lazy_target")
        return repr(module) if module is not None else f"<module {target!r} (imported on first use)>"


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


plt = _LazyModule("matplotlib.pyplot")
patches = _LazyModule("matplotlib.patches")
patheffects = _LazyModule("matplotlib.patheffects")
_lazy_names = ["plt", "patches", "patheffects"]
HAS_PANDAS = _installed("pandas")
if HAS_PANDAS:
    pd = _LazyModule("pandas")
    _lazy_names.append("pd")

#: Names served by `__getattr__` on explicit import only (classes cannot be stand-ins).
_LAZY_CLASSES = {"DataFrame": ("pandas", "DataFrame"), "Series": ("pandas", "Series"),
                 "Patch": ("matplotlib.patches", "Patch")}


def __getattr__(name: str) -> Any:
    """``from fastloop.basics import DataFrame`` (or ``Series``, ``Patch``): import the library then."""
    if name in _LAZY_CLASSES:
        module_name, attr = _LAZY_CLASSES[name]
        if module_name == "pandas" and not HAS_PANDAS:
            # not an AttributeError: `from fastloop.basics import DataFrame` would replace its message
            raise ModuleNotFoundError(f"fastloop.basics.{name} needs pandas, which is not installed "
                                      "(pip install pandas)", name="pandas")
        value = getattr(importlib.import_module(module_name), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ================================================================================================ __all__
_STDLIB = [
    "abc", "bz2", "collections", "concurrent", "csv", "functools", "gc", "gzip", "hashlib", "html", "importlib",
    "inspect", "io", "itertools", "json", "math", "mimetypes", "numbers", "operator", "os", "pathlib", "pickle",
    "random", "re", "shutil", "subprocess", "sys", "tarfile", "tempfile", "time", "typing", "warnings", "weakref",
    "abstractmethod", "abstractproperty", "Counter", "OrderedDict", "defaultdict", "namedtuple", "Iterable",
    "Sized", "ProcessPoolExecutor", "ThreadPoolExecutor", "contextmanager", "copy", "deepcopy", "InitVar",
    "dataclass", "field", "Enum", "IntEnum", "partial", "reduce", "BufferedWriter", "BytesIO", "Number",
    "attrgetter", "itemgetter", "Path", "set_trace", "SimpleNamespace", "warn",
    "Any", "AnyStr", "Callable", "Collection", "Dict", "Hashable", "Iterator", "List", "Mapping", "NewType",
    "Optional", "Sequence", "Tuple", "TypeVar", "Union",
]
_THIRD_PARTY = [
    "np", "torch", "nn", "F", "optim", "Tensor", "as_tensor", "BoolTensor", "ByteTensor", "DoubleTensor",
    "FloatTensor", "HalfTensor", "LongTensor", "ShortTensor", "DistributedDataParallel", "spectral_norm",
    "weight_norm", "BatchSampler", "DataLoader", "Dataset", "Sampler", "TensorDataset", "MasterBar",
    "ProgressBar", "master_bar", "progress_bar", "cos", "exp", "log", "sin", "tan", "tanh",
]
_FASTLOOP = [name for m in (_core, _torch_core, _layers, _basic_data, _basic_train, _callback, _metrics, _train)
             for name in m.__all__] + ["flatten_check", "callbacks", "CallbackList"]

__all__ = list(dict.fromkeys(_STDLIB + _THIRD_PARTY + _FASTLOOP + _lazy_names))
