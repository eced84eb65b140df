"""Luo et al.'s phase diagram (arXiv 2007.07497, docs/theory/phase-diagram.md) from a width sweep.

The order parameter is RD(theta_w) = |theta_w(t*) - theta_w(0)| / |theta_w(0)| at the end of
training t* (the first time the MSE falls below the tolerance; ``rd_w_end`` of a sweep of
``luo_1d`` runs). Per (gamma, gamma') cell, S_w is the least-squares slope of log RD against
log m (``meanfield.validation.rates.fit_slopes``: mean over seeds of log RD, bootstrap CI over seeds).
S_w < 0: linear regime, S_w ~ 0: critical, S_w > 0: condensed. The measured boundary is the
zero crossing of S_w along gamma at each gamma' (``meanfield.validation.rates.zero_crossing``); the
theoretical one is gamma = 1 for gamma' <= 0 and gamma = 1 + gamma' for gamma' >= 0.

* ``diagram_sweep``: the ``meanfield.validation.sweep.Sweep`` of a diagram (width x seed x gamma' x gamma).
* ``slope_map``: S_w per cell (only runs that reached the loss tolerance count).
* ``measured_boundary``: the boundary per gamma' against the theory.
* ``refinement_cells``: the rows whose boundary misses the theory, with the cells bracketing
  each measured crossing (to rerun at larger widths: is the miss a finite-width shift?).
* ``local_slopes``: the slope of log RD between consecutive widths (S_w's drift with m).
* ``limit_boundary``: the boundary extrapolated to m -> infinity with a finite-width correction.
* ``heldout_test``: that correction, fitted as ``limit_boundary`` fits it, against widths it
  did not see (an out-of-sample test against the seed scatter).
* ``plot_slope_map``: S_w heat map with both boundaries.
* ``plot_condensation_maps``: Luo's scatter (angle atan2(b, w), amplitude |a| |w~|) of the
  final particles for a few cells and widths (sweeps run with ``particles > 0``).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from meanfield.validation.rates import fit_slopes, zero_crossing
from meanfield.validation.sweep import Summary, Sweep

ORDER_PARAMETER = "rd_w_end"
CONVERGED = "loss_tol"  # stop reason of a run that reached the end of training


def theoretical_boundary(gamma_prime) -> np.ndarray:
    """Critical gamma at each gamma': 1 for gamma' <= 0, 1 + gamma' for gamma' >= 0 (docs/theory/phase-diagram.md)."""
    gamma_prime = np.asarray(gamma_prime, float)
    return 1.0 + np.maximum(gamma_prime, 0.0)


def diagram_sweep(*, gammas, gamma_primes=(0.0,), widths=(1000, 5000, 10000, 20000, 40000),
                  seeds=(0,), particles: int = 0, n_saves: int = 40, name: str = "luo-diagram",
                  **fixed) -> Sweep:
    """The sweep of a phase diagram: luo_1d over width x seed x gamma' x gamma.

    Args:
        gammas, gamma_primes, widths, seeds: the axis values.
        particles: initial/final particles kept per run (for condensation maps).
        n_saves: save times per run (fewer saves let the adaptive flow take longer steps; RD
            at the end of training moves in its 4th digit between 40 and 300 saves).
        name: label of the sweep.
        **fixed: further luo_1d arguments or config fields (e.g. ``rtol``, ``mse_tol``).
    """
    return Sweep(preset="luo_1d",
                 axes={"width": tuple(widths), "seed": tuple(seeds),
                       "gamma_prime": tuple(gamma_primes), "gamma": tuple(gammas)},
                 fixed={"n_saves": n_saves, **fixed},
                 summary=Summary(particles=particles, density_times=0), name=name)


def order_parameter(ds: xr.Dataset, variable: str = ORDER_PARAMETER) -> xr.DataArray:
    """``variable`` where the run reached the end of training (loss tolerance), else NaN."""
    if variable not in ds:
        raise ValueError(f"variable={variable!r} is not in the sweep; choose one of "
                         f"{[v for v in ds.data_vars if v.endswith('_end')]}")
    return ds[variable].where(ds.stop_reason == CONVERGED)


def slope_map(ds: xr.Dataset, *, variable: str = ORDER_PARAMETER, level: float = 0.95,
              n_boot: int = 2000) -> xr.Dataset:
    """S_w (slope of log ``variable`` against log m) for every cell of the other dims.

    Returns:
        Dataset over the non-(width, seed) dims with ``slope`` (S_w), ``ci_low``, ``ci_high``,
        ``stderr``, ``intercept``, ``n_x``, ``n_seeds`` and ``n_failed`` (runs of the cell
        that did not reach the loss tolerance; they are left out of the fit).
    """
    for dim in ("width", "seed"):
        if dim not in ds.dims:
            raise ValueError(f"the sweep needs a {dim!r} axis; its dims are {tuple(ds.dims)}")
    values = order_parameter(ds, variable)
    seed_dim = "seed" if ds.sizes["seed"] > 1 else None
    values = values if seed_dim else values.isel(seed=0, drop=True)
    out = fit_slopes(values, x_dim="width", seed_dim=seed_dim, level=level, n_boot=n_boot)
    failed = (ds.stop_reason != CONVERGED).sum(("width", "seed"))
    return out.assign(n_failed=failed.astype(int)).assign_attrs(variable=variable)


def measured_boundary(slopes: xr.Dataset, *, gamma_dim: str = "gamma",
                      gamma_prime_dim: str = "gamma_prime") -> xr.Dataset:
    """Zero crossing of S_w along gamma for each gamma', beside the theory.

    Returns:
        Dataset over gamma' with ``boundary`` (the crossing), ``extrapolated`` (no sign change
        on the grid), ``n_crossings``, ``theory`` and ``deviation`` = boundary - theory.
    """
    s = slopes.slope.transpose(gamma_prime_dim, gamma_dim)
    gammas = s[gamma_dim].values
    found = [zero_crossing(gammas, row) for row in s.values]
    gp = s[gamma_prime_dim].values
    theory = theoretical_boundary(gp)
    boundary = np.array([c.x for c in found])
    return xr.Dataset({
        "boundary": (gamma_prime_dim, boundary),
        "extrapolated": (gamma_prime_dim, np.array([c.extrapolated for c in found])),
        "n_crossings": (gamma_prime_dim, np.array([c.n_crossings for c in found])),
        "theory": (gamma_prime_dim, theory),
        "deviation": (gamma_prime_dim, boundary - theory),
    }, coords={gamma_prime_dim: gp})


def refinement_cells(slopes: xr.Dataset, boundary: xr.Dataset, tolerance: float, *,
                     max_rows: int | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The cells to rerun at larger widths: where the measured boundary misses the theory.

    Args:
        slopes: ``slope_map`` of the diagram.
        boundary: its ``measured_boundary``.
        tolerance: allowed |boundary - theory|.
        max_rows: keep at most this many rows, the largest deviations first (None: all).

    Returns:
        (gamma_primes, gammas): the rows whose finite crossing deviates by more than
        ``tolerance`` (ascending) and the union of the two grid gammas bracketing each
        crossing (ascending); both empty when every row is within tolerance.
    """
    deviation = np.abs(boundary.deviation.values)
    off = np.flatnonzero(np.isfinite(deviation) & (deviation > tolerance))
    off = off[np.argsort(-deviation[off])][:max_rows]
    gammas = slopes.gamma.values
    rows, cells = [], set()
    for k in sorted(off):
        crossing = float(boundary.boundary.values[k])
        right = int(np.clip(np.searchsorted(gammas, crossing), 1, gammas.size - 1))
        rows.append(float(boundary.gamma_prime.values[k]))
        cells.update((float(gammas[right - 1]), float(gammas[right])))
    return tuple(rows), tuple(sorted(cells))


def local_slopes(ds: xr.Dataset, variable: str = ORDER_PARAMETER) -> xr.DataArray:
    """Slope of the seed-mean of log ``variable`` between consecutive widths.

    Returns:
        DataArray over (the other dims..., ``width``) with ``width`` the geometric midpoint of
        each pair: S_w measured over a factor-of-a-few range, to see it drift with m.
    """
    log_rd = np.log(order_parameter(ds, variable)).mean("seed")
    log_m = np.log(ds.width.astype(float))
    slope = log_rd.diff("width", label="upper") / log_m.diff("width", label="upper")
    mid = np.sqrt(ds.width.values[1:].astype(float) * ds.width.values[:-1])
    return slope.assign_coords(width=mid)


# ----------------------------------------------------------------------------- figures

def _edges(centres: np.ndarray) -> np.ndarray:
    mid = (centres[1:] + centres[:-1]) / 2
    if centres.size == 1:
        return np.array([centres[0] - 0.05, centres[0] + 0.05])
    return np.concatenate([[2 * centres[0] - mid[0]], mid, [2 * centres[-1] - mid[-1]]])


def plot_slope_map(slopes: xr.Dataset, boundary: xr.Dataset | None = None, *, title: str = ""):
    """Heat map of S_w over (gamma, gamma') with the measured (markers; hollow where
    extrapolated) and theoretical (line) boundaries. Returns an off-screen Figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure

    s = slopes.slope.transpose("gamma_prime", "gamma")
    gammas, gps = s.gamma.values, s.gamma_prime.values
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    finite = np.abs(s.values[np.isfinite(s.values)])
    bound = float(max(finite.max(), 0.05)) if finite.size else 1.0
    mesh = ax.pcolormesh(_edges(gammas), _edges(gps), s.values, cmap="RdBu_r",
                         norm=TwoSlopeNorm(0.0, -bound, bound))
    fig.colorbar(mesh, ax=ax, label=r"$S_w$ = slope of $\log$ RD($\theta_w$) vs $\log m$")
    line = np.linspace(_edges(gps)[0], _edges(gps)[-1], 200)
    ax.plot(theoretical_boundary(line), line, color="k", lw=2,
            label=r"theory: $\gamma = 1$ ($\gamma'\leq 0$), $\gamma = 1+\gamma'$ ($\gamma'\geq 0$)")
    if boundary is not None:
        b = boundary.boundary.values
        ext = boundary.extrapolated.values.astype(bool)
        y = boundary.gamma_prime.values
        ax.plot(b[~ext], y[~ext], "o", color="#ffd400", mec="k", ms=8,
                label="measured: zero of $S_w$ along $\\gamma$")
        if ext.any():
            ax.plot(b[ext], y[ext], "o", mfc="none", mec="k", ms=8, mew=1.5,
                    label="measured (extrapolated)")
    if s.sizes["gamma"] * s.sizes["gamma_prime"] <= 120:
        for i, gp in enumerate(gps):
            for j, g in enumerate(gammas):
                if np.isfinite(s.values[i, j]):
                    dark = abs(s.values[i, j]) > 0.6 * bound
                    ax.text(g, gp, f"{s.values[i, j]:.2f}", ha="center", va="center",
                            fontsize=6, color="white" if dark else "0.15")
    ax.set_xlim(_edges(gammas)[0], _edges(gammas)[-1])
    ax.set_ylim(_edges(gps)[0], _edges(gps)[-1])
    ax.set_xlabel(r"$\gamma$")
    ax.set_ylabel(r"$\gamma'$")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    ax.set_title(title or "Luo et al. phase diagram (arXiv 2007.07497)", fontsize=10)
    return fig


def _run_like(config) -> xr.Dataset:
    """The parts of a run Dataset that ``meanfield.plot``'s angle/amplitude helpers read."""
    from meanfield.recording import angle_plane

    basis = angle_plane(config, config.data.unique_inputs(config.model.bias)[0])
    return xr.Dataset({"angle_basis": (("plane_axis", "component"), basis)},
                      attrs={"config": config.to_json()})


def plot_condensation_maps(ds: xr.Dataset, sweep: Sweep, cells, widths, *, seed=None,
                           stage: str = "final"):
    """Luo's condensation scatter (angle of w~ = (w, b), amplitude |a| |w~|) of the kept
    particles, one row per cell {axis: value} and one column per width. Returns a Figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from meanfield.plot import SIGN_COLOURS, SIGN_NAMES, neuron_amplitudes, neuron_angles

    if "particles_w" not in ds:
        raise ValueError("the sweep kept no particles: run it with Summary(particles=k > 0)")
    cells, widths = list(cells), list(widths)
    seed = ds.seed.values[0] if seed is None else seed
    fig = Figure(figsize=(2.6 * len(widths), 2.2 * len(cells) + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(cells), len(widths), squeeze=False)
    for row, cell in zip(axes, cells):
        for ax, width in zip(row, widths):
            coords = {**cell, "width": width, "seed": seed}
            point = ds.sel(coords)
            a = np.asarray(point.particles_a.sel(stage=stage).values, float)
            w = np.asarray(point.particles_w.sel(stage=stage).values, float)
            keep = np.isfinite(a)
            a, w = a[keep], w[keep]
            run = _run_like(sweep.config(**{d: coords[d] for d in sweep.dims}))
            theta = np.rad2deg(neuron_angles(run, w))
            amp = neuron_amplitudes(run, a, w)
            for sign, mask in (("+", a >= 0), ("-", a < 0)):
                ax.scatter(theta[mask], amp[mask], s=2, color=SIGN_COLOURS[sign], alpha=0.6,
                           lw=0, rasterized=True, label=SIGN_NAMES[sign])
            ax.set_xlim(-180, 180)
            ax.set_xticks([-180, -90, 0, 90, 180])
            ax.set_ylim(bottom=0)
            ax.tick_params(labelsize=6)
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
            label = ", ".join(f"{k.replace('gamma_prime', 'γ′').replace('gamma', 'γ')}={v:g}"
                              for k, v in cell.items())
            ax.set_title(f"{label}, m={width}", fontsize=7)
    axes[0, 0].legend(fontsize=6, markerscale=3, frameon=False, loc="upper left")
    fig.supxlabel(r"orientation $\arctan2(b, w)$ (deg)", fontsize=8)
    fig.supylabel(r"amplitude $|a_k|\,\|\tilde w_k\|$", fontsize=8)
    fig.suptitle(f"condensation at the end of training\n({stage} particles of the first "
                 f"{ds.sizes['neuron']} neurons; seed {seed})", fontsize=9)
    return fig


# ----------------------------------------------------------------------------- large-width limit

def _log_log_correction(m: np.ndarray) -> np.ndarray:
    return np.log(np.log(m))


def _inverse_sqrt_correction(m: np.ndarray) -> np.ndarray:
    return m ** -0.5


# The leading finite-width correction of log RD(theta_w) against log m: log RD = c + S_inf log m
# + b g(m). With g = log log m the local slope d log RD / d log m is S_inf + b / log m (a
# correction in 1/log m); with g = m^(-1/2) it is S_inf - (b/2) m^(-1/2) (a power of m, the
# particle-fluctuation scale).
CORRECTIONS = {"inverse_log": _log_log_correction, "inverse_sqrt": _inverse_sqrt_correction}


def asymptotic_slope_weights(widths, correction: str = "inverse_log") -> np.ndarray:
    """Weights v with S_inf = v . log RD (the least-squares fit of log RD = c + S_inf log m +
    b g(m) over ``widths``, g = ``CORRECTIONS[correction]``).

    Args:
        widths: (n,) widths m > 1, n >= 3 distinct.
        correction: a key of ``CORRECTIONS``.
    Returns:
        (n,) weights.
    """
    return _fit_weights(widths, correction)[1]


def _fit_weights(widths, correction: str) -> np.ndarray:
    """(3, n) weights of (c, S_inf, b) in the least-squares fit of log RD = c + S_inf log m +
    b g(m) over ``widths`` (checked as in ``asymptotic_slope_weights``)."""
    if correction not in CORRECTIONS:
        raise ValueError(f"correction={correction!r} is not allowed; choose one of "
                         f"{sorted(CORRECTIONS)}")
    m = np.asarray(widths, float)
    if m.ndim != 1 or np.unique(m).size < 3 or np.any(~np.isfinite(m)) or np.any(m <= 1):
        raise ValueError(f"widths must hold >= 3 distinct finite values > 1 (three "
                         f"coefficients are fitted), got {widths}")
    design = np.stack([np.ones_like(m), np.log(m), CORRECTIONS[correction](m)], axis=1)
    return np.linalg.pinv(design)


def limit_boundary(ds: xr.Dataset, *, correction: str = "inverse_log", level: float = 0.95,
                   n_boot: int = 2000, seed: int = 0, variable: str = ORDER_PARAMETER,
                   gamma_dim: str = "gamma", gamma_prime_dim: str = "gamma_prime") -> xr.Dataset:
    """The boundary extrapolated to m -> infinity, with a bootstrap interval over seeds.

    Per cell, S_inf is the asymptotic slope of the seed-mean of log RD against log m, fitted
    with the leading finite-width correction ``correction`` (``asymptotic_slope_weights``);
    the boundary is the zero crossing of S_inf along gamma (``zero_crossing``). The interval
    resamples whole seeds (a seed's runs share their draws across widths and gammas) and is
    the expanded percentile interval of ``meanfield.validation.rates.fit_slope``.

    Args:
        ds: a diagram sweep (dims width, seed, gamma, gamma'); only seeds that reached the loss
            tolerance at every width of every gamma of a row are used.
        correction: a key of ``CORRECTIONS``.
        level: confidence level in (0, 1); n_boot: resamples (>= 100); seed: of the resampler.
    Returns:
        Dataset over gamma' with ``boundary``, ``ci_low``, ``ci_high``, ``extrapolated`` (no
        sign change of S_inf on the grid), ``theory``, ``deviation``, ``n_seeds`` and
        ``slope_inf`` (gamma', gamma): the asymptotic S_w per cell.
    """
    from meanfield.validation.rates import expansion

    if not (isinstance(level, float) and 0 < level < 1):
        raise ValueError(f"level={level!r} is not allowed; it must be a float in (0, 1)")
    if not (isinstance(n_boot, int) and n_boot >= 100):
        raise ValueError(f"n_boot={n_boot!r} is not allowed; it must be an int >= 100")
    weights = asymptotic_slope_weights(ds.width.values, correction)
    log_rd = np.log(order_parameter(ds, variable)).transpose(
        gamma_prime_dim, gamma_dim, "seed", "width")
    gammas = log_rd[gamma_dim].values
    rng = np.random.default_rng(seed)
    rows = {k: [] for k in ("boundary", "ci_low", "ci_high", "extrapolated", "n_seeds")}
    slope_inf = []
    for values in log_rd.values:  # (gamma, seed, width)
        values = values[:, np.all(np.isfinite(values), axis=(0, 2))]
        n_seeds = values.shape[1]
        slopes = values.mean(axis=1) @ weights
        found = zero_crossing(gammas, slopes)
        low = high = np.nan
        if n_seeds >= 2 and np.isfinite(found.x):
            picks = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
            boot = values[:, picks].mean(axis=2) @ weights  # (gamma, n_boot)
            crossings = np.array([zero_crossing(gammas, b).x for b in boot.T])
            crossings = crossings[np.isfinite(crossings)]
            if crossings.size >= n_boot // 2:
                alpha = 1 - level
                low, high = found.x + expansion(n_seeds, level) * (
                    np.quantile(crossings, [alpha / 2, 1 - alpha / 2]) - found.x)
        slope_inf.append(slopes)
        for key, value in zip(rows, (found.x, low, high, found.extrapolated, n_seeds)):
            rows[key].append(value)
    gp = log_rd[gamma_prime_dim].values
    theory = theoretical_boundary(gp)
    out = {k: (gamma_prime_dim, np.asarray(v)) for k, v in rows.items()}
    out["theory"] = (gamma_prime_dim, theory)
    out["deviation"] = (gamma_prime_dim, np.asarray(rows["boundary"]) - theory)
    out["slope_inf"] = ((gamma_prime_dim, gamma_dim), np.asarray(slope_inf))
    return xr.Dataset(out, coords={gamma_prime_dim: gp, gamma_dim: gammas},
                      attrs={"correction": correction, "level": level,
                             "widths": [int(m) for m in ds.width.values]})


def heldout_test(fit: xr.Dataset, heldout: xr.Dataset, *, correction: str = "inverse_log",
                 level: float = 0.95, variable: str = ORDER_PARAMETER,
                 gamma_dim: str = "gamma", gamma_prime_dim: str = "gamma_prime") -> xr.Dataset:
    """Out-of-sample test of a finite-width correction: fitted where ``limit_boundary`` fits
    it, it predicts log RD(theta_w) at widths it did not see.

    Per cell, log RD = c + S_inf log m + b g(m) (g = ``CORRECTIONS[correction]``) is fitted to
    the seed-mean of log RD over ``fit`` (seeds complete at every width, as in
    ``limit_boundary``). From the widest fitted width m_a (the anchor) it predicts the increment
    S_inf log(m / m_a) + b (g(m) - g(m_a)) at each held-out width m, which ``heldout`` measures as
    the mean over its seeds of log RD(m) - log RD(m_a) (the anchor value of the same seeds, from
    ``fit``: a seed's own offset cancels). The seed scatter sigma of a cell is the standard
    deviation over the fitted seeds of one seed's increment between consecutive fitted widths,
    pooled in quadrature over the widest two pairs; a correct correction then misses by about
    sigma sqrt(1/n_heldout + 1/n_fit) (a mean of n_heldout seeds against a fit to the mean of
    n_fit). Per gamma' the mean squared z-score over gammas and held-out widths is compared
    with the F(k, nu) quantile at ``level``: k z-scores whose scale sigma is itself estimated
    from few seeds, nu = 2 (n_fit - 1) degrees of freedom (the F test of a variance ratio
    rather than a chi-square with sigma taken as known; the held-out widths of a cell share its
    anchor, so treating them as independent is an approximation).

    Args:
        fit: a diagram sweep (dims width, seed, gamma, gamma'), >= 3 distinct widths, >= 2
            complete seeds per row for a scatter.
        heldout: the same cells at widths above every width of ``fit``; its seeds must be in
            ``fit`` (their anchor values).
        correction: a key of ``CORRECTIONS``; level: in (0, 1).
    Returns:
        Dataset with ``observed``, ``predicted``, ``error`` (observed - predicted) and ``z``
        (gamma', gamma, width: the held-out widths); ``slope_observed`` and ``slope_predicted``
        (the increments over log(m / m_a): the local slope from the anchor) and their zero
        crossings along gamma ``crossing_observed``, ``crossing_predicted`` (gamma', width);
        ``scatter`` (gamma', gamma); ``mean_z2`` (the mean squared z-score), ``dof`` (k),
        ``p_value`` (of F(k, nu)), ``consistent`` (p_value >= 1 - level; False where the
        scatter cannot be measured), ``n_fit``, ``n_heldout`` (gamma'); attrs ``correction``,
        ``anchor``, ``level``.
    """
    from scipy import stats

    if not (isinstance(level, float) and 0 < level < 1):
        raise ValueError(f"level={level!r} is not allowed; it must be a float in (0, 1)")
    for name, d in (("fit", fit), ("heldout", heldout)):
        missing = {"width", "seed", gamma_dim, gamma_prime_dim} - set(d.dims)
        if missing:
            raise ValueError(f"{name} needs the dims {sorted(missing)}; its dims are "
                             f"{tuple(d.dims)}")
    weights = _fit_weights(fit.width.values, correction)
    m_fit = np.sort(fit.width.values.astype(float))
    anchor = m_fit[-1]
    m_out = heldout.width.values.astype(float)
    if np.any(m_out <= anchor):
        raise ValueError(f"heldout widths {heldout.width.values.tolist()} must all exceed the "
                         f"widest fitted width {int(anchor)}")
    absent = sorted(set(heldout.seed.values.tolist()) - set(fit.seed.values.tolist()))
    if absent:
        raise ValueError(f"heldout seeds {absent} are not in fit (their anchor values)")
    g = CORRECTIONS[correction]
    step = np.stack([np.zeros_like(m_out), np.log(m_out / anchor), g(m_out) - g(anchor)], axis=1)
    order = (gamma_prime_dim, gamma_dim, "seed", "width")
    log_out = np.log(order_parameter(heldout, variable)).transpose(*order)
    cells = {gamma_prime_dim: log_out[gamma_prime_dim].values,
             gamma_dim: log_out[gamma_dim].values}
    log_fit = np.log(order_parameter(fit, variable)).sel(cells).sortby("width").transpose(*order)
    at_anchor = log_fit.isel(width=-1).sel(seed=log_out.seed.values).values  # (gp, gamma, seed)
    gammas = cells[gamma_dim]
    span = np.log(m_out / anchor)
    out = {k: [] for k in ("observed", "predicted", "scatter", "n_fit", "n_heldout")}
    for values, held, base in zip(log_fit.values, log_out.values, at_anchor):
        values = values[:, np.all(np.isfinite(values), axis=(0, 2))]  # (gamma, seed, width)
        rise = held - base[:, :, None]  # (gamma, seed, held-out width)
        rise = rise[:, np.all(np.isfinite(rise), axis=(0, 2))]
        steps = np.diff(values[:, :, -3:], axis=2)  # the widest two pairs of fitted widths
        scatter = (np.sqrt(np.mean(np.var(steps, axis=1, ddof=1), axis=1))
                   if values.shape[1] >= 2 else np.full(gammas.size, np.nan))
        out["observed"].append(rise.mean(axis=1) if rise.shape[1] else
                               np.full((gammas.size, m_out.size), np.nan))
        out["predicted"].append(values.mean(axis=1) @ weights.T @ step.T)
        out["scatter"].append(scatter)
        out["n_fit"].append(values.shape[1])
        out["n_heldout"].append(rise.shape[1])
    observed, predicted = np.asarray(out["observed"]), np.asarray(out["predicted"])
    n_fit, n_heldout = np.asarray(out["n_fit"]), np.asarray(out["n_heldout"])
    scatter = np.asarray(out["scatter"])
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = scatter * np.sqrt(1 / n_heldout + 1 / n_fit)[:, None]
        z = (observed - predicted) / expected[:, :, None]
    dof = np.sum(np.isfinite(z), axis=(1, 2))
    testable = (dof > 0) & (n_fit >= 2)
    mean_z2 = np.where(testable, np.nansum(z ** 2, axis=(1, 2)) / np.maximum(dof, 1), np.nan)
    p_value = np.where(testable, stats.f.sf(mean_z2, np.maximum(dof, 1),
                                            2 * np.maximum(n_fit - 1, 1)), np.nan)
    cell, row = (gamma_prime_dim, gamma_dim, "width"), (gamma_prime_dim, "width")
    slope = {k: v / span for k, v in (("observed", observed), ("predicted", predicted))}
    crossing = {k: np.array([[zero_crossing(gammas, s[i, :, j]).x for j in range(m_out.size)]
                             for i in range(s.shape[0])]) for k, s in slope.items()}
    return xr.Dataset({
        "observed": (cell, observed), "predicted": (cell, predicted),
        "error": (cell, observed - predicted), "z": (cell, z),
        "slope_observed": (cell, slope["observed"]),
        "slope_predicted": (cell, slope["predicted"]),
        "crossing_observed": (row, crossing["observed"]),
        "crossing_predicted": (row, crossing["predicted"]),
        "scatter": ((gamma_prime_dim, gamma_dim), scatter),
        "mean_z2": (gamma_prime_dim, mean_z2), "dof": (gamma_prime_dim, dof),
        "p_value": (gamma_prime_dim, p_value),
        "consistent": (gamma_prime_dim, np.isfinite(p_value) & (p_value >= 1 - level)),
        "n_fit": (gamma_prime_dim, n_fit), "n_heldout": (gamma_prime_dim, n_heldout),
    }, coords={**cells, "width": heldout.width.values},
        attrs={"correction": correction, "anchor": int(anchor), "level": level})
