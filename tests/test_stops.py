"""Detection of runs that can no longer change: underflowing initial scales, dead neurons, a
frozen loss, a step below the time resolution."""

import numpy as np
import pytest

import meanfield as mf
from meanfield.particles.model import InitialLaw
from meanfield.stops import (all_neurons_dead, check_initial_scales, init_underflows,
                             initial_scales, loss_stalled, step_collapsed)


def tiny_init(sigma):
    return mf.presets.luo_1d(width=20).replace(
        **{"model.init": InitialLaw(kind="gaussian", sigma_a=sigma, sigma_w=sigma, asi=True)})


def test_initial_scales_follow_the_parametrisation():
    config = mf.presets.luo_1d(width=100, gamma=1.5, gamma_prime=0.25)
    scales = initial_scales(config)
    # Luo's sigma_a = m^((1 - gamma - gamma')/2), sigma_w = m^((1 - gamma + gamma')/2)
    np.testing.assert_allclose(scales["a"], 100 ** ((1 - 1.5 - 0.25) / 2))
    np.testing.assert_allclose(scales["w"], 100 ** ((1 - 1.5 + 0.25) / 2))
    np.testing.assert_allclose(scales["output"], scales["a"] * scales["w"] * 1.0)  # |(x, 1)| <= 1


def test_underflowing_init_is_refused_with_the_fix():
    assert init_underflows(mf.presets.luo_1d()) is None
    assert init_underflows(mf.presets.wang_ma()) is None
    reason = init_underflows(tiny_init(1e-30))  # outputs ~ 1e-60: below float32's 1.2e-38
    assert "underflow float32" in reason and "precision='float64'" in reason
    assert init_underflows(tiny_init(1e-30).replace(precision="float64")) is None
    with pytest.raises(ValueError, match="float64"):
        check_initial_scales(tiny_init(1e-30))
    huge = init_underflows(mf.presets.luo_1d(gamma=1e6))  # m^-5e5 is 0 in any precision
    assert "underflow" in huge and "larger initial scale" in huge
    assert "overflow" in init_underflows(mf.presets.luo_1d(gamma=-1e6))


def test_all_neurons_dead():
    x = np.array([[0.5, 1.0], [-0.5, 1.0]])  # inputs with bias
    assert all_neurons_dead(np.array([[0.0, -1.0], [1.0, -2.0]]), x)
    assert not all_neurons_dead(np.array([[0.0, -1.0], [1.0, -0.2]]), x)
    assert all_neurons_dead(np.zeros((3, 2)), x)  # padding neurons are inactive


def test_loss_stalled_and_step_collapsed():
    flat = np.full(30, 0.125, np.float32)
    assert loss_stalled(flat, "float32")
    assert loss_stalled(flat + np.float32(1e-9), "float32")  # below one ulp of 0.125
    assert not loss_stalled(np.linspace(1, 0.9, 30), "float32")
    assert not loss_stalled(flat[:5], "float32")  # too few records to tell
    assert step_collapsed(1e-3, 1e6, "float32") and not step_collapsed(1e-3, 1e6, "float64")
    assert not step_collapsed(1.0, 1e6, "float32")


def test_cli_exit_status_of_an_honest_stop(monkeypatch, tmp_path, capsys):
    """A run the runner ends with a stop reason of ``STOP_REASONS`` exits 1 with its message."""
    from meanfield import cli, runner

    ds = mf.simulate(mf.presets.luo_1d(width=20, t_max=5.0, n_saves=20), progress=False)

    def stopped_run(*args, out, **kwargs):  # as simulate does: the store written, then opened
        mf.save_run(ds.assign_attrs(stop_reason="all_dead"), out)
        return mf.open_run(out)

    monkeypatch.setattr(runner, "simulate", stopped_run)
    argv = ["run", "luo_1d", "--width", "20", "--out", str(tmp_path / "r.zarr"), "--no-plots",
            "--no-progress"]
    assert cli.main(argv) == 1
    assert "every neuron is inactive" in capsys.readouterr().err


def test_a_run_whose_neurons_all_die_stops_with_its_own_reason(tmp_path):
    """GD with a huge step kills every neuron within a few steps: the run ends there with
    stop_reason all_dead and a warning (it used to integrate a frozen state to t_max), and the
    CLI exits 1."""
    import warnings

    import meanfield as mf
    from meanfield.cli import main

    config = mf.presets.luo_1d(width=1000, gamma=1.75).replace(
        solver=mf.Solver(kind="euler", dt=100.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = mf.simulate(config, progress=False)
    assert ds.attrs["stop_reason"] == "all_dead"
    assert float(ds.t[-1]) < 1e5 < config.t_max
    dead = [w for w in caught if "all_dead" in str(w.message)]
    assert dead and dead[0].filename == __file__  # points at the caller's line
    code = main(["run", "luo_1d", "--width", "1000", "--set", "gamma=1.75",
                 "--set", "solver.kind='euler'", "--set", "solver.dt=100", "--no-plots",
                 "--no-progress", "--out", str(tmp_path / "dead.zarr")])
    assert code == 1


def test_simulate_refuses_an_underflowing_init_before_any_compute(monkeypatch):
    import meanfield.runner as runner

    calls = []
    monkeypatch.setattr(runner, "prepare_problem", lambda *a: calls.append(a))
    with pytest.raises(ValueError, match="precision='float64'"):
        mf.simulate(tiny_init(1e-30), progress=False)
    with pytest.raises(ValueError, match="larger initial scale"):
        mf.simulate(mf.presets.luo_1d(gamma=1e6), progress=False)
    assert not calls  # refused before any array was built


@pytest.mark.slow
def test_huge_labels_and_a_huge_t_max_end_in_a_message_or_a_result(tmp_path):
    """y = 1e10 in float32 and t_max = 1e12 used to run for minutes without a word: the first
    now stops with the step-underflow message, the second at the loss tolerance."""
    from meanfield.cli import main

    config = mf.presets.luo_1d(width=1000, gamma=1.75)
    data = config.data
    big = config.replace(data=mf.TrainingData(x=data.x, y=data.y * 1e10, x_eval=data.x_eval))
    with pytest.raises(mf.DivergenceError, match="step_underflow") as caught:
        mf.simulate(big, progress=False)
    assert caught.value.dataset is not None
    out = str(tmp_path / "long.zarr")
    assert main(["run", "luo_1d", "--width", "1000", "--set", "gamma=1.75", "--t-max", "1e12",
                 "--no-plots", "--no-progress", "--out", out]) == 0
    assert mf.open_run(out).attrs["stop_reason"] == "loss_tol"


class Records:
    """The recorder interface ``early_stop`` reads: the last records of a variable."""

    def __init__(self, **values):
        self.values = values

    def recent(self, name, count):
        return np.asarray(self.values[name])[-count:]


def test_a_stall_needs_the_outputs_unchanged_too():
    """Loss and displacement constant to working precision while every output still moves
    (output weights of 1e-20 in float32: the displacement underflows to 0) is no stall."""
    from meanfield.runner import STALL_RECORDS, early_stop

    k = STALL_RECORDS
    config = mf.presets.wang_ma(precision="float32")
    state = type("State", (), {"h": 1e-3, "t": 1.0})()
    frozen = dict(t=np.geomspace(1e-23, 1e-21, k), loss=np.ones(k), rd=np.zeros(k),
                  alive_fraction=np.ones((k, 3)), f_train=np.full((k, 5), -1e-22))
    assert early_stop(Records(**frozen), state, None, config) == "loss_stalled"
    moving = np.linspace(-1.0e-22, -1.2e-22, k)[:, None] * np.ones(5)
    assert early_stop(Records(**{**frozen, "f_train": moving}), state, None, config) is None


def test_a_run_at_tiny_times_lands_on_its_save_times():
    """kappa = 1e-300: the save times start near 1e-303. A step ending one unit in the last place
    below a save time left a remaining time that XLA:CPU flushes to zero (subnormal), and the
    flow took steps of length 0 until max_steps; it lands on the save time instead."""
    ds = mf.simulate(mf.presets.wang_ma(kappa=1e-300).replace(max_steps=5000), progress=False)
    assert ds.attrs["stop_reason"] == "t_max"
    neighbour = mf.simulate(mf.presets.wang_ma(kappa=1e-295), progress=False)
    assert int(ds.n_steps[-1]) < 2 * int(neighbour.n_steps[-1])  # 536 and 542 steps


def test_a_tiny_float32_initialisation_is_not_taken_for_a_stall():
    """...and its end is t_max although float32 rounds 1e-19 down (it was called loss_tol,
    with no loss tolerance set)."""
    ds = mf.simulate(mf.presets.wang_ma(kappa=1e-20, precision="float32", t_max=1e-19,
                                        n_saves=40), progress=False)
    assert ds.attrs["stop_reason"] == "t_max"
    assert float(ds.rd[-1]) == 0 and float(ds.f_train[-1, 0]) != float(ds.f_train[1, 0])
