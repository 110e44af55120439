"""Tiny helpers that fastai v1 callbacks import from ``fastai.core``.

Only what ported callbacks and the engine actually use lives here; this is not a grab-bag.
"""

from __future__ import annotations

import collections.abc as _abc
import contextlib
import functools
import inspect
import os
import re
import tempfile
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

__all__ = ["camel2snake", "ifnone", "listify", "is_listy", "is_tuple", "even_mults", "defaults", "num_cpus"]

_camel_re1 = re.compile("(.)([A-Z][a-z]+)")
_camel_re2 = re.compile("([a-z0-9])([A-Z])")


def camel2snake(name: str) -> str:
    """``'OneCycleScheduler'`` -> ``'one_cycle_scheduler'``; how a `LearnerCallback` names itself on the learner.

    Two passes, as in fastai v1: an underscore goes (1) before every capital that starts a lowercase run,
    then (2) between a lowercase letter or digit and a capital.  So ``LRFinder`` -> ``lr_finder`` and
    ``TerminateOnNaNCallback`` -> ``terminate_on_na_n_callback``.
    """
    first = _camel_re1.sub(r"\1_\2", name)
    return _camel_re2.sub(r"\1_\2", first).lower()


def ifnone(a: Any, b: Any) -> Any:
    """`a` if it is not None, else `b`."""
    return b if a is None else a


def is_listy(x: Any) -> bool:
    """True for a list or a tuple."""
    return isinstance(x, (tuple, list))


def is_tuple(x: Any) -> bool:
    """True for a tuple (fastai v1 treats only tuples as ``(start, end)`` ranges)."""
    return isinstance(x, tuple)


def listify(p: Any = None, q: Any = None) -> list:
    """Make `p` a list, as long as `q` (an int, or anything with a length).

    ``None`` -> ``[]``; a string or a non-iterable (or an iterable without ``len``, such as a 0-dim tensor)
    -> ``[p]``.  A one-element list is repeated to the wanted length; any other length mismatch is an
    ``AssertionError('List len mismatch ...')``, as in fastai v1.
    """
    if p is None:
        p = []
    elif isinstance(p, str) or not isinstance(p, Iterable):
        p = [p]
    else:
        try:
            len(p)
        except TypeError:
            p = [p]
    n = q if type(q) is int else (len(p) if q is None else len(q))
    if len(p) == 1:
        p = p * n if isinstance(p, list) else list(p) * n
    assert len(p) == n, f"List len mismatch ({len(p)} vs {n})"
    return list(p)


def even_mults(start: float, stop: float, n: int) -> Any:
    """`n` values from `start` to `stop`, evenly spaced on a log scale (``n == 1`` divides by zero, as in v1)."""
    import numpy as np

    mult = stop / start
    step = mult ** (1 / (n - 1))
    return np.array([start * (step**i) for i in range(n)])


def num_cpus() -> int:
    """Number of CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class _Defaults(SimpleNamespace):
    """fastai v1's ``defaults`` namespace; ``device`` is resolved on first read so importing stays cheap."""

    def __getattr__(self, name: str) -> Any:
        if name == "device":
            import torch

            value = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
            self.device = value
            return value
        raise AttributeError(f"defaults has no attribute {name!r}")


#: Global settings, as fastai v1's ``defaults``.  ``strict_callbacks`` is fastloop's: when True, a
#: misspelled hook name (``on_epoch_start``) is an error instead of a warning.
defaults = _Defaults(
    lr=slice(3e-3),
    wd=1e-2,
    extra_callbacks=None,
    extra_callback_fns=None,
    silent=False,
    cpus=min(16, num_cpus()),
    return_fig=False,
    strict_callbacks=False,
)


# =============================================================================== more of fastai v1's core
# The helpers below are the ones fastai v1 code (callbacks, layers, course notebooks) calls through
# ``from fastai.core import *`` / ``from fastai.basics import *``.  The type aliases are there so that
# signatures copied from v1 (``def __init__(self, learn: Learner, max_lr: Floats)``) still evaluate.

__all__ += [
    "noop", "float_or_x", "range_of", "arange_of", "array", "partition", "partition_by_cores", "is_dict", "is1d",
    "to_int", "one_hot", "chunks", "compose", "func_args", "has_arg", "split_kwargs_by_func", "extract_kwargs",
    "idx_dict", "recurse", "arrays_split", "random_split", "get_tmp_file", "working_directory", "join_path",
    "join_paths", "show_some", "subplots", "PrettyString", "PrePostInitMeta",
    # type aliases of fastai v1's core (the numpy ones, NPArray..., are in fastloop.torch_core)
    "AnnealFunc", "ArgStar", "BatchSamples", "FilePathList", "Floats", "ImgLabel", "ImgLabels", "IntsOrStrs",
    "KeyFunc", "KWArgs", "ListOrItem", "ListRules", "ListSizes", "OptListOrItem", "OptRange", "OptStrList",
    "OptStrTuple", "PathOrStr", "PathLikeOrBinaryStream", "PBar", "Point", "Points", "Sizes", "StartOptEnd",
    "StrList", "Tokens", "TfmList", "DataFrameOrChunks", "OptDataFrame",
    "recurse_eq", "loadtxt_str", "save_texts", "try_import",
]

# -- type aliases (plain typing objects: they only document signatures)
PathOrStr = Path | str
PathLikeOrBinaryStream = PathOrStr | Any  # a path, or a file object / BytesIO
StrList = Collection[str]
OptStrList = StrList | None
OptStrTuple = tuple | None
Floats = float | Collection[float]
IntsOrStrs = int | Collection[int] | str | Collection[str]
ListOrItem = Collection[Any] | int | float | str
OptListOrItem = ListOrItem | None
ListSizes = Collection[tuple]
ListRules = Collection[Callable]
FilePathList = Collection[Path]
ArgStar = Collection[Any]
KWArgs = dict
KeyFunc = Callable[[int], int]
AnnealFunc = Callable[[float, float, float], float]
BatchSamples = Collection[tuple]
ImgLabel = str
ImgLabels = Collection[ImgLabel]
Tokens = Collection[Collection[str]]
OptRange = tuple | None
StartOptEnd = float | tuple
Point = tuple
Points = Collection[Point]
Sizes = list
TfmList = Callable | Collection[Callable]
DataFrameOrChunks = Any  # v1: a pandas DataFrame or TextFileReader (pandas is optional here)
OptDataFrame = Any
PBar = Any  # a fastprogress master_bar or progress_bar


def noop(x: Any = None, *args: Any, **kwargs: Any) -> Any:
    """Return `x` unchanged (the do-nothing transform/callback of fastai v1)."""
    return x


def float_or_x(x: Any) -> Any:
    """``float(x)`` if `x` converts, else `x` itself (``'0.5'`` -> 0.5, ``'abc'`` -> ``'abc'``)."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return x


def range_of(x: Any) -> list[int]:
    """``[0, 1, ..., len(x) - 1]`` as a list."""
    return list(range(len(x)))


def arange_of(x: Any) -> Any:
    """``np.arange(len(x))``."""
    import numpy as np

    return np.arange(len(x))


def array(a: Any, dtype: Any = None, **kwargs: Any) -> Any:
    """``np.array(a, dtype=dtype, **kwargs)`` that also takes generators (they are listed first).

    As in fastai v1, a list of Python ints becomes int64 even where numpy's default int is 32 bits (Windows).
    """
    import numpy as np

    if not isinstance(a, _abc.Sized) and not getattr(a, "__array_interface__", False):
        a = list(a)
    if dtype is None and is_listy(a) and len(a) and isinstance(a[0], int) and np.dtype(np.int_) == np.int32:
        dtype = np.int64
    return np.array(a, dtype=dtype, **kwargs)


def partition(a: Any, sz: int) -> list:
    """`a` cut into consecutive slices of length `sz` (the last one may be shorter)."""
    return [a[i:i + sz] for i in range(0, len(a), sz)]


def partition_by_cores(a: Any, n_cpus: int) -> list:
    """`a` cut into (at most) `n_cpus` slices of ``len(a) // n_cpus + 1`` items, one per worker."""
    return partition(a, len(a) // n_cpus + 1)


def is_dict(x: Any) -> bool:
    """True for a dict (or any ``collections.abc.Mapping``)."""
    return isinstance(x, _abc.Mapping)


def is1d(a: Any) -> bool:
    """True if `a` (an array or a tensor) has one dimension."""
    return len(a.shape) == 1


def to_int(b: Any) -> Any:
    """``int(b)``, applied inside lists and tuples (which come back as lists)."""
    if is_listy(b):
        return [to_int(x) for x in b]
    return int(b)


def one_hot(x: Any, c: int) -> Any:
    """A float32 numpy vector of length `c` with ones at the index (or indexes) `x`."""
    import numpy as np

    res = np.zeros((c,), np.float32)
    res[listify(x)] = 1.0
    return res


def chunks(items: Any, n: int) -> Iterator:
    """Successive slices of `n` items of `items`."""
    for i in range(0, len(items), n):
        yield items[i:i + n]


def compose(funcs: Any) -> Callable:
    """A function applying each of `funcs` in turn: ``compose([f, g])(x, *a, **kw) == g(f(x, *a, **kw), *a, **kw)``."""
    funcs = listify(funcs)

    def _composed(x: Any, *args: Any, **kwargs: Any) -> Any:
        for f in funcs:
            x = f(x, *args, **kwargs)
        return x

    return _composed


def func_args(func: Callable) -> tuple[str, ...]:
    """The names of the parameters of `func` that can be given by keyword (``self`` included for a method).

    fastai v1 read ``func.__code__``, which fails on builtins, partials and callables; this uses
    ``inspect.signature`` where there is no ``__code__``.
    """
    code = getattr(func, "__code__", None)
    if code is not None:
        return code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return ()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(p.name for p in params if p.kind in kinds)


def has_arg(func: Callable, arg: str) -> bool:
    """True if `func` has a parameter named `arg`."""
    return arg in func_args(func)


def split_kwargs_by_func(kwargs: dict, func: Callable) -> tuple[dict, dict]:
    """Split `kwargs` into (those `func` takes, the rest); `kwargs` itself keeps only the rest, as in v1."""
    taken = {a: kwargs.pop(a) for a in func_args(func) if a in kwargs}
    return taken, kwargs


def extract_kwargs(names: Any, kwargs: dict) -> tuple[dict, dict]:
    """Pop the entries of `kwargs` named in `names`; return (those, the rest)."""
    taken = {k: kwargs.pop(k) for k in listify(names) if k in kwargs}
    return taken, kwargs


def idx_dict(a: Any) -> dict:
    """``{item: index}`` for the items of `a`."""
    return {v: i for i, v in enumerate(a)}


def recurse(func: Callable, x: Any, *args: Any, **kwargs: Any) -> Any:
    """Apply `func` to every leaf of `x`, walking lists, tuples (returned as lists) and dicts."""
    if is_listy(x):
        return [recurse(func, o, *args, **kwargs) for o in x]
    if is_dict(x):
        return {k: recurse(func, v, *args, **kwargs) for k, v in x.items()}
    return func(x, *args, **kwargs)


def recurse_eq(arr1: Any, arr2: Any) -> bool:
    """True if `arr1` and `arr2` are equal element-wise, walking nested lists and tuples."""
    import numpy as np

    if is_listy(arr1):
        return is_listy(arr2) and len(arr1) == len(arr2) and all(recurse_eq(x, y) for x, y in zip(arr1, arr2))
    return bool(np.all(np.atleast_1d(arr1 == arr2)))


def loadtxt_str(path: Any) -> Any:
    """The lines of the text file `path`, stripped, as a numpy array of str."""
    import numpy as np

    with open(path) as f:
        return np.array([line.strip() for line in f.readlines()])


def save_texts(fname: Any, texts: Any) -> None:
    """Write each of `texts` on its own line of `fname`."""
    with open(fname, "w") as f:
        for t in texts:
            f.write(f"{t}\n")


def try_import(module: str) -> Any:
    """The module named `module`, or False if it cannot be imported."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        return False


def arrays_split(mask: Any, *arrs: Any) -> list:
    """Split each array of `arrs` by the boolean `mask`: ``[(a1[mask], a2[mask]...), (a1[~mask], ...)]``."""
    import numpy as np

    mask = array(mask)
    return list(zip(*[(a[mask], a[~mask]) for a in map(np.array, arrs)]))


def random_split(valid_pct: float, *arrs: Any) -> list:
    """Randomly split `arrs` (numpy's global RNG): about `valid_pct` of the items go to the second part."""
    import numpy as np

    assert 0 <= valid_pct <= 1, "Validation set percentage should be between 0 and 1"
    is_train = np.random.uniform(size=(len(arrs[0]),)) > valid_pct
    return arrays_split(is_train, *arrs)


def get_tmp_file(dir: Any = None) -> str:  # noqa: A002  (v1's parameter name)
    """The name of a new empty temporary file in `dir` (the caller deletes it)."""
    with tempfile.NamedTemporaryFile(delete=False, dir=dir) as f:
        return f.name


@contextlib.contextmanager
def working_directory(path: Any) -> Iterator[None]:
    """Change the working directory to `path` for the ``with`` block."""
    prev = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(prev)


def join_path(fname: Any, path: Any = ".") -> Path:
    """``Path(path) / fname``."""
    return Path(path) / fname


def join_paths(fnames: Any, path: Any = ".") -> list[Path]:
    """`join_path` for each of `fnames`."""
    return [join_path(o, path) for o in listify(fnames)]


def show_some(items: Any, n_max: int = 5, sep: str = ",") -> str:
    """The first `n_max` items joined by `sep`, with ``...`` if there are more."""
    if items is None or len(items) == 0:
        return ""
    res = sep.join([f"{o}" for o in items[:n_max]])
    if len(items) > n_max:
        res += "..."
    return res


def subplots(rows: int, cols: int, imgsize: int = 4, figsize: tuple | None = None, title: str | None = None,
             **kwargs: Any) -> Any:
    """A `rows` x `cols` grid of matplotlib axes as a 2-d numpy array (even for one row, column or cell).

    `figsize` defaults to `imgsize` inches per cell; `title` (with `kwargs`) becomes the figure's suptitle.
    matplotlib is imported here, not when fastloop is imported.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    figsize = ifnone(figsize, (imgsize * cols, imgsize * rows))
    fig, axs = plt.subplots(rows, cols, figsize=figsize)
    axs = np.array(axs, dtype=object).reshape(rows, cols)
    if title is not None:
        fig.suptitle(title, **kwargs)
    return axs


class PrettyString(str):
    """A str whose repr is itself (so a notebook shows it without quotes)."""

    def __repr__(self) -> str:
        return str(self)


class PrePostInitMeta(type):
    """A metaclass that runs ``__pre_init__`` before and ``__post_init__`` after the class's ``__init__``.

    fastai v1 uses it for `fastloop.torch_core.Module`, so that ``nn.Module.__init__`` runs before a
    subclass's ``__init__`` without the subclass calling ``super().__init__()``.  Classes without those
    methods get no-ops.
    """

    def __new__(mcs, name: str, bases: tuple, dct: dict) -> type:  # noqa: N804
        cls = super().__new__(mcs, name, bases, dct)
        own_init = cls.__init__

        @functools.wraps(own_init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N807
            self.__pre_init__()
            own_init(self, *args, **kwargs)
            self.__post_init__()

        cls.__init__ = __init__
        if not hasattr(cls, "__pre_init__"):
            cls.__pre_init__ = _pre_post_noop
        if not hasattr(cls, "__post_init__"):
            cls.__post_init__ = _pre_post_noop
        return cls


def _pre_post_noop(self: Any) -> None:
    return None
