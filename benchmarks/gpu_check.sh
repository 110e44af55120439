#!/usr/bin/env bash
# The GPU checks, run once per session on a lent CUDA machine (CI has no GPU; these tests skip there).
#   bash benchmarks/gpu_check.sh OUT_DIR
# Needs torch with CUDA; fastprogress is installed from ./.whl when the machine has no network.
set -uo pipefail
out=${1:-/tmp/gpu_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
if ! python3 -c "import fastprogress" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
nvidia-smi -L | tee "$out/device.txt"
python3 -c "import torch, fastprogress; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'fastprogress', fastprogress.__version__)" | tee -a "$out/device.txt"

# 1. every CUDA-only test (they skip without CUDA)
python3 -m pytest -q -p no:cacheprovider -rs \
  tests/test_cuda.py tests/test_cuda_sync.py \
  tests/callbacks/test_fp16.py::test_cuda_v1_path_trains_with_a_half_model_and_float32_masters \
  tests/callbacks/test_fp16.py::test_cuda_amp_uses_float16_autocast_and_a_gradscaler_and_matches_float32 \
  tests/callbacks/test_fp16.py::test_cuda_amp_overflow_is_reported_through_skip_step \
  tests/callbacks/test_lr_finder.py::test_on_cuda_lr_find_restores_bitwise_and_restore_rng_covers_the_cuda_generator \
  tests/course/test_stage10c.py::test_cuda_float16_mixed_precision_trains \
  tests/course/test_stage06.py::test_cuda_callback_is_device_agnostic \
  tests/test_housekeeping.py::test_purge_export_and_load_learner_on_cuda \
  tests/test_distributed.py::test_the_nccl_path_starts_with_one_gpu \
  2>&1 | tee "$out/cuda_tests.log"

# 2. the GPU benchmark: workload (b) and a small convnet against the raw loop, syncs per batch
timeout 240 python3 benchmarks/bench_gpu.py --out "$out/gpu_bench.md" 2>&1 | tail -40
