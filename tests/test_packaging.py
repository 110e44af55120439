"""The README's set-up commands and .ci/run stay in step; the package imports light."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_exact_test_command_the_readme_gives():
    readme = (ROOT / "README.md").read_text()
    test_cmd = re.search(r"pip install -e \"\.\[dev\]\" && (.+)\n", readme).group(1)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd in [line.strip() for line in ci]


def test_readme_demo_command_runs_the_demo_module():
    readme = (ROOT / "README.md").read_text()
    assert 'pip install -e ".[demo]" && python -m fastloop.demo' in readme
    assert (ROOT / "fastloop" / "demo.py").exists()


def test_importing_fastloop_loads_neither_torch_nor_matplotlib():
    code = "import sys, fastloop; print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_importing_the_engine_does_not_import_matplotlib():
    code = "import sys, fastloop.basic_train, fastloop.callback; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_setup_cfg_keeps_fastprogress_below_1_1_and_torch_satisfied_by_2_13():
    cfg = (ROOT / "setup.cfg").read_text()
    assert "fastprogress>=0.2.1,<1.1" in cfg and "torch>=2.1,<3" in cfg


def test_readme_state_key_table_is_the_engines_table():
    """README's state_dict table row for each key says exactly what fastloop._dispatch.STATE_KEY_TABLE says."""
    from fastloop._dispatch import STATE_KEY_TABLE

    readme = (ROOT / "README.md").read_text()
    for k in STATE_KEY_TABLE:
        assert f"| `{k.name}` | {k.meaning} | `on_{k.first_event}` | {k.written_by} |" in readme
