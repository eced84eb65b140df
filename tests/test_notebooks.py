"""The notebooks run end to end at reduced sizes (as their jupytext percent scripts, headless)
and write their figures; every .py / .ipynb pair is in sync."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
# each notebook and the files it must write under MEANFIELD_NOTEBOOK_OUT/<its name>/
EXPECTED = {
    "01_quickstart": ["density.png", "training_curves.png", "run_against_limit.png",
                      "plots/rays.png", "wang_ma-m100-s0.zarr"],
    "02_wang_ma_phases": ["density.png", "rays_at_phase_boundaries.png", "training_curves.png",
                          "particles.gif", "escape_time_against_width.png"],
    "03_luo_phase_diagram": ["three_regimes_scatter.png", "density_condensed.png",
                             "luo_scatter_linear.png", "rd_against_width.png"],
    "04_finite_width_limits": ["distance_to_limits.png"],
    "05_orthogonal_and_analytic": ["boursier_plateaus.png", "boursier_rays.png",
                                   "analytic_against_flow.png"],
    "06_digits_condensation": ["effective_directions.png", "density_small_scale.png",
                               "rays_small_scale.png"],
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_every_notebook_is_listed():
    assert sorted(p.stem for p in NOTEBOOKS.glob("0*.py")) == sorted(EXPECTED)
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_headless_and_writes_its_figures(name, tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg", MEANFIELD_NOTEBOOK_QUICK="1",
               MEANFIELD_NOTEBOOK_OUT=str(tmp_path))
    proc = subprocess.run([sys.executable, str(NOTEBOOKS / f"{name}.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    for file in EXPECTED[name]:
        path = tmp_path / name / file
        assert path.exists(), f"{name} did not write {file}"
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000
    if name == "01_quickstart":
        assert "seed  flow  GD(dt=1e-2)" in proc.stdout
    if name == "02_wang_ma_phases":
        assert (tmp_path / name / "particles.gif").read_bytes()[:6] == b"GIF89a"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_pair_in_sync(name):
    jupytext = pytest.importorskip("jupytext")
    script = jupytext.read(NOTEBOOKS / f"{name}.py")
    notebook = jupytext.read(NOTEBOOKS / f"{name}.ipynb")
    assert [(c.cell_type, c.source) for c in script.cells] == \
        [(c.cell_type, c.source) for c in notebook.cells]
