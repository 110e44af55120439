"""Every notebook in notebooks/ runs top to bottom on a fresh kernel, and is saved with its outputs.

The notebooks are executed with nbclient on the ``python3`` kernel (ipykernel, in the ``dev`` and ``notebooks``
extras), with this checkout first on ``PYTHONPATH``, ``MPLBACKEND=Agg`` and ``OMP_NUM_THREADS=1``.  A cell
that raises fails the test.
Each notebook is meant to run in well under 30 s on an idle CPU machine; the limits below only catch a runaway.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 120
NOTEBOOK_LIMIT_S = 180


def test_the_teaching_notebooks_are_there_and_listed_in_the_notebooks_readme():
    names = [p.name for p in NOTEBOOKS]
    assert {"01_state_dict.ipynb", "02_porting_fastai_v1_callbacks.ipynb",
            "03_smooth_loss_and_recorder.ipynb"} <= set(names)
    readme = (NB_DIR / "README.md").read_text()
    for name in names:
        assert name in readme, f"notebooks/README.md does not list {name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_saved_notebook_carries_the_outputs_of_a_complete_run(path: Path):
    """Every code cell was executed, in order, and no saved output is an error (so it reads well on a code host)."""
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
    assert not [o for c in cells for o in c.outputs if o.output_type == "error"]
    assert sum(len(c.outputs) for c in cells) >= len(cells) // 2


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom_on_a_fresh_kernel(path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # tiny models: one thread is as fast, and steady on a shared CI machine (torch's thread pool is not)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                            resources={"metadata": {"path": str(NB_DIR)}})
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    elapsed = time.perf_counter() - start
    assert elapsed < NOTEBOOK_LIMIT_S, f"{path.name} took {elapsed:.0f} s"
