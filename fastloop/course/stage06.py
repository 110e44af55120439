"""What notebooks 06 (cuda, cnn, hooks), 07 (batchnorm) and 07a (LSUV) exported: the device and batch-transform
callbacks, the small CNN builders, `get_runner`/`get_learn_run`, the forward hooks, and 07a's `get_batch`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.nn import init

from .callbacks import Callback, listify
from .stage04 import Learner
from .stage05b import Runner

__all__ = [
    "CudaCallback", "BatchTransformXCallback", "view_tfm", "mnist_resize", "flatten", "Lambda", "conv2d",
    "GeneralRelu", "conv_layer", "get_cnn_layers", "get_cnn_model", "init_cnn", "init_cnn_", "get_runner",
    "get_learn_run", "children", "ListContainer", "Hook", "Hooks", "append_stats", "get_batch",
]


# ----------------------------------------------------------------------------------------------- callbacks
class CudaCallback(Callback):
    """Moves the model (once, at ``begin_fit``) and each batch (``begin_batch``) to `device`.

    The course's version called ``.cuda()``; this one is device-agnostic: `device` defaults to CUDA when it is
    available and the CPU otherwise, so the same notebook runs on both.  Events: ``begin_fit`` (reads ``model``;
    moves it in place), ``begin_batch`` (reads ``xb``, ``yb``; writes them).  ``_order`` 0: before
    `BatchTransformXCallback` (2), so transforms run on the device.  Registered as ``cuda``.
    """

    def __init__(self, device: Any = None):
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)

    def begin_fit(self) -> None:
        self.model.to(self.device)

    def begin_batch(self) -> None:
        self.run.xb, self.run.yb = self.xb.to(self.device), self.yb.to(self.device)


class BatchTransformXCallback(Callback):
    """Applies `tfm` to each batch's inputs, in training and validation.

    Event: ``begin_batch`` (reads and writes ``xb``).  ``_order`` 2: after `CudaCallback` (0), so the transform
    runs on the device.  Registered as ``batch_transform_x``.
    """

    _order = 2

    def __init__(self, tfm: Callable[[torch.Tensor], torch.Tensor]):
        self.tfm = tfm

    def begin_batch(self) -> None:
        self.run.xb = self.tfm(self.xb)


def view_tfm(*size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    "``view_tfm(1, 28, 28)``: a transform viewing a batch as ``(-1, 1, 28, 28)``."

    def _inner(x: torch.Tensor) -> torch.Tensor:
        return x.view(*((-1,) + size))

    return _inner


# ------------------------------------------------------------------------------------------------- models
def mnist_resize(x: torch.Tensor) -> torch.Tensor:
    "Flat 784-pixel rows -> ``(bs, 1, 28, 28)`` images."
    return x.view(-1, 1, 28, 28)


def flatten(x: torch.Tensor) -> torch.Tensor:
    "``(bs, ...)`` -> ``(bs, -1)``."
    return x.view(x.shape[0], -1)


class Lambda(nn.Module):
    "A module that applies `func`."

    def __init__(self, func: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.func = func

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.func(x)


def conv2d(ni: int, nf: int, ks: int = 3, stride: int = 2) -> nn.Sequential:
    "Conv (padding ``ks//2``) + ReLU (06)."
    return nn.Sequential(nn.Conv2d(ni, nf, ks, padding=ks // 2, stride=stride), nn.ReLU())


class GeneralRelu(nn.Module):
    "ReLU, or leaky ReLU with slope `leak`; then minus `sub`, clamped at `maxv` (06)."

    def __init__(self, leak: float | None = None, sub: float | None = None, maxv: float | None = None):
        super().__init__()
        self.leak, self.sub, self.maxv = leak, sub, maxv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(x, self.leak) if self.leak is not None else F.relu(x)
        if self.sub is not None:
            x.sub_(self.sub)
        if self.maxv is not None:
            x.clamp_max_(self.maxv)
        return x


def conv_layer(ni: int, nf: int, ks: int = 3, stride: int = 2, bn: bool = True, **kwargs: Any) -> nn.Sequential:
    "Conv (no bias when `bn`) + `GeneralRelu(**kwargs)` (+ BatchNorm2d) (07)."
    layers = [nn.Conv2d(ni, nf, ks, padding=ks // 2, stride=stride, bias=not bn), GeneralRelu(**kwargs)]
    if bn:
        layers.append(nn.BatchNorm2d(nf, eps=1e-5, momentum=0.1))
    return nn.Sequential(*layers)


def get_cnn_layers(data: Any, nfs: list[int], layer: Callable[..., nn.Module] = conv_layer,
                   **kwargs: Any) -> list[nn.Module]:
    """``layer`` blocks with `nfs` filters (5x5 first, then 3x3), pool, flatten, a linear head (07).

    Inputs have ``data.c_in`` channels (1 when the `DataBunch` has no ``c_in``, as before 08) and the head
    ``data.c`` outputs (``data.c_out`` with an 08 `DataBunch`).  (Notebook 08 also changed the architecture, to a
    stem of three 3x3 convs; that version is not ported.)"""
    n_in = getattr(data, "c_in", None) or 1
    n_out = data.c_out if hasattr(data, "c_out") else data.c
    nfs = [n_in] + nfs
    layers = [layer(nfs[i], nfs[i + 1], 5 if i == 0 else 3, **kwargs) for i in range(len(nfs) - 1)]
    return layers + [nn.AdaptiveAvgPool2d(1), Lambda(flatten), nn.Linear(nfs[-1], n_out)]


def get_cnn_model(data: Any, nfs: list[int], layer: Callable[..., nn.Module] = conv_layer,
                  **kwargs: Any) -> nn.Sequential:
    "`get_cnn_layers` in a Sequential."
    return nn.Sequential(*get_cnn_layers(data, nfs, layer, **kwargs))


def init_cnn_(m: nn.Module, f: Callable[..., Any]) -> None:
    "Apply `f(weight, a=0.1)` to every Conv2d weight of `m` (recursively) and zero their biases."
    if isinstance(m, nn.Conv2d):
        f(m.weight, a=0.1)
        if getattr(m, "bias", None) is not None:
            m.bias.data.zero_()
    for child in m.children():
        init_cnn_(child, f)


def init_cnn(m: nn.Module, uniform: bool = False) -> None:
    "Kaiming init (normal, or `uniform`) of every Conv2d."
    init_cnn_(m, init.kaiming_uniform_ if uniform else init.kaiming_normal_)


def get_runner(model: nn.Module, data: Any, lr: float = 0.6, cbs: Any = None, opt_func: Callable | None = None,
               loss_func: Callable = F.cross_entropy) -> tuple[Learner, Runner]:
    """``(learn, run)``: a 04 container `Learner` with ``opt_func(model.parameters(), lr=lr)`` (torch SGD by
    default) and a 05b `Runner` whose ``cb_funcs`` are `cbs` (so each is registered: ``run.avg_stats``)."""
    if opt_func is None:
        opt_func = optim.SGD
    opt = opt_func(model.parameters(), lr=lr)
    learn = Learner(model, opt, loss_func, data)
    return learn, Runner(cb_funcs=listify(cbs))


def get_learn_run(nfs: list[int], data: Any, lr: float, layer: Callable[..., nn.Module] = conv_layer,
                  cbs: Any = None, opt_func: Callable | None = None, uniform: bool = False,
                  **kwargs: Any) -> tuple[Learner, Runner]:
    "A Kaiming-initialised `get_cnn_model` in `get_runner` (07; `layer` defaults to `conv_layer`)."
    model = get_cnn_model(data, nfs, layer, **kwargs)
    init_cnn(model, uniform=uniform)
    return get_runner(model, data, lr=lr, cbs=cbs, opt_func=opt_func)


# -------------------------------------------------------------------------------------------------- hooks
def children(m: nn.Module) -> list[nn.Module]:
    "The direct children of `m`."
    return list(m.children())


class ListContainer:
    "A list that is also indexed by a list of ints or of bools (06)."

    def __init__(self, items: Any):
        self.items = listify(items)

    def __getitem__(self, idx: Any) -> Any:
        if isinstance(idx, (int, slice)):
            return self.items[idx]
        if isinstance(idx[0], bool):
            assert len(idx) == len(self)  # bool mask
            return [o for m, o in zip(idx, self.items) if m]
        return [self.items[i] for i in idx]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)

    def __setitem__(self, i: Any, o: Any) -> None:
        self.items[i] = o

    def __delitem__(self, i: Any) -> None:
        del self.items[i]

    def __repr__(self) -> str:
        res = f"{self.__class__.__name__} ({len(self)} items)\n{self.items[:10]}"
        if len(self) > 10:
            res = res[:-1] + "...]"
        return res


class Hook:
    "A forward hook on `m` calling ``f(hook, module, input, output)``; `remove` detaches it."

    def __init__(self, m: nn.Module, f: Callable[..., Any]):
        self.hook = m.register_forward_hook(partial(f, self))

    def remove(self) -> None:
        self.hook.remove()

    def __del__(self) -> None:
        self.remove()


class Hooks(ListContainer):
    "One `Hook` per module of `ms`; a context manager that removes them on exit."

    def __init__(self, ms: Any, f: Callable[..., Any]):
        super().__init__([Hook(m, f) for m in ms])

    def __enter__(self, *args: Any) -> Hooks:
        return self

    def __exit__(self, *args: Any) -> None:
        self.remove()

    def __del__(self) -> None:
        self.remove()

    def __delitem__(self, i: Any) -> None:
        self[i].remove()
        super().__delitem__(i)

    def remove(self) -> None:
        for h in self:
            h.remove()


def append_stats(hook: Hook, mod: nn.Module, inp: Any, outp: torch.Tensor) -> None:
    "Hook function: in training, record the output's mean, std and histogram (40 bins over [0, 10]) on the hook."
    if not hasattr(hook, "stats"):
        hook.stats = ([], [], [])
    means, stds, hists = hook.stats
    if mod.training:
        means.append(outp.data.mean().cpu())
        stds.append(outp.data.std().cpu())
        hists.append(outp.data.cpu().histc(40, 0, 10))


# ------------------------------------------------------------------------------------------- 07a get_batch
def get_batch(dl: Any, run: Any) -> tuple[Any, Any]:
    """The first batch of `dl` after the callbacks' ``begin_batch`` (07a, Runner flavour).

    Sets ``run.xb``/``run.yb``, attaches every callback to `run`, fires ``begin_batch`` -- outside any fit, so a
    `BatchTransformXCallback` or `CudaCallback` transforms the batch -- and returns it.
    """
    run.xb, run.yb = next(iter(dl))
    for cb in run.cbs:
        cb.set_runner(run)
    run("begin_batch")
    return run.xb, run.yb
