"""Mean-field limit PDE (balanced init, 1-D inputs with bias; docs/theory/limits.md)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import meanfield as mf
import meanfield.particles as pt
from meanfield.limits import mean_field as mfl
from meanfield.particles.kernels import neuron_velocity

T_FIX = 1.0  # loss has dropped from 0.0158 to 0.0065 (below half); no concentration yet


def balanced_luo(m=1000, seed=0, scale=1.0, **changes):
    config = mf.presets.luo_1d(width=m, precision="float64", seed=seed).replace(
        model=mf.ModelSpec(width=m, init=mf.InitialLaw(kind="balanced", scale=scale,
                                                       signs="random")))
    return config.replace(**changes) if changes else config


def fixed_time(m, seed=0, t=T_FIX):
    return balanced_luo(m, seed, t_max=t, loss_tol=None, save=mf.SaveAt(t=(t,), snapshots=0))


# ----------------------------------------------------------------------------- derivation

def test_pde_fields_match_particle_velocities(rng):
    """For a = s|w|: da/dt = r g(u), d|w|/dt = s r g(u), dphi/dt = s g'(phi) (docs/theory/limits.md)."""
    x = np.array([[-0.5, 1.0], [-1 / 6, 1.0], [1 / 6, 1.0], [0.5, 1.0]])
    R = rng.normal(size=4) * 0.1
    for _ in range(20):
        w = rng.normal(size=2) * rng.uniform(0.2, 3)
        s = rng.choice([-1.0, 1.0])
        r, phi = np.linalg.norm(w), np.arctan2(w[1], w[0])
        a = s * r
        da, dw = map(np.asarray, neuron_velocity(jnp.asarray(a), jnp.asarray(w), jnp.asarray(x),
                                                 jnp.asarray(R), True))
        # g and g' at phi through the cell formulas on a tiny cell centred at phi
        u = np.array([np.cos(phi), np.sin(phi)])
        g = -np.sum(R * np.maximum(x @ u, 0))
        n = 1 << 16
        shift = phi - mfl.cell_edges(n)[n // 2]  # rotate so that phi is a face
        rot = np.array([[np.cos(shift), -np.sin(shift)], [np.sin(shift), np.cos(shift)]])
        gp = -(mfl.face_slope(x @ rot, n)[n // 2] @ R)
        assert np.isclose(da, r * g, rtol=1e-10, atol=1e-14)
        assert np.isclose(u @ dw, s * r * g, rtol=1e-10, atol=1e-14)       # d|w|/dt
        assert np.isclose(s * da, u @ dw, rtol=1e-10, atol=1e-14)          # balance kept
        u_perp = np.array([-u[1], u[0]])
        assert np.isclose(u_perp @ dw / r, s * gp, rtol=1e-8, atol=1e-12)  # dphi/dt


def test_cell_kernel_is_exact_average(rng):
    pts = np.array([[0.3, 1.0], [-2.0, 0.5], [0.0, -1.0]])
    n = 64
    K = mfl.cell_kernel(pts, n)
    edges = mfl.cell_edges(n)
    fine = np.linspace(0, 1, 2001)
    for c in (0, 7, 31, 63):
        phi = edges[c] + (edges[c + 1] - edges[c]) * fine
        u = np.stack([np.cos(phi), np.sin(phi)], 1)
        avg = np.trapezoid(np.maximum(u @ pts.T, 0), fine, axis=0)
        np.testing.assert_allclose(K[c], avg, atol=1e-7)
    # the whole circle: int relu(u.x~) dphi = 2 |x~|
    np.testing.assert_allclose(K.sum(0) * 2 * np.pi / n, 2 * np.linalg.norm(pts, axis=1))


def test_initial_f_matches_balanced_particles():
    """mu_s = scale^2 / (2 pi) per unit angle: f_+(x) = scale^2 |x~| / pi, masses scale^2."""
    scale, m = 0.7, 200_000
    cfg = balanced_luo(m, scale=scale)
    parts = pt.init_particles(jax.random.key(3), cfg.model, 1, dtype=jnp.float64)
    a, w = np.asarray(parts.a), np.asarray(parts.w)
    xe = cfg.data.augmented(cfg.data.x_eval[::10], True)
    act = np.maximum(w @ xe.T, 0)
    M0 = mfl.initial_masses(scale, 256)
    K = mfl.cell_kernel(xe, 256)
    for sign, row in ((1, 0), (-1, 1)):
        sel = np.sign(a) == sign
        mc = (np.abs(a[sel]) @ act[sel]) / m                     # (1/m) sum_s r^2 relu(u.x~)
        pde = M0[row] @ K
        np.testing.assert_allclose(pde, scale ** 2 * np.linalg.norm(xe, axis=1) / np.pi)
        sd = np.sqrt(np.mean(sel[:, None] * (np.abs(a)[:, None] * act) ** 2, 0) / m)
        assert np.all(np.abs(mc - pde) < 5 * sd)
        mass_mc = np.sum(np.abs(a[sel]) * np.linalg.norm(w[sel], axis=1)) / m
        assert abs(mass_mc - M0[row].sum()) < 0.02 * scale ** 2
    ds = mfl.mean_field_limit(cfg, n_cells=256, t=[1e-9])
    np.testing.assert_allclose(ds.f_eval.values[0], 0.0, atol=1e-15)   # E f_0 = 0
    np.testing.assert_allclose(ds.mass.values[0], [scale ** 2, scale ** 2, 2 * scale ** 2])
    np.testing.assert_allclose(ds.density.values[0], 1 / cfg.observe.n_angle_bins)


# ----------------------------------------------------------------------------- conservation

def test_transport_alone_conserves_mass_and_positivity():
    cfg = fixed_time(10, t=5.0)
    ds = mfl.mean_field_limit(cfg, n_cells=300, t=[1.0, 5.0], react=False)
    np.testing.assert_allclose(ds.mass.values, np.broadcast_to(ds.mass.values[:1], ds.mass.shape),
                               rtol=1e-13)
    assert np.all(ds.density.values >= 0)
    assert ds.density.sel(sign="+").std("angle").max() > 1e-4  # it did move


def test_reaction_alone_is_exact_exponential():
    """Without transport cells never exchange mass: M_s *= exp(2 s g dt) exactly, so
    M_+ M_- is conserved per cell and cells outside every input's half-plane (g = 0) keep
    their mass; the binned output of such a run is consistent with the cell masses."""
    cfg = fixed_time(10, t=2.0)
    pde = mfl._PDE(cfg, 64, cfl=0.4, reaction=0.05, kernel=0.5, transport=False)
    M0 = mfl.initial_masses(1.0, 64)
    M = M0.copy()
    for _ in range(50):
        g, gp = pde.fields(M)
        M = pde.step(M, g, gp, pde.max_dt(M, g, gp))
    np.testing.assert_allclose(M[0] * M[1], M0[0] * M0[1], rtol=1e-12)
    dead = np.all(pde.K == 0, axis=1)
    assert dead.any() and not dead.all()
    np.testing.assert_array_equal(M[:, dead], M0[:, dead])
    assert np.abs(M[:, ~dead] - M0[:, ~dead]).max() > 1e-3
    ds = mfl.mean_field_limit(cfg, n_cells=64, t=[0.5, 2.0], transport=False)
    assert ds.attrs["n_cells"] == 64 and ds.loss.values[-1] < ds.loss.values[0]


def test_loss_decreases_and_schema():
    cfg = balanced_luo(10, t_max=50.0, loss_tol=None)
    ds = mfl.mean_field_limit(cfg, n_cells=256)  # default schedule from the config
    assert ds.attrs["limit"] == "mean_field" and ds.attrs["n_cells"] == 256
    assert mf.SimulationConfig.from_json(ds.attrs["config"]).to_json() == cfg.to_json()
    assert json.loads(ds.attrs["config"])["model"]["init"]["kind"] == "balanced"
    assert ds.t.values[0] == 0 and np.isclose(ds.t.values[-1], 50.0)
    assert np.all(np.diff(ds.loss.values) <= 1e-15)  # gradient flow
    assert ds.loss.values[-1] < 0.5 * ds.loss.values[0]
    assert ds.f_train.dims == ("t", "sample") and ds.f_eval.dims == ("t", "eval_point")
    assert ds.density.dims == ("t", "sign", "angle")
    assert list(ds.sign.values) == ["+", "-", "all"]
    assert ds.sizes["angle"] == cfg.observe.n_angle_bins
    np.testing.assert_allclose(ds.density.sum("angle"), 1.0, rtol=1e-12)
    np.testing.assert_allclose(ds.mass.sel(sign="all"),
                               ds.mass.sel(sign="+") + ds.mass.sel(sign="-"))
    # f_train is f_eval's formula at the training inputs; loss is MSE / 2
    y = cfg.data.y
    np.testing.assert_allclose(ds.loss, 0.5 * np.mean((ds.f_train.values - y) ** 2, 1))
    # loss_tol stops the run
    stopped = mfl.mean_field_limit(cfg.replace(loss_tol=0.005), n_cells=256)
    assert stopped.attrs["stop_reason"] == "loss_tol" and stopped.loss.values[-1] < 0.005
    assert stopped.sizes["t"] < ds.sizes["t"]


def test_aggregate_bins_preserves_mass(rng):
    cells = rng.uniform(size=(3, 2, 1000))
    out = mfl.aggregate_bins(cells, 120)
    np.testing.assert_allclose(out.sum(-1), cells.sum(-1))
    np.testing.assert_allclose(mfl.aggregate_bins(cells[..., :960], 120),
                               cells[..., :960].reshape(3, 2, 120, 8).sum(-1))


@pytest.mark.parametrize("change, word", [
    ({"model.bias": False}, "bias"),
    ({"model.init": mf.InitialLaw(kind="gaussian", sigma_a=1.0, sigma_w=1.0)}, "balanced"),
    ({"model.output": "frozen"}, "trainable"),
])
def test_requirements(change, word):
    with pytest.raises(ValueError, match=word):
        mfl.mean_field_limit(balanced_luo(10).replace(**change))


def test_requires_one_dimensional_inputs():
    data = mf.TrainingData(x=np.array([[0.1, 0.2], [0.3, -0.1]]), y=np.array([1.0, 0.0]))
    cfg = balanced_luo(10).replace(data=data)
    with pytest.raises(ValueError, match="input_dim"):
        mfl.mean_field_limit(cfg)


# ----------------------------------------------------------------------------- convergence

def refinement(ns, t=T_FIX):
    f = {n: mfl.mean_field_limit(fixed_time(10, t=t), n_cells=n, t=[t]).f_eval.values[-1]
         for n in ns}
    errors = np.array([np.abs(f[a] - f[b]).max() for a, b in zip(ns, ns[1:])])
    return errors, np.log2(errors[:-1] / errors[1:])


def test_grid_refinement_first_order():
    ns = [512, 1024, 2048, 4096, 8192]
    errors, orders = refinement(ns)
    print("sup|f_N - f_2N| at t=1:", dict(zip(ns, errors)), "orders:", orders)
    assert errors[-1] < 2.5e-4
    assert np.all((orders[-2:] > 0.8) & (orders[-2:] < 1.2))  # first-order upwind


def particle_error(m, seeds, f_ref):
    errs = []
    for seed in seeds:
        ds = mf.simulate(fixed_time(m, seed), progress=False)
        assert np.isclose(ds.t.values[-1], T_FIX)
        errs.append(np.abs(ds.f_eval.values[-1] - f_ref).max())
    return float(np.mean(errs))


def test_particles_approach_the_limit():
    f_ref = mfl.mean_field_limit(fixed_time(10), n_cells=4096, t=[T_FIX]).f_eval.values[-1]
    e_small = particle_error(250, (0, 1), f_ref)
    e_large = particle_error(16000, (0, 1), f_ref)
    print(f"sup error at t={T_FIX}: m=250 {e_small:.3g}, m=16000 {e_large:.3g}")
    assert e_large < 0.4 * e_small


@pytest.mark.slow
def test_particle_error_slope():
    f_ref = mfl.mean_field_limit(fixed_time(10), n_cells=16384, t=[T_FIX]).f_eval.values[-1]
    widths = [1000, 10000, 100000]
    errors = [particle_error(m, (0, 1, 2), f_ref) for m in widths]
    slope = np.polyfit(np.log(widths), np.log(errors), 1)[0]
    print("sup errors", dict(zip(widths, errors)), "slope", slope)
    assert -0.65 <= slope <= -0.35
