"""The per-notebook namespaces: ``from fastloop.course.nb_XX import *`` gives exp.nb_XX's names and meanings."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from fastloop.course import stage04, stage05, stage05b, stage08, stage09, stage09b, stage09c, stage10b

NOTEBOOKS = ["04", "05", "05b", "06", "07", "07a", "08", "09", "09b", "09c", "10", "10b", "10c", "11", "11a", "12",
             "12a"]


def _ns(nb: str) -> dict:
    ns: dict = {}
    exec(f"from fastloop.course.nb_{nb} import *", ns)
    return ns


@pytest.mark.parametrize("nb", NOTEBOOKS)
def test_every_name_in_all_exists_and_later_namespaces_include_earlier_names(nb):
    mod = importlib.import_module(f"fastloop.course.nb_{nb}")
    assert all(hasattr(mod, n) for n in mod.__all__)
    i = NOTEBOOKS.index(nb)
    if i:
        prev = importlib.import_module(f"fastloop.course.nb_{NOTEBOOKS[i - 1]}")
        assert set(prev.__all__) <= set(mod.__all__)


def test_names_keep_their_notebooks_meaning():
    assert _ns("05b")["Learner"] is stage04.Learner and _ns("05b")["Runner"] is stage05b.Runner
    assert _ns("04")["Runner"] is stage04.Runner and "CancelTrainException" not in _ns("05")
    assert _ns("09b")["Learner"] is stage09b.Learner and _ns("12a")["Learner"] is stage09b.Learner
    assert _ns("04")["AvgStatsCallback"] is stage04.AvgStatsCallback
    assert _ns("09b")["AvgStatsCallback"] is stage09b.AvgStatsCallback
    assert _ns("09c")["AvgStatsCallback"] is stage09c.AvgStatsCallback
    assert _ns("05")["Recorder"] is stage05.Recorder and _ns("09")["Recorder"] is stage09.Recorder
    assert _ns("05b")["LR_Find"] is stage05b.LR_Find and _ns("09")["LR_Find"] is stage09.LR_Find
    assert _ns("07")["DataBunch"] is stage04.DataBunch and _ns("08")["DataBunch"] is stage08.DataBunch
    assert _ns("07a")["get_batch"].__module__.endswith("stage06")
    assert _ns("11")["get_batch"].__module__.endswith("stage11")
    assert _ns("10b")["MixUp"] is stage10b.MixUp
    ns = _ns("04")
    assert {"torch", "nn", "F", "optim", "tensor", "partial"} <= set(ns)  # what exp.nb_04's star import brought


def test_package_namespace_is_nb_12a():
    import fastloop.course as course
    from fastloop.course import nb_12a

    assert course.__all__ == nb_12a.__all__
    ns: dict = {}
    exec("from fastloop.course import *", ns)
    for name in ("Learner", "Runner", "Callback", "RNNTrainer", "DebugCallback", "sched_1cycle", "MixedPrecision",
                 "ProgressCallback", "cb_types", "CancelTrainException", "get_learner", "get_runner"):
        assert name in ns


def test_importing_every_notebook_module_does_not_initialise_cuda():
    code = ("import torch\n"
            + "".join(f"import fastloop.course.nb_{nb}\n" for nb in NOTEBOOKS)
            + "x = fastloop.course.nb_08.norm_imagenette(torch.zeros(1, 3, 2, 2))\n"
            + "assert x.device.type == 'cpu'\n"
            + "assert not torch.cuda.is_initialized()\n"
            + "import sys; assert 'apex' not in sys.modules and 'spacy' not in sys.modules\n"
            + "assert 'matplotlib.pyplot' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)
