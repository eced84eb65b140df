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
from meanfield.particles.flow import face_time, free_motion, move_particle

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


# ----------------------------------------------------------------------------- fast kernel

from meanfield.particles import flow  # noqa: E402  (white-box tests of its helpers)
from meanfield.particles.flow import OUTPUTS, move_particles  # noqa: E402
from reference_kernels import free_motion_reference, move_particle_reference  # noqa: E402


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 4e-15), (np.float32, 2e-6)])
def test_hyperbolic_terms_match_independent_forms(dtype, rtol):
    """sinh(s)/s and (cosh(s) - 1)/s^2 from one expm1 against numpy's sinh in float64
    (Taylor series below 1e-3, where sinh(s)/s loses digits)."""
    s = np.r_[0.0, 1e-30, 1e-12, 1e-6, 1e-4, 1e-3, np.geomspace(2e-3, 40.0, 60)]
    sinhc, coshc = flow._hyperbolic_terms(jnp.asarray(s, dtype))
    small = s < 1e-3
    safe = np.where(small, 1.0, s)
    ref_sinhc = np.where(small, 1 + s**2 / 6 + s**4 / 120, np.sinh(safe) / safe)
    ref_coshc = np.where(small, 0.5 + s**2 / 24 + s**4 / 720,
                         2 * np.sinh(safe / 2) ** 2 / safe**2)
    np.testing.assert_allclose(np.asarray(sinhc, np.float64), ref_sinhc, rtol=rtol)
    np.testing.assert_allclose(np.asarray(coshc, np.float64), ref_coshc, rtol=rtol)


@pytest.mark.parametrize("trainable", (True, False))
def test_face_time_closed_form_finds_the_unique_root(rng, trainable):
    """Targets phi(tau_true) of the sinh-based reference motion, over field strengths |G| h
    from 1e-6 to 5, half of them with w leaning along G so that a(t) = -dphi/dt changes sign
    within the step: the closed form returns tau_true wherever phi - phi_star changes sign
    once on [0, h], including roots past the turning point of phi."""
    checked = past_turn = 0
    for _ in range(400):
        a, w = rng.standard_normal(), rng.standard_normal(3)
        field = rng.standard_normal(3) * 10.0 ** rng.uniform(-6, 0.7)
        if rng.random() < 0.5:
            w += 2.0 * np.sign(a) * field / np.linalg.norm(field)
        h = 10.0 ** rng.uniform(-1, 0.5)
        tau_true = rng.uniform(0.05, 0.95) * h
        motion = lambda t: free_motion_reference(a, w, jnp.asarray(field), t, trainable)
        a_true, _, phi_star = motion(tau_true)
        phi_h = motion(h)[2]
        if np.sign(phi_h - phi_star) == np.sign(-phi_star):
            continue  # no sign change: two roots or none in [0, h]
        tau = face_time(jnp.asarray(a), jnp.asarray(w), jnp.asarray(field),
                        jnp.asarray(phi_star), jnp.asarray(h), trainable)
        scale = max(abs(float(phi_star)), abs(float(phi_h)))
        tol = 1e-12 * scale / abs(float(a_true)) + 1e-13 * h  # phi rounding / rate at root
        np.testing.assert_allclose(tau, tau_true, rtol=0, atol=tol)
        checked += 1
        past_turn += int(np.sign(a_true) != np.sign(a))
    assert checked > 300
    assert past_turn > 10 or not trainable


def test_count_before_matches_cumsum(rng):
    for m in (33, 4099):
        mask = rng.random(m) < rng.uniform(0.01, 0.9)
        expected = np.cumsum(mask) - mask
        np.testing.assert_array_equal(flow._count_before(jnp.asarray(mask)), expected)


def _particles_near_faces(rng, x, count, on_face=0.3):
    """Gaussian particles, a fraction moved inside the face band of a random face, on either
    side of it by 4-40 eps (so that rounding cannot change their side)."""
    n, dim = x.shape
    a, w = rng.standard_normal(count), rng.standard_normal((count, dim))
    xx = np.sum(x * x, 1)
    for k in np.flatnonzero(rng.random(count) < on_face):
        j = rng.integers(n)
        w[k] -= (x[j] @ w[k]) / xx[j] * x[j]
        offset = rng.choice([-1, 1]) * rng.uniform(4, 40) * np.finfo(float).eps
        w[k] += offset * np.linalg.norm(w[k]) / np.sqrt(xx[j]) * x[j]
    return a, w


def _band_rule_counts(a, w, x, residual):
    """(in band, slide candidates) per particle, by the band rule in numpy."""
    xx = np.sum(x * x, 1)
    z = w @ x.T
    band = EPS64 * np.linalg.norm(w, axis=1)[:, None] * np.sqrt(xx)
    in_band, strict = np.abs(z) <= band, z > band
    x_strict = (np.where(strict, residual, 0) @ x) @ x.T
    n_minus, n_plus = -a[:, None] * x_strict, -a[:, None] * (x_strict + residual * xx)
    return in_band.any(1), (in_band & (n_minus > 0) & (n_plus < 0)).any(1)


@pytest.mark.parametrize("n,dim,trainable", [(4, 2, True), (5, 20, False), (12, 3, True)])
def test_fast_kernel_equals_reference_kernel(rng, n, dim, trainable):
    """move_particle and move_particles (fast step + redo in blocks) against the previous
    kernel in float64, on particles with face events, sliding and band starts. Steps respect
    the integrator's bound (h < tau2 / 2) so that the Filippov motion is unique."""
    x = rng.standard_normal((n, dim))
    residual = rng.standard_normal(n) * 0.5
    a, w = _particles_near_faces(rng, x, 1500)
    common = (jnp.asarray(x), jnp.asarray(np.sum(x * x, 1)), jnp.asarray(residual))
    reference = jax.jit(jax.vmap(move_particle_reference, (0, 0) + (None,) * 7),
                        static_argnums=8)
    tau2_0 = np.asarray(reference(a, w, *common, jnp.asarray(0.0), EPS64, 0.0, trainable)[3])
    h = 0.1
    keep = (tau2_0 > 2 * h)[: 1496 // 8 * 8]
    a, w = a[: keep.size][keep], w[: keep.size][keep]
    a, w = a[: a.size // 8 * 8], w[: a.size // 8 * 8]
    args = (*common, jnp.asarray(h), EPS64, 0.0)
    ref = [np.asarray(v) for v in reference(a, w, *args, trainable)]
    one = jax.jit(jax.vmap(move_particle, (0, 0) + (None,) * 7), static_argnums=8)
    every = jax.jit(move_particles, static_argnums=8,
                    static_argnames=("n_chunks", "outputs", "event_block"))
    moved = every(a, w, *args, trainable, n_chunks=8, outputs="all", event_block=16)

    events = np.any((w @ x.T > 0) != (ref[1] @ x.T > 0), axis=1).sum()
    in_band, sliding = _band_rule_counts(a, w, x, residual)
    assert events > 100 and in_band.sum() > 100 and sliding.sum() > 5
    assert events + sliding.sum() > 16 * 3  # the redo ran several blocks
    per_particle = [one(a, w, *args, trainable), (moved.a, moved.w, None, moved.tau2, moved.g,
                                                  moved.amplitude)]
    for new in per_particle:
        for k, (got, want) in enumerate(zip(new, ref)):
            if got is None:
                continue
            got = np.asarray(got)
            if k == 3:  # tau2 = z / rate; beyond 1e8 h the rate is rounding noise: no bound
                want, got = np.minimum(want, 1e8 * h), np.minimum(got, 1e8 * h)
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * np.abs(want).max())
    np.testing.assert_allclose(moved.total, ref[2].sum(0), rtol=1e-12)
    np.testing.assert_allclose(moved.tau2_min, ref[3].min(), rtol=1e-10)
    np.testing.assert_allclose(moved.g_max, ref[4].max(), rtol=1e-12)
    np.testing.assert_allclose(moved.amplitude_sum, ref[5].sum(), rtol=1e-12)


def test_move_particles_outputs_agree(rng):
    """outputs="total" and "step" give the same numbers as "all", without the extra fields."""
    x = np.c_[rng.uniform(-1, 1, 4), np.ones(4)]
    a, w = _particles_near_faces(rng, x, 320)
    args = (a, w, jnp.asarray(x), jnp.asarray(np.sum(x * x, 1)),
            jnp.asarray(rng.standard_normal(4)), jnp.asarray(0.05), EPS64, 0.0, True)
    every = jax.jit(move_particles, static_argnums=8,
                    static_argnames=("n_chunks", "outputs", "event_block"))
    runs = {out: every(*args, n_chunks=4, outputs=out, event_block=8) for out in OUTPUTS}
    for out, motion in runs.items():
        np.testing.assert_array_equal(motion.total, runs["all"].total)
        assert (motion.a is None) == (out == "total") and (motion.tau2 is None) == (out != "all")
    np.testing.assert_array_equal(runs["step"].w, runs["all"].w)
    assert runs["step"].tau2_min == runs["all"].tau2_min == jnp.min(runs["all"].tau2)
    assert runs["step"].g_max == jnp.max(runs["all"].g)


def test_move_particles_rejects_bad_arguments():
    a, w, x = jnp.zeros(8), jnp.ones((8, 2)), jnp.ones((3, 2))
    args = (a, w, x, jnp.sum(x * x, 1), jnp.zeros(3), 0.1, EPS64, 0.0, True)
    with pytest.raises(ValueError, match=f"outputs='every'.*{OUTPUTS}"):
        move_particles(*args, n_chunks=1, outputs="every")
    with pytest.raises(ValueError, match="event_block=0"):
        move_particles(*args, n_chunks=1, event_block=0)
    with pytest.raises(ValueError, match="n_chunks=3 .*m_pad=8"):
        move_particles(*args, n_chunks=3)


@pytest.mark.slow
def test_bench_flow_quick_prints_json(tmp_path):
    """Smoke test of benchmarks/bench_flow.py (timings are not asserted: machine load)."""
    import json
    import pathlib
    import subprocess
    import sys

    script = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_flow.py"
    out = tmp_path / "flow.json"
    proc = subprocess.run([sys.executable, str(script), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=1200, check=True)
    report = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == report
    assert {(r["kernel"], r["case"]) for r in report["results"]} == {
        (k, c) for c in report["meta"]["quick_cases"]
        for k in (("new",) if c.startswith("ratio_") else ("reference", "new"))}
    for record in report["results"]:
        assert record["status"] == "ok", record
    for case, ratio in report["ratios_new_over_reference"].items():
        assert ratio and all(value > 0 for value in ratio.values()), case
    ratio_targets = [v for k, v in report["targets"].items() if k.startswith("ratio_")]
    assert ratio_targets and all(t["value"] > 0 for t in ratio_targets)
