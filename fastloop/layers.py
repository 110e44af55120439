"""The layers and losses fastai v1 models are built from (``fastai.layers``), on plain torch.

Everything here is an ``nn.Module`` (through `fastloop.torch_core.Module`, so a subclass needs no
``super().__init__()``), a function returning one, or a flattened loss.  State-dict keys are v1's, so weights
saved by fastai v1 load into the same architecture built here.

Deliberate differences from fastai 1.0.61:

* `PixelShuffle_ICNR` really starts from the ICNR initialisation.  v1 wrote the ICNR weights into the
  ``weight`` that weight normalisation recomputes from ``weight_g``/``weight_v`` before every forward, so they
  were lost; fastloop writes them into the underlying parameters.
* `conv_layer(norm_type=NormType.Weight)` uses torch's legacy ``nn.utils.weight_norm`` (v1's state-dict keys
  ``weight_g``/``weight_v``) without repeating its deprecation warning at every layer.
* `FlattenedLoss` reads the attributes it does not have from the wrapped loss when they are asked for
  (``ignore_index``, ``pos_weight``...); v1 copied the wrapped loss's ``__dict__`` once at construction.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from enum import Enum
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .core import ifnone, range_of
from .torch_core import Module, init_default

__all__ = [
    "AdaptiveConcatPool2d", "BCEWithLogitsFlat", "BCEFlat", "MSELossFlat", "CrossEntropyFlat", "Debugger",
    "Flatten", "Lambda", "PoolFlatten", "View", "ResizeBatch", "bn_drop_lin", "conv2d", "conv2d_trans",
    "conv_layer", "embedding", "simple_cnn", "NormType", "relu", "batchnorm_2d", "trunc_normal_",
    "PixelShuffle_ICNR", "icnr", "NoopLoss", "WassersteinLoss", "SelfAttention", "SequentialEx", "MergeLayer",
    "res_block", "sigmoid_range", "SigmoidRange", "PartialLayer", "FlattenedLoss", "BatchNorm1dFlat",
    "LabelSmoothingCrossEntropy", "PooledSelfAttention2d", "init_default",
]

#: How `conv_layer` normalises: BatchNorm after the activation (``BatchZero``: its weight starts at 0, for the
#: last layer of a residual branch), or weight / spectral normalisation of the convolution itself.
NormType = Enum("NormType", "Batch BatchZero Weight Spectral")


# ------------------------------------------------------------------------------------------ shape layers
class Lambda(Module):
    """A layer that applies `func` (``Lambda(lambda x: x.view(x.size(0), -1))``)."""

    def __init__(self, func: Callable[[Tensor], Tensor]):
        self.func = func

    def forward(self, x: Tensor) -> Tensor:
        return self.func(x)


class PartialLayer(Module):
    """A layer that applies ``partial(func, **kwargs)``; its repr shows `func` and `kwargs`."""

    def __init__(self, func: Callable, **kwargs: Any):
        self.repr = f"{func}({kwargs})"
        self.func = partial(func, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return self.func(x)

    def __repr__(self) -> str:
        return self.repr


class View(Module):
    """Reshape the input to `size` (``x.view(*size)``, the batch dimension included)."""

    def __init__(self, *size: int):
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        return x.view(self.size)


class ResizeBatch(Module):
    """Reshape each item of the batch to `size` (``x.view(x.size(0), *size)``)."""

    def __init__(self, *size: int):
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        return x.view((x.size(0),) + self.size)


class Flatten(Module):
    """Flatten each item of the batch to a vector, ``(bs, -1)``; with `full`, the whole batch to one vector."""

    def __init__(self, full: bool = False):
        self.full = full

    def forward(self, x: Tensor) -> Tensor:
        return x.view(-1) if self.full else x.view(x.size(0), -1)


def PoolFlatten() -> nn.Sequential:  # noqa: N802  (v1's name)
    """Average-pool each channel to 1x1, then flatten: ``(bs, c, h, w)`` -> ``(bs, c)``."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), Flatten())


class AdaptiveConcatPool2d(Module):
    """Max pooling and average pooling to `sz` (1 if None), concatenated on the channels: ``2 * c`` channels."""

    def __init__(self, sz: int | None = None):
        self.output_size = sz or 1
        self.ap = nn.AdaptiveAvgPool2d(self.output_size)
        self.mp = nn.AdaptiveMaxPool2d(self.output_size)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.mp(x), self.ap(x)], 1)


class Debugger(Module):
    """A layer that stops in the debugger (``pdb.set_trace``) when the data goes through it."""

    def forward(self, x: Tensor) -> Tensor:
        import pdb

        pdb.set_trace()
        return x


# ------------------------------------------------------------------------------------------ init helpers
def trunc_normal_(x: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    """Fill `x` in place with normal draws folded into (-2, 2) (``fmod``) and scaled to `mean`/`std`, as v1."""
    with torch.no_grad():
        return x.normal_().fmod_(2).mul_(std).add_(mean)


def icnr(x: Tensor, scale: int = 2, init: Callable = nn.init.kaiming_normal_) -> None:
    """ICNR initialisation of the conv weight `x` (``(ni, nf, h, w)``) in place: each group of ``scale**2``
    output channels that `nn.PixelShuffle` merges into one starts with the same kernel, so the upsampling
    begins as a nearest-neighbour resize (no checkerboard artifacts)."""
    ni, nf, h, w = x.shape
    n_sub = int(ni / (scale**2))
    kernel = init(torch.zeros([n_sub, nf, h, w])).transpose(0, 1)  # one kernel per sub-pixel group
    kernel = kernel.contiguous().view(n_sub, nf, -1).repeat(1, 1, scale**2)  # each repeated scale**2 times
    kernel = kernel.contiguous().view([nf, ni, h, w]).transpose(0, 1)
    with torch.no_grad():
        x.copy_(kernel)


def _weight_norm(conv: nn.Module) -> nn.Module:
    # torch's legacy weight norm keeps v1's state-dict keys (weight_g, weight_v); its FutureWarning is torch's
    # advice to new code, not something a ported model can act on
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return nn.utils.weight_norm(conv)


def _spectral_norm(conv: nn.Module) -> nn.Module:
    return nn.utils.spectral_norm(conv)


# ------------------------------------------------------------------------------------------ building blocks
def relu(inplace: bool = False, leaky: float | None = None) -> nn.Module:
    """``nn.ReLU``, or ``nn.LeakyReLU`` with slope `leaky` when it is given."""
    return nn.LeakyReLU(inplace=inplace, negative_slope=leaky) if leaky is not None else nn.ReLU(inplace=inplace)


def batchnorm_2d(nf: int, norm_type: NormType = NormType.Batch) -> nn.BatchNorm2d:
    """``nn.BatchNorm2d(nf)`` with bias 1e-3 and weight 1 (0 for ``NormType.BatchZero``)."""
    bn = nn.BatchNorm2d(nf)
    with torch.no_grad():
        bn.bias.fill_(1e-3)
        bn.weight.fill_(0.0 if norm_type == NormType.BatchZero else 1.0)
    return bn


def bn_drop_lin(n_in: int, n_out: int, bn: bool = True, p: float = 0.0, actn: nn.Module | None = None) -> list:
    """The list ``[BatchNorm1d(n_in) if bn, Dropout(p) if p, Linear(n_in, n_out), actn if given]`` (a list, to
    be unpacked into an ``nn.Sequential``)."""
    layers: list[nn.Module] = [nn.BatchNorm1d(n_in)] if bn else []
    if p != 0:
        layers.append(nn.Dropout(p))
    layers.append(nn.Linear(n_in, n_out))
    if actn is not None:
        layers.append(actn)
    return layers


def conv1d(ni: int, no: int, ks: int = 1, stride: int = 1, padding: int = 0, bias: bool = False) -> nn.Module:
    """A spectral-normalised ``nn.Conv1d``, Kaiming-initialised (the projections of `SelfAttention`)."""
    conv = nn.Conv1d(ni, no, ks, stride=stride, padding=padding, bias=bias)
    nn.init.kaiming_normal_(conv.weight)
    if bias:
        with torch.no_grad():
            conv.bias.zero_()
    return _spectral_norm(conv)


def conv2d(ni: int, nf: int, ks: int = 3, stride: int = 1, padding: int | None = None, bias: bool = False,
           init: Callable | None = nn.init.kaiming_normal_) -> nn.Conv2d:
    """``nn.Conv2d`` with padding ``ks // 2`` by default, its weight initialised with `init`, its bias zeroed."""
    if padding is None:
        padding = ks // 2
    return init_default(nn.Conv2d(ni, nf, kernel_size=ks, stride=stride, padding=padding, bias=bias), init)


def conv2d_trans(ni: int, nf: int, ks: int = 2, stride: int = 2, padding: int = 0,
                 bias: bool = False) -> nn.ConvTranspose2d:
    """``nn.ConvTranspose2d``; the defaults double the spatial size."""
    return nn.ConvTranspose2d(ni, nf, kernel_size=ks, stride=stride, padding=padding, bias=bias)


def conv_layer(ni: int, nf: int, ks: int = 3, stride: int = 1, padding: int | None = None, bias: bool | None = None,
               is_1d: bool = False, norm_type: NormType | None = NormType.Batch, use_activ: bool = True,
               leaky: float | None = None, transpose: bool = False, init: Callable | None = nn.init.kaiming_normal_,
               self_attention: bool = False) -> nn.Sequential:
    """``nn.Sequential(conv, ReLU, BatchNorm, SelfAttention)``, the convolution block of fastai v1's models.

    * conv: ``Conv2d`` (``Conv1d`` if `is_1d`, ``ConvTranspose2d`` if `transpose`), padding ``(ks - 1) // 2``
      (0 when transposed), initialised with `init`; weight- or spectral-normalised for those `norm_type`s.
      It has a bias only without BatchNorm, unless `bias` says otherwise.
    * ReLU (``LeakyReLU(leaky)`` if given) unless ``use_activ=False``; BatchNorm for ``NormType.Batch`` and
      ``BatchZero``; `SelfAttention` if `self_attention`.
    """
    if padding is None:
        padding = (ks - 1) // 2 if not transpose else 0
    bn = norm_type in (NormType.Batch, NormType.BatchZero)
    if bias is None:
        bias = not bn
    conv_cls = nn.ConvTranspose2d if transpose else nn.Conv1d if is_1d else nn.Conv2d
    conv = init_default(conv_cls(ni, nf, kernel_size=ks, bias=bias, stride=stride, padding=padding), init)
    if norm_type == NormType.Weight:
        conv = _weight_norm(conv)
    elif norm_type == NormType.Spectral:
        conv = _spectral_norm(conv)
    layers = [conv]
    if use_activ:
        layers.append(relu(True, leaky=leaky))
    if bn:
        layers.append((nn.BatchNorm1d if is_1d else nn.BatchNorm2d)(nf))
    if self_attention:
        layers.append(SelfAttention(nf))
    return nn.Sequential(*layers)


def embedding(ni: int, nf: int) -> nn.Embedding:
    """``nn.Embedding(ni, nf)`` initialised with `trunc_normal_` of std 0.01."""
    emb = nn.Embedding(ni, nf)
    trunc_normal_(emb.weight, std=0.01)
    return emb


def simple_cnn(actns: Sequence[int], kernel_szs: Sequence[int] | None = None, strides: Sequence[int] | None = None,
               bn: bool = False) -> nn.Sequential:
    """A CNN of ``len(actns) - 1`` `conv_layer`s from ``actns[i]`` to ``actns[i + 1]`` channels, then `PoolFlatten`.

    Kernel sizes default to 3 and strides to 2.  With `bn`, every conv layer but the last has BatchNorm;
    without it there is none (and the convolutions have a bias).  Output: ``(bs, actns[-1])``.
    """
    n_layers = len(actns) - 1
    kernel_szs = ifnone(kernel_szs, [3] * n_layers)
    strides = ifnone(strides, [2] * n_layers)
    layers = []
    for i in range_of(strides):
        norm = NormType.Batch if bn and i < len(strides) - 1 else None
        layers.append(conv_layer(actns[i], actns[i + 1], kernel_szs[i], stride=strides[i], norm_type=norm))
    layers.append(PoolFlatten())
    return nn.Sequential(*layers)


class SequentialEx(Module):
    """Like ``nn.Sequential``, but each layer can read the block's input as ``x.orig`` (see `MergeLayer`).

    Indexing, ``append``, ``extend`` and ``insert`` work as on an ``nn.ModuleList``.
    """

    def __init__(self, *layers: nn.Module):
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:
        res = x
        for layer in self.layers:
            res.orig = x
            out = layer(res)
            res.orig = None  # drop the reference, or every intermediate would keep the input alive
            res = out
        return res

    def __getitem__(self, i: int) -> nn.Module:
        return self.layers[i]

    def append(self, layer: nn.Module) -> None:
        self.layers.append(layer)

    def extend(self, layers: Sequence[nn.Module]) -> None:
        self.layers.extend(layers)

    def insert(self, i: int, layer: nn.Module) -> None:
        self.layers.insert(i, layer)


class MergeLayer(Module):
    """Inside a `SequentialEx`: add the block's input to ``x`` (``x + x.orig``), or concatenate it on the
    channels with `dense`."""

    def __init__(self, dense: bool = False):
        self.dense = dense

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, x.orig], dim=1) if self.dense else x + x.orig


def res_block(nf: int, dense: bool = False, norm_type: NormType | None = NormType.Batch, bottle: bool = False,
              **conv_kwargs: Any) -> SequentialEx:
    """A residual block: two `conv_layer`s (``nf`` -> ``nf // 2 if bottle`` -> ``nf``) and a `MergeLayer`.

    With BatchNorm and no `dense`, the second BatchNorm is ``BatchZero``-typed as in v1 (the type only
    matters for `batchnorm_2d`; `conv_layer` builds a plain ``BatchNorm2d``).
    """
    norm2 = norm_type
    if not dense and norm_type == NormType.Batch:
        norm2 = NormType.BatchZero
    nf_inner = nf // 2 if bottle else nf
    return SequentialEx(conv_layer(nf, nf_inner, norm_type=norm_type, **conv_kwargs),
                        conv_layer(nf_inner, nf, norm_type=norm2, **conv_kwargs),
                        MergeLayer(dense))


def sigmoid_range(x: Tensor, low: float, high: float) -> Tensor:
    """The sigmoid of `x`, scaled to the range (`low`, `high`)."""
    return torch.sigmoid(x) * (high - low) + low


class SigmoidRange(Module):
    """A layer applying `sigmoid_range` with `low` and `high`."""

    def __init__(self, low: float, high: float):
        self.low, self.high = low, high

    def forward(self, x: Tensor) -> Tensor:
        return sigmoid_range(x, self.low, self.high)


class BatchNorm1dFlat(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` over the last dimension of an input of any rank (leading dimensions are flattened)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            return super().forward(x)
        *lead, n = x.shape
        return super().forward(x.contiguous().view(-1, n)).view(*lead, n)


class PixelShuffle_ICNR(Module):  # noqa: N801  (v1's name)
    """Upsample by `scale` from `ni` to `nf` channels (default `ni`): a 1x1 `conv_layer` to ``nf * scale**2``
    channels (weight-normalised by default, ICNR-initialised), ReLU, ``nn.PixelShuffle``; with `blur`, a
    replication pad and a 2x2 average pool (stride 1) that smooth the result."""

    def __init__(self, ni: int, nf: int | None = None, scale: int = 2, blur: bool = False,
                 norm_type: NormType | None = NormType.Weight, leaky: float | None = None):
        nf = ifnone(nf, ni)
        self.conv = conv_layer(ni, nf * (scale**2), ks=1, norm_type=norm_type, use_activ=False)
        _icnr_into(self.conv[0], scale)
        self.shuf = nn.PixelShuffle(scale)
        self.pad = nn.ReplicationPad2d((1, 0, 1, 0))
        self.blur = nn.AvgPool2d(2, stride=1)
        self.do_blur = blur
        self.relu = relu(True, leaky=leaky)

    def forward(self, x: Tensor) -> Tensor:
        x = self.shuf(self.relu(self.conv(x)))
        return self.blur(self.pad(x)) if self.do_blur else x


def _icnr_into(conv: nn.Module, scale: int) -> None:
    """ICNR-initialise `conv` so that its effective weight is the ICNR kernel, whatever its normalisation."""
    if hasattr(conv, "weight_v") and hasattr(conv, "weight_g"):  # legacy weight norm: weight = g * v / |v|
        icnr(conv.weight_v, scale)
        with torch.no_grad():
            dims = tuple(range(1, conv.weight_v.dim()))
            conv.weight_g.copy_(torch.linalg.vector_norm(conv.weight_v, dim=dims, keepdim=True))
            conv.weight = conv.weight_v.clone()  # g = |v| so g * v / |v| = v; each forward recomputes it
    elif hasattr(conv, "weight_orig"):  # spectral norm: weight = weight_orig / sigma
        icnr(conv.weight_orig, scale)
    else:
        icnr(conv.weight, scale)


# ------------------------------------------------------------------------------------------ attention
class SelfAttention(Module):
    """Self-attention over all positions of an n-d feature map (SAGAN); starts as the identity (``gamma = 0``).

    Query and key project to ``n_channels // 8`` channels, the value keeps ``n_channels`` (spectral-normalised
    1x1 ``Conv1d``s); output ``gamma * attention + x``, same shape as ``x``.
    """

    def __init__(self, n_channels: int):
        self.query = conv1d(n_channels, n_channels // 8)
        self.key = conv1d(n_channels, n_channels // 8)
        self.value = conv1d(n_channels, n_channels)
        self.gamma = nn.Parameter(torch.tensor([0.0]))

    def forward(self, x: Tensor) -> Tensor:
        size = x.size()
        x = x.view(*size[:2], -1)  # (bs, c, positions)
        f, g, h = self.query(x), self.key(x), self.value(x)
        beta = F.softmax(torch.bmm(f.permute(0, 2, 1).contiguous(), g), dim=1)  # (bs, positions, positions)
        o = self.gamma * torch.bmm(h, beta) + x
        return o.view(*size).contiguous()


class PooledSelfAttention2d(Module):
    """BigGAN's self-attention for 2-d maps: keys and values max-pooled by 2 (even height and width needed);
    starts as the identity (``gamma = 0``)."""

    def __init__(self, n_channels: int):
        self.n_channels = n_channels
        self.theta = _spectral_norm(conv2d(n_channels, n_channels // 8, 1))  # query
        self.phi = _spectral_norm(conv2d(n_channels, n_channels // 8, 1))  # key
        self.g = _spectral_norm(conv2d(n_channels, n_channels // 2, 1))  # value
        self.o = _spectral_norm(conv2d(n_channels // 2, n_channels, 1))
        self.gamma = nn.Parameter(torch.tensor([0.0]))

    def forward(self, x: Tensor) -> Tensor:
        n, (h, w) = self.n_channels, x.shape[2:]
        theta = self.theta(x).view(-1, n // 8, h * w)
        phi = F.max_pool2d(self.phi(x), [2, 2]).view(-1, n // 8, h * w // 4)
        g = F.max_pool2d(self.g(x), [2, 2]).view(-1, n // 2, h * w // 4)
        beta = F.softmax(torch.bmm(theta.transpose(1, 2), phi), -1)
        o = self.o(torch.bmm(g, beta.transpose(1, 2)).view(-1, n // 2, h, w))
        return self.gamma * o + x


# ------------------------------------------------------------------------------------------ losses
class FlattenedLoss:
    """``func(*args, **kwargs)`` (a torch loss class) applied to flattened inputs and targets.

    The class axis `axis` is moved last; the input becomes ``(-1, n_classes)`` (``is_2d``) or a vector, the
    target a vector (cast to float with `floatify`).  ``reduction`` and ``weight`` read and write the wrapped
    loss's, and other attributes it lacks are read from it, so ``get_preds(with_loss=True)`` and the
    activation lookup (``loss_func.func``) work as in v1.
    """

    def __init__(self, func: type, *args: Any, axis: int = -1, floatify: bool = False, is_2d: bool = True,
                 **kwargs: Any):
        self.func, self.axis, self.floatify, self.is_2d = func(*args, **kwargs), axis, floatify, is_2d

    def __repr__(self) -> str:
        return f"FlattenedLoss of {self.func}"

    @property
    def reduction(self) -> str:
        return self.func.reduction

    @reduction.setter
    def reduction(self, v: str) -> None:
        self.func.reduction = v

    @property
    def weight(self) -> Tensor | None:
        return self.func.weight

    @weight.setter
    def weight(self, v: Tensor | None) -> None:
        self.func.weight = v

    def __getattr__(self, name: str) -> Any:
        # only reached for what the instance lacks; `func` itself is missing while unpickling
        if name == "func" or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        return getattr(self.func, name)

    def __call__(self, input: Tensor, target: Tensor, **kwargs: Any) -> Tensor:  # noqa: A002
        input = input.transpose(self.axis, -1).contiguous()  # noqa: A001
        target = target.transpose(self.axis, -1).contiguous()
        if self.floatify:
            target = target.float()
        input = input.view(-1, input.shape[-1]) if self.is_2d else input.view(-1)  # noqa: A001
        return self.func(input, target.view(-1), **kwargs)


def CrossEntropyFlat(*args: Any, axis: int = -1, **kwargs: Any) -> FlattenedLoss:  # noqa: N802
    """``nn.CrossEntropyLoss`` on flattened input and target (segmentation maps, sequences...)."""
    return FlattenedLoss(nn.CrossEntropyLoss, *args, axis=axis, **kwargs)


def BCEWithLogitsFlat(*args: Any, axis: int = -1, floatify: bool = True, **kwargs: Any) -> FlattenedLoss:  # noqa: N802
    """``nn.BCEWithLogitsLoss`` on flattened input and (float) target."""
    return FlattenedLoss(nn.BCEWithLogitsLoss, *args, axis=axis, floatify=floatify, is_2d=False, **kwargs)


def BCEFlat(*args: Any, axis: int = -1, floatify: bool = True, **kwargs: Any) -> FlattenedLoss:  # noqa: N802
    """``nn.BCELoss`` on flattened input and (float) target."""
    return FlattenedLoss(nn.BCELoss, *args, axis=axis, floatify=floatify, is_2d=False, **kwargs)


def MSELossFlat(*args: Any, axis: int = -1, floatify: bool = True, **kwargs: Any) -> FlattenedLoss:  # noqa: N802
    """``nn.MSELoss`` on flattened input and (float) target."""
    return FlattenedLoss(nn.MSELoss, *args, axis=axis, floatify=floatify, is_2d=False, **kwargs)


class NoopLoss(Module):
    """The mean of the output, whatever the target (a model that computes its own loss)."""

    def forward(self, output: Tensor, *args: Any) -> Tensor:
        return output.mean()


class WassersteinLoss(Module):
    """The WGAN critic loss: ``real.mean() - fake.mean()``."""

    def forward(self, real: Tensor, fake: Tensor) -> Tensor:
        return real.mean() - fake.mean()


class LabelSmoothingCrossEntropy(Module):
    """Cross-entropy against targets smoothed by `eps`: ``eps / c`` of the loss spreads over all classes.

    ``loss = eps / c * (-sum of log-probabilities) + (1 - eps) * nll``, reduced by `reduction` ('mean', 'sum'
    or 'none').
    """

    def __init__(self, eps: float = 0.1, reduction: str = "mean"):
        self.eps, self.reduction = eps, reduction

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        c = output.size()[-1]
        log_preds = F.log_softmax(output, dim=-1)
        if self.reduction == "sum":
            loss = -log_preds.sum()
        else:
            loss = -log_preds.sum(dim=-1)
            if self.reduction == "mean":
                loss = loss.mean()
        return loss * self.eps / c + (1 - self.eps) * F.nll_loss(log_preds, target, reduction=self.reduction)
