"""Analytic fits (Barbu, arXiv 2304.02972) of a SimulationConfig as run Datasets
(meanfield.analytic_run, dispatched by mf.simulate for solver.kind='analytic')."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import meanfield as mf
import meanfield.particles as pt
from meanfield.analytic_run import ITERATION_UNITS
from meanfield.cli import main
from meanfield.particles.analytic import AnalyticConfig, fit_analytic

WIDTH, ITERATIONS = 40, 6


def analytic(width=WIDTH, iterations=ITERATIONS, **solver):
    config = mf.presets.luo_1d(width=width, seed=3).replace(loss_tol=None)
    return config.replace(solver=mf.Solver(kind="analytic", iterations=iterations, **solver))


def flow(width=WIDTH):
    return mf.presets.luo_1d(width=width, seed=3).replace(
        loss_tol=None, t_max=0.05, save=mf.SaveAt(n=4, snapshots=2))


@pytest.fixture(scope="module")
def fit():
    return mf.simulate(analytic(), progress=False)


@pytest.fixture(scope="module")
def flow_run():
    return mf.simulate(flow(), progress=False)


def _solver_specific(name: str) -> bool:
    return name.startswith("analytic_")


def test_schema_equals_a_particle_run(fit, flow_run):
    ours = {k for k in fit.data_vars if not _solver_specific(k)}
    assert ours == set(flow_run.data_vars)
    for name in ours:
        assert fit[name].dims == flow_run[name].dims, name
        assert set(fit[name].attrs) == set(flow_run[name].attrs), name
    assert set(fit.coords) == set(flow_run.coords)
    extra = set(fit.attrs) - set(flow_run.attrs)
    assert set(flow_run.attrs) <= set(fit.attrs)
    assert all(_solver_specific(k) or k == "time_axis" for k in extra), extra
    assert fit.attrs["solver"] == "analytic" and fit.attrs["time_axis"] == "iteration"
    assert mf.run_config(fit).to_json() == analytic().to_json()
    # iteration is the time axis, and it says so
    np.testing.assert_array_equal(fit.t.values, np.arange(ITERATIONS + 1))
    assert fit.t.attrs["units"] == ITERATION_UNITS == fit.t_snapshot.attrs["units"]
    assert fit.snapshot_a.sel(t_snapshot=0).shape == (WIDTH,)
    assert fit.t_snapshot.values[0] == 0 and fit.t_snapshot.values[-1] == ITERATIONS
    for name in ("analytic_loss_output", "analytic_flips", "analytic_cond_first_layer",
                 "analytic_best_loss"):
        assert fit[name].dims == ("t",)
    assert fit.analytic_best_w.dims == ("neuron", "component")


def test_same_initial_particles_as_the_gradient_flow_run(fit, flow_run):
    for name in ("snapshot_a", "snapshot_w"):
        np.testing.assert_allclose(fit[name].sel(t_snapshot=0).values,
                                   flow_run[name].sel(t_snapshot=0).values, rtol=1e-6)
    np.testing.assert_allclose(fit.loss.values[0], flow_run.loss.values[0], rtol=1e-5)


def test_loss_is_the_solvers_own_record(fit):
    config = analytic()
    data = config.data
    a0 = fit.snapshot_a.sel(t_snapshot=0).values.astype(float)
    w0 = fit.snapshot_w.sel(t_snapshot=0).values.astype(float)
    best, history = fit_analytic(data.augmented(data.x, True), data.y, data.weights, a0, w0,
                                 AnalyticConfig(iterations=ITERATIONS, output_bias=False))
    assert fit.loss.values[0] == history["loss_initial"]
    np.testing.assert_array_equal(fit.loss.values[1:], history["loss_output"])
    np.testing.assert_array_equal(fit.analytic_loss_output.values[1:], history["loss_output"])
    np.testing.assert_array_equal(fit.analytic_flips.values[1:], history["flips"])
    np.testing.assert_array_equal(fit.analytic_loss_refresh.values[1:], history["loss_refresh"])
    assert np.isnan(fit.analytic_loss_first_layer.values[0])
    assert fit.attrs["analytic_best_loss"] == best["loss"] == fit.analytic_best_loss.values[-1]
    assert fit.attrs["analytic_best_iteration"] == best["iteration"]
    np.testing.assert_array_equal(fit.analytic_best_w.values, best["w"])
    # the recorded loss is the loss of the recorded f (an independent evaluation) ...
    r = 0.5 * np.sum(data.weights * (fit.f_train.values - data.y) ** 2, axis=1)
    # (atol: float64 roundoff of f, ~1e-17, times the residual once the fit interpolates)
    np.testing.assert_allclose(fit.loss.values, r, rtol=1e-9, atol=1e-26)
    # ... and f is the network of the snapshot particles (the engine's chunked evaluation)
    xe = jnp.asarray(data.augmented(data.x_eval, True), jnp.float32)
    for k in fit.t_snapshot.values:
        a = jnp.asarray(fit.snapshot_a.sel(t_snapshot=k).values, jnp.float32)
        w = jnp.asarray(fit.snapshot_w.sel(t_snapshot=k).values, jnp.float32)
        f = pt.network_output(pt.Particles(a=a, w=w), xe, 1.0 / WIDTH, 1)
        np.testing.assert_allclose(fit.f_eval.sel(t=k).values, np.asarray(f), atol=1e-5)
    # observables of the particles move with them
    assert fit.rd.values[0] == 0 and fit.rd.values[-1] > 0
    np.testing.assert_allclose(fit.density.sel(sign="all").sum("angle").values, 1.0, rtol=1e-5)


def test_reproducible(fit):
    again = mf.simulate(analytic(), progress=False)
    for name in fit.data_vars:
        if name != "analytic_iteration_time":
            np.testing.assert_array_equal(again[name].values, fit[name].values, err_msg=name)


def test_loss_tol_stops_and_output_bias_is_in_f(capsys):
    config = analytic(iterations=30, output_bias=True).replace(loss_tol=1e-12)
    ds = mf.simulate(config, progress=True)
    assert ds.attrs["stop_reason"] == "loss_tol" and ds.loss.values[-1] <= 1e-12
    assert np.all(ds.loss.values[:-1] > 1e-12) and ds.t.values[-1] < 30
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    steps = int(ds.t.values[-1])  # the bar ends at the iterations it made, 100%
    assert "100%" in last and f"{steps}/{steps}" in last, last
    assert ds.t_snapshot.values[-1] == ds.t.values[-1]
    c = ds.analytic_output_bias.values
    assert c[0] == 0 and np.any(c != 0)
    data = config.data
    xe = data.augmented(data.x_eval, True)
    a, w = ds.snapshot_a.isel(t_snapshot=-1).values, ds.snapshot_w.isel(t_snapshot=-1).values
    np.testing.assert_allclose(ds.f_eval.values[-1], np.maximum(xe @ w.T, 0) @ a / WIDTH + c[-1],
                               rtol=1e-10, atol=1e-12)


def test_bad_input_is_rejected_before_compute():
    with pytest.raises(ValueError, match="solver.iterations"):
        mf.Solver(kind="analytic", iterations=0)
    with pytest.raises(ValueError, match="solver.ridge"):
        mf.Solver(kind="analytic", ridge=-1.0)
    with pytest.raises(ValueError, match="solver.output_bias"):
        mf.Solver(kind="analytic", output_bias=1)
    with pytest.raises(ValueError, match="takes no dt"):
        mf.Solver(kind="analytic", dt=0.1)
    with pytest.raises(ValueError, match="only used with solver.kind='analytic'"):
        mf.Solver(kind="adaptive", iterations=5)
    with pytest.raises(ValueError, match="solver.kind"):
        mf.Solver(kind="als")
    margin = mf.presets.wang_ma(width=10).replace(**{"solver": mf.Solver(kind="analytic")})
    with pytest.raises(ValueError, match=r"model.loss='exponential'.*'squared'"):
        mf.simulate(margin, progress=False)
    frozen = analytic().replace(**{"model.output": "frozen"})
    with pytest.raises(ValueError, match="model.output='frozen'"):
        mf.simulate(frozen, progress=False)
    with pytest.raises(ValueError, match="iteration numbers"):
        mf.simulate(analytic().replace(**{"save.snapshots": (0.5, 2.0)}), progress=False)
    with pytest.raises(ValueError, match="initial"):
        mf.simulate(analytic(), initial=(np.zeros(WIDTH), np.zeros((WIDTH, 2))), progress=False)
    again = mf.SimulationConfig.from_json(analytic(ridge=1e-6).to_json())
    assert again.solver == mf.Solver(kind="analytic", iterations=ITERATIONS, ridge=1e-6)


def test_explicit_initial_particles_and_snapshot_iterations():
    rng = np.random.default_rng(0)
    a, w = rng.normal(size=WIDTH), rng.normal(size=(WIDTH, 2))
    config = analytic().replace(**{"save.snapshots": (2.0, 4.0, 50.0)})
    ds = mf.simulate(config, initial=pt.Particles(a=a, w=w), progress=False)
    assert ds.attrs["initial"] == "custom"
    np.testing.assert_array_equal(ds.t_snapshot.values, [0, 2, 4, ITERATIONS])
    np.testing.assert_allclose(ds.snapshot_w.sel(t_snapshot=0).values, w, rtol=1e-7)


def test_cli_run_plots_and_reruns(tmp_path, capsys):
    out = str(tmp_path / "fit.zarr")
    argv = ["run", "luo_1d", "--width", str(WIDTH), "--seed", "3", "--set", "solver.kind=analytic",
            "--set", f"solver.iterations={ITERATIONS}", "--set", "loss_tol=None", "--out", out,
            "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "solver=analytic" in printed and f"t={ITERATIONS}  (iterations)" in printed
    stored = mf.open_run(out)
    assert mf.run_config(stored).to_json() == analytic().to_json()
    assert stored.t.attrs["units"] == ITERATION_UNITS
    assert json.loads(stored.attrs["config"])["solver"]["kind"] == "analytic"
    plots = tmp_path / "fit_plots"
    assert (plots / "training_curves.png").stat().st_size > 1000
    assert (plots / "density.png").exists()
    assert main(argv) == 0 and "already complete" in capsys.readouterr().out
    with pytest.raises(FileExistsError):
        mf.simulate(analytic(), out=out, progress=False)
    np.testing.assert_array_equal(mf.simulate(analytic(), out=out, resume=True).loss.values,
                                  stored.loss.values)
