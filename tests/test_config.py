"""Bad input fails at construction, naming the parameter and the allowed values."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import meanfield as mf
import meanfield.particles as pt
from meanfield import cli


@given(st.integers(max_value=0))
def test_width_below_one(width):
    with pytest.raises(ValueError, match="model.width"):
        pt.ModelSpec(width=width)


@given(st.floats(max_value=0, allow_nan=False) | st.just(math.nan) | st.just(math.inf))
def test_scale_not_positive(scale):
    with pytest.raises(ValueError, match=r"^model\.init\.scale"):
        pt.InitialLaw(kind="sphere", scale=scale)


@pytest.mark.parametrize("kwargs,name", [
    ({"width": 10, "loss": "hinge"}, "model.loss"),
    ({"width": 10, "output": "fixed"}, "model.output"),
    ({"width": 11, "init": pt.InitialLaw(asi=True)}, "model.width"),
    ({"width": 2.5}, "model.width"),
])
def test_model_spec_errors(kwargs, name):
    with pytest.raises(ValueError, match=name):
        pt.ModelSpec(**kwargs)


def test_error_lists_allowed_values():
    with pytest.raises(ValueError, match=r"'squared', 'exponential', 'logistic'"):
        pt.ModelSpec(width=3, loss="hinge")


@pytest.mark.parametrize("kwargs,name", [
    ({"kind": "luo"}, "luo"),
    ({"kind": "luo", "gamma": 1.0}, "luo"),
    ({"kind": "ntk", "gamma": 1.0}, "ntk"),
    ({"kind": "luo", "alpha": -1.0, "beta1": 1.0, "beta2": 1.0},
     r"^model\.parametrisation\.alpha"),
    ({"kind": "xavier"}, r"^model\.parametrisation\.kind"),
])
def test_parametrisation_errors(kwargs, name):
    with pytest.raises(ValueError, match=name):
        pt.Parametrisation(**kwargs)


def test_data_errors():
    with pytest.raises(ValueError, match="data.x contains NaN"):
        pt.TrainingData(x=[[0.0], [np.nan]], y=[0, 1])
    with pytest.raises(ValueError, match="data.y has 3 labels"):
        pt.TrainingData(x=[[0.0], [1.0]], y=[0, 1, 2])
    with pytest.raises(ValueError, match="data.weights"):
        pt.TrainingData(x=[[0.0], [1.0]], y=[0, 1], weights=[0.2, 0.2])
    with pytest.raises(ValueError, match="data.x_eval"):
        pt.TrainingData(x=[[0.0], [1.0]], y=[0, 1], x_eval=np.zeros((3, 2)))


def test_simulation_config_errors():
    data = pt.TrainingData(x=[[0.0], [1.0]], y=[0.5, 2.0])
    model = pt.ModelSpec(width=4)
    with pytest.raises(ValueError, match="t_max"):
        mf.SimulationConfig(model=model, data=data, t_max=-1.0)
    with pytest.raises(ValueError, match=r"solver.rtol=5.0 is not allowed; it must be a "
                                         r"relative tolerance in \(0, 1\)"):
        mf.Solver(rtol=5.0)
    with pytest.raises(ValueError, match=r"rtol=1.0 is not allowed"):
        mf.presets.get("wang_ma", rtol=1.0)
    with pytest.raises(ValueError, match="width=0 is not allowed"):
        pt.Parametrisation(kind="luo", gamma=1.75, gamma_prime=0.0).regime(0, 2)
    with pytest.raises(ValueError, match="model must be a meanfield.ModelSpec, got tuple"):
        mf.SimulationConfig(model=(4,), data=data)
    with pytest.raises(ValueError, match="model.init must be a meanfield.InitialLaw, got str"):
        pt.ModelSpec(width=4, init="gaussian")
    with pytest.raises(ValueError, match="precision") as half:
        mf.SimulationConfig(model=model, data=data, precision="float16")
    assert "'float32' is its lowest" in str(half.value) and "did you mean" not in str(half.value)
    with pytest.raises(ValueError, match=r"did you mean 'float64'\?"):
        mf.SimulationConfig(model=model, data=data, precision="flaot64")
    with pytest.raises(ValueError, match="'float32' is its lowest"):
        mf.presets.get("wang_ma", precision="bfloat16")
    with pytest.raises(ValueError, match=r"data.y must be \+-1"):
        mf.SimulationConfig(model=pt.ModelSpec(width=4, loss="logistic"), data=data)
    with pytest.raises(ValueError, match="solver.dt"):
        mf.Solver(kind="euler")
    with pytest.raises(ValueError, match="solver.optimizer"):
        mf.Solver(kind="optax", dt=0.1, optimizer="not_an_optimizer")
    with pytest.raises(ValueError, match="save.t"):
        mf.SaveAt(t=(1.0, 0.5))
    with pytest.raises(ValueError, match="unknown config key 'solver.rtl'"):
        mf.presets.wang_ma().replace(**{"solver.rtl": 1e-4})
    for name in ("../../elsewhere", "a/b", "", ".hidden"):  # labels the default store path
        assert cli.main(["run", "luo_1d", "--set", f"name={name}", "--no-progress"]) == 2
        assert mf.presets.wang_ma().replace(name=name).name == name  # an explicit out is fine


def test_a_run_without_a_plane_of_neuron_angles_is_refused_before_any_compute():
    from meanfield import runner

    before = runner.TRACE_COUNT["run_chunk"]
    line = pt.TrainingData(x=[[1.0, 1.0], [2.0, 2.0]], y=[1.0, 2.0])  # collinear inputs
    no_bias = pt.ModelSpec(width=4, bias=False)
    one_d = mf.SimulationConfig(model=no_bias, data=pt.TrainingData(x=[[1.0], [2.0]],
                                                                    y=[1.0, 2.0]))
    with pytest.raises(ValueError, match=r"model.bias=False with 1-dimensional inputs .*"
                                         "model.bias=True"):
        mf.simulate(one_d, progress=False)
    with pytest.raises(ValueError, match=r"observe.plane=None .* span fewer than 2 dimensions; "
                                         r"pass observe.plane=\(u, v\)"):
        mf.simulate(mf.SimulationConfig(model=no_bias, data=line), progress=False)
    for plane, reason in ((((1.0, 1.0), (2.0, 2.0)), "parallel"), (((0.0, 0.0), (1.0, 0.0)),
                                                                     "nonzero")):
        with pytest.raises(ValueError, match=rf"observe.plane=.* is not allowed: .*{reason}"):
            mf.simulate(mf.SimulationConfig(model=no_bias, data=line,
                                            observe=mf.Observe(plane=plane)), progress=False)
    assert runner.TRACE_COUNT["run_chunk"] == before
    # what is accepted runs: an explicit plane, or the bias adding the second dimension
    for config in (mf.SimulationConfig(model=no_bias, data=line, t_max=0.1,
                                       observe=mf.Observe(plane=((1.0, 1.0), (1.0, -1.0)))),
                   mf.SimulationConfig(model=pt.ModelSpec(width=4), data=line, t_max=0.1)):
        assert np.isfinite(mf.simulate(config, progress=False).density.values).all()
    # a limit without particles needs no plane
    kernel = mf.presets.luo_1d(gamma=0.5, width=20, t_max=1.0).replace(**{"model.bias": False})
    assert np.isfinite(mf.infinite_width(kernel, kind="kernel").loss.values).all()


@given(st.sampled_from([np.int8, np.int32, np.int64, np.uint16]), st.integers(1, 60))
def test_numpy_integers_are_stored_as_python_ints(kind, value):
    width, seed = 2 * value, value  # luo_1d is antisymmetric: an even width
    cfg = mf.presets.luo_1d(width=kind(width), seed=kind(seed), n_saves=kind(value))
    assert type(cfg.model.width) is int and type(cfg.seed) is int and type(cfg.save.n) is int
    assert cfg.to_json() == mf.presets.luo_1d(width=width, seed=seed, n_saves=value).to_json()


@pytest.mark.parametrize("value", [True, np.bool_(True), 3.0, np.float64(3.0), "3"])
def test_non_integers_are_rejected(value):
    with pytest.raises(ValueError, match=r"model.width=.* it must be an integer >= 1"):
        pt.ModelSpec(width=value)


def test_config_json_round_trip():
    cfg = mf.presets.wang_ma(width=10, noisy=True).replace(**{"solver.rtol": 1e-4})
    again = mf.SimulationConfig.from_json(cfg.to_json())
    assert again.to_json() == cfg.to_json()
    assert again.solver.rtol == 1e-4


def test_save_rule_schedule_against_explicit_grids():
    from meanfield.config import SaveAt

    times, snap = SaveAt(n=5, snapshots=3).schedule(100.0, 2.0)
    np.testing.assert_allclose(times, np.r_[0.0, np.geomspace(2e-3, 100.0, 5)])
    assert snap.tolist() == [True, True, False, True, False, True]  # t = 0, 3 log-spaced, end
    times, snap = SaveAt(t=(1.0, 5.0, 50.0), snapshots=(5.0, 7.0)).schedule(10.0, float("nan"))
    assert times.tolist() == [0.0, 1.0, 5.0, 7.0, 10.0]  # t_max always, 50 beyond it not
    assert snap.tolist() == [True, False, True, True, True]
    run = mf.simulate(mf.presets.luo_1d(width=20, t_max=3.0).replace(
        save=SaveAt(t=(1.0,), snapshots=0)), progress=False)  # the run reaches t_max
    assert run.t.values.tolist() == [0.0, 1.0, 3.0] and run.attrs["stop_reason"] == "t_max"
    times, _ = SaveAt(n=3).schedule(1.0, 1e6)  # t_min capped at t_max / 10
    assert times[1] == pytest.approx(0.1)
    times, snap = SaveAt(n=1).schedule(100.0, 2.0)  # one save: the end, never t_min
    assert times.tolist() == [0.0, 100.0] and snap.tolist() == [True, True]
    from meanfield.limits.wang_ma import wang_ma_limit

    limit = wang_ma_limit(mf.presets.wang_ma(t_max=50.0, n_saves=1))
    assert limit.t.values.tolist() == [0.0, 50.0]


@pytest.mark.parametrize("make, typo, field", [
    (lambda **kw: mf.SaveAt(**kw), "nn", "n"),
    (lambda **kw: mf.Observe(**kw), "n_angle_bin", "n_angle_bins"),
    (lambda **kw: mf.Solver(**kw), "rtoll", "rtol"),
    (lambda **kw: pt.ModelSpec(**kw), "widht", "width"),
    (lambda **kw: pt.InitialLaw(**kw), "scal", "scale"),
    (lambda **kw: mf.SimulationConfig(**kw), "t_maxx", "t_max"),
])
def test_a_mistyped_argument_names_the_closest_field_and_all_of_them(make, typo, field):
    with pytest.raises(TypeError, match=rf"has no argument '{typo}' \(did you mean "
                                        rf"'{field}'\?\); its arguments: .*\b{field}\b"):
        make(**{typo: 1})


def test_positional_arguments_are_refused_with_the_field_names():
    with pytest.raises(TypeError, match=r"SaveAt\(\) takes keyword arguments only, e.g. "
                                        r"SaveAt\(t=...\); its arguments: t, t_min, n, snapshots"):
        mf.SaveAt(5)
