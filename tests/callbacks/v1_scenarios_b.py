"""Scenarios for MixedPrecision, MixUp, hooks/summary and RNNTrainer, runnable on fastai 1.0.61 or on fastloop.

Only the imports differ between the two libraries.  ``v1_reference_b.json`` holds what fastai 1.0.61 (with
torch 2.13 on the CPU, one thread) produced; regenerate it with the live oracle (spec §22)::

    /tmp/oracle/bin/python tests/callbacks/v1_scenarios_b.py --lib fastai --out tests/callbacks/v1_reference_b.json

and compare fastloop with it: ``tests/callbacks/test_v1_reference_b.py``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import warnings
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset


def _libs(lib: str) -> dict[str, Any]:
    base = "fastai" if lib == "fastai" else "fastloop"
    mods = {name: importlib.import_module(f"{base}.{name}") for name in
            ("basic_data", "basic_train", "callback", "metrics", "callbacks.fp16", "callbacks.mixup",
             "callbacks.hooks", "callbacks.rnn")}
    train = importlib.import_module(f"{base}.train") if lib == "fastai" else None
    ns = {
        "DataBunch": mods["basic_data"].DataBunch, "Learner": mods["basic_train"].Learner,
        "Callback": mods["callback"].Callback, "MixUpLoss": mods["callbacks.mixup"].MixUpLoss,
        "RNNTrainer": mods["callbacks.rnn"].RNNTrainer, "hooks": mods["callbacks.hooks"],
        "to_fp16": (train or mods["callbacks.fp16"]).to_fp16, "to_fp32": (train or mods["callbacks.fp16"]).to_fp32,
        "mixup": (train or mods["callbacks.mixup"]).mixup,
    }
    if lib == "fastai":  # fastai's DataBunch.is_empty needs ItemLists; plain TensorDatasets are never empty here
        ns["DataBunch"].is_empty = property(lambda self: False)
    return ns


def _data(ns: dict, y2d: bool = False) -> Any:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 4, generator=g)
    y = torch.stack([x.sum(1), x[:, 0]], 1) if y2d else (x.sum(1) > 0).long()
    return ns["DataBunch"].create(TensorDataset(x[:64], y[:64]), TensorDataset(x[64:], y[64:]), bs=16, num_workers=0,
                                  device="cpu")


def _weights(model: nn.Module) -> list:
    return [p.detach().double().flatten().tolist() for p in model.parameters()]


def _recorded(learn: Any) -> dict:
    return {"losses": [float(v) for v in learn.recorder.losses], "val": [float(v) for v in learn.recorder.val_losses]}


# ------------------------------------------------------------------------------------------------ fp16
def scenario_fp16(ns: dict) -> dict:
    class Seen(ns["Callback"]):
        _order = 1000

        def __init__(self):
            self.seen = []

        def on_batch_end(self, last_loss, train, **kwargs):
            self.seen.append([bool(train), float(last_loss)])

    out = {}
    cases = {"default": {}, "flat": {"flat_master": True}, "clip": {"clip": 0.05},
             "static": {"dynamic": False, "loss_scale": 8.0}, "overflow": {"loss_scale": 2.0**40, "max_noskip": 3}}
    for name, kw in cases.items():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
        learn = ns["Learner"](_data(ns), model, loss_func=nn.CrossEntropyLoss(), silent=True)
        ns["to_fp16"](learn, **kw)
        seen = Seen()
        learn.fit(2, 1e-2, callbacks=[seen])
        state = {k: v for k, v in learn.mp_cb.get_state().items() if k != "opt"}
        out[name] = {**_recorded(learn), "batch_end_loss": seen.seen, "weights": _weights(learn.model),
                     "dtypes": [str(p.dtype) for p in learn.model.parameters()], "state": state}
    return out


# ------------------------------------------------------------------------------------------------ mixup
class _StackModel(nn.Module):
    "A model for ``stack_x=True``: it receives ``[x, x_shuffled, lambda]``."

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x, x1=None, lam=None):
        if x1 is not None:
            x = x * lam[:, None] + x1 * (1 - lam[:, None])
        return self.lin(x)


def scenario_mixup(ns: dict) -> dict:
    class Seen(ns["Callback"]):
        _order = 5

        def __init__(self):
            self.seen = []

        def on_batch_begin(self, last_input, last_target, train, **kwargs):
            if train:
                x = torch.stack(last_input[:2]) if isinstance(last_input, list) else last_input
                self.seen.append([x.double().sum().item(), last_target.double().sum().item(), str(last_target.dtype),
                                  list(last_target.shape)])

    mlp = lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    cases = {"default": (nn.CrossEntropyLoss(), False, mlp, {}),
             "func_loss": (F.cross_entropy, False, mlp, {"alpha": 1.0}),
             "no_stack_y": (nn.MSELoss(), True, mlp, {"stack_y": False}),
             "stack_x": (nn.CrossEntropyLoss(), False, _StackModel, {"stack_x": True})}
    out = {}
    for name, (loss, y2d, make_model, kw) in cases.items():
        torch.manual_seed(0)
        learn = ns["Learner"](_data(ns, y2d=y2d), make_model(), loss_func=loss, silent=True)
        ns["mixup"](learn, **kw)
        np.random.seed(1)
        torch.manual_seed(1)
        seen = Seen()
        learn.fit(2, 1e-2, callbacks=[seen])
        out[name] = {**_recorded(learn), "batches": seen.seen, "weights": _weights(learn.model),
                     "loss_restored": learn.loss_func is loss, "reduction": getattr(learn.loss_func, "reduction", None)}
    o = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([[0, 1, 0.7], [2, 2, 0.9], [1, 0, 0.5], [0, 0, 1.0], [2, 1, 0.6]])
    crit = ns["MixUpLoss"](nn.CrossEntropyLoss(reduction="sum"))
    out["loss_values"] = {"stacked": crit(o, t).item(), "plain": crit(o, torch.tensor([0, 1, 2, 1, 0])).item(),
                          "inner_reduction": crit.crit.reduction, "restored_reduction": crit.get_old().reduction,
                          "func_sum": ns["MixUpLoss"](F.cross_entropy, reduction="sum")(o, t).item(),
                          "func_none": ns["MixUpLoss"](F.cross_entropy, reduction="none")(o, t).tolist()}
    return out


# ------------------------------------------------------------------------------------------------ hooks
def scenario_hooks(ns: dict) -> dict:
    h = ns["hooks"]
    out = {}
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 2))
    learn = ns["Learner"](_data(ns), model, loss_func=nn.CrossEntropyLoss(), silent=True)
    learn.layer_groups[0][0].weight.requires_grad_(False)
    out["summary_frozen"] = str(learn.summary())
    out["training_after_summary"] = model.training

    class Foo(ns["Callback"]):
        pass

    torch.manual_seed(0)
    sgd = partial(torch.optim.SGD, momentum=0.9, weight_decay=0.1, lr=0.1)
    learn = ns["Learner"](_data(ns), nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), opt_func=sgd,
                          true_wd=False, loss_func=nn.CrossEntropyLoss(), silent=True)
    learn.callbacks += [Foo(), Foo()]
    out["summary_sgd"] = str(learn.summary())

    torch.manual_seed(0)
    learn = ns["Learner"](_data(ns), nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)),
                          loss_func=nn.CrossEntropyLoss(), silent=True)
    learn.callback_fns.append(h.ActivationStats)
    torch.manual_seed(1)
    learn.fit(2, 1e-2)
    stats = learn.activation_stats.stats
    out["activation_stats"] = {"shape": list(stats.shape), "values": stats.double().tolist(),
                               "n_modules": len(learn.activation_stats.modules),
                               "hooks_left": sum(len(m._forward_hooks) for m in learn.model.modules())}

    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 6, 3, stride=2),
                         nn.AdaptiveAvgPool2d(1))
    torch.manual_seed(0)
    out["model_sizes"] = [list(s) for s in h.model_sizes(conv, size=(16, 16))]
    out["num_features"] = h.num_features_model(conv)
    torch.manual_seed(0)
    batch = h.dummy_batch(conv, (5, 5))
    out["dummy_batch"] = [list(batch.shape), batch.sum().item()]
    torch.manual_seed(3)
    x = torch.randn(2, 3, 8, 8)
    with h.hook_output(conv[0], grad=True) as hook:
        conv(x).pow(2).sum().backward()
        out["output_grad"] = [type(hook.stored).__name__, [list(o.shape) for o in hook.stored],
                              hook.stored[0].double().sum().item(), hook.stored[0].abs().double().sum().item()]
    with h.hook_outputs([conv[0], conv[2]], grad=True) as hooks:
        conv(x).pow(2).sum().backward()
        out["output_grads"] = [o[0].abs().double().sum().item() for o in hooks.stored]
    with h.Hook(conv[2], lambda m, i, o: (len(list(i)), [list(t.shape) for t in o]), is_forward=False) as hook:
        conv(x).pow(2).sum().backward()
        out["backward_hook"] = hook.stored
    return out


# ------------------------------------------------------------------------------------------------ rnn
class TinyRNN(nn.Module):
    "An LSTM language-model-like net returning fastai v1's ``(output, raw_outputs, outputs)`` triple."

    def __init__(self):
        super().__init__()
        self.emb, self.rnn = nn.Embedding(10, 6), nn.LSTM(6, 5, batch_first=True)
        self.drop, self.dec = nn.Dropout(0.2), nn.Linear(5, 10)
        self.resets, self.hidden = 0, None

    def reset(self):
        self.resets += 1
        self.hidden = None

    def forward(self, x):
        raw, hidden = self.rnn(self.emb(x), self.hidden)
        self.hidden = tuple(t.detach() for t in hidden)
        out = self.drop(raw)
        return self.dec(out).view(-1, 10), [raw], [out]


def flat_ce(out, y):
    return F.cross_entropy(out, y.view(-1))


def flat_accuracy(out, y):
    return (out.argmax(-1) == y.view(-1)).float().mean()


def scenario_rnn(ns: dict) -> dict:
    class Seen(ns["Callback"]):
        _order = 5

        def __init__(self):
            self.seen = []

        def on_loss_begin(self, last_output, **kwargs):
            self.seen.append(["loss_begin", list(last_output.shape)])

        def on_backward_begin(self, last_loss, **kwargs):
            self.seen.append(["backward_begin", last_loss.item()])

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 10, (48, 7), generator=g)
    y = (x + 1) % 10
    data = ns["DataBunch"].create(TensorDataset(x[:32], y[:32]), TensorDataset(x[32:], y[32:]), bs=8, num_workers=0,
                                  device="cpu")
    out = {}
    for name, alpha, beta in [("ar_tar", 2.0, 1.0), ("none", 0.0, 0.0)]:
        torch.manual_seed(0)
        model = TinyRNN()
        learn = ns["Learner"](data, model, loss_func=flat_ce, metrics=[flat_accuracy], silent=True)
        learn.callbacks.append(ns["RNNTrainer"](learn, alpha=alpha, beta=beta))
        torch.manual_seed(1)
        seen = Seen()
        learn.fit(2, 1e-2, callbacks=[seen])
        out[name] = {**_recorded(learn), "metrics": [[float(t) for t in m] for m in learn.recorder.metrics],
                     "resets": model.resets, "seen": seen.seen, "weights": _weights(model),
                     "state_keys": sorted(learn.rnn_trainer.get_state().keys())}
    return out


def assert_close(got: Any, ref: Any, rel: float = 1e-6, abs_: float = 1e-7, where: str = "") -> None:
    "Compare nested JSON-like results: numbers within `rel`/`abs_`, everything else exactly; `where` names the spot."
    if isinstance(ref, bool) or ref is None or isinstance(ref, str):
        assert got == ref, f"{where}: {got!r} != {ref!r}"
    elif isinstance(ref, (int, float)):
        assert isinstance(got, (int, float)) and not isinstance(got, bool), f"{where}: {got!r} is not a number"
        assert abs(got - ref) <= max(abs_, rel * abs(ref)) or got == ref, f"{where}: {got!r} != {ref!r}"
    elif isinstance(ref, dict):
        assert isinstance(got, dict) and set(got) == set(ref), f"{where}: keys {sorted(got)} != {sorted(ref)}"
        for k in ref:
            assert_close(got[k], ref[k], rel, abs_, f"{where}.{k}")
    else:
        assert isinstance(got, (list, tuple)) and len(got) == len(ref), f"{where}: {got!r} != {ref!r}"
        for i, (g, r) in enumerate(zip(got, ref)):
            assert_close(g, r, rel, abs_, f"{where}[{i}]")


SCENARIOS = {"fp16": scenario_fp16, "mixup": scenario_mixup, "hooks": scenario_hooks, "rnn": scenario_rnn}


def run(lib: str, only: list[str] | None = None) -> dict:
    "Run the scenarios (all, or `only`) on `lib` ('fastai' or 'fastloop'), with one thread and no bars."
    import fastprogress.fastprogress as fpp

    fpp.NO_BAR = True
    torch.set_num_threads(1)
    ns = _libs(lib)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {name: fn(ns) for name, fn in SCENARIOS.items() if not only or name in only}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lib", choices=["fastai", "fastloop"], required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with open(args.out, "w") as f:
        json.dump(run(args.lib), f, indent=1)


if __name__ == "__main__":
    main()
