"""A training script run under torchrun by tests/test_distributed.py (and on a GPU by the device check).

    python -m fastloop.launch --nproc 2 tests/_distributed_script.py SCENARIO OUT_DIR

Scenarios: ``main`` (training, validation, flags, output and files: several fits in one process group, to
launch once) and ``collective_in_rank_zero_callback`` (debug mode: must fail fast, not hang).  Each rank
writes its observations as JSON (and its final weights) to OUT_DIR; the test compares them.  `build` and
`reference_fit` are also imported by the test to train the single-process reference.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler, TensorDataset

from fastloop.basic_data import DataBunch
from fastloop.basic_train import Learner
from fastloop.callback import Callback
from fastloop.distributed import setup_distrib
from fastloop.metrics import accuracy

N_TRAIN, N_VALID, N_IN, N_CLASSES = 64, 33, 5, 3


def build(bs: int, device: Any = "cpu", path: Any = ".") -> Learner:
    """The same data and initial model on every rank: column 0 of each input is the item's id."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_TRAIN + N_VALID, N_IN, generator=g)
    x[:, 0] = torch.arange(N_TRAIN + N_VALID, dtype=torch.float32) / 100  # the id, readable from a batch
    y = (x[:, 1:] @ torch.randn(N_IN - 1, N_CLASSES, generator=g)).argmax(1)
    data = DataBunch.create(TensorDataset(x[:N_TRAIN], y[:N_TRAIN]), TensorDataset(x[N_TRAIN:], y[N_TRAIN:]),
                            bs=bs, num_workers=0, device=device, path=path)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(N_IN, 16), nn.ReLU(), nn.Linear(16, N_CLASSES))
    return Learner(data, model, loss_func=nn.CrossEntropyLoss(), metrics=[accuracy], path=path)


class SeenIds(Callback):
    "Records the ids of the training items, per epoch, and the number of training batches per epoch."

    def __init__(self) -> None:
        self.ids: list[list[int]] = []
        self.batches: list[int] = []

    def on_epoch_begin(self, **kwargs: Any) -> None:
        self.ids.append([])
        self.batches.append(0)

    def on_batch_begin(self, last_input: torch.Tensor, train: bool, **kwargs: Any) -> None:
        if train:
            self.ids[-1] += [round(v) for v in (last_input[:, 0] * 100).tolist()]
            self.batches[-1] += 1


class SetEpoch(Callback):
    "Single-process reference: the same per-epoch shuffle as DistributedTrainer's sampler."

    def __init__(self, sampler: DistributedSampler) -> None:
        self.sampler = sampler

    def on_epoch_begin(self, epoch: int, **kwargs: Any) -> None:
        self.sampler.set_epoch(epoch)


def reference_fit(epochs: int, lr: float, device: Any = "cpu") -> Learner:
    """One process on the combined batch (2 x 8 = 16), with the order the two ranks' samplers give."""
    learn = build(bs=16, device=device)
    sampler = DistributedSampler(learn.data.train_dl.dataset, num_replicas=1, rank=0, shuffle=True)
    learn.data.train_dl = learn.data.train_dl.new(shuffle=False, sampler=sampler)
    learn.fit(epochs, lr, callbacks=[SetEpoch(sampler)])
    return learn


class StopTrainingOnRank(Callback):
    "Asks to stop the training at the end of epoch `epoch`, on rank `rank` only."

    def __init__(self, rank: int, epoch: int) -> None:
        self.rank, self.epoch = rank, epoch

    def on_epoch_end(self, epoch: int, **kwargs: Any) -> dict | None:
        if dist.get_rank() == self.rank and epoch == self.epoch:
            return {"stop_training": True}
        return None


class StopEpochOnRank(Callback):
    "Asks to end epoch 0 after its training batch `batch`, on rank `rank` only."

    def __init__(self, rank: int, batch: int) -> None:
        self.rank, self.batch = rank, batch

    def on_batch_end(self, epoch: int, num_batch: int, train: bool, **kwargs: Any) -> dict | None:
        if train and epoch == 0 and num_batch == self.batch and dist.get_rank() == self.rank:
            return {"stop_epoch": True}
        return None


class FileWriter(Callback):
    "A rank-0-only callback (a logger): writes a file named after the rank it ran on."

    ranks = "zero"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_epoch_end(self, epoch: int, **kwargs: Any) -> None:
        (self.folder / f"written_by_rank{dist.get_rank()}_epoch{epoch}").write_text("x")


class ReducesInRankZeroCallback(Callback):
    "Wrong on purpose: a rank-0-only callback calling a collective (hangs without debug mode)."

    ranks = "zero"

    def on_epoch_end(self, **kwargs: Any) -> None:
        dist.all_reduce(torch.zeros(1))


def main(scenario: str, out: Path) -> None:
    gpu = setup_distrib()  # LOCAL_RANK from torchrun; the process group (gloo on CPU, NCCL on CUDA)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", gpu) if torch.cuda.is_available() else torch.device("cpu")
    result: dict[str, Any] = {"rank": rank, "world": world, "backend": dist.get_backend()}

    if scenario == "collective_in_rank_zero_callback":
        learn = build(bs=8, device=device, path=out).to_distributed(gpu, debug=True)
        learn.fit(2, 1e-2, callbacks=[ReducesInRankZeroCallback()])
        return

    # 1. training: 2 epochs, both ranks; every item seen once per epoch; then validation over uneven shards
    learn = build(bs=8, device=device, path=out).to_distributed(gpu)
    seen = SeenIds()
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        learn.fit(2, 1e-2, callbacks=[seen, FileWriter(out)])
    result.update(ids=seen.ids, batches=seen.batches, stdout=captured.getvalue(),
                  val_losses=[float(v) for v in learn.recorder.val_losses],
                  metrics=[[float(m) for m in row] for row in learn.recorder.metrics],
                  model_is_unwrapped=type(learn.model).__name__)
    torch.save({k: v.cpu() for k, v in learn.model.state_dict().items()}, out / f"weights_rank{rank}.pt")

    # 2. flags set on one rank only: every rank must stop at the same place (or the next all-reduce hangs)
    learn = build(bs=8, device=device, path=out).to_distributed(gpu)
    seen = SeenIds()
    with contextlib.redirect_stdout(io.StringIO()):
        learn.fit(6, 1e-2, callbacks=[seen, StopTrainingOnRank(rank=1, epoch=1), StopEpochOnRank(rank=0, batch=2)])
    result.update(stop_batches=seen.batches)

    # 3. save on rank 0 only (no barrier: cannot hang), then load everywhere (barrier first)
    if rank == 0:
        learn.save("shared")
    learn.load("shared")
    result["loaded"] = True
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
