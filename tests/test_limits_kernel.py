"""Kernel (linear-regime) limit: arc-cosine kernels, the mean-field NTK and the kernel flow."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import meanfield as mf
import particles as pt
from meanfield.limits import kernel as K
from particles.model import InitialLaw


def _pairs(rng, d=3, count=4):
    """Random pairs plus nearly parallel, exactly parallel and (nearly) antiparallel ones."""
    out = []
    for _ in range(count):
        x, z = rng.standard_normal(d), rng.standard_normal(d)
        out += [(x, z), (x, 1.3 * x + 1e-7 * z), (x, 0.5 * x), (x, -0.7 * x + 1e-7 * z),
                (x, -2.0 * x)]
    return out


def test_arccos_kernels_and_ntk_match_monte_carlo(rng):
    from scipy.stats import qmc

    # 2^20 ~ 10^6 random features (scrambled Sobol Gaussian: MC error ~1e-5, deterministic)
    g = qmc.MultivariateNormalQMC(np.zeros(3), seed=0).random(2 ** 20)
    a2 = 1.7 ** 2  # E[a^2] of the output weights (independent of w)
    sigma_w = 0.6
    for x, z in _pairs(rng):
        gx, gz = g @ x, g @ z
        mc0 = np.mean((gx > 0) & (gz > 0))
        mc1 = np.mean(np.maximum(gx, 0) * np.maximum(gz, 0))
        # NTK by MC: E[relu(w.x) relu(w.z)] + E[a^2] E[1 1] x.z with w = sigma_w g
        mc_ntk = sigma_w ** 2 * mc1 + a2 * mc0 * (x @ z)
        for exact, mc in ((K.k0(x, z), mc0), (K.k1(x, z), mc1),
                          (K.ntk(x, z, math.sqrt(a2), sigma_w), mc_ntk)):
            exact = float(exact)
            assert abs(exact - mc) <= 1e-3 * max(1.0, abs(exact)), (x, z, exact, mc)
    # the kernels on exactly (anti)parallel pairs
    x = rng.standard_normal(3)
    assert float(K.k0(x, 2 * x)) == pytest.approx(0.5)
    assert float(K.k0(x, -x)) == pytest.approx(0.0, abs=1e-15)
    assert float(K.k1(x, 2 * x)) == pytest.approx(2 * (x @ x) / 2)  # |x||x'| pi/(2 pi)
    assert float(K.k1(x, -x)) == pytest.approx(0.0, abs=1e-15)


def test_kernel_gradients_finite_at_zero_and_pi(rng):
    x = rng.standard_normal(3)
    for other in (x, 2.0 * x, -x, -3.0 * x):
        for fn in (K.k0, K.k1, lambda u, v: K.ntk(u, v, 1.3, 0.7)):
            grad = jax.grad(lambda u: fn(u, other))(jnp.asarray(x))
            assert np.all(np.isfinite(np.asarray(grad)))
    # k1 is C^1 in x: its gradient at theta = 0 is the limit of nearby gradients
    g0 = jax.grad(lambda u: K.k1(u, 2.0 * x))(jnp.asarray(x))
    near = jax.grad(lambda u: K.k1(u, 2.0 * x))(jnp.asarray(x + 1e-6 * rng.standard_normal(3)))
    np.testing.assert_allclose(g0, near, atol=1e-4)


@pytest.mark.parametrize("sigmas", [(1.0, 1.0), (2.0, 0.5)])
def test_empirical_ntk_matches_at_large_width(sigmas):
    """m J J^T of the particle model (mean-field time scale) against ``ntk``, part by part."""
    sigma_a, sigma_w = sigmas
    m = 20000
    cfg = mf.presets.luo_1d(width=m, precision="float64").replace(
        **{"model.init": InitialLaw(kind="gaussian", sigma_a=sigma_a, sigma_w=sigma_w)})
    parts = pt.init_particles(jax.random.key(3), cfg.model, 1, dtype=jnp.float64)
    pts = np.concatenate([cfg.data.x, [[-1.0], [-0.3], [0.05], [0.8]]])
    xa = jnp.asarray(cfg.data.augmented(pts, True))

    def f(a, w):
        return jnp.mean(a[None, :] * jax.nn.relu(xa @ w.T), axis=1)

    ja, jw = jax.jacobian(f, argnums=(0, 1))(parts.a, parts.w)
    jw = jw.reshape(len(pts), -1)
    emp_k1 = m * np.asarray(ja @ ja.T)       # output-layer gradient: the k1 part
    emp_k0 = m * np.asarray(jw @ jw.T)       # input-layer gradient: the k0-dot part
    xn = np.asarray(xa)
    for emp, part in ((emp_k1, "k1"), (emp_k0, "k0"), (emp_k1 + emp_k0, "both")):
        exact = K.gram(xn, xn, sigma_a, sigma_w, part)
        # sampling error of a width-m average: O(m^-1/2) ~ 1e-2 (a factor slip would be >= 2)
        rel = np.linalg.norm(emp - exact) / np.linalg.norm(exact)
        # (measured at key 3: k1 0.3 %, k0 1.5 % (the 1.0 % sd of mean(a^2)), both 0.7-1.4 %)
        assert rel <= 2.5e-2, part
        assert np.max(np.abs(emp - exact)) <= 4e-2 * np.max(np.abs(exact)), part


def test_initial_covariance_matches_sampled_networks():
    """Without ASI, Var f_0 = sigma_a^2 sigma_w^2 k1 / m (checked on 4000 sampled networks)."""
    cfg = mf.presets.luo_1d(width=20, precision="float64").replace(
        **{"model.init": InitialLaw(kind="gaussian", sigma_a=1.5, sigma_w=0.8)})
    xa = cfg.data.augmented(np.array([[-0.7], [0.2], [0.9]]), True)
    rng = np.random.default_rng(0)
    a = 1.5 * rng.standard_normal((4000, 20))
    w = 0.8 * rng.standard_normal((4000, 20, 2))
    f0 = np.mean(a[:, None, :] * np.maximum(np.einsum("skd,pd->spk", w, xa), 0), axis=2)
    emp = np.cov(f0.T)
    exact = K.initial_covariance(cfg, xa, xa)
    np.testing.assert_allclose(emp, exact, rtol=0.1, atol=0.05 * np.max(exact))


def _luo_kernels(gamma=0.5, width=1000, part="both"):
    cfg = mf.presets.luo_1d(gamma=gamma, width=width, precision="float64")
    sa, sw = cfg.model.gaussian_scales(1)
    xt = cfg.data.augmented(cfg.data.x, True)
    xe = cfg.data.augmented(cfg.data.x_eval, True)
    return cfg, K.gram(xt, xt, sa, sw, part), K.gram(xe, xt, sa, sw, part)


def test_squared_closed_form_equals_ode():
    cfg, kxx, kex = _luo_kernels()
    weights = np.array([0.1, 0.4, 0.3, 0.2])
    y = cfg.data.y
    t = np.concatenate([[0.0], np.geomspace(1e-4, 10.0, 12)])
    rng = np.random.default_rng(0)
    f0t, f0e = 0.1 * rng.standard_normal(4), 0.1 * rng.standard_normal(kex.shape[0])
    closed = K.squared_loss_flow(kxx, kex, weights, y, t, f0_train=f0t, f0_eval=f0e)
    ode = K.kernel_ode_flow(kxx, kex, weights, y, t, "squared", f0_train=f0t, f0_eval=f0e)
    np.testing.assert_allclose(closed[0], ode[0], atol=1e-8)
    np.testing.assert_allclose(closed[1], ode[1], atol=1e-8)
    # the training-set error is exp(-K W t) e(0)
    from scipy.linalg import expm

    e = np.stack([expm(-kxx * weights[None] * s) @ (f0t - y) for s in t])
    np.testing.assert_allclose(closed[0] - y, e, atol=1e-10)


def test_kernel_interpolant_interpolates_luo_data():
    cfg, kxx, kex = _luo_kernels()
    f_train, f_eval, _, _ = K.squared_loss_flow(kxx, kex, cfg.data.weights, cfg.data.y, [np.inf])
    np.testing.assert_allclose(f_train[0], cfg.data.y, atol=1e-10)
    # also equals the kernel regression formula K(x, X) K_XX^-1 y on the grid
    np.testing.assert_allclose(f_eval[0], kex @ np.linalg.solve(kxx, cfg.data.y), atol=1e-9)
    ds = K.kernel_limit(cfg.replace(loss_tol=None), t=[1.0, 1e4, np.inf])
    np.testing.assert_allclose(ds.f_train.values[-1], cfg.data.y, atol=1e-10)


def test_kernel_limit_dataset_schema():
    cfg = mf.presets.luo_1d(gamma=0.5, width=1000, precision="float64")
    ds = K.kernel_limit(cfg)
    assert ds.attrs["limit"] == "kernel" and ds.attrs["kernel_part"] == "both"
    assert mf.SimulationConfig.from_json(ds.attrs["config"]).to_json() == cfg.to_json()
    assert ds.f_train.dims == ("t", "sample") and ds.f_eval.dims == ("t", "eval_point")
    assert ds.loss.dims == ("t",) and ds.t.values[0] == 0 and "f_eval_var" not in ds
    assert np.all(np.diff(ds.loss.values) <= 1e-15)
    assert ds.loss.values[-1] <= cfg.loss_tol and ds.attrs["stop_reason"] == "loss_tol"
    # same save times as the finite run's schedule
    from meanfield.runner import particle_time_scale, prepare, save_schedule

    problem, particles, _, _ = prepare(cfg)
    times = save_schedule(cfg, particle_time_scale(problem, particles))[0]
    np.testing.assert_array_equal(ds.t.values, times[:ds.sizes["t"]])
    # without ASI: the mean is the ASI solution and the variance starts at Sigma(x, x)
    no_asi = cfg.replace(**{"model.init": InitialLaw(kind="gaussian", asi=False)}, loss_tol=None)
    ds2 = K.kernel_limit(no_asi, t=[0.01, 1.0, np.inf])
    xe = cfg.data.augmented(cfg.data.x_eval, True)
    np.testing.assert_allclose(ds2.f_eval_var.values[0], np.diag(K.initial_covariance(no_asi, xe, xe)))
    np.testing.assert_allclose(ds2.f_train_var.values[-1], 0.0, atol=1e-12)
    ref = K.kernel_limit(cfg.replace(loss_tol=None), t=[0.01, 1.0, np.inf])
    np.testing.assert_allclose(ds2.f_eval.values, ref.f_eval.values)
    # only one part; a margin loss integrates the ODE
    assert K.kernel_limit(cfg, t=[1.0], part="k1").attrs["kernel_part"] == "k1"
    cls = mf.presets.luo_1d(gamma=0.5, width=1000, precision="float64").replace(
        **{"model.loss": "logistic", "data": pt.TrainingData(x=[[-0.5], [0.5], [0.1]],
                                                              y=[1.0, -1.0, 1.0])})
    ds3 = K.kernel_limit(cls, t=np.geomspace(1e-3, 1e3, 7))
    assert ds3.accuracy.values[-1] == 1.0 and np.all(np.diff(ds3.loss.values) < 0)


def _finite_width_errors(m, seeds, taus=(1.0, 3.0, 10.0)):
    """Sup over the grid and the kernel times tau = t * kernel_rate of |f_m - f_kernel,m|."""
    out = []
    for seed in seeds:
        cfg = mf.presets.luo_1d(gamma=0.5, width=m, precision="float64", seed=seed)
        t = np.asarray(taus) / K.kernel_rate(cfg)
        cfg = cfg.replace(**{"save.t": tuple(t), "save.snapshots": 0, "t_max": float(t[-1]),
                             "loss_tol": None})
        run = mf.simulate(cfg, progress=False)
        limit = K.kernel_limit(cfg, t=t)
        np.testing.assert_allclose(run.t.values, limit.t.values, rtol=1e-12)
        out.append(np.max(np.abs(run.f_eval.values - limit.f_eval.values)))
    return np.array(out)


def test_kernel_flow_matches_finite_width_runs():
    small = _finite_width_errors(1000, [0, 1]).mean()
    large = _finite_width_errors(16000, [0, 1]).mean()
    assert large < small and large < 5e-3, (small, large)


@pytest.mark.slow
def test_finite_width_error_slope():
    ms = np.array([1000, 4000, 16000, 64000])
    errors = [_finite_width_errors(int(m), [0, 1, 2]).mean() for m in ms]
    slope = np.polyfit(np.log(ms), np.log(errors), 1)[0]
    print(f"kernel-limit error slope over m: {slope:.3f} (errors {errors})")
    assert -0.65 <= slope <= -0.35
