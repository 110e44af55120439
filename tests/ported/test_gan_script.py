"""fastai v1 GAN scripts as users have them, with only the imports changed from ``fastai`` to ``fastloop``.

* The course's lesson 7 super-resolution GAN (``lesson7-superres-gan``): a generator learner pretrained with an
  MSE loss, a critic learner (``gan_critic``, ``AdaptiveLoss``, ``accuracy_thresh_expand``), then
  ``GANLearner.from_learners`` with an `AdaptiveGANSwitcher` and ``GANDiscriminativeLR`` appended to
  ``callback_fns``.  Here the "crappy" images are noisy digits and the models are tiny.
* The fastai docs' WGAN: ``basic_generator``/``basic_critic`` and ``GANLearner.wgan`` on noise -> digits.

Everything between the ``# --- script`` markers is the user's code; the tests check what it printed and did.
"""

from __future__ import annotations

import torch

from tests.tracing import table_lines
from tests.vision.gan_data import digit_images, single_thread


def crappy_digits(n: int = 256, bs: int = 32):
    "Noisy digits -> clean digits (generator data) and clean/noisy digits labelled 1/0 (critic data)."
    from torch.utils.data import TensorDataset

    from fastloop.basic_data import DataBunch

    g = torch.Generator().manual_seed(0)
    clean = digit_images(n)
    crappy = (clean + 0.6 * torch.randn(clean.shape, generator=g)).clamp(-1, 1)
    split = n * 3 // 4
    data_gen = DataBunch.create(TensorDataset(crappy[:split], clean[:split]),
                                TensorDataset(crappy[split:], clean[split:]), bs=bs, num_workers=0, device="cpu")
    imgs = torch.cat([clean, crappy])
    labels = torch.cat([torch.ones(n), torch.zeros(n)]).long()
    perm = torch.randperm(2 * n, generator=g)
    imgs, labels = imgs[perm], labels[perm]
    data_crit = DataBunch.create(TensorDataset(imgs[:2 * split], labels[:2 * split]),
                                 TensorDataset(imgs[2 * split:], labels[2 * split:]), bs=bs, num_workers=0,
                                 device="cpu")
    return data_gen, data_crit


def test_superres_gan_script_pretrains_both_learners_then_trains_the_gan(tmp_path, capsys):
    data_gen, data_crit = crappy_digits()
    torch.manual_seed(0)
    threads = single_thread()
    threads.__enter__()
    # --- script (lesson7-superres-gan, imports changed)
    from functools import partial

    from torch import nn, optim

    from fastloop.basic_train import Learner
    from fastloop.layers import MSELossFlat
    from fastloop.vision.gan import (
        AdaptiveGANSwitcher,
        AdaptiveLoss,
        GANDiscriminativeLR,
        GANLearner,
        accuracy_thresh_expand,
        gan_critic,
    )

    wd = 1e-3
    arch = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 1, 3, padding=1), nn.Tanh())
    learn_gen = Learner(data_gen, arch, wd=wd, loss_func=MSELossFlat(), path=tmp_path)
    learn_gen.fit(2, 1e-3)

    loss_critic = AdaptiveLoss(nn.BCEWithLogitsLoss())
    learn_critic = Learner(data_crit, gan_critic(n_channels=1, nf=8, n_blocks=1), metrics=accuracy_thresh_expand,
                           loss_func=loss_critic, wd=wd, path=tmp_path)
    learn_critic.fit(2, 1e-3)

    switcher = partial(AdaptiveGANSwitcher, critic_thresh=0.65)
    learn = GANLearner.from_learners(learn_gen, learn_critic, weights_gen=(1., 50.), show_img=False, switcher=switcher,
                                     opt_func=partial(optim.Adam, betas=(0., 0.99)), wd=wd, path=tmp_path)
    learn.callback_fns.append(partial(GANDiscriminativeLR, mult_lr=5.))
    gen_before = [p.detach().clone() for p in learn_gen.model.parameters()]
    crit_before = [p.detach().clone() for p in learn_critic.model.parameters()]
    learn.fit(2, 1e-4)
    # --- end of script
    threads.__exit__()
    out = table_lines(capsys.readouterr().out)
    headers = [line.split() for line in out if line.startswith("epoch")]
    assert headers == [["epoch", "train_loss", "valid_loss", "time"],
                       ["epoch", "train_loss", "valid_loss", "accuracy_thresh_expand", "time"],
                       ["epoch", "train_loss", "valid_loss", "gen_loss", "disc_loss", "time"]]
    assert learn.model.generator is learn_gen.model and learn.model.critic is learn_critic.model
    assert any(not torch.equal(b, p) for b, p in zip(gen_before, learn_gen.model.parameters()))
    assert any(not torch.equal(b, p) for b, p in zip(crit_before, learn_critic.model.parameters()))
    rec = learn.recorder
    assert len(rec.val_losses) == 2 and all(v is not None for v in rec.val_losses)  # the GAN validates too
    # the switcher waits for the critic's loss to go below 0.65: the first epoch trains only the critic, so its
    # gen_loss is #na#; the second epoch has both (fastai 1.0.61, with show_img=False, printed neither)
    trainer = learn.gan_trainer
    assert rec.metrics[0][0] is None and rec.metrics[1][0] is not None and rec.metrics[1][1] is not None
    assert len(trainer.glosses) > 0 and len(trainer.closses) > len(trainer.glosses)
    rows = [line.split() for line in out if line.split()[0] in ("0", "1") and len(line.split()) == 6]
    assert rows[-2][3] == "#na#" and rows[-1][3] == f"{float(rec.metrics[1][0]):.6f}"
    assert 0 <= float(learn_critic.recorder.metrics[-1][0]) <= 1
    assert learn.gan_trainer.gen_mode  # generator mode after the fit, ready for predictions


def test_wgan_script_from_the_docs_keeps_a_sample_per_epoch(tmp_path, capsys):
    from fastloop.basic_data import DataBunch
    from tests.vision.gan_data import NoiseToImages

    data = DataBunch.create(NoiseToImages(n=256, noise_sz=16), None, bs=32, num_workers=0, device="cpu", path=tmp_path)
    torch.manual_seed(0)
    # --- script (fastai docs, vision.gan, imports changed)
    from functools import partial

    from torch import optim

    from fastloop.vision.gan import GANLearner, basic_critic, basic_generator

    generator = basic_generator(in_size=16, n_channels=1, noise_sz=16, n_features=8, n_extra_layers=1)
    critic = basic_critic(in_size=16, n_channels=1, n_features=8, n_extra_layers=1)
    learn = GANLearner.wgan(data, generator, critic, switch_eval=False,
                            opt_func=partial(optim.Adam, betas=(0., 0.99)), wd=0.)
    with single_thread():
        learn.fit(2, 2e-4)
    # --- end of script
    lines = table_lines(capsys.readouterr().out)
    assert next(line for line in lines if line.startswith("epoch")).split() == [
        "epoch", "train_loss", "valid_loss", "gen_loss", "disc_loss", "time"]
    # fastai v1's own test (test_vision_gan.py): samples and titles kept, generator mode at the end
    trainer = learn.gan_trainer
    assert trainer.titles == ["Epoch 0", "Epoch 1"] and len(trainer.imgs) == 2
    assert trainer.gen_mode
    assert trainer.imgs[-1].data.shape == (1, 16, 16)
