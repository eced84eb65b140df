"""Mean-field reference from a deterministic quadrature of the initial law (docs/theory/limits.md).

The PDE of ``meanfield.limits.mean_field`` covers balanced initialisation with 1-D inputs and
bias only. For every other law (Gaussian / unbalanced, sphere, higher d) the infinite-width
flow is approximated by the particle system itself, started from a *deterministic* quadrature
of the initial law instead of i.i.d. draws:

* scrambled Sobol points (``scipy.stats.qmc.Sobol``, fixed seed, power-of-two counts, Owen
  scrambling) pushed through inverse CDFs: ``scipy.special.ndtri`` for a Gaussian coordinate;
  a Gaussian vector w in R^2 is written in polar form ``w = sqrt(chi2_2^-1(u_0)) theta`` with
  the direction theta = (cos 2 pi u_1, sin 2 pi u_1). This is the same law as ndtri coordinate
  by coordinate, but it stratifies the direction exactly in the plane: the activation pattern
  1[w . x~ > 0] depends on the direction only, and its integrals converge like 1/m instead of
  ~m^-0.6 with Cartesian ndtri (measured: sup-over-x error of the k0 kernel at 4096 points
  3e-3 Cartesian). For D != 2, w is ndtri coordinate by coordinate (Cartesian): in D > 2 no
  direction map stratifies the half-spaces, and the polar form (radius + normalised ndtri
  direction, D + 1 coordinates) measured 2-4x larger errors on smooth moments at D = 5.
  Directions of the ``sphere`` law: the angle 2 pi u in the plane, normalised ndtri vectors in
  D > 2. In D > 2 the quadrature's advantage over random draws is a constant factor on the
  activation-pattern integrals (their QMC rate is ~m^-(1/2 + 1/(2D)) as for any
  discontinuous integrand) and a rate on smooth moments (tests in D = 5);
* ``gaussian``: ``a = sigma_a ndtri(u_a)``, ``w = sigma_w`` (Gaussian vector as above), one
  Sobol dimension per coordinate (D + 1 in total);
* ``sphere``: ``w = scale theta``, ``a = +-output_scale``;
* ``balanced``: ``w = scale`` (Gaussian vector as above), ``a = s |w|``;
* sphere / balanced signs alternate and come in exact pairs: the Sobol point j gives neurons
  2j (s = +1) and 2j + 1 (s = -1) with the same w. This is an exact quadrature of the sign
  (uniform +-1, independent of w), and it gives f_0 = 0 exactly, as in the PDE. (Assigning
  alternating signs to *consecutive* Sobol points would correlate the sign with the first
  coordinate's leading digit, because consecutive Sobol points fill opposite halves.)
* ASI (any law): pairs (a, w), (-a, w) from one Sobol point (so f_0 = 0 exactly).

Validity. A reference at m = infinity exists only when the initial law does not depend on m,
i.e. the critical (mean-field) regime: ``parametrisation`` with m-independent scales
(``kind="mean_field"``, or ``kind="luo"`` with gamma = 1, gamma' = 0), explicit
``model.init.sigma_a`` / ``model.init.sigma_w``, or the sphere / balanced laws (explicit ``scale``).
Other parametrisations raise ``ValueError`` (the linear regime has the kernel limit,
``meanfield.limits.kernel``; the condensed regime has no fixed-time limit).

``mean_field_reference(config, levels=(2**12, 2**14, 2**16))`` runs ``meanfield.simulate`` at
each level (width = number of quadrature points) on common save times and returns the finest
level's Dataset with attrs ``limit="mean_field_reference"`` and a refinement report. This is an
APPROXIMATION with a measured error, not an exact limit: the reported
``refinement_sup_error`` (sup over the evaluation grid and the saved times of
|f_level - f_finest|) bounds the coarse levels' error, the fitted rate p (err ~ m^-p) and
``estimated_error`` = e_prev (m_prev / m_finest)^p extrapolate it to the finest level.

With the config's own schedule and a ``loss_tol`` (the luo_1d preset), the finest level stops
where a run of the config stops and the coarser levels run to the same time: past the loss
tolerance the residual falls to the precision's rounding level and the adaptive step
underflows (see ``mean_field_reference``'s ``stop_at_loss_tol``). The Dataset is of kind
``limit:mean_field_reference`` (``meanfield.schema``; ``infinite_width(config,
kind="mean_field_reference")``).
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

import meanfield.particles as pt
from meanfield.particles._validate import check_bool, check_int, check_times
from meanfield.schema import build

DEFAULT_LEVELS = (2 ** 12, 2 ** 14, 2 ** 16)
SOBOL_SEED = 20240527  # fixed scrambling: the reference is deterministic


def _is_power_of_two(n: int) -> bool:
    return isinstance(n, (int, np.integer)) and n >= 1 and (int(n) & (int(n) - 1)) == 0


def check_config(config) -> None:
    """Raise ValueError unless the initial law of ``config`` is m-independent (critical regime)."""
    spec, data = config.model, config.data
    law = spec.init
    if law.kind != "gaussian" or (law.sigma_a is not None and law.sigma_w is not None):
        return
    fan_in = spec.fan_in(data.input_dim)
    small = spec.parametrisation.scales(2 ** 10, fan_in)
    large = spec.parametrisation.scales(2 ** 20, fan_in)
    explicit = (law.sigma_a is not None, law.sigma_w is not None)
    same = [explicit[i] or math.isclose(small[i], large[i], rel_tol=1e-12) for i in range(2)]
    if not all(same):
        raise ValueError(
            "mean_field_reference needs an m-independent initial law (critical / mean-field "
            "regime: model.parametrisation.kind='mean_field' or kind='luo' with gamma=1, "
            "gamma_prime=0, or explicit model.init.sigma_a and model.init.sigma_w); the "
            "parametrisation "
            f"{spec.parametrisation} gives sigma_a, sigma_w = {small} at m=2^10 but {large} at "
            "m=2^20. Linear regime: use meanfield.limits.kernel; condensed regime: no "
            "fixed-time limit (meanfield.limits.condensed)")


def _sobol(n: int, dim: int, seed: int) -> np.ndarray:
    from scipy.stats import qmc

    u = qmc.Sobol(d=dim, scramble=True, seed=seed).random_base2(int(math.log2(n)))
    return np.clip(u, 2.0 ** -60, 1 - 2.0 ** -53)  # a scrambled point can land on 0


def _directions(u: np.ndarray, dim: int) -> np.ndarray:
    """Unit vectors from uniform coordinates u (n, dim - 1 or dim): the angle 2 pi u in the
    plane (exactly stratified), normalised ndtri-Gaussians in higher dimension."""
    from scipy.special import ndtri

    if dim == 1:
        return np.where(u[:, :1] < 0.5, -1.0, 1.0)
    if dim == 2:
        phi = 2 * np.pi * u[:, 0]
        return np.stack([np.cos(phi), np.sin(phi)], axis=1)
    z = ndtri(u[:, :dim])
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def _gaussian_vectors(u: np.ndarray, dim: int) -> np.ndarray:
    """N(0, I_dim) points from ``dim`` uniform coordinates u (n, dim).

    In the plane (dim = 2): radius sqrt(chi2_2 quantile of u_0) times the direction angle
    2 pi u_1 (polar form: it stratifies the direction exactly, and the ReLU activation pattern
    depends on the direction only). Otherwise ndtri of each coordinate: for dim > 2 a polar form
    (radius plus a normalised ndtri direction) needs dim + 1 coordinates and measured 2-4x
    larger errors than Cartesian ndtri on smooth moments (E w w^T, E relu(w.x) relu(w.x'))
    at d = 5, with no gain on the activation pattern (``tests/test_limits_reference.py``).
    """
    from scipy.special import ndtri
    from scipy.stats import chi2

    if dim != 2:
        return ndtri(u[:, :dim])
    radius = np.sqrt(chi2.ppf(u[:, 0], dim))
    return radius[:, None] * _directions(u[:, 1:], dim)


def _n_direction_coords(dim: int) -> int:
    return 1 if dim <= 2 else dim


def quadrature_particles(config, n_points: int, *, seed: int = SOBOL_SEED) -> pt.Particles:
    """Deterministic quadrature of the initial law of ``config`` with ``n_points`` neurons.

    Args:
        config: a SimulationConfig (its law, scales, bias and input dimension are used; its
            width and seed are ignored).
        n_points: number of neurons, a power of two (>= 2 with ASI or sphere/balanced pairs).
        seed: seed of the Sobol scrambling (fixed by default).
    Returns:
        ``particles.Particles`` with a: (n_points,), w: (n_points, d + bias), float64 numpy
        arrays (no padding), ready for ``meanfield.simulate(..., initial=...)``.
    """
    if not _is_power_of_two(n_points):
        raise ValueError(f"n_points={n_points} must be a power of two (Sobol balance)")
    check_config(config)
    spec = _with_width(config.model, int(n_points))
    law, dim = spec.init, spec.fan_in(config.data.input_dim)
    paired = law.asi or law.kind in ("sphere", "balanced")
    if paired and n_points < 2:
        raise ValueError(f"n_points={n_points} must be >= 2 (neurons come in sign pairs)")
    n_base = n_points // 2 if paired else n_points
    from scipy.special import ndtri

    if law.kind == "gaussian":  # dim coordinates for w (``_gaussian_vectors``), one for a
        sigma_a, sigma_w = spec.gaussian_scales(config.data.input_dim)
        u = _sobol(n_base, dim + 1, seed)
        a, w = sigma_a * ndtri(u[:, -1]), sigma_w * _gaussian_vectors(u[:, :-1], dim)
    elif law.kind == "sphere":
        u = _sobol(n_base, _n_direction_coords(dim), seed)
        w = law.scale * _directions(u, dim)
        a = np.full(n_base, law.output_scale)
    else:
        u = _sobol(n_base, dim, seed)
        w = law.scale * _gaussian_vectors(u, dim)
        a = np.linalg.norm(w, axis=1)
    if paired:  # neuron 2j: (a, w); neuron 2j + 1: (-a, w)
        a = np.stack([a, -a], axis=1).reshape(-1)
        w = np.repeat(w, 2, axis=0)
    return pt.Particles(a=np.ascontiguousarray(a, np.float64),
                        w=np.ascontiguousarray(w, np.float64))


def _with_width(spec, width: int):
    import dataclasses

    return dataclasses.replace(spec, width=width)


def _level_config(config, n: int, times: np.ndarray, stop_at_loss_tol: bool):
    from meanfield.config import SaveAt

    model = _with_width(config.model, int(n))
    save = SaveAt(t=tuple(float(v) for v in times if v > 0), snapshots=config.save.snapshots)
    changes = {"model": model, "save": save, "t_max": float(times[-1])}
    if not stop_at_loss_tol:
        changes["loss_tol"] = None
    return config.replace(**changes)


def _default_times(config, n: int) -> np.ndarray:
    from meanfield.setup import (custom_initial, particle_shapes, particle_time_scale,
                                 prepare_problem)

    if config.save.t is not None:
        times, _ = config.save.schedule(config.t_max, math.nan)
        return times
    level = config.replace(model=_with_width(config.model, n))
    problem, _, dtype = prepare_problem(level)
    particles = custom_initial(level, quadrature_particles(config, n),
                               particle_shapes(level, problem, dtype))
    times, _ = config.save.schedule(config.t_max, particle_time_scale(problem, particles))
    return times


def _run_level(config, n: int, times: np.ndarray, stop_at_loss_tol: bool, seed: int):
    """The quadrature run of width ``n`` on ``times``; a failure says how far it got."""
    from meanfield.errors import RunError
    from meanfield.runner import simulate

    level = _level_config(config, n, times, stop_at_loss_tol)
    try:
        return simulate(level, initial=quadrature_particles(config, n, seed=seed), progress=False)
    except RunError as exc:
        done = exc.dataset
        reached = (f"; it reached t={float(done.t[-1]):.6g} with loss {float(done.loss[-1]):.3g}"
                   if done is not None and done.sizes.get("t", 0) else "")
        raise type(exc)(f"mean_field_reference: the quadrature run of width {n} failed: {exc}"
                        f"{reached}. Ask for times up to where it got (t=..., CLI --t-max) or "
                        "set config.loss_tol so the reference stops where a run of the config "
                        "stops", done) from exc


def refinement_rate(levels, errors) -> float:
    """Least-squares p in err ~ C m^-p over the coarser levels (nan with < 2 usable points)."""
    m, e = np.asarray(levels, float), np.asarray(errors, float)
    keep = np.isfinite(e) & (e > 0)
    if keep.sum() < 2:
        return math.nan
    return float(-np.polyfit(np.log(m[keep]), np.log(e[keep]), 1)[0])


def check_reference_options(*, levels=DEFAULT_LEVELS, t=None, seed: int = SOBOL_SEED,
                            stop_at_loss_tol: bool | None = None) -> tuple[int, ...]:
    """Raise a ValueError naming a ``mean_field_reference`` option whose value is not allowed;
    returns ``levels`` as a tuple of ints."""
    try:
        levels = tuple(check_int("levels", n, minimum=2) for n in levels)
    except (TypeError, ValueError):
        raise ValueError(f"levels={levels!r} is not allowed; it must be >= 2 strictly "
                         "increasing powers of two") from None
    if len(levels) < 2 or any(not _is_power_of_two(n) for n in levels) or \
            any(b <= a for a, b in zip(levels, levels[1:])):
        raise ValueError(f"levels={levels} must be >= 2 strictly increasing powers of two")
    check_int("seed", seed, minimum=0, maximum=2**32 - 1)  # numpy's seed range
    check_bool("stop_at_loss_tol", stop_at_loss_tol, allow_none=True)
    check_times("t", t)
    return levels


def mean_field_reference(config, *, levels=DEFAULT_LEVELS, t=None, seed: int = SOBOL_SEED,
                         stop_at_loss_tol: bool | None = None) -> xr.Dataset:
    """Particle-quadrature mean-field reference of ``config`` (see the module docstring).

    Args:
        config: a SimulationConfig with an m-independent initial law (critical regime,
            explicit sigmas, sphere or balanced); its width and seed are ignored.
        levels: increasing powers of two (>= 2 levels), the widths of the quadrature runs;
            the last one is the reference.
        t: save times (t = 0 is added); default ``config.save.t``, else the config's log-spaced
            schedule with the time scale of the finest quadrature (all levels share the times).
        seed: Sobol scrambling seed.
        stop_at_loss_tol: honour ``config.loss_tol``: the finest level stops at the first save
            with loss <= loss_tol (as a finite run of the config does) and the coarser levels
            run to the same time. Default (None): True for the config's own schedule
            (``t=None``) with a ``loss_tol``, else every level runs to the last time. Running
            on past the loss tolerance drives the residual to the precision's rounding level,
            where the adaptive step can underflow (the luo_1d preset: loss 1e-12 at t = 700
            in float32).
    Returns:
        The finest level's run Dataset (``meanfield.simulate`` schema) plus ``f_eval_level``
        (level, t, eval_point), ``refinement_error`` (coarse_level, t) and
        ``refinement_sup_error`` (coarse_level) = sup over eval points and times of
        |f_level - f_finest|; attrs ``limit="mean_field_reference"``, ``levels``,
        ``refinement_sup_errors``, ``refinement_rate`` (least-squares p, err ~ m^-p; with
        two coarse levels p = log(e1/e2)/log(m2/m1)), ``estimated_error`` (e_prev
        (m_prev/m_finest)^p, an extrapolation, not a bound), ``sobol_seed``.
    """
    from meanfield.runner import simulate

    levels = check_reference_options(levels=levels, t=t, seed=seed,
                                     stop_at_loss_tol=stop_at_loss_tol)
    check_config(config)
    if t is None:
        times = _default_times(config, levels[-1])
    else:
        times = check_times("t", t)
        times = np.concatenate([[0.0], times[times > 0]])
    if times[-1] <= 0:
        raise ValueError("t must contain a positive time")
    if stop_at_loss_tol is None:
        stop_at_loss_tol = t is None and config.loss_tol is not None
    finest = _run_level(config, levels[-1], times, stop_at_loss_tol, seed)
    times = times[times <= float(finest.t[-1]) * (1 + 1e-6)]  # t is recorded in the precision
    runs = [_run_level(config, n, times, False, seed) for n in levels[:-1]] + [finest]
    common = finest.t.values
    for run in runs[:-1]:
        common = np.intersect1d(common, run.t.values)
    f_levels = np.stack([run.f_eval.sel(t=common).values for run in runs])   # (L, t, eval)
    diff = np.abs(f_levels[:-1] - f_levels[-1][None])
    err_t = diff.max(axis=2)                                                   # (L-1, t)
    sup = err_t.max(axis=1)                                                    # (L-1,)
    rate = refinement_rate(levels[:-1], sup)
    if np.isfinite(rate) and rate > 0:
        estimated = float(sup[-1] * (levels[-2] / levels[-1]) ** rate)
    else:
        estimated = float(sup[-1])
    where = np.isin(finest.t.values, common)
    fl = np.full((len(levels), finest.sizes["t"], finest.sizes["eval_point"]), np.nan)
    fl[:, where] = f_levels
    e_full = np.full((len(levels) - 1, finest.sizes["t"]), np.nan)
    e_full[:, where] = err_t
    data = {name: finest[name].variable for name in finest.data_vars}
    data.update(f_eval_level=fl, refinement_error=e_full, refinement_sup_error=sup)
    coords = {name: finest[name].variable for name in finest.coords}
    coords.update(level=np.asarray(levels), coarse_level=np.asarray(levels[:-1]))
    attrs = {k: v for k, v in finest.attrs.items() if k not in ("kind", "schema_version")}
    attrs.update({
        "title": f"mean-field reference (Sobol quadrature particles): {config.name}",
        "limit": "mean_field_reference",
        "levels": list(levels),
        "refinement_sup_errors": [float(v) for v in sup],
        "refinement_rate": float(rate),
        "estimated_error": estimated,
        "sobol_seed": int(seed),
        "initial": "sobol_quadrature",
        "note": "approximation of the m = infinity flow by quadrature-initialised particles; "
                "its error is measured by refinement, not exact",
    })
    return build("limit:mean_field_reference", None, data, coords=coords, attrs=attrs)
