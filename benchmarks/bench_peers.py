"""fastloop side by side with fastai 1.0.61 and pytorch-ignite, each as a ratio to the same raw loop.

    bash benchmarks/setup_peers.sh                              # once: /tmp/peers with fastai 1.0.61 + ignite
    /tmp/peers/bin/python benchmarks/bench_peers.py             # all workloads and variants, 5 rotated reps
    /tmp/peers/bin/python benchmarks/bench_peers.py --quick     # a tenth of the batches, 2 reps: a smoke run
    python benchmarks/bench_peers.py                            # without the peers: raw vs fastloop only

Everything runs in one process: per (workload, variant), each rep runs the raw loop and every available
framework once, in an order that rotates from rep to rep, on a fresh model from the same seed and the same
pre-made CPU batches.  The table reports, per framework, the median over the reps of (framework time / raw
time of the same rep), wall and CPU (``time.process_time``; less sensitive to other processes).  A peer
that is not installed is skipped and said so.

Workloads (cross-entropy, one epoch, no validation): (a) MLP 32-64-10, bs 64, 3000 batches; (b) MLP
256-256-256-10, bs 256, 300 batches.  Variants: the bar (and the loss recording that feeds it) on or off,
and 0 or 10 extra no-op callbacks.  What each framework runs:

* raw: ``AdamW(lr=1e-3, betas=(0.9, 0.99), weight_decay=1e-2)``; loss, backward, step, zero_grad; keeps
  ``loss.detach()`` per batch.  The same for every variant.
* fastloop / fastai 1.0.61: ``Learner(data, model, loss_func=F.cross_entropy, wd=1e-2).fit(1, lr=1e-3)``
  (Adam with true weight decay: the same update as the raw AdamW, bit for bit).  Bar on: the Recorder prints
  and the console bar runs; bar off: ``fastprogress NO_BAR`` and ``silent=True`` (the Recorder still
  records).  No-op callbacks: ``Callback`` subclasses that implement nothing.
* ignite: ``create_supervised_trainer(model, AdamW(...), F.cross_entropy)`` (its default output is
  ``loss.item()``).  Bar on: ``RunningAverage`` of the loss (alpha 0.98, like fastai's smoothing) and
  ``ProgressBar`` (tqdm); bar off: neither.  No-op callbacks: handlers that do nothing, attached to
  ``ITERATION_COMPLETED`` (ignite has no callback object to skip).

Writes a markdown report (``--out``) and a PNG of the ratios per framework (``--png``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_loop as bl  # noqa: E402
import fastprogress  # noqa: E402
import fastprogress.fastprogress as fp  # noqa: E402

import fastloop  # noqa: E402
from fastloop.basic_data import DataBunch  # noqa: E402
from fastloop.basic_train import Learner  # noqa: E402
from fastloop.callback import Callback  # noqa: E402

LR, WD, BETAS = bl.LR, bl.WD, bl.BETAS


@dataclass(frozen=True)
class Variant:
    name: str
    bar: bool
    n_cbs: int


VARIANTS = [Variant("bar on", True, 0), Variant("bar off", False, 0), Variant("bar on + 10 no-op cbs", True, 10),
            Variant("bar off + 10 no-op cbs", False, 10)]


class ListLoader(bl.ListLoader):
    "The pre-made batches; ``dataset`` is empty so fastai 1.0.61's DataBunch sees an empty validation set."

    dataset: list = []


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    "stdout and stderr (tqdm) to /dev/null, for every loop alike."
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        yield


@contextlib.contextmanager
def no_bar(off: bool) -> Iterator[None]:
    old = fp.NO_BAR
    fp.NO_BAR = off
    try:
        yield
    finally:
        fp.NO_BAR = old


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


# --------------------------------------------------------------------------------------------- frameworks
def run_raw(w: bl.Workload, batches: list, v: Variant) -> tuple[float, float, Any]:
    (t, c), model, _ = bl.run_raw(w, batches)
    return t, c, model


class NoOp(Callback):
    "Implements nothing."


def run_fastloop(w: bl.Workload, batches: list, v: Variant) -> tuple[float, float, Any]:
    data = DataBunch(train_dl=ListLoader(batches), valid_dl=None, device="cpu", no_check=True)
    learn = Learner(data, bl.make_model(w.sizes), loss_func=F.cross_entropy, wd=WD, silent=not v.bar)
    cbs = [NoOp() for _ in range(v.n_cbs)]
    with no_bar(not v.bar):
        t, c, _ = timed(lambda: learn.fit(1, lr=LR, callbacks=cbs))
    return t, c, learn.model


def fastai_runner() -> Callable[..., tuple[float, float, Any]] | None:
    try:
        from fastai.basic_data import DataBunch as FDataBunch
        from fastai.basic_train import Learner as FLearner
        from fastai.callback import Callback as FCallback
    except ImportError:
        return None

    class FNoOp(FCallback):
        "Implements nothing (fastai v1 calls it at every event anyway)."

    def run(w: bl.Workload, batches: list, v: Variant) -> tuple[float, float, Any]:
        loader = ListLoader(batches)
        data = FDataBunch(train_dl=loader, valid_dl=ListLoader([]), fix_dl=loader, device=torch.device("cpu"),
                          no_check=True)
        learn = FLearner(data, bl.make_model(w.sizes), loss_func=F.cross_entropy, wd=WD, silent=not v.bar)
        cbs = [FNoOp() for _ in range(v.n_cbs)]
        with no_bar(not v.bar):
            t, c, _ = timed(lambda: learn.fit(1, lr=LR, callbacks=cbs))
        return t, c, learn.model

    return run


def ignite_runner() -> Callable[..., tuple[float, float, Any]] | None:
    try:
        from ignite.engine import Events, create_supervised_trainer
        from ignite.handlers import ProgressBar
        from ignite.metrics import RunningAverage
    except ImportError:
        return None

    def noop(engine: Any) -> None:
        pass

    def run(w: bl.Workload, batches: list, v: Variant) -> tuple[float, float, Any]:
        model = bl.make_model(w.sizes)

        def go() -> None:  # the optimizer is built inside the timed part, as in the raw loop
            opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, weight_decay=WD)
            trainer = create_supervised_trainer(model, opt, F.cross_entropy, device="cpu")
            if v.bar:
                RunningAverage(output_transform=lambda x: x, alpha=0.98).attach(trainer, "loss")
                ProgressBar(persist=False).attach(trainer, ["loss"])
            for _ in range(v.n_cbs):
                trainer.add_event_handler(Events.ITERATION_COMPLETED, noop)
            trainer.run(batches, max_epochs=1)

        t, c, _ = timed(go)
        return t, c, model

    return run


# ------------------------------------------------------------------------------------------------ bench
def bench(w: bl.Workload, v: Variant, runners: dict[str, Callable], reps: int) -> dict[str, dict]:
    batches = bl.make_batches(w)
    names = list(runners)
    with quiet():  # warm-up, and the check that every framework computes the raw loop's weights
        models = {n: runners[n](w, batches, v)[2] for n in names}
    diffs = {n: bl.max_param_diff(models["raw"], models[n]) for n in names}
    times: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for rep in range(reps):
        order = [names[(rep + k) % len(names)] for k in range(len(names))]
        with quiet():
            for n in order:
                t, c, _ = runners[n](w, batches, v)
                times[n].append((t, c))
    out = {}
    for n in names:
        ratios = [t / r for (t, _), (r, _) in zip(times[n], times["raw"])]
        cpu = [c / r for (_, c), (_, r) in zip(times[n], times["raw"])]
        out[n] = dict(ratio=statistics.median(ratios), lo=min(ratios), hi=max(ratios), cpu=statistics.median(cpu),
                      secs=statistics.median(t for t, _ in times[n]), diff=diffs[n])
    return out


def versions() -> str:
    parts = [f"python {platform.python_version()}", f"torch {torch.__version__}",
             f"fastprogress {fastprogress.__version__}", f"fastloop {getattr(fastloop, '__version__', '?')}"]
    for mod in ("fastai", "ignite"):
        try:
            parts.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            parts.append(f"{mod} not installed")
    return ", ".join(parts)


def plot(results: dict, path: str) -> None:
    "One panel per workload: per variant, a bar per framework at its median wall ratio to raw."
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(results)
    fig, axes = plt.subplots(1, len(workloads), figsize=(6.5 * len(workloads), 4.2), squeeze=False)
    for ax, wname in zip(axes[0], workloads):
        variants = list(results[wname])
        frameworks = [f for f in results[wname][variants[0]] if f != "raw"]
        width = 0.8 / max(len(frameworks), 1)
        for i, f in enumerate(frameworks):
            vals = [results[wname][v][f]["ratio"] for v in variants]
            bars = ax.bar([x + i * width for x in range(len(variants))], vals, width, label=f)
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_xticks([x + width * (len(frameworks) - 1) / 2 for x in range(len(variants))], variants, fontsize=8)
        ax.set_title(wname, fontsize=10)
        ax.set_ylabel("wall time / raw loop (median)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=None, help="rotated reps per row (default 5; --quick: 2)")
    p.add_argument("--quick", action="store_true", help="a tenth of the batches and 2 reps: a smoke run")
    p.add_argument("--workload", choices=["a", "b"], action="append", help="only these workloads")
    p.add_argument("--variant", type=int, action="append", help="only these variants (0-based index)")
    p.add_argument("--only", action="append", help="only these frameworks (raw always runs)")
    p.add_argument("--out", help="write the markdown report here")
    p.add_argument("--png", default=None, help="write the ratio plot here (e.g. benchmarks/peers.png)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    args = p.parse_args(argv)
    reps = args.reps or (2 if args.quick else 5)
    runners: dict[str, Callable] = {"raw": run_raw, "fastloop": run_fastloop}
    missing = []
    for name, make in (("fastai 1.0.61", fastai_runner), ("ignite", ignite_runner)):
        r = make()
        if r is None:
            missing.append(name)
        else:
            runners[name] = r
    if args.only:
        runners = {k: v for k, v in runners.items() if k == "raw" or k in args.only}
    torch.set_num_threads(args.threads)  # after the imports: none of them may change it behind our back
    workloads = [w for w in bl.WORKLOADS if not args.workload or w.name[0] in args.workload]
    if args.quick:
        workloads = [bl.Workload(w.name, w.sizes, w.bs, max(10, w.n_batches // 10)) for w in workloads]
    variants = [v for i, v in enumerate(VARIANTS) if not args.variant or i in args.variant]
    base = bl.header(argparse.Namespace(threads=args.threads, reps=reps)).split(" | ", 1)[1]
    head = (f"bench_peers | {base.replace('alternated pairs per row', 'rotated reps per row')}\n"
            f"{versions()}" + (f"\nnot installed (skipped): {', '.join(missing)}" if missing else ""))
    print(head, flush=True)
    results: dict[str, dict[str, dict]] = {}
    lines = ["| workload | variant | framework | ratio to raw (wall) | min-max | CPU ratio | median s | "
             "max param diff vs raw |", "|---|---|---|---|---|---|---|---|"]
    for w in workloads:
        results[w.name] = {}
        for v in variants:
            res = bench(w, v, runners, reps)
            results[w.name][v.name] = res
            for n, r in res.items():
                if n == "raw":
                    continue
                row = (f"| {w.name} | {v.name} | {n} | {r['ratio']:.3f} | {r['lo']:.2f}-{r['hi']:.2f} | "
                       f"{r['cpu']:.3f} | {r['secs']:.3f} | {r['diff']:.1e} |")
                lines.append(row)
                print(row, flush=True)
    report = head + "\n\n" + "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(report)
    if args.png:
        plot(results, args.png)
        print(f"plot: {args.png}")


if __name__ == "__main__":
    main()
