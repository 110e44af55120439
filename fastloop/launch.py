"""``python -m fastloop.launch``: start one process per GPU (or N CPU processes) for a training script.

fastai v1 had ``python -m fastai.launch [--gpus 0123] script.py args``, which spawned the processes itself
and passed each one ``--gpu=i``.  fastloop hands the work to PyTorch's launcher, ``torchrun``
(``torch.distributed.run``): each process gets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT`` in its environment, and ``setup_distrib(gpu)`` with ``gpu=None`` reads ``LOCAL_RANK``.
Running ``torchrun --nproc_per_node N script.py args`` directly works just as well.

    python -m fastloop.launch script.py args            # one process per visible GPU (1 on a CPU machine)
    python -m fastloop.launch --gpus 0,1 script.py      # these GPUs (sets CUDA_VISIBLE_DEVICES)
    python -m fastloop.launch --nproc 2 script.py       # 2 processes (gloo on a CPU machine)
    python -m fastloop.launch --nnodes=2 --node_rank=0 --master_addr=10.0.0.1 --nproc 8 script.py  # multi-node

Options this launcher does not know are handed to torchrun unchanged (give them as ``--name=value``).
A single machine runs with torchrun's ``--standalone`` rendezvous unless ``--nnodes`` is given.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

__all__ = ["main", "torchrun_args"]


def _parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m fastloop.launch", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--gpus", default="all", help="the GPUs to use: 'all' or a list such as 0,1 (or 01, as v1)")
    parser.add_argument("--nproc", type=int, default=None, help="number of processes (default: one per GPU, or 1)")
    parser.add_argument("script", help="the training script")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    return parser.parse_known_args(list(argv))


def torchrun_args(argv: Sequence[str], n_gpus: int | None = None) -> tuple[list[str], dict[str, str]]:
    """The torchrun argument list and the environment changes for this launcher's `argv`.

    `n_gpus` is the number of visible GPUs (read from torch when None).
    """
    opts, passthrough = _parse(argv)
    env: dict[str, str] = {}
    if n_gpus is None:
        import torch

        n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if opts.gpus != "all":
        ids = opts.gpus.split(",") if "," in opts.gpus else list(opts.gpus)  # v1 accepted "0123"
        ids = [i.strip() for i in ids if i.strip()]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
        n_gpus = len(ids)
    nproc = opts.nproc if opts.nproc is not None else max(n_gpus, 1)
    args = [] if any(a.startswith("--nnodes") for a in passthrough) else ["--standalone"]
    args += [f"--nproc_per_node={nproc}", *passthrough, opts.script, *opts.args]
    return args, env


def main(argv: Sequence[str] | None = None) -> None:
    "Run torchrun with the arguments built by `torchrun_args`."
    args, env = torchrun_args(sys.argv[1:] if argv is None else argv)
    os.environ.update(env)
    from torch.distributed.run import main as torchrun

    torchrun(args)


if __name__ == "__main__":
    main()
