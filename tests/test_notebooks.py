"""The quickstart notebook runs end to end (as its jupytext percent script) and stays paired."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
QUICKSTART = NOTEBOOKS / "01_quickstart.py"


def test_quickstart_script_runs(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg", QUICKSTART_SEEDS="2")
    proc = subprocess.run([sys.executable, str(QUICKSTART)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "seed  flow  GD(dt=1e-2)" in proc.stdout


def test_quickstart_pair_in_sync():
    jupytext = pytest.importorskip("jupytext")
    script = jupytext.read(QUICKSTART)
    notebook = jupytext.read(NOTEBOOKS / "01_quickstart.ipynb")
    assert [(c.cell_type, c.source) for c in script.cells] == \
        [(c.cell_type, c.source) for c in notebook.cells]
