"""meanfield.validation.sweep: grid, dims and summaries against direct simulate calls, compile count per
width, resume after SIGKILL without recomputation, failure recording, bad input."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import meanfield as mf
from meanfield import runner
from meanfield.store import StoreError
from meanfield.validation import sweep as sw
from meanfield.validation.sweep import Summary, Sweep, run_sweep

SMALL = dict(axes={"width": (40, 48), "seed": (0, 1), "gamma": (0.5, 1.75)},
             fixed={"n_saves": 40}, summary=Summary(particles=16, density_times=5))


@pytest.fixture(scope="module")
def small():
    sweep = Sweep(**SMALL, name="small")
    before = runner.TRACE_COUNT["run_chunk"]
    ds = run_sweep(sweep, progress=False)
    return sweep, ds, runner.TRACE_COUNT["run_chunk"] - before


def _direct(sweep, **coords):
    return mf.simulate(sweep.config(**coords), progress=False)


# ----------------------------------------------------------------------------- pure helpers

def test_on_log_grid_is_exact_for_values_linear_in_log_t_and_nan_outside():
    t = np.array([0.0, 1e-2, 1e-1, 3.0, 50.0])
    values = 2.0 - 0.7 * np.log(np.where(t > 0, t, 1.0))
    values[0] = 123.0  # t = 0 is never used on a log grid
    grid = np.geomspace(1e-3, 1e3, 25)
    got = sw.on_log_grid(t, values, grid)
    inside = (grid >= 1e-2) & (grid <= 50.0)
    np.testing.assert_allclose(got[inside], 2.0 - 0.7 * np.log(grid[inside]), rtol=1e-12)
    assert np.all(np.isnan(got[~inside]))
    assert np.all(np.isnan(sw.on_log_grid(np.zeros(1), np.ones(1), grid)))


def test_nearest_in_log_matches_a_brute_force_search():
    rng = np.random.default_rng(0)
    t = np.concatenate([[0.0], np.sort(rng.uniform(1e-3, 1e2, 30))])
    grid = np.geomspace(1e-4, 1e3, 40)
    got = sw.nearest_in_log(t, grid)
    for g, k in zip(grid, got):
        if g < t[1] or g > t[-1]:
            assert k == -1
        else:
            assert k == 1 + min(range(30), key=lambda i: abs(np.log(t[1 + i]) - np.log(g)))


# ----------------------------------------------------------------------------- grid and summaries

def test_dims_coords_and_attrs(small):
    sweep, ds, _ = small
    assert ds.rd_w_end.dims == ("width", "seed", "gamma")
    assert list(ds.width.values) == [40, 48] and list(ds.seed.values) == [0, 1]
    assert list(ds.gamma.values) == [0.5, 1.75]
    assert ds.loss.dims == ("width", "seed", "gamma", "t")
    np.testing.assert_allclose(ds.t.values, sweep.summary.times)
    assert ds.density.dims == ("width", "seed", "gamma", "t_density", "sign", "angle")
    assert ds.particles_w.dims == ("width", "seed", "gamma", "stage", "neuron", "component")
    assert bool(ds.done.all())
    assert json.loads(ds.attrs["sweep"]) == json.loads(sweep.to_json())
    assert "jax_version" in ds.attrs and "base_config" in ds.attrs
    assert json.loads(ds.attrs["compile_groups"]) == [[40, 4], [48, 4]]


def test_summaries_are_the_numbers_of_direct_simulate_calls(small):
    sweep, ds, _ = small
    for width in (40, 48):
        for seed in (0, 1):
            for gamma in (0.5, 1.75):
                run = _direct(sweep, width=width, seed=seed, gamma=gamma)
                point = ds.sel(width=width, seed=seed, gamma=gamma)
                assert str(point.stop_reason.values) == run.attrs["stop_reason"] == "loss_tol"
                assert str(point.error.values) == ""
                for name in ("loss", "rd_w", "rd_a", "rd"):
                    assert float(point[f"{name}_end"]) == float(run[name].values[-1])
                assert float(point.t_end) == float(run.t.values[-1])
                assert int(point.n_steps) == int(run.n_steps.values[-1])
                assert float(point.loss_end) < 0.5e-6  # luo_1d stops at MSE < 1e-6
                # curves: the run's records at the grid times (log-t interpolation)
                np.testing.assert_array_equal(point.loss.values, sw.on_log_grid(
                    run.t.values, run.loss.values, sweep.summary.times))
                finite = np.isfinite(point.rd_w.values)
                assert finite.sum() > 20
                assert np.nanmax(point.rd_w.values) <= float(run.rd_w.max()) + 1e-7
                # densities at the nearest save; NaN outside the recorded times
                picks = sw.nearest_in_log(run.t.values, sweep.summary.density_grid)
                for k, pick in enumerate(picks):
                    got = point.density.isel(t_density=k).values
                    if pick < 0:
                        assert np.all(np.isnan(got))
                    else:
                        np.testing.assert_array_equal(got, run.density.values[pick])
                np.testing.assert_array_equal(point.density_end.values, run.density.values[-1])
                # first 16 neurons at t = 0 and at the end
                np.testing.assert_array_equal(point.particles_a.sel(stage="final").values,
                                              run.snapshot_a.values[-1, :16])
                np.testing.assert_array_equal(point.particles_w.sel(stage="initial").values,
                                              run.snapshot_w.values[0, :16])
                assert float(point.wall_time) > 0


def test_one_compiled_program_per_width(small):
    sweep, ds, traced = small
    assert traced <= 2  # widths 40 and 48 (fewer if another test compiled them already)
    before = runner.TRACE_COUNT["run_chunk"]
    more = Sweep(axes={"width": (48, 40), "seed": (5, 6), "gamma": (1.0,), "gamma_prime": (-0.2,
                                                                                           0.3)},
                 fixed={"n_saves": 40, "rtol": 2e-3}, summary=Summary(density_times=0))
    out = run_sweep(more, progress=False)
    assert runner.TRACE_COUNT["run_chunk"] == before  # new seeds/exponents/rtol: no retrace
    assert bool(out.done.all()) and "density" not in out
    assert json.loads(out.attrs["compile_groups"]) == [[40, 4], [48, 4]]  # cheapest first


def test_failed_point_is_recorded_and_the_sweep_goes_on():
    sweep = Sweep(axes={"max_steps": (3, 10_000_000)},
                  fixed={"width": 40, "gamma": 1.0, "n_saves": 40})
    ds = run_sweep(sweep, progress=False)
    failed, ok = ds.sel(max_steps=3), ds.sel(max_steps=10_000_000)
    assert str(failed.stop_reason.values) == "max_steps"
    assert str(failed.error.values).startswith("StepBudgetError: max_steps=3 exhausted")
    assert int(failed.n_steps) == 3 and np.isfinite(float(failed.loss_end))
    assert str(ok.stop_reason.values) == "loss_tol" and str(ok.error.values) == ""
    assert bool(ds.done.all())


def test_callable_builder_and_dotted_config_fields():
    sweep = Sweep(preset=mf.presets.luo_1d, axes={"solver.rtol": (1e-3, 3e-3)},
                  fixed={"width": 40, "gamma": 1.0, "n_saves": 40, "save.snapshots": 2})
    assert sweep.config(**{"solver.rtol": 3e-3}).solver.rtol == 3e-3
    assert json.loads(sweep.to_json())["preset"] == "meanfield.presets:luo_1d"
    ds = run_sweep(sweep, progress=False)
    run = mf.simulate(sweep.config(**{"solver.rtol": 3e-3}), progress=False)
    assert float(ds.rd_w_end.sel({"solver.rtol": 3e-3})) == float(run.rd_w.values[-1])


# ----------------------------------------------------------------------------- store and resume

def test_disk_store_reads_back_the_in_memory_result_and_refuses_other_sweeps(small, tmp_path):
    sweep, ds, _ = small
    path = str(tmp_path / "small.zarr")
    on_disk = run_sweep(sweep, path, progress=False)
    for name in ("rd_w_end", "loss", "density", "particles_w", "n_steps", "stop_reason"):
        np.testing.assert_array_equal(on_disk[name].values, ds[name].values)
    reopened = sw.open_sweep(path)
    np.testing.assert_array_equal(reopened.rd_w_end.values, ds.rd_w_end.values)
    assert bool(reopened.done.all())
    with pytest.raises(FileExistsError, match="resume=True"):
        run_sweep(sweep, path, resume=False, progress=False)
    other = Sweep(**{**SMALL, "fixed": {"n_saves": 41}})
    with pytest.raises(StoreError, match="another sweep"):
        run_sweep(other, path, progress=False)


KILLED_SWEEP = ('Sweep(axes={"seed": tuple(range(6)), "gamma": (0.5, 0.8, 1.2, 1.75)}, '
                'fixed={"width": 40, "n_saves": 40}, summary=Summary(density_times=3))')
KILLED_SCRIPT = textwrap.dedent(f"""
    import sys
    import jax
    jax.config.update("jax_enable_x64", True)  # as in the test session (conftest)
    from meanfield.validation.sweep import Summary, Sweep, run_sweep
    run_sweep({KILLED_SWEEP}, sys.argv[1], progress=False)
""")


def test_sweep_killed_mid_way_resumes_without_recomputation_and_same_result(tmp_path,
                                                                            monkeypatch):
    path = str(tmp_path / "killed.zarr")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SCRIPT, path],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    done = []
    while time.time() < deadline and proc.poll() is None:
        done = (sw.read_progress(path) or {}).get("done", [])
        if len(done) >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = sw.open_sweep(path)
    done_at_kill = set(sw.read_progress(path)["done"])
    assert 3 <= len(done_at_kill) < 24, "the kill should land mid-way"
    wall_before = killed.wall_time.values.copy()

    sweep = eval(KILLED_SWEEP, {"Sweep": Sweep, "Summary": Summary})
    calls = []
    real_run_point = sw.run_point
    monkeypatch.setattr(sw, "run_point", lambda *a: calls.append(a) or real_run_point(*a))
    resumed = run_sweep(sweep, path, progress=False)
    assert len(calls) == 24 - len(done_at_kill)  # finished points are not recomputed
    flat_wall = resumed.wall_time.values.reshape(-1)
    for flat in done_at_kill:  # and keep their stored values
        assert flat_wall[flat] == wall_before.reshape(-1)[flat]
    assert bool(resumed.done.all())
    assert sw.read_progress(path)["sessions"] == 2

    monkeypatch.setattr(sw, "run_point", real_run_point)
    fresh = run_sweep(sweep, progress=False)
    for name in fresh.data_vars:
        if name != "wall_time":
            np.testing.assert_array_equal(resumed[name].values, fresh[name].values, err_msg=name)


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs, match", [
    (dict(preset="nope", axes={"seed": (0,)}), "sweep.preset='nope' is not allowed"),
    (dict(axes={}), "at least one axis"),
    (dict(axes={"seed": ()}), "axis 'seed' has no values"),
    (dict(axes={"seed": (1, 1)}), "repeated values"),
    (dict(axes={"gamma": (float("nan"),)}), "finite numbers"),
    (dict(axes={"gama": (1.0,)}), r"neither arguments of the preset .* \(did you mean 'gamma'\?\)"),
    (dict(axes={"seed": (0,)}, fixed={"seed": 1}), "both axes and fixed"),
    (dict(axes={"t": (1.0,)}), "clash with the summary dims"),
    (dict(axes={"seed": 3}), "must be a sequence"),
    (dict(axes={"seed": (0,)}, summary="all"), "meanfield.validation.sweep.Summary"),
])
def test_bad_sweep_specs_raise_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Sweep(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(curves=("loss", "f_train")), "summary.curves entry 'f_train'"),
    (dict(t_min=10.0, t_max=1.0), "summary.t_max"),
    (dict(n_times=1), "summary.n_times"),
    (dict(particles=-1), "summary.particles"),
])
def test_bad_summaries_raise_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Summary(**kwargs)


def test_invalid_point_fails_at_construction_before_any_run():
    before = runner.TRACE_COUNT["run_chunk"]
    with pytest.raises(ValueError, match=r"point \{'width': 0\}.*width"):
        Sweep(axes={"width": (40, 0)}, fixed={"n_saves": 40})
    with pytest.raises(ValueError, match=r"point \{'width': 41\}.*must be even"):
        Sweep(axes={"width": (40, 41)})
    with pytest.raises(ValueError, match="unknown config key 'solver.rtl'"):
        Sweep(axes={"solver.rtl": (1e-3,)})
    with pytest.raises(ValueError, match="must be a meanfield.validation.sweep.Sweep"):
        run_sweep({"axes": {"seed": (0,)}})
    assert runner.TRACE_COUNT["run_chunk"] == before


def test_overwrite_replaces_a_sweep_store_but_never_a_folder_of_the_user(tmp_path):
    sweep = Sweep(axes={"width": (16,), "seed": (0,)}, fixed={"n_saves": 10, "t_max": 1.0},
                  name="tiny")
    out = tmp_path / "tiny.zarr"
    first = run_sweep(sweep, out=str(out), progress=False)
    again = run_sweep(sweep, out=str(out), overwrite=True, progress=False)
    np.testing.assert_array_equal(first.loss_end.values, again.loss_end.values)
    mine = tmp_path / "mydata"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(StoreError, match="refusing to overwrite"):
        run_sweep(sweep, out=str(mine), overwrite=True, progress=False)
    assert (mine / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_twenty_sigkills_at_random_moments_of_a_sweep_then_resume_is_identical(tmp_path):
    """SIGKILL sweep processes at 20 random moments (compilation, between points, while a point
    commits), restarting each on its store until it completes (then a new store): after every
    kill the store opens or is absent, no finished point is ever lost, and every completed
    store equals an uninterrupted sweep's in every variable but wall times."""
    rng = np.random.default_rng(7)
    sweep = eval(KILLED_SWEEP, {"Sweep": Sweep, "Summary": Summary})
    fresh = run_sweep(sweep, progress=False)
    started = time.time()
    subprocess.run([sys.executable, "-c", KILLED_SCRIPT, str(tmp_path / "timing.zarr")],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    full = time.time() - started  # one whole sweep in a fresh process, compilation included
    stores, kills, finished_before = [str(tmp_path / "killed-0.zarr")], 0, set()
    for _ in range(80):
        if kills == 20:
            break
        proc = subprocess.Popen([sys.executable, "-c", KILLED_SCRIPT, stores[-1]],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, full))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        progress = sw.read_progress(stores[-1]) if os.path.exists(stores[-1]) else None
        done = set((progress or {}).get("done", []))
        assert finished_before <= done, "a finished point was lost"
        finished_before = done
        if progress is not None:
            sw.open_sweep(stores[-1])  # a committed sweep store always opens
        if len(done) == 24:
            stores.append(str(tmp_path / f"killed-{len(stores)}.zarr"))
            finished_before = set()
    assert kills == 20
    for path in stores:
        resumed = run_sweep(sweep, path, progress=False)
        for name in fresh.data_vars:
            if name != "wall_time":
                np.testing.assert_array_equal(resumed[name].values, fresh[name].values,
                                              err_msg=f"{path}: {name}")


def test_a_damaged_sweep_store_is_an_error_and_resume_recomputes_only_the_damaged_points(
        small, tmp_path, monkeypatch):
    from meanfield.store import StoreCorrupt, verify_store

    sweep, ds, _ = small
    path = str(tmp_path / "damaged.zarr")
    run_sweep(sweep, path, progress=False)
    progress = sw.read_progress(path)
    assert verify_store(path, hashes=True) == progress  # every committed chunk file matches
    flat = int(np.ravel_multi_index((1, 0, 1), sweep.shape))
    with open(os.path.join(path, "_progress", "parts", f"{flat}.json")) as fh:
        assert os.path.join("rd_w_end", "1.0.1") in json.load(fh)  # the point's checksums
    # one point (width 48, seed 0, gamma 1.75): its rd_w_end chunk deleted; another's loss
    # curve cut
    os.remove(os.path.join(path, "rd_w_end", "1.0.1"))
    with pytest.raises(StoreCorrupt, match=r"'rd_w_end'.*missing.*resume"):
        sw.open_sweep(path)
    from meanfield.cli import main
    assert main(["verify", path]) == 1
    loss_chunk = os.path.join(path, "loss", "0.1.0.0")
    with open(loss_chunk, "r+b") as fh:
        fh.truncate(os.path.getsize(loss_chunk) // 2)
    calls = []
    real_run_point = sw.run_point
    monkeypatch.setattr(sw, "run_point", lambda *a: calls.append(a) or real_run_point(*a))
    with pytest.warns(UserWarning, match="2 finished points .* computed again"):
        resumed = run_sweep(sweep, path, progress=False)
    assert len(calls) == 2
    assert flat in sw.read_progress(path)["done"]
    for name in ("rd_w_end", "loss", "density", "n_steps"):
        np.testing.assert_array_equal(resumed[name].values, ds[name].values, err_msg=name)
    assert verify_store(path, hashes=True)["finished"]
    assert main(["verify", path]) == 0


def test_a_sweep_is_not_resumed_with_other_versions(tmp_path, monkeypatch, files_under):
    from meanfield import schema

    sweep = Sweep(axes={"seed": (0, 1)}, fixed={"width": 40, "n_saves": 40})
    path = str(tmp_path / "interrupted.zarr")
    real_run_point = sw.run_point

    def interrupted(config, summary):
        if config.seed == 1:
            raise KeyboardInterrupt
        return real_run_point(config, summary)

    with monkeypatch.context() as patch:
        patch.setattr(sw, "run_point", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_sweep(sweep, path, progress=False)
    assert sw.read_progress(path)["done"] == [0]
    before = files_under(path)
    other = {**schema.versions(), "meanfield_version": "0.0.1"}
    with monkeypatch.context() as patch:
        patch.setattr(schema, "_versions", lambda: other)
        with pytest.raises(StoreError, match=r"meanfield \S+ \(this process: 0.0.1\).*mix"):
            run_sweep(sweep, path, progress=False)
    assert files_under(path) == before  # refused before anything was written
    resumed = run_sweep(sweep, path, progress=False)
    assert bool(resumed.done.all()) and sw.read_progress(path)["sessions"] == 2
    with monkeypatch.context() as patch:  # a finished sweep is only read
        patch.setattr(schema, "_versions", lambda: other)
        assert bool(run_sweep(sweep, path, progress=False).done.all())
