"""fastloop against a raw PyTorch loop on a CUDA GPU: workload (b) and a small convnet, plus syncs per batch.

    python benchmarks/bench_gpu.py --out /tmp/gpu.md          # ~1 minute on an H100
    FASTLOOP_BENCH_OUT=/tmp/gpu.md python benchmarks/bench_gpu.py --reps 9

Runs in one process, in rotated order per rep (raw, raw with v1's param groups, raw with .item() per step,
fastloop default, fastloop bar off, fastloop sync_free=False), each run timed from the optimizer's
creation to ``torch.cuda.synchronize()`` after the last step.  Data are pre-made batches already on the
GPU (a loader with only ``__len__``/``__iter__``), so the loop is what is measured.  Prints a markdown
report and writes it to ``--out`` / ``$FASTLOOP_BENCH_OUT`` if given.

Syncs per training batch are counted with ``set_sync_debug_mode("warn")`` switched on only
from the start of each training ``on_batch_begin`` to the end of its ``on_batch_end`` (the bar's redraws
between batches are excluded), by a sync-free probe.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_loop as bl  # noqa: E402
import fastprogress  # noqa: E402
import fastprogress.fastprogress as fp  # noqa: E402

from fastloop.basic_data import DataBunch  # noqa: E402
from fastloop.basic_train import Learner  # noqa: E402
from fastloop.callback import Callback  # noqa: E402

LR, WD, BETAS = bl.LR, bl.WD, bl.BETAS
DEV = os.environ.get("FASTLOOP_BENCH_DEVICE", "cuda")  # "cpu" only to smoke-test the script without a GPU


def sync() -> None:
    if DEV.startswith("cuda"):
        torch.cuda.synchronize()


def set_sync_debug_mode(mode: str) -> None:
    if DEV.startswith("cuda"):
        torch.cuda.set_sync_debug_mode(mode)


# --------------------------------------------------------------------------------------------- workloads
def mlp_b() -> nn.Module:
    return bl.make_model((256, 256, 256, 10))


def convnet() -> nn.Module:
    "A small convnet on 3x32x32 inputs: three 3x3 convs (two strided), global average pool, a linear head."
    torch.manual_seed(bl.SEED)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))


WORKLOADS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], int, int]] = {
    # name: (model factory, input shape of one item, batch size, batches per run)
    "b: MLP 256-256-256-10, bs 256": (mlp_b, (256,), 256, 1000),
    "convnet 3x32x32, bs 128": (convnet, (3, 32, 32), 128, 300),
}


def make_batches(shape: tuple[int, ...], bs: int, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(bl.SEED)
    return [(torch.randn(bs, *shape, generator=g).to(DEV), torch.randint(0, 10, (bs,), generator=g).to(DEV))
            for _ in range(n)]


# ------------------------------------------------------------------------------------------------- runs
def run_raw(factory: Callable[[], nn.Module], batches: list, grouped: bool = False, item: bool = False) -> float:
    "The hand-written loop (losses kept on the GPU; with `item`, read every step as most scripts do)."
    model = factory().to(DEV)
    sync()
    gc.collect()
    t0 = time.perf_counter()
    if grouped:  # fastai v1's layout: weights, then biases and norm parameters
        decay = [p for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)) for p in [m.weight]]
        ids = {id(p) for p in decay}
        params: Any = [{"params": decay}, {"params": [p for p in model.parameters() if id(p) not in ids]}]
    else:
        params = model.parameters()
    opt = torch.optim.AdamW(params, lr=LR, betas=BETAS, weight_decay=WD)
    model.train()
    losses = []
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item() if item else loss.detach())
    sync()
    return time.perf_counter() - t0


def make_learner(factory: Callable[[], nn.Module], batches: list, sync_free: Any = "auto",
                 silent: bool = False) -> Learner:
    data = DataBunch(train_dl=bl.ListLoader(batches), valid_dl=None, device=DEV, no_check=True)
    return Learner(data, factory(), loss_func=F.cross_entropy, wd=WD, silent=silent, sync_free=sync_free)


def run_fastloop(factory: Callable[[], nn.Module], batches: list, sync_free: Any = "auto", no_bar: bool = False,
                 callbacks: list | None = None) -> tuple[float, Learner]:
    learn = make_learner(factory, batches, sync_free, silent=no_bar)
    old = fp.NO_BAR
    fp.NO_BAR = no_bar
    try:
        sync()
        gc.collect()
        t0 = time.perf_counter()
        with bl.quiet():
            learn.fit(1, lr=LR, callbacks=callbacks or [])
        sync()
        return time.perf_counter() - t0, learn
    finally:
        fp.NO_BAR = old


class SyncCounter(Callback):
    "A sync-free probe: sync debug mode 'warn' inside each training batch, and the warnings counted there."

    _sync_free = True

    def __init__(self) -> None:
        self.batches, self.syncs, self._catch = 0, 0, None

    def probe_begin(self, event: str, state: dict, extras: dict) -> None:
        if event == "batch_begin" and state.get("train"):
            self._catch = warnings.catch_warnings(record=True)
            self._caught = self._catch.__enter__()
            warnings.simplefilter("always")
            set_sync_debug_mode("warn")

    def probe_wrap(self, cb: Any, event: str, meth: Any) -> Any:
        return meth

    def probe_end(self, event: str, state: dict, error: BaseException | None) -> None:
        if self._catch is not None and (event == "batch_end" or error is not None):
            set_sync_debug_mode("default")
            self._catch.__exit__(None, None, None)
            self.syncs += sum("synchroniz" in str(w.message).lower() for w in self._caught)
            self.batches += 1
            self._catch = None


class ReadsLoss(Callback):
    "A plain v1 callback reading last_loss at on_batch_end (the handler must copy it to the CPU)."

    def on_batch_end(self, last_loss: Any, **kwargs: Any) -> None:
        self.last = last_loss


def syncs_per_batch(factory: Callable[[], nn.Module], batches: list, **kw: Any) -> float:
    counter = SyncCounter()
    extra = kw.pop("extra", [])
    run_fastloop(factory, batches[:50], callbacks=[counter, *extra], **kw)
    return counter.syncs / max(counter.batches, 1)


# ----------------------------------------------------------------------------------------------- report
def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=7, help="rotated reps per workload (default 7)")
    p.add_argument("--out", default=os.environ.get("FASTLOOP_BENCH_OUT"), help="write the markdown report here")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the batches per run (e.g. 0.1 for a smoke run)")
    args = p.parse_args(argv)
    if DEV.startswith("cuda") and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device; nothing to do (FASTLOOP_BENCH_DEVICE=cpu smoke-tests the script).")
        return ""
    torch.backends.cudnn.benchmark = False
    device_name = torch.cuda.get_device_name() if DEV.startswith("cuda") else "CPU smoke run"
    lines = [f"# fastloop on the GPU ({device_name})", "",
             bl.header(argparse.Namespace(threads=torch.get_num_threads(), reps=args.reps)).replace(
                 " | torch.set_num_threads", f" | CUDA {torch.version.cuda} | {platform.node()} | threads"),
             "", f"fastprogress {fastprogress.__version__}; {args.reps} rotated reps per workload; median of the "
             "per-rep ratios to the raw loop (min-max in brackets); times are wall seconds to "
             "`torch.cuda.synchronize()` after the last step.", ""]
    variants: list[tuple[str, Callable[..., float]]] = [
        ("raw loop (AdamW, one param group, losses kept on GPU)", lambda f, b: run_raw(f, b)),
        ("raw loop, v1's two param groups", lambda f, b: run_raw(f, b, grouped=True)),
        ("raw loop, loss.item() every step", lambda f, b: run_raw(f, b, item=True)),
        ("fastloop fit, Recorder + bar (default, sync_free='auto')", lambda f, b: run_fastloop(f, b)[0]),
        ("fastloop fit, bar off", lambda f, b: run_fastloop(f, b, no_bar=True)[0]),
        ("fastloop fit, sync_free=False (v1: reads each loss)", lambda f, b: run_fastloop(f, b, sync_free=False)[0]),
    ]
    lines += ["| workload | loop | median s | ratio to raw | min-max |", "|---|---|---|---|---|"]
    for name, (factory, shape, bs, n) in WORKLOADS.items():
        batches = make_batches(shape, bs, max(20, int(n * args.scale)))
        for _, run in variants:  # warm-up: cuDNN/cuBLAS, allocator, kernels
            with contextlib.redirect_stdout(io.StringIO()):
                run(factory, batches[:20])
        times: list[list[float]] = [[] for _ in variants]
        for rep in range(args.reps):
            order = [(rep + k) % len(variants) for k in range(len(variants))]
            for k in order:
                times[k].append(variants[k][1](factory, batches))
        for k, (vname, _) in enumerate(variants):
            ratios = [t / r for t, r in zip(times[k], times[0])]
            lines.append(f"| {name} | {vname} | {statistics.median(times[k]):.3f} | {statistics.median(ratios):.3f} "
                         f"| {min(ratios):.2f}-{max(ratios):.2f} |")
        print("\n".join(lines[-len(variants):]), flush=True)
    lines += ["", "Host-device syncs per training batch (sync debug mode 'warn' from on_batch_begin to the end of "
              "on_batch_end; bar redraws excluded):", "", "| workload | fit | syncs per batch |", "|---|---|---|"]
    for name, (factory, shape, bs, _n) in WORKLOADS.items():
        batches = make_batches(shape, bs, 50)
        for fname, kw in [("default (Recorder + bar, sync_free='auto')", {}),
                          ("+ a v1 callback reading last_loss at on_batch_end", {"extra": [ReadsLoss()]}),
                          ("sync_free=False (v1)", {"sync_free": False})]:
            lines.append(f"| {name} | {fname} | {syncs_per_batch(factory, batches, **kw):.2f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        Path(args.out).write_text(report)
        print(f"written to {args.out}")
    return report


if __name__ == "__main__":
    main()
