"""`RNNTrainer`: hidden-state reset each epoch, the output triple unpacked for the loss and metrics, AR and TAR."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fastloop.basic_data import DataBunch
from fastloop.basic_train import Learner
from fastloop.callback import Callback
from fastloop.callbacks.rnn import RNNTrainer
from tests.callbacks.v1_scenarios_b import TinyRNN, assert_close, flat_accuracy, flat_ce
from tests.callbacks.v1_scenarios_b import run as run_scenarios

REFERENCE = json.loads((Path(__file__).parent / "v1_reference_b.json").read_text())


def rnn_learner(tmp_path, seq_len: int = 7, **kwargs) -> Learner:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 10, (48, seq_len), generator=g)
    y = (x + 1) % 10
    data = DataBunch.create(TensorDataset(x[:32], y[:32]), TensorDataset(x[32:], y[32:]), bs=8, num_workers=0,
                            device="cpu")
    torch.manual_seed(0)
    learn = Learner(data, TinyRNN(), loss_func=flat_ce, metrics=[flat_accuracy], path=tmp_path, silent=True)
    learn.callbacks.append(RNNTrainer(learn, **kwargs))
    return learn


class Seen(Callback):
    "After RNNTrainer (order 5): the output and the loss it hands on."

    _order = 5

    def __init__(self):
        self.outputs, self.losses = [], []

    def on_loss_begin(self, last_output, **kwargs):
        self.outputs.append(last_output)

    def on_backward_begin(self, last_loss, **kwargs):
        self.losses.append(last_loss.detach().clone())


def test_rnn_trainer_matches_fastai_1_0_61():
    """With AR/TAR (alpha=2, beta=1) and without: losses, metrics, resets, what later callbacks see, final weights
    and get_state() keys are fastai 1.0.61's (v1_reference_b.json)."""
    ours = run_scenarios("fastloop", only=["rnn"])["rnn"]
    assert_close(ours, REFERENCE["rnn"], rel=1e-5, abs_=1e-6, where="rnn")


def test_reset_at_every_epoch_and_the_plain_output_reaches_loss_and_metrics(tmp_path):
    learn = rnn_learner(tmp_path)
    seen = Seen()
    learn.fit(3, 1e-2, callbacks=[seen])
    assert learn.model.resets == 3
    assert all(isinstance(o, torch.Tensor) and o.shape == (8 * 7, 10) for o in seen.outputs)  # validation too
    assert len(seen.outputs) == 3 * (4 + 2)
    assert len(learn.recorder.metrics) == 3
    assert learn.rnn_trainer.not_min == ["raw_out", "out"]
    assert "raw_out" not in learn.rnn_trainer.get_state() and "raw_out" in learn.rnn_trainer.get_state(False)


def test_ar_and_tar_are_added_to_the_loss(tmp_path):
    learn = rnn_learner(tmp_path, alpha=2.0, beta=1.0)
    cb = learn.rnn_trainer
    raw = [torch.randn(8, 7, 5)]
    out = [torch.randn(8, 7, 5)]
    ret = cb.on_loss_begin(last_output=(torch.zeros(3), raw, out))
    assert torch.equal(ret["last_output"], torch.zeros(3)) and cb.raw_out is raw and cb.out is out
    loss = torch.tensor(1.5)
    expected = loss + 2.0 * out[-1].pow(2).mean() + 1.0 * (raw[-1][:, 1:] - raw[-1][:, :-1]).pow(2).mean()
    assert torch.allclose(cb.on_backward_begin(last_loss=loss)["last_loss"], expected)
    assert loss.item() == 1.5  # the terms are added out of place


def test_tar_is_skipped_for_a_single_step_sequence_instead_of_giving_nan(tmp_path):
    learn = rnn_learner(tmp_path, seq_len=1, beta=1.0)
    seen = Seen()
    learn.fit(1, 1e-2, callbacks=[seen])
    assert all(torch.isfinite(v) for v in seen.losses)
    assert all(torch.isfinite(v) for v in learn.recorder.losses)


def test_a_model_without_the_output_triple_gets_a_clear_error(tmp_path):
    learn = Learner(rnn_learner(tmp_path).data, nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10)),
                    loss_func=flat_ce, path=tmp_path, silent=True)
    learn.model.reset = lambda: None
    learn.callbacks.append(RNNTrainer(learn))
    with pytest.raises(TypeError, match=r"RNNTrainer.on_loss_begin: last_output must be the \(output, raw_outputs"):
        learn.fit(1, 1e-2)
