"""Distributed training on torch.distributed: fastai v1's ``fastai.distributed``, launched with ``torchrun``.

A v1 script ports unchanged but for its imports::

    from fastloop.distributed import *
    gpu = setup_distrib(args.gpu)          # None under torchrun: LOCAL_RANK is read from the environment
    learn = Learner(data, model, metrics=accuracy).to_distributed(gpu)
    learn.fit(3)

and is launched with ``torchrun --nproc_per_node 2 script.py`` (or ``python -m fastloop.launch``).
NCCL is used on CUDA and gloo on the CPU; the code path is the same.

What fastloop adds to v1 (the README's "Distributed training" section has the table):

* **No deadlocks on the loop's flags.** ``stop_epoch`` (training batches), ``stop_training`` and
  ``skip_validate`` are reduced across ranks (any rank sets it => every rank sees it) at the line where
  ``fit`` reads them, so a callback that stops on one rank stops all ranks at the same batch or epoch
  instead of leaving the others waiting in the next gradient all-reduce.  The reduction runs on a gloo
  group over CPU tensors: no device sync.
* **Correct validation numbers.** The validation set is split between ranks without padding (v1's
  sampler repeats samples to even the shards, and v1's metric averaged per-batch averages); the loss
  and the metrics sum (value x count, count) over ranks once per epoch, so the result equals the
  single-process number.  v1's numbers were wrong; this is a fix, not an option.
* **Output on rank 0 only.** Bars and the Recorder's table print on rank 0 only; a callback declaring
  ``ranks = 'zero'`` (CSV and TensorBoard loggers, checkpoint writers) runs on rank 0 only.
  ``Learner.save`` does nothing on other ranks and has no barrier, so ``if rank == 0: learn.save()``
  cannot hang; ``Learner.load`` waits at a barrier first (all ranks must call it) -- both as in v1.
* **A clear error instead of a hang** (``debug=True``): a rank-0-only callback that calls a collective
  raises `CollectiveInRankZeroCallbackError` on rank 0 (torchrun then stops the other ranks).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, RandomSampler, Sampler

from ._io import atomic_write_bytes
from .basic_train import Learner, LearnerCallback
from .callback import Callback
from .torch_core import first_el, num_distrib

__all__ = ["DistributedTrainer", "DistributedRecorder", "ParallelTrainer", "CollectiveGuard",
           "CollectiveInRankZeroCallbackError", "ShardSampler", "setup_distrib", "read_metrics", "is_distributed"]


def is_distributed() -> bool:
    "Whether this process belongs to an initialised process group of more than one process."
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def setup_distrib(gpu: Any = None) -> int | None:
    """Prepare this process for distributed training and return its GPU index (v1: ``gpu = setup_distrib(gpu)``).

    `gpu` is what fastai v1's launcher passed as ``--gpu``; under ``torchrun`` leave it None and the local
    rank is read from ``LOCAL_RANK``.  On CUDA the device is set; when ``WORLD_SIZE > 1`` the default process
    group is initialised from the environment (``env://``) with NCCL on CUDA and gloo on the CPU (v1 did so
    only for ``WORLD_SIZE > 1``; fastloop also for a world of one, so the DDP path runs under
    ``torchrun --nproc_per_node 1``).
    Returns None in a plain single-process run (no ``--gpu``, no ``LOCAL_RANK``).
    """
    if gpu is None and "LOCAL_RANK" in os.environ:
        gpu = os.environ["LOCAL_RANK"]
    if gpu is None:
        return None
    gpu = int(gpu)
    if torch.cuda.is_available():
        torch.cuda.set_device(gpu)
    if num_distrib() >= 1 and not dist.is_initialized():  # under torchrun (WORLD_SIZE set), world size 1 too
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo", init_method="env://")
    return gpu


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, rank + 2*world, ...`` of a dataset of `n` items: each item on exactly one rank.

    Used for validation.  Unlike torch's `DistributedSampler`, it never pads the shards to equal length
    (padding repeats items and biases the metrics); shards differ by at most one item.
    """

    def __init__(self, n: int, rank: int, world: int):
        if world > n:
            raise ValueError(f"ShardSampler: {n} validation items cannot be split over {world} ranks "
                             f"(every rank needs at least one).")
        self.n, self.rank, self.world = n, rank, world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


class CollectiveInRankZeroCallbackError(RuntimeError):
    "A callback running on rank 0 only (``ranks = 'zero'``) called a torch.distributed collective."


_COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_object", "all_to_all",
                "barrier", "broadcast", "broadcast_object_list", "gather", "gather_object", "reduce",
                "reduce_scatter", "reduce_scatter_tensor", "scatter", "scatter_object_list", "monitored_barrier")


class CollectiveGuard(Callback):
    """Debug probe: on rank 0, a collective called from inside a ``ranks = 'zero'`` callback raises at once.

    Such a call would hang for ever -- the other ranks never run that callback, so they never join the
    collective.  Added by ``learn.to_distributed(..., debug=True)``.  While a rank-0-only hook runs, the
    collectives of ``torch.distributed`` (looked up as module attributes: ``dist.all_reduce(...)``; a name
    imported before the fit with ``from torch.distributed import all_reduce`` is not seen) are replaced by
    functions raising `CollectiveInRankZeroCallbackError` naming the callback, the event and the collective.
    It is a probe (see `fastloop._dispatch`): it takes no state and returns nothing.
    """

    _order = -100

    def probe_begin(self, event: str, state: dict, extras: dict) -> None:
        pass

    def probe_end(self, event: str, state: dict, error: BaseException | None) -> None:
        pass

    def probe_wrap(self, cb: Any, event: str, meth: Callable[..., Any]) -> Callable[..., Any]:
        if getattr(cb, "ranks", "all") != "zero":
            return meth

        def guarded(**kwargs: Any) -> Any:
            saved = {name: getattr(dist, name) for name in _COLLECTIVES if hasattr(dist, name)}

            def refuse(name: str) -> Callable[..., Any]:
                def raiser(*args: Any, **kw: Any) -> Any:
                    raise CollectiveInRankZeroCallbackError(
                        f"{type(cb).__name__}.on_{event} calls torch.distributed.{name}, but {type(cb).__name__} "
                        f"runs on rank 0 only (ranks = 'zero'): the other ranks never make this call, so it "
                        f"would wait for ever. Let the callback run on all ranks (ranks = 'all') or move the "
                        f"collective out of it.")
                return raiser

            for name in saved:
                setattr(dist, name, refuse(name))
            try:
                return meth(**kwargs)
            finally:
                for name, fn in saved.items():
                    setattr(dist, name, fn)

        return guarded


class DistributedTrainer(LearnerCallback):
    """Trains ``learn.model`` with DistributedDataParallel, one process per rank (fastai v1's callback).

    Events:
      * ``on_train_begin``: wraps the model in DDP (on GPU `cuda_id` with CUDA, on the CPU otherwise);
        gives the train loader a `DistributedSampler` (shuffling if the loader shuffled) and the validation
        loader a `ShardSampler`; silences the Recorder on ranks other than 0.  Reads nothing.
      * ``on_epoch_begin``: ``sampler.set_epoch(epoch)`` so each epoch has its own order on every rank.
        Reads ``epoch``.
      * ``on_batch_end`` (validation batches): accumulates this rank's (loss x batch size, batch size).
        Reads ``last_loss``, ``last_target``, ``train``.
      * ``on_epoch_end``: replaces ``last_metrics[0]`` (the validation loss of this rank's shard) by the
        loss over the whole validation set, summed over ranks.  Reads and returns ``last_metrics``.
      * ``on_train_end``: unwraps the model and gives the loaders back.

    It also reduces the loop's flags across ranks (`reduce_flag`, called by the handler where fit reads
    them) and gives the sharded validation loader the sum-reduction its metrics use (``shard_reducer``).

    ``_order = -20`` (v1's): before the Recorder (-10), which must see the global validation loss, and
    before any callback that reads the model.
    """

    _order = -20

    def __init__(self, learn: Learner, cuda_id: int | None = 0):
        super().__init__(learn)
        self.cuda_id = cuda_id
        self._group: Any = None
        self._active = False

    # -- the reductions the handler and the metrics use
    def _reduce(self, t: torch.Tensor, op: Any) -> torch.Tensor:
        "All-reduce a CPU tensor on the gloo side group (no device sync); a copy is returned."
        t = t.detach().cpu().clone()
        dist.all_reduce(t, op=op, group=self._group)
        return t

    def reduce_flag(self, value: Any) -> bool:
        "True on every rank if `value` is true on any rank (called by the handler where the loop reads a flag)."
        if not (self._active and is_distributed()):
            return bool(value)
        return bool(self._reduce(torch.tensor([int(bool(value))]), dist.ReduceOp.MAX).item())

    def sum_shards(self, t: torch.Tensor) -> torch.Tensor:
        "The sum of `t` over all ranks (metrics' (value x count, count) at epoch end)."
        if not is_distributed():
            return t.detach().cpu().clone()
        return self._reduce(t, dist.ReduceOp.SUM)

    # -- events
    def on_train_begin(self, **kwargs: Any) -> None:
        "Wrap the model in DDP and shard the loaders."
        learn = self.learn
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("DistributedTrainer needs an initialised process group: launch the script with "
                               "torchrun (or python -m fastloop.launch) and call setup_distrib() before fit.")
        on_gpu = torch.cuda.is_available() and self.cuda_id is not None
        if on_gpu:
            learn.model = DistributedDataParallel(learn.model, device_ids=[self.cuda_id], output_device=self.cuda_id)
        else:
            learn.model = DistributedDataParallel(learn.model)
        world, rank = dist.get_world_size(), dist.get_rank()
        if self._group is None:  # a collective: every rank builds it at the same point of its first fit
            self._group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
        self.old_train_dl, self.old_valid_dl = learn.data.train_dl, learn.data.valid_dl
        train_ds = self.old_train_dl.dataset
        shuffle = isinstance(getattr(self.old_train_dl, "sampler", None), RandomSampler)
        learn.data.train_dl = self.old_train_dl.new(
            shuffle=False, sampler=DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=shuffle))
        if self.old_valid_dl is not None:
            valid_dl = self.old_valid_dl.new(shuffle=False,
                                             sampler=ShardSampler(len(self.old_valid_dl.dataset), rank, world))
            valid_dl.shard_reducer = self.sum_shards  # the handler hands it to the metrics at epoch end
            learn.data.valid_dl = valid_dl
        if rank != 0 and hasattr(learn, "recorder"):
            learn.recorder.silent = True
        self._active = True

    def on_epoch_begin(self, epoch: int, **kwargs: Any) -> None:
        "A new shuffle for this epoch, the same on every rank; reset the validation sums."
        sampler = getattr(self.learn.data.train_dl, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        self._val_sum, self._val_n = 0.0, 0

    def on_batch_end(self, last_loss: Any, last_target: Any, train: bool, **kwargs: Any) -> None:
        "Validation batches: add this batch's (loss x size, size) to the rank's sums."
        if not train:
            bs = first_el(last_target).shape[0]
            self._val_sum += float(last_loss) * bs
            self._val_n += bs

    def on_epoch_end(self, last_metrics: Sequence[Any], **kwargs: Any) -> dict | None:
        "Put the validation loss of the whole set (all ranks) in ``last_metrics[0]``."
        if not last_metrics or last_metrics[0] is None or not is_distributed():
            return None
        total = self.sum_shards(torch.tensor([self._val_sum, float(self._val_n)], dtype=torch.float64))
        val_loss = np.float32(total[0].item() / total[1].item())
        return {"last_metrics": [val_loss] + list(last_metrics[1:])}

    def on_train_end(self, **kwargs: Any) -> None:
        "Unwrap the model and restore the loaders (no collective here: safe after an error)."
        self._active = False
        learn = self.learn
        if isinstance(learn.model, DistributedDataParallel):
            learn.model = learn.model.module
        learn.data.train_dl = self.old_train_dl
        if self.old_valid_dl is not None:
            learn.data.valid_dl = self.old_valid_dl


class DistributedRecorder(LearnerCallback):
    """Each rank dumps its losses and metrics to ``learn.path/cache_dir/{losses,metrics}_{cuda_id}.npy`` (v1).

    Events: ``on_epoch_end`` and ``on_train_end`` (reads nothing; uses ``learn.recorder``).  Every rank writes
    its own files (atomically); `read_metrics` gathers them.  ``_order`` 0: after the Recorder (-10).
    """

    def __init__(self, learn: Learner, cuda_id: int = 0, cache_dir: str | Path = "tmp"):
        super().__init__(learn)
        self.cuda_id, self.cache_dir = cuda_id, cache_dir

    def on_train_begin(self, **kwargs: Any) -> None:
        "Make the cache folder."
        (self.learn.path / self.cache_dir).mkdir(parents=True, exist_ok=True)

    def _save(self) -> None:
        folder = self.learn.path / self.cache_dir
        rec = self.learn.recorder
        dumps = {"losses": np.array([float(v) for v in rec.losses]),
                 "metrics": np.array([[float(m) for m in row] for row in rec.metrics])}
        for name, values in dumps.items():
            buf = io.BytesIO()  # np.save's format, written to memory first, then atomically to disk
            np.save(buf, values)
            atomic_write_bytes(folder / f"{name}_{self.cuda_id}.npy", buf.getvalue())

    def on_epoch_end(self, **kwargs: Any) -> None:
        "Dump what the Recorder has so far."
        self._save()

    def on_train_end(self, **kwargs: Any) -> None:
        "Dump the final history."
        self._save()


def read_metrics(cache_path: str | Path, n_gpus: int, reduce: bool = True) -> Any:
    """Read the `DistributedRecorder` dumps of `n_gpus` ranks: (losses, metrics), averaged over ranks if `reduce`."""
    losses, metrics = [], []
    for i in range(n_gpus):
        losses.append(np.load(Path(cache_path) / f"losses_{i}.npy")[None])
        metrics.append(np.load(Path(cache_path) / f"metrics_{i}.npy")[None])
    if reduce:
        return np.concatenate(losses, 0).mean(0), np.concatenate(metrics, 0).mean(0)
    return losses, metrics


class ParallelTrainer(LearnerCallback):
    """Wraps ``learn.model`` in ``nn.DataParallel`` for the fit (v1; ``learn.to_parallel()``).

    Events: ``on_train_begin`` (wrap), ``on_train_end`` (unwrap).  ``_order = -20`` (v1's): the model is
    wrapped before other callbacks look at it.
    """

    _order = -20

    def on_train_begin(self, **kwargs: Any) -> None:
        "Wrap the model."
        self.learn.model = nn.DataParallel(self.learn.model)

    def on_train_end(self, **kwargs: Any) -> None:
        "Unwrap the model."
        if isinstance(self.learn.model, nn.DataParallel):
            self.learn.model = self.learn.model.module


def _learner_to_distributed(learn: Learner, cuda_id: int | None = None, cache_dir: str | Path = "tmp",
                            debug: bool = False) -> Learner:
    """Train `learn` with DDP: append `DistributedTrainer` and `DistributedRecorder` to ``learn.callbacks`` (v1).

    `cuda_id` defaults to ``LOCAL_RANK`` (torchrun).  With ``debug=True`` a `CollectiveGuard` is added too: a
    collective called by a rank-0-only callback raises instead of hanging.
    """
    if cuda_id is None:
        cuda_id = int(os.environ.get("LOCAL_RANK", 0))
    learn.callbacks.append(DistributedTrainer(learn, cuda_id))
    learn.callbacks.append(DistributedRecorder(learn, cuda_id, cache_dir))
    if debug:
        learn.callbacks.append(CollectiveGuard())
    return learn


def _learner_to_parallel(learn: Learner) -> Learner:
    "Train `learn` with ``nn.DataParallel`` (v1's ``learn.to_parallel()``)."
    learn.callbacks.append(ParallelTrainer(learn))
    return learn


Learner.to_distributed = _learner_to_distributed  # type: ignore[attr-defined]
Learner.to_parallel = _learner_to_parallel  # type: ignore[attr-defined]
