"""meanfield.schema: one builder for every Dataset kind; plot, compare, export and open_run on a
run, an analytic fit, each limit kind and a sweep summary (each works or says why not)."""

import os

import numpy as np
import pytest
import xarray as xr

import meanfield as mf
import meanfield.particles as pt
from meanfield import schema
from meanfield.cli import main
from meanfield.io import export_netcdf, open_run, run_config, save_run
from meanfield.limits import kernel, mean_field, reference, wang_ma
from meanfield.limits.compare import compare
from meanfield.plot import luo_scatter, neuron_rays, save_all, training_curves
from meanfield.validation.sweep import Summary, Sweep, open_sweep, run_sweep

T = 1.0


def luo(gamma=1.0, width=32, **changes):
    config = mf.presets.luo_1d(gamma=gamma, width=width, t_max=T, n_saves=12,
                               precision="float64").replace(loss_tol=None)
    return config.replace(**changes) if changes else config


def balanced(width=32):
    return luo(model=mf.ModelSpec(width=width, init=mf.InitialLaw(kind="balanced", scale=1.0,
                                                                  signs="random")))


def wm(width=32):
    return mf.presets.wang_ma(width=width, t_max=5.0).replace(**{"save.n": 12})


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("sweep") / "sweep.zarr")
    run_sweep(Sweep(axes={"width": (32,), "seed": (0, 1)},
                    fixed={"n_saves": 8, "t_max": T, "precision": "float64"},
                    summary=Summary(particles=4, density_times=2)), path, progress=False)
    return path


@pytest.fixture(scope="module")
def kinds(sweep_store):
    """{name: (run-like Dataset to compare, its limit or None)} for every kind."""
    sim = lambda c: mf.simulate(c, progress=False)
    out = {
        "run": sim(luo()),
        "analytic": sim(luo(solver=mf.Solver(kind="analytic", iterations=4))),
        "limit:wang_ma": wang_ma.wang_ma_limit(wm()),
        "limit:mean_field": mean_field.mean_field_limit(balanced(), n_cells=64),
        "limit:kernel": kernel.kernel_limit(luo(gamma=0.5)),
        "limit:mean_field_reference": reference.mean_field_reference(luo(), levels=(16, 32)),
        "sweep-summary": open_sweep(sweep_store).load(),
    }
    return out


@pytest.fixture(scope="module")
def runs():
    """Finite runs matching each limit's config (the limit's kind: the run)."""
    sim = lambda c: mf.simulate(c, progress=False)
    return {"limit:wang_ma": sim(wm()), "limit:mean_field": sim(balanced()),
            "limit:kernel": sim(luo(gamma=0.5)), "limit:mean_field_reference": sim(luo())}


# ----------------------------------------------------------------------------- the builder

def test_every_producer_writes_its_kind_within_the_schema(kinds):
    for kind, ds in kinds.items():
        assert schema.kind_of(ds) == kind == ds.attrs["kind"]
        if kind == "sweep-summary":  # named after run variables, with their units
            for name in list(ds.data_vars) + ["t", "t_density", "sign", "angle"]:
                assert ds[name].attrs.get("long_name"), name
            for name in ("loss_end", "loss", "rd_w"):
                run_name = name.removesuffix("_end")
                assert ds[name].attrs["units"] == schema.VARIABLES[run_name].units, name
            assert ds.t_end.attrs["units"] == ds.t.attrs["units"] == schema.TIME_UNITS
            assert ds.wall_time.attrs["units"] == "s" and "units" not in ds.stop_reason.attrs
            continue
        allowed = set(schema.KIND_VARIABLES[kind])
        names = {n for n in ds.data_vars if not n.startswith(schema.ANALYTIC_PREFIX)}
        assert names <= allowed, (kind, names - allowed)
        assert set(schema.KIND_REQUIRED[kind]) <= set(ds.data_vars), kind
        for name in names:  # dims and units are the schema's
            assert ds[name].dims == schema.VARIABLES[name].dims, (kind, name)
        assert ds.t.attrs["units"] in (schema.TIME_UNITS, schema.ITERATION_UNITS)


def test_builder_refuses_names_outside_the_kind():
    with pytest.raises(ValueError, match=r"\['density'\] are not in the schema of kind 'limit:kernel'"):
        schema.build("limit:kernel", None, {"loss": np.zeros(2), "density": np.zeros((2, 3, 4))})
    with pytest.raises(ValueError, match="kind='limit:nope' is not allowed"):
        schema.build("limit:nope", None, {})
    with pytest.raises(KeyError, match="'lost' is not a variable of the meanfield schema"):
        schema.variable("lost", np.zeros(2))
    ds = schema.build("limit:kernel", None, {"loss": np.zeros(2)}, coords={"t": [0.0, 1.0]},
                      long_names={"loss": "my loss"})
    assert ds.loss.attrs == {"units": "1", "long_name": "my loss"}
    assert ds.t.attrs["units"] == schema.TIME_UNITS and "config" not in ds.attrs


def test_kind_is_inferred_for_stores_written_before_the_attribute(kinds):
    for kind, ds in kinds.items():
        old = ds.copy()
        old.attrs = {k: v for k, v in ds.attrs.items() if k != "kind"}
        assert schema.kind_of(old) == kind


# ----------------------------------------------------------------------------- plot

def test_save_all_on_every_kind(kinds, tmp_path):
    # runs and analytic fits: tests/test_plot.py and tests/test_analytic_dataset.py
    expected = {"limit:wang_ma": {"training_curves"},
                "limit:mean_field": {"training_curves", "density"},
                "limit:kernel": {"training_curves"},
                "limit:mean_field_reference": {"training_curves", "density", "rays", "luo_scatter"}}
    for kind, figures in expected.items():
        with pytest.warns(UserWarning) if len(figures) < 4 else _no_warning():
            paths = save_all(kinds[kind], tmp_path / kind.replace(":", "_"), dpi=20)
        assert {os.path.basename(p)[:-4] for p in paths} == figures, kind
    with pytest.raises(ValueError, match="save_all draws one dataset; this is a sweep summary"):
        save_all(kinds["sweep-summary"], tmp_path / "sweep")


class _no_warning:
    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._catch.__exit__(*exc)


def test_figures_say_what_a_dataset_lacks(kinds, runs):
    with pytest.raises(ValueError, match=r"neuron_rays needs snapshot_a, snapshot_w, which this "
                                         r"limit:kernel dataset does not hold"):
        neuron_rays(kinds["limit:kernel"])
    with pytest.raises(ValueError, match="luo_scatter draws 1-D inputs with a bias"):
        luo_scatter(runs["limit:wang_ma"])
    bare = wang_ma.reduced_model(4, np.pi / 15, 0.25, 0.2, np.linspace(0, 10, 5))
    with pytest.raises(ValueError, match="training_curves needs x_train"):
        training_curves(bare)
    no_snapshots = kinds["run"].isel(t_snapshot=slice(0, 0))
    with pytest.raises(ValueError, match="neuron_rays needs particle snapshots; this run dataset "
                                         "has none"):
        neuron_rays(no_snapshots)


def test_cli_plot_refuses_with_a_message(kinds, tmp_path, capsys):
    path = str(tmp_path / "bare.zarr")
    save_run(wang_ma.reduced_model(4, np.pi / 15, 0.25, 0.2, np.linspace(0, 10, 5)), path)
    assert main(["plot", path]) == 2
    assert "save_all needs x_train" in capsys.readouterr().err
    path = str(tmp_path / "kernel.zarr")
    save_run(kinds["limit:kernel"], path)
    assert main(["plot", path]) == 0
    printed = capsys.readouterr()
    assert printed.out.strip().endswith("training_curves.png")
    assert "meanfield: rays.png skipped: the dataset has no particle snapshots" in printed.err


# ----------------------------------------------------------------------------- compare

ALL_F = {"f_sup_error", "f_l2_error", "f_train_sup_error", "f_train_l2_error", "loss_gap"}
DENSITY = {"density_tv", "density_w1", "density_mmd"}


def test_compare_returns_every_distance_the_data_support(kinds, runs):
    expected = {"limit:mean_field": ALL_F | DENSITY, "limit:mean_field_reference": ALL_F | DENSITY,
                "limit:kernel": ALL_F, "limit:wang_ma": {"f_train_sup_error", "f_train_l2_error",
                                                         "loss_gap"}}
    for kind, names in expected.items():
        d = compare(runs[kind], kinds[kind])
        assert set(d.data_vars) == names, kind
        for name in names:  # never silently NaN
            assert np.all(np.isfinite(d[name].values)), (kind, name)
        absent = d.attrs["not_computed"]
        if kind == "limit:kernel":
            assert absent == ("density_tv: the limit (limit:kernel) has no density; density_w1: "
                              "the limit (limit:kernel) has no density; density_mmd: the limit "
                              "(limit:kernel) has no density")
        if kind == "limit:wang_ma":
            assert "f_sup_error: the limit (limit:wang_ma) has no f_eval" in absent
        if "density" in names:
            assert absent == ""


def test_compare_values_against_a_direct_computation(kinds, runs):
    run, limit = runs["limit:kernel"], kinds["limit:kernel"]
    d = compare(run, limit)
    assert np.allclose(limit.t.values, run.t.values, rtol=1e-12, atol=0)  # same save times
    diff = run.f_train.values - limit.f_train.values
    np.testing.assert_allclose(d.f_train_sup_error.values, np.abs(diff).max(1), rtol=1e-12)
    np.testing.assert_allclose(d.f_train_l2_error.values, np.sqrt((diff ** 2).mean(1)), rtol=1e-12)


def test_compare_refuses_incompatible_configs_naming_the_field(kinds, runs):
    other_data = luo(data=pt.TrainingData(x=[[-0.5], [0.5]], y=[0.1, 0.2],
                                          x_eval=np.linspace(-1, 1, 201)[:, None]))
    with pytest.raises(ValueError, match=r"incompatible configs; they differ in data.x "
                                         r"\(run array\(4, 1\), limit array\(2, 1\)\); data.y"):
        compare(runs["limit:mean_field_reference"], kernel.kernel_limit(
            other_data.replace(**{"model.parametrisation.gamma": 0.5})))
    with pytest.raises(ValueError, match="differ in model.init"):
        compare(runs["limit:mean_field_reference"], kinds["limit:mean_field"])
    with pytest.raises(ValueError, match=r"the run is a limit \(limit:kernel\) and the limit a "
                                         r"run: the arguments are swapped"):
        compare(kinds["limit:kernel"], runs["limit:kernel"])
    # the kernel limit is the kernel flow of its own width: another width is refused
    run = runs["limit:kernel"]
    width = run_config(run).model.width
    other_width = kernel.kernel_limit(run_config(run).replace(**{"model.width": 2 * width}))
    with pytest.raises(ValueError, match=rf"differ in model.width \(run {width}, limit "
                                         rf"{2 * width}\)"):
        compare(run, other_width)
    with pytest.raises(ValueError, match=r"model.parametrisation regime \(run 'critical', limit "
                                         r"'linear'\)"):
        compare(runs["limit:mean_field_reference"], kinds["limit:kernel"])
    with pytest.raises(ValueError, match="the run's t is iteration and the limit's is "
                                         "gradient-flow time"):
        compare(kinds["analytic"], kinds["limit:mean_field_reference"])
    with pytest.raises(ValueError, match="the run is a sweep summary"):
        compare(kinds["sweep-summary"], kinds["limit:mean_field_reference"])


def test_compare_clips_the_run_to_the_limit_time_range(runs):
    run = runs["limit:kernel"]
    short = kernel.kernel_limit(luo(gamma=0.5), t=[0.1, T / 2])
    with pytest.warns(UserWarning, match=r"run times lie outside the limit's time range \[0, 0.5\]"):
        d = compare(run, short)
    assert d.t.values.max() <= T / 2 and d.sizes["t"] == int((run.t.values <= T / 2).sum())
    assert np.all(np.isfinite(d.f_sup_error.values))
    with pytest.raises(ValueError, match="pass clip=True"):
        compare(run, short, clip=False)
    late = kernel.kernel_limit(luo(gamma=0.5), t=[10.0, 20.0]).isel(t=slice(1, None))
    with pytest.raises(ValueError, match="do not overlap"):
        compare(run, late)


def test_cli_compare_lists_what_it_cannot_compute(kinds, runs, tmp_path, capsys):
    run, limit = str(tmp_path / "run.zarr"), str(tmp_path / "limit.zarr")
    save_run(runs["limit:wang_ma"], run)
    save_run(kinds["limit:wang_ma"], limit)
    assert main(["compare", run, limit]) == 0
    out = capsys.readouterr().out
    assert "loss_gap" in out and "f_train_sup_error" in out
    assert "not computed  density_tv: the limit (limit:wang_ma) has no density" in out
    other = str(tmp_path / "kernel.zarr")
    save_run(kinds["limit:kernel"], other)
    assert main(["compare", run, other]) == 2
    assert "incompatible configs" in capsys.readouterr().err


# ----------------------------------------------------------------------------- open_run, export

def test_open_run_and_export_every_kind(kinds, sweep_store, tmp_path):
    for kind, ds in kinds.items():
        if kind == "sweep-summary":
            continue
        path = str(tmp_path / f"{kind.replace(':', '_')}.zarr")
        save_run(ds, path)
        back = open_run(path).load()
        assert schema.kind_of(back) == kind
        xr.testing.assert_allclose(back.loss, ds.loss)
        nc = export_netcdf(path, str(tmp_path / f"{kind.replace(':', '_')}.nc"))
        assert xr.open_dataset(nc).attrs["kind"] == kind
    with pytest.raises(ValueError, match="is a sweep store .*open_sweep"):
        open_run(sweep_store)


def test_compare_says_where_the_limit_is_undefined(kinds, runs):
    limit = kinds["limit:wang_ma"].copy(deep=True)
    limit["loss"][-3:] = np.nan  # as the reduced model past a Phase IV event
    limit.attrs.update(event="negatives_on_x_plus", event_time=float(limit.t[-4]))
    with pytest.warns(UserWarning, match=r"NaN where the limit is undefined \(its "
                                         r"negatives_on_x_plus event at t=.*\): loss_gap at 3 times"):
        d = compare(runs["limit:wang_ma"], limit)
    assert d.attrs["nan_where_limit_undefined"].endswith("loss_gap at 3 times")
    assert np.isnan(d.loss_gap.values[-3:]).all() and np.isfinite(d.loss_gap.values[:-3]).all()
