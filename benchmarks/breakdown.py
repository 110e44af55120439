"""Where fastloop's time goes on workload (a): loops that add one layer of fastloop at a time, each timed
against the plain raw loop in fine-grained alternation (many short runs, so machine drift cancels).

    python benchmarks/breakdown.py            # 60 runs of 300 batches per row, about 4 minutes
    python benchmarks/breakdown.py --runs 20  # quicker, noisier
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_loop as bl  # noqa: E402

from fastloop.basic_data import DeviceDataLoader  # noqa: E402
from fastloop.basic_train import loss_batch  # noqa: E402
from fastloop.callback import CallbackHandler, OptimWrapper  # noqa: E402
from fastloop.torch_core import AdamW  # noqa: E402

A = bl.WORKLOADS[0]


def wrapper_loop(w: bl.Workload, batches: list, handler: bool = False, device_loader: bool = False) -> float:
    "The raw loop with fastloop's OptimWrapper; optionally driven through the handler's events and a loader."
    model = bl.make_model(w.sizes)
    opt = OptimWrapper.create(AdamW, bl.LR, [torch.nn.Sequential(*model)], wd=bl.WD, true_wd=True)
    h = CallbackHandler([])
    h.on_train_begin(1, None, [])
    h.on_epoch_begin()
    data = DeviceDataLoader(bl.ListLoader(batches), "cpu") if device_loader else batches
    losses = []
    t0 = time.perf_counter()
    for x, y in data:
        if handler:
            x, y = h.on_batch_begin(x, y)
            h.on_batch_end(loss_batch(model, x, y, F.cross_entropy, opt, h))
        else:
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.detach())
    return time.perf_counter() - t0


def fit(w: bl.Workload, batches: list, variant: bl.Variant) -> float:
    with bl.quiet():
        return bl.run_fastloop(w, batches, variant)[0][0]


def ratio(raw: Callable[[], float], other: Callable[[], float], runs: int) -> tuple[float, float, float]:
    "Median and quartiles of other/raw over `runs` alternated runs."
    r = []
    for i in range(runs):
        if i % 2:
            b, a = other(), raw()
        else:
            a, b = raw(), other()
        r.append(b / a)
    q = statistics.quantiles(r, n=4)
    return statistics.median(r), q[0], q[2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=60)
    p.add_argument("--batches", type=int, default=300)
    args = p.parse_args()
    torch.set_num_threads(1)
    w = bl.Workload(A.name, A.sizes, A.bs, args.batches)
    batches = bl.make_batches(w)
    rows = [
        ("raw AdamW, v1's two param groups", lambda: bl.run_raw(w, batches, grouped=True)[0][0]),
        ("+ OptimWrapper (true wd by hand)", lambda: wrapper_loop(w, batches)),
        ("+ handler events, loss_batch, smoothing", lambda: wrapper_loop(w, batches, handler=True)),
        ("+ DeviceDataLoader", lambda: wrapper_loop(w, batches, handler=True, device_loader=True)),
        ("Learner.fit, bar off, silent", lambda: fit(w, batches, bl.VARIANTS[1])),
        ("Learner.fit, Recorder + bar", lambda: fit(w, batches, bl.VARIANTS[0])),
    ]
    raw = lambda: bl.run_raw(w, batches)[0][0]  # noqa: E731
    print(f"{A.name}, {args.batches} batches per run, {args.runs} alternated runs per row; ratio to a one-group "
          "raw AdamW loop")
    for name, f in rows:
        med, q1, q3 = ratio(raw, f, args.runs)
        print(f"  {name:42s} {med:.3f}  (quartiles {q1:.3f}-{q3:.3f})", flush=True)


if __name__ == "__main__":
    main()
