"""A run gives the same bits whatever the number of cores its process may use.

XLA:CPU sizes its thread pools by the cores a process may use and splits some large
reductions over those threads, so a flat sum over all particles rounds differently on one core
than on two. The engine sums over particles chunk by chunk in chunk order, and within a chunk
per neuron first, so a whole run must not depend on it: the sweep executors pin their workers
to shares of the cores (``validation.executors.pin_to_cores``), and users run on machines of
every size.

Each side is this file run as a script (``CORES OUT``) with the compilation cache off, so each
compiles its own programs: ``one`` restricts itself to one core before JAX starts, ``all``
keeps every usable core. The cases are wide enough that a flat float32 sum over their
particles differs between one and two cores (checked when this test was written: the initial
time scale of the luo_1d case, and so its save times and its step count, 467 against 469), and
the third case has enough samples that a flat sum over them differs too (its accuracy).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from meanfield.particles import TrainingData
from meanfield.particles.kernels import SAMPLE_SUM_BLOCK



def many_samples(n: int = 60000) -> TrainingData:
    """A classification set of n samples in 3 dimensions, longer than one flat sample sum
    (``SAMPLE_SUM_BLOCK``): its weighted accuracy, as one flat sum, differed between one
    core and two."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3))
    return TrainingData(x=x, y=np.sign(x[:, 0] + 0.3 * x[:, 1]), x_eval=x[:8], name="many")


# name -> (preset, preset arguments, config fields)
CASES = {
    "luo_1d_adaptive": ("luo_1d", {"gamma": 1.2, "gamma_prime": 0.0, "width": 20000,
                                   "t_max": 2000.0, "n_saves": 20}, {}),
    "wang_ma_euler": ("wang_ma", {"t_max": 2.0, "n_saves": 4},
                      {"model.width": 100000, "solver.kind": "euler", "solver.dt": 0.05}),
    "many_samples_euler": ("wang_ma", {"d": 3, "t_max": 1.0, "n_saves": 4},
                           {"data": many_samples(), "model.width": 64, "solver.kind": "euler",
                            "solver.dt": 0.05}),
}
assert CASES["many_samples_euler"][2]["data"].x.shape[0] > SAMPLE_SUM_BLOCK


def digests(ds) -> dict:
    """md5 of the bytes of every data variable and coordinate of a run's Dataset."""
    return {name: hashlib.md5(np.ascontiguousarray(ds[name].values).tobytes()).hexdigest()
            for name in sorted(ds.variables)}


def child(cores: str, out: str) -> None:
    if cores == "one":
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import meanfield as mf
    from meanfield import presets

    report = {"cores": len(os.sched_getaffinity(0))}
    for name, (preset, arguments, fields) in CASES.items():
        ds = mf.simulate(presets.get(preset, **arguments).replace(**fields), progress=False)
        report[name] = {"n_steps": int(ds.n_steps.values[-1]), "digests": digests(ds)}
    with open(out, "w") as f:
        json.dump(report, f)


def run_child(cores: str, out) -> dict:
    env = dict(os.environ, MEANFIELD_COMPILATION_CACHE="off")
    proc = subprocess.run([sys.executable, __file__, cores, str(out)], capture_output=True,
                          text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out) as f:
        return json.load(f)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs a platform with CPU affinity and at least two usable cores")
def test_runs_are_bitwise_equal_on_one_core_and_on_every_core(tmp_path):
    one = run_child("one", tmp_path / "one.json")
    every = run_child("all", tmp_path / "all.json")
    assert one.pop("cores") == 1 and every.pop("cores") >= 2
    for name in CASES:
        assert one[name]["n_steps"] > 3, (name, one[name])
        different = [v for v, d in every[name]["digests"].items()
                     if one[name]["digests"].get(v) != d]
        assert one[name]["n_steps"] == every[name]["n_steps"] and not different, (
            name, one[name]["n_steps"], every[name]["n_steps"], different)


if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2])
