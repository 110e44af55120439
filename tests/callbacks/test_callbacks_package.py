"""``fastloop.callbacks``: v1's names at v1's paths, light to import, tensorboard left out."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# fastai 1.0.61's ``fastai.callbacks.__all__`` (OverSamplingCallback, which needs ItemLists, is not in scope)
V1_NAMES = ["ActivationStats", "CSVLogger", "EarlyStoppingCallback", "FlatCosAnnealScheduler", "GeneralScheduler",
            "Hook", "HookCallback", "Hooks", "LRFinder", "LossMetrics", "MixUpCallback", "MixUpLoss", "MixedPrecision",
            "OneCycleScheduler", "RNNTrainer", "ReduceLROnPlateauCallback", "SaveModelCallback",
            "TerminateOnNaNCallback", "TrackEpochCallback", "TrackerCallback", "TrainingPhase", "dummy_batch",
            "dummy_eval", "hook_output", "hook_outputs", "model_sizes", "model_summary", "num_features_model"]


def test_star_import_gives_v1s_callback_names():
    ns: dict = {}
    exec("from fastloop.callbacks import *", ns)
    missing = [n for n in V1_NAMES if n not in ns]
    assert not missing
    assert "StopAfterNBatches" in ns and "LearnerTensorboardWriter" not in ns


def test_submodules_are_reachable_as_attributes_with_v1s_module_names():
    import fastloop.callbacks as cbs

    for name in ("lr_finder", "one_cycle", "general_sched", "tracker", "csv_logger", "misc", "loss_metrics",
                 "flat_cos_anneal", "fp16", "mixup", "hooks", "rnn"):
        assert isinstance(getattr(cbs, name), types.ModuleType), name
    assert cbs.CSVLogger is cbs.csv_logger.CSVLogger


def test_importing_the_callbacks_imports_neither_matplotlib_nor_tensorboard():
    code = ("import sys, fastloop.callbacks; "
            "print('matplotlib' in sys.modules, 'fastloop.callbacks.tensorboard' in sys.modules, "
            "'tensorboard' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


def test_a_callback_module_can_be_the_first_import():
    """No import cycle whichever module a script imports first (basic_train imports train at its end)."""
    for first in ("fastloop.callbacks.tracker", "fastloop.train", "fastloop.callbacks"):
        code = f"import {first}; from fastloop.basic_train import Learner; assert Learner.fit_one_cycle"
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)


def test_learner_callbacks_register_under_v1s_names_with_v1s_orders(tmp_path):
    """Names as fastai 1.0.61's camel2snake gives them (checked on the live oracle); _order per spec §6.2."""
    from fastloop.callbacks import (
        CSVLogger,
        EarlyStoppingCallback,
        GeneralScheduler,
        LossMetrics,
        LRFinder,
        OneCycleScheduler,
        ReduceLROnPlateauCallback,
        SaveModelCallback,
        TrackEpochCallback,
        TrackerCallback,
        TrainingPhase,
    )
    from fastloop.train import AccumulateScheduler, BnFreeze, GradientClipping, ShowGraph

    from ..conftest import make_learner

    learn = make_learner(tmp_path)
    expected = {
        LRFinder: ("lr_finder", 0), OneCycleScheduler: ("one_cycle_scheduler", 0),
        GeneralScheduler: ("general_scheduler", 0), TrackerCallback: ("tracker_callback", 0),
        EarlyStoppingCallback: ("early_stopping_callback", 0), SaveModelCallback: ("save_model_callback", 0),
        ReduceLROnPlateauCallback: ("reduce_lr_on_plateau_callback", 0),
        TrackEpochCallback: ("track_epoch_callback", -20), CSVLogger: ("csv_logger", 0),
        LossMetrics: ("loss_metrics", -20), ShowGraph: ("show_graph", 0), BnFreeze: ("bn_freeze", 0),
        GradientClipping: ("gradient_clipping", 0), AccumulateScheduler: ("accumulate_scheduler", 0),
    }
    extra = {OneCycleScheduler: (1e-2,), GeneralScheduler: ([TrainingPhase(1)],)}
    for cls, (name, order) in expected.items():
        cb = cls(learn, *extra.get(cls, ()))
        assert getattr(learn, name) is cb and cls._order == order, cls
