"""meanfield.validation.phase_diagram: S_w and boundary extraction on synthetic sweeps with a known
answer, figures, and condensation maps from a small real sweep."""

import numpy as np
import pytest
import xarray as xr

from meanfield.validation import phase_diagram as pd
from meanfield.validation.sweep import run_sweep

WIDTHS = np.array([1000, 5000, 10000, 20000, 40000])
GAMMAS = np.round(np.linspace(0.6, 1.4, 11), 2)
GAMMA_PRIMES = np.round(np.arange(-0.4, 0.41, 0.1), 2)


def synthetic_sweep(slope_of, seeds=(0, 1, 2), noise=0.0, seed=0) -> xr.Dataset:
    """A sweep-shaped Dataset whose RD is C m^S(gamma, gamma') exactly (times seed noise)."""
    rng = np.random.default_rng(seed)
    g, gp = np.meshgrid(GAMMAS, GAMMA_PRIMES)
    s = slope_of(g, gp)  # (gamma', gamma)
    rd = (0.3 * WIDTHS[:, None, None, None] ** s[None, None]
          * np.exp(noise * rng.standard_normal((1, len(seeds), 1, 1)))
          * np.ones((1, len(seeds), 1, 1)))
    dims = ("width", "seed", "gamma_prime", "gamma")
    return xr.Dataset({"rd_w_end": (dims, rd),
                       "stop_reason": (dims, np.full(rd.shape, "loss_tol", "<U16"))},
                      coords={"width": WIDTHS, "seed": list(seeds), "gamma_prime": GAMMA_PRIMES,
                              "gamma": GAMMAS})


def theory_slope(g, gp):
    return 0.8 * (g - pd.theoretical_boundary(gp))


def test_theoretical_boundary_is_luo_critical_line():
    np.testing.assert_allclose(pd.theoretical_boundary([-0.4, 0.0, 0.2, 0.4]),
                               [1.0, 1.0, 1.2, 1.4])
    from meanfield.particles import regime_of
    for gp in GAMMA_PRIMES:
        assert regime_of(float(pd.theoretical_boundary(gp)), float(gp)) == "critical"


def test_slope_map_recovers_known_exponents_per_cell():
    ds = synthetic_sweep(theory_slope, noise=0.05)
    slopes = pd.slope_map(ds, n_boot=200)
    assert slopes.slope.dims == ("gamma_prime", "gamma")
    g, gp = np.meshgrid(GAMMAS, GAMMA_PRIMES)
    # seed noise is a per-seed constant factor: it cancels in the slope
    np.testing.assert_allclose(slopes.slope.values, theory_slope(g, gp), atol=1e-12)
    assert int(slopes.n_seeds.min()) == 3 and int(slopes.n_failed.max()) == 0


def test_failed_runs_are_left_out_of_the_fit():
    ds = synthetic_sweep(theory_slope, seeds=(0,))
    stop = ds.stop_reason.values.copy()
    stop[4, 0, 2, 3] = "max_steps"  # the 40000 run of one cell failed
    rd = ds.rd_w_end.values.copy()
    rd[4, 0, 2, 3] = 1e9  # whatever it recorded must not count
    ds = ds.assign(stop_reason=(ds.stop_reason.dims, stop), rd_w_end=(ds.rd_w_end.dims, rd))
    slopes = pd.slope_map(ds)
    cell = slopes.isel(gamma_prime=2, gamma=3)
    assert int(cell.n_failed) == 1 and int(cell.n_x) == 4
    assert float(cell.slope) == pytest.approx(theory_slope(GAMMAS[3], GAMMA_PRIMES[2]))
    with pytest.raises(ValueError, match="variable='rd_x_end'"):
        pd.slope_map(ds, variable="rd_x_end")
    with pytest.raises(ValueError, match="needs a 'seed' axis"):
        pd.slope_map(ds.isel(seed=0, drop=True))


def test_boundary_of_a_synthetic_diagram_is_the_theory():
    slopes = pd.slope_map(synthetic_sweep(theory_slope, seeds=(0,)))
    b = pd.measured_boundary(slopes)
    np.testing.assert_allclose(b.boundary.values, pd.theoretical_boundary(GAMMA_PRIMES),
                               atol=1e-9)
    assert np.all(np.abs(b.deviation.values) < 1e-9)
    assert not b.extrapolated.any() and np.all(b.n_crossings.values == 1)


def test_boundary_beyond_the_grid_edge_is_extrapolated():
    shifted = lambda g, gp: 0.8 * (g - pd.theoretical_boundary(gp) - 0.03)
    b = pd.measured_boundary(pd.slope_map(synthetic_sweep(shifted, seeds=(0,))))
    np.testing.assert_allclose(b.deviation.values, 0.03, atol=1e-9)
    assert bool(b.extrapolated.sel(gamma_prime=0.4))  # 1.43 is past the last gamma, 1.4
    assert not bool(b.extrapolated.sel(gamma_prime=0.3))


def test_refinement_cells_bracket_the_rows_that_miss():
    # S_w crosses zero at theory + shift(gamma'): misses of 0.1 at gamma' = -0.2, 0.07 at +0.1
    shift = {-0.2: 0.1, 0.1: 0.07}
    slope = lambda g, gp: 0.8 * (g - pd.theoretical_boundary(gp)
                                 - np.vectorize(lambda v: shift.get(round(v, 2), 0.0))(gp))
    slopes = pd.slope_map(synthetic_sweep(slope, seeds=(0,)))
    boundary = pd.measured_boundary(slopes)
    rows, gammas = pd.refinement_cells(slopes, boundary, 0.06)
    assert rows == (-0.2, 0.1)
    # crossings 1.1 (a grid point: bracket 1.08, 1.16) and 1.17 (bracket 1.16, 1.24)
    assert gammas == (1.08, 1.16, 1.24)
    assert pd.refinement_cells(slopes, boundary, 0.06, max_rows=1) == ((-0.2,), (1.08, 1.16))
    assert pd.refinement_cells(slopes, boundary, 0.2) == ((), ())


def test_local_slopes_are_pairwise_log_log_slopes():
    ds = synthetic_sweep(theory_slope, seeds=(0, 1), noise=0.1)
    rd = ds.rd_w_end.values.copy()
    rd[3:] *= 1.5  # a kink between m = 10000 and 20000 in every cell
    ds = ds.assign(rd_w_end=(ds.rd_w_end.dims, rd))
    local = pd.local_slopes(ds)
    np.testing.assert_allclose(local.width.values, np.sqrt(WIDTHS[1:] * WIDTHS[:-1]))
    g, gp = np.meshgrid(GAMMAS, GAMMA_PRIMES)
    expected = theory_slope(g, gp)[None] + np.array([0, 0, np.log(1.5) / np.log(2), 0])[:, None,
                                                                                        None]
    np.testing.assert_allclose(local.transpose("width", ...).values, expected, atol=1e-12)


def test_slope_map_figure_draws_both_boundaries(tmp_path):
    slopes = pd.slope_map(synthetic_sweep(theory_slope, seeds=(0,)))
    fig = pd.plot_slope_map(slopes, pd.measured_boundary(slopes))
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert any(label.startswith("theory") for label in labels)
    assert any(label.startswith("measured") for label in labels)
    path = tmp_path / "sw.png"
    fig.savefig(path)
    assert path.stat().st_size > 10_000


def test_condensation_maps_from_a_small_real_sweep(tmp_path):
    sweep = pd.diagram_sweep(gammas=(0.5, 1.75), widths=(36, 40), particles=24, n_saves=40,
                             name="tiny")
    ds = run_sweep(sweep, progress=False)
    assert set(np.unique(ds.stop_reason.values)) == {"loss_tol"}
    fig = pd.plot_condensation_maps(ds, sweep, [{"gamma_prime": 0.0, "gamma": 0.5},
                                                {"gamma_prime": 0.0, "gamma": 1.75}], (36, 40))
    assert len(fig.axes) == 4
    # panel (gamma = 1.75, m = 40): angles and amplitudes of the kept final particles
    offsets = fig.axes[3].collections[0].get_offsets()
    a = ds.particles_a.sel(width=40, seed=0, gamma_prime=0.0, gamma=1.75, stage="final").values
    w = ds.particles_w.sel(width=40, seed=0, gamma_prime=0.0, gamma=1.75, stage="final").values
    plus = a >= 0
    np.testing.assert_allclose(offsets[:, 0], np.rad2deg(np.arctan2(w[plus, 1], w[plus, 0])),
                               atol=1e-4)
    np.testing.assert_allclose(offsets[:, 1], np.abs(a[plus]) * np.linalg.norm(w[plus], axis=1),
                               rtol=1e-5)
    fig.savefig(tmp_path / "cond.png")
    with pytest.raises(ValueError, match="kept no particles"):
        pd.plot_condensation_maps(ds.drop_vars(["particles_a", "particles_w"]), sweep, [], [])


def _corrected_sweep(limit: float, drift: float, correction: str, seeds=5, noise=0.02, seed=0,
                     widths=(1000, 5000, 10000, 20000, 40000, 80000, 160000, 320000)):
    """RD whose asymptotic slope is 0.8 (gamma - limit) and whose finite-width correction is
    ``drift`` g(m) (g of ``correction``); each seed a random offset and small noise."""
    rng = np.random.default_rng(seed)
    widths = np.asarray(widths)
    gammas = np.array([0.84, 0.92, 1.0, 1.08])
    g_of_m = pd.CORRECTIONS[correction](widths.astype(float))
    log_rd = (0.8 * (gammas[None, None, :] - limit) * np.log(widths)[:, None, None]
              + drift * g_of_m[:, None, None]
              + 0.1 * rng.standard_normal((1, seeds, 1))
              + noise * rng.standard_normal((widths.size, seeds, gammas.size)))
    dims = ("width", "seed", "gamma_prime", "gamma")
    rd = np.exp(log_rd)[:, :, None, :]
    return xr.Dataset({"rd_w_end": (dims, rd),
                       "stop_reason": (dims, np.full(rd.shape, "loss_tol", "<U16"))},
                      coords={"width": widths, "seed": np.arange(seeds), "gamma_prime": [-0.2],
                              "gamma": gammas})


@pytest.mark.parametrize("correction", sorted(pd.CORRECTIONS))
def test_limit_boundary_recovers_a_known_limit_that_plain_slopes_miss(correction):
    # a drift that makes the plain S_w crossing miss the limit 1.0 by more than 0.06
    drift = {"inverse_log": 0.8, "inverse_sqrt": -60.0}[correction]
    ds = _corrected_sweep(1.0, drift, correction)
    plain = float(pd.measured_boundary(pd.slope_map(ds)).boundary[0])
    assert abs(plain - 1.0) > 0.06
    found = pd.limit_boundary(ds, correction=correction)
    b = found.sel(gamma_prime=-0.2)
    assert float(b.boundary) == pytest.approx(1.0, abs=0.02)
    assert b.ci_low < 1.0 < b.ci_high and b.ci_high - b.ci_low < 0.1
    assert int(b.n_seeds) == 5 and float(b.theory) == 1.0
    # noiseless data: S_inf exactly 0.8 (gamma - 1) in every cell
    exact = pd.limit_boundary(_corrected_sweep(1.0, drift, correction, noise=0.0),
                              correction=correction)
    np.testing.assert_allclose(exact.slope_inf.values[0], 0.8 * (exact.gamma.values - 1.0),
                               atol=1e-8)


def test_limit_boundary_interval_covers_the_limit_at_the_nominal_rate():
    covered = [pd.limit_boundary(_corrected_sweep(1.0, 0.8, "inverse_log", noise=0.05,
                                                  seed=k), n_boot=400).sel(gamma_prime=-0.2)
               for k in range(40)]
    rate = np.mean([float(b.ci_low) <= 1.0 <= float(b.ci_high) for b in covered])
    assert rate >= 0.85  # 95% nominal; 40 replicates


def test_limit_boundary_uses_only_seeds_complete_at_every_width():
    ds = _corrected_sweep(1.0, 0.8, "inverse_log")
    ds["rd_w_end"][-1, 3:] = np.nan  # seeds 3, 4 lack the widest width
    assert int(pd.limit_boundary(ds).n_seeds[0]) == 3


def test_asymptotic_slope_weights_reject_bad_input():
    with pytest.raises(ValueError, match="correction="):
        pd.asymptotic_slope_weights([10, 100, 1000], "cubic")
    with pytest.raises(ValueError, match="widths must hold >= 3"):
        pd.asymptotic_slope_weights([10, 100])
    with pytest.raises(ValueError, match="n_boot="):
        pd.limit_boundary(_corrected_sweep(1.0, 0.0, "inverse_log"), n_boot=10)


HELDOUT_WIDTHS = (1000, 5000, 10000, 20000, 40000, 80000, 160000, 320000, 1000000)


def _split(ds, anchor=160000, seeds=(0,)):
    """(fit: widths <= anchor, every seed; held out: wider, ``seeds``)."""
    m = ds.width.values
    return ds.sel(width=m[m <= anchor]), ds.sel(width=m[m > anchor], seed=list(seeds))


@pytest.mark.parametrize("correction", sorted(pd.CORRECTIONS))
def test_heldout_test_predicts_the_increase_of_a_known_correction(correction):
    drift = {"inverse_log": 0.8, "inverse_sqrt": -60.0}[correction]
    fit, held = _split(_corrected_sweep(1.0, drift, correction, noise=0.0,
                                        widths=HELDOUT_WIDTHS))
    t = pd.heldout_test(fit, held, correction=correction)
    assert t.attrs["anchor"] == 160000 and tuple(t.width.values) == (320000, 1000000)
    g = pd.CORRECTIONS[correction]
    m, anchor = np.array([320000.0, 1000000.0]), 160000.0
    gammas = t.gamma.values
    exact = (0.8 * (gammas[:, None] - 1.0) * np.log(m / anchor)[None, :]
             + drift * (g(m) - g(anchor))[None, :])  # the generating model's increase
    np.testing.assert_allclose(t.predicted.values[0], exact, atol=1e-9)
    np.testing.assert_allclose(t.observed.values[0], exact, atol=1e-9)
    # its local slope from the anchor crosses zero where the generating slope does
    slope = exact / np.log(m / anchor)
    for j in range(2):
        k = np.flatnonzero(np.sign(slope[:-1, j]) != np.sign(slope[1:, j]))[0]
        x = gammas[k] - slope[k, j] * (gammas[k + 1] - gammas[k]) / (slope[k + 1, j] - slope[k, j])
        assert float(t.crossing_predicted[0, j]) == pytest.approx(x, abs=1e-9)


def test_heldout_test_scores_against_the_seed_scatter():
    """z-scores, the pooled scatter and the F p-value recomputed by hand (numpy lstsq, scipy)."""
    from scipy import stats

    ds = _corrected_sweep(1.0, 0.8, "inverse_log", noise=0.01, widths=HELDOUT_WIDTHS, seed=3)
    fit, held = _split(ds)
    t = pd.heldout_test(fit, held, correction="inverse_log")
    log_rd = np.log(ds.rd_w_end.values[:, :, 0, :])  # (width, seed, gamma)
    m = ds.width.values.astype(float)
    inside = m <= 160000
    design = np.stack([np.ones(inside.sum()), np.log(m[inside]), np.log(np.log(m[inside]))], 1)
    coef = np.linalg.lstsq(design, log_rd[inside].mean(axis=1), rcond=None)[0]  # (3, gamma)
    step = np.stack([np.zeros(2), np.log(m[~inside] / 160000),
                     np.log(np.log(m[~inside])) - np.log(np.log(160000))], 1)
    predicted = (step @ coef).T  # (gamma, held-out width)
    observed = (log_rd[~inside, 0] - log_rd[inside][-1, 0]).T
    rises = np.diff(log_rd[inside][-3:], axis=0)  # (2 pairs, seed, gamma)
    scatter = np.sqrt(np.var(rises, axis=1, ddof=1).mean(axis=0))
    z = (observed - predicted) / (scatter * np.sqrt(1 + 1 / 5))[:, None]
    np.testing.assert_allclose(t.scatter.values[0], scatter, rtol=1e-10)
    np.testing.assert_allclose(t.z.values[0], z, rtol=1e-8)
    mean_z2 = np.mean(z ** 2)
    assert float(t.mean_z2[0]) == pytest.approx(mean_z2, rel=1e-8)
    assert float(t.p_value[0]) == pytest.approx(stats.f.sf(mean_z2, z.size, 2 * 4), rel=1e-8)
    assert int(t.dof[0]) == z.size and int(t.n_fit[0]) == 5 and int(t.n_heldout[0]) == 1


def test_heldout_test_keeps_the_true_correction_and_rejects_the_wrong_one():
    kept = []
    for k in range(40):
        fit, held = _split(_corrected_sweep(1.0, -60.0, "inverse_sqrt", noise=0.01, seed=k,
                                            widths=HELDOUT_WIDTHS))
        kept.append(bool(pd.heldout_test(fit, held, correction="inverse_sqrt").consistent[0]))
    assert np.mean(kept) >= 0.85  # 95% nominal; 40 replicates
    # a drift in 1/log m that lasts: a correction in m^(-1/2) fitted at m <= 160000 misses it
    fit, held = _split(_corrected_sweep(1.0, 3.0, "inverse_log", noise=0.005,
                                        widths=HELDOUT_WIDTHS))
    right = pd.heldout_test(fit, held, correction="inverse_log")
    wrong = pd.heldout_test(fit, held, correction="inverse_sqrt")
    assert bool(right.consistent[0]) and not bool(wrong.consistent[0])
    assert float(wrong.p_value[0]) < 0.01


def test_heldout_test_rejects_bad_input():
    fit, held = _split(_corrected_sweep(1.0, 0.8, "inverse_log", widths=HELDOUT_WIDTHS))
    with pytest.raises(ValueError, match="must all exceed the widest fitted width 160000"):
        pd.heldout_test(fit, fit.sel(width=[80000]))
    with pytest.raises(ValueError, match=r"heldout seeds \[7\] are not in fit"):
        pd.heldout_test(fit, held.assign_coords(seed=[7]))
    with pytest.raises(ValueError, match="level="):
        pd.heldout_test(fit, held, level=95)
    with pytest.raises(ValueError, match="correction="):
        pd.heldout_test(fit, held, correction="cubic")
    one_seed = pd.heldout_test(fit.sel(seed=[0]), held)  # no scatter from one seed: untested
    assert not bool(one_seed.consistent[0]) and np.isnan(float(one_seed.p_value[0]))
