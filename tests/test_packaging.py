"""The wheel installs beside the unrelated distributions named ``particles`` (sequential Monte
Carlo) and ``validation`` (runtime type checks) from the package index, and all three import and
work: ours installs one top-level package, ``meanfield``, with ``meanfield.particles`` and
``meanfield.validation`` inside it.

Needs the package index (it installs the two unrelated distributions into a fresh virtual
environment), so it is marked ``slow``; ``.ci/run`` runs it after the default suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import sys
import particles, validation
import particles.distributions as dists
from validation import validate_int
import meanfield as mf
from meanfield import particles as ours, validation as our_validation

venv = sys.prefix
assert particles.__file__.startswith(venv), particles.__file__   # theirs, from the venv
assert validation.__file__.startswith(venv), validation.__file__
assert ours is not particles and our_validation is not validation
assert dists.Normal().rvs(size=3).shape == (3,)                   # theirs works
validate_int(3)
config = mf.presets.wang_ma(width=16, t_max=1.0, n_saves=10)      # ours works
ds = mf.simulate(config, progress=False)
assert float(ds.loss[-1]) < float(ds.loss[0])
assert ours.ModelSpec is mf.ModelSpec
print("ok", particles.__file__, validation.__file__, mf.__file__)
"""


@pytest.mark.slow
def test_wheel_installs_beside_unrelated_particles_and_validation(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels),
                    str(ROOT)], check=True)
    (wheel,) = wheels.glob("meanfield_relu-*.whl")
    top_level = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()
                 if not name.split("/")[0].endswith((".dist-info", ".data"))}
    assert top_level == {"meanfield"}, top_level

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "particles", "validation"], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    # our dependencies (jax, xarray, ...) come from this environment, after the venv's own
    paths = sysconfig.get_paths()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join({paths["purelib"], paths["platlib"]}),
               MEANFIELD_COMPILATION_CACHE="off")
    out = subprocess.run([python, "-c", CHECK], env=env, cwd=tmp_path, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("ok")


def test_python_started_in_the_checkout_imports_the_subpackages():
    """``pip install .`` maps particles/ and validation/ into the installed package, but Python
    started in the root of the checkout imports the folder meanfield/ there: it must find its
    subpackages beside it (here with the editable install's finder removed, as after
    ``pip install .``)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys\n"
            "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
            "import meanfield, meanfield.particles, meanfield.validation.sweep\n"
            "print(meanfield.particles.__file__)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == os.path.join(root, "particles", "__init__.py")
