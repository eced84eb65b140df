"""Initial laws: per-neuron keys give exact width coupling and layout invariance; laws are right."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import meanfield.particles as pt

LAWS = [
    pt.InitialLaw(kind="gaussian", sigma_a=0.7, sigma_w=1.3),
    pt.InitialLaw(kind="sphere", scale=0.1),
    pt.InitialLaw(kind="balanced", scale=0.01, signs="random"),
    pt.InitialLaw(kind="gaussian", asi=True),
    pt.InitialLaw(kind="balanced", scale=2.0, asi=True),
]


@pytest.mark.parametrize("law", LAWS, ids=lambda law: f"{law.kind}-asi{law.asi}")
@pytest.mark.parametrize("dtype", (jnp.float32, jnp.float64))
def test_width_coupling_and_layout_invariance(law, dtype):
    key = jax.random.key(7)
    small = pt.init_particles(key, pt.ModelSpec(width=64, init=law), 3, dtype=dtype)
    big = pt.init_particles(key, pt.ModelSpec(width=128, init=law), 3, dtype=dtype)
    # padded to the big run's shape: one compiled sampler serves both (width is traced)
    padded = pt.init_particles(key, pt.ModelSpec(width=64, init=law), 3, m_pad=128, dtype=dtype)
    if law.kind != "gaussian" or law.sigma_a is not None:  # explicit scales: same law at any m
        assert np.array_equal(big.a[:64], small.a) and np.array_equal(big.w[:64], small.w)
    assert np.array_equal(padded.a[:64], small.a) and np.array_equal(padded.w[:64], small.w)
    assert np.all(padded.a[64:] == 0) and np.all(padded.w[64:] == 0)
    assert small.w.dtype == dtype and small.a.dtype == dtype


@pytest.mark.parametrize("dtype", (jnp.float32, jnp.float64))
def test_width_coupling_is_bitwise_for_gaussian_and_to_two_ulp_for_norm_laws(dtype):
    """Widths 1000 and 2000 (whose batched norm XLA rounds differently at d = 1, 2): the
    Gaussian law is coupled bitwise, the sphere and balanced laws to one or two units in the last
    place (as the docs say), and neither is merely close by chance: another key is far off."""
    key = jax.random.key(7)
    for law in (pt.InitialLaw(kind="gaussian", sigma_a=0.7, sigma_w=1.3),
                pt.InitialLaw(kind="sphere", scale=0.1),
                pt.InitialLaw(kind="balanced", scale=0.01, signs="random")):
        for d in (1, 2):
            small = pt.init_particles(key, pt.ModelSpec(width=1000, init=law), d, dtype=dtype)
            big = pt.init_particles(key, pt.ModelSpec(width=2000, init=law), d, dtype=dtype)
            for x, y in ((small.a, big.a[:1000]), (small.w, big.w[:1000])):
                x, y = np.asarray(x), np.asarray(y)
                if law.kind == "gaussian":
                    assert np.array_equal(x, y)
                else:
                    np.testing.assert_array_max_ulp(x, y, maxulp=2)
            other = pt.init_particles(jax.random.key(8), pt.ModelSpec(width=1000, init=law), d,
                                      dtype=dtype)
            assert np.median(np.abs(np.asarray(other.w) - np.asarray(small.w))) > 1e-3 * 0.01


def test_gaussian_coupling_under_width_dependent_scales():
    """Mean-field-normalised Luo scales depend on m; the standardised draws are still coupled."""
    key = jax.random.key(3)
    law = pt.InitialLaw(kind="gaussian")
    par = pt.Parametrisation(kind="luo", gamma=1.75, gamma_prime=0.3)
    s = pt.init_particles(key, pt.ModelSpec(width=50, parametrisation=par, init=law), 1)
    b = pt.init_particles(key, pt.ModelSpec(width=100, parametrisation=par, init=law), 1)
    sa_s, sw_s = par.scales(50, 2)
    sa_b, sw_b = par.scales(100, 2)
    np.testing.assert_allclose(b.a[:50] / sa_b, s.a / sa_s, rtol=1e-6)
    np.testing.assert_allclose(b.w[:50] / sw_b, s.w / sw_s, rtol=1e-6)


def test_asi_pairs_give_zero_output():
    spec = pt.ModelSpec(width=40, init=pt.InitialLaw(kind="gaussian", asi=True))
    p = pt.init_particles(jax.random.key(0), spec, 2, dtype=jnp.float64)
    assert np.array_equal(p.w[0::2], p.w[1::2]) and np.array_equal(p.a[0::2], -p.a[1::2])
    x = jnp.asarray(np.random.default_rng(0).standard_normal((9, 3)))
    np.testing.assert_allclose(pt.network_output(p, x, 1 / 40, 1), 0, atol=1e-15)


def test_law_statistics_monte_carlo():
    m, d = 200_000, 3
    key = jax.random.key(11)
    g = pt.init_particles(key, pt.ModelSpec(width=m, bias=False,
                                            init=pt.InitialLaw(sigma_a=0.5, sigma_w=2.0)), d)
    assert abs(float(jnp.std(g.a)) - 0.5) < 0.005 and abs(float(jnp.std(g.w)) - 2.0) < 0.02
    s = pt.init_particles(key, pt.ModelSpec(width=m, bias=False, output="frozen",
                                            init=pt.InitialLaw(kind="sphere", scale=0.1)), d)
    np.testing.assert_allclose(jnp.linalg.norm(s.w, axis=1), 0.1, rtol=1e-5)
    assert np.array_equal(s.a[::2], np.ones(m // 2)) and np.array_equal(s.a[1::2], -np.ones(m // 2))
    # uniform on the sphere: each coordinate of u has mean 0 and variance 1/d
    u = np.asarray(s.w) / 0.1
    assert np.all(np.abs(u.mean(0)) < 0.01) and np.allclose((u ** 2).mean(0), 1 / d, atol=0.005)
    b = pt.init_particles(key, pt.ModelSpec(width=m, init=pt.InitialLaw(kind="balanced", scale=0.3,
                                                                        signs="random")), d)
    np.testing.assert_allclose(jnp.abs(b.a), jnp.linalg.norm(b.w, axis=1), rtol=1e-6)
    assert abs(float(jnp.mean(jnp.sign(b.a)))) < 0.01


@pytest.mark.parametrize("kind,gamma,gamma_prime", [("mean_field", 1, 0), ("ntk", 0.5, 0)])
def test_named_parametrisations_have_their_exponents(kind, gamma, gamma_prime):
    par = pt.Parametrisation(kind=kind)
    for m in (10, 1000, 10**6):
        g, gp = par.exponents(m, 2)
        assert math.isclose(g, gamma, abs_tol=1e-12) and math.isclose(gp, gamma_prime, abs_tol=1e-12)
        sa, sw = par.scales(m, 2)
        luo = pt.Parametrisation(kind="luo", gamma=g, gamma_prime=gp).scales(m, 2)
        np.testing.assert_allclose((sa, sw), luo, rtol=1e-12)


def test_luo_constants_map_exactly_onto_mean_field():
    """f_paper(x) = (1/alpha) sum a relu(w x) equals the mean-field f after scaling by sqrt(m/alpha)."""
    rng = np.random.default_rng(0)
    m, alpha, beta1, beta2 = 500, 37.0, 0.3, 2.5
    a = beta1 * rng.standard_normal(m)
    w = beta2 * rng.standard_normal((m, 2))
    x = np.c_[rng.standard_normal(5), np.ones(5)]
    f_paper = (np.maximum(x @ w.T, 0) @ a) / alpha
    par = pt.Parametrisation(kind="luo", alpha=alpha, beta1=beta1, beta2=beta2)
    sa, sw = par.scales(m, 2)
    c = math.sqrt(m / alpha)
    assert math.isclose(sa, beta1 * c) and math.isclose(sw, beta2 * c)
    f_mf = (np.maximum(x @ (c * w).T, 0) @ (c * a)) / m
    np.testing.assert_allclose(f_mf, f_paper, rtol=1e-12)
    # and the exponent form gives the same scales as the constants at this width
    kappa, kappa_p = beta1 * beta2 / alpha, beta1 / beta2
    g, gp = -math.log(kappa) / math.log(m), -math.log(kappa_p) / math.log(m)
    np.testing.assert_allclose(pt.Parametrisation(kind="luo", gamma=g, gamma_prime=gp).scales(m, 2),
                               (sa, sw), rtol=1e-12)


@pytest.mark.parametrize("gamma,gamma_prime,regime", [
    (0.5, 0, "linear"), (1, 0, "critical"), (1.75, 0, "condensed"), (1.2, 0.2, "critical"),
    (1.1, 0.3, "linear"), (1.5, -0.4, "condensed"), (1, -0.3, "critical")])
def test_regimes(gamma, gamma_prime, regime):
    assert pt.regime_of(gamma, gamma_prime) == regime
