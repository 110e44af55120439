"""Hooks: read what happens inside the model (activations, gradients, sizes), as fastai v1's ``callbacks.hooks``.

Importing this module adds ``Learner.summary`` (`model_summary`), as in fastai v1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from ..basic_data import DatasetType
from ..basic_train import Learner, LearnerCallback
from ..core import PrettyString, is_listy
from ..torch_core import AdamW, flatten_model, to_detach

__all__ = ["ActivationStats", "Hook", "HookCallback", "Hooks", "hook_output", "hook_outputs", "model_sizes",
           "num_features_model", "model_summary", "dummy_eval", "dummy_batch"]

HookFunc = Callable[[nn.Module, Any, Any], Any]


def _detach(o: Any) -> Any:
    "A tensor detached; a list/tuple of them a list of detached tensors (nested ones too)."
    if isinstance(o, torch.Tensor):
        return o.detach()
    if is_listy(o):
        return to_detach(o, cpu=False)
    return o


# --------------------------------------------------------------------------------------------------- Hook
class Hook:
    """A hook on module `m` that stores ``hook_func(module, input, output)`` in ``self.stored``.

    A forward hook by default; ``is_forward=False`` registers torch's legacy ``register_backward_hook`` (as
    fastai v1: ``hook_func(module, grad_input, grad_output)``; it keeps working when an in-place op follows the
    module, where torch's "full" backward hooks fail).  With `detach`, the inputs and outputs are detached first
    (a tuple of them becomes a list).  ``remove()`` takes the hook off; ``with Hook(...) as h:`` removes it at
    the end of the block.
    """

    def __init__(self, m: nn.Module, hook_func: HookFunc, is_forward: bool = True, detach: bool = True):
        self.hook_func, self.detach, self.stored = hook_func, detach, None
        register = m.register_forward_hook if is_forward else m.register_backward_hook
        self.hook = register(self.hook_fn)
        self.removed = False

    def hook_fn(self, module: nn.Module, input: Any, output: Any) -> None:
        "Applies `hook_func` to `module`, `input`, `output` (detached first if `detach`)."
        if self.detach:
            input, output = _detach(input), _detach(output)
        self.stored = self.hook_func(module, input, output)

    def remove(self) -> None:
        "Remove the hook from the model (a second call does nothing)."
        if not self.removed:
            self.hook.remove()
            self.removed = True

    def __enter__(self, *args: Any) -> Hook:
        return self

    def __exit__(self, *args: Any) -> None:
        self.remove()


class _OutputGradHook(Hook):
    """`hook_output(..., grad=True)`: stores ``hook_func(module, None, grads)``, where ``grads`` holds the gradient
    of each tensor the module's last forward returned.

    fastai v1 used torch's legacy backward hook, which torch deprecates (and warns about for modules made of
    several autograd nodes).  This registers a gradient hook on each output tensor instead: the stored value is
    the same list ``[grad_of_output]``, an in-place op after the module is fine, and there is no warning.
    """

    def __init__(self, m: nn.Module, hook_func: HookFunc, detach: bool = True):
        self.hook_func, self.detach, self.stored = hook_func, detach, None
        self.hook = m.register_forward_hook(self._on_forward)
        self.removed = False

    def _on_forward(self, module: nn.Module, input: Any, output: Any) -> None:
        outs = list(output) if is_listy(output) else [output]
        grads: list[torch.Tensor | None] = [None] * len(outs)
        for i, o in enumerate(outs):
            if isinstance(o, torch.Tensor) and o.requires_grad:
                o.register_hook(self._grad_hook(module, grads, i))

    def _grad_hook(self, module: nn.Module, grads: list, i: int) -> Callable[[torch.Tensor], None]:
        def hook(grad: torch.Tensor) -> None:
            grads[i] = grad.detach() if self.detach else grad
            self.stored = self.hook_func(module, None, tuple(grads))

        return hook


class Hooks:
    """One `Hook` per module of `ms` with the same `hook_func`; ``stored`` lists their stored values.

    Indexable, iterable, ``len()``-able, and a context manager that removes every hook at the end.
    """

    def __init__(self, ms: Sequence[nn.Module], hook_func: HookFunc, is_forward: bool = True, detach: bool = True):
        self.hooks = [Hook(m, hook_func, is_forward, detach) for m in ms]

    def __getitem__(self, i: int) -> Hook:
        return self.hooks[i]

    def __len__(self) -> int:
        return len(self.hooks)

    def __iter__(self) -> Iterator[Hook]:
        return iter(self.hooks)

    @property
    def stored(self) -> list:
        "The stored value of each hook."
        return [o.stored for o in self]

    def remove(self) -> None:
        "Remove every hook from the model."
        for h in self.hooks:
            h.remove()

    def __enter__(self, *args: Any) -> Hooks:
        return self

    def __exit__(self, *args: Any) -> None:
        self.remove()


def _hook_inner(m: nn.Module, i: Any, o: Any) -> Any:
    "Store the output itself (a tensor), or the outputs as a list."
    return o if isinstance(o, torch.Tensor) or is_listy(o) else list(o)


def _grad_inner(m: nn.Module, i: Any, o: Any) -> list:
    return list(o)


def hook_output(module: nn.Module, detach: bool = True, grad: bool = False) -> Hook:
    """A `Hook` whose ``stored`` is `module`'s last output -- or, with `grad`, the list of the gradients of its
    output(s) after a backward pass."""
    if grad:
        return _OutputGradHook(module, _grad_inner, detach=detach)
    return Hook(module, _hook_inner, detach=detach, is_forward=True)


def hook_outputs(modules: Sequence[nn.Module], detach: bool = True, grad: bool = False) -> Hooks:
    "`Hooks` storing the output (or, with `grad`, the output gradients) of each module of `modules`."
    if not grad:
        return Hooks(modules, _hook_inner, detach=detach)
    hooks = Hooks([], _grad_inner)
    hooks.hooks = [hook_output(m, detach=detach, grad=True) for m in modules]
    return hooks


# ------------------------------------------------------------------------------------------- callbacks
def _has_params(m: nn.Module) -> bool:
    return len(list(m.parameters())) > 0


class HookCallback(LearnerCallback):
    """Base class: registers ``self.hook`` (a forward hook ``hook(module, input, output)`` that subclasses define)
    on `modules` for the duration of each fit.

    Events: ``on_train_begin`` (`modules` defaults to every leaf module of ``learn.model`` with parameters;
    creates ``self.hooks``, detached), ``on_train_end`` (removes them if `do_remove`).  Reads and returns no
    state keys.  ``_order = 0``: hooks fire during the forward pass, whatever the callback order.
    """

    def __init__(self, learn: Learner, modules: Sequence[nn.Module] | None = None, do_remove: bool = True):
        super().__init__(learn)
        self.modules, self.do_remove = modules, do_remove

    def on_train_begin(self, **kwargs: Any) -> None:
        "Register the `Hooks` on `self.modules`."
        if not self.modules:
            self.modules = [m for m in flatten_model(self.learn.model) if _has_params(m)]
        self.hooks = Hooks(self.modules, self.hook)

    def on_train_end(self, **kwargs: Any) -> None:
        "Remove the `Hooks`."
        if self.do_remove:
            self.remove()

    def remove(self) -> None:
        "Remove the hooks (if any)."
        hooks = self.__dict__.get("hooks")
        if hooks:
            hooks.remove()

    def __del__(self) -> None:
        self.remove()


class ActivationStats(HookCallback):
    """Records the mean and standard deviation of each hooked module's output at every training batch.

    Events: ``on_train_begin`` (hooks, ``stats = []``), ``on_batch_end`` (reads ``train``; appends the list of
    per-module ``(mean, std)``), ``on_train_end`` (``stats`` becomes a tensor of shape
    ``(2, n_modules, n_training_batches)``).  Returns no state keys; ``_order = 0`` as `HookCallback`.
    A module returning several tensors (an LSTM) is measured on the first one (fastai v1 crashed).
    """

    def on_train_begin(self, **kwargs: Any) -> None:
        "Initialize stats."
        super().on_train_begin(**kwargs)
        self.stats: Any = []

    def hook(self, m: nn.Module, i: Any, o: Any) -> tuple[float, float]:
        "Take the mean and std of `o`."
        while is_listy(o):
            o = o[0]
        return o.mean().item(), o.std().item()

    def on_batch_end(self, train: bool, **kwargs: Any) -> None:
        "Take the stored results and put them in `self.stats`."
        if train:
            self.stats.append(self.hooks.stored)

    def on_train_end(self, **kwargs: Any) -> None:
        "Polish the final result: a ``(2, n_modules, n_batches)`` tensor."
        super().on_train_end(**kwargs)
        if len(self.stats):
            self.stats = torch.tensor(self.stats).permute(2, 1, 0)
        else:
            self.stats = torch.zeros(2, len(self.modules), 0)


# ------------------------------------------------------------------------------------------- model sizes
def _in_channels(m: nn.Module) -> int:
    "The number of input channels of `m`: dimension 1 of the first leaf weight."
    for layer in flatten_model(m):
        if hasattr(layer, "weight"):
            return layer.weight.shape[1]
    raise Exception("No weight layer")


def dummy_batch(m: nn.Module, size: tuple = (64, 64)) -> torch.Tensor:
    """A batch of one random item of shape ``(in_channels, *size)``, uniform in [-1, 1], with `m`'s first
    parameter's dtype and device (torch's global generator draws it)."""
    ch_in = _in_channels(m)
    p = next(m.parameters())
    return p.new_empty(1, ch_in, *size).requires_grad_(False).uniform_(-1.0, 1.0)


def dummy_eval(m: nn.Module, size: tuple = (64, 64)) -> Any:
    "Pass a `dummy_batch` through `m` in evaluation mode (`m` is left in eval mode, as in fastai v1)."
    return m.eval()(dummy_batch(m, size))


def _top_modules(m: nn.Module) -> list[nn.Module]:
    # fastai v1 iterated over `m` itself, which only a Sequential/ModuleList allows; children() is the same there
    return list(m) if isinstance(m, (nn.Sequential, nn.ModuleList)) else list(m.children())


def model_sizes(m: nn.Module, size: tuple = (64, 64)) -> list[torch.Size]:
    "The output shape of each top-level module of `m` for a `dummy_batch` of `size`."
    with hook_outputs(_top_modules(m)) as hooks:
        dummy_eval(m, size)
        return [o.stored.shape for o in hooks]


def num_features_model(m: nn.Module) -> int:
    "The number of output features (channels) of `m`, trying dummy inputs of 64x64 up to 2048x2048."
    sz = 64
    while True:
        try:
            return model_sizes(m, size=(sz, sz))[-1][1]
        except Exception:
            sz *= 2
            if sz > 2048:
                raise


# ------------------------------------------------------------------------------------------- summary
def _total_params(m: nn.Module) -> tuple[int, bool]:
    """fastai v1's count for one layer: ``weight`` and ``bias`` only (other parameters are not counted);
    trainable is the weight's ``requires_grad``."""
    params, trainable = 0, False
    if hasattr(m, "weight") and hasattr(m.weight, "size"):
        params += m.weight.numel()
        trainable = m.weight.requires_grad
    if hasattr(m, "bias") and hasattr(m.bias, "size"):
        params += m.bias.numel()
    return params, trainable


def _data_is_empty(data: Any) -> bool:
    if hasattr(data, "is_empty"):
        return bool(data.is_empty)
    dls = [getattr(data, a, None) for a in ("train_dl", "valid_dl", "test_dl")]
    return not any(dl is not None and len(dl) > 0 for dl in dls)


def _summary_input(learn: Learner) -> Any:
    "The first item of one batch of the first non-empty set (train, else valid, else test), as fastai v1."
    data = learn.data
    if _data_is_empty(data):
        raise Exception("This is an empty `Learner` and `Learner.summary` requires some data to pass through the "
                        "model.")
    if data.train_dl:
        ds_type = DatasetType.Train
    elif data.valid_dl:
        ds_type = DatasetType.Valid
    else:
        ds_type = DatasetType.Test
    x = data.one_batch(ds_type=ds_type, detach=False, denorm=False)[0]
    return [o[:1] for o in x] if is_listy(x) else x[:1]


def _layers_info(learn: Learner) -> list[tuple[str, Any, Any, Any]]:
    "``(layer name, output shape without the batch dim, params, trainable)`` for each leaf module of the model."
    model = learn.model
    x = _summary_input(learn)
    leaves = flatten_model(model)
    with hook_outputs(leaves) as hook_o, Hooks(leaves, lambda m, i, o: _total_params(m)) as hook_p:
        with torch.no_grad():
            model.eval()(*x) if is_listy(x) else model.eval()(x)
    info = []
    for layer, ho, hp in zip(leaves, hook_o, hook_p):
        out = ho.stored
        while is_listy(out) and len(out):  # a module returning several tensors: the first one's shape
            out = out[0]
        size = out.shape[1:] if isinstance(out, torch.Tensor) else None
        params, trainable = hp.stored if hp.stored is not None else (None, None)
        info.append((type(layer).__name__, size, params, trainable))
    return info


#: how fastai v1's ``str(AdamW)`` read (its AdamW was this partial; fastloop's is a function)
_V1_ADAMW_STR = "functools.partial(<class 'torch.optim.adam.Adam'>, betas=(0.9, 0.99))"


def _opt_func_str(opt_func: Any) -> str:
    "``str(opt_func)``, with fastloop's `AdamW` shown as fastai v1's AdamW partial."
    return _V1_ADAMW_STR if opt_func is AdamW else str(opt_func)


def _opt_func_text(opt_func: Any) -> str:
    """What follows "Optimized with": fastai v1's ``str(opt_func)[25:-1]`` without '>', which was written for
    ``functools.partial(<class '...'>, ...)``; a class or a function prints as its quoted qualified name instead
    (v1's slice cut those to pieces)."""
    text = _opt_func_str(opt_func)
    if text.startswith("functools.partial(<class "):
        return text[25:-1].replace(">", "")
    name = getattr(opt_func, "__qualname__", None)
    return text if name is None else f"'{getattr(opt_func, '__module__', '')}.{name}'"


def model_summary(m: Learner, n: int = 70) -> PrettyString:
    """A summary of ``m.model`` (also ``Learner.summary``): one table row per leaf module run by one item of the
    first batch -- layer type, output shape, parameter count, trainable -- then totals, the optimizer, the loss
    and the callbacks, in fastai v1's format and with text width `n`.

    The forward pass runs without grad and in eval mode (so BatchNorm statistics do not move); the model is
    left in eval mode, as in fastai v1.
    """
    info = _layers_info(m)
    header = ["Layer (type)", "Output Shape", "Param #", "Trainable"]
    lines = [m.model.__class__.__name__, "=" * n, f"{header[0]:<20} {header[1]:<20} {header[2]:<10} {header[3]:<10}",
             "=" * n]
    total, total_trainable = 0, 0
    for layer, size, params, trainable in info:
        if size is None:  # the module did not run in the forward pass
            continue
        total += int(params)
        total_trainable += int(params) * trainable
        lines.append(f"{layer:<20} {str(list(size)):<20} {int(params):<10,} {str(trainable):<10}")
        lines.append("_" * n)
    res = "\n".join(lines) + "\n"
    res += f"\nTotal params: {total:,}\n"
    res += f"Total trainable params: {total_trainable:,}\n"
    res += f"Total non-trainable params: {total - total_trainable:,}\n"
    res += f"Optimized with {_opt_func_text(m.opt_func)}\n"
    if m.true_wd:
        res += "Using true weight decay as discussed in https://www.fast.ai/2018/07/02/adam-weight-decay/ \n"
    opt_str = _opt_func_str(m.opt_func)
    if "wd" in opt_str or "weight_decay" in opt_str:
        res += "\x1b[1;31m Specifying weight decay in the optimizer has no effect, Learner will overwrite \x1b[0m \n"
    if "lr" in opt_str or "learning_rate" in opt_str:
        res += ("\x1b[1;31m Specifying lr in the optimizer has no effect, pass it to fit or the defaults.lr will "
                "apply \x1b[0m \n")
    res += f"Loss function : {m.loss_func.__class__.__name__}\n"
    res += "=" * n + "\n"
    res += "Callbacks functions applied \n"
    res += "\n".join(f"    {cb.__class__.__name__}" for cb in m.callbacks)
    return PrettyString(res)


Learner.summary = model_summary
