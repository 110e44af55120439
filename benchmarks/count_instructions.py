"""Instructions per training batch, raw PyTorch loop vs fastloop, counted by valgrind (callgrind).

Wall-clock ratios on a shared 2-core VM swing by +-20% between runs; instruction counts do not.  Each loop
runs in its own process under callgrind at two batch counts; the difference divided by the extra batches
is the cost of one batch, with interpreter start-up and imports cancelled out.

    python benchmarks/count_instructions.py            # workload (a), about 10 minutes
    python benchmarks/count_instructions.py --child raw 200   # (internal) one measured process
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path


def child(mode: str, n_batches: int) -> None:
    "Train workload (a) for `n_batches` with bench_loop's raw loop or its default fastloop run."
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_loop as bl
    import torch

    torch.set_num_threads(1)
    a = bl.WORKLOADS[0]
    w = bl.Workload(a.name, a.sizes, a.bs, n_batches)
    batches = bl.make_batches(w)
    with bl.quiet():
        if mode == "raw":
            bl.run_raw(w, batches)
        else:
            bl.run_fastloop(w, batches, bl.VARIANTS[0])


def count(mode: str, n_batches: int) -> int:
    "Instructions callgrind collects for one child process."
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
           "--child", mode, str(n_batches)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    return int(re.search(r"Collected : (\d+)", out).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "N"))
    parser.add_argument("--low", type=int, default=100)
    parser.add_argument("--high", type=int, default=400)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    per_batch = {}
    for mode in ("raw", "fastloop"):
        lo, hi = count(mode, args.low), count(mode, args.high)
        per_batch[mode] = (hi - lo) / (args.high - args.low)
        print(f"{mode:9s} {per_batch[mode]:12,.0f} instructions per batch")
    print(f"ratio     {per_batch['fastloop'] / per_batch['raw']:.3f}  (workload a: MLP 32-64-10, bs 64)")


if __name__ == "__main__":
    main()
