"""The torch helpers that fastai v1 callbacks import from ``fastai.torch_core``."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import random
import warnings
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence, Sized
from typing import Any

import numpy as np
import torch
from torch import nn

from .core import PrePostInitMeta, defaults, is_listy, listify, recurse

__all__ = [
    "AdamW", "first_el", "bn_types", "bias_types", "no_wd_types", "to_detach", "to_device", "to_cpu", "to_float",
    "requires_grad", "trainable_params", "flatten_model", "first_layer", "split_model", "split_model_idx",
    "split_no_wd_params", "add_metrics", "num_distrib", "rank_distrib", "get_model", "uniqueify", "is_pathlike",
    "to_half", "batch_to_half", "bn2float", "model2half",
]

#: fastai v1's default optimizer: Adam with ``betas=(0.9, 0.99)``.
def AdamW(params: Any, lr: float = 1e-3, betas: tuple = (0.9, 0.99), **kwargs: Any) -> torch.optim.Adam:  # noqa: N802
    """``torch.optim.Adam`` with fastai v1's betas (weight decay is applied by `OptimWrapper`)."""
    return torch.optim.Adam(params, lr=lr, betas=betas, **kwargs)


bn_types = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
bias_types = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
no_wd_types = bn_types + (nn.LayerNorm,)


def to_detach(b: Any, cpu: bool = True) -> Any:
    """Detach every tensor in `b` (nested lists/tuples/dicts too), moving them to the CPU if `cpu`.

    Tuples come back as lists, as in fastai v1.
    """
    if isinstance(b, torch.Tensor):
        b = b.detach()
        return b.cpu() if cpu else b
    if is_listy(b):
        return [to_detach(o, cpu) for o in b]
    if isinstance(b, dict):
        return {k: to_detach(v, cpu) for k, v in b.items()}
    return b


def to_device(b: Any, device: torch.device | str | None) -> Any:
    """Move every tensor in `b` to `device` (``defaults.device`` when None), without blocking.

    Tuples come back as lists, as in fastai v1 (so a batch's ``last_input`` is a list for several inputs).
    """
    device = defaults.device if device is None else device
    if isinstance(b, torch.Tensor):
        return b.to(device, non_blocking=True)
    if is_listy(b):
        return [to_device(o, device) for o in b]
    if isinstance(b, dict):
        return {k: to_device(v, device) for k, v in b.items()}
    return b


def to_cpu(b: Any) -> Any:
    """Move every tensor in `b` to the CPU."""
    return to_device(b, torch.device("cpu"))


def to_float(b: Any) -> Any:
    """Cast the tensors in `b` to float32, except int64/int32/int16 ones (class targets), as fastai v1 does."""
    if isinstance(b, torch.Tensor):
        return b if b.dtype in (torch.int64, torch.int32, torch.int16) else b.float()
    if is_listy(b):
        return [to_float(o) for o in b]
    return b


def first_el(x: Any) -> Any:
    """The first tensor of `x`, looking into nested lists/tuples (the batch size comes from it)."""
    while is_listy(x):
        x = x[0]
    return x


def requires_grad(m: nn.Module, b: bool | None = None) -> bool | None:
    """Set ``requires_grad`` of all of `m`'s parameters to `b`; with `b` None, return the first one's."""
    ps = list(m.parameters())
    if not ps:
        return None
    if b is None:
        return ps[0].requires_grad
    for p in ps:
        p.requires_grad_(b)
    return None


def trainable_params(m: nn.Module) -> list[nn.Parameter]:
    """The parameters of `m` that require grad."""
    return [p for p in m.parameters() if p.requires_grad]


def flatten_model(m: nn.Module) -> list[nn.Module]:
    """The leaf modules of `m`, depth first (a module without children is its own leaf)."""
    children = list(m.children())
    if not children:
        return [m]
    return [leaf for c in children for leaf in flatten_model(c)]


def first_layer(m: nn.Module) -> nn.Module:
    """The first leaf module of `m`."""
    return flatten_model(m)[0]


def split_model_idx(model: nn.Module, idxs: Sequence[int]) -> list[nn.Sequential]:
    """Split the leaves of `model` into ``nn.Sequential`` layer groups starting at `idxs`."""
    layers = flatten_model(model)
    idxs = list(idxs)
    if idxs[0] != 0:
        idxs = [0] + idxs
    if idxs[-1] != len(layers):
        idxs.append(len(layers))
    return [nn.Sequential(*layers[i:j]) for i, j in zip(idxs[:-1], idxs[1:])]


def split_model(model: nn.Module, splits: Any, want_idxs: bool = False) -> Any:
    """Split `model` into layer groups that start at the modules (or module lists) in `splits`."""
    layers = flatten_model(model)
    splits = listify(splits)
    if isinstance(splits[0], nn.Module):
        idxs = [layers.index(first_layer(s)) for s in splits]
        res = split_model_idx(model, idxs)
    else:
        res = [nn.Sequential(*s) for s in splits]
        idxs = None
    return (res, idxs) if want_idxs else res


def uniqueify(x: Sequence) -> list:
    """`x` without duplicates (by identity), first occurrence kept."""
    seen: set[int] = set()
    out = []
    for o in x:
        if id(o) not in seen:
            seen.add(id(o))
            out.append(o)
    return out


def split_no_wd_params(layer_groups: Sequence[nn.Module]) -> list[list[nn.Parameter]]:
    """Two parameter lists per layer group: (a) the weights that get weight decay, (b) the "no-wd" ones.

    (b) holds every trainable parameter of BatchNorm/LayerNorm children and the bias of every Linear/Conv
    child -- frozen or not, as in fastai v1, so the optimizer's layout (and its saved state) is v1's.
    `OptimWrapper.step` then leaves frozen parameters out of true weight decay.
    """
    split = []
    for group in layer_groups:
        decay, no_decay = [], []
        for c in group.children():
            if isinstance(c, no_wd_types):
                no_decay += trainable_params(c)
            elif isinstance(c, bias_types):
                bias = getattr(c, "bias", None)
                decay += [p for p in trainable_params(c) if p is not bias]
                if bias is not None:
                    no_decay.append(bias)
            else:
                decay += trainable_params(c)
        split += [uniqueify(decay), uniqueify(no_decay)]
    return split


def add_metrics(last_metrics: Any, mets: Any) -> dict:
    """The return value of a metric callback's ``on_epoch_end``: ``{'last_metrics': last_metrics + mets}``."""
    return {"last_metrics": listify(last_metrics) + listify(mets)}


def num_distrib() -> int:
    """Number of processes in distributed training (0 when ``WORLD_SIZE`` is not set)."""
    return int(os.environ.get("WORLD_SIZE", 0))


def rank_distrib() -> int:
    """This process's rank in distributed training (0 when ``RANK`` is not set)."""
    return int(os.environ.get("RANK", 0))


def get_model(model: nn.Module) -> nn.Module:
    """`model` without its DataParallel/DistributedDataParallel wrapper."""
    wrapped = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    return model.module if isinstance(model, wrapped) else model


def is_pathlike(x: Any) -> bool:
    """True for a str or an ``os.PathLike``."""
    return isinstance(x, (str, os.PathLike))


# ------------------------------------------------------------------ half precision (fastai v1's fp16 helpers)
def to_half(b: Any) -> Any:
    """Cast the tensors in `b` to float16, except int64/int32/int16 ones (class targets), as fastai v1 does.

    Lists, tuples (returned as lists) and dicts are walked; anything that is not a tensor is returned as is.
    """
    if isinstance(b, torch.Tensor):
        return b if b.dtype in (torch.int64, torch.int32, torch.int16) else b.half()
    if is_listy(b):
        return [to_half(o) for o in b]
    if isinstance(b, dict):
        return {k: to_half(v) for k, v in b.items()}
    return b


def batch_to_half(b: Sequence[Any]) -> list:
    """A batch transform: the input ``b[0]`` to half precision, the target ``b[1]`` untouched (`to_fp16` adds it)."""
    return [to_half(b[0]), b[1]]


def bn2float(module: nn.Module) -> nn.Module:
    """Put every BatchNorm layer of `module` (itself included) back in float32; returns `module`.

    BatchNorm's running statistics and its normalisation lose too much precision in float16, so fastai v1 keeps
    them in float32 (torch's BatchNorm accepts a half input with float32 weights).
    """
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        module.float()
    for child in module.children():
        bn2float(child)
    return module


def model2half(model: nn.Module) -> nn.Module:
    """Convert `model` to half precision, except its BatchNorm layers (which stay float32)."""
    return bn2float(model.half())


# ======================================================================== more of fastai v1's torch_core
# What fastai v1 code (layers, callbacks, notebooks) calls through ``from fastai.torch_core import *``.

__all__ += [
    "tensor", "to_np", "to_data", "apply_init", "apply_leaf", "cond_init", "init_default", "one_param",
    "set_bn_eval", "try_int", "np_address", "grab_idx", "logit", "logit_", "uniform", "log_uniform", "rand_bool",
    "uniform_int", "children", "num_children", "range_children", "children_and_parameters", "last_layer",
    "in_channels", "has_params", "trange_of", "set_all_seed", "remove_module_load", "model_type", "np2model_tensor",
    "np_func", "distrib_barrier", "get_param_groups", "try_save", "Module", "ParameterModule", "ModelOnCPU",
    "NoneReduceOnCPU",
    # type aliases of fastai v1's core and torch_core that involve numpy or torch
    "NPArray", "NPArrayMask", "NPImage", "NPArrayList", "NPArrayableList", "SplitArrayList", "Tensors",
    "Rank0Tensor", "TensorOrNumber", "TensorOrNumList", "BoolOrTensor", "FloatOrTensor", "IntOrTensor",
    "ItemsList", "LambdaFunc", "LayerFunc", "ModuleList", "LossFunction", "OptLossFunc", "MetricFunc",
    "MetricFuncList", "MetricsList", "OptMetrics", "OptOptimizer", "ParamList", "SplitFunc", "OptSplitFunc",
    "SplitFuncOrIdxList", "Weights", "TensorImage", "TensorImageSize", "AffineMatrix", "AffineFunc", "HookFunc",
    "LogitTensorImage", "PixelFunc", "LightingFunc", "OptStats", "is_pool_type",
]

# -- type aliases (they only document signatures)
NPArray = np.ndarray
NPArrayMask = np.ndarray
NPImage = np.ndarray
NPArrayList = Collection[np.ndarray]
NPArrayableList = Collection[list | np.ndarray]
SplitArrayList = list[tuple[np.ndarray, np.ndarray]]
Tensors = torch.Tensor | Collection[Any]
Rank0Tensor = torch.Tensor  # v1: NewType('OneEltTensor', Tensor)
TensorOrNumber = torch.Tensor | float
TensorOrNumList = Collection[torch.Tensor | float]
BoolOrTensor = bool | torch.Tensor
FloatOrTensor = float | torch.Tensor
IntOrTensor = int | torch.Tensor
ItemsList = Collection[Any]
LambdaFunc = Callable[[torch.Tensor], torch.Tensor]
LayerFunc = Callable[[nn.Module], None]
ModuleList = Collection[nn.Module]
LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OptLossFunc = LossFunction | None
MetricFunc = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
MetricFuncList = Collection[MetricFunc]
MetricsList = Collection[torch.Tensor | float]
OptMetrics = MetricsList | None
OptOptimizer = torch.optim.Optimizer | None
ParamList = Collection[nn.Parameter]
SplitFunc = Callable[[nn.Module], list[nn.Module]]
OptSplitFunc = SplitFunc | None
SplitFuncOrIdxList = Callable | Collection[Any]
Weights = dict[str, torch.Tensor]
TensorImage = torch.Tensor
TensorImageSize = tuple[int, int, int]
AffineMatrix = torch.Tensor
AffineFunc = Callable[[dict], AffineMatrix]
HookFunc = Callable[[nn.Module, Tensors, Tensors], Any]
LogitTensorImage = TensorImage
PixelFunc = Callable[..., TensorImage]
LightingFunc = Callable[..., LogitTensorImage]
OptStats = tuple[np.ndarray, np.ndarray] | None


def is_pool_type(layer: nn.Module) -> bool:
    """True for a pooling layer (its class name ends with ``Pool1d``, ``Pool2d`` or ``Pool3d``)."""
    name = type(layer).__name__
    return name.endswith(("Pool1d", "Pool2d", "Pool3d"))


def tensor(x: Any, *rest: Any, **kwargs: Any) -> torch.Tensor:
    """A tensor from `x` (a number, list, numpy array or tensor); ``tensor(1, 2, 3)`` is ``tensor([1, 2, 3])``.

    Lists go through ``torch.tensor`` (a copy), arrays and tensors through ``torch.as_tensor`` (shared memory
    where possible).  An empty list gives ``tensor(0)`` and an int32 result is upgraded to int64 with a
    warning, as in fastai v1.  `kwargs` (``dtype``, ``device``...) are passed to torch.
    """
    if rest:
        x = (x,) + rest
    if is_listy(x) and len(x) == 0:
        return tensor(0, **kwargs)
    res = torch.tensor(x, **kwargs) if is_listy(x) else torch.as_tensor(x, **kwargs)
    if res.dtype is torch.int32:
        warnings.warn("Tensor is int32: upgrading to int64; for better performance use int64 input", stacklevel=2)
        return res.long()
    return res


def to_np(x: torch.Tensor) -> np.ndarray:
    """`x` as a numpy array (detached, on the CPU)."""
    return x.detach().cpu().numpy()


def to_data(b: Any) -> Any:
    """The raw data of `b`: each item's ``.data`` if it is a fastai ItemBase-like object (has ``data`` and is no
    tensor), walking lists and dicts.  fastloop has no ItemBase, so plain data comes back unchanged."""
    def _data(x: Any) -> Any:
        if isinstance(x, torch.Tensor) or not hasattr(x, "data") or not hasattr(x, "obj"):
            return x
        return x.data

    return recurse(_data, b)


def children(m: nn.Module) -> list[nn.Module]:
    """The direct children of `m`, as a list."""
    return list(m.children())


def num_children(m: nn.Module) -> int:
    """How many direct children `m` has."""
    return len(children(m))


def range_children(m: nn.Module) -> range:
    """``range(num_children(m))``."""
    return range(num_children(m))


def last_layer(m: nn.Module) -> nn.Module:
    """The last leaf module of `m`."""
    return flatten_model(m)[-1]


def has_params(m: nn.Module) -> bool:
    """True if `m` has at least one parameter."""
    return next(iter(m.parameters()), None) is not None


def one_param(m: nn.Module) -> nn.Parameter:
    """The first parameter of `m` (handy to read the model's device or dtype)."""
    return next(m.parameters())


def in_channels(m: nn.Module) -> int:
    """The input channels of the first leaf of `m` that has a weight (``weight.shape[1]``)."""
    for layer in flatten_model(m):
        if getattr(layer, "weight", None) is not None:
            return layer.weight.shape[1]
    raise Exception("No weight layer")


def init_default(m: nn.Module, func: Callable | None = nn.init.kaiming_normal_) -> nn.Module:
    """Initialise `m`'s weight with `func` (if given) and zero its bias; returns `m`."""
    if func is not None and getattr(m, "weight", None) is not None:
        func(m.weight)
    if getattr(m, "bias", None) is not None and hasattr(m.bias, "data"):
        with torch.no_grad():
            m.bias.fill_(0.0)
    return m


def cond_init(m: nn.Module, init_func: Callable) -> None:
    """`init_default` on `m` unless it is a BatchNorm layer or its parameters are frozen (or it has none)."""
    if not isinstance(m, bn_types) and requires_grad(m):
        init_default(m, init_func)


def apply_leaf(m: nn.Module, f: Callable[[nn.Module], Any]) -> None:
    """Call `f` on `m` and then on every module below it, depth first (containers included, as in v1)."""
    f(m)
    for c in m.children():
        apply_leaf(c, f)


def apply_init(m: nn.Module, init_func: Callable) -> None:
    """Initialise every trainable, non-BatchNorm module of `m` that has a ``weight`` with `init_func`, and zero
    its bias (what ``Learner.init`` does).  As in fastai v1, `init_func` also meets 1-d weights (LayerNorm,
    ...), so an initialiser that needs a fan-in, such as ``kaiming_normal_``, raises there."""
    apply_leaf(m, functools.partial(cond_init, init_func=init_func))


def set_bn_eval(m: nn.Module) -> None:
    """Put every BatchNorm layer below `m` whose parameters are frozen in eval mode (its statistics stay put)."""
    for layer in m.children():
        if isinstance(layer, bn_types) and not next(layer.parameters()).requires_grad:
            layer.eval()
        set_bn_eval(layer)


def children_and_parameters(m: nn.Module) -> list[nn.Module]:
    """The children of `m`, plus a `ParameterModule` for each parameter `m` holds directly (not in a child)."""
    kids = list(m.children())
    in_kids = {id(p) for c in kids for p in c.parameters()}
    kids += [ParameterModule(p) for p in m.parameters() if id(p) not in in_kids]
    return kids


def try_int(o: Any) -> Any:
    """`o` as an int when it is a number (a 0-dim array or tensor included), else `o` unchanged."""
    if isinstance(o, (np.ndarray, torch.Tensor)):
        return o if o.ndim else int(o)
    if isinstance(o, Sized) or getattr(o, "__array_interface__", False):
        return o
    try:
        return int(o)
    except (TypeError, ValueError, OverflowError):
        return o


def np_address(x: np.ndarray) -> int:
    """The memory address of `x`'s data (to check whether two arrays share memory)."""
    return x.__array_interface__["data"][0]


def grab_idx(x: Any, i: int, batch_first: bool = True) -> Any:
    """Item `i` of the batch `x` (or of each tensor of a list `x`), on the CPU; `batch_first=False` indexes
    the second dimension."""
    def _grab(t: torch.Tensor) -> torch.Tensor:
        return (t[i] if batch_first else t[:, i]).cpu()

    return [_grab(o) for o in x] if is_listy(x) else _grab(x)


def logit(x: torch.Tensor) -> torch.Tensor:
    """The inverse of the sigmoid, ``log(x / (1 - x))``, with `x` clamped to ``[1e-7, 1 - 1e-7]``."""
    x = x.clamp(1e-7, 1 - 1e-7)
    return -(1 / x - 1).log()


def logit_(x: torch.Tensor) -> torch.Tensor:
    """`logit` in place."""
    x.clamp_(1e-7, 1 - 1e-7)
    return x.reciprocal_().sub_(1).log_().neg_()


def uniform(low: float, high: float | None = None, size: Any = None) -> Any:
    """A draw from U(`low`, `high`) (``high=None`` means `low`): a float from Python's ``random`` without
    `size`, else a float tensor of that size from torch's generator."""
    if high is None:
        high = low
    if size is None:
        return random.uniform(low, high)
    return torch.empty(*listify(size)).uniform_(low, high)


def log_uniform(low: float, high: float, size: Any = None) -> Any:
    """A draw between `low` and `high` that is uniform on a log scale (a float, or a tensor of `size`)."""
    res = uniform(math.log(low), math.log(high), size)
    return math.exp(res) if size is None else res.exp_()


def rand_bool(p: float, size: Any = None) -> Any:
    """True with probability `p` (a bool, or a bool tensor of `size`)."""
    return uniform(0, 1, size) < p


def uniform_int(low: int, high: int, size: Any = None) -> Any:
    """A random integer in ``[low, high]`` (both included): an int, or an int64 tensor of `size`."""
    if size is None:
        return random.randint(low, high)
    return torch.randint(low, high + 1, tuple(listify(size)))


def trange_of(x: Any) -> torch.Tensor:
    """``torch.arange(len(x))``."""
    return torch.arange(len(x))


def set_all_seed(seed: int) -> None:
    """Seed Python's ``random``, numpy and torch (all CUDA devices too)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def remove_module_load(state_dict: dict) -> OrderedDict:
    """A state dict saved from a ``DataParallel`` model, without the ``module.`` prefix of its keys."""
    return OrderedDict((k.removeprefix("module."), v) for k, v in state_dict.items())


def model_type(dtype: Any) -> torch.dtype | None:
    """The torch dtype a model gets for numpy `dtype`: float32 for floats, int64 for integers, else None."""
    if np.issubdtype(dtype, np.floating):
        return torch.float32
    if np.issubdtype(dtype, np.integer):
        return torch.int64
    return None


def np2model_tensor(a: np.ndarray) -> torch.Tensor:
    """`a` as a tensor of the type a model expects (`model_type`)."""
    dtype = model_type(a.dtype)
    res = torch.as_tensor(a)
    return res if dtype is None else res.type(dtype)


def np_func(f: Callable) -> Callable:
    """Wrap a function of numpy arrays so that it takes tensors (converted with `to_np`) and returns a tensor."""
    @functools.wraps(f)
    def _inner(*args: Any, **kwargs: Any) -> torch.Tensor:
        nargs = [to_np(a) if isinstance(a, torch.Tensor) else a for a in args]
        return tensor(f(*nargs, **kwargs))

    return _inner


def distrib_barrier() -> None:
    """Wait for all processes when distributed training is running (a no-op otherwise)."""
    if num_distrib() > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def get_param_groups(layer_groups: Collection[nn.Module]) -> list[list[nn.Parameter]]:
    """The trainable parameters of each layer group's direct children, one list per group."""
    return [[p for c in g.children() for p in trainable_params(c)] for g in layer_groups]


def try_save(state: Any, path: Any = None, file: Any = None) -> None:
    """``torch.save(state, path/file)`` (or into the file object `file`); a write error says which path failed."""
    target = os.path.join(path, file) if is_pathlike(file) else file
    try:
        torch.save(state, target)
    except OSError as e:
        raise Exception(f"{e}\n Can't write {target}. Pass an absolute writable pathlib obj `fname`.") from e


class Module(nn.Module, metaclass=PrePostInitMeta):
    """``nn.Module`` whose subclasses need not call ``super().__init__()`` (fastai v1's `Module`).

    ``nn.Module.__init__`` runs before the subclass's ``__init__`` (through `PrePostInitMeta`).  Unlike v1, it
    runs only once: a subclass that still calls ``super().__init__()`` -- even after registering layers --
    keeps them.
    """

    def __pre_init__(self) -> None:
        if "_modules" not in self.__dict__:  # not initialised yet
            nn.Module.__init__(self)

    def __init__(self) -> None:
        pass


class ParameterModule(Module):
    """Holds one parameter ``val`` so it can be a layer of its own (`children_and_parameters`); the identity."""

    def __init__(self, p: nn.Parameter):
        self.val = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class ModelOnCPU(contextlib.AbstractContextManager):
    """``with ModelOnCPU(model) as m:`` -- `model` on the CPU inside the block, back on its device after."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self) -> nn.Module:
        self.device = one_param(self.model).device
        return self.model.cpu()

    def __exit__(self, *exc: Any) -> None:
        self.model = self.model.to(self.device)


class NoneReduceOnCPU(contextlib.AbstractContextManager):
    """``with NoneReduceOnCPU(loss_func) as lf:`` -- `lf` computes per-item losses with its ``weight`` on the CPU.

    A loss with a ``reduction`` attribute is set to ``'none'`` for the block (and restored after); any other
    callable is wrapped as ``partial(loss_func, reduction='none')``.
    """

    def __init__(self, loss_func: Callable):
        self.loss_func, self.device, self.old_red = loss_func, None, None

    def __enter__(self) -> Callable:
        weight = getattr(self.loss_func, "weight", None)
        if weight is not None:
            self.device = weight.device
            self.loss_func.weight = weight.cpu()
        if hasattr(self.loss_func, "reduction"):
            self.old_red = self.loss_func.reduction
            self.loss_func.reduction = "none"
            return self.loss_func
        return functools.partial(self.loss_func, reduction="none")

    def __exit__(self, *exc: Any) -> None:
        if self.device is not None:
            self.loss_func.weight = self.loss_func.weight.to(self.device)
        if self.old_red is not None:
            self.loss_func.reduction = self.old_red
