"""The resume-equivalence scenario of tests/test_checkpoint.py, run in fresh processes.

``python -m tests.resume_scenario write DIR`` runs the seeded reference fit (3 epochs, shuffled loader, dropout,
one-cycle, early stopping, accuracy) and saves its final state to ``DIR/ref.pth``.  The same run requests
checkpoints at chosen training batches and epoch ends (requests do not change the run), and two more runs,
identical until then, are stopped by Ctrl-C (SIGINT, sent from a callback): one during a validation pass, one
during a training batch, with ``save_on_interrupt``.

``python -m tests.resume_scenario resume DIR NAME...`` resumes, in this fresh process, from each checkpoint
NAME (after seeding the RNGs differently: the checkpoint must restore them) and saves the final state to
``DIR/res_NAME.pth``.
"""

from __future__ import annotations

import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

import fastprogress.fastprogress as fp
import numpy as np
import torch
from torch import nn

from fastloop.basic_train import Learner, LearnerCallback
from fastloop.callbacks.one_cycle import OneCycleScheduler
from fastloop.callbacks.tracker import EarlyStoppingCallback
from fastloop.metrics import accuracy
from tests.conftest import make_data

EPOCHS = 3
#: (iteration at whose on_batch_end a checkpoint is requested) -> name; 4 training batches per epoch
SAVE_BATCHES = {1: "b1", 3: "b3", 6: "b6"}
#: (epoch index at whose on_epoch_end a checkpoint is requested) -> name
SAVE_EPOCHS = {0: "e0"}
INTERRUPTS = {"int_val": ("valid", 1), "int_train": ("train", 9)}  # SIGINT: (phase, epoch or iteration)
NAMES = [*SAVE_BATCHES.values(), *SAVE_EPOCHS.values(), *INTERRUPTS]


def build(path: Path, seed: int = 0) -> Learner:
    "The seeded learner: 64 training items in 4 shuffled batches, 32 validation items, a model with dropout."
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    data = make_data(n_train=64, n_valid=32, bs=16)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))
    return Learner(data, model, loss_func=nn.CrossEntropyLoss(), metrics=[accuracy], path=path, silent=True)


class Control(LearnerCallback):
    """Requests checkpoints and sends SIGINT at configured points.  Its settings are in `exclude`, so they are
    not part of its checkpointed state (a resumed run is given none)."""

    def __init__(self, learn: Learner, save: bool = False, sigint: tuple[str, int] | None = None):
        super().__init__(learn)
        self.save, self.sigint = save, sigint
        self.exclude += ["save", "sigint", "sent"]
        self.sent = False
        self.events_seen = 0  # real state: counted, checkpointed and restored

    def on_batch_begin(self, train: bool, iteration: int, epoch: int, **kwargs: Any) -> None:
        self.events_seen += 1
        at = ("train", iteration) if train else ("valid", epoch)
        if self.sigint == at and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C: deferred to the next safe point

    def on_batch_end(self, train: bool, iteration: int, **kwargs: Any) -> None:
        if self.save and train and iteration in SAVE_BATCHES:
            self.learn.save_checkpoint(SAVE_BATCHES[iteration])

    def on_epoch_end(self, epoch: int, **kwargs: Any) -> None:
        if self.save and epoch in SAVE_EPOCHS:
            self.learn.save_checkpoint(SAVE_EPOCHS[epoch])


class Final(LearnerCallback):
    "Records the handler's counters at on_train_end."

    _order = 50

    def on_train_end(self, epoch: int, iteration: int, **kwargs: Any) -> None:
        self.final = {"epoch": epoch, "iteration": iteration}


def callbacks(learn: Learner, save: bool = False, sigint: tuple[str, int] | None = None) -> list:
    return [OneCycleScheduler(learn, 1e-2), EarlyStoppingCallback(learn, monitor="valid_loss", min_delta=10.0,
                                                                   patience=1),
            Control(learn, save, sigint), Final(learn)]


def final_state(learn: Learner, cbs: list) -> dict[str, Any]:
    "Everything the equivalence test compares, as tensors and numbers."
    one_cycle, early, control, final = cbs
    rec = learn.recorder
    return {
        "model": {k: v.clone() for k, v in learn.model.state_dict().items()},
        "opt_state": {k: {n: t.clone() for n, t in s.items()} for k, s in learn.opt.state_dict()["state"].items()},
        "param_groups": [{k: v for k, v in pg.items() if k != "params"}
                         for pg in learn.opt.state_dict()["param_groups"]],
        "recorder": {"losses": torch.stack(rec.losses), "lrs": [float(x) for x in rec.lrs],
                     "moms": [float(x) for x in rec.moms], "val_losses": [float(x) for x in rec.val_losses],
                     "metrics": [[float(t) for t in m] for m in rec.metrics], "nb_batches": list(rec.nb_batches)},
        "one_cycle": {"idx_s": one_cycle.idx_s, "n": [s.n for s in one_cycle.lr_scheds + one_cycle.mom_scheds]},
        "early": {"best": float(early.best), "wait": early.wait},
        "control": control.events_seen,
        "final": final.final,
        "rng": torch.get_rng_state(),
    }


def write(folder: Path) -> None:
    fp.NO_BAR = True
    learn = build(folder)
    cbs = callbacks(learn, save=True)
    learn.fit(EPOCHS, 1e-2, callbacks=cbs)
    torch.save(final_state(learn, cbs), folder / "ref.pth")
    for name, sigint in INTERRUPTS.items():
        learn = build(folder)
        try:
            learn.fit(EPOCHS, 1e-2, callbacks=callbacks(learn, save=False, sigint=sigint), save_on_interrupt=name)
        except KeyboardInterrupt:
            pass
        else:
            raise AssertionError(f"run {name} was not interrupted")


def resume(folder: Path, names: list[str]) -> None:
    fp.NO_BAR = True
    for name in names:
        learn = build(folder, seed=1234)  # other weights and RNG states: the checkpoint must restore them
        cbs = callbacks(learn)
        learn.fit(EPOCHS, 1e-2, callbacks=cbs, resume_from=name)
        torch.save(final_state(learn, cbs), folder / f"res_{name}.pth")


if __name__ == "__main__":
    mode, folder = sys.argv[1], Path(sys.argv[2])
    if mode == "write":
        write(folder)
    else:
        resume(folder, sys.argv[3:])
