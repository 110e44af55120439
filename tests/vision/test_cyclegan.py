"""fastloop.vision.cyclegan: the building blocks, the CycleGAN model and loss, and the module's CycleGANTrainer
training a small CycleGAN on two unpaired digit domains, without a validation set, on the CPU."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from fastloop.basic_train import Learner, LearnerCallback
from fastloop.callback import CallbackHandler, OptimWrapper, annealing_cos
from fastloop.vision.cyclegan import (
    AdaptiveLoss,
    CycleGAN,
    CycleGanLoss,
    CycleGANTrainer,
    ResnetBlock,
    critic,
    resnet_generator,
)
from tests.tracing import Tracer, canonical_fit, table_lines

from .gan_data import single_thread, unpaired_data

N_IMGS, BS = 256, 32
N_BATCHES = N_IMGS // BS
COLUMNS = ["idt_loss", "gen_loss", "cyc_loss", "da_loss", "db_loss"]


def small_cyclegan(seed: int = 0) -> CycleGAN:
    "16x16 grey images: 8 features, one residual block, two critic layers."
    torch.manual_seed(seed)
    return CycleGAN(1, 1, n_features=8, disc_layers=2, gen_blocks=1)


def cyclegan_learner(valid: bool = False, extra_fns: list | None = None, **kwargs) -> Learner:
    model = small_cyclegan()
    return Learner(unpaired_data(N_IMGS, BS, valid=valid), model, loss_func=CycleGanLoss(model),
                   opt_func=partial(torch.optim.Adam, betas=(0.5, 0.99)),
                   callback_fns=[CycleGANTrainer, *(extra_fns or [])], **kwargs)


def snapshot(m: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in m.parameters()]


def changed(before: list[torch.Tensor], m: nn.Module) -> bool:
    return all(not torch.equal(b, p) for b, p in zip(before, m.parameters()) if p.dim() > 1)


# ------------------------------------------------------------------------------------------------ blocks
def test_generator_keeps_the_image_shape_and_resnet_block_adds_its_input():
    torch.manual_seed(0)
    gen = resnet_generator(3, 1, n_ftrs=8, n_blocks=2)
    assert gen(torch.randn(2, 3, 16, 16)).shape == (2, 1, 16, 16)
    block = ResnetBlock(4)
    for p in block.conv_block.parameters():  # a zero branch: the block is the identity
        nn.init.zeros_(p)
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(block(x), x)
    with pytest.raises(AssertionError, match="padding foo not implemented"):
        ResnetBlock(4, pad_mode="foo")


def test_critic_gives_a_patch_map_and_a_sigmoid_without_lsgan():
    torch.manual_seed(0)
    out = critic(1, 8, n_layers=2)(torch.randn(2, 1, 16, 16))
    assert out.shape == (2, 1, 2, 2)
    probs = critic(1, 8, n_layers=2, sigmoid=True)(torch.randn(2, 1, 16, 16))
    assert ((probs > 0) & (probs < 1)).all()


def test_cyclegan_returns_four_images_in_training_and_the_stacked_fakes_in_eval():
    model = small_cyclegan()
    a, b = torch.randn(3, 1, 16, 16), torch.randn(3, 1, 16, 16)
    fake_a, fake_b, idt_a, idt_b = model(a, b)
    assert torch.allclose(fake_a, model.G_A(b)) and torch.allclose(idt_a, model.G_A(a))
    assert torch.allclose(fake_b, model.G_B(a)) and torch.allclose(idt_b, model.G_B(b))
    model.eval()
    stacked = model(a, b)
    assert stacked.shape == (3, 2, 1, 16, 16)
    assert torch.allclose(stacked[:, 0], model.G_A(b)) and torch.allclose(stacked[:, 1], model.G_B(a))


def test_cyclegan_loss_is_the_sum_of_identity_adversarial_and_cycle_terms_it_stores():
    model = small_cyclegan()
    loss = CycleGanLoss(model, lambda_A=2.0, lambda_B=3.0, lambda_idt=0.5)
    a, b = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16)
    loss.set_input([a, b])
    out = model(a, b)
    total = loss(out, torch.zeros(2))
    fake_a, fake_b, idt_a, idt_b = out
    l1, mse = nn.functional.l1_loss, nn.functional.mse_loss
    idt = 0.5 * (3.0 * l1(idt_a, b) + 2.0 * l1(idt_b, a))
    d_a, d_b = model.D_A(fake_a), model.D_B(fake_b)
    gen = mse(d_a, torch.ones_like(d_a)) + mse(d_b, torch.ones_like(d_b))
    cyc = 2.0 * l1(model.G_A(fake_b), a) + 3.0 * l1(model.G_B(fake_a), b)
    for got, want in zip(loss.metrics, [idt, gen, cyc]):
        assert torch.allclose(got, want)
    assert torch.allclose(total, idt + gen + cyc)


def test_adaptive_loss_compares_with_all_ones_or_all_zeros():
    crit = AdaptiveLoss(nn.functional.mse_loss)
    x = torch.tensor([[0.25, 1.0]])
    assert crit(x, True).item() == pytest.approx((0.75**2) / 2)
    assert crit(x, False).item() == pytest.approx((0.25**2 + 1) / 2)


# ------------------------------------------------------------------------------------------------ training
class LinearDecay(LearnerCallback):
    "A scheduler of the user's: at each training batch end, sets the learner's lr from a cosine over the fit."

    def __init__(self, learn, lr_max: float = 1e-3, n_iter: int = 2 * N_BATCHES):
        super().__init__(learn)
        self.lr_max, self.n_iter = lr_max, n_iter

    def on_batch_end(self, iteration: int, train: bool, **kwargs) -> None:
        if train:
            self.learn.opt.lr = annealing_cos(self.lr_max, self.lr_max / 10, (iteration + 1) / self.n_iter)


class LrSpy(LearnerCallback):
    """Records the lr in each torch optimizer at the moment it steps: the generators' (through the loop's
    ``opt.step()``) and each critic's (the trainer's own ``opt_D_*.step()``, inside its on_batch_end)."""

    def on_train_begin(self, **kwargs) -> None:
        self.g, self.d_a, self.d_b = [], [], []

    def on_backward_end(self, **kwargs) -> None:
        self.g.append(self.learn.opt.opt.param_groups[0]["lr"])
        trainer = self.learn.cycle_gan_trainer
        if "_spied" not in vars(trainer.opt_D_A):  # (an OptimWrapper answers None to any attribute)
            for opt, log in ((trainer.opt_D_A, self.d_a), (trainer.opt_D_B, self.d_b)):
                step = opt.step

                def spied(step=step, opt=opt, log=log):
                    log.append(opt.opt.param_groups[0]["lr"])
                    step()

                opt.step, opt._spied = spied, True


def test_module_trainer_trains_generators_and_both_critics_for_two_epochs_without_validation(capsys):
    """Two epochs of 8 batches: every weight matrix of G_A, G_B, D_A, D_B changes; the learner's inner optimizer
    is the generators' `OptimWrapper` the trainer made, and each critic has its own; the table has no valid_loss
    column and the five loss columns in their place, each value under its name."""
    learn = cyclegan_learner()
    model = learn.model
    before = {name: snapshot(getattr(model, name)) for name in ("G_A", "G_B", "D_A", "D_B")}
    with single_thread():
        learn.fit(2, 1e-3)
    for name in before:
        assert changed(before[name], getattr(model, name)), f"{name} did not train"
    trainer = learn.cycle_gan_trainer
    opts = (trainer.opt_G, trainer.opt_D_A, trainer.opt_D_B)
    assert all(isinstance(o, OptimWrapper) for o in opts) and learn.opt.opt is trainer.opt_G.opt

    def params(o):
        return {id(p) for g in o.opt.param_groups for p in g["params"]}

    assert params(trainer.opt_G) == {id(p) for p in [*model.G_A.parameters(), *model.G_B.parameters()]}
    assert params(trainer.opt_D_A) == {id(p) for p in model.D_A.parameters()}
    assert params(trainer.opt_D_B) == {id(p) for p in model.D_B.parameters()}
    # generator mode at the end: critics frozen, generators trainable
    assert all(p.requires_grad for p in model.G_A.parameters())
    assert not any(p.requires_grad for p in model.D_A.parameters())

    rec = learn.recorder
    assert rec.names == ["epoch", "train_loss", *COLUMNS, "time"]
    assert rec.val_losses == [None, None]
    assert len(rec.metrics) == 2 and all(len(row) == 5 for row in rec.metrics)
    assert all(v.grad_fn is None for row in rec.metrics for v in row)  # detached: no graph kept alive
    assert [float(v) for v in rec.metrics[-1]] == [float(s.smooth) for s in trainer.smootheners.values()]
    lines = table_lines(capsys.readouterr().out)
    header = next(line for line in lines if line.startswith("epoch"))
    assert header.split() == rec.names
    rows = [line.split() for line in lines if line.split()[0] in ("0", "1") and len(line.split()) == len(rec.names)]
    assert [r[0] for r in rows] == ["0", "1"]
    for row, metrics in zip(rows, rec.metrics):
        assert row[2:7] == [f"{float(v):.6f}" for v in metrics]  # idt_loss under idt_loss... no #na# shift
        assert "#na#" not in row


def test_learner_schedule_drives_the_generator_and_both_critic_optimizers():
    """A scheduler that sets ``learn.opt.lr`` reaches the generators (the learner's inner optimizer is theirs)
    and both critics (the trainer copies the learner's lr at every switch), batch by batch."""
    learn = cyclegan_learner(extra_fns=[LinearDecay, LrSpy])
    with single_thread():
        learn.fit(2, 1e-3)
    spy = learn.lr_spy
    scheduled = [1e-3] + [annealing_cos(1e-3, 1e-4, (i + 1) / (2 * N_BATCHES)) for i in range(2 * N_BATCHES - 1)]
    assert spy.g == pytest.approx(scheduled)
    assert spy.d_a == pytest.approx(scheduled)
    assert spy.d_b == pytest.approx(scheduled)
    assert learn.recorder.lrs == pytest.approx(scheduled)


class TracedTrainer(CycleGANTrainer):
    "The module's trainer, recording the kwargs keys and the batch objects it receives."

    def on_train_begin(self, **kwargs):
        self.seen = [("train_begin", sorted(kwargs))]
        return super().on_train_begin(**kwargs)

    def on_batch_begin(self, last_input, **kwargs):
        self.seen.append(("batch_begin", sorted(["last_input", *kwargs])))
        self.batch_inputs = getattr(self, "batch_inputs", []) + [last_input]
        return super().on_batch_begin(last_input, **kwargs)

    def on_batch_end(self, last_input, last_output, **kwargs):
        self.seen.append(("batch_end", sorted(["last_input", "last_output", *kwargs])))
        self.end_io = getattr(self, "end_io", []) + [(last_input, last_output)]
        return super().on_batch_end(last_input, last_output, **kwargs)

    def on_epoch_end(self, last_metrics, **kwargs):
        self.seen.append(("epoch_end", sorted(["last_metrics", *kwargs]), list(last_metrics)))
        return super().on_epoch_end(last_metrics, **kwargs)


def test_trace_events_and_state_keys_seen_by_the_trainer_match_the_spec(monkeypatch):
    """The trainer gets train_begin, then per batch batch_begin and batch_end, then epoch_end; at batch_end it
    receives ``last_input`` (the very list of batch_begin) and ``last_output`` (the model's output, as a
    tracer saw it at loss_begin) while the loop handed the handler only the loss; ``last_metrics`` is
    ``[None]`` at epoch_end (no validation)."""
    handed = []
    original = CallbackHandler.on_batch_end

    def spy(self, *args, **kwargs):
        handed.append((len(args), sorted(kwargs), type(args[0]).__name__))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(CallbackHandler, "on_batch_end", spy)
    model = small_cyclegan()
    tracer = Tracer(order=0)
    learn = Learner(unpaired_data(4 * BS, BS), model, loss_func=CycleGanLoss(model),
                    callback_fns=[TracedTrainer])
    with single_thread():
        learn.fit(1, 1e-3, callbacks=[tracer])
    trainer = learn.traced_trainer
    assert tracer.events() == canonical_fit(1, 4, 0, validate=False)
    assert handed == [(1, [], "Tensor")] * 4  # on_batch_end(loss): one positional argument, the loss
    events = [s[0] for s in trainer.seen]
    assert events == ["train_begin"] + ["batch_begin", "batch_end"] * 4 + ["epoch_end"]
    # the keys each event carries (spec §4.1): lazily present, with the train_begin extra metrics_names
    base = ["epoch", "iteration", "metrics", "n_epochs", "num_batch", "pbar", "skip_validate"]
    assert trainer.seen[0][1] == sorted(base + ["metrics_names"])
    batch_keys = base + ["last_input", "last_target", "skip_bwd", "skip_step", "skip_zero", "stop_epoch",
                         "stop_training", "train"]
    assert trainer.seen[1][1] == sorted(batch_keys)
    assert trainer.seen[2][1] == sorted(batch_keys + ["last_loss", "last_output", "smooth_loss"])
    assert trainer.seen[-1][1] == sorted(batch_keys + ["last_loss", "last_output", "smooth_loss", "last_metrics"])
    assert trainer.seen[-1][2] == [None]
    tracer_outputs = [kw["last_output"] for e, kw in tracer.kwargs if e == "loss_begin"]
    for i, (inp, out) in enumerate(trainer.end_io):
        assert inp is trainer.batch_inputs[i] and isinstance(inp, list) and len(inp) == 2
        assert out is tracer_outputs[i] and len(out) == 4


def test_a_validation_set_is_skipped_instead_of_crashing_the_fit():
    """In eval mode the model returns stacked fakes the loss cannot score (fastai 1.0.61 crashed at the first
    validation batch): the trainer returns ``skip_validate`` at train_begin, and the fit trains."""
    tracer = Tracer()
    learn = cyclegan_learner(valid=True)
    with single_thread():
        learn.fit(1, 1e-3, callbacks=[tracer])
    assert tracer.events() == canonical_fit(1, N_BATCHES, 0, validate=False)
    assert learn.recorder.val_losses == [None]


def test_lr_find_then_fit_run_in_sequence_as_in_the_notebook(tmp_path):
    """``learn.lr_find()`` then ``learn.fit``: each fit gets a fresh trainer (callback_fns) with fresh optimizers,
    the lr finder restores the weights, and the fit then trains."""
    pytest.importorskip("fastloop.train")
    if not hasattr(Learner, "lr_find"):
        pytest.skip("Learner.lr_find is not there yet")
    learn = cyclegan_learner(path=tmp_path)
    with single_thread():
        learn.lr_find(num_it=N_BATCHES, stop_div=False)
        finder_trainer = learn.cycle_gan_trainer
        assert len(learn.recorder.lrs) == N_BATCHES
        learn.fit(1, 1e-4)
    assert learn.cycle_gan_trainer is not finder_trainer
    assert learn.opt.opt is learn.cycle_gan_trainer.opt_G.opt
    assert learn.recorder.names == ["epoch", "train_loss", *COLUMNS, "time"]
    assert len(learn.recorder.metrics) == 1
