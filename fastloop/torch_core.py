"""The torch helpers that fastai v1 callbacks import from ``fastai.torch_core``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .core import defaults, is_listy, listify

__all__ = [
    "AdamW", "first_el", "bn_types", "bias_types", "no_wd_types", "to_detach", "to_device", "to_cpu", "to_float",
    "requires_grad", "trainable_params", "flatten_model", "first_layer", "split_model", "split_model_idx",
    "split_no_wd_params", "add_metrics", "num_distrib", "rank_distrib", "get_model", "uniqueify", "is_pathlike",
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

