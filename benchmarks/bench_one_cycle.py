"""The cost of ``learn.fit_one_cycle`` (OneCycleScheduler + Recorder + progress bar) against a raw PyTorch loop.

Workload (a) of ``bench_loop.py`` (MLP 32-64-10, batch 64, 3000 pre-made CPU batches, one epoch, train only).
Each rep runs, in a rotated order, on fresh identically initialised models and the same batches:

* ``raw``: the hand-written AdamW loop of ``bench_loop.py`` (the target's reference: ``fit_one_cycle <= 1.15x``);
* ``raw + OneCycleLR``: the same loop stepping ``torch.optim.lr_scheduler.OneCycleLR`` each batch (what a user
  would write for the same schedule; informative);
* ``fastloop fit``: ``learn.fit(1, lr)`` (the loop without a scheduler);
* ``fastloop fit_one_cycle``: ``learn.fit_one_cycle(1, lr)``.

The table gives median wall-time ratios with quartiles, CPU-time ratios (steadier on a shared machine), and the
ratio of the smallest CPU times (each loop's least disturbed run: the steadiest figure on a busy machine).

    python benchmarks/bench_one_cycle.py            # 7 rotated reps
    python benchmarks/bench_one_cycle.py --quick    # a tenth of the batches, 2 reps: checks that it runs
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_loop import BETAS, LR, WD, WORKLOADS, ListLoader, Workload, make_batches, make_model, quiet  # noqa: E402

from fastloop.basic_data import DataBunch  # noqa: E402
from fastloop.basic_train import Learner  # noqa: E402

Times = tuple[float, float]  # (wall seconds, CPU seconds)


def run_raw(w: Workload, batches: list, one_cycle: bool = False) -> Times:
    "The raw AdamW loop, optionally with torch's OneCycleLR stepped after every batch."
    model = make_model(w.sizes)
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, weight_decay=WD)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=len(batches)) if one_cycle else None
    model.train()
    losses = []
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if sched is not None:
            sched.step()
        losses.append(loss.detach())
    return time.perf_counter() - t0, time.process_time() - c0


def run_fastloop(w: Workload, batches: list, one_cycle: bool) -> tuple[Times, Learner]:
    "One fastloop fit (Recorder and bar on, as by default); learner construction is not timed."
    data = DataBunch(train_dl=ListLoader(batches), valid_dl=None, device="cpu", no_check=True)
    learn = Learner(data, make_model(w.sizes), loss_func=F.cross_entropy, wd=WD)
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    if one_cycle:
        learn.fit_one_cycle(1, LR)
    else:
        learn.fit(1, lr=LR)
    return (time.perf_counter() - t0, time.process_time() - c0), learn


def bench(w: Workload, reps: int) -> dict[str, Any]:
    batches = make_batches(w)
    runs = {
        "raw": lambda: run_raw(w, batches),
        "raw + OneCycleLR": lambda: run_raw(w, batches, one_cycle=True),
        "fastloop fit": lambda: run_fastloop(w, batches, one_cycle=False)[0],
        "fastloop fit_one_cycle": lambda: run_fastloop(w, batches, one_cycle=True)[0],
    }
    names = list(runs)
    with quiet():  # warm-up, and a check that the cycle really ran
        for name in names:
            runs[name]()
        _, learn = run_fastloop(w, batches, one_cycle=True)
    assert len(learn.recorder.lrs) == w.n_batches and max(learn.recorder.lrs) == LR
    times: dict[str, list[Times]] = {n: [] for n in names}
    for i in range(reps):
        order = names[i % len(names):] + names[:i % len(names)]  # rotate who goes first
        with quiet():
            for name in order:
                times[name].append(runs[name]())
    return {"workload": w.name, "times": times, "n_batches": w.n_batches}


def report(res: dict[str, Any]) -> str:
    times = res["times"]
    raw = times["raw"]
    med = statistics.median
    lines = [f"workload {res['workload']}, {len(raw)} rotated reps; ratios are per rep against `raw`, then the median",
             "",
             "| loop | median wall s | wall ratio (quartiles) | CPU ratio | min-CPU ratio | CPU us/batch over raw |",
             "|---|---|---|---|---|---|"]
    n_batches = res["n_batches"]
    for name, ts in times.items():
        ratios = [t[0] / r[0] for t, r in zip(ts, raw)]
        cpu = [t[1] / r[1] for t, r in zip(ts, raw)]
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        over = med((t[1] - r[1]) / n_batches * 1e6 for t, r in zip(ts, raw))
        min_cpu = min(t[1] for t in ts) / min(r[1] for r in raw)  # the least disturbed run of each: steadiest
        lines.append(f"| {name} | {med(t[0] for t in ts):.3f} | {med(ratios):.3f} ({q[0]:.2f}-{q[2]:.2f}) | "
                     f"{med(cpu):.3f} | {min_cpu:.3f} | {over:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=None, help="rotated reps (default 7; 2 with --quick)")
    p.add_argument("--quick", action="store_true", help="a tenth of the batches and 2 reps: a smoke run")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    args = p.parse_args(argv)
    reps = args.reps or (2 if args.quick else 7)
    torch.set_num_threads(args.threads)
    w = next(w for w in WORKLOADS if w.name.startswith("a"))
    if args.quick:
        w = Workload(w.name + " (quick)", w.sizes, w.bs, w.n_batches // 10)
    res = bench(w, reps)
    print(f"torch {torch.__version__}, torch.set_num_threads({args.threads})")
    print(report(res))


if __name__ == "__main__":
    main()
