"""Rate statistics: log-log slopes with bootstrap confidence intervals over seeds, zero
crossings, and the width-scaling rates of run-vs-limit distances (``meanfield.compare``).

* ``fit_slope(x, y)``: least-squares slope of log y against log x (e.g. Luo et al.'s
  S_w = slope of log RD(theta_w) against log m, arXiv 2007.07497, docs/theory/phase-diagram.md). With several
  seeds (y of shape (n_x, n_seeds)) the fitted curve is the mean over seeds of log y, whose OLS
  slope equals the mean of the per-seed slopes; its confidence interval is the expanded
  percentile bootstrap over seeds (``expansion``; a seed's whole curve is one resampling unit:
  in a coupled width sweep the runs of one seed share their first neurons, so they are not
  independent across widths).
  With one seed it is the t-interval of the regression (deviation from a power law only).
* ``fit_slopes(da, x_dim, seed_dim)``: the same for every cell of a DataArray (e.g. each
  (gamma, gamma') cell of a sweep).
* ``zero_crossing(x, y)``: where a sampled curve crosses 0, by linear interpolation between
  samples of opposite sign; without a sign change, by linear extrapolation from the end nearest
  zero, flagged ``extrapolated``.
* ``compare_distance`` / ``distance_rate``: a distance of ``meanfield.compare(run, limit)`` at
  a time (or its sup over time), and its slope in the width.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import xarray as xr

from meanfield.particles._validate import check_int, check_positive


@dataclasses.dataclass(frozen=True)
class SlopeFit:
    """A log-log slope with its uncertainty.

    Attributes:
        slope: OLS slope of mean_seeds(log y) against log x.
        intercept: its intercept (log y at x = 1).
        stderr: standard error of the slope: bootstrap standard deviation over seeds, or the
            regression standard error with one seed (NaN with 2 points).
        ci_low, ci_high: the ``level`` confidence interval (NaN if it cannot be formed).
        level: confidence level.
        n_x: number of x values used.
        n_seeds: number of seeds used (complete cases).
        method: how the interval was formed.
    """

    slope: float
    intercept: float
    stderr: float
    ci_low: float
    ci_high: float
    level: float
    n_x: int
    n_seeds: int
    method: str

    def covers(self, value: float) -> bool:
        return bool(self.ci_low <= value <= self.ci_high)


def _slopes(log_x: np.ndarray, log_y: np.ndarray) -> np.ndarray:
    """OLS slopes of each row of ``log_y`` (..., n) against ``log_x`` (n,)."""
    dx = log_x - log_x.mean()
    return (log_y - log_y.mean(axis=-1, keepdims=True)) @ dx / np.sum(dx ** 2)


def loglog_fit(x, y) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line log y = intercept + slope log x.

    Args:
        x, y: positive finite values, shape (n,), n >= 2 distinct x.
    """
    log_x, log_y = _logs(x, y)
    if log_y.ndim != 1:
        raise ValueError(f"y must be one-dimensional here, got shape {np.shape(y)}")
    slope = float(_slopes(log_x, log_y))
    return slope, float(log_y.mean() - slope * log_x.mean())


def _logs(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.ndim != 1 or y.shape[:1] != x.shape:
        raise ValueError(f"x must be (n,) and y (n,) or (n, n_seeds); got {x.shape}, {y.shape}")
    if np.unique(x).size < 2 or np.any(~np.isfinite(x)) or np.any(x <= 0):
        raise ValueError(f"x must hold >= 2 distinct positive finite values, got {x}")
    with np.errstate(divide="ignore", invalid="ignore"):
        log_y = np.where(np.isfinite(y) & (y > 0), np.log(np.where(y > 0, y, 1.0)), np.nan)
    return np.log(x), log_y


def expansion(n: int, level: float) -> float:
    """Widening factor of the expanded percentile bootstrap interval (Hesterberg 2015, "What
    teachers should know about the bootstrap", arXiv 1411.5279): sqrt(n/(n-1)) t_{n-1} / z,
    which restores the nominal coverage of a mean of n normal values (the plain percentile
    interval covers 86% instead of 95% at n = 5)."""
    from scipy import stats

    q = 1 - (1 - level) / 2
    return math.sqrt(n / (n - 1)) * float(stats.t.ppf(q, n - 1) / stats.norm.ppf(q))


def fit_slope(x, y, *, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> SlopeFit:
    """Log-log slope of y against x with a confidence interval (module docstring).

    Args:
        x: (n_x,) positive abscissae (e.g. widths m).
        y: (n_x,) or (n_x, n_seeds) values (e.g. RD). Non-positive or non-finite entries are
            missing: an x with no value is dropped, then every seed missing at a kept x.
        level: confidence level in (0, 1).
        n_boot: bootstrap resamples of the seeds (>= 100).
        seed: seed of the bootstrap generator (results are reproducible).
    Returns:
        ``SlopeFit``.
    Raises:
        ValueError: bad shapes, or fewer than 2 usable x values.
    """
    if not (isinstance(level, float) and 0 < level < 1):
        raise ValueError(f"level={level!r} is not allowed; it must be a float in (0, 1)")
    check_int("n_boot", n_boot, minimum=100)
    log_x, log_y = _logs(x, y)
    if log_y.ndim == 1:
        log_y = log_y[:, None]
    keep_x = np.any(np.isfinite(log_y), axis=1)
    log_x, log_y = log_x[keep_x], log_y[keep_x]
    log_y = log_y[:, np.all(np.isfinite(log_y), axis=0)]
    n_x, n_seeds = log_y.shape
    if n_x < 2 or np.unique(log_x).size < 2 or n_seeds == 0:
        raise ValueError(f"need >= 2 distinct x with values at the same seeds; have {n_x} x "
                         f"and {n_seeds} complete seeds")
    mean = log_y.mean(axis=1)
    slope = float(_slopes(log_x, mean))
    intercept = float(mean.mean() - slope * log_x.mean())
    alpha = 1 - level
    if n_seeds >= 2:
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
        boot = _slopes(log_x, log_y[:, picks].mean(axis=2).T)
        low, high = slope + expansion(n_seeds, level) * (
            np.quantile(boot, [alpha / 2, 1 - alpha / 2]) - slope)
        return SlopeFit(slope, intercept, float(boot.std(ddof=1)), float(low), float(high),
                        level, n_x, n_seeds, f"expanded percentile bootstrap over {n_seeds} "
                                             "seeds")
    if n_x == 2:
        return SlopeFit(slope, intercept, math.nan, math.nan, math.nan, level, n_x, 1,
                        "two points: no interval")
    from scipy import stats

    residual = mean - intercept - slope * log_x
    stderr = math.sqrt(np.sum(residual ** 2) / (n_x - 2) / np.sum((log_x - log_x.mean()) ** 2))
    half = stats.t.ppf(1 - alpha / 2, n_x - 2) * stderr
    return SlopeFit(slope, intercept, stderr, slope - half, slope + half, level, n_x, 1,
                    "regression t-interval (one seed)")


def fit_slopes(da: xr.DataArray, *, x_dim: str = "width", seed_dim: str | None = "seed",
               level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> xr.Dataset:
    """``fit_slope`` along ``x_dim`` (coordinate values as x) with seeds along ``seed_dim``,
    for every cell of the other dims.

    Returns:
        Dataset over the other dims with ``slope``, ``intercept``, ``stderr``, ``ci_low``,
        ``ci_high``, ``n_x``, ``n_seeds`` (NaN / 0 where a cell has too few values).
    """
    if x_dim not in da.dims:
        raise ValueError(f"x_dim={x_dim!r} is not a dim of {da.name!r}; dims are {da.dims}")
    if seed_dim is not None and seed_dim not in da.dims:
        raise ValueError(f"seed_dim={seed_dim!r} is not a dim of {da.name!r}; dims are "
                         f"{da.dims} (pass seed_dim=None for one seed)")
    inner = [x_dim] + ([seed_dim] if seed_dim else [])
    cells = da.transpose(..., *inner)
    outer = cells.dims[:cells.ndim - len(inner)]
    shape = cells.shape[:len(outer)]
    fields = ("slope", "intercept", "stderr", "ci_low", "ci_high", "n_x", "n_seeds")
    out = {name: np.full(shape, np.nan) for name in fields}
    x = np.asarray(da[x_dim].values, float)
    values = np.asarray(cells.values, float)
    for index in np.ndindex(*shape):
        try:
            fit = fit_slope(x, values[index], level=level, n_boot=n_boot, seed=seed)
        except ValueError:
            out["n_x"][index] = out["n_seeds"][index] = 0
            continue
        for name in fields:
            out[name][index] = getattr(fit, name)
    coords = {d: da[d] for d in outer if d in da.coords}
    return xr.Dataset({name: (outer, value) for name, value in out.items()}, coords=coords,
                      attrs={"x_dim": x_dim, "seed_dim": str(seed_dim), "level": level,
                             "method": "OLS slope of the seed-mean of log values against log x; "
                                       "expanded percentile bootstrap over seeds (t-interval "
                                       "for one seed)"})


# ----------------------------------------------------------------------------- zero crossings

@dataclasses.dataclass(frozen=True)
class Crossing:
    """Where a sampled curve crosses zero.

    Attributes:
        x: the estimate: the single interpolated crossing, the median of several, or the
            extrapolated one (NaN if the curve moves away from zero at its nearest end).
        extrapolated: no sign change inside the sampled range: ``x`` is extrapolated.
        crossings: every interpolated crossing inside the range, ascending.
    """

    x: float
    extrapolated: bool
    crossings: tuple[float, ...]

    @property
    def n_crossings(self) -> int:
        return len(self.crossings)


def zero_crossings(x, y) -> np.ndarray:
    """Every x where the piecewise-linear interpolant of (x, y) is 0 (sampled zeros included;
    non-finite samples dropped), ascending."""
    x, y = _finite_sorted(x, y)
    out = list(x[y == 0])
    for k in np.flatnonzero(y[:-1] * y[1:] < 0):
        out.append(x[k] - y[k] * (x[k + 1] - x[k]) / (y[k + 1] - y[k]))
    return np.sort(np.asarray(out, float))


def _finite_sorted(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.ndim != 1 or y.shape != x.shape:
        raise ValueError(f"x and y must be (n,) arrays of equal length; got {x.shape}, {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    order = np.argsort(x[keep])
    return x[keep][order], y[keep][order]


def zero_crossing(x, y, *, extrapolate: bool = True) -> Crossing:
    """The zero of a sampled curve (see ``Crossing``).

    Without a sign change, and with ``extrapolate``, the line through the two samples at the
    end nearest zero (smaller |y|) is continued to zero; that value is returned with
    ``extrapolated=True`` (NaN if that line moves away from zero, or < 2 finite samples).
    """
    xs, ys = _finite_sorted(x, y)
    found = zero_crossings(xs, ys)
    if found.size:
        return Crossing(float(np.median(found)), False, tuple(float(v) for v in found))
    if not extrapolate or xs.size < 2:
        return Crossing(math.nan, True, ())
    pair = slice(0, 2) if abs(ys[0]) < abs(ys[-1]) else slice(-2, None)
    (x0, x1), (y0, y1) = xs[pair], ys[pair]
    root = x0 - y0 * (x1 - x0) / (y1 - y0) if y1 != y0 else math.nan
    beyond = root < xs[0] if pair.start == 0 else root > xs[-1]
    return Crossing(float(root) if beyond else math.nan, True, ())


# ----------------------------------------------------------------------------- distances

def compare_distance(run: xr.Dataset, limit: xr.Dataset, *, distance: str = "f_sup_error",
                     t: float | None = None, sign: str = "all") -> float:
    """One distance of ``meanfield.compare(run, limit)``: at time ``t`` (linear in log t
    between the run's save times; exact at a save time) or, with ``t=None``, its sup over the
    run's times. Per-sign densities are taken at ``sign``."""
    from meanfield.limits.compare import compare
    from meanfield.validation.sweep import on_log_grid

    gaps = compare(run, limit)
    if distance not in gaps:
        raise ValueError(f"distance={distance!r} is not allowed; choose one of "
                         f"{sorted(gaps.data_vars)}")
    series = gaps[distance]
    if "sign" in series.dims:
        if sign not in series.sign.values:
            raise ValueError(f"sign={sign!r} is not allowed; choose one of "
                             f"{list(series.sign.values)}")
        series = series.sel(sign=sign)
    values = np.abs(np.asarray(series.values, float))
    if t is None:
        return float(np.nanmax(values))
    check_positive("t", t)
    value = on_log_grid(series.t.values, values, np.array([float(t)]))[0]
    if not np.isfinite(value):
        raise ValueError(f"t={t!r} is outside the run's recorded times "
                         f"({series.t.values[1] if series.t.size > 1 else '-'} to "
                         f"{series.t.values[-1]})")
    return float(value)


def distance_rate(widths: Sequence[float], runs: Sequence[Sequence[xr.Dataset]], limits, *,
                  distance: str = "f_sup_error", t: float | None = None, sign: str = "all",
                  level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> SlopeFit:
    """Slope in the width of a run-vs-limit distance (e.g. ~ -1/2 for the m^-1/2 laws).

    Args:
        widths: (n_w,) widths m.
        runs: per width, the runs of each seed (equal seed count; a missing run: None).
        limits: one limit Dataset for every run, or a sequence with one per width (limits
            that depend on m, e.g. kernel limits of a non-mean-field parametrisation).
        distance, t, sign: as in ``compare_distance``.
        level, n_boot, seed: as in ``fit_slope``.
    """
    if len(runs) != len(widths):
        raise ValueError(f"runs must hold one sequence per width: {len(runs)} for "
                         f"{len(widths)} widths")
    per_width = limits if isinstance(limits, Sequence) else [limits] * len(widths)
    if len(per_width) != len(widths):
        raise ValueError(f"limits must be one Dataset or one per width ({len(widths)}), got "
                         f"{len(per_width)}")
    n_seeds = {len(r) for r in runs}
    if len(n_seeds) != 1:
        raise ValueError(f"every width needs the same number of seeds, got {sorted(n_seeds)}")
    values = np.array([[np.nan if run is None else
                        compare_distance(run, limit, distance=distance, t=t, sign=sign)
                        for run in row] for row, limit in zip(runs, per_width)])
    return fit_slope(np.asarray(widths, float), values, level=level, n_boot=n_boot, seed=seed)
