"""A fastai v1 notebook, ported by changing only its imports: lr_find, recorder.plot(suggestion=True),
fit_one_cycle with EarlyStopping + SaveModel + CSVLogger + mixup, then an interpretation.

``V1_NOTEBOOK`` is the notebook's code as a fastai 1.0.61 user wrote it.  The test replaces ``fastai`` with
``fastloop`` -- nothing else -- runs it, and compares what it printed, the CSV file, the suggested lr, the
reloaded best model and the confusion matrix with what fastai 1.0.61 gave for the same code on the same torch
(CPU, one thread).  To run it on fastai 1.0.61 itself, plain ``TensorDataset``s need ``c``/``classes`` for
fastai's ``ClassificationInterpretation`` and its checkpoints need ``torch.load(weights_only=False)``; those
are set around the call, not in the notebook.
"""

from __future__ import annotations

import contextlib
import io

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from ..callbacks.v1_scenarios_a import console_lines  # noqa: E402

V1_NOTEBOOK = """
from functools import partial

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

from fastai.basic_data import DataBunch
from fastai.basic_train import Learner
from fastai.callbacks import CSVLogger, EarlyStoppingCallback, SaveModelCallback
from fastai.metrics import accuracy, error_rate
from fastai.train import *

torch.manual_seed(42)
np.random.seed(42)
digits = load_digits()
x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
y = torch.tensor(digits.target)
idx = torch.randperm(len(x))
train_ds, valid_ds = TensorDataset(x[idx[:1400]], y[idx[:1400]]), TensorDataset(x[idx[1400:]], y[idx[1400:]])
data = DataBunch.create(train_ds, valid_ds, bs=64, num_workers=0)

model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 10))
learn = Learner(data, model, loss_func=nn.CrossEntropyLoss(), metrics=[accuracy, error_rate], path=PATH,
                callback_fns=[partial(CSVLogger, filename='history')]).mixup()

learn.lr_find()
learn.recorder.plot(suggestion=True)
min_grad_lr = learn.recorder.min_grad_lr

learn.fit_one_cycle(8, max_lr=3e-2, callbacks=[
    EarlyStoppingCallback(learn, monitor='accuracy', min_delta=0.002, patience=1),
    SaveModelCallback(learn, monitor='accuracy', name='best')])
learn.recorder.plot_losses()
history = learn.recorder
interp = ClassificationInterpretation.from_learner(learn)
"""

# What fastai 1.0.61 printed for V1_NOTEBOOK (time column left out: it depends on the machine).
V1_LINES = [
    "epoch     train_loss  valid_loss  accuracy  error_rate",
    "0         2.317413    #na#",
    "1         2.313565    #na#",
    "2         2.261185    #na#",
    "3         2.212935    #na#",
    "4         4.000653    #na#",
    "LR Finder is complete, type {learner_name}.recorder.plot() to see the graph.",
    "Min numerical gradient: 2.29E+00",
    "Min loss divided by 10: 3.02E-02",
    "epoch     train_loss  valid_loss  accuracy  error_rate",
    "0         2.077825    1.336373    0.803526  0.196474",
    "Better model found at epoch 0 with accuracy value: 0.8035264611244202.",
    "1         1.435160    0.317445    0.914358  0.085642",
    "Better model found at epoch 1 with accuracy value: 0.9143576622009277.",
    "2         1.126495    0.279292    0.926952  0.073048",
    "Better model found at epoch 2 with accuracy value: 0.9269521236419678.",
    "3         0.952170    0.230997    0.942065  0.057935",
    "Better model found at epoch 3 with accuracy value: 0.9420654773712158.",
    "4         0.847082    0.211764    0.954660  0.045340",
    "Better model found at epoch 4 with accuracy value: 0.9546599388122559.",
    "5         0.770374    0.199140    0.949622  0.050378",
    "6         0.727964    0.203552    0.949622  0.050378",
    "Epoch 6: early stopping",
]
V1_CSV = [
    "epoch,train_loss,valid_loss,accuracy,error_rate",
    "0,2.077825,1.336373,0.803526,0.196474",
    "1,1.435160,0.317445,0.914358,0.085642",
    "2,1.126495,0.279292,0.926952,0.073048",
    "3,0.952170,0.230997,0.942065,0.057935",
    "4,0.847082,0.211764,0.954660,0.045340",
    "5,0.770374,0.199140,0.949622,0.050378",
    "6,0.727964,0.203552,0.949622,0.050378",
]
V1_MIN_GRAD_LR = 2.290867652767775
V1_PARAM_SUM = -220.59410118505184  # the weights of epoch 4, reloaded by SaveModelCallback at train end
V1_CONFUSION = [[43, 0, 0, 0, 0, 0, 0, 0, 0, 0], [0, 40, 0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 44, 0, 0, 0, 0, 0, 0, 0],
                [0, 0, 1, 34, 0, 3, 0, 0, 0, 1], [0, 0, 0, 0, 39, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 36, 1, 0, 0, 0],
                [0, 1, 0, 0, 0, 0, 36, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 38, 0, 0], [0, 1, 1, 1, 0, 1, 1, 0, 33, 1],
                [0, 1, 0, 1, 0, 1, 0, 1, 0, 36]]


def without_time(line: str) -> str:
    "A table row or header without its last (time) column; other lines unchanged."
    cells = line.split()
    if cells and (cells[-1] == "time" or (":" in cells[-1] and cells[-1].replace(":", "").isdigit())):
        return line[: line.rstrip().rfind(cells[-1])].rstrip()
    return line


def test_v1_notebook_runs_with_imports_changed_only_and_matches_fastai_1_0_61(tmp_path):
    pytest.importorskip("sklearn")
    source = V1_NOTEBOOK.replace("fastai", "fastloop")
    assert source.replace("fastloop", "fastai") == V1_NOTEBOOK  # imports are the only change
    ns = {"PATH": tmp_path}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(source, "v1_notebook", "exec"), ns)
    finally:
        torch.set_num_threads(threads)
    assert [without_time(line) for line in console_lines(out.getvalue())] == V1_LINES
    csv_lines = (tmp_path / "history.csv").read_text().splitlines()
    assert [line.rsplit(",", 1)[0] for line in csv_lines] == V1_CSV
    assert ns["min_grad_lr"] == pytest.approx(V1_MIN_GRAD_LR, rel=1e-9)
    learn = ns["learn"]
    param_sum = float(sum(p.detach().double().sum() for p in learn.model.parameters()))
    assert param_sum == pytest.approx(V1_PARAM_SUM, rel=1e-6)
    assert ns["interp"].confusion_matrix().tolist() == V1_CONFUSION
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["best.pth", "tmp.pth"]
    assert learn.loss_func.__class__.__name__ == "CrossEntropyLoss"  # mixup put the original loss back
