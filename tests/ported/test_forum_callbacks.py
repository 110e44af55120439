"""fastai v1 callbacks from the forums, ported by changing only their imports (``fastai`` -> ``fastloop``).

Each class body below is the user's code as posted; the tests assert what the engine hands them and what
their returns do to the loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import TensorDataset

from fastloop.basic_data import DataBunch
from fastloop.basic_train import Learner, LearnerCallback
from fastloop.callback import Callback

from ..conftest import make_learner


# ------------------------------------------------------------------------------- MRNet: squeeze the batch
class MRNetCallback(Callback):
    "MRNet stacks slices: a batch of one study comes as (1, slices, 3, H, W); squeeze it to (slices, 3, H, W)."

    def on_batch_begin(self, last_input, last_target, **kwargs):
        x = torch.squeeze(last_input, dim=0)
        y = last_target.float()
        return {"last_input": x, "last_target": y}


class MRNetModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 1)
        self.shapes = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        feats = self.conv(x).mean((2, 3))  # (slices, 4)
        return self.head(feats.max(0, keepdim=True)[0]).squeeze(1)  # one logit per study


def test_mrnet_callback_squeezes_last_input_and_the_model_sees_the_squeezed_batch():
    g = torch.Generator().manual_seed(0)
    studies = torch.randn(6, 5, 3, 8, 8, generator=g)  # 6 studies of 5 slices
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    data = DataBunch.create(TensorDataset(studies[:4], labels[:4]), TensorDataset(studies[4:], labels[4:]), bs=1,
                            num_workers=0, device="cpu")
    model = MRNetModel()
    learn = Learner(data, model, loss_func=nn.BCEWithLogitsLoss(), callbacks=[MRNetCallback()])
    learn.fit(1, 1e-3)
    assert len(model.shapes) == 4 + 2 and set(model.shapes) == {(5, 3, 8, 8)}
    assert learn.recorder.val_losses[0] > 0


# ------------------------------------------------------------------ @dataclass GradientClipping (forum)
@dataclass
class GradientClipping(LearnerCallback):
    "Gradient clipping during training."

    learn: Learner
    clip: float = 0.0

    def __post_init__(self):
        super().__init__(self.learn)

    def on_backward_end(self, **kwargs):
        "Clip the gradient before the optimizer step."
        if self.clip:
            nn.utils.clip_grad_norm_(self.learn.model.parameters(), self.clip)


@dataclass
class OlderStyleClipping(LearnerCallback):
    "Older fastai 1.0.x style: no `learn` field and no __post_init__ -- the base class provides both."

    clip: float = 0.0

    def on_backward_end(self, **kwargs):
        if self.clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)


class GradNormProbe(Callback):
    "Test probe: the total grad norm the optimizer steps with (after every backward_end callback)."

    _order = 100

    def __init__(self, model):
        self.model, self.norms = model, []

    def on_backward_end(self, **kwargs):
        grads = [p.grad.norm() for p in self.model.parameters() if p.grad is not None]
        self.norms.append(torch.stack(grads).norm().item())


def test_dataclass_gradient_clipping_registers_on_the_learner_and_clips_the_step_gradients():
    learn = make_learner()
    learn.loss_func = lambda out, y: nn.functional.cross_entropy(out, y) * 1000  # large gradients
    probe = GradNormProbe(learn.model)
    learn.callback_fns.append(partial_fn(GradientClipping, clip=0.1))
    learn.fit(1, 1e-3, callbacks=[probe])
    assert isinstance(learn.gradient_clipping, GradientClipping) and learn.gradient_clipping.clip == 0.1
    assert learn.gradient_clipping.learn is learn
    assert probe.norms and max(probe.norms) <= 0.1 + 1e-5

    unclipped = GradNormProbe(learn.model)
    learn.callback_fns.pop()
    learn.fit(1, 1e-3, callbacks=[unclipped])
    assert min(unclipped.norms) > 0.1


def test_older_dataclass_style_without_learn_field_also_takes_learn_first_and_registers():
    learn = make_learner()
    cb = OlderStyleClipping(learn, clip=0.5)
    assert learn.older_style_clipping is cb and cb.learn is learn and cb.clip == 0.5
    assert cb.model is learn.model  # attribute fall-through to the learner
    probe = GradNormProbe(learn.model)
    learn.loss_func = lambda out, y: nn.functional.cross_entropy(out, y) * 1000
    learn.fit(1, 1e-3, callbacks=[cb, probe])
    assert max(probe.norms) <= 0.5 + 1e-5


def partial_fn(cls, **kwargs):
    from functools import partial

    return partial(cls, **kwargs)


# ------------------------------------------------------------ CycleGANTrainer-style two-output callback
class TwoGenerators(nn.Module):
    "A CycleGAN-like model: two generators, called on both domains at once."

    def __init__(self):
        super().__init__()
        self.G_A, self.G_B = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, real_A, real_B):  # noqa: N803 -- the user's names
        return self.G_A(real_B), self.G_B(real_A)


class CycleLoss(nn.Module):
    def forward(self, output, target):
        fake_A, fake_B = output
        return ((fake_A - target) ** 2).mean() + ((fake_B - target) ** 2).mean()


class CycleGANTrainer(LearnerCallback):
    "Keeps the two real batches and the two fakes, as the course's CycleGANTrainer does at on_batch_end."

    _order = -20

    def on_train_begin(self, **kwargs):
        self.seen = []

    def on_batch_begin(self, last_input, **kwargs):
        self.real_A, self.real_B = last_input

    def on_batch_end(self, last_input, last_output, **kwargs):
        self.fake_A, self.fake_B = last_output
        self.seen.append((len(last_input), tuple(o.shape for o in last_output)))


class PairDataset(torch.utils.data.Dataset):
    def __init__(self, n):
        g = torch.Generator().manual_seed(1)
        self.a, self.b = torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g)

    def __len__(self):
        return len(self.a)

    def __getitem__(self, i):
        return [self.a[i], self.b[i]], self.a[i]


def test_cyclegan_style_callback_receives_both_inputs_and_both_outputs_at_batch_end():
    data = DataBunch.create(PairDataset(16), PairDataset(8), bs=4, num_workers=0, device="cpu")
    learn = Learner(data, TwoGenerators(), loss_func=CycleLoss())
    trainer = CycleGANTrainer(learn)
    learn.callbacks.append(trainer)
    learn.fit(1, 1e-3)
    assert learn.cycle_gan_trainer is trainer
    assert trainer.seen == [(2, ((4, 4), (4, 4)))] * (4 + 2)
    assert torch.equal(trainer.fake_A, learn.model.G_A(trainer.real_B).detach())


# --------------------------------------------------------------- replacing last_loss at backward_begin
class L1Penalty(LearnerCallback):
    "Adds an L1 penalty on the weights to the loss before backward (a common forum recipe)."

    def __init__(self, learn, alpha=1e-2):
        super().__init__(learn)
        self.alpha = alpha

    def on_backward_begin(self, last_loss, **kwargs):
        penalty = sum(p.abs().sum() for p in self.learn.model.parameters())
        return {"last_loss": last_loss + self.alpha * penalty}


def test_loss_replaced_at_backward_begin_is_the_one_backpropagated_and_reported_at_batch_end():
    learn = make_learner()
    learn.create_opt(0.0, 0.0)  # lr 0: weights stay put, so every batch sees the same penalty
    grads, ends = [], []

    class Probe(Callback):
        _order = 10

        def on_backward_end(self, **kwargs):
            grads.append(learn.model[0].weight.grad.clone())

        def on_batch_end(self, last_loss, train, **kwargs):
            if train:
                ends.append(last_loss)

    penalty = L1Penalty(learn, alpha=0.5)
    torch.manual_seed(123)  # the same shuffled batches in both fits
    learn.fit(1, 0.0, callbacks=[penalty, Probe()])
    raw_losses = [float(v) for v in learn.recorder.losses]  # smooth_loss is built from the raw loss
    expected_penalty = 0.5 * sum(p.abs().sum() for p in learn.model.parameters()).item()
    assert len(ends) == 4
    assert abs(ends[0].item() - raw_losses[0] - expected_penalty) < 1e-4  # first smooth_loss == first raw loss
    n = len(grads)
    torch.manual_seed(123)
    learn.fit(1, 0.0, callbacks=[Probe()])
    weight = learn.model[0].weight.detach()
    # the penalty's gradient, 0.5 * sign(w), is in every step's gradient
    for with_p, without in zip(grads[:n], grads[n:]):
        assert torch.allclose(with_p - without, 0.5 * torch.sign(weight), atol=1e-6)
