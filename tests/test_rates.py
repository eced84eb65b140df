"""meanfield.validation.rates: slopes against closed forms and scipy, bootstrap coverage on synthetic
data, zero crossings, distances from meanfield.compare."""

import math

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from meanfield.validation import rates

WIDTHS = np.array([1000.0, 5000.0, 10000.0, 20000.0, 40000.0])


def test_loglog_fit_recovers_an_exact_power_law_and_matches_linregress():
    slope, intercept = rates.loglog_fit(WIDTHS, 3.0 * WIDTHS ** -0.506)
    assert slope == pytest.approx(-0.506, abs=1e-12)
    assert intercept == pytest.approx(math.log(3.0), abs=1e-10)
    y = np.array([0.018, 0.0081, 0.0055, 0.0039, 0.0028])
    ref = stats.linregress(np.log(WIDTHS), np.log(y))
    assert rates.loglog_fit(WIDTHS, y) == pytest.approx((ref.slope, ref.intercept), rel=1e-12)


def test_one_seed_interval_is_the_regression_t_interval():
    y = np.array([0.49, 0.48, 0.475, 0.47, 0.478])
    fit = rates.fit_slope(WIDTHS, y)
    ref = stats.linregress(np.log(WIDTHS), np.log(y))
    half = stats.t.ppf(0.975, 3) * ref.stderr
    assert fit.slope == pytest.approx(ref.slope, rel=1e-12)
    assert fit.stderr == pytest.approx(ref.stderr, rel=1e-10)
    assert (fit.ci_low, fit.ci_high) == pytest.approx((ref.slope - half, ref.slope + half))
    assert fit.n_seeds == 1 and "t-interval" in fit.method
    two = rates.fit_slope(WIDTHS[:2], y[:2])
    assert math.isnan(two.ci_low) and two.n_x == 2


def test_seed_slope_is_the_mean_of_per_seed_slopes_and_missing_values_are_dropped(rng):
    y = 0.5 * WIDTHS[:, None] ** 0.37 * np.exp(0.1 * rng.standard_normal((5, 6)))
    fit = rates.fit_slope(WIDTHS, y)
    per_seed = [np.polyfit(np.log(WIDTHS), np.log(y[:, s]), 1)[0] for s in range(6)]
    assert fit.slope == pytest.approx(np.mean(per_seed), rel=1e-12)
    assert fit.ci_low < fit.slope < fit.ci_high and fit.n_seeds == 6
    y[2, 4] = np.nan  # a failed run drops its seed
    y[4, :] = -1.0    # a width with no positive value is dropped
    fit = rates.fit_slope(WIDTHS, y)
    keep = [0, 1, 2, 3, 5]
    ref = np.mean([np.polyfit(np.log(WIDTHS[:4]), np.log(y[:4, s]), 1)[0] for s in keep])
    assert fit.slope == pytest.approx(ref, rel=1e-12)
    assert (fit.n_x, fit.n_seeds) == (4, 5)
    assert fit == rates.fit_slope(WIDTHS, y)  # reproducible bootstrap


@pytest.mark.parametrize("n_seeds", [3, 10])
def test_bootstrap_interval_covers_the_true_slope_at_the_nominal_rate(n_seeds):
    rng = np.random.default_rng(n_seeds)
    replicates, hits = 300, 0
    for r in range(replicates):
        noise = 0.1 * rng.standard_normal((5, n_seeds)) + 0.05 * rng.standard_normal((1, n_seeds))
        y = 0.3 * WIDTHS[:, None] ** -0.5 * np.exp(noise)
        hits += rates.fit_slope(WIDTHS, y, seed=r, n_boot=1000).covers(-0.5)
    # 95% nominal; binomial sd of the coverage over 300 replicates is 0.013
    assert 0.91 <= hits / replicates <= 0.99


def test_fit_slopes_over_cells_matches_fit_slope():
    rng = np.random.default_rng(3)
    values = np.exp(rng.standard_normal((3, 5, 4)) * 0.05) * WIDTHS[None, :, None] ** \
        np.array([-0.5, 0.0, 0.4])[:, None, None]
    da = xr.DataArray(values, dims=("gamma", "width", "seed"),
                      coords={"gamma": [0.5, 1.0, 1.75], "width": WIDTHS, "seed": range(4)})
    out = rates.fit_slopes(da.transpose("width", "seed", "gamma"))
    assert out.slope.dims == ("gamma",)
    for k in range(3):
        fit = rates.fit_slope(WIDTHS, values[k])
        assert out.slope.values[k] == fit.slope and out.ci_high.values[k] == fit.ci_high
    one = rates.fit_slopes(da.isel(seed=0), seed_dim=None)
    assert one.n_seeds.values.tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="seed_dim='seed' is not a dim"):
        rates.fit_slopes(da.isel(seed=0))


@pytest.mark.parametrize("x, y, match", [
    ([1.0, 1.0], [1.0, 2.0], "distinct positive"),
    ([1.0, -2.0], [1.0, 2.0], "distinct positive"),
    ([1.0, 2.0, 3.0], [1.0, 2.0], "x must be"),
    ([1.0, 2.0, 3.0], [1.0, -1.0, np.nan], "need >= 2 distinct x"),
])
def test_bad_fit_input_raises(x, y, match):
    with pytest.raises(ValueError, match=match):
        rates.fit_slope(x, y)


def test_bad_fit_options_raise():
    with pytest.raises(ValueError, match="level=1.5"):
        rates.fit_slope(WIDTHS, WIDTHS, level=1.5)
    with pytest.raises(ValueError, match="n_boot"):
        rates.fit_slope(WIDTHS, WIDTHS, n_boot=10)


# ----------------------------------------------------------------------------- zero crossings

def test_zero_crossing_interpolates_linear_functions_exactly():
    x = np.linspace(0.6, 1.4, 9)
    c = rates.zero_crossing(x, 0.8 * (x - 1.033))
    assert c.x == pytest.approx(1.033, abs=1e-12) and not c.extrapolated and c.n_crossings == 1
    assert rates.zero_crossing(x, -(x - 0.7)).x == pytest.approx(0.7)  # decreasing too
    exact = rates.zero_crossing(x, x - 1.0)  # a sampled zero counts once
    assert exact.crossings == (pytest.approx(1.0),)


def test_several_crossings_are_all_reported_and_the_median_is_the_estimate():
    x = np.array([0.6, 0.7, 0.8, 0.9, 1.0, 1.1])
    y = np.array([-0.3, -0.1, 0.05, -0.02, 0.1, 0.3])
    c = rates.zero_crossing(x, y)
    assert c.n_crossings == 3
    np.testing.assert_allclose(c.crossings, [0.7 + 0.1 * 0.1 / 0.15, 0.8 + 0.1 * 0.05 / 0.07,
                                             0.9 + 0.1 * 0.02 / 0.12])
    assert c.x == pytest.approx(c.crossings[1])


def test_crossing_beyond_the_grid_is_extrapolated_and_flagged():
    x = np.linspace(0.6, 1.4, 9)
    c = rates.zero_crossing(x, 0.5 * (x - 1.45))
    assert c.extrapolated and c.x == pytest.approx(1.45) and c.crossings == ()
    low = rates.zero_crossing(x, 0.5 * (x - 0.5))
    assert low.extrapolated and low.x == pytest.approx(0.5)
    away = rates.zero_crossing(x, np.array([3, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5]))
    assert away.extrapolated and math.isnan(away.x)  # moving away from zero at its nearest end
    assert math.isnan(rates.zero_crossing(x, x + 5, extrapolate=False).x)
    assert rates.zero_crossing([0.5, np.nan, 1.5], [-1.0, 0.0, 1.0]).x == pytest.approx(1.0)


# ----------------------------------------------------------------------------- distances

def _fake(times, f_eval, loss):
    return xr.Dataset({"f_eval": (("t", "eval_point"), f_eval), "loss": ("t", loss)},
                      coords={"t": times})


def test_compare_distance_at_a_time_and_its_sup():
    t = np.array([0.0, 1.0, 2.0, 4.0])
    grid = np.linspace(-1, 1, 5)
    limit = _fake(t, np.zeros((4, 5)), np.ones(4))
    gap = np.array([0.0, 0.3, 0.2, 0.1])
    run = _fake(t, gap[:, None] * grid[None, :], np.ones(4) + gap)
    assert rates.compare_distance(run, limit, t=2.0) == pytest.approx(0.2)
    assert rates.compare_distance(run, limit) == pytest.approx(0.3)
    w = (math.log(3) - math.log(2)) / (math.log(4) - math.log(2))
    assert rates.compare_distance(run, limit, t=3.0) == pytest.approx(0.2 + w * (0.1 - 0.2))
    rms = math.sqrt(np.mean((0.1 * grid) ** 2))
    assert rates.compare_distance(run, limit, distance="f_l2_error", t=4.0) == pytest.approx(rms)
    assert rates.compare_distance(run, limit, distance="loss_gap", t=1.0) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="distance='tv' is not allowed"):
        rates.compare_distance(run, limit, distance="tv")
    with pytest.raises(ValueError, match="outside the run's recorded times"):
        rates.compare_distance(run, limit, t=10.0)


def test_distance_rate_recovers_a_known_width_law():
    t = np.array([0.0, 1.0, 2.0])
    grid = np.linspace(-1, 1, 3)
    limit = _fake(t, np.zeros((3, 3)), np.ones(3))
    runs = [[_fake(t, c * m ** -0.5 * np.outer([0, 1, 1], grid), np.ones(3))
             for c in (1.0, 1.3, 0.8)] for m in WIDTHS]
    fit = rates.distance_rate(WIDTHS, runs, limit, t=2.0)
    assert fit.slope == pytest.approx(-0.5, abs=1e-12) and fit.n_seeds == 3
    assert fit.ci_low == pytest.approx(-0.5, abs=1e-9)
    assert fit.ci_high == pytest.approx(-0.5, abs=1e-9)
    per_width = rates.distance_rate(WIDTHS, runs, [limit] * 5)
    assert per_width.slope == pytest.approx(-0.5, abs=1e-12)
    with pytest.raises(ValueError, match="one sequence per width"):
        rates.distance_rate(WIDTHS, runs[:3], limit)
