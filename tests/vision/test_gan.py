"""fastloop.vision.gan: GANModule/GANLoss, the losses and model builders, GANTrainer's switching, the two
switchers, GANDiscriminativeLR, GANLearner (wgan, from_learners) and the sample images, on the CPU."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

import fastloop.layers
from fastloop.basic_data import DataBunch
from fastloop.basic_train import Learner
from fastloop.callback import Callback, OptimWrapper
from fastloop.vision.gan import (
    AdaptiveGANSwitcher,
    AdaptiveLoss,
    FixedGANSwitcher,
    GANDiscriminativeLR,
    GANImage,
    GANLearner,
    GANLoss,
    GANModule,
    NoopLoss,
    WassersteinLoss,
    accuracy_thresh_expand,
    basic_critic,
    basic_generator,
    gan_critic,
    gan_loss_from_func,
    show_imgs,
)
from tests.tracing import canonical_fit, table_lines

from .gan_data import GaussianMixture, NoiseToImages, mixture_data, single_thread

ADAM_0 = partial(torch.optim.Adam, betas=(0.0, 0.99))


def toy_gan(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    "A generator from 4-d noise to 2-d points and a critic of 2-d points (one score per point)."
    torch.manual_seed(seed)
    return (nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 2)),
            nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 1)))


class ModeSpy(Callback):
    "Records, at each batch_begin (after GANTrainer), the trainer's mode and the (possibly swapped) batch shapes."

    def __init__(self, learn: Learner):
        self.learn, self.modes, self.shapes, self.opt_is_critic = learn, [], [], []

    def on_batch_begin(self, last_input, last_target, train, **kwargs):
        trainer = self.learn.gan_trainer
        self.modes.append(trainer.gen_mode)
        self.shapes.append((tuple(last_input.shape), tuple(last_target.shape)))
        self.opt_is_critic.append(self.learn.opt.opt is trainer.opt_critic.opt)


# ------------------------------------------------------------------------------------------- module and loss
def test_gan_module_calls_the_part_of_its_mode_and_switch_toggles_or_sets():
    gen, crit = toy_gan()
    gan = GANModule(gen, crit)
    z, x = torch.randn(3, 4), torch.randn(3, 2)
    assert torch.equal(gan(x), crit(x))  # critic mode by default
    gan.switch()
    assert gan.gen_mode and torch.equal(gan(z), gen(z))
    gan.switch(gen_mode=True)
    assert gan.gen_mode
    gan.switch(False)
    assert not gan.gen_mode


def test_gan_loss_generator_mode_scores_fakes_and_critic_mode_makes_fakes_from_the_noise():
    gen, crit = toy_gan()
    gan = GANModule(gen, crit)
    calls = []

    def loss_g(fake_pred, target, output):
        calls.append(("G", fake_pred, target, output))
        return fake_pred.mean()

    def loss_c(real_pred, fake_pred):
        calls.append(("C", real_pred, fake_pred))
        return real_pred.mean() - fake_pred.mean()

    loss = GANLoss(loss_g, loss_c, gan)
    z, real = torch.randn(3, 4), torch.randn(3, 2)
    loss.switch(gen_mode=True)
    fake = gen(z)
    out = loss(fake, real)
    _, fake_pred, target, output = calls[-1]
    assert torch.allclose(fake_pred, crit(fake)) and target is real and output is fake  # v1's argument order
    assert torch.allclose(out, crit(fake).mean())
    loss.switch(gen_mode=False)
    real_pred = crit(real)
    out = loss(real_pred, z)
    _, got_real, got_fake = calls[-1]
    assert got_real is real_pred and torch.allclose(got_fake, crit(gen(z)))
    assert torch.allclose(out, real_pred.mean() - crit(gen(z)).mean())


def test_wgan_losses_are_fastloop_layers_ones():
    "`NoopLoss` and `WassersteinLoss` are the classes of fastloop.layers (one class, wherever imported from)."
    assert NoopLoss is fastloop.layers.NoopLoss and WassersteinLoss is fastloop.layers.WassersteinLoss
    assert NoopLoss()(torch.tensor([1.0, 3.0]), None).item() == 2.0
    assert WassersteinLoss()(torch.tensor([1.0, 3.0]), torch.tensor([0.5])).item() == 1.5


def test_gan_loss_from_func_weights_the_critic_and_plain_losses():
    bce = AdaptiveLoss(nn.BCEWithLogitsLoss())
    mse = nn.MSELoss()
    loss_g, loss_c = gan_loss_from_func(mse, bce, weights_gen=(2.0, 3.0))
    fake_pred, real_pred = torch.randn(4, 5), torch.randn(4, 5)
    out, target = torch.randn(4, 2), torch.randn(4, 2)
    want_g = 2.0 * bce(fake_pred, torch.ones(4)) + 3.0 * mse(out, target)
    assert torch.allclose(loss_g(fake_pred, out, target), want_g)
    want_c = (bce(real_pred, torch.ones(4)) + bce(fake_pred, torch.zeros(4))) / 2
    assert torch.allclose(loss_c(real_pred, fake_pred), want_c)
    default_g, _ = gan_loss_from_func(mse, bce)
    assert torch.allclose(default_g(fake_pred, out, target), bce(fake_pred, torch.ones(4)) + mse(out, target))


def test_adaptive_loss_and_accuracy_thresh_expand_broadcast_the_target_over_patches():
    pred = torch.tensor([[3.0, -3.0, 3.0], [-3.0, -3.0, 3.0]])
    target = torch.tensor([1, 0])
    assert accuracy_thresh_expand(pred, target).item() == pytest.approx(4 / 6)
    assert accuracy_thresh_expand(pred.sigmoid(), target, sigmoid=False).item() == pytest.approx(4 / 6)
    got = AdaptiveLoss(nn.BCEWithLogitsLoss())(pred, target)
    want = nn.BCEWithLogitsLoss()(pred, torch.tensor([[1.0] * 3, [0.0] * 3]))
    assert torch.allclose(got, want)


def test_model_builders_give_the_documented_shapes():
    torch.manual_seed(0)
    gen = basic_generator(16, 1, noise_sz=8, n_features=8, n_extra_layers=1)
    imgs = gen(torch.randn(2, 8, 1, 1))
    assert imgs.shape == (2, 1, 16, 16) and imgs.abs().max() <= 1
    assert basic_critic(16, 1, n_features=8, n_extra_layers=1)(imgs).shape == (1,)  # the batch mean
    crit = gan_critic(n_channels=1, nf=8, n_blocks=1)
    assert crit(torch.randn(2, 1, 16, 16)).shape == (2, 1)
    assert any(type(m).__name__ == "SelfAttention" for m in crit.modules())


# ------------------------------------------------------------------------------------------------ trainer
def test_fixed_switcher_alternates_n_crit_critic_batches_and_n_gen_generator_batches():
    """n_crit=3, n_gen=2 over 2 epochs of 8 batches: modes CCCGG CCCGG ...; in critic mode the trainer swaps
    input and target (the critic sees real points) and the learner's inner optimizer is the critic's."""
    gen, crit = toy_gan()
    learn = GANLearner.wgan(mixture_data(n=512), gen, crit, switcher=partial(FixedGANSwitcher, n_crit=3, n_gen=2),
                            opt_func=ADAM_0, show_img=False)
    spy = ModeSpy(learn)
    with single_thread():
        learn.fit(2, 1e-3, callbacks=[spy])
    pattern = [False, False, False, True, True]
    assert spy.modes == (pattern * 4)[:16]
    for mode, (inp, targ), is_critic in zip(spy.modes, spy.shapes, spy.opt_is_critic):
        assert (inp, targ) == (((64, 4), (64, 2)) if mode else ((64, 2), (64, 4)))
        assert is_critic is (not mode)
    trainer = learn.gan_trainer
    assert isinstance(trainer.opt_gen, OptimWrapper) and isinstance(trainer.opt_critic, OptimWrapper)
    assert trainer.gen_mode and learn.model.gen_mode and learn.loss_func.gen_mode  # train_end: generator mode
    assert len(trainer.glosses) == 6 and len(trainer.closses) == 10


def test_fixed_switcher_accepts_functions_of_the_other_parts_count():
    gen, crit = toy_gan()
    switcher = partial(FixedGANSwitcher, n_crit=lambda n_gen: 1 if n_gen == 0 else 2, n_gen=lambda n_crit: 1)
    learn = GANLearner.wgan(mixture_data(n=512), gen, crit, switcher=switcher, opt_func=ADAM_0, show_img=False)
    spy = ModeSpy(learn)
    with single_thread():
        learn.fit(1, 1e-3, callbacks=[spy])
    # critic 1 batch (nothing before it), generator 1, then the counts restart at 0: always 1 critic batch
    assert spy.modes == [False, True] * 4


def test_adaptive_switcher_switches_when_the_loss_is_below_the_threshold():
    gen, crit = toy_gan()
    never = partial(AdaptiveGANSwitcher, critic_thresh=float("-inf"))
    learn = GANLearner.wgan(mixture_data(n=512), gen, crit, switcher=never, opt_func=ADAM_0, show_img=False)
    spy = ModeSpy(learn)
    with single_thread():
        learn.fit(1, 1e-3, callbacks=[spy])
    assert spy.modes == [False] * 8  # no critic loss is below -inf
    always = AdaptiveGANSwitcher  # no thresholds: switch after every batch
    learn = GANLearner.wgan(mixture_data(n=512), *toy_gan(), switcher=always, opt_func=ADAM_0, show_img=False)
    spy = ModeSpy(learn)
    with single_thread():
        learn.fit(1, 1e-3, callbacks=[spy])
    assert spy.modes == [False, True] * 4


class StepLr(Callback):
    "Records the lr in the learner's inner optimizer at each step, and the trainer's mode."

    def __init__(self, learn):
        self.learn, self.lrs = learn, []

    def on_backward_end(self, **kwargs):
        self.lrs.append((self.learn.gan_trainer.gen_mode, self.learn.opt.opt.param_groups[0]["lr"]))


def test_discriminative_lr_multiplies_the_critics_lr_for_its_steps_only():
    gen, crit = toy_gan()
    learn = GANLearner.wgan(mixture_data(n=512), gen, crit, switcher=partial(FixedGANSwitcher, n_crit=2, n_gen=1),
                            opt_func=ADAM_0, show_img=False)
    learn.callback_fns.append(partial(GANDiscriminativeLR, mult_lr=5.0))
    spy = StepLr(learn)
    with single_thread():
        learn.fit(1, 1e-3, callbacks=[spy])
    assert spy.lrs == [(mode, pytest.approx(1e-3 if mode else 5e-3)) for mode, _ in spy.lrs]
    assert {mode for mode, _ in spy.lrs} == {True, False}
    assert learn.recorder.lrs == [1e-3] * 8 and learn.opt.lr == pytest.approx(1e-3)  # restored after each step


def test_trainer_persists_across_fits_keeps_its_optimizers_and_follows_the_new_lr():
    gen, crit = toy_gan()
    learn = GANLearner.wgan(mixture_data(n=512), gen, crit, opt_func=ADAM_0, show_img=False)
    with single_thread():
        learn.fit(1, 1e-3)
        trainer = learn.gan_trainer
        opt_gen, opt_critic = trainer.opt_gen, trainer.opt_critic
        learn.fit(1, 5e-4)
    assert learn.gan_trainer is trainer and trainer.opt_gen is opt_gen and trainer.opt_critic is opt_critic
    assert opt_gen.lr == opt_critic.lr == 5e-4
    assert learn.recorder.lrs == [5e-4] * 8


def test_wgan_with_the_fixed_switcher_moves_the_samples_mean_toward_the_target():
    """The default switcher (5 critic batches, then 1 generator batch), 6 epochs on a 2-D mixture of Gaussians
    of mean (3, 3): the generated points' mean gets more than twice closer to it."""
    gen, crit = toy_gan()
    learn = GANLearner.wgan(mixture_data(), gen, crit, opt_func=ADAM_0, wd=0.0, show_img=False)
    z = torch.randn(512, 4, generator=torch.Generator().manual_seed(1))
    target = GaussianMixture.centers.mean(0)
    with torch.no_grad():
        before = (gen(z).mean(0) - target).norm()
    with single_thread():
        learn.fit(6, 2e-2)
    with torch.no_grad():
        after = (gen(z).mean(0) - target).norm()
    assert after < 0.5 * before


def test_wgan_with_the_adaptive_switcher_moves_the_samples_mean_toward_the_target():
    "Back to the generator once the critic's loss is negative: 4 epochs bring the mean more than twice closer."
    gen, crit = toy_gan()
    learn = GANLearner.wgan(mixture_data(), gen, crit, switcher=partial(AdaptiveGANSwitcher, critic_thresh=0.0),
                            opt_func=ADAM_0, wd=0.0, show_img=False)
    z = torch.randn(512, 4, generator=torch.Generator().manual_seed(1))
    target = GaussianMixture.centers.mean(0)
    with torch.no_grad():
        before = (gen(z).mean(0) - target).norm()
    with single_thread():
        learn.fit(4, 2e-2)
    with torch.no_grad():
        after = (gen(z).mean(0) - target).norm()
    assert after < 0.5 * before


def test_table_has_the_two_loss_columns_filled_even_without_images(capsys):
    """``gen_loss disc_loss`` follow ``valid_loss`` (``#na#``: no validation set); with ``show_img=False`` the
    values are still there (fastai 1.0.61 left the row short)."""
    gen, crit = toy_gan()
    learn = GANLearner.wgan(mixture_data(n=512), gen, crit, opt_func=ADAM_0, show_img=False)
    with single_thread():
        learn.fit(1, 1e-3)
    names = learn.recorder.names
    assert names == ["epoch", "train_loss", "valid_loss", "gen_loss", "disc_loss", "time"]
    lines = table_lines(capsys.readouterr().out)
    row = next(line.split() for line in lines if line.startswith("0 "))
    trainer = learn.gan_trainer
    assert row[2] == "#na#"
    assert row[3:5] == [f"{float(trainer.smoothenerG.smooth):.6f}", f"{float(trainer.smoothenerC.smooth):.6f}"]


def test_trainer_events_and_the_keys_it_reads(monkeypatch):
    """GANTrainer takes part in train_begin, epoch_begin, batch_begin, backward_begin, batch_end, epoch_end and
    train_end; it reads last_input/last_target, last_loss/last_output, epoch, pbar and last_metrics."""
    from fastloop.vision.gan import GANTrainer

    seen = []
    for event in ("train_begin", "epoch_begin", "batch_begin", "backward_begin", "batch_end", "epoch_end",
                  "train_end", "loss_begin", "backward_end", "step_end"):
        original = getattr(GANTrainer, f"on_{event}", None)
        if original is None or original is getattr(Callback, f"on_{event}"):
            continue

        def traced(self, *args, _event=event, _original=original, **kwargs):
            seen.append((_event, sorted(kwargs)))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(GANTrainer, f"on_{event}", traced)
    gen, crit = toy_gan()
    learn = GANLearner.wgan(mixture_data(n=128), gen, crit, opt_func=ADAM_0, show_img=False)
    with single_thread():
        learn.fit(1, 1e-3)
    events = [e for e, _ in seen]
    assert events == [e for e in canonical_fit(1, 2, 0, validate=False)
                      if e not in ("loss_begin", "backward_end", "step_end")]
    assert "metrics_names" in seen[0][1]
    backward = next(keys for e, keys in seen if e == "backward_begin")
    assert {"last_loss", "last_output", "smooth_loss"} <= set(backward)
    assert seen[-2][0] == "epoch_end" and {"pbar", "epoch", "last_metrics"} <= set(seen[-2][1])
    assert seen[-1][0] == "train_end" and "exception" in seen[-1][1]


# ------------------------------------------------------------------------------------------------ images
def image_gan_learner(**kwargs) -> GANLearner:
    torch.manual_seed(0)
    data = DataBunch.create(NoiseToImages(n=64, noise_sz=8), None, bs=16, num_workers=0, device="cpu")
    gen = basic_generator(16, 1, noise_sz=8, n_features=8)
    crit = basic_critic(16, 1, n_features=8)
    return GANLearner.wgan(data, gen, crit, opt_func=ADAM_0, switcher=partial(FixedGANSwitcher, n_crit=1, n_gen=1),
                           **kwargs)


def test_a_sample_per_epoch_is_kept_and_a_console_shows_nothing():
    "As fastai v1's test_vision_gan: after fitting, ``imgs`` and ``titles`` are filled and gen_mode is True."
    learn = image_gan_learner()
    with single_thread():
        learn.fit(2, 1e-4)
    trainer = learn.gan_trainer
    assert trainer.titles == ["Epoch 0", "Epoch 1"] and len(trainer.imgs) == 2
    assert isinstance(trainer.imgs[0], GANImage) and trainer.imgs[0].data.shape == (1, 16, 16)
    assert trainer.gen_mode


def test_samples_go_through_the_datasets_reconstruct_when_it_has_one():
    class Reconstructing:
        def reconstruct(self, t):
            return ("reconstructed", tuple(t.shape))

    learn = image_gan_learner()
    learn.data.train_ds.y = Reconstructing()
    with single_thread():
        learn.fit(1, 1e-4)
    assert learn.gan_trainer.imgs == [("reconstructed", (1, 16, 16))]


def test_show_imgs_draws_in_a_notebook_bar_and_does_nothing_without_one(monkeypatch):
    import fastprogress.fastprogress as fp
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    imgs = [GANImage(torch.rand(1, 16, 16) * 2 - 1), GANImage(torch.rand(3, 8, 8)), GANImage(torch.rand(2))]
    show_imgs(None, imgs, ["a", "b", "c"])  # Learner.validate: no bar
    show_imgs(fp.ConsoleMasterBar(range(1)), imgs, ["a", "b", "c"])  # a console: nothing shown
    # a notebook bar (its plt/display exist only inside a notebook: give them to it)
    shown = []
    monkeypatch.setattr(fp, "plt", plt, raising=False)
    monkeypatch.setattr(fp, "display", lambda fig, display_id=None: shown.append(fig) or fig, raising=False)
    bar = fp.NBMasterBar(range(1))
    show_imgs(bar, imgs, ["Epoch 0", "Epoch 1", "Epoch 2"])
    assert shown and [ax.get_title() for ax in bar.imgs_fig.axes[:3]] == ["Epoch 0", "Epoch 1", "Epoch 2"]
    assert len(bar.imgs_fig.axes[0].images) == 1 and len(bar.imgs_fig.axes[2].patches) == 2  # image, bars
    plt.close("all")
