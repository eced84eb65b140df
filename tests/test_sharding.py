"""Particle-axis sharding: a run split over 1, 2, 4 and 8 devices gives the Dataset of the
unsharded run bitwise (float64; Euler, optax and the adaptive flow; widths that do not divide
by the device count). Sums over particles are taken chunk by chunk in chunk order whatever the
devices (``meanfield.particles.sharding``), so no tolerance is needed.

Forced host devices must be set before JAX starts, so the multi-device runs happen in a
child process (this file run as a script) with ``--xla_force_host_platform_device_count=8``;
it builds meshes of the given device counts and prints the comparison as JSON. Every device
count compiles its own program, so the default run checks 2 and 8 devices (8 pads every case
with zero chunks; a one-device mesh is checked in process below) and ``pytest -m slow`` checks
1, 2, 4 and 8.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

DEVICES = (1, 2, 4, 8)
QUICK_DEVICES = (2, 8)
RTOL = 0.0  # bitwise; ``differences`` also serves a tolerance (the 1e-12 of the acceptance)
# name -> (preset, preset arguments, config fields); width 100 does not divide by 8, 1002 by
# 4 or 8 (ASI needs even widths).
CASES = {
    "wang_ma_adaptive": ("wang_ma", {"t_max": 60.0, "n_saves": 10}, {}),
    "wang_ma_euler": ("wang_ma", {"t_max": 5.0, "n_saves": 5},
                      {"solver.kind": "euler", "solver.dt": 0.05}),
    "wang_ma_optax": ("wang_ma", {"t_max": 8.0, "n_saves": 4},
                      {"solver.kind": "optax", "solver.dt": 1.0, "solver.optimizer": "adam",
                       "solver.optimizer_kwargs": {"learning_rate": 1e-3}}),
    "luo_1d": ("luo_1d", {"gamma": 1.75, "gamma_prime": 0.0, "width": 1002, "t_max": 100.0,
                          "n_saves": 10, "precision": "float64"}, {}),
}


def config_of(name: str):
    from meanfield import presets

    preset, arguments, fields = CASES[name]
    config = presets.get(preset, **arguments)
    return config.replace(**fields) if fields else config


def differences(ds, reference, rtol: float = RTOL) -> dict:
    """Per variable: largest |x - y| / (rtol-scaled size of y) for floats (<= 1 passes; with
    rtol = 0 only equal values pass), equality for the rest; plus equal dims."""
    out = {"dims_equal": dict(ds.sizes) == dict(reference.sizes)}
    for name in reference.data_vars:
        x, y = np.asarray(ds[name].values), np.asarray(reference[name].values)
        if x.shape != y.shape:
            out[name] = float("inf")
        elif x.dtype.kind == "f":
            if not np.array_equal(np.isnan(x), np.isnan(y)):
                out[name] = float("inf")
                continue
            scale = np.nanmax(np.abs(y), initial=0.0)
            err = np.abs(np.nan_to_num(x - y)) / (rtol * (np.abs(np.nan_to_num(y)) + 1e-3 * scale)
                                                  + 1e-300)
            out[name] = float(np.max(err, initial=0.0))
        else:
            out[name] = 0.0 if np.array_equal(x, y) else float("inf")
    return out


def child(counts: list[int], names: list[str]) -> None:
    """Run every case unsharded and on each device count; print the differences (one JSON
    line per case)."""
    import meanfield as mf

    for name in names:
        config = config_of(name)
        reference = mf.simulate(config, progress=False)
        report = {"n_steps": int(reference.n_steps.values[-1]), "devices": {}}
        for count in counts:
            ds = mf.simulate(config, progress=False, devices=count)
            report["devices"][count] = differences(ds, reference)
        print(json.dumps({name: report}), flush=True)


def run_child(counts: tuple[int, ...], names: list[str]) -> dict:
    env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") +
                                      f" --xla_force_host_platform_device_count={max(DEVICES)}"))
    proc = subprocess.run([sys.executable, __file__, ",".join(map(str, counts)), *names],
                          capture_output=True, text=True, env=env, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = {}
    for line in proc.stdout.strip().splitlines():
        report.update(json.loads(line))
    assert set(report) == set(names)
    return report


def check(report: dict, counts: tuple[int, ...]) -> None:
    for name, result in report.items():
        assert sorted(map(int, result["devices"])) == sorted(counts), (name, result["devices"])
        assert result["n_steps"] > 5, (name, result["n_steps"])
        for count, diffs in result["devices"].items():
            assert diffs.pop("dims_equal"), (name, count)
            worst = max(diffs, key=diffs.get)
            assert diffs[worst] <= 1.0, (name, count, worst, diffs[worst])


@pytest.mark.parametrize("name", list(CASES))
def test_sharded_runs_equal_unsharded_bitwise(name):
    check(run_child(QUICK_DEVICES, [name]), QUICK_DEVICES)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_sharded_runs_equal_unsharded_bitwise_on_1_2_4_8_devices(name):
    check(run_child(DEVICES, [name]), DEVICES)


def test_differences_detect_a_change():
    import xarray as xr

    ref = xr.Dataset({"loss": ("t", np.array([1.0, 0.5, 0.0])), "n": ("t", np.array([1, 2, 3]))})
    assert max(differences(ref, ref).values()) <= 1.0
    assert differences(ref.assign(loss=ref.loss * (1 + 4e-16)), ref)["loss"] > 1.0
    assert differences(ref.assign(loss=ref.loss * (1 + 1e-13)), ref, 1e-12)["loss"] <= 1.0
    assert differences(ref.assign(loss=ref.loss * (1 + 1e-11)), ref, 1e-12)["loss"] > 1.0
    assert differences(ref.assign(n=ref.n + 1), ref)["n"] == float("inf")


# ----------------------------------------------------------------------------- one process

def test_chunk_layout_gives_every_device_whole_chunks():
    import meanfield.particles as pt

    assert pt.chunk_layout(1003) == (1, 1008)
    for width in (1, 100, 1003, 4000, 4001, 10**5 + 3):
        alone = pt.chunk_layout(width, 4000)
        for devices in DEVICES:
            n_chunks, chunk = pt.chunk_layout(width, 4000, devices)
            assert n_chunks % devices == 0 and chunk % 8 == 0
            assert width <= n_chunks * chunk < width + devices * chunk
            # the same chunks, padded with whole zero chunks: sums do not depend on devices
            assert chunk == alone[1] and alone[0] <= n_chunks < alone[0] + devices
    with pytest.raises(ValueError, match="devices=0"):
        pt.chunk_layout(10, None, 0)


def test_chunk_sums_ignore_trailing_zero_chunks_and_redo_blocks():
    """What the bitwise equality across devices rests on, in one process: trailing zero chunks
    (a mesh's padding) leave every sum over particles bitwise unchanged, and the flow's redo
    pass adds each redone particle to its chunk in particle order whatever the block size."""
    import dataclasses

    import jax
    import jax.numpy as jnp

    import meanfield.particles as pt
    from meanfield.particles.flow import move_particles

    rng = np.random.default_rng(3)
    n_chunks, chunk, n = 5, 40, 6
    x = jnp.asarray(np.c_[rng.uniform(-1, 1, (n, 2)), np.ones(n)])
    a = jnp.asarray(rng.standard_normal(n_chunks * chunk))
    w = jnp.asarray(rng.standard_normal((n_chunks * chunk, 3)))
    pad = lambda v: jnp.concatenate([v, jnp.zeros((3 * chunk,) + v.shape[1:], v.dtype)])
    parts, padded = pt.Particles(a=a, w=w), pt.Particles(a=pad(a), w=pad(w))
    f = pt.network_output(parts, x, 1.0 / a.size, n_chunks)
    assert np.array_equal(f, pt.network_output(padded, x, 1.0 / a.size, n_chunks + 3))
    r = jnp.asarray(rng.standard_normal(n))
    problem = pt.make_problem(x_unique=x, inverse=np.arange(n), y=np.zeros(n),
                              weights=np.full(n, 1 / n), width=a.size, loss="squared",
                              trainable=True, n_chunks=n_chunks, dtype=jnp.float64)
    new, f_new = pt.kernels.euler_pass(problem, parts, r, 0.1)
    new_p, f_new_p = pt.kernels.euler_pass(dataclasses.replace(problem, n_chunks=n_chunks + 3),
                                           padded, r, 0.1)
    assert np.array_equal(f_new, f_new_p) and np.array_equal(new.w, new_p.w[:a.size])
    assert np.array_equal(pt.kernels.particle_sum(a * a, n_chunks),
                          pt.kernels.particle_sum(pad(a * a), n_chunks + 3))

    move = jax.jit(move_particles, static_argnums=8,
                   static_argnames=("n_chunks", "outputs", "event_block"))
    args = (x, jnp.sum(x * x, 1), 10 * r, jnp.asarray(0.5), 1e-12, 0.0, True)
    runs = [move(aa, ww, *args, n_chunks=k, outputs="all", event_block=block)
            for aa, ww, k in ((a, w, n_chunks), (pad(a), pad(w), n_chunks + 3))
            for block in (8, 24, 64)]
    crossed = np.any((w @ x.T > 0) != (runs[0].w @ x.T > 0), axis=1).sum()
    assert crossed > 3 * 8  # face events: the redo pass ran several blocks of the smallest size
    for motion in runs[1:]:
        for field in ("total", "tau2_min", "g_max", "amplitude_sum"):
            assert np.array_equal(getattr(motion, field), getattr(runs[0], field)), field
        assert np.array_equal(motion.w[:a.size], runs[0].w)


def test_resolve_mesh_accepts_counts_lists_meshes_and_names_bad_input():
    import jax

    from meanfield.sharding import resolve_mesh

    assert resolve_mesh(None) is None
    mesh = resolve_mesh(1)
    assert mesh.axis_names == ("particles",) and mesh.devices.size == 1
    assert resolve_mesh(jax.devices()[:1]).devices.size == 1
    assert resolve_mesh(mesh) is mesh
    n = len(jax.devices())
    for bad in (0, n + 1, True, "two", [0, 1]):
        with pytest.raises(ValueError, match="devices"):
            resolve_mesh(bad)
    with pytest.raises(ValueError, match="'particles' axis"):
        resolve_mesh(jax.sharding.Mesh(jax.devices()[:1], ("x",)))


def test_one_device_mesh_run_equals_unsharded_and_cli_flag(tmp_path):
    """In this process (one device): the per-shard code path on a one-device mesh."""
    import meanfield as mf
    from meanfield.cli import main

    config = config_of("wang_ma_euler").replace(t_max=2.0)
    diffs = differences(mf.simulate(config, progress=False, devices=1),
                        mf.simulate(config, progress=False))
    assert diffs.pop("dims_equal") and max(diffs.values()) <= 1.0
    assert main(["run", "wang_ma", "--t-max", "1", "--devices", "99", "--no-plots",
                 "--out", str(tmp_path / "r.zarr")]) == 2
    with pytest.raises(ValueError, match="analytic"):
        mf.simulate(config.replace(**{"solver.kind": "analytic"}), devices=1)


def test_float64_is_refused_up_front_where_the_backend_has_none(monkeypatch):
    import meanfield as mf
    import meanfield.sharding as sharding

    calls = []
    monkeypatch.setattr(sharding, "platform_of", lambda mesh: "tpu")
    monkeypatch.setattr("meanfield.runner.prepare_problem", lambda *a: calls.append(a))
    config = config_of("wang_ma_euler")
    assert config.precision == "float64"
    with pytest.raises(ValueError, match="float64.*tpu"):
        mf.simulate(config)
    assert not calls  # refused before any array was built
    sharding.check_precision("float32", None)


def test_preset_precision_defaults_come_from_one_table(monkeypatch):
    from meanfield import presets

    assert presets.get("wang_ma").precision == presets.default_precision("wang_ma") == "float64"
    assert presets.get("luo_1d").precision == "float32"
    assert presets.get("wang_ma", precision="float32").precision == "float32"
    for platform in ("gpu", "tpu"):
        assert presets.default_precision("wang_ma", platform) == "float32"
        assert presets.default_precision("luo_1d", platform) == "float32"
    monkeypatch.setattr("jax.default_backend", lambda: "gpu")
    assert presets.get("wang_ma").precision == "float32"


if __name__ == "__main__":
    child([int(count) for count in sys.argv[1].split(",")], sys.argv[2:])
