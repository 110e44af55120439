"""The loop on a CUDA device (skipped without one): where tensors live at each event, and save/load across devices."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fastloop.basic_data import DataBunch
from fastloop.basic_train import Learner
from fastloop.callback import Callback

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def cuda_learner(tmp_path) -> Learner:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 4, generator=g)
    y = (x.sum(1) > 0).long()
    data = DataBunch.create(TensorDataset(x[:64], y[:64]), TensorDataset(x[64:], y[64:]), bs=16, num_workers=0,
                            device="cuda")
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    return Learner(data, model, loss_func=nn.CrossEntropyLoss(), path=tmp_path)


def test_batches_model_and_outputs_are_on_the_gpu_while_losses_for_callbacks_are_on_the_cpu(tmp_path):
    seen = {}

    class Where(Callback):
        def on_loss_begin(self, last_input, last_output, **kwargs):
            seen["input"], seen["output"] = last_input.device.type, last_output.device.type

        def on_backward_begin(self, last_loss, smooth_loss, **kwargs):
            seen["loss"], seen["smooth"] = last_loss.device.type, smooth_loss.device.type

        def on_batch_end(self, last_loss, **kwargs):
            seen["batch_end_loss"] = last_loss.device.type

    learn = cuda_learner(tmp_path)
    learn.fit(1, 1e-2, callbacks=[Where()])
    assert next(learn.model.parameters()).is_cuda
    assert seen == {"input": "cuda", "output": "cuda", "loss": "cuda", "smooth": "cpu", "batch_end_loss": "cpu"}


def test_a_gpu_checkpoint_loads_on_the_cpu(tmp_path):
    learn = cuda_learner(tmp_path)
    learn.fit(1, 1e-2)
    learn.save("gpu")
    state = torch.load(tmp_path / "models" / "gpu.pth", map_location="cpu")
    assert all(v.device.type == "cpu" for v in state["model"].values())
