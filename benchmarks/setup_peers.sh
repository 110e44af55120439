#!/usr/bin/env bash
# Build the virtualenv that benchmarks/bench_peers.py runs in: fastloop's own dependencies (from the Python
# that runs this script, via --system-site-packages), plus fastai 1.0.61 and pytorch-ignite as *peers*.
#
#   bash benchmarks/setup_peers.sh               # builds /tmp/peers
#   bash benchmarks/setup_peers.sh /path/to/venv
#   /tmp/peers/bin/python benchmarks/bench_peers.py --quick
#
# Notes
# * fastai 1.0.61 is installed with --no-deps: its pinned requirements (spacy, bottleneck, an old torch...) are
#   not needed by the engine modules the benchmark imports, and would pull a different torch.  Its setup.py
#   needs `setuptools<81` (pkg_resources) at import time of some modules, so that is installed first.
# * fastai 1.0.61's engine needs pandas, scipy, pyyaml, requests, packaging, matplotlib and fastprogress; the
#   ones the base Python lacks are installed here (fastprogress 1.0.x from the base Python is fine for it).
# * pytorch-ignite is pure Python (needs torch and packaging): --no-deps keeps the base Python's torch; its
#   ProgressBar needs tqdm.
# * Nothing is installed into the base Python: the peers live only in the virtualenv.
set -euo pipefail
VENV="${1:-/tmp/peers}"
PY="${PYTHON:-python3}"
"$PY" -m venv --system-site-packages "$VENV"
"$VENV/bin/pip" install -q "setuptools<81"
for mod_pkg in pandas:pandas scipy:scipy yaml:pyyaml requests:requests packaging:packaging matplotlib:matplotlib; do
  mod="${mod_pkg%%:*}"; pkg="${mod_pkg##*:}"
  "$VENV/bin/python" -c "import $mod" 2>/dev/null || "$VENV/bin/pip" install -q "$pkg"
done
"$VENV/bin/pip" install -q --no-deps fastai==1.0.61 pytorch-ignite tqdm  # tqdm: ignite's ProgressBar
"$VENV/bin/python" - <<'PY'
import torch, fastai, ignite, fastprogress
from fastai.basic_train import Learner  # noqa: F401  (the engine imports cleanly)
print(f"peers ready: torch {torch.__version__}, fastai {fastai.__version__}, ignite {ignite.__version__}, "
      f"fastprogress {fastprogress.__version__}")
PY
