# ruff: noqa: N806  (local names bound to classes, e.g. `Tracer = lib["_classes"][0]`, keep their class names)
"""Run the same callback scenarios on fastai 1.0.61 (the oracle) or on fastloop and dump what callbacks see.

    /tmp/oracle/bin/python benchmarks/oracle/compare_traces.py --lib fastai   --out /tmp/trace_fastai.json
    PYTHONPATH=. python3   benchmarks/oracle/compare_traces.py --lib fastloop --out /tmp/trace_fastloop.json
    python3 benchmarks/oracle/diff.py /tmp/trace_fastai.json /tmp/trace_fastloop.json

The code below is identical for both libraries: only the package the modules are imported from changes.
See README.md beside this file for how to build the oracle virtualenv.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import sys
import tempfile
import traceback
import warnings

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

EVENTS = ("train_begin", "epoch_begin", "batch_begin", "loss_begin", "backward_begin",
          "backward_end", "step_end", "batch_end", "epoch_end", "train_end")
FLAGS = ("stop_epoch", "stop_training", "skip_validate", "skip_step", "skip_zero", "skip_bwd")


# ------------------------------------------------------------------------------------------------ helpers
def tname(x):
    "A short, library-independent description of a value's type."
    if x is None:
        return "None"
    if isinstance(x, torch.Tensor):
        return f"Tensor[{str(x.dtype).replace('torch.', '')},{tuple(x.shape)},grad={x.requires_grad},{x.device.type}]"
    if isinstance(x, (tuple, list)):
        return f"{type(x).__name__}(" + ", ".join(tname(v) for v in x) + ")"
    t = type(x)
    mod = t.__module__
    return t.__qualname__ if mod == "builtins" else f"{mod}.{t.__qualname__}"


def jsonable(x):
    "Plain JSON values: tensors and numpy scalars become floats/ints/lists."
    if x is None or isinstance(x, (bool, int, str)):
        return x
    if isinstance(x, float):
        return x
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return x.item() if x.dim() == 0 else [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [jsonable(v) for v in x.tolist()]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return repr(x)


def clean_lines(text):
    "Keep what a terminal would show: for each line, the text after its last carriage return."
    out = []
    for line in text.split("\n"):
        line = line.split("\r")[-1].rstrip()
        if line:
            out.append(line)
    return out


# ------------------------------------------------------------------------------------------------ library
def load_lib(name):
    m = {k: importlib.import_module(f"{name}.{k}") for k in ("basic_train", "basic_data", "callback", "metrics")}
    return dict(Learner=m["basic_train"].Learner, LearnerCallback=m["basic_train"].LearnerCallback,
                DataBunch=m["basic_data"].DataBunch, DatasetType=m["basic_data"].DatasetType,
                Callback=m["callback"].Callback, accuracy=m["metrics"].accuracy)


def make_classes(lib):
    Callback, LearnerCallback = lib["Callback"], lib["LearnerCallback"]

    class Tracer(Callback):
        "Records every event; `hook(event, kwargs, self)` may return a value for the handler."

        def __init__(self, hook=None, order=0):
            self.hook, self.log, self.n_valid = hook, [], 0
            self._order = order

        def _handle(self, ev, kw):
            if ev == "batch_begin" and kw.get("train") is False:
                self.n_valid += 1
            rec = dict(ev=ev, keys=sorted(kw), epoch=kw.get("epoch"), iteration=kw.get("iteration"),
                       num_batch=kw.get("num_batch"), train=kw.get("train"))
            for k in ("last_loss", "smooth_loss"):
                rec[k] = tname(kw[k]) if k in kw else "<absent>"
            rec["last_metrics"] = [tname(v) for v in kw["last_metrics"]] if "last_metrics" in kw else "<absent>"
            if "exception" in kw:
                rec["exception"] = tname(kw["exception"])
            if "metrics_names" in kw:
                rec["metrics_names"] = list(kw["metrics_names"])
            if ev == "train_begin":
                rec["n_epochs"], rec["pbar"] = kw.get("n_epochs"), tname(kw.get("pbar"))
            rec["flags"] = {k: kw[k] for k in FLAGS if k in kw}
            self.log.append(rec)
            return self.hook(ev, kw, self) if self.hook else None

        def jump_to_epoch(self, epoch):
            self.log.append(dict(ev="jump_to_epoch", epoch=epoch))

    def _mk(ev):
        def meth(self, **kwargs):
            return self._handle(ev, kwargs)
        meth.__name__ = meth.__qualname__ = f"on_{ev}"
        return meth

    for ev in EVENTS:
        setattr(Tracer, f"on_{ev}", _mk(ev))

    class AddCols(LearnerCallback):
        "fastai's own test pattern: a metric-adding callback that runs before the Recorder."
        _order = -20

        def on_train_begin(self, **kwargs):
            self.learn.recorder.add_metric_names(["col_a", "col_b"])

        def on_epoch_end(self, last_metrics, epoch, **kwargs):
            return {"last_metrics": last_metrics + [torch.tensor(0.25) * (epoch + 1), 7]}

    class Dummy(Callback):
        "A metric Callback with a `name`, appending 9876**k."
        name = "dummy"

        def __init__(self):
            self.k = 0

        def on_epoch_begin(self, **kwargs):
            self.k += 1

        def on_epoch_end(self, last_metrics, **kwargs):
            return {"last_metrics": last_metrics + [torch.tensor(9876.0 ** self.k)]}

    class BoomError(ValueError):
        pass

    class MissingArg(Callback):
        "Declares a state key that does not exist yet at train_begin."

        def on_train_begin(self, last_output, **kwargs):
            pass

    return Tracer, AddCols, Dummy, BoomError, MissingArg


# ------------------------------------------------------------------------------------------------ fixtures
def make_data(lib, n_train=40, n_valid=20, bs=8):
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(n_train + n_valid, 4, generator=g)
    y = ((x[:, 0] + 0.5 * x[:, 1] - 0.3 * x[:, 2]) > 0).long()
    train_ds, valid_ds = TensorDataset(x[:n_train], y[:n_train]), TensorDataset(x[n_train:], y[n_train:])
    return lib["DataBunch"].create(train_ds, valid_ds, bs=bs, num_workers=0)


def make_learner(lib, metrics="default", **kw):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    if metrics == "default":
        metrics = [lib["accuracy"]]
    return lib["Learner"](make_data(lib), model, loss_func=nn.CrossEntropyLoss(), metrics=metrics, **kw)


def params_of(learn):
    flat = torch.cat([p.detach().reshape(-1) for p in learn.model.parameters()])
    grads = [None if p.grad is None else ("zero" if not p.grad.any() else "nonzero") for p in learn.model.parameters()]
    return dict(sum=float(flat.double().sum()), first=[float(v) for v in flat[:6]], all=[float(v) for v in flat],
                grads=grads)


def recorder_of(learn):
    r = learn.recorder
    out = {}
    for k in ("lrs", "moms", "losses", "val_losses", "metrics", "nb_batches", "names"):
        if hasattr(r, k):
            v = getattr(r, k)
            out[k] = jsonable(v)
            if k in ("lrs", "moms", "losses", "val_losses") and len(v):
                out[k + "_type"] = tname(v[0])
            if k == "metrics" and len(v):
                out["metrics_type"] = tname(v[0])
        else:
            out[k] = "<absent>"
    return out


def run_fit(lib, n_epochs=2, lr=1e-2, hook=None, learn_kw=None, fit_kw=None, tracer_in="call", metrics="default"):
    "Fit with a Tracer; return (learn, tracer)."
    Tracer = lib["_classes"][0]
    learn = make_learner(lib, metrics=metrics, **(learn_kw or {}))
    tr = Tracer(hook)
    if tracer_in == "learn":
        learn.callbacks.append(tr)
    torch.manual_seed(1)
    learn.fit(n_epochs, lr, callbacks=[tr] if tracer_in == "call" else None, **(fit_kw or {}))
    return learn, tr


# ------------------------------------------------------------------------------------------------ scenarios
def at(ev_want, cond, ret):
    "A hook returning `ret` at event `ev_want` when `cond(kwargs, tracer)` holds."
    def hook(ev, kw, tr):
        if ev == ev_want and cond(kw, tr):
            return ret() if callable(ret) else ret
        return None
    return hook


def fit_result(learn, tr):
    return dict(trace=tr.log, recorder=recorder_of(learn), params=params_of(learn))


def sc_plain_fit(lib):
    return fit_result(*run_fit(lib))


def sc_skip_validate(lib):
    return fit_result(*run_fit(lib, hook=at("train_begin", lambda kw, t: True, {"skip_validate": True})))


def sc_stop_epoch_train(lib):
    h = at("batch_end", lambda kw, t: kw["train"] and kw["epoch"] == 0 and kw["num_batch"] == 1, {"stop_epoch": True})
    return fit_result(*run_fit(lib, hook=h))


def sc_stop_epoch_valid(lib):
    h = at("batch_end", lambda kw, t: not kw["train"] and kw["epoch"] == 0 and t.n_valid == 1, {"stop_epoch": True})
    return fit_result(*run_fit(lib, hook=h))


def sc_stop_training_batch_end(lib):
    h = at("batch_end", lambda kw, t: kw["train"] and kw["epoch"] == 0 and kw["num_batch"] == 2,
           {"stop_training": True})
    return fit_result(*run_fit(lib, n_epochs=3, hook=h))


def sc_resume(lib):
    return fit_result(*run_fit(lib, n_epochs=3, hook=at("train_begin", lambda kw, t: True, {"epoch": 1})))


def sc_skip_step(lib):
    return fit_result(*run_fit(lib, hook=at("batch_begin", lambda kw, t: kw["train"] and kw["iteration"] % 2 == 0,
                                          {"skip_step": True})))


def sc_skip_zero(lib):
    return fit_result(*run_fit(lib, hook=at("batch_begin", lambda kw, t: kw["train"] and kw["iteration"] % 2 == 0,
                                          {"skip_zero": True})))


def sc_skip_bwd(lib):
    return fit_result(*run_fit(lib, hook=at("batch_begin", lambda kw, t: kw["train"] and kw["iteration"] % 2 == 1,
                                          {"skip_bwd": True})))


def sc_skip_bwd_first(lib):
    "skip_bwd on iteration 0 only: grads are None in both libraries then (never computed)."
    return fit_result(*run_fit(lib, hook=at("batch_begin", lambda kw, t: kw["train"] and kw["iteration"] == 0,
                                          {"skip_bwd": True})))


def sc_unknown_key(lib):
    return dict(hook=at("batch_end", lambda kw, t: kw["train"] and kw["iteration"] == 1, {"foo": 1}))


def sc_stop_training_from_train_begin(lib):
    return dict(hook=at("train_begin", lambda kw, t: True, {"stop_training": True}))


def sc_return_true(lib):
    return dict(hook=at("batch_begin", lambda kw, t: kw["train"] and kw["iteration"] == 1, True))


def sc_exception_in_batch_end(lib):
    BoomError = lib["_classes"][3]

    def hook(ev, kw, tr):
        if ev == "batch_end" and kw["train"] and kw["iteration"] == 2:
            raise BoomError("boom at iteration 2")
    return dict(hook=hook)


def sc_list_in_callbacks(lib):
    Tracer = lib["_classes"][0]
    learn = make_learner(lib)
    tr = Tracer()
    learn.callbacks.append([tr])
    torch.manual_seed(1)
    return dict(learn=learn, tracer=tr, call=lambda: learn.fit(1, 1e-2))


def sc_missing_arg(lib):
    MissingArg, Tracer = lib["_classes"][4], lib["_classes"][0]
    learn = make_learner(lib)
    tr = Tracer()
    return dict(learn=learn, tracer=tr, call=lambda: learn.fit(1, 1e-2, callbacks=[tr, MissingArg()]))


def sc_replace_loss(lib):
    "backward_begin returns last_loss * 2: drives backward and is what batch_end sees; smooth_loss stays raw."
    def hook(ev, kw, tr):
        if ev == "backward_begin":
            return {"last_loss": kw["last_loss"] * 2}
        if ev == "batch_end" and kw["train"]:
            tr.log[-1]["last_loss_value"] = float(kw["last_loss"])
            tr.log[-1]["smooth_loss_value"] = float(kw["smooth_loss"])
    return fit_result(*run_fit(lib, hook=hook))


def sc_pred_batch(lib):
    Tracer = lib["_classes"][0]
    learn = make_learner(lib)
    tr = Tracer()
    learn.callbacks.append(tr)
    res = learn.pred_batch()
    return dict(trace=tr.log, result_type=tname(res), result_sum=float(res.double().sum()))


def sc_validate(lib):
    Tracer = lib["_classes"][0]
    learn = make_learner(lib)
    tr = Tracer()
    learn.callbacks.append(tr)
    res = learn.validate()
    return dict(trace=tr.log, result=jsonable(res), result_types=[tname(v) for v in res],
                recorder_attr=hasattr(learn, "recorder"))


def sc_get_preds(lib):
    Tracer = lib["_classes"][0]
    learn = make_learner(lib)
    torch.manual_seed(1)
    learn.fit(1, 1e-2)
    rec_before = learn.recorder
    tr = Tracer()
    learn.callbacks.append(tr)
    preds = learn.get_preds()
    out = dict(trace=tr.log, recorder_replaced=learn.recorder is not rec_before,
               new_recorder_has=dict((k, hasattr(learn.recorder, k)) for k in ("names", "losses", "lrs", "opt")),
               preds_types=[tname(p) for p in preds], preds_sums=[float(p.double().sum()) for p in preds])
    tr.log = []
    preds = learn.get_preds(with_loss=True)
    out.update(with_loss_types=[tname(p) for p in preds], with_loss_sums=[float(p.double().sum()) for p in preds],
               with_loss_trace_len=len(tr.log))
    return out


def sc_add_metric_cols_fns(lib):
    AddCols = lib["_classes"][1]
    return fit_result(*run_fit(lib, learn_kw=dict(callback_fns=AddCols)))


def sc_add_metric_cols_call(lib):
    AddCols, Tracer = lib["_classes"][1], lib["_classes"][0]
    learn = make_learner(lib)
    tr = Tracer()
    torch.manual_seed(1)
    learn.fit(2, 1e-2, callbacks=[tr, AddCols(learn)])
    return fit_result(learn, tr)


def sc_named_metric_callback(lib):
    Dummy = lib["_classes"][2]
    return fit_result(*run_fit(lib, metrics=[lib["accuracy"], Dummy()]))


def sc_metric_tracer(lib):
    "A Tracer used as a metric: which events reach metrics."
    Tracer = lib["_classes"][0]
    mt = Tracer()
    mt.name = "mtrace"
    learn, tr = run_fit(lib, metrics=[lib["accuracy"], mt])
    return dict(metric_trace=[(r["ev"], r.get("train"), r.get("epoch")) for r in mt.log], **fit_result(learn, tr))


def opt_view(opt):
    pg = opt.opt.param_groups
    return dict(lr=jsonable(opt.lr), lr_type=tname(opt.lr), mom=jsonable(opt.mom), beta=jsonable(opt.beta),
                wd=jsonable(opt.wd), n_param_groups=len(pg), pg_lr=[jsonable(g["lr"]) for g in pg],
                pg_betas=[jsonable(g.get("betas")) for g in pg], pg_wd=[jsonable(g.get("weight_decay")) for g in pg],
                pg_n_params=[len(g["params"]) for g in pg], missing_attr=repr(opt.some_unknown_attribute))


def sc_optim_wrapper(lib):
    learn = make_learner(lib)
    learn.split(lambda m: [m[2]])
    torch.manual_seed(1)
    learn.fit(1, slice(1e-3))
    out = dict(n_layer_groups=len(learn.layer_groups), after_fit=opt_view(learn.opt),
               recorder_lrs=jsonable(learn.recorder.lrs), recorder_lrs_type=tname(learn.recorder.lrs[0]),
               params=params_of(learn))
    learn.opt.mom = 0.95
    learn.fit(1, 1e-3)
    out["after_mom_095_and_fit"] = opt_view(learn.opt)
    out["recorder_moms_2nd"] = jsonable(learn.recorder.moms)
    learn.opt.lr = [1e-4, 1e-3]
    learn.opt.lr *= 2
    out["after_lr_times_2"] = opt_view(learn.opt)
    return out


def sc_numbers(lib):
    learn = make_learner(lib)
    torch.manual_seed(1)
    learn.fit(2, 1e-2)
    return dict(params=params_of(learn), recorder=recorder_of(learn))


def sc_numbers_no_wd(lib):
    learn = make_learner(lib)
    torch.manual_seed(1)
    learn.fit(2, 1e-2, wd=0.0)
    return dict(params=params_of(learn), recorder=recorder_of(learn))


SCENARIOS = [
    ("plain_fit", sc_plain_fit), ("skip_validate", sc_skip_validate), ("stop_epoch_train", sc_stop_epoch_train),
    ("stop_epoch_valid", sc_stop_epoch_valid), ("stop_training_batch_end", sc_stop_training_batch_end),
    ("resume", sc_resume), ("skip_step", sc_skip_step), ("skip_zero", sc_skip_zero), ("skip_bwd", sc_skip_bwd),
    ("skip_bwd_first", sc_skip_bwd_first),
    ("unknown_key", sc_unknown_key), ("stop_training_from_train_begin", sc_stop_training_from_train_begin),
    ("return_true", sc_return_true), ("exception_in_batch_end", sc_exception_in_batch_end),
    ("list_in_callbacks", sc_list_in_callbacks), ("missing_arg", sc_missing_arg), ("replace_loss", sc_replace_loss),
    ("pred_batch", sc_pred_batch), ("validate", sc_validate), ("get_preds", sc_get_preds),
    ("add_metric_cols_fns", sc_add_metric_cols_fns), ("add_metric_cols_call", sc_add_metric_cols_call),
    ("named_metric_callback", sc_named_metric_callback), ("metric_tracer", sc_metric_tracer),
    ("optim_wrapper", sc_optim_wrapper), ("numbers", sc_numbers), ("numbers_no_wd", sc_numbers_no_wd),
]


def run_scenario(lib, fn):
    "Run one scenario, capturing stdout and any exception."
    buf = io.StringIO()
    out = {}
    learn = tr = None
    try:
        with contextlib.redirect_stdout(buf):
            res = fn(lib)
            if "hook" in res:  # error scenario: fit with the hook, expect an exception
                Tracer = lib["_classes"][0]
                learn = make_learner(lib)
                tr = Tracer(res.pop("hook"))
                torch.manual_seed(1)
                res["call"] = lambda: learn.fit(2, 1e-2, callbacks=[tr])
            if "call" in res:
                learn, tr = res.pop("learn", learn), res.pop("tracer", tr)
                call = res.pop("call")
                try:
                    call()
                    res["error"] = None
                except Exception as e:  # noqa: BLE001
                    res["error"] = dict(type=type(e).__name__, msg=str(e), notes=list(getattr(e, "__notes__", [])))
                res["trace"] = tr.log
                res["recorder"] = recorder_of(learn) if hasattr(learn, "recorder") else "<absent>"
        out.update(res)
    except Exception as e:  # noqa: BLE001
        out["CRASH"] = "".join(traceback.format_exception_only(type(e), e)).strip()
        out["CRASH_tb"] = traceback.format_exc().splitlines()[-8:]
    out["stdout"] = clean_lines(buf.getvalue())
    return jsonable(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", choices=["fastai", "fastloop"], required=True)
    ap.add_argument("--out", default=None)
    ap.add_argument("--only", default=None, help="comma-separated scenario names")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    lib = load_lib(args.lib)
    lib["_classes"] = make_classes(lib)
    os.chdir(tempfile.mkdtemp(prefix=f"oracle_{args.lib}_"))
    only = set(args.only.split(",")) if args.only else None
    result = {"_meta": dict(lib=args.lib, torch=torch.__version__, numpy=np.__version__,
                            fastprogress=importlib.import_module("fastprogress").__version__)}
    for name, fn in SCENARIOS:
        if only and name not in only:
            continue
        result[name] = run_scenario(lib, fn)
    out = args.out or f"/tmp/trace_{args.lib}.json"
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
