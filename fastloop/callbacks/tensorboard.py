"""`LearnerTensorboardWriter`: log losses, metrics, weight histograms and gradient statistics to TensorBoard.

Needs the optional ``tensorboard`` package (``pip install fastloop[tensorboard]``), used through
``torch.utils.tensorboard``; ``tensorboardX`` (what fastai v1 used) is used when only it is installed.  This
module imports without either; creating the callback then raises an ImportError saying what to install.
"""

from __future__ import annotations

import statistics
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..basic_data import DatasetType
from ..basic_train import Learner, LearnerCallback

__all__ = ["LearnerTensorboardWriter"]

_INSTALL_HINT = ("LearnerTensorboardWriter needs TensorBoard: pip install fastloop[tensorboard] "
                 "(or pip install tensorboard).")


def _summary_writer_class() -> type:
    "torch's ``SummaryWriter`` (needs the `tensorboard` package), else tensorboardX's; a clear ImportError if none."
    try:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter
    except ImportError as torch_error:
        try:
            from tensorboardX import SummaryWriter

            return SummaryWriter
        except ImportError:
            raise ImportError(_INSTALL_HINT) from torch_error


class LearnerTensorboardWriter(LearnerCallback):
    """Writes to TensorBoard, in ``base_dir/name``, what fastai v1's writer wrote, under the same tags:

    * ``on_train_begin``: the model graph, traced on the first item batch of the single loader (with
      `write_graph`; a model that cannot be traced gives a warning, not an error);
    * ``on_backward_end`` (reads ``iteration``, ``train``): every `stats_iters` iterations, iteration 0 included,
      gradient statistics under ``model_stats/gradients/`` (avg/median/max/min of the per-tensor norms, number
      of zeros, avg/median/max/min gradient);
    * ``on_batch_end`` (reads ``last_loss``, ``iteration``, ``train``; training batches after the first): every
      `loss_iters` iterations the loss as ``/metrics/train_loss``; every `hist_iters` iterations a histogram of
      each parameter as ``model/weights/<name>``;
    * ``on_epoch_end`` (reads ``last_metrics``, ``iteration``): each of ``last_metrics`` under
      ``/metrics/<column name>`` (the Recorder's names from ``valid_loss`` on; a missing value is skipped where
      fastai v1 crashed), and the weights of each top-level ``nn.Embedding`` as an embedding;
    * ``on_train_end``: flushes the writer (fastloop addition; fastai v1 relied on the writer's 120 s flush).

    Returns no state keys.  ``_order = 0``: it runs after the Recorder (order -10), whose column names it reads.

    Differences from fastai v1, none of which changes what is logged: writes happen in the calling thread (the
    SummaryWriter already writes files in its own thread; v1's extra queue polled every 0.2 s); the writer does
    not load a training and a validation batch at construction (v1 kept them for its image writers only); and
    the graph is traced with torch's random state saved and restored, so a fit with the writer trains exactly
    as one without it (in v1 both drew from the generator).  ``close()`` closes the writer; `write_graph` is
    fastloop's (default True, as v1).
    ``ranks = 'zero'``: in distributed training only rank 0 writes events.
    """

    ranks = "zero"  # see fastloop.distributed

    def __init__(self, learn: Learner, base_dir: str | Path, name: str, loss_iters: int = 25, hist_iters: int = 500,
                 stats_iters: int = 100, write_graph: bool = True):
        writer_cls = _summary_writer_class()
        super().__init__(learn)
        self.base_dir, self.name, self.loss_iters = base_dir, name, loss_iters
        self.hist_iters, self.stats_iters, self.write_graph = hist_iters, stats_iters, write_graph
        self.tbwriter = writer_cls(str(Path(base_dir) / name))
        self.metrics_root = "/metrics/"
        self.exclude += ["tbwriter"]

    # -- writers
    def _write_graph(self) -> None:
        dl = self.learn.data.dl(DatasetType.Single) or self.learn.data.dl(DatasetType.Valid)
        if dl is None:
            return
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
        try:
            # starting a loader draws a seed from torch's generator: keep the fit's random stream untouched
            with torch.random.fork_rng(devices=devices), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the jit tracer's warnings say nothing about the user's code
                x = next(iter(dl))[0]
                self.tbwriter.add_graph(self.learn.model, x)
        except Exception as e:  # a model the tracer cannot handle must not stop training
            warnings.warn(f"LearnerTensorboardWriter.on_train_begin: could not write the model graph ({e!r}).",
                          stacklevel=2)

    def _write_scalar(self, name: str, scalar_value: Any, iteration: int) -> None:
        "Write one scalar under ``/metrics/<name>``."
        self.tbwriter.add_scalar(tag=self.metrics_root + name, scalar_value=scalar_value, global_step=iteration)

    def _write_training_loss(self, iteration: int, last_loss: torch.Tensor) -> None:
        self._write_scalar("train_loss", float(last_loss), iteration)

    def _write_weight_histograms(self, iteration: int, name: str = "model") -> None:
        for param_name, values in self.learn.model.named_parameters():
            self.tbwriter.add_histogram(tag=f"{name}/weights/{param_name}", values=values.detach().float().cpu(),
                                        global_step=iteration)

    def _write_model_stats(self, iteration: int, name: str = "model_stats") -> None:
        grads = [p.grad.detach().float() for p in self.learn.model.parameters() if p.grad is not None]
        if not grads:
            return
        # one device-to-host copy for the per-tensor numbers
        per_tensor = torch.stack([torch.stack([g.norm(), g.mean(), g.median(), g.max(), g.min()]) for g in grads])
        norms, means, medians, maxs, mins = (per_tensor[:, i].tolist() for i in range(5))
        num_zeros = int(sum((g == 0).sum() for g in grads))
        stats = {"avg_norm": sum(norms) / len(grads), "median_norm": statistics.median(norms),
                 "max_norm": max(norms), "min_norm": min(norms), "num_zeros": num_zeros,
                 "avg_gradient": sum(means) / len(grads), "median_gradient": statistics.median(medians),
                 "max_gradient": max(maxs), "min_gradient": min(mins)}
        for stat, value in stats.items():
            self.tbwriter.add_scalar(tag=f"{name}/gradients/{stat}", scalar_value=value, global_step=iteration)

    def _write_metrics(self, iteration: int, last_metrics: Any, start_idx: int = 2) -> None:
        "Write ``last_metrics`` against the Recorder's column names from `start_idx` (``valid_loss``) on."
        if last_metrics is None:
            return
        for name, value in zip(self.learn.recorder.names[start_idx:], last_metrics):
            if value is not None:
                self._write_scalar(name, float(value), iteration)

    def _write_embedding(self, iteration: int) -> None:
        for name, emb in self.learn.model.named_children():
            if isinstance(emb, nn.Embedding):
                self.tbwriter.add_embedding(emb.weight.detach().cpu(), global_step=iteration, tag=name)

    # -- events
    def on_train_begin(self, **kwargs: Any) -> None:
        "Write the model graph."
        if self.write_graph:
            self._write_graph()

    def on_backward_end(self, iteration: int, train: bool, **kwargs: Any) -> None:
        "Write gradient statistics (the gradients are cleared after the step)."
        if iteration % self.stats_iters == 0:
            self._write_model_stats(iteration)

    def on_batch_end(self, last_loss: torch.Tensor, iteration: int, train: bool, **kwargs: Any) -> None:
        "Write the training loss and the weight histograms."
        if iteration == 0 or not train:
            return
        if iteration % self.loss_iters == 0:
            self._write_training_loss(iteration, last_loss)
        if iteration % self.hist_iters == 0:
            self._write_weight_histograms(iteration)

    def on_epoch_end(self, last_metrics: Any, iteration: int, **kwargs: Any) -> None:
        "Write the validation loss and metrics, and the embeddings."
        self._write_metrics(iteration, last_metrics)
        self._write_embedding(iteration)

    def on_train_end(self, **kwargs: Any) -> None:
        "Flush the event file."
        self.tbwriter.flush()

    def close(self) -> None:
        "Close the writer (no more writes after this)."
        self.tbwriter.close()
