"""The course notebook's CycleGAN (course-v3 ``nbs/dl2/cyclegan.ipynb``), as a user has it in their notebook,
with only the imports changed from ``fastai`` to ``fastloop``; the models come from fastloop.vision.cyclegan,
whose blocks are the notebook's.

The notebook's trainer differs from the library's: it smooths the generator losses at ``on_backward_begin``
from the loss's ``id_loss``/``gen_loss``/``cyc_loss`` attributes (read through ``LearnerCallback``'s fall-through
to the learner: ``self.loss_func``), keeps ``valid_loss`` in the table (``#na#``, as there is no validation
set) and names its columns ``id_loss gen_loss cyc_loss D_A_loss D_B_loss``.  This is the trainer of the forum
thread "[CycleGAN v3] Confused on CycleGANTrainer.on_batch_end() Arguments": ``on_batch_end`` receives
``last_input`` and ``last_output`` although the loop calls ``cb_handler.on_batch_end(loss)``.
"""

# ruff: noqa: E501, E701, E702, N801, N802, N803, N806  (the notebook's own style and names, unchanged)
from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn, optim

from fastloop.basic_train import Learner, LearnerCallback
from fastloop.callback import CallbackHandler, OptimWrapper, SmoothenValue
from fastloop.torch_core import add_metrics, flatten_model, requires_grad
from fastloop.vision.cyclegan import CycleGAN
from tests.tracing import Tracer, canonical_fit, table_lines
from tests.vision.gan_data import single_thread, unpaired_data

try:
    import fastloop.train  # noqa: F401  (attaches Learner.lr_find, as `from fastai.vision import *` did)
except ImportError:  # helper CB-A's module: its lr_find test is skipped without it
    pass


# ------------------------------------------------------------------------------ the notebook's cells
class AdaptiveLoss(nn.Module):
    def __init__(self, crit):
        super().__init__()
        self.crit = crit

    def forward(self, output, target:bool, **kwargs):
        targ = output.new_ones(*output.size()) if target else output.new_zeros(*output.size())
        return self.crit(output, targ, **kwargs)


class CycleGanLoss(nn.Module):
    def __init__(self, cgan:nn.Module, lambda_A:float=10., lambda_B:float=10, lambda_idt:float=0.5, lsgan:bool=True):
        super().__init__()
        self.cgan,self.l_A,self.l_B,self.l_idt = cgan,lambda_A,lambda_B,lambda_idt
        self.crit = AdaptiveLoss(F.mse_loss if lsgan else F.binary_cross_entropy)

    def set_input(self, input):
        self.real_A,self.real_B = input

    def forward(self, output, target):
        fake_A, fake_B, idt_A, idt_B = output
        #Generators should return identity on the datasets they try to convert to
        self.id_loss = self.l_idt * (self.l_B * F.l1_loss(idt_A, self.real_B) + self.l_A * F.l1_loss(idt_B, self.real_A))
        #Generators are trained to trick the discriminators so the following should be ones
        self.gen_loss = self.crit(self.cgan.D_A(fake_A), True) + self.crit(self.cgan.D_B(fake_B), True)
        #Cycle loss
        self.cyc_loss  = self.l_A * F.l1_loss(self.cgan.G_A(fake_B), self.real_A)
        self.cyc_loss += self.l_B * F.l1_loss(self.cgan.G_B(fake_A), self.real_B)
        return self.id_loss+self.gen_loss+self.cyc_loss


class CycleGANTrainer(LearnerCallback):
    _order = -20 #Need to run before the Recorder

    def _set_trainable(self, D_A=False, D_B=False):
        gen = (not D_A) and (not D_B)
        requires_grad(self.learn.model.G_A, gen)
        requires_grad(self.learn.model.G_B, gen)
        requires_grad(self.learn.model.D_A, D_A)
        requires_grad(self.learn.model.D_B, D_B)
        if not gen:
            self.opt_D_A.lr, self.opt_D_A.mom = self.learn.opt.lr, self.learn.opt.mom
            self.opt_D_A.wd, self.opt_D_A.beta = self.learn.opt.wd, self.learn.opt.beta
            self.opt_D_B.lr, self.opt_D_B.mom = self.learn.opt.lr, self.learn.opt.mom
            self.opt_D_B.wd, self.opt_D_B.beta = self.learn.opt.wd, self.learn.opt.beta

    def on_train_begin(self, **kwargs):
        self.G_A,self.G_B = self.learn.model.G_A,self.learn.model.G_B
        self.D_A,self.D_B = self.learn.model.D_A,self.learn.model.D_B
        self.crit = self.learn.loss_func.crit
        if not getattr(self,'opt_G',None):
            self.opt_G = self.learn.opt.new([nn.Sequential(*flatten_model(self.G_A), *flatten_model(self.G_B))])
        else:
            self.opt_G.lr,self.opt_G.wd = self.opt.lr,self.opt.wd
            self.opt_G.mom,self.opt_G.beta = self.opt.mom,self.opt.beta
        if not getattr(self,'opt_D_A',None):
            self.opt_D_A = self.learn.opt.new([nn.Sequential(*flatten_model(self.D_A))])
        if not getattr(self,'opt_D_B',None):
            self.opt_D_B = self.learn.opt.new([nn.Sequential(*flatten_model(self.D_B))])
        self.learn.opt.opt = self.opt_G.opt
        self._set_trainable()
        self.id_smter,self.gen_smter,self.cyc_smter = SmoothenValue(0.98),SmoothenValue(0.98),SmoothenValue(0.98)
        self.da_smter,self.db_smter = SmoothenValue(0.98),SmoothenValue(0.98)
        self.recorder.add_metric_names(['id_loss', 'gen_loss', 'cyc_loss', 'D_A_loss', 'D_B_loss'])

    def on_batch_begin(self, last_input, **kwargs):
        self.learn.loss_func.set_input(last_input)

    def on_backward_begin(self, **kwargs):
        self.id_smter.add_value(self.loss_func.id_loss.detach().cpu())
        self.gen_smter.add_value(self.loss_func.gen_loss.detach().cpu())
        self.cyc_smter.add_value(self.loss_func.cyc_loss.detach().cpu())

    def on_batch_end(self, last_input, last_output, **kwargs):
        self.G_A.zero_grad(); self.G_B.zero_grad()
        fake_A, fake_B = last_output[0].detach(), last_output[1].detach()
        real_A, real_B = last_input
        self._set_trainable(D_A=True)
        self.D_A.zero_grad()
        loss_D_A = 0.5 * (self.crit(self.D_A(real_A), True) + self.crit(self.D_A(fake_A), False))
        self.da_smter.add_value(loss_D_A.detach().cpu())
        loss_D_A.backward()
        self.opt_D_A.step()
        self._set_trainable(D_B=True)
        self.D_B.zero_grad()
        loss_D_B = 0.5 * (self.crit(self.D_B(real_B), True) + self.crit(self.D_B(fake_B), False))
        self.db_smter.add_value(loss_D_B.detach().cpu())
        loss_D_B.backward()
        self.opt_D_B.step()
        self._set_trainable()

    def on_epoch_end(self, last_metrics, **kwargs):
        return add_metrics(last_metrics, [s.smooth for s in [self.id_smter,self.gen_smter,self.cyc_smter,
                                                             self.da_smter,self.db_smter]])


# ------------------------------------------------------------------------------ the tests
NB_COLUMNS = ["id_loss", "gen_loss", "cyc_loss", "D_A_loss", "D_B_loss"]
N_IMGS, BS = 256, 32


def notebook_learner(tmp_path, n_imgs: int = N_IMGS, callbacks=None) -> Learner:
    "The notebook's training cell, on a tiny CycleGAN and two 16x16 digit domains (no validation set)."
    torch.manual_seed(0)
    cycle_gan = CycleGAN(1, 1, n_features=8, disc_layers=2, gen_blocks=1)
    data = unpaired_data(n_imgs, BS)
    return Learner(data, cycle_gan, loss_func=CycleGanLoss(cycle_gan), opt_func=partial(optim.Adam, betas=(0.5,0.99)),
                   callback_fns=[CycleGANTrainer], path=tmp_path, callbacks=callbacks)


def test_notebook_trainer_trains_for_two_epochs_and_prints_na_then_its_five_columns(tmp_path, capsys):
    """Two epochs: every weight matrix of both generators and both critics changes; the learner's inner
    optimizer is the trainer's generator `OptimWrapper`, the critics have theirs; the table shows
    ``valid_loss`` as ``#na#`` followed by the notebook's five columns, values in recorder order."""
    learn = notebook_learner(tmp_path)
    model = learn.model
    before = {n: [p.detach().clone() for p in getattr(model, n).parameters()] for n in ("G_A", "G_B", "D_A", "D_B")}
    with single_thread():
        learn.fit(2, 1e-3)
    for name, params in before.items():
        now = list(getattr(model, name).parameters())
        assert all(not torch.equal(b, p) for b, p in zip(params, now) if p.dim() > 1), f"{name} did not train"
    trainer = learn.cycle_gan_trainer
    assert all(isinstance(o, OptimWrapper) for o in (trainer.opt_G, trainer.opt_D_A, trainer.opt_D_B))
    assert learn.opt.opt is trainer.opt_G.opt
    assert learn.recorder.names == ["epoch", "train_loss", "valid_loss", *NB_COLUMNS, "time"]
    assert learn.recorder.val_losses == [None, None]
    lines = table_lines(capsys.readouterr().out)
    assert next(line for line in lines if line.startswith("epoch")).split() == learn.recorder.names
    rows = [line.split() for line in lines if line.split()[0] in ("0", "1") and len(line.split()) == 9]
    assert [r[0] for r in rows] == ["0", "1"]
    for row, metrics in zip(rows, learn.recorder.metrics):
        assert row[2] == "#na#"
        assert row[3:8] == [f"{float(v):.6f}" for v in metrics]
    smoothers = [trainer.id_smter, trainer.gen_smter, trainer.cyc_smter, trainer.da_smter, trainer.db_smter]
    assert [float(v) for v in learn.recorder.metrics[-1]] == [float(s.smooth) for s in smoothers]


def test_on_batch_end_receives_last_input_and_last_output_though_the_loop_passes_only_the_loss(tmp_path,
                                                                                               monkeypatch):
    """The forum question: the loop calls ``cb_handler.on_batch_end(loss)``; the handler put ``last_input`` in
    its state at batch_begin and ``last_output`` at loss_begin, and calls the trainer with all of it."""
    seen = []

    class Spy(CycleGANTrainer):
        def on_batch_end(self, last_input, last_output, **kwargs):
            seen.append((last_input, last_output, sorted(kwargs)))
            return super().on_batch_end(last_input, last_output, **kwargs)

    handed = []
    original = CallbackHandler.on_batch_end
    monkeypatch.setattr(CallbackHandler, "on_batch_end",
                        lambda self, *a, **k: handed.append((a, k)) or original(self, *a, **k))
    tracer = Tracer()
    learn = notebook_learner(tmp_path, n_imgs=3 * BS, callbacks=[tracer])
    learn.callback_fns = [fn for fn in learn.callback_fns if fn is not CycleGANTrainer] + [Spy]
    with single_thread():
        learn.fit(1, 1e-3)
    assert tracer.events() == canonical_fit(1, 3, 0, validate=False)
    assert [(len(a), k) for a, k in handed] == [(1, {})] * 3
    inputs = [kw["last_input"] for e, kw in tracer.kwargs if e == "batch_begin"]
    outputs = [kw["last_output"] for e, kw in tracer.kwargs if e == "loss_begin"]
    for (inp, out, keys), inp0, out0 in zip(seen, inputs, outputs):
        assert inp is inp0 and out is out0
        assert "last_loss" in keys and "last_target" in keys and "smooth_loss" in keys


def test_lr_find_then_fit_as_in_the_notebook(tmp_path):
    """``learn.lr_find()`` then ``learn.fit(...)``: the lr finder's fit gets its own trainer, restores the
    weights, and the fit after it trains with fresh optimizers, the five columns and ``#na#``."""
    learn = notebook_learner(tmp_path)
    if not hasattr(learn, "lr_find"):
        pytest.skip("Learner.lr_find (fastloop.train) is not there yet")
    with single_thread():
        learn.lr_find(num_it=N_IMGS // BS, stop_div=False)
        lr_find_trainer = learn.cycle_gan_trainer
        learn.fit(1, 1e-4)
    assert learn.cycle_gan_trainer is not lr_find_trainer
    assert learn.opt.opt is learn.cycle_gan_trainer.opt_G.opt
    assert learn.recorder.names == ["epoch", "train_loss", "valid_loss", *NB_COLUMNS, "time"]
    assert learn.recorder.val_losses == [None] and len(learn.recorder.metrics[0]) == 5
