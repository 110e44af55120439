"""fastai v1 callbacks from the course's v1 notebooks, on fastai v1's Learner (spec §6: 16, 17).

(Spec §6 test 14, the CycleGAN trainer, is ported in tests/ported/test_cyclegan_notebook.py; test 15,
TeacherForcing (as written, in helpers.py), runs in the course Learner in test_adapter.py and in v1's
Learner below.)
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch.nn.functional as F
from torch import nn

from fastloop.callback import Callback
from fastloop.torch_core import add_metrics

from ..conftest import make_learner
from .helpers import Seq2Seq, TeacherForcing


class CorpusBLEULike(Callback):
    """The translation notebook's metric structure: counts over validation batches, a score at epoch end.

    (The n-gram counting is replaced by exact-match counting: what is tested is the v1 metric plumbing.)
    """

    def __init__(self, vocab_sz):
        self.vocab_sz = vocab_sz
        self.name = "bleu"
        self.batches = Counter()

    def on_epoch_begin(self, **kwargs):
        self.pred_len, self.targ_len, self.corrects = 0, 0, 0

    def on_batch_end(self, last_output, last_target, train, **kwargs):
        self.batches[train] += 1
        pred = last_output.argmax(dim=-1)
        self.pred_len += pred.numel()
        self.targ_len += last_target.numel()
        self.corrects += int((pred == last_target).sum())

    def on_epoch_end(self, last_metrics, **kwargs):
        return add_metrics(last_metrics, self.corrects / max(self.pred_len, 1))


def test_corpus_bleu_as_a_metric_sees_validation_batches_only_and_adds_a_column(capsys):
    bleu = CorpusBLEULike(vocab_sz=2)
    learn = make_learner(n_train=32, n_valid=16, bs=8, metrics=[bleu])
    learn.fit(2, 1e-2)
    assert bleu.batches == Counter({False: 4})  # 2 epochs x 2 validation batches; never a training batch
    assert learn.recorder.names[-2:] == ["bleu", "time"]
    assert len(learn.recorder.metrics) == 2 and 0 <= learn.recorder.metrics[-1][0] <= 1


def test_teacher_forcing_in_fastai_v1s_learner():
    learn = make_learner(n_train=16, n_valid=8, bs=8)
    model = learn.model = Seq2Seq()
    learn.fit(2, 1e-3, callbacks=[TeacherForcing(learn, end_epoch=2)])
    assert model.calls == [(True, 1.0)] * 2 + [(False, 1.0)] + [(True, 0.5)] * 2 + [(False, 0.5)]


def test_loss_metrics_style_stateful_loss_adds_columns():
    lm = pytest.importorskip("fastloop.callbacks.loss_metrics")

    class FeatureLoss(nn.Module):
        "A stateful loss exposing metric_names and metrics, as the superres notebook's."

        def __init__(self):
            super().__init__()
            self.metric_names = ["pixel", "extra"]

        def forward(self, out, target):
            pixel = F.cross_entropy(out, target)
            extra = out.pow(2).mean() * 0.01
            self.metrics = dict(zip(self.metric_names, [pixel, extra]))
            return pixel + extra

    learn = make_learner(n_train=16, n_valid=8, bs=8, loss_func=FeatureLoss(), callback_fns=[lm.LossMetrics])
    learn.fit(1, 1e-3)
    assert learn.recorder.names[3:5] == ["pixel", "extra"]
    assert len(learn.recorder.metrics[0]) == 2
