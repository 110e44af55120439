"""GAN training as in fastai v1's ``fastai.vision.gan``: one model, one loss, two optimizers, swapped by a callback.

How it works (the same as v1):

* `GANModule` holds a generator and a critic and calls one of them, depending on ``gen_mode``.  `GANLoss` does
  the same with the two loss functions.  The `Learner` trains whichever part is active.
* `GANTrainer` owns two optimizers (built with ``learn.opt.new``) and, at every switch, puts the active one
  into the learner (``learn.opt.opt``), freezes the other part and switches the model and the loss.  In critic
  mode it swaps input and target at ``on_batch_begin``, so the critic sees the real images and the loss gets
  the noise to make fakes from.
* A switcher decides when to switch: `FixedGANSwitcher` (``n_crit`` critic batches, then ``n_gen`` generator
  batches) or `AdaptiveGANSwitcher` (when the loss goes below a threshold).
* `GANLearner` wires it up: the trainer goes in ``learn.callbacks`` (it persists across fits), the switcher in
  ``callback_fns``.

The data: the input is the noise (or the image to improve), the target the real image.  No torchvision and no
ItemLists: any dataset of ``(input, target)`` tensors works; the sample shown at each epoch end is the first
generated item (passed through ``train_ds.y.reconstruct`` when the dataset has one).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from ..basic_data import DataBunch
from ..basic_train import Learner, LearnerCallback
from ..callback import Callback, SmoothenValue
from ..core import ifnone
from ..layers import Flatten, Lambda, NoopLoss, NormType, WassersteinLoss, conv2d, conv2d_trans, conv_layer, res_block
from ..torch_core import add_metrics, flatten_model, requires_grad, to_half

__all__ = ["basic_critic", "basic_generator", "GANModule", "GANLoss", "GANTrainer", "FixedGANSwitcher",
           "AdaptiveGANSwitcher", "GANLearner", "gan_critic", "gan_loss_from_func", "AdaptiveLoss",
           "accuracy_thresh_expand", "GANDiscriminativeLR", "NoopLoss", "WassersteinLoss", "GANImage", "show_imgs"]


# ============================================================================================== model builders
def AvgFlatten() -> Lambda:  # noqa: N802 (fastai v1's name)
    "The mean over the batch, as a 1-element tensor (the last layer of `basic_critic`)."
    return Lambda(lambda x: x.mean(0).view(1))


def basic_critic(in_size: int, n_channels: int, n_features: int = 64, n_extra_layers: int = 0,
                 **conv_kwargs: Any) -> nn.Sequential:
    """A DCGAN critic for `n_channels` x `in_size` x `in_size` images (`in_size` a power of 2, at least 8).

    Stride-2 convs halve the size down to 4x4, a 4x4 conv gives one number per image, and the last layer takes
    the mean over the batch: the output is a 1-element tensor, what `WassersteinLoss` compares.
    """
    layers: list[nn.Module] = [conv_layer(n_channels, n_features, 4, 2, 1, leaky=0.2, norm_type=None, **conv_kwargs)]
    cur_size, cur_ftrs = in_size // 2, n_features
    extra = [conv_layer(cur_ftrs, cur_ftrs, 3, 1, leaky=0.2, **conv_kwargs) for _ in range(n_extra_layers)]
    layers.append(nn.Sequential(*extra))
    while cur_size > 4:
        layers.append(conv_layer(cur_ftrs, cur_ftrs * 2, 4, 2, 1, leaky=0.2, **conv_kwargs))
        cur_ftrs *= 2
        cur_size //= 2
    layers += [conv2d(cur_ftrs, 1, 4, padding=0), AvgFlatten()]
    return nn.Sequential(*layers)


def basic_generator(in_size: int, n_channels: int, noise_sz: int = 100, n_features: int = 64, n_extra_layers: int = 0,
                    **conv_kwargs: Any) -> nn.Sequential:
    """A DCGAN generator from noise of shape ``(bs, noise_sz, 1, 1)`` to `n_channels` x `in_size` x `in_size`
    images in [-1, 1] (a tanh); `in_size` a power of 2, at least 8."""
    cur_size, cur_ftrs = 4, n_features // 2
    while cur_size < in_size:  # the features of the first layer: doubled once per doubling of the size
        cur_size *= 2
        cur_ftrs *= 2
    layers: list[nn.Module] = [conv_layer(noise_sz, cur_ftrs, 4, 1, transpose=True, **conv_kwargs)]
    cur_size = 4
    while cur_size < in_size // 2:
        layers.append(conv_layer(cur_ftrs, cur_ftrs // 2, 4, 2, 1, transpose=True, **conv_kwargs))
        cur_ftrs //= 2
        cur_size *= 2
    layers += [conv_layer(cur_ftrs, cur_ftrs, 3, 1, 1, transpose=True, **conv_kwargs) for _ in range(n_extra_layers)]
    layers += [conv2d_trans(cur_ftrs, n_channels, 4, 2, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


def _spectral_conv(ni: int, nf: int, ks: int = 3, stride: int = 1, **kwargs: Any) -> nn.Sequential:
    return conv_layer(ni, nf, ks=ks, stride=stride, leaky=0.2, norm_type=NormType.Spectral, **kwargs)


def gan_critic(n_channels: int = 3, nf: int = 128, n_blocks: int = 3, p: float = 0.15) -> nn.Sequential:
    """The critic of fastai v1's super-resolution GAN: spectral-normalised convs, a dense residual block,
    self-attention after the first downsampling block and dropout; one logit per 4x4 patch, flattened.
    Image sides must be at least ``2 ** (n_blocks + 1) * 4``."""
    layers: list[nn.Module] = [_spectral_conv(n_channels, nf, ks=4, stride=2), nn.Dropout2d(p / 2),
                               res_block(nf, dense=True, leaky=0.2, norm_type=NormType.Spectral)]
    nf *= 2  # the dense block concatenated its input
    for i in range(n_blocks):
        layers += [nn.Dropout2d(p), _spectral_conv(nf, nf * 2, ks=4, stride=2, self_attention=(i == 0))]
        nf *= 2
    layers += [_spectral_conv(nf, 1, ks=4, bias=False, padding=0, use_activ=False), Flatten()]
    return nn.Sequential(*layers)


# =========================================================================================== module and loss
class GANModule(nn.Module):
    """A generator and a critic in one module: ``forward`` calls the generator in ``gen_mode``, else the critic."""

    def __init__(self, generator: nn.Module | None = None, critic: nn.Module | None = None, gen_mode: bool = False):
        super().__init__()
        self.gen_mode = gen_mode
        if generator is not None:  # `GANLoss` has methods of these names instead
            self.generator, self.critic = generator, critic

    def forward(self, *args: Any) -> Any:
        return self.generator(*args) if self.gen_mode else self.critic(*args)

    def switch(self, gen_mode: bool | None = None) -> None:
        "Put the model in generator mode if `gen_mode`, in critic mode otherwise (toggle when None)."
        self.gen_mode = (not self.gen_mode) if gen_mode is None else gen_mode


class GANLoss(GANModule):
    """The loss of a GAN: `loss_funcG` in generator mode, `loss_funcC` in critic mode.

    * Generator mode, called as ``loss(fake, real)``: scores the fakes with the critic and returns
      ``loss_funcG(fake_pred, real, fake)`` (this argument order is fastai v1's, kept for its numbers).
    * Critic mode, called as ``loss(real_pred, noise)`` (the trainer swapped input and target): makes fakes from
      the noise with the frozen generator, scores them and returns ``loss_funcC(real_pred, fake_pred)``.
    """

    def __init__(self, loss_funcG: Callable, loss_funcC: Callable, gan_model: GANModule):  # noqa: N803
        super().__init__()
        self.loss_funcG, self.loss_funcC, self.gan_model = loss_funcG, loss_funcC, gan_model

    def generator(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        "Score the generated `output` with the critic, then combine with `target` through `loss_funcG`."
        fake_pred = self.gan_model.critic(output)
        return self.loss_funcG(fake_pred, target, output)

    def critic(self, real_pred: torch.Tensor, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (v1's name)
        "Make fakes from `input`, score them, and compare with `real_pred` through `loss_funcC`."
        fake = self.gan_model.generator(input.requires_grad_(False)).requires_grad_(True)
        fake_pred = self.gan_model.critic(fake)
        return self.loss_funcC(real_pred, fake_pred)


def gan_loss_from_func(loss_gen: Callable, loss_crit: Callable,
                       weights_gen: tuple[float, float] | None = None) -> tuple[Callable, Callable]:
    """The generator and critic losses of a GAN made from a plain loss `loss_gen` and a classifier loss `loss_crit`.

    * Generator: ``weights_gen[0] * loss_crit(fake_pred, ones) + weights_gen[1] * loss_gen(output, target)``
      (fool the critic, and stay close to the target); weights default to ``(1, 1)``.
    * Critic: ``(loss_crit(real_pred, ones) + loss_crit(fake_pred, zeros)) / 2``.
    """

    def _loss_G(fake_pred: torch.Tensor, output: torch.Tensor, target: torch.Tensor,  # noqa: N802
                weights_gen: tuple[float, float] | None = weights_gen) -> torch.Tensor:
        ones = fake_pred.new_ones(fake_pred.shape[0])
        weights_gen = ifnone(weights_gen, (1.0, 1.0))
        return weights_gen[0] * loss_crit(fake_pred, ones) + weights_gen[1] * loss_gen(output, target)

    def _loss_C(real_pred: torch.Tensor, fake_pred: torch.Tensor) -> torch.Tensor:  # noqa: N802
        ones = real_pred.new_ones(real_pred.shape[0])
        zeros = fake_pred.new_zeros(fake_pred.shape[0])
        return (loss_crit(real_pred, ones) + loss_crit(fake_pred, zeros)) / 2

    return _loss_G, _loss_C


class AdaptiveLoss(nn.Module):
    "`crit` after expanding the target ``(bs,)`` to the output's shape (a critic that returns one score per patch)."

    def __init__(self, crit: Callable):
        super().__init__()
        self.crit = crit

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.crit(output, target[:, None].expand_as(output).float())


def accuracy_thresh_expand(y_pred: torch.Tensor, y_true: torch.Tensor, thresh: float = 0.5,
                           sigmoid: bool = True) -> torch.Tensor:
    "Accuracy of ``y_pred > thresh`` (after a sigmoid if `sigmoid`) against `y_true` expanded to `y_pred`'s shape."
    if sigmoid:
        y_pred = y_pred.sigmoid()
    return ((y_pred > thresh).byte() == y_true[:, None].expand_as(y_pred).byte()).float().mean()


# ============================================================================================ showing samples
class GANImage:
    """A generated sample with the ``show(ax, title)`` method fastprogress's notebook bar calls.

    Images (``C x H x W`` with 1 or 3 channels, or ``H x W``) are shown with ``imshow``: values below 0 are read
    as tanh outputs and mapped from [-1, 1] to [0, 1].  Anything else (a point of a 2-D toy GAN) is a bar chart.
    """

    def __init__(self, data: torch.Tensor):
        self.data = data.detach().cpu().float()

    def __repr__(self) -> str:
        return f"GANImage{tuple(self.data.shape)}"

    def show(self, ax: Any = None, title: str | None = None, **kwargs: Any) -> Any:
        "Draw the sample on `ax` (a new matplotlib figure when None)."
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots()
        x = self.data
        if x.dim() == 3 and x.shape[0] in (1, 3):
            x = x.permute(1, 2, 0)
        if x.dim() == 3 and x.shape[-1] == 1:
            x = x[..., 0]
        if x.dim() in (2, 3):
            if x.min() < 0:
                x = (x + 1) / 2
            ax.imshow(x.clamp(0, 1).numpy(), cmap="gray" if x.dim() == 2 else None, **kwargs)
            ax.axis("off")
        else:
            ax.bar(range(x.numel()), x.flatten().numpy())
        if title is not None:
            ax.set_title(title)
        return ax


def show_imgs(pbar: Any, imgs: list, titles: list[str]) -> None:
    """Show `imgs` through the progress bar: a figure in a notebook, nothing in a console (fastprogress's
    console bar does nothing) and nothing without a bar (``pbar`` is None in ``Learner.validate``)."""
    show = getattr(pbar, "show_imgs", None)
    if show is not None:
        show(imgs, titles)


# ================================================================================================= callbacks
class GANTrainer(LearnerCallback):
    """Trains a `GANModule` (``learn.model``) with a `GANLoss` (``learn.loss_func``), switching generator/critic.

    Usually made by `GANLearner`, which keeps it in ``learn.callbacks``: the same instance (and its two
    optimizers) serves every fit.

    Events, the state keys each reads -> returns, and what it does:

    * ``on_train_begin`` (nothing -> nothing): on the first fit, creates ``opt_gen`` and ``opt_critic`` with
      ``learn.opt.new`` (later fits copy the learner's ``lr`` and ``wd`` to them); switches to ``gen_first``;
      resets the loss smoothers and the sample images; adds the columns ``gen_loss disc_loss``.
    * ``on_epoch_begin`` (``epoch`` -> nothing): switches to the current mode again (``fit`` has just put the
      whole model in train mode; with ``switch_eval`` the frozen part goes back to eval).
    * ``on_batch_begin`` (``last_input``, ``last_target`` -> ``last_input``, ``last_target``): clamps the critic's
      weights to ``[-clip, clip]`` if `clip` is set (WGAN); in critic mode returns input and target swapped, so the
      critic scores the real images and the loss gets the noise.
    * ``on_backward_begin`` (``last_loss``, ``last_output`` -> nothing): smooths the loss of the active part; in
      generator mode keeps the last generated batch (detached, on the CPU) for the sample image.
    * ``on_batch_end`` (nothing -> nothing): zeroes the gradients of both optimizers.
    * ``on_epoch_end`` (``pbar``, ``epoch``, ``last_metrics`` -> ``last_metrics``): shows the first generated item
      of the last generator batch (with `show_img`, see `show_imgs`) and appends the smoothed generator and
      critic losses (None before the first batch of that part).
    * ``on_train_end`` (nothing -> nothing): back to generator mode, for predictions.

    ``_order = -20``: before the `Recorder` (-10), which reads the added column names at train begin and prints
    ``last_metrics`` at epoch end; and before the switchers and `GANDiscriminativeLR` (0), which read
    ``gen_mode`` after this callback has set it for the batch.

    Differences from fastai 1.0.61: the two loss columns are filled even with ``show_img=False`` or before the
    first generator batch (v1 then returned nothing, leaving the row short); a console, a missing progress bar
    or a dataset without ``y.reconstruct`` shows no image instead of failing.
    """

    _order = -20

    def __init__(self, learn: Learner, switch_eval: bool = False, clip: float | None = None, beta: float = 0.98,
                 gen_first: bool = False, show_img: bool = True):
        super().__init__(learn)
        self.switch_eval, self.clip, self.beta = switch_eval, clip, beta
        self.gen_first, self.show_img = gen_first, show_img
        self.generator, self.critic, self.switch_model = self.model.generator, self.model.critic, self.model.switch

    def _set_trainable(self) -> None:
        "Unfreeze the active part, freeze the other (and set train/eval with `switch_eval`)."
        train_model = self.generator if self.gen_mode else self.critic
        loss_model = self.critic if self.gen_mode else self.generator
        requires_grad(train_model, True)
        requires_grad(loss_model, False)
        if self.switch_eval:
            train_model.train()
            loss_model.eval()

    def on_train_begin(self, **kwargs: Any) -> None:
        "Create the generator and critic optimizers (first fit only), reset smoothers, add the two columns."
        if getattr(self, "opt_gen", None) is None:
            self.opt_gen = self.opt.new([nn.Sequential(*flatten_model(self.generator))])
        else:
            self.opt_gen.lr, self.opt_gen.wd = self.opt.lr, self.opt.wd
        if getattr(self, "opt_critic", None) is None:
            self.opt_critic = self.opt.new([nn.Sequential(*flatten_model(self.critic))])
        else:
            self.opt_critic.lr, self.opt_critic.wd = self.opt.lr, self.opt.wd
        self.gen_mode = self.gen_first
        self.switch(self.gen_mode)
        self.closses: list[torch.Tensor] = []
        self.glosses: list[torch.Tensor] = []
        self.smoothenerG, self.smoothenerC = SmoothenValue(self.beta), SmoothenValue(self.beta)
        self.recorder.add_metric_names(["gen_loss", "disc_loss"])
        self.imgs: list = []
        self.titles: list[str] = []

    def on_train_end(self, **kwargs: Any) -> None:
        "Switch to generator mode, for predictions."
        self.switch(gen_mode=True)

    def on_batch_begin(self, last_input: Any, last_target: Any, **kwargs: Any) -> dict:
        "Clamp the critic's weights if `clip`; in critic mode swap input and target."
        if self.clip is not None:
            for p in self.critic.parameters():
                p.data.clamp_(-self.clip, self.clip)
        if isinstance(last_input, torch.Tensor) and last_input.dtype == torch.float16:
            last_target = to_half(last_target)  # mixed precision: the target becomes the critic's input
        if self.gen_mode:
            return {"last_input": last_input, "last_target": last_target}
        return {"last_input": last_target, "last_target": last_input}

    def on_backward_begin(self, last_loss: torch.Tensor, last_output: Any, **kwargs: Any) -> None:
        "Smooth the loss of the active part; in generator mode keep the generated batch."
        last_loss = last_loss.float().detach().cpu()
        if self.gen_mode:
            self.smoothenerG.add_value(last_loss)
            self.glosses.append(self.smoothenerG.smooth)
            self.last_gen = last_output.detach().cpu()
        else:
            self.smoothenerC.add_value(last_loss)
            self.closses.append(self.smoothenerC.smooth)

    def on_batch_end(self, **kwargs: Any) -> None:
        "Zero the gradients of both parts."
        self.opt_critic.zero_grad()
        self.opt_gen.zero_grad()

    def on_epoch_begin(self, epoch: int, **kwargs: Any) -> None:
        "Apply the current mode again (fit has put the whole model in train mode)."
        self.switch(self.gen_mode)

    def on_epoch_end(self, pbar: Any, epoch: int, last_metrics: Any, **kwargs: Any) -> dict:
        "Show a sample of the last generated batch; append the smoothed generator and critic losses."
        last_gen = self.__dict__.get("last_gen")
        if last_gen is not None and self.show_img:
            self.imgs.append(self._sample(last_gen[0]))
            self.titles.append(f"Epoch {epoch}")
            show_imgs(pbar, self.imgs, self.titles)
        return add_metrics(last_metrics, [getattr(self.smoothenerG, "smooth", None),
                                          getattr(self.smoothenerC, "smooth", None)])

    def _sample(self, img: torch.Tensor) -> Any:
        "One generated item, denormalised and reconstructed as the data does it (a `GANImage` otherwise)."
        data = self.learn.data
        norm = getattr(data, "norm", None)
        if norm is not None and getattr(norm, "keywords", {}).get("do_y", False):
            img = data.denorm(img)
        y = getattr(data.train_ds, "y", None)
        return y.reconstruct(img) if hasattr(y, "reconstruct") else GANImage(img)

    def switch(self, gen_mode: bool | None = None) -> None:
        "Switch to generator mode if `gen_mode`, critic mode otherwise (toggle when None): opt, grads, model, loss."
        self.gen_mode = (not self.gen_mode) if gen_mode is None else gen_mode
        self.opt.opt = self.opt_gen.opt if self.gen_mode else self.opt_critic.opt
        self._set_trainable()
        self.switch_model(gen_mode)
        self.loss_func.switch(gen_mode)


class FixedGANSwitcher(LearnerCallback):
    """Trains the critic for `n_crit` batches, then the generator for `n_gen` batches, and so on.

    `n_crit` and `n_gen` are ints, or functions of the number of batches the other part just had.

    Events: ``on_train_begin`` (resets the counts), ``on_batch_end`` (reads ``iteration``, unused; counts a batch
    of the active part and calls ``learn.gan_trainer.switch()`` when it reaches its target).  Returns nothing.
    ``_order = 0``: after `GANTrainer` (-20).  As in v1 it also counts validation batches, if any.
    """

    def __init__(self, learn: Learner, n_crit: int | Callable[[int], int] = 1, n_gen: int | Callable[[int], int] = 1):
        super().__init__(learn)
        self.n_crit, self.n_gen = n_crit, n_gen

    def on_train_begin(self, **kwargs: Any) -> None:
        "Initiate the iteration counts."
        self.n_c, self.n_g = 0, 0

    def on_batch_end(self, iteration: int, **kwargs: Any) -> None:
        "Switch the model if the active part has had its number of batches."
        if self.learn.gan_trainer.gen_mode:
            self.n_g += 1
            n_iter, n_in, n_out = self.n_gen, self.n_c, self.n_g
        else:
            self.n_c += 1
            n_iter, n_in, n_out = self.n_crit, self.n_g, self.n_c
        target = n_iter if isinstance(n_iter, int) else n_iter(n_in)
        if target == n_out:
            self.learn.gan_trainer.switch()
            self.n_c, self.n_g = 0, 0


class AdaptiveGANSwitcher(LearnerCallback):
    """Switches to the other part once the active part's loss is below its threshold (at once when None).

    Events: ``on_batch_end`` (reads ``last_loss``, the batch's detached loss; calls ``gan_trainer.switch()``).
    Returns nothing.  ``_order = 0``: after `GANTrainer` (-20).
    """

    def __init__(self, learn: Learner, gen_thresh: float | None = None, critic_thresh: float | None = None):
        super().__init__(learn)
        self.gen_thresh, self.critic_thresh = gen_thresh, critic_thresh

    def on_batch_end(self, last_loss: torch.Tensor, **kwargs: Any) -> None:
        "Switch the model if the active part's loss is below its threshold."
        thresh = self.gen_thresh if self.gan_trainer.gen_mode else self.critic_thresh
        if thresh is None or last_loss < thresh:
            self.gan_trainer.switch()


class GANDiscriminativeLR(LearnerCallback):
    """Multiplies the learning rate by `mult_lr` for the critic's batches.

    Events: ``on_batch_begin`` (reads ``train``; in critic mode, training only: ``learn.opt.lr *= mult_lr``),
    ``on_step_end`` (in critic mode: divides it back).  Returns nothing.  ``_order = 0``: after `GANTrainer` (-20)
    has swapped the batch, and after the `Recorder` (-10), which records the learner's lr before the change.
    """

    def __init__(self, learn: Learner, mult_lr: float = 5.0):
        super().__init__(learn)
        self.mult_lr = mult_lr

    def on_batch_begin(self, train: bool, **kwargs: Any) -> None:
        "Multiply the current lr if necessary."
        if not self.learn.gan_trainer.gen_mode and train:
            self.learn.opt.lr *= self.mult_lr

    def on_step_end(self, **kwargs: Any) -> None:
        "Put the lr back to its value if necessary."
        if not self.learn.gan_trainer.gen_mode:
            self.learn.opt.lr /= self.mult_lr


# ================================================================================================== learner
class GANLearner(Learner):
    """A `Learner` for GANs: model ``GANModule(generator, critic)``, loss ``GANLoss(gen_loss_func, crit_loss_func)``.

    A `GANTrainer` (``learn.gan_trainer``) goes in ``learn.callbacks``; the `switcher` (a function of the learner,
    by default ``partial(FixedGANSwitcher, n_crit=5, n_gen=1)``) in ``callback_fns``.  Other keyword arguments go
    to `Learner`.  As in fastai 1.0.61, `gen_first` is not passed to the trainer (a warning says so when it is
    True): set ``learn.gan_trainer.gen_first = True`` to start with the generator.
    """

    def __init__(self, data: DataBunch, generator: nn.Module, critic: nn.Module, gen_loss_func: Callable,
                 crit_loss_func: Callable, switcher: Callable[[Learner], Callback] | None = None,
                 gen_first: bool = False, switch_eval: bool = True, show_img: bool = True, clip: float | None = None,
                 **learn_kwargs: Any):
        gan = GANModule(generator, critic)
        loss_func = GANLoss(gen_loss_func, crit_loss_func, gan)
        switcher = ifnone(switcher, partial(FixedGANSwitcher, n_crit=5, n_gen=1))
        super().__init__(data, gan, loss_func=loss_func, callback_fns=[switcher], **learn_kwargs)
        if gen_first:
            warnings.warn("GANLearner(gen_first=True) is ignored, as in fastai 1.0.61: the GAN starts with the critic. "
                          "Set learn.gan_trainer.gen_first = True to start with the generator.", stacklevel=2)
        trainer = GANTrainer(self, clip=clip, switch_eval=switch_eval, show_img=show_img)
        self.gan_trainer = trainer
        self.callbacks.append(trainer)

    @classmethod
    def from_learners(cls, learn_gen: Learner, learn_crit: Learner, switcher: Callable | None = None,
                      weights_gen: tuple[float, float] | None = None, **learn_kwargs: Any) -> GANLearner:
        "A GAN from a generator learner and a critic learner, their losses combined by `gan_loss_from_func`."
        losses = gan_loss_from_func(learn_gen.loss_func, learn_crit.loss_func, weights_gen=weights_gen)
        return cls(learn_gen.data, learn_gen.model, learn_crit.model, *losses, switcher=switcher, **learn_kwargs)

    @classmethod
    def wgan(cls, data: DataBunch, generator: nn.Module, critic: nn.Module, switcher: Callable | None = None,
             clip: float = 0.01, **learn_kwargs: Any) -> GANLearner:
        "A Wasserstein GAN: `NoopLoss` for the generator, `WassersteinLoss` for the critic, weights clipped to `clip`."
        return cls(data, generator, critic, NoopLoss(), WassersteinLoss(), switcher=switcher, clip=clip, **learn_kwargs)
