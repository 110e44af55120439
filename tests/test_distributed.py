"""fastloop.distributed: DDP under torchrun (2 CPU processes, gloo), rank-aware callbacks, no deadlocks.

The multi-process tests launch `tests/_distributed_script.py` with ``python -m fastloop.launch --nproc 2``
under a timeout, so a hang fails the test instead of hanging CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from fastloop import launch
from fastloop.callback import AverageMetric, Callback, CallbackHandler
from fastloop.distributed import (
    CollectiveGuard,
    CollectiveInRankZeroCallbackError,
    DistributedRecorder,
    DistributedTrainer,
    ParallelTrainer,
    ShardSampler,
    read_metrics,
    setup_distrib,
)
from fastloop.metrics import ConfusionMatrix, accuracy
from tests import _distributed_script as script
from tests.conftest import make_learner

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "_distributed_script.py"


def _launch(scenario: str, out: Path, nproc: int = 2, timeout: int = 90) -> subprocess.CompletedProcess:
    pythonpath = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = dict(os.environ, PYTHONPATH=pythonpath, OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "fastloop.launch", f"--nproc={nproc}", str(SCRIPT), scenario, str(out)]
    try:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired as e:  # a deadlock: fail, do not hang
        pytest.fail(f"{scenario} did not finish in {timeout}s (deadlock?)\n{e.stdout}\n{e.stderr}")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    "One torchrun launch of the main scenario on 2 CPU processes; what each rank saw."
    out = tmp_path_factory.mktemp("ddp")
    proc = _launch("main", out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    weights = [torch.load(out / f"weights_rank{r}.pt") for r in (0, 1)]
    return {"out": out, "ranks": ranks, "weights": weights}


@pytest.fixture(scope="module")
def reference() -> Any:
    "The same 2 epochs in one process on the combined batch (bs 16 = 2 ranks x 8), same sample order."
    return script.reference_fit(2, 1e-2)


# ------------------------------------------------------------------------------------------ two processes
def test_both_ranks_use_gloo_on_the_cpu_and_end_with_identical_weights(two_ranks: dict) -> None:
    assert [r["backend"] for r in two_ranks["ranks"]] == ["gloo", "gloo"]
    w0, w1 = two_ranks["weights"]
    assert all(torch.equal(w0[k], w1[k]) for k in w0)


def test_ddp_equals_single_process_training_on_the_combined_batch(two_ranks: dict, reference: Any) -> None:
    ref = reference.model.state_dict()
    for k, v in two_ranks["weights"][0].items():
        torch.testing.assert_close(v, ref[k], rtol=1e-5, atol=1e-6)


def test_each_training_item_is_seen_once_per_epoch_across_ranks_in_a_new_order_each_epoch(two_ranks: dict) -> None:
    r0, r1 = (r["ids"] for r in two_ranks["ranks"])
    for epoch in range(2):
        assert sorted(r0[epoch] + r1[epoch]) == list(range(script.N_TRAIN))
    assert r0[0] != r0[1]  # set_epoch reshuffled


def test_validation_over_uneven_shards_equals_the_single_process_numbers(two_ranks: dict, reference: Any) -> None:
    # 33 validation items: 17 on rank 0, 16 on rank 1; no padded duplicates, no average of averages
    ref_losses = [float(v) for v in reference.recorder.val_losses]
    ref_metrics = [[float(m) for m in row] for row in reference.recorder.metrics]
    for r in two_ranks["ranks"]:
        np.testing.assert_allclose(r["val_losses"], ref_losses, rtol=1e-5)
        np.testing.assert_allclose(r["metrics"], ref_metrics, rtol=1e-5)


def test_a_flag_set_on_one_rank_stops_every_rank_at_the_same_point(two_ranks: dict) -> None:
    # rank 0 alone ends epoch 0 after its 3rd batch; rank 1 alone stops the training after epoch 1 (of 6)
    assert [r["stop_batches"] for r in two_ranks["ranks"]] == [[3, 4], [3, 4]]


def test_only_rank_zero_prints_the_bar_and_the_table(two_ranks: dict) -> None:
    out0, out1 = (r["stdout"] for r in two_ranks["ranks"])
    assert "epoch     train_loss  valid_loss  accuracy  time" in out0
    assert out1 == ""


def test_a_rank_zero_callback_writes_its_files_on_rank_zero_only(two_ranks: dict) -> None:
    names = sorted(p.name for p in two_ranks["out"].glob("written_by_*"))
    assert names == ["written_by_rank0_epoch0", "written_by_rank0_epoch1"]


def test_save_on_rank_zero_then_load_everywhere_does_not_hang(two_ranks: dict) -> None:
    assert all(r["loaded"] for r in two_ranks["ranks"])
    assert (two_ranks["out"] / "models" / "shared.pth").exists()


def test_the_model_is_unwrapped_after_fit_and_each_rank_dumps_its_recorder(two_ranks: dict) -> None:
    assert [r["model_is_unwrapped"] for r in two_ranks["ranks"]] == ["Sequential", "Sequential"]
    losses, metrics = read_metrics(two_ranks["out"] / "tmp", 2)
    assert metrics.shape[-1] == 1 and losses.ndim == 1


def test_a_collective_in_a_rank_zero_callback_fails_fast_in_debug_mode(tmp_path: Path) -> None:
    proc = _launch("collective_in_rank_zero_callback", tmp_path, timeout=90)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "CollectiveInRankZeroCallbackError" in text
    assert "ReducesInRankZeroCallback.on_epoch_end calls torch.distributed.all_reduce" in text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (NCCL)")
def test_the_nccl_path_starts_with_one_gpu(tmp_path: Path) -> None:
    proc = _launch("main", tmp_path, nproc=1, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads((tmp_path / "rank0.json").read_text())
    assert r["backend"] == "nccl" and r["world"] == 1
    assert sorted(r["ids"][0]) == list(range(script.N_TRAIN))
    assert "train_loss" in r["stdout"]


# ------------------------------------------------------------------------------------------- one process
def test_shard_sampler_splits_without_padding_and_refuses_empty_shards() -> None:
    assert [list(ShardSampler(5, r, 2)) for r in (0, 1)] == [[0, 2, 4], [1, 3]]
    assert len(ShardSampler(5, 1, 2)) == 2
    with pytest.raises(ValueError, match="3 validation items cannot be split over 4 ranks"):
        ShardSampler(3, 0, 4)


def test_average_metric_sums_value_and_count_over_shards() -> None:
    # shard A: 3 items with accuracy 1/3; shard B: 1 item with accuracy 1 -> 2/4 overall (not (1/3 + 1) / 2)
    shards = []
    for out, targ in ((torch.tensor([[1.0, 0], [1, 0], [0, 1]]), torch.tensor([0, 1, 0])),
                      (torch.tensor([[0.0, 1]]), torch.tensor([1]))):
        m = AverageMetric(accuracy)
        m.on_epoch_begin()
        m.on_batch_end(out, targ)
        shards.append(m)
    a, b = shards
    a.sync_shards(lambda t: t + torch.cat([torch.as_tensor(b.val, dtype=torch.float64).reshape(-1),
                                           torch.tensor([float(b.count)], dtype=torch.float64)]))
    assert a.count == 4
    assert float(a.on_epoch_end([0.0])["last_metrics"][1]) == pytest.approx(0.5)


def test_average_metric_no_longer_reduces_per_batch_when_world_size_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    # fastai v1 all-reduced every batch when WORLD_SIZE was set (a hang with uneven shards)
    monkeypatch.setenv("WORLD_SIZE", "2")
    m = AverageMetric(accuracy)
    m.on_epoch_begin()
    m.on_batch_end(torch.tensor([[1.0, 0]]), torch.tensor([0]))
    assert float(m.on_epoch_end([0.0])["last_metrics"][1]) == 1.0


def test_confusion_matrix_sums_its_counts_over_shards() -> None:
    cm = ConfusionMatrix()
    cm.on_train_begin()
    cm.on_epoch_begin()
    cm.on_batch_end(torch.tensor([[1.0, 0], [0, 1]]), torch.tensor([0, 0]))
    before = cm.cm.clone()
    cm.sync_shards(lambda t: t * 2)
    assert torch.equal(cm.cm, before * 2)


class _Reducer(Callback):
    "Stands in for DistributedTrainer: another rank always wants to stop/skip."

    def __init__(self) -> None:
        self.calls: list[bool] = []

    def reduce_flag(self, value: Any) -> bool:
        self.calls.append(bool(value))
        return True


def test_the_handler_reduces_each_flag_where_the_loop_reads_it() -> None:
    red = _Reducer()
    h = CallbackHandler([red])
    h.on_train_begin(1, None, None)
    h.on_epoch_begin()
    h.on_batch_begin(torch.zeros(1), torch.zeros(1))
    assert h.on_batch_end(torch.tensor(0.0)) is True and h.state_dict["stop_epoch"] is True
    assert h.skip_validate is True
    assert h.on_epoch_end(None) is True and h.state_dict["stop_training"] is True
    assert red.calls == [False, False, False]


def test_validation_batches_do_not_reduce_stop_epoch() -> None:
    # validation shards may have different numbers of batches: a collective per batch would hang
    red = _Reducer()
    h = CallbackHandler([red])
    h.on_train_begin(1, None, None)
    h.on_epoch_begin()
    h.on_batch_begin(torch.zeros(1), torch.zeros(1), train=False)
    assert h.on_batch_end(torch.tensor(0.0)) is False and red.calls == []


class _Logger(Callback):
    ranks = "zero"

    def __init__(self) -> None:
        self.epochs = 0

    def on_epoch_end(self, **kwargs: Any) -> None:
        self.epochs += 1


def test_a_rank_zero_callback_is_skipped_on_other_ranks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    logger = _Logger()
    monkeypatch.setenv("RANK", "1")
    make_learner(tmp_path).fit(1, callbacks=[logger])
    assert logger.epochs == 0
    monkeypatch.setenv("RANK", "0")
    make_learner(tmp_path).fit(1, callbacks=[logger])
    assert logger.epochs == 1


def test_an_unknown_ranks_value_is_refused_naming_the_callback() -> None:
    class Bad(Callback):
        ranks = "first"

    with pytest.raises(ValueError, match="Bad.ranks is 'first'"):
        CallbackHandler([Bad()])


def test_bars_and_table_are_silent_on_other_ranks(monkeypatch: pytest.MonkeyPatch, capsys: Any,
                                                    tmp_path: Path) -> None:
    monkeypatch.setenv("RANK", "1")
    learn = make_learner(tmp_path)
    learn.fit(2)
    assert capsys.readouterr().out == ""
    assert len(learn.recorder.losses) == 8  # the Recorder still records


def test_collective_guard_turns_a_hang_into_an_error_naming_callback_event_and_collective() -> None:
    class Reduces(Callback):
        ranks = "zero"

        def on_epoch_begin(self, **kwargs: Any) -> None:
            dist.all_reduce(torch.zeros(1))

    original = dist.all_reduce
    h = CallbackHandler([Reduces(), CollectiveGuard()])
    h.on_train_begin(1, None, None)
    with pytest.raises(CollectiveInRankZeroCallbackError, match="Reduces.on_epoch_begin calls torch.distributed"):
        h.on_epoch_begin()
    assert dist.all_reduce is original  # restored


def test_distributed_trainer_without_a_process_group_says_how_to_launch(tmp_path: Path) -> None:
    learn = make_learner(tmp_path)
    learn.callbacks.append(DistributedTrainer(learn, 0))
    with pytest.raises(RuntimeError, match="launch the script with torchrun"):
        learn.fit(1)
    assert isinstance(learn.model, nn.Sequential)


def test_to_distributed_and_to_parallel_append_v1s_callbacks(tmp_path: Path) -> None:
    learn = make_learner(tmp_path).to_distributed(0)
    assert [type(cb) for cb in learn.callbacks] == [DistributedTrainer, DistributedRecorder]
    learn = make_learner(tmp_path).to_parallel()
    assert [type(cb) for cb in learn.callbacks] == [ParallelTrainer]


def test_parallel_trainer_wraps_for_the_fit_and_unwraps_after(tmp_path: Path) -> None:
    learn = make_learner(tmp_path).to_parallel()
    seen = []

    class Look(Callback):
        def on_epoch_begin(self, **kwargs: Any) -> None:
            seen.append(type(learn.model).__name__)

    learn.fit(1, callbacks=[Look()])
    assert seen == ["DataParallel"] and isinstance(learn.model, nn.Sequential)


def test_setup_distrib_without_launcher_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    assert setup_distrib() is None
    assert not dist.is_initialized()


def test_launch_builds_torchrun_arguments_like_v1s_launcher() -> None:
    args, env = launch.torchrun_args(["--nproc", "2", "train.py", "--epochs", "3"], n_gpus=0)
    assert args == ["--standalone", "--nproc_per_node=2", "train.py", "--epochs", "3"] and env == {}
    args, env = launch.torchrun_args(["--gpus", "01", "train.py"], n_gpus=4)
    assert args == ["--standalone", "--nproc_per_node=2", "train.py"] and env == {"CUDA_VISIBLE_DEVICES": "0,1"}
    args, _ = launch.torchrun_args(["--nnodes=2", "--node_rank=1", "--master_addr=10.0.0.1", "train.py"], n_gpus=8)
    assert args == ["--nproc_per_node=8", "--nnodes=2", "--node_rank=1", "--master_addr=10.0.0.1", "train.py"]


def test_the_csv_logger_writes_on_rank_zero_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from fastloop.callbacks.csv_logger import CSVLogger

    monkeypatch.setenv("RANK", "1")
    learn = make_learner(tmp_path, callback_fns=[CSVLogger])
    learn.fit(1)
    assert not (tmp_path / "history.csv").exists()
    monkeypatch.setenv("RANK", "0")
    learn.fit(1)
    assert (tmp_path / "history.csv").read_text().startswith("epoch,train_loss,valid_loss")
