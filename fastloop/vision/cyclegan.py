# ruff: noqa: N802, N803, N806  (fastai v1's names: G_A, real_A, loss_D_A, convT_norm_relu...)
"""CycleGAN: the models, the loss and the trainer of fastai v1's ``fastai.vision.cyclegan``, in plain torch.

A CycleGAN learns two translations between unpaired image domains A and B: ``G_A`` turns B images into A
images and ``G_B`` turns A images into B images, while the critics ``D_A`` and ``D_B`` learn to tell real from
generated images of their domain.  The training loop only trains the generators (the learner's optimizer is
swapped for theirs); `CycleGANTrainer` steps both critics itself at the end of every batch.

The data is a pair of images per item and no validation set: ``last_input`` is the list ``[real_A, real_B]``
(fastai v1 unpacks it into ``model(real_A, real_B)``), the target is a dummy that the loss does not read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..basic_train import LearnerCallback
from ..callback import SmoothenValue
from ..core import ifnone
from ..torch_core import add_metrics, flatten_model, requires_grad

__all__ = ["CycleGAN", "CycleGanLoss", "AdaptiveLoss", "CycleGANTrainer", "convT_norm_relu", "pad_conv_norm_relu",
           "ResnetBlock", "resnet_generator", "conv_norm_lr", "critic"]


# ============================================================================================ building blocks
def _init_conv(conv: nn.Module, init: Callable | None) -> None:
    "Initialise `conv`'s weight with `init` and zero its bias (nothing when `init` is None)."
    if not init:
        return
    init(conv.weight)
    if getattr(conv, "bias", None) is not None:
        conv.bias.data.fill_(0.0)


def convT_norm_relu(ch_in: int, ch_out: int, norm_layer: Callable[[int], nn.Module], ks: int = 3, stride: int = 2,
                    bias: bool = True) -> list[nn.Module]:
    "Upsampling block: a transposed conv that doubles the size (with `stride` 2), `norm_layer`, ReLU."
    up = nn.ConvTranspose2d(ch_in, ch_out, kernel_size=ks, stride=stride, padding=1, output_padding=1, bias=bias)
    return [up, norm_layer(ch_out), nn.ReLU(True)]


def pad_conv_norm_relu(ch_in: int, ch_out: int, pad_mode: str, norm_layer: Callable[[int], nn.Module], ks: int = 3,
                       bias: bool = True, pad: int = 1, stride: int = 1, activ: bool = True,
                       init: Callable | None = nn.init.kaiming_normal_) -> list[nn.Module]:
    """Padding, conv, `norm_layer` and (if `activ`) ReLU.

    `pad_mode` 'reflection' or 'border' adds an explicit padding layer (``ReflectionPad2d``/``ReplicationPad2d``)
    and a conv without padding; 'zeros' lets the conv pad with zeros.
    """
    layers: list[nn.Module] = []
    if pad_mode == "reflection":
        layers.append(nn.ReflectionPad2d(pad))
    elif pad_mode == "border":
        layers.append(nn.ReplicationPad2d(pad))
    conv_pad = pad if pad_mode == "zeros" else 0
    conv = nn.Conv2d(ch_in, ch_out, kernel_size=ks, padding=conv_pad, stride=stride, bias=bias)
    _init_conv(conv, init)
    layers += [conv, norm_layer(ch_out)]
    if activ:
        layers.append(nn.ReLU(inplace=True))
    return layers


class ResnetBlock(nn.Module):
    "Two padded convs (with an optional dropout between them) added back to the input: ``x + conv_block(x)``."

    def __init__(self, dim: int, pad_mode: str = "reflection", norm_layer: Callable[[int], nn.Module] | None = None,
                 dropout: float = 0.0, bias: bool = True):
        super().__init__()
        assert pad_mode in ["zeros", "reflection", "border"], f"padding {pad_mode} not implemented."
        norm_layer = ifnone(norm_layer, nn.InstanceNorm2d)
        layers = pad_conv_norm_relu(dim, dim, pad_mode, norm_layer, bias=bias)
        if dropout != 0:
            layers.append(nn.Dropout(dropout))
        layers += pad_conv_norm_relu(dim, dim, pad_mode, norm_layer, bias=bias, activ=False)
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def resnet_generator(ch_in: int, ch_out: int, n_ftrs: int = 64, norm_layer: Callable[[int], nn.Module] | None = None,
                     dropout: float = 0.0, n_blocks: int = 6, pad_mode: str = "reflection") -> nn.Sequential:
    """The CycleGAN generator: a 7x7 conv, two stride-2 downsamplings, `n_blocks` `ResnetBlock`s, two
    upsamplings and a 7x7 conv to `ch_out` channels with a tanh.  Image sides must be multiples of 4."""
    norm_layer = ifnone(norm_layer, nn.InstanceNorm2d)
    bias = norm_layer == nn.InstanceNorm2d  # instance norm has no affine shift by default: the convs keep a bias
    layers = pad_conv_norm_relu(ch_in, n_ftrs, "reflection", norm_layer, pad=3, ks=7, bias=bias)
    for _ in range(2):  # downsample twice, doubling the features
        layers += pad_conv_norm_relu(n_ftrs, n_ftrs * 2, "zeros", norm_layer, stride=2, bias=bias)
        n_ftrs *= 2
    layers += [ResnetBlock(n_ftrs, pad_mode, norm_layer, dropout, bias) for _ in range(n_blocks)]
    for _ in range(2):  # upsample twice, halving the features
        layers += convT_norm_relu(n_ftrs, n_ftrs // 2, norm_layer, bias=bias)
        n_ftrs //= 2
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(n_ftrs, ch_out, kernel_size=7, padding=0), nn.Tanh()]
    return nn.Sequential(*layers)


def conv_norm_lr(ch_in: int, ch_out: int, norm_layer: Callable[[int], nn.Module] | None = None, ks: int = 3,
                 bias: bool = True, pad: int = 1, stride: int = 1, activ: bool = True, slope: float = 0.2,
                 init: Callable | None = nn.init.kaiming_normal_) -> list[nn.Module]:
    "Conv, `norm_layer` (if given) and (if `activ`) a LeakyReLU of `slope`."
    conv = nn.Conv2d(ch_in, ch_out, kernel_size=ks, padding=pad, stride=stride, bias=bias)
    _init_conv(conv, init)
    layers: list[nn.Module] = [conv]
    if norm_layer is not None:
        layers.append(norm_layer(ch_out))
    if activ:
        layers.append(nn.LeakyReLU(slope, inplace=True))
    return layers


def critic(ch_in: int, n_ftrs: int = 64, n_layers: int = 3, norm_layer: Callable[[int], nn.Module] | None = None,
           sigmoid: bool = False) -> nn.Sequential:
    """The PatchGAN critic: `n_layers` stride-2 4x4 convs, one stride-1 conv and a 1-channel output map.

    Each stride-2 conv halves the side and the two last convs take 1 off each: an image side must be at least
    ``2**n_layers * 3`` (n_layers=2 works from 12 pixels, the default 3 from 24).
    """
    norm_layer = ifnone(norm_layer, nn.InstanceNorm2d)
    bias = norm_layer == nn.InstanceNorm2d
    layers = conv_norm_lr(ch_in, n_ftrs, ks=4, stride=2, pad=1)  # no norm on the first layer
    for i in range(n_layers - 1):
        new_ftrs = 2 * n_ftrs if i <= 3 else n_ftrs
        layers += conv_norm_lr(n_ftrs, new_ftrs, norm_layer, ks=4, stride=2, pad=1, bias=bias)
        n_ftrs = new_ftrs
    new_ftrs = 2 * n_ftrs if n_layers <= 3 else n_ftrs
    layers += conv_norm_lr(n_ftrs, new_ftrs, norm_layer, ks=4, stride=1, pad=1, bias=bias)
    layers.append(nn.Conv2d(new_ftrs, 1, kernel_size=4, stride=1, padding=1))
    if sigmoid:
        layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


# ====================================================================================================== model
class CycleGAN(nn.Module):
    """Two generators and two critics in one module.

    * ``G_A`` takes real B images and generates fake A images; ``G_B`` takes real A and generates fake B.
    * ``D_A`` tells real A from fake A; ``D_B`` real B from fake B.

    ``forward(real_A, real_B)`` returns ``[fake_A, fake_B, idt_A, idt_B]`` in training (the identity images
    ``G_A(real_A)``, ``G_B(real_B)`` feed the identity loss) and, in eval mode, the fakes stacked as one
    tensor of shape ``(bs, 2, C, H, W)``.  The critics are not called by `forward`: the loss and the trainer
    call them.
    """

    def __init__(self, ch_in: int, ch_out: int, n_features: int = 64, disc_layers: int = 3, gen_blocks: int = 6,
                 lsgan: bool = True, drop: float = 0.0, norm_layer: Callable[[int], nn.Module] | None = None):
        super().__init__()
        # built in this order (D_A, D_B, G_A, G_B) so that a seeded run draws the same initial weights as v1
        self.D_A = critic(ch_in, n_features, disc_layers, norm_layer, sigmoid=not lsgan)
        self.D_B = critic(ch_in, n_features, disc_layers, norm_layer, sigmoid=not lsgan)
        self.G_A = resnet_generator(ch_in, ch_out, n_features, norm_layer, drop, gen_blocks)
        self.G_B = resnet_generator(ch_in, ch_out, n_features, norm_layer, drop, gen_blocks)

    def forward(self, real_A: torch.Tensor, real_B: torch.Tensor) -> Any:
        fake_A, fake_B = self.G_A(real_B), self.G_B(real_A)
        if not self.training:
            return torch.cat([fake_A[:, None], fake_B[:, None]], 1)
        idt_A, idt_B = self.G_A(real_A), self.G_B(real_B)
        return [fake_A, fake_B, idt_A, idt_B]


# ======================================================================================================= loss
class AdaptiveLoss(nn.Module):
    """Compares a critic's output map with all ones (`target` True, "real") or all zeros (False, "fake")."""

    def __init__(self, crit: Callable[..., torch.Tensor]):
        super().__init__()
        self.crit = crit

    def forward(self, output: torch.Tensor, target: bool) -> torch.Tensor:
        targ = output.new_ones(*output.size()) if target else output.new_zeros(*output.size())
        return self.crit(output, targ)


class CycleGanLoss(nn.Module):
    """The generators' loss: identity + adversarial + cycle-consistency terms.

    The training loop calls ``loss_func(output, target)`` with a dummy target, so the real images come in
    through ``set_input([real_A, real_B])`` (`CycleGANTrainer` calls it at every ``on_batch_begin``).  Each call
    stores the three terms, ``metrics = [idt_loss, gen_loss, cyc_loss]``, and returns their sum:

    * identity: ``lambda_idt * (lambda_B * L1(G_A(real_A), real_B) + lambda_A * L1(G_B(real_B), real_A))``
      (fastai 1.0.61 compares each identity image with the *other* domain's batch; kept as it is);
    * adversarial (``gen_loss``): the critics should say "real" (1) to the fakes, through `crit`
      (`AdaptiveLoss` around MSE with `lsgan`, binary cross-entropy otherwise);
    * cycle: ``lambda_A * L1(G_A(fake_B), real_A) + lambda_B * L1(G_B(fake_A), real_B)``.
    """

    def __init__(self, cgan: nn.Module, lambda_A: float = 10.0, lambda_B: float = 10, lambda_idt: float = 0.5,
                 lsgan: bool = True):
        super().__init__()
        self.cgan, self.l_A, self.l_B, self.l_idt = cgan, lambda_A, lambda_B, lambda_idt
        self.crit = AdaptiveLoss(F.mse_loss if lsgan else F.binary_cross_entropy)

    def set_input(self, input: Any) -> None:  # noqa: A002 (fastai v1's name)
        "Keep the real images of the batch: `input` is ``[real_A, real_B]``."
        self.real_A, self.real_B = input

    def forward(self, output: Any, target: Any) -> torch.Tensor:
        fake_A, fake_B, idt_A, idt_B = output
        idt_loss = self.l_idt * (self.l_B * F.l1_loss(idt_A, self.real_B) + self.l_A * F.l1_loss(idt_B, self.real_A))
        gen_loss = self.crit(self.cgan.D_A(fake_A), True) + self.crit(self.cgan.D_B(fake_B), True)
        cycle_loss = self.l_A * F.l1_loss(self.cgan.G_A(fake_B), self.real_A)
        cycle_loss = cycle_loss + self.l_B * F.l1_loss(self.cgan.G_B(fake_A), self.real_B)
        self.metrics = [idt_loss, gen_loss, cycle_loss]
        return idt_loss + gen_loss + cycle_loss


# ==================================================================================================== trainer
class CycleGANTrainer(LearnerCallback):
    """Trains a `CycleGAN`: the loop steps the generators, this callback steps both critics after each batch.

    Give it as ``callback_fns=[CycleGANTrainer]`` (a fresh instance, with fresh optimizers, at every fit).

    Events, state keys and what each one does:

    * ``on_train_begin``: creates three `OptimWrapper`s with ``learn.opt.new`` -- ``opt_G`` over both generators,
      ``opt_D_A`` and ``opt_D_B`` over each critic -- and **replaces the learner's inner torch optimizer**
      (``learn.opt.opt``) by the generators' one, so the loop's ``opt.step()`` updates the generators and the
      schedulers that set ``learn.opt.lr`` drive it.  Freezes the critics, sets ``learn.recorder.no_val`` and
      adds the columns ``idt_loss gen_loss cyc_loss da_loss db_loss``.  Returns ``{'skip_validate': True}``
      when the data has a validation set (see below); otherwise nothing.
    * ``on_batch_begin`` reads ``last_input`` (``[real_A, real_B]``) and hands it to ``loss_func.set_input``:
      the loop calls the loss with a dummy target.
    * ``on_batch_end`` reads ``last_input`` and ``last_output`` (``[fake_A, fake_B, idt_A, idt_B]``) -- the loop
      handed the handler only the loss; the handler kept these keys from ``on_batch_begin`` and
      ``on_loss_begin``.  After the generators' step it trains D_A (real A vs detached fake A), then D_B, each
      with the learner's current ``lr``, ``mom``, ``wd`` and ``beta`` copied onto its optimizer, and records
      the five losses in smoothers (beta 0.98).
    * ``on_epoch_end`` reads ``last_metrics`` (``[None]``: there was no validation) and returns it with the
      five smoothed losses appended.

    ``_order = -20``: before the `Recorder` (-10), whose ``on_train_begin`` reads the added column names and
    whose ``on_epoch_end`` prints ``last_metrics``.

    Differences from fastai 1.0.61, where it misbehaved:

    * the smoothed losses are detached: v1 smoothed the live loss tensors, so each smoother kept the autograd
      graph of every batch of the fit alive (memory grew with each batch); the numbers are the same;
    * with ``no_val`` the Recorder leaves the valid-loss slot out of the printed row (v1 printed ``#na#`` under
      ``idt_loss`` and shifted every value one column to the right);
    * a validation set is skipped instead of crashing the fit (in eval mode the model returns a stacked tensor
      that the loss cannot score, and the critics' backward ran under ``no_grad``).
    """

    _order = -20
    names = ["idt_loss", "gen_loss", "cyc_loss", "da_loss", "db_loss"]

    def _set_trainable(self, D_A: bool = False, D_B: bool = False) -> None:
        "Generator mode (both False): G trainable, D frozen; else only the named critic, with the learner's hypers."
        gen = not D_A and not D_B
        model = self.learn.model
        requires_grad(model.G_A, gen)
        requires_grad(model.G_B, gen)
        requires_grad(model.D_A, D_A)
        requires_grad(model.D_B, D_B)
        if not gen:  # the critics follow the learner's schedule: copy its hyper-parameters at each switch
            opt = self.learn.opt
            for d_opt in (self.opt_D_A, self.opt_D_B):
                d_opt.lr, d_opt.mom = opt.lr, opt.mom
                d_opt.wd, d_opt.beta = opt.wd, opt.beta

    def on_train_begin(self, **kwargs: Any) -> dict | None:
        "Create the three optimizers, put the generators' in the learner, add the five columns."
        model = self.learn.model
        self.G_A, self.G_B, self.D_A, self.D_B = model.G_A, model.G_B, model.D_A, model.D_B
        self.crit = self.learn.loss_func.crit
        self.opt_G = self.learn.opt.new([nn.Sequential(*flatten_model(self.G_A), *flatten_model(self.G_B))])
        self.opt_D_A = self.learn.opt.new([nn.Sequential(*flatten_model(self.D_A))])
        self.opt_D_B = self.learn.opt.new([nn.Sequential(*flatten_model(self.D_B))])
        self.learn.opt.opt = self.opt_G.opt  # the loop's opt.step() now updates the generators only
        self._set_trainable()
        self.learn.recorder.no_val = True
        self.learn.recorder.add_metric_names(self.names)
        self.smootheners = {n: SmoothenValue(0.98) for n in self.names}
        if not self.learn.data.empty_val:
            return {"skip_validate": True}
        return None

    def on_batch_begin(self, last_input: Any, **kwargs: Any) -> None:
        "Register the real images ``[real_A, real_B]`` in the loss function."
        self.learn.loss_func.set_input(last_input)

    def on_batch_end(self, last_input: Any, last_output: Any, **kwargs: Any) -> None:
        "After the generators' step: one step of D_A, then one of D_B; smooth the five losses."
        self.G_A.zero_grad()
        self.G_B.zero_grad()
        fake_A, fake_B = last_output[0].detach(), last_output[1].detach()
        real_A, real_B = last_input
        self._set_trainable(D_A=True)
        self.D_A.zero_grad()
        loss_D_A = 0.5 * (self.crit(self.D_A(real_A), True) + self.crit(self.D_A(fake_A), False))
        loss_D_A.backward()
        self.opt_D_A.step()
        self._set_trainable(D_B=True)
        self.D_B.zero_grad()
        loss_D_B = 0.5 * (self.crit(self.D_B(real_B), True) + self.crit(self.D_B(fake_B), False))
        loss_D_B.backward()
        self.opt_D_B.step()
        self._set_trainable()
        values = list(self.learn.loss_func.metrics) + [loss_D_A, loss_D_B]
        for name, value in zip(self.names, values):
            self.smootheners[name].add_value(value.detach())  # detached: no autograd graph kept alive

    def on_epoch_end(self, last_metrics: Any, **kwargs: Any) -> dict:
        "Append the five smoothed losses to ``last_metrics``."
        return add_metrics(last_metrics, [s.smooth for s in self.smootheners.values()])
