"""The adaptive gradient-flow integrator: exact frozen-field motion, face events, Filippov
sliding, convergence order, and agreement with an independent fine-step Euler reference."""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import meanfield as mf
from particles.flow import face_time, free_motion, move_particle

EPS64 = 64 * np.finfo(np.float64).eps


@pytest.mark.parametrize("trainable", (True, False))
@pytest.mark.parametrize("t", (1e-6, 0.3, 2.0, 7.0))
def test_free_motion_solves_the_frozen_linear_ode(rng, trainable, t):
    a, w, G = rng.standard_normal(), rng.standard_normal(3), rng.standard_normal(3)

    def rhs(_, y):
        return np.r_[-(y[1:] @ G) if trainable else 0.0, -y[0] * G]

    ref = solve_ivp(rhs, (0, t), np.r_[a, w], method="DOP853", rtol=1e-13, atol=1e-15).y[:, -1]
    a_t, w_t, phi = free_motion(jnp.asarray(a), jnp.asarray(w), jnp.asarray(G), jnp.asarray(t),
                                trainable)
    scale = np.abs(ref).max()
    np.testing.assert_allclose(a_t, ref[0], rtol=1e-10, atol=1e-12 * scale)
    np.testing.assert_allclose(w_t, ref[1:], rtol=1e-10, atol=1e-12 * scale)
    np.testing.assert_allclose(w + phi * G, w_t, rtol=1e-12, atol=1e-14 * scale)


def test_zero_field_is_bit_exact_identity(rng):
    a, w = jnp.asarray(rng.standard_normal()), jnp.asarray(rng.standard_normal(4))
    for trainable in (True, False):
        a_t, w_t, _ = free_motion(a, w, jnp.zeros(4), jnp.asarray(3.0), trainable)
        assert a_t == a and np.array_equal(w_t, w)


@pytest.mark.parametrize("trainable", (True, False))
def test_face_time_hits_the_target(rng, trainable):
    a, w, G = 0.8, rng.standard_normal(3), rng.standard_normal(3)
    a_, w_, G_ = jnp.asarray(a), jnp.asarray(w), jnp.asarray(G)
    h = jnp.asarray(1.5)
    _, _, phi_h = free_motion(a_, w_, G_, h, trainable)
    phi_star = 0.37 * phi_h
    tau = face_time(a_, w_, G_, phi_star, h, trainable)
    _, _, phi_tau = free_motion(a_, w_, G_, tau, trainable)
    assert 0 < float(tau) < 1.5
    np.testing.assert_allclose(phi_tau, phi_star, rtol=1e-12)


@partial(jax.jit, static_argnums=5)
def _move(a, w, x, r, h, trainable):
    x = jnp.asarray(x)
    out = move_particle(jnp.asarray(a), jnp.asarray(w), x, jnp.sum(x * x, 1), jnp.asarray(r),
                        jnp.asarray(h), EPS64, 0.0, trainable)
    return out[0], out[1], out[3]


def test_filippov_sliding_matches_closed_form():
    """A Wang & Ma negative neuron reaches the face w.x_+ = 0 and slides along it."""
    delta = math.pi / 15
    x_plus, x_minus = np.array([1.0, 0.0]), np.array([math.cos(delta), math.sin(delta)])
    x = np.stack([x_plus, x_minus])
    g_plus, g_minus = 0.8, 0.2
    residual = np.array([-g_plus, g_minus])  # exponential loss: l' = -y exp(-y f)
    w0 = np.array([0.01, 0.3])  # active on both, close to the face of x_+
    velocity = -g_plus * x_plus + g_minus * x_minus  # s = -1, active on both
    tau = -(w0 @ x_plus) / (velocity @ x_plus)
    h = 5 * tau
    sliding = g_minus * (x_minus - math.cos(delta) * x_plus)
    expected = w0 + tau * velocity + (h - tau) * sliding
    a_t, w_t, _ = _move(-1.0, w0, x, residual, h, trainable=False)
    np.testing.assert_allclose(w_t, expected, rtol=1e-12, atol=1e-15)
    assert abs(w_t @ x_plus) < 1e-15 and a_t == -1.0
    # a second step keeps sliding exactly on the face
    _, w_2, _ = _move(-1.0, w_t, x, residual, h, trainable=False)
    np.testing.assert_allclose(w_2, w_t + h * sliding, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("trainable", (True, False))
def test_step_composition_through_a_face(rng, trainable):
    """Exact motion in a frozen field: one step equals many small ones, events included."""
    x = np.c_[rng.uniform(-1, 1, 4), np.ones(4)]
    residual = rng.standard_normal(4) * 0.3
    crossings = 0
    for _ in range(40):
        a, w = rng.standard_normal(), rng.standard_normal(2)
        _, _, tau2 = _move(a, w, x, residual, 0.0, trainable)
        h = min(0.5 * float(tau2), 2.0)  # the integrator's bound: at most one new face
        a1, w1, _ = _move(a, w, x, residual, h, trainable)
        a2, w2 = a, w
        for _ in range(64):
            a2, w2, _ = _move(a2, w2, x, residual, h / 64, trainable)
        crossings += int(np.any(np.sign(x @ w) != np.sign(x @ w1)))
        np.testing.assert_allclose(w1, w2, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(a1, a2, rtol=1e-9, atol=1e-11)
    assert crossings > 0  # the check did exercise face events


def _luo(gamma, rtol, **kw):
    cfg = mf.presets.luo_1d(gamma=gamma, width=200, precision="float64", rtol=rtol, t_max=50.0,
                            mse_tol=1e-30, n_saves=3)
    return mf.simulate(cfg.replace(**kw) if kw else cfg, progress=False)


def test_second_order_convergence_in_the_tolerance():
    ref = _luo(1.0, 1e-8).f_eval.values[-1]
    steps, errors = [], []
    for rtol in (1e-3, 1e-4, 1e-5, 1e-6):
        ds = _luo(1.0, rtol)
        steps.append(int(ds.n_steps[-1]))
        errors.append(np.max(np.abs(ds.f_eval.values[-1] - ref)))
    order = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert np.all(np.diff(errors) < 0)
    assert 1.7 < order < 2.5, (steps, errors, order)
    assert errors[-1] < 1e-7


def test_euler_converges_to_the_adaptive_flow_with_sliding():
    """An independent reference: plain Euler (the verified velocity kernel) at shrinking dt
    approaches the adaptive solution at first order, in a run with Filippov sliding."""
    cfg = mf.presets.wang_ma(width=200, kappa=0.01, t_max=0.2, n_saves=3)
    ref = mf.simulate(cfg.replace(**{"solver.rtol": 1e-9}), progress=False)
    errs = []
    for dt in (1e-5, 1e-6):
        ds = mf.simulate(cfg.replace(solver=mf.Solver(kind="euler", dt=dt)), progress=False)
        errs.append(np.max(np.abs(ds.snapshot_w.values[-1] - ref.snapshot_w.values[-1])))
    assert errs[1] < 2e-6 and 5 < errs[0] / errs[1] < 20, errs


@pytest.mark.parametrize("gamma,gamma_prime", [(0.5, 0.0), (1.0, 0.0), (1.75, 0.0), (2.5, 0.0),
                                               (1.0, 0.4), (1.0, -0.4)])
def test_no_step_tuning_across_init_scales(gamma, gamma_prime):
    """Init scales spanning decades (sigma from m^0.25 to m^-0.75) converge with default settings."""
    cfg = mf.presets.luo_1d(gamma=gamma, gamma_prime=gamma_prime, width=1000, n_saves=20)
    ds = mf.simulate(cfg, progress=False)
    assert ds.attrs["stop_reason"] == "loss_tol", float(ds.loss[-1])
    assert 2 * float(ds.loss[-1]) < 1e-6
    assert int(ds.n_steps[-1]) < 3000
