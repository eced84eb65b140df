"""Gradient-flow accuracy on the papers' settings (docs/theory/phase-diagram.md, docs/theory/wang-ma.md), checked against theory."""

import math

import numpy as np
import pytest

import meanfield as mf
from meanfield.presets import wang_ma_directions

P, DELTA = 4, math.pi / 15
X_PLUS, X_MINUS = wang_ma_directions()
N2 = (P - math.cos(DELTA)) * X_MINUS - (P * math.cos(DELTA) - 1) * X_PLUS
MU = (P * X_PLUS - X_MINUS) / np.linalg.norm(P * X_PLUS - X_MINUS)


def snapshot(ds, t):
    i = int(np.argmin(np.abs(ds.t_snapshot.values - t)))
    return ds.snapshot_a.values[i], ds.snapshot_w.values[i]


def alive_sets(a, w):
    z_plus, z_minus = w @ X_PLUS, w @ X_MINUS
    return (a > 0) & ((z_plus > 0) | (z_minus > 0)), (a < 0) & (z_minus > 0)


def test_phase_one_survivors_and_alignment_time():
    """m = 1000, kappa = 0.01, float64: exact survivor sets, dead neurons untouched, and the
    alignment time t(cos >= 0.99 with mu) / kappa within 3% of 11.58 (arXiv 2305.12467)."""
    kappa = 0.01
    grid = tuple(kappa * np.linspace(10.5, 12.5, 41))
    cfg = mf.presets.wang_ma(width=1000, kappa=kappa, t_max=2.0, n_saves=20)
    ds = mf.simulate(cfg.replace(**{"save.snapshots": grid + (2.0,)}), progress=False)
    a, w0 = snapshot(ds, 0.0)
    u = w0 / np.linalg.norm(w0, axis=1, keepdims=True)
    pos_pred = (a > 0) & (u @ X_PLUS > 0)
    neg_pred = (a < 0) & (u @ X_MINUS > 0) & (u @ N2 > 0)
    _, w_end = snapshot(ds, 2.0)
    pos_alive, neg_alive = alive_sets(a, w_end)
    assert np.array_equal(pos_alive, pos_pred)
    assert np.array_equal(neg_alive, neg_pred)
    never_active = np.all(np.c_[w0 @ X_PLUS, w0 @ X_MINUS] <= 0, axis=1)
    assert never_active.sum() > 300 and np.array_equal(w_end[never_active], w0[never_active])
    worst = []
    for t in grid:
        _, w = snapshot(ds, t)
        v = w[pos_pred]
        worst.append(np.min(v @ MU / np.linalg.norm(v, axis=1)))
    worst = np.array(worst)
    k = int(np.argmax(worst >= 0.99))
    assert 0 < k, worst
    t_align = np.interp(0.99, worst[k - 1:k + 1], grid[k - 1:k + 1])
    assert abs(t_align / kappa / 11.58 - 1) < 0.03, t_align / kappa


def escape_and_loss(ds):
    a, w = snapshot(ds, 30.0)
    rho_plus = np.mean((a > 0) & (w @ X_PLUS > 0))
    rho_minus = np.mean((a < 0) & (w @ X_MINUS > 0))
    f_minus, t = ds.f_train.values[:, -1], ds.t.values
    k = np.flatnonzero((f_minus[1:] < 0) & (f_minus[:-1] >= 0))[-1] + 1
    t_cross = math.exp(np.interp(0.0, [-f_minus[k - 1], -f_minus[k]],
                                 [math.log(t[k - 1]), math.log(t[k])]))
    rho = rho_plus + rho_minus
    t_esc = 2 * (1 + P) * (1 - P ** -0.5) / (rho * DELTA ** 2)
    loss_pred = 2 / ((1 + P) / math.sqrt(P) + rho * DELTA ** 2 * 1500 / 2)
    return t_cross, t_esc, float(ds.loss[-1]), loss_pred


@pytest.mark.parametrize("seed", range(5))
def test_wang_ma_preset_escape_time_and_final_loss(seed):
    """Defaults (kappa = 0.1, m = 100): escape at t_esc within 3% (the run's own rho's), loss at
    t = 1500 within 3% of the Phase III/IV law, fewer than 20,000 steps, alive sets equal to a
    100x tighter float64 run."""
    cfg = mf.presets.wang_ma(seed=seed).replace(**{"save.snapshots": (30.0,)})
    ds = mf.simulate(cfg, progress=False)
    t_cross, t_esc, loss, loss_pred = escape_and_loss(ds)
    assert abs(t_cross / t_esc - 1) < 0.03, (t_cross, t_esc)
    assert bool(ds.accuracy[-1] == 1.0)
    first_full = ds.t.values[np.flatnonzero(ds.accuracy.values < 1)[-1] + 1]
    assert abs(first_full / t_esc - 1) < 0.03
    assert abs(loss / loss_pred - 1) < 0.03, (loss, loss_pred)
    assert int(ds.n_steps[-1]) < 20_000
    tight = mf.simulate(cfg.replace(**{"solver.rtol": cfg.solver.rtol / 100}), progress=False)
    for t in (30.0, 1500.0):
        for ours, ref in zip(alive_sets(*snapshot(ds, t)), alive_sets(*snapshot(tight, t))):
            assert np.array_equal(ours, ref)


def test_gd_with_the_authors_step_kills_negative_neurons():
    """docs/theory/wang-ma.md: GD with step 1e-2 at kappa = 0.1 is not the gradient flow in Phase I."""
    fewer = 0
    for seed in range(3):
        cfg = mf.presets.wang_ma(seed=seed, t_max=20.0, n_saves=50)
        flow = mf.simulate(cfg, progress=False)
        gd = mf.simulate(cfg.replace(solver=mf.Solver(kind="euler", dt=1e-2)), progress=False)
        n_flow = alive_sets(*snapshot(flow, 20.0))[1].sum()
        n_gd = alive_sets(*snapshot(gd, 20.0))[1].sum()
        assert n_gd <= n_flow
        fewer += n_gd < n_flow
    assert fewer >= 2


def test_luo_condensed_reaches_paper_tolerance_without_tuning():
    """(gamma, gamma') = (1.75, 0), m = 4000: MSE 1e-6 with default settings."""
    ds = mf.simulate(mf.presets.luo_1d(gamma=1.75, width=4000), progress=False)
    assert ds.attrs["stop_reason"] == "loss_tol"
    assert 2 * float(ds.loss[-1]) <= 1e-6
    assert int(ds.n_steps[-1]) < 2000
