"""fastloop's training loop against a hand-written PyTorch loop, in one process.

Each timed fastloop run is paired with a raw-loop run on a fresh, identically initialised model and the
same pre-built batches; the two alternate (raw first, then fastloop first, ...) and the table reports the
median of the per-pair ratios.  See benchmarks/README.md for the methodology.

    python benchmarks/bench_loop.py              # 5 pairs per variant
    python benchmarks/bench_loop.py --quick      # a tenth of the batches, 2 pairs: checks that it runs
    python benchmarks/bench_loop.py --profile    # plus cProfile of one fastloop run of workload (a)
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import os
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# run from a checkout without installing: put the repository root first on the path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fastprogress  # noqa: E402
import fastprogress.fastprogress as fp  # noqa: E402

from fastloop.basic_data import DataBunch  # noqa: E402
from fastloop.basic_train import Learner  # noqa: E402
from fastloop.callback import Callback  # noqa: E402

LR, WD, BETAS, SEED = 1e-3, 1e-2, (0.9, 0.99), 0


# ------------------------------------------------------------------------------------------- workloads
@dataclass(frozen=True)
class Workload:
    name: str
    sizes: tuple[int, ...]  # layer widths, input first, classes last
    bs: int
    n_batches: int


WORKLOADS = [
    Workload("a: MLP 32-64-10, bs 64", (32, 64, 10), 64, 3000),
    Workload("b: MLP 256-256-256-10, bs 256", (256, 256, 256, 10), 256, 300),
]


def make_model(sizes: tuple[int, ...], seed: int = SEED) -> nn.Module:
    "A ReLU MLP, initialised from `seed` (so every call returns the same weights)."
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


def make_batches(w: Workload, seed: int = SEED) -> list[tuple[torch.Tensor, torch.Tensor]]:
    "The (x, y) CPU batches of `w`, built once and shared by every run."
    g = torch.Generator().manual_seed(seed)
    n_in, n_cls = w.sizes[0], w.sizes[-1]
    return [(torch.randn(w.bs, n_in, generator=g), torch.randint(0, n_cls, (w.bs,), generator=g))
            for _ in range(w.n_batches)]


class ListLoader:
    "The least a training loader needs to be: a length and an iterator over ready-made batches."

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]):
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.batches)


# ------------------------------------------------------------------------------------------- callbacks
class NoOpCallback(Callback):
    "Implements nothing: fastloop should not call it at all."


class BatchEndCallback(Callback):
    "Implements one event with an empty body: the cost of one dispatched call per batch."

    def on_batch_end(self, **kwargs: Any) -> None:
        pass


# ------------------------------------------------------------------------------------------------ runs
Times = tuple[float, float]  # (wall seconds, CPU seconds of this process)


def run_raw(w: Workload, batches: list, grouped: bool = False) -> tuple[Times, nn.Module, list]:
    """What a user writes by hand (keeping the losses); returns ((wall, cpu) seconds, model, losses).

    ``grouped=True`` gives AdamW the two param groups fastai v1's OptimWrapper makes (weights, then biases),
    the same arithmetic as fastloop: it separates the cost of v1's optimizer layout from the loop's.
    """
    model = make_model(w.sizes)
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    if grouped:
        weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
        biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
        params: Any = [{"params": weights}, {"params": biases}]
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
        losses.append(loss.detach())
    t = time.perf_counter() - t0, time.process_time() - c0
    return t, model, losses


@dataclass(frozen=True)
class Variant:
    name: str
    no_bar: bool = False  # fastprogress NO_BAR, and Learner(silent=True) so the Recorder prints no table
    callbacks: Callable[[], list] = list  # extra callbacks for this fit


VARIANTS = [
    Variant("Recorder + bar (default)"),
    Variant("bar off (NO_BAR, silent)", no_bar=True),
    Variant("bar off + 10 no-op cbs", no_bar=True, callbacks=lambda: [NoOpCallback() for _ in range(10)]),
    Variant("bar off + 10 on_batch_end cbs", no_bar=True,
            callbacks=lambda: [BatchEndCallback() for _ in range(10)]),
]


def make_learner(w: Workload, batches: list, v: Variant) -> Learner:
    "A fresh Learner on a fresh model over `batches`, train only (no validation loader)."
    data = DataBunch(train_dl=ListLoader(batches), valid_dl=None, device="cpu", no_check=True)
    assert data.empty_val, "expected no validation"
    return Learner(data, make_model(w.sizes), loss_func=F.cross_entropy, wd=WD, silent=v.no_bar)


def run_fastloop(w: Workload, batches: list, v: Variant) -> tuple[Times, nn.Module, Learner]:
    "One `learn.fit(1)`; returns ((wall, cpu) seconds, model, learner).  Learner construction is not timed."
    learn = make_learner(w, batches, v)
    cbs = v.callbacks()
    old = fp.NO_BAR
    fp.NO_BAR = v.no_bar
    try:
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        learn.fit(1, lr=LR, callbacks=cbs)
        t = time.perf_counter() - t0, time.process_time() - c0
    finally:
        fp.NO_BAR = old
    return t, learn.model, learn


@contextlib.contextmanager
def quiet(enabled: bool = True) -> Iterator[None]:
    "Send stdout to /dev/null (both loops get the same treatment)."
    if not enabled:
        yield
        return
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        yield


def max_param_diff(a: nn.Module, b: nn.Module) -> float:
    return max((pa.detach() - pb.detach()).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters()))


def bench_variant(w: Workload, batches: list, v: Variant, reps: int) -> dict:
    "One warm-up pair (and a check that both loops end on the same weights), then `reps` alternated pairs."
    with quiet():
        _, m_raw, raw_losses = run_raw(w, batches)
        _, m_fl, learn = run_fastloop(w, batches, v)
    diff = max_param_diff(m_raw, m_fl)
    n_rec = len(learn.recorder.losses)
    raws, groupeds, fls = [], [], []
    runs = [lambda: run_raw(w, batches)[0], lambda: run_raw(w, batches, grouped=True)[0],
            lambda: run_fastloop(w, batches, v)[0]]
    for i in range(reps):
        order = [(i + k) % 3 for k in range(3)]  # rotate which loop goes first
        times: dict[int, Times] = {}
        with quiet():
            for k in order:
                times[k] = runs[k]()
        raws.append(times[0])
        groupeds.append(times[1])
        fls.append(times[2])
    med = statistics.median
    ratios = [f[0] / r[0] for r, f in zip(raws, fls)]
    grouped_ratios = [f[0] / g[0] for g, f in zip(groupeds, fls)]
    cpu_ratios = [f[1] / r[1] for r, f in zip(raws, fls)]
    return dict(workload=w.name, variant=v.name, raw=med(r[0] for r in raws), fl=med(f[0] for f in fls),
                ratio=med(ratios), ratio_min=min(ratios), ratio_max=max(ratios), cpu_ratio=med(cpu_ratios),
                ratio_q=statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3,
                grouped_ratio=med(grouped_ratios),
                overhead_us=med((f[1] - r[1]) / w.n_batches * 1e6 for r, f in zip(raws, fls)),
                raw_us=med(r[1] for r in raws) / w.n_batches * 1e6, diff=diff, n_losses=(len(raw_losses), n_rec))


# ------------------------------------------------------------------------------------------- reporting
def header(args: argparse.Namespace) -> str:
    try:
        import subprocess

        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, check=True).stdout.strip()
    except Exception:
        rev = "uncommitted"
    return (f"fastloop bench_loop | commit {rev} | python {platform.python_version()} | torch {torch.__version__} | "
            f"fastprogress {fastprogress.__version__} | {os.cpu_count()} CPUs | "
            f"torch.set_num_threads({args.threads}) | {args.reps} alternated pairs per row (+1 warm-up)")


def table(rows: list[dict]) -> str:
    cols = ["workload", "variant", "raw s", "fastloop s", "ratio", "ratio quartiles", "ratio min-max",
            "ratio vs raw w/ v1 groups", "CPU ratio", "raw CPU us/batch", "overhead CPU us/batch"]
    lines = [cols]
    for r in rows:
        lines.append([r["workload"], r["variant"], f"{r['raw']:.3f}", f"{r['fl']:.3f}", f"{r['ratio']:.3f}",
                      f"{r['ratio_q'][0]:.2f}-{r['ratio_q'][2]:.2f}", f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f}",
                      f"{r['grouped_ratio']:.3f}", f"{r['cpu_ratio']:.3f}", f"{r['raw_us']:.0f}",
                      f"{r['overhead_us']:.1f}"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(cols))]
    out = ["| " + " | ".join(c.ljust(wd) for c, wd in zip(line, widths)) + " |" for line in lines]
    out.insert(1, "|" + "|".join("-" * (wd + 2) for wd in widths) + "|")
    return "\n".join(out)


def profile_fastloop(w: Workload, batches: list, top: int = 25) -> str:
    "cProfile one default-variant fit of `w` (after a warm-up fit); the `top` functions by tottime."
    v = VARIANTS[0]
    with quiet():
        run_fastloop(w, batches, v)
        learn = make_learner(w, batches, v)
        prof = cProfile.Profile()
        prof.enable()
        learn.fit(1, lr=LR)
        prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    # the library's own functions, by cumulative time, in microseconds per batch (profiled, so inflated)
    root = str(Path(__file__).resolve().parent.parent / "fastloop")
    own = sorted(((v[3], v[2], v[1], k) for k, v in stats.stats.items() if k[0].startswith(root)), reverse=True)
    buf.write(f"fastloop-owned functions by cumulative time (us per batch, profiled; {w.n_batches} batches)\n")
    buf.write(f"{'cum us':>9} {'own us':>8} {'calls':>7}  function\n")
    for cum, tot, n, (file, line, name) in own[:15]:
        buf.write(f"{cum / w.n_batches * 1e6:9.1f} {tot / w.n_batches * 1e6:8.1f} {n:7d}  "
                  f"fastloop/{Path(file).name}:{line}({name})\n")
    return buf.getvalue()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=None, help="alternated (raw, fastloop) pairs per row (default 11)")
    p.add_argument("--quick", action="store_true", help="a tenth of the batches and 2 pairs: a smoke run")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1, for stable timings)")
    p.add_argument("--workload", choices=["a", "b"], action="append", help="run only these workloads")
    p.add_argument("--variant", type=int, action="append", help="run only these variants (0-based index)")
    p.add_argument("--profile", action="store_true", help="also cProfile one fastloop fit of workload (a)")
    p.add_argument("--profile-only", action="store_true", help="only the cProfile run (no timing table)")
    args = p.parse_args(argv)
    if args.reps is None:
        args.reps = 2 if args.quick else 11
    torch.set_num_threads(args.threads)

    workloads = [w for w in WORKLOADS if not args.workload or w.name[0] in args.workload]
    if args.quick:
        workloads = [Workload(w.name + " (quick)", w.sizes, w.bs, max(10, w.n_batches // 10)) for w in workloads]
    variants = [v for i, v in enumerate(VARIANTS) if not args.variant or i in args.variant]

    print(header(args), flush=True)
    rows = []
    for w in [] if args.profile_only else workloads:
        batches = make_batches(w)
        for v in variants:
            r = bench_variant(w, batches, v, args.reps)
            rows.append(r)
            print(f"  {w.name} | {v.name}: ratio {r['ratio']:.3f}, CPU ratio {r['cpu_ratio']:.3f} "
                  f"(max |param diff| vs raw {r['diff']:.1e}, losses kept raw/recorder "
                  f"{r['n_losses'][0]}/{r['n_losses'][1]})", flush=True)
    if rows:
        print()
        print(table(rows))
        print("\nraw s, fastloop s: median wall seconds.  ratio: fastloop / raw wall time per alternated run, then "
              "the median (quartiles, min-max over the runs).\n"
              "ratio vs raw w/ v1 groups: the same against a raw loop whose AdamW has fastai v1's two param groups "
              "(weights, biases).\n"
              "CPU ratio: the same with this process's CPU time (less sensitive to other processes on a busy "
              "machine).  raw CPU us/batch: median raw CPU time per batch;\n"
              "overhead CPU us/batch: median over the pairs of (fastloop CPU - raw CPU) / batches.")
    if args.profile or args.profile_only:
        w = next(w for w in WORKLOADS if w.name.startswith("a"))
        if args.quick:
            w = Workload(w.name, w.sizes, w.bs, w.n_batches // 10)
        print(f"\ncProfile of one fastloop fit, {w.name}, {w.n_batches} batches, default variant "
              "(profiling inflates Python-level costs):")
        print(profile_fastloop(w, make_batches(w)))


if __name__ == "__main__":
    main()
