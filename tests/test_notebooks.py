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


# One process runs every notebook's script in turn (runpy, a fresh namespace each), so jax is
# imported once and programs of equal shapes compile once: compiling is most of a quick run, so
# the quick sizes use few shapes (widths padding to the same chunk, e.g. wang_ma m = 100 and 104
# in 01, 02 and 04, Luo m = 98 and 104 in float64 in 03 to 05); it prints each notebook's
# wall time.
DRIVER = """
import runpy, sys, time
sys.path.insert(0, {folder!r})
for name in {names!r}:
    started = time.perf_counter()
    print(f"=== {{name}}", flush=True)
    runpy.run_path(f"{folder}/{{name}}.py", run_name="__main__")
    print(f"=== {{name}} done in {{time.perf_counter() - started:.1f}} s", flush=True)
"""


def test_notebooks_run_headless_and_write_their_figures(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg", MEANFIELD_NOTEBOOK_QUICK="1",
               MEANFIELD_NOTEBOOK_OUT=str(tmp_path))
    code = DRIVER.format(folder=str(NOTEBOOKS), names=sorted(EXPECTED))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1800)
    ran = [line for line in proc.stdout.splitlines() if line.startswith("=== ")]
    assert proc.returncode == 0, (f"failed in {ran[-1] if ran else '?'}\nstdout:\n"
                                  f"{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    for name, files in EXPECTED.items():
        for file in files:
            path = tmp_path / name / file
            assert path.exists(), f"{name} did not write {file}"
            if path.suffix == ".png":
                assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000
    assert "seed  flow  GD(dt=1e-2)" in proc.stdout  # 01's flow-against-GD table
    assert (tmp_path / "02_wang_ma_phases" / "particles.gif").read_bytes()[:6] == b"GIF89a"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_pair_in_sync(name):
    jupytext = pytest.importorskip("jupytext")
    script = jupytext.read(NOTEBOOKS / f"{name}.py")
    notebook = jupytext.read(NOTEBOOKS / f"{name}.ipynb")
    assert [(c.cell_type, c.source) for c in script.cells] == \
        [(c.cell_type, c.source) for c in notebook.cells]
