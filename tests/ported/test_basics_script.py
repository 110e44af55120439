"""A fastai v1 script that starts with ``from fastai.basics import *``, ported by changing only that line.

It trains ``simple_cnn`` with ``CrossEntropyFlat``, ``accuracy`` and ``callbacks.CSVLogger`` -- names it gets
from the star import alone (``torch``, ``TensorDataset``, ``partial``, ``DataBunch``, ``Learner``...).
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ORACLE = os.environ.get("FASTLOOP_ORACLE_PYTHON")

V1_SCRIPT = """\
from fastai.basics import *

torch.manual_seed(42)
x = torch.randn(96, 1, 8, 8)
y = (x.mean((1, 2, 3)) > 0).long()
data = DataBunch.create(TensorDataset(x[:64], y[:64]), TensorDataset(x[64:], y[64:]), bs=16, num_workers=0,
                        device=torch.device('cpu'))
learn = Learner(data, simple_cnn((1, 8, 16, 2), bn=True), loss_func=CrossEntropyFlat(), metrics=[accuracy],
                callback_fns=[partial(callbacks.CSVLogger, filename='history')])
learn.fit(3, 1e-2)
print('RESULT', [float(l) for l in learn.recorder.val_losses], [float(m[0]) for m in learn.recorder.metrics])
print('WEIGHT', float(learn.model[0][0].weight.detach().sum()))
"""

#: What the script printed under a live fastai 1.0.61 on the same torch (CPU): validation losses, accuracies,
#: and the sum of the first conv's weights after training.
V1_VAL_LOSSES = [0.7735661864280701, 0.801207423210144, 0.8635023236274719]
V1_ACCURACY = [0.40625, 0.46875, 0.4375]
V1_WEIGHT_SUM = -7.473546981811523


def ported() -> str:
    source = V1_SCRIPT.replace("from fastai.basics import *", "from fastloop.basics import *")
    assert source.count("fastai") == 0  # the only change
    return source


def _results(stdout: str) -> tuple[list[float], list[float], float]:
    result = re.search(r"RESULT \[(.*)\] \[(.*)\]", stdout)
    weight = re.search(r"WEIGHT (\S+)", stdout)
    assert result and weight, stdout
    losses, accs = ([float(v) for v in group.split(",")] for group in result.groups())
    return losses, accs, float(weight.group(1))


def test_the_ported_script_trains_and_logs_as_under_fastai(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(ported(), "ported_script.py", "exec", dont_inherit=True), namespace)
    out = capsys.readouterr().out
    assert re.search(r"epoch\s+train_loss\s+valid_loss\s+accuracy\s+time", out)
    losses, accs, weight = _results(out)
    assert losses == pytest.approx(V1_VAL_LOSSES, rel=1e-5)
    assert accs == pytest.approx(V1_ACCURACY)
    assert weight == pytest.approx(V1_WEIGHT_SUM, rel=1e-5)
    # CSVLogger wrote the table the Recorder printed (path/history.csv, path='.')
    with open(tmp_path / "history.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "train_loss", "valid_loss", "accuracy", "time"]
    recorder = namespace["learn"].recorder
    assert [float(r[2]) for r in rows[1:]] == pytest.approx([float(v) for v in recorder.val_losses], abs=1e-6)
    assert [float(r[3]) for r in rows[1:]] == pytest.approx(V1_ACCURACY, abs=1e-6)


@pytest.mark.skipif(not ORACLE, reason="set FASTLOOP_ORACLE_PYTHON to a python with fastai 1.0.61")
def test_the_ported_script_matches_a_live_fastai_bit_for_bit(tmp_path):
    (tmp_path / "v1").mkdir()
    (tmp_path / "port").mkdir()
    (tmp_path / "v1" / "script.py").write_text(V1_SCRIPT)
    (tmp_path / "port" / "script.py").write_text(ported())
    ref = subprocess.run([ORACLE, "script.py"], capture_output=True, text=True, cwd=tmp_path / "v1",
                         env=dict(os.environ, PYTHONPATH=""), timeout=300)
    cand = subprocess.run([sys.executable, "script.py"], capture_output=True, text=True, cwd=tmp_path / "port",
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    assert ref.returncode == 0 and cand.returncode == 0, ref.stderr + cand.stderr
    assert _results(cand.stdout) == _results(ref.stdout)

    def table(folder: str) -> list[list[str]]:
        with open(tmp_path / folder / "history.csv") as f:
            return [row[:-1] for row in csv.reader(f)]  # without the time column

    assert table("port") == table("v1")
