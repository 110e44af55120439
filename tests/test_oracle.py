"""fastloop against a live fastai 1.0.61 (skipped unless FASTLOOP_ORACLE_PYTHON names its interpreter).

Build the oracle as benchmarks/oracle/README.md says, then run
``FASTLOOP_ORACLE_PYTHON=/tmp/oracle/bin/python python -m pytest tests/test_oracle.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORACLE = os.environ.get("FASTLOOP_ORACLE_PYTHON")

pytestmark = pytest.mark.skipif(not ORACLE, reason="set FASTLOOP_ORACLE_PYTHON to a python with fastai 1.0.61")


BAR = re.compile(r"(Epoch \d+/\d+ :)? ?\|[^|]*\| [^\]]*\]")


def without_bars(obj):
    "Drop progress-bar remnants from every captured stdout (fastprogress 1.0 leaves cut-short bars)."
    if isinstance(obj, dict):
        return {k: ([line for line in (BAR.sub("", x).strip() for x in v) if line] if k == "stdout" else
                    without_bars(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [without_bars(o) for o in obj]
    return obj


def dump(python: str, lib: str, out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) if lib == "fastloop" else "")
    subprocess.run([python, str(ROOT / "benchmarks" / "oracle" / "compare_traces.py"), "--lib", lib, "--out",
                    str(out)], check=True, capture_output=True, env=env, cwd=ROOT)
    return json.loads(out.read_text())


def test_every_scenario_matches_fastai_1_0_61_bit_for_bit_apart_from_notes_and_bar_remnants(tmp_path):
    """Traces, kwargs keys, counters, types, Recorder lists, printed tables, errors and final weights are
    identical; the only allowed differences are fastloop's added PEP 678 notes and the progress-bar remnants
    that fastprogress 1.0 leaves in stdout."""
    sys.path.insert(0, str(ROOT / "benchmarks" / "oracle"))
    from diff import walk

    ref = dump(ORACLE, "fastai", tmp_path / "fastai.json")
    cand = dump(sys.executable, "fastloop", tmp_path / "fastloop.json")
    ref.pop("_meta", None)
    cand.pop("_meta", None)
    diffs: list = []
    walk(without_bars(ref), without_bars(cand), "", diffs, 0.0)
    real = [d for d in diffs if not d[0].endswith(".notes (len 0 vs 1; surplus)")]
    assert real == []
    assert len(ref) >= 20
