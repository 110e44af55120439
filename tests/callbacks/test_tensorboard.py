"""`LearnerTensorboardWriter`: event files with v1's tags at v1's iterations, no change to training, and a clear
ImportError without TensorBoard."""

from __future__ import annotations

import builtins
import statistics
import sys
import types
from functools import partial

import pytest
import torch
from torch import nn

from fastloop.callback import Callback
from fastloop.callbacks import tensorboard as tb_module
from fastloop.callbacks.tensorboard import LearnerTensorboardWriter
from fastloop.metrics import accuracy
from tests.conftest import make_learner


def event_data(log_dir):
    "scalars {tag: [(step, value)]}, histogram tags and whether a graph was written, read back from the event files."
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    ea = accumulator.EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0})
    ea.Reload()
    tags = ea.Tags()
    scalars = {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in tags["scalars"]}
    return scalars, tags["histograms"], tags["graph"]


def test_writes_losses_metrics_histograms_and_gradient_stats_at_v1s_iterations(tmp_path):
    pytest.importorskip("tensorboard")
    learn = make_learner(tmp_path, silent=True, metrics=[accuracy])
    learn.callback_fns.append(partial(LearnerTensorboardWriter, base_dir=tmp_path / "tb", name="run", loss_iters=2,
                                      hist_iters=3, stats_iters=2))
    losses = []

    class Keep(Callback):  # the batch_end losses
        def on_batch_end(self, last_loss, train, **kwargs):
            if train:
                losses.append(float(last_loss))

    learn.fit(2, 1e-2, callbacks=[Keep()])
    scalars, hists, graph = event_data(tmp_path / "tb" / "run")
    # train loss at iterations 2, 4, 6 (not 0), the loss of the batch that ends there
    assert [s for s, _ in scalars["/metrics/train_loss"]] == [2, 4, 6]
    assert [v for _, v in scalars["/metrics/train_loss"]] == pytest.approx([losses[2], losses[4], losses[6]])
    # validation loss and metrics at the end of each epoch, at the iteration count (4, 8)
    assert scalars["/metrics/valid_loss"] == [(4, pytest.approx(float(learn.recorder.val_losses[0]))),
                                              (8, pytest.approx(float(learn.recorder.val_losses[1])))]
    assert [v for _, v in scalars["/metrics/accuracy"]] == pytest.approx([float(m[0]) for m in learn.recorder.metrics])
    # gradient statistics at backward_end of iterations 0, 2, 4, 6
    stats = ["avg_norm", "median_norm", "max_norm", "min_norm", "num_zeros", "avg_gradient", "median_gradient",
             "max_gradient", "min_gradient"]
    for stat in stats:
        assert [s for s, _ in scalars[f"model_stats/gradients/{stat}"]] == [0, 2, 4, 6]
    # histograms of every parameter at iterations 3, 6
    assert sorted(hists) == sorted(f"model/weights/{n}" for n, _ in learn.model.named_parameters())
    assert graph


def test_gradient_statistics_are_v1s_formulas(tmp_path):
    pytest.importorskip("tensorboard")
    learn = make_learner(tmp_path, silent=True)
    writer = LearnerTensorboardWriter(learn, base_dir=tmp_path, name="g", write_graph=False)
    torch.manual_seed(0)
    grads = []
    for p in learn.model.parameters():
        g = torch.randn_like(p)
        g[g.abs() < 0.3] = 0.0
        p.grad = g
        grads.append(g)
    writer._write_model_stats(iteration=5)
    writer.tbwriter.flush()
    scalars, _, _ = event_data(tmp_path / "g")
    norms = [g.norm().item() for g in grads]
    expect = {"avg_norm": sum(norms) / 4, "median_norm": statistics.median(norms), "max_norm": max(norms),
              "min_norm": min(norms), "num_zeros": sum(int((g == 0).sum()) for g in grads),
              "avg_gradient": sum(g.mean().item() for g in grads) / 4,
              "median_gradient": statistics.median(g.median().item() for g in grads),
              "max_gradient": max(g.max().item() for g in grads), "min_gradient": min(g.min().item() for g in grads)}
    assert expect["num_zeros"] > 0
    for stat, value in expect.items():
        assert scalars[f"model_stats/gradients/{stat}"] == [(5, pytest.approx(value, rel=1e-6))], stat


def test_the_writer_does_not_change_training(tmp_path):
    pytest.importorskip("tensorboard")
    plain = make_learner(tmp_path, silent=True)
    torch.manual_seed(3)
    plain.fit(2, 1e-2)
    learn = make_learner(tmp_path, silent=True)
    learn.callback_fns.append(partial(LearnerTensorboardWriter, base_dir=tmp_path, name="same", loss_iters=1,
                                      hist_iters=1, stats_iters=1))
    torch.manual_seed(3)
    learn.fit(2, 1e-2)
    assert [float(v) for v in learn.recorder.losses] == [float(v) for v in plain.recorder.losses]
    assert all(torch.equal(a, b) for a, b in zip(learn.model.parameters(), plain.model.parameters()))


def test_embeddings_are_written_and_a_model_that_cannot_be_traced_only_warns(tmp_path):
    pytest.importorskip("tensorboard")

    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.lin = nn.Embedding(5, 3), nn.Linear(4, 2)

        def forward(self, x):
            if torch.jit.is_tracing():
                raise RuntimeError("no tracing")
            return self.lin(x)

    learn = make_learner(tmp_path, silent=True)
    learn.model = Untraceable()
    learn.create_opt(1e-3)
    learn.callbacks.append(LearnerTensorboardWriter(learn, base_dir=tmp_path, name="emb"))
    with pytest.warns(UserWarning, match="could not write the model graph"):
        learn.fit(1, 1e-3)
    config = tmp_path / "emb" / "projector_config.pbtxt"
    assert config.is_file() and "emb" in config.read_text()  # the embedding, under its module name


def test_without_tensorboard_creating_the_writer_names_the_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # "import torch.utils.tensorboard" fails
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    learn = make_learner(tmp_path)
    with pytest.raises(ImportError, match=r"pip install fastloop\[tensorboard\]"):
        LearnerTensorboardWriter(learn, base_dir=tmp_path, name="x")
    assert not hasattr(learn, "learner_tensorboard_writer")  # nothing half-registered on the learner


def test_tensorboardx_is_used_when_only_it_is_installed(tmp_path, monkeypatch):
    made = []

    class FakeWriter:
        def __init__(self, log_dir):
            made.append(log_dir)

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setitem(sys.modules, "tensorboardX", types.SimpleNamespace(SummaryWriter=FakeWriter))
    writer = LearnerTensorboardWriter(make_learner(tmp_path), base_dir=tmp_path, name="x")
    assert isinstance(writer.tbwriter, FakeWriter) and made == [str(tmp_path / "x")]


def test_the_module_imports_without_tensorboard(monkeypatch):
    import importlib

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith(("tensorboard", "torch.utils.tensorboard")):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    reloaded = importlib.reload(tb_module)
    assert reloaded.LearnerTensorboardWriter.__name__ == "LearnerTensorboardWriter"
