"""Cost of `CallbackHandler` dispatch, per callback per event, in microseconds.

A handler is built with N callbacks of one kind, its state is filled as during a training batch (every
key exists), and one event is fired many times with `timeit`.  The per-callback cost is
``(t(N) - t(0)) / N``, so the fixed cost of firing an event is subtracted.

Kinds of callback:

* ``none``     -- implements no event (fastloop should skip it entirely);
* ``kwargs``   -- ``def on_batch_end(self, **kwargs): return None``;
* ``named``    -- ``def on_batch_end(self, last_loss, **kwargs): return None`` (the usual v1 style);
* ``all7``     -- implements the seven per-batch events with ``**kwargs`` (for the full-batch row).

Rows: ``handler('batch_end', call_mets=False)`` (the bare dispatch), ``handler.on_batch_end(loss)``
(what `fit` calls) and one full batch of handler events (on_batch_begin ... on_batch_end).

    python benchmarks/micro_dispatch.py            # default sizes
    python benchmarks/micro_dispatch.py --quick    # fewer loops: checks that it runs
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import timeit
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastloop.callback import Callback, CallbackHandler  # noqa: E402

TARGETS = {"none": 0.5, "kwargs": 1.5, "named": 1.5}  # us per callback per event


class NoHook(Callback):
    "Implements nothing."


class KwargsHook(Callback):
    def on_batch_end(self, **kwargs: Any) -> None:
        return None


class NamedHook(Callback):
    def on_batch_end(self, last_loss: Any, **kwargs: Any) -> None:
        return None


class AllBatchHooks(Callback):
    def on_batch_begin(self, **kwargs: Any) -> None:
        return None

    def on_loss_begin(self, **kwargs: Any) -> None:
        return None

    def on_backward_begin(self, **kwargs: Any) -> None:
        return None

    def on_backward_end(self, **kwargs: Any) -> None:
        return None

    def on_step_end(self, **kwargs: Any) -> None:
        return None

    def on_batch_end(self, **kwargs: Any) -> None:
        return None


KINDS = {"none": NoHook, "kwargs": KwargsHook, "named": NamedHook, "all7": AllBatchHooks}


def make_handler(kind: str, n: int) -> tuple[CallbackHandler, dict[str, Any]]:
    "A handler with `n` callbacks of `kind`, its state_dict holding every key a training batch has."
    cbh = CallbackHandler([KINDS[kind]() for _ in range(n)])
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    out, loss = torch.randn(4, 2), torch.tensor(0.5)
    cbh.on_train_begin(1, None, [])
    cbh.on_epoch_begin()
    cbh.on_batch_begin(x, y)
    cbh.on_loss_begin(out)
    cbh.on_backward_begin(loss)
    cbh.on_backward_end()
    cbh.on_step_end()
    cbh.on_batch_end(loss)
    return cbh, dict(x=x, y=y, out=out, loss=loss)


def full_batch(cbh: CallbackHandler, x: Any, y: Any, out: Any, loss: Any) -> None:
    "The handler calls `fit` and `loss_batch` make for one training batch."
    cbh.on_batch_begin(x, y)
    cbh.on_loss_begin(out)
    cbh.on_backward_begin(loss)
    cbh.on_backward_end()
    cbh.on_step_end()
    cbh.on_batch_end(loss)


def _stmt(what: str, kind: str, n: int) -> Any:
    "A no-argument callable doing one `what` on a handler with `n` callbacks of `kind`."
    cbh, b = make_handler(kind, n)
    x, y, out, loss = b["x"], b["y"], b["out"], b["loss"]
    if what == "call":
        return lambda: cbh("batch_end", call_mets=False)
    if what == "on_batch_end":
        return lambda: cbh.on_batch_end(loss)
    if what == "full_batch":
        return lambda: full_batch(cbh, x, y, out, loss)
    if what == "floor":  # no handler: n bare calls `meth(**state)` with the same 18-key state
        state, meths = cbh.state_dict, [KINDS[kind]().on_batch_end for _ in range(n)]

        def floor() -> None:
            for m in meths:
                m(**state)

        return floor
    raise ValueError(what)


def measure(what: str, kind: str, n: int, number: int, repeat: int) -> tuple[float, float, float]:
    """(t(0) us, per-callback us from the mins, per-callback us from the medians).

    t(0) and t(n) are timed in alternation, `repeat` times each, so both see the same machine load.
    """
    if what == "full_batch":
        number = max(1, number // 4)
    f0, fn = _stmt(what, kind, 0), _stmt(what, kind, n)
    t0s, tns = [], []
    for _ in range(repeat):
        t0s.append(timeit.timeit(f0, number=number) / number * 1e6)
        tns.append(timeit.timeit(fn, number=number) / number * 1e6)
    med = statistics.median
    return min(t0s), (min(tns) - min(t0s)) / n, (med(tns) - med(t0s)) / n


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[1, 10, 50], help="callback counts (N=0 is the baseline)")
    p.add_argument("--number", type=int, default=20000, help="calls per timing")
    p.add_argument("--repeat", type=int, default=7, help="timings per measurement (min and median reported)")
    p.add_argument("--quick", action="store_true", help="number=2000, repeat=3")
    args = p.parse_args(argv)
    if args.quick:
        args.number, args.repeat = 2000, 3
    print(f"fastloop micro_dispatch | python {platform.python_version()} | torch {torch.__version__} | "
          f"{args.repeat} x {args.number} calls per point; per-callback cost = (t(N) - t(0)) / N, "
          f"from the min (median in brackets)")
    rows = [("call", k) for k in ("none", "kwargs", "named")]
    rows += [("on_batch_end", k) for k in ("none", "kwargs")]
    rows += [("full_batch", k) for k in ("none", "all7")]
    rows += [("floor", k) for k in ("kwargs", "named")]
    labels = {"call": "handler('batch_end', call_mets=False)", "on_batch_end": "handler.on_batch_end(loss)",
              "full_batch": "one batch of handler events (6 calls)", "floor": "floor: bare meth(**state_dict)"}
    cols = ["event call", "callbacks", "t(0) us"] + [f"per cb N={n} us" for n in args.n] + ["target", "ok"]
    lines = [cols]
    for what, kind in rows:
        cells, per_cb, base = [], 0.0, 0.0
        for n in args.n:
            base, per_cb, per_med = measure(what, kind, n, args.number, args.repeat)
            cells.append(f"{per_cb:.3f} [{per_med:.3f}]")
        target = TARGETS.get(kind) if what in ("call", "on_batch_end") else None
        ok = "" if target is None else ("yes" if per_cb <= target else "NO")  # judged at the largest N
        lines.append([labels[what], kind, f"{base:.2f}"] + cells + [f"<= {target}" if target else "-", ok])
    widths = [max(len(line[i]) for line in lines) for i in range(len(cols))]
    out = ["| " + " | ".join(c.ljust(wd) for c, wd in zip(line, widths)) + " |" for line in lines]
    out.insert(1, "|" + "|".join("-" * (wd + 2) for wd in widths) + "|")
    print("\n".join(out))
    print("\nper cb: (min t(N) - min t(0)) / N, t(0) and t(N) timed in alternation; [median-based] in brackets."
          "\n'ok' judges the largest N (the most precise).  full-batch rows are per callback per batch (6 events "
          "for all7); their t(0) is the handler's own per-batch cost.\nfloor rows: N bare calls of a bound method "
          "with the handler's 18-key state as **kwargs -- what any v1-style dispatch must pay.")


if __name__ == "__main__":
    main()
