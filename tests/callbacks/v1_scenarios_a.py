"""Scenarios for the LR finder, one-cycle, schedulers, trackers, CSVLogger, LossMetrics and the train helpers,
runnable on fastai 1.0.61 or on fastloop: only the package the modules come from differs.

``v1_reference_a.json`` holds what fastai 1.0.61 (+ fastprogress 0.2.6, torch 2.13 on the CPU, one thread)
produced; regenerate it with the live oracle (spec §22)::

    /tmp/oracle/bin/python tests/callbacks/v1_scenarios_a.py --lib fastai --out tests/callbacks/v1_reference_a.json

``tests/callbacks/test_v1_reference_a.py`` runs the same scenarios on fastloop and compares.  Scenarios where
v1 crashes on today's torch (and fastloop is fixed) record the exception here and are checked separately.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset


class Lib:
    "The modules a scenario uses, from `fastai` or from `fastloop`."

    def __init__(self, name: str):
        self.name = name
        imp = importlib.import_module
        self.bt, self.bd = imp(f"{name}.basic_train"), imp(f"{name}.basic_data")
        self.cb, self.metrics, self.train = imp(f"{name}.callback"), imp(f"{name}.metrics"), imp(f"{name}.train")
        self.cbs, self.misc = imp(f"{name}.callbacks"), imp(f"{name}.callbacks.misc")
        self.gs, self.fca = imp(f"{name}.callbacks.general_sched"), imp(f"{name}.callbacks.flat_cos_anneal")
        if name == "fastai":  # fastai's DataBunch.is_empty needs ItemLists; plain TensorDatasets are never empty
            self.bd.DataBunch.is_empty = property(lambda self: False)


# ------------------------------------------------------------------------------------------------ helpers
def jsonable(x: Any) -> Any:
    "Plain JSON values: tensors and numpy values become floats/ints/lists."
    if x is None or isinstance(x, (bool, int, str, float)):
        return x
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return x.item() if x.dim() == 0 else [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.item() if x.ndim == 0 else [jsonable(v) for v in x.tolist()]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return repr(x)


_BAR_REMNANT = re.compile(r"^.*\[\d+/\d+ [^\]]*\]")  # a cut-short progress bar left before a line (fastprogress 1.0)


def console_lines(text: str) -> list[str]:
    "What a terminal shows: the text after each line's last carriage return, without bar remnants."
    out = []
    for line in text.split("\n"):
        line = _BAR_REMNANT.sub("", line.split("\r")[-1]).rstrip()
        if line.strip():
            out.append(line)
    return out


def make_data(lib: Lib, n_train: int = 40, n_valid: int = 20, bs: int = 8) -> Any:
    "A 3-feature linear problem: 40 training items (5 batches of 8), 20 validation items."
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(n_train + n_valid, 4, generator=g)
    y = ((x[:, 0] + 0.5 * x[:, 1] - 0.3 * x[:, 2]) > 0).long()
    train_ds, valid_ds = TensorDataset(x[:n_train], y[:n_train]), TensorDataset(x[n_train:], y[n_train:])
    return lib.bd.DataBunch.create(train_ds, valid_ds, bs=bs, num_workers=0)


def make_learner(lib: Lib, path: str, metrics: bool = True, n_train: int = 40, **kwargs: Any) -> Any:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    return lib.bt.Learner(make_data(lib, n_train=n_train), model, loss_func=nn.CrossEntropyLoss(),
                          metrics=[lib.metrics.accuracy] if metrics else None, path=path, **kwargs)


def recorded(learn: Any) -> dict:
    r = learn.recorder
    return dict(lrs=jsonable(r.lrs), moms=jsonable(r.moms), losses=jsonable(r.losses),
                val_losses=jsonable(r.val_losses), metrics=jsonable(r.metrics), names=list(r.names),
                nb_batches=list(r.nb_batches))


def param_sum(learn: Any) -> float:
    return float(torch.cat([p.detach().reshape(-1) for p in learn.model.parameters()]).double().sum())


def group_lrs(learn: Any) -> list:
    return [jsonable(g["lr"]) for g in learn.opt.opt.param_groups]


class NanLoss(nn.Module):
    "Cross-entropy, but NaN at its `at`-th call (counting training and validation batches)."

    def __init__(self, at: int):
        super().__init__()
        self.n, self.at, self.ce = 0, at, nn.CrossEntropyLoss()

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.n += 1
        loss = self.ce(out, y)
        return loss * float("nan") if self.n == self.at else loss


class PartsLoss(nn.Module):
    "A loss that publishes two parts for LossMetrics."

    def __init__(self):
        super().__init__()
        self.ce, self.metric_names = nn.CrossEntropyLoss(), ["ce2", "half"]

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = self.ce(out, y)
        self.metrics = {"ce2": loss * 2, "half": loss / 2}
        return loss


# ---------------------------------------------------------------------------------------------- scenarios
SCENARIOS: dict[str, Callable[[Lib, str], dict]] = {}


def scenario(f: Callable[[Lib, str], dict]) -> Callable[[Lib, str], dict]:
    SCENARIOS[f.__name__] = f
    return f


@scenario
def one_cycle(lib: Lib, p: str) -> dict:
    learn = make_learner(lib, p)
    learn.fit_one_cycle(2, 1e-2)
    return dict(rec=recorded(learn), lr=jsonable(learn.opt.lr), mom=jsonable(learn.opt.mom),
                psum=param_sum(learn), pg=group_lrs(learn))


@scenario
def one_cycle_options_and_resume(lib: Lib, p: str) -> dict:
    learn = make_learner(lib, p)
    learn.fit_one_cycle(2, 5e-3, moms=(0.9, 0.8), div_factor=10.0, pct_start=0.5, final_div=100.0)
    first = recorded(learn)
    learn.fit_one_cycle(2, 5e-3, tot_epochs=3, start_epoch=1)
    return dict(rec=first, rec2=recorded(learn), lr=jsonable(learn.opt.lr), mom=jsonable(learn.opt.mom),
                psum=param_sum(learn))


@scenario
def one_cycle_discriminative(lib: Lib, p: str) -> dict:
    learn = make_learner(lib, p)
    learn.split(lambda m: [m[2]])
    learn.fit_one_cycle(1, slice(1e-3, 1e-2))
    return dict(rec=recorded(learn), lr=jsonable(learn.opt._lr), mom=jsonable(learn.opt._mom), pg=group_lrs(learn),
                psum=param_sum(learn))


@scenario
def lr_find_default(lib: Lib, p: str) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    learn = make_learner(lib, p)
    learn.fit(1, 1e-3)
    learn.lr_find()
    out = dict(rec=recorded(learn), lr=jsonable(learn.opt.lr), pg=group_lrs(learn), psum=param_sum(learn),
               files=sorted(os.listdir(os.path.join(p, "models"))))
    with contextlib.redirect_stdout(io.StringIO()) as s:
        learn.recorder.plot(suggestion=True)
    out["plot"], out["min_grad_lr"] = s.getvalue(), jsonable(learn.recorder.min_grad_lr)
    return out


@scenario
def lr_find_no_stop(lib: Lib, p: str) -> dict:
    learn = make_learner(lib, p)
    learn.lr_find(1e-5, 1e-1, num_it=12, stop_div=False, wd=0.002)
    return dict(rec=recorded(learn), lr=jsonable(learn.opt.lr), wd=jsonable(learn.opt.wd), pg=group_lrs(learn),
                psum=param_sum(learn))


@scenario
def lr_find_stops_on_divergence(lib: Lib, p: str) -> dict:
    learn = make_learner(lib, p)
    learn.lr_find(1e-3, 1e3, num_it=60)
    return dict(rec=recorded(learn), lr=jsonable(learn.opt.lr), psum=param_sum(learn))


@scenario
def terminate_on_nan(lib: Lib, p: str) -> dict:
    learn = make_learner(lib, p)
    learn.loss_func = NanLoss(8)  # the 8th loss call: epoch 0's last validation batch
    learn.fit(3, 1e-3, callbacks=[lib.cbs.TerminateOnNaNCallback()])
    return dict(rec=recorded(learn), psum=param_sum(learn))


@scenario
def early_stopping(lib: Lib, p: str) -> dict:
    learn = make_learner(lib, p)
    learn.fit(6, 0.5, callbacks=[lib.cbs.EarlyStoppingCallback(learn, patience=1)])
    learn2 = make_learner(lib, p)
    cb = lib.cbs.EarlyStoppingCallback(learn2, monitor="accuracy", min_delta=0.01, patience=0)
    learn2.fit(5, 1e-2, callbacks=[cb])
    return dict(rec=recorded(learn), rec2=recorded(learn2), best2=jsonable(cb.best), wait2=cb.wait)


@scenario
def save_model(lib: Lib, p: str) -> dict:
    learn = make_learner(lib, p)
    cb = lib.cbs.SaveModelCallback(learn, every="improvement", name="best")
    learn.fit(4, 0.3, callbacks=[cb])
    psum = param_sum(learn)
    learn2 = make_learner(lib, p)
    learn2.fit(2, 1e-2, callbacks=[lib.cbs.SaveModelCallback(learn2, every="epoch", monitor="accuracy", name="ep")])
    files = sorted(os.listdir(os.path.join(p, "models")))
    return dict(rec=recorded(learn), psum=psum, best=jsonable(cb.best), files=files)


@scenario
def reduce_lr_on_plateau(lib: Lib, p: str) -> dict:
    learn = make_learner(lib, p)
    cb = lib.cbs.ReduceLROnPlateauCallback(learn, patience=0, factor=0.5, min_lr=1e-2, min_delta=0.001)
    learn.fit(7, 0.4, callbacks=[cb])
    return dict(rec=recorded(learn), wait=cb.wait, best=jsonable(cb.best), lr=jsonable(learn.opt.lr))


@scenario
def reduce_lr_stops_at_min_lr(lib: Lib, p: str) -> dict:
    learn = make_learner(lib, p)
    cb = lib.cbs.ReduceLROnPlateauCallback(learn, patience=0, factor=0.5, min_lr=1e-1, min_delta=0.001)
    learn.fit(9, 0.4, callbacks=[cb])
    return dict(rec=recorded(learn), wait=cb.wait, lr=jsonable(learn.opt.lr))


@scenario
def csv_logger(lib: Lib, p: str) -> dict:
    learn = make_learner(lib, p, callback_fns=[lib.cbs.CSVLogger])
    learn.fit_one_cycle(2, 1e-2)
    first = open(os.path.join(p, "history.csv")).read()
    learn.callback_fns[-1] = lambda lrn: lib.cbs.CSVLogger(lrn, "history", append=True)
    learn.fit(1, 1e-3)
    appended = open(os.path.join(p, "history.csv")).read()
    learn3 = make_learner(lib, p, metrics=False)
    learn3.fit(1, 1e-3, callbacks=[lib.cbs.CSVLogger(learn3, "sub/h2"), lib.misc.StopAfterNBatches(2)])
    stopped = open(os.path.join(p, "sub/h2.csv")).read()

    def cells(text: str) -> list:  # the time column varies: drop it
        return [line.split(",")[:-1] for line in text.splitlines()]

    return dict(first=cells(first), appended=cells(appended), stopped=cells(stopped))


@scenario
def track_epoch(lib: Lib, p: str) -> dict:
    learn = make_learner(lib, p)
    learn.fit(2, 1e-3, callbacks=[lib.cbs.TrackEpochCallback(learn)])
    files, content = sorted(os.listdir(os.path.join(p, "models"))), open(os.path.join(p, "models", "epoch")).read()
    learn.fit(4, 1e-3, callbacks=[lib.cbs.TrackEpochCallback(learn)])
    return dict(files=files, content=content, rec=recorded(learn))


@scenario
def fit_fc(lib: Lib, p: str) -> dict:
    learn = make_learner(lib, p)
    learn.fit_fc(2, 1e-2)
    learn2 = make_learner(lib, p)
    learn2.fit_fc(1, 1e-2, moms=(0.9, 0.8), start_pct=0.5)
    return dict(rec=recorded(learn), lr=jsonable(learn.opt.lr), mom=jsonable(learn.opt.mom), rec2=recorded(learn2),
                psum=param_sum(learn))


@scenario
def flat_cos_curves(lib: Lib, p: str) -> dict:
    res = {}
    for curve in ("linear", "exponential"):
        learn = make_learner(lib, p)
        learn.fit(1, 1e-2, callbacks=[lib.fca.FlatCosAnnealScheduler(learn, 1e-2, tot_epochs=1, curve=curve)])
        res[curve] = recorded(learn)["lrs"]
    return res


@scenario
def stop_after_n_batches(lib: Lib, p: str) -> dict:
    learn = make_learner(lib, p)
    learn.callbacks.append(lib.misc.StopAfterNBatches(2))
    learn.fit_one_cycle(3)
    return dict(rec=recorded(learn))


@scenario
def tracker_warnings(lib: Lib, p: str) -> dict:
    learn = make_learner(lib, p)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cb = lib.cbs.EarlyStoppingCallback(learn, mode="bogus", monitor="nope")
        save = lib.cbs.SaveModelCallback(learn, every="bogus")
        learn.fit(1, 1e-3, callbacks=[cb])
    messages = [str(w.message).replace(lib.name + ".", "LIB.") for w in caught if "pin_memory" not in str(w.message)]
    return dict(warnings=messages, operator=repr(cb.operator), every=save.every, best=jsonable(cb.best))


@scenario
def tracker_train_loss(lib: Lib, p: str) -> dict:
    learn = make_learner(lib, p)
    cb = lib.cbs.EarlyStoppingCallback(learn, monitor="train_loss", patience=0)
    learn.fit(4, 0.5, callbacks=[cb])
    return dict(rec=recorded(learn), best=jsonable(cb.best), best_type=type(cb.best).__name__, wait=cb.wait)


@scenario
def accumulate(lib: Lib, p: str) -> dict:
    res = {}
    for n_train in (40, 32):  # 5 batches: the last one does not step; 4 batches: it does (v1 crashes, torch 2)
        learn = make_learner(lib, p, n_train=n_train)
        learn.loss_func = nn.CrossEntropyLoss(reduction="sum")
        try:
            learn.fit(2, 1e-2, callbacks=[lib.train.AccumulateScheduler(learn, n_step=2)])
            res[str(n_train)] = dict(psum=param_sum(learn), rec=recorded(learn))
        except Exception as e:
            res[str(n_train)] = dict(exception=f"{type(e).__name__}: {e}")
    return res


@scenario
def general_scheduler(lib: Lib, p: str) -> dict:
    learn = make_learner(lib, p)
    phases = [lib.gs.TrainingPhase(3).schedule_hp("lr", (1e-3, 1e-2), anneal=lib.cb.annealing_cos)
              .schedule_hp("mom", 0.9),
              lib.gs.TrainingPhase(7).schedule_hp("lr", 1e-2, anneal=lib.cb.annealing_linear)
              .schedule_hp("mom", (0.9, 0.8))]
    cb = lib.gs.GeneralScheduler(learn, phases)
    learn.fit(2, 1e-3, callbacks=[cb])
    first = recorded(learn)
    learn.fit(1, 1e-3, callbacks=[cb])  # v1's quirk: only phase 0 restarts
    return dict(rec=first, rec2=recorded(learn))


@scenario
def clip_grad(lib: Lib, p: str) -> dict:
    learn = make_learner(lib, p)
    learn.clip_grad(0.05)
    learn.fit(1, 1e-2)
    return dict(psum=param_sum(learn), n_callback_fns=len(learn.callback_fns))


@scenario
def loss_metrics(lib: Lib, p: str) -> dict:
    learn = make_learner(lib, p, callback_fns=[lib.cbs.LossMetrics])
    learn.loss_func = PartsLoss()
    learn.fit(2, 1e-2)
    return dict(rec=recorded(learn))


# ---------------------------------------------------------------------------------------------------- run
def run(lib_name: str, only: list[str] | None = None) -> dict:
    "Run the scenarios (all, or `only`) in fresh temporary folders; each result gets its console lines."
    lib = Lib(lib_name)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    results = {}
    try:
        for name, f in SCENARIOS.items():
            if only and name not in only:
                continue
            with tempfile.TemporaryDirectory() as d:
                buf = io.StringIO()
                with contextlib.redirect_stdout(buf), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    r = f(lib, d)
                r["stdout"] = console_lines(buf.getvalue())
                results[name] = r
    finally:
        torch.set_num_threads(threads)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lib", choices=["fastai", "fastloop"], required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", default=None, help="comma-separated scenario names")
    args = parser.parse_args(argv)
    results = run(args.lib, args.only.split(",") if args.only else None)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    print(f"{len(results)} scenarios -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
