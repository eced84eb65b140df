"""mf.compare: distances between a run and a limit, checked against independent computations."""

import numpy as np
import pytest
import xarray as xr
from scipy.optimize import linprog

import meanfield as mf
from meanfield.limits.compare import circular_mmd, circular_w1, compare


def transport_lp(p, q, angles):
    """Circular W1 by linear programming over transport plans (independent of the formula)."""
    n = len(p)
    d = np.abs(angles[:, None] - angles[None, :])
    cost = np.minimum(d, 2 * np.pi - d).ravel()
    rows = np.kron(np.eye(n), np.ones(n))
    cols = np.kron(np.ones(n), np.eye(n))
    res = linprog(cost, A_eq=np.vstack([rows, cols]), b_eq=np.r_[p, q], bounds=(0, None),
                  method="highs")
    return res.fun


def test_circular_w1_equals_optimal_transport(rng):
    n = 24
    angles = -np.pi + (np.arange(n) + 0.5) * 2 * np.pi / n
    for _ in range(5):
        p, q = rng.random(n) ** 3, rng.random(n) ** 3
        p, q = p / p.sum(), q / q.sum()
        assert circular_w1(p, q, 2 * np.pi / n) == pytest.approx(transport_lp(p, q, angles), rel=1e-6)
    one = np.eye(n)
    assert circular_w1(one[0], one[n - 1], 2 * np.pi / n) == pytest.approx(2 * np.pi / n)  # wraps


def test_circular_mmd_double_loop(rng):
    n = 16
    angles = -np.pi + (np.arange(n) + 0.5) * 2 * np.pi / n
    p, q = rng.random(n), rng.random(n)
    p, q = p / p.sum(), q / q.sum()
    total = 0.0
    for i in range(n):
        for j in range(n):
            d = abs(angles[i] - angles[j])
            d = min(d, 2 * np.pi - d)
            total += (p[i] - q[i]) * (p[j] - q[j]) * np.exp(-0.5 * (d / 0.3) ** 2)
    assert circular_mmd(p, q, angles, 0.3) == pytest.approx(np.sqrt(total), rel=1e-10)
    assert circular_mmd(p, p, angles, 0.3) == 0


def test_compare_run_with_itself_and_a_shifted_copy():
    run = mf.simulate(mf.presets.luo_1d(width=40, t_max=5.0, n_saves=20), progress=False)
    same = compare(run, run)
    assert float(same.f_sup_error.max()) == 0 and float(abs(same.loss_gap).max()) == 0
    assert float(same.density_tv.max()) == 0 and float(same.density_w1.max()) == 0
    shifted = run.assign(f_eval=run.f_eval + 0.25, loss=run.loss * 2)
    d = compare(run, shifted)
    np.testing.assert_allclose(d.f_sup_error.values, 0.25, rtol=1e-6)
    np.testing.assert_allclose(d.f_l2_error.values, 0.25, rtol=1e-6)
    np.testing.assert_allclose(d.loss_gap.values, -run.loss.values)
    rolled = run.assign(density=run.density.roll(angle=3))
    w1 = compare(run, rolled).density_w1.sel(sign="all").values[1:]
    assert np.all(w1 <= 3 * 2 * np.pi / run.sizes["angle"] * (1 + 1e-6)) and np.all(w1 > 0)


def test_compare_interpolates_the_limit_in_log_time():
    run = mf.simulate(mf.presets.luo_1d(width=40, t_max=5.0, n_saves=20), progress=False)
    finer = xr.Dataset({"loss": ("t", np.log(np.r_[1e-9, np.geomspace(1e-4, 10, 400)]))},
                       coords={"t": np.r_[0.0, np.geomspace(1e-4, 10, 400)]})
    run_log = run.assign(loss=np.log(np.maximum(run.t, 1e-9)))
    gap = compare(run_log, finer).loss_gap.values[1:]
    assert np.all(np.abs(gap) < 1e-9)
    with pytest.raises(ValueError, match="no comparable"):
        compare(run[["n_steps"]], finer[[]])
