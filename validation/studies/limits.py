"""Finite width against the infinite-width limits (docs/theory/limits.md): the ``kernel-limit`` and
``meanfield-limit`` studies, and the convergence helpers the Wang & Ma study shares.

* ``kernel-limit``: Luo et al.'s 1-D data (arXiv 2007.07497) at gamma = 0.5, gamma' = 0 (linear
  regime, ASI, float64): sup over the evaluation grid and the kernel times tau in {1, 3, 10} of
  |f_m - f_kernel| (``meanfield.limits.kernel``, the mean-field NTK flow; tau = t * kernel
  rate), over widths and seeds; theory: m^-1/2.
* ``meanfield-limit``: the same data, balanced init (a = +-|w|, w ~ N(0, I)), critical scaling:
  sup over the grid at t = 1 of |f_m - f_PDE| (``meanfield.limits.mean_field``, transport +
  reaction PDE on the circle of directions) over widths and seeds; theory: m^-1/2. The PDE's own
  error is measured by grid refinement (first-order upwind: order 1) and must be far below the
  particle errors.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from meanfield.validation.report import pyplot, wall_time_note  # noqa: F401 (re-exported)

SLOPE_THEORY = -0.5


def format_fit(fit) -> str:
    """A ``meanfield.validation.rates.SlopeFit`` as text: slope and its confidence interval."""
    return (f"{fit.slope:.3f} ({fit.level:.0%} CI [{fit.ci_low:.3f}, {fit.ci_high:.3f}], "
            f"{fit.method})")


def geometric_mean(errors) -> np.ndarray:
    """exp(mean over seeds of log error) per width: the curve ``rates.fit_slope`` fits."""
    return np.exp(np.mean(np.log(np.asarray(errors, float)), axis=1))


def errors_table(widths, seeds, errors) -> str:
    """Markdown table: one row per width, one column per seed, plus the geometric mean."""
    from meanfield.validation.report import markdown_table

    errors = np.asarray(errors, float)
    return markdown_table(["m"] + [f"seed {s}" for s in seeds] + ["geometric mean"],
                          [[int(m)] + [f"{v:.3e}" for v in row] + [f"{a:.3e}"]
                           for m, row, a in zip(widths, errors, geometric_mean(errors))])


def convergence_figure(widths, errors, fit, path: str, *, ylabel: str, title: str) -> str:
    """Error against width (log-log): every seed, the geometric mean over seeds, the fitted line
    (``meanfield.validation.rates.SlopeFit``) and an m^-1/2 reference through the first point."""
    plt = pyplot()
    widths, errors = np.asarray(widths, float), np.asarray(errors, float)
    mean = geometric_mean(errors)
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for j in range(errors.shape[1]):
        ax.loglog(widths, errors[:, j], "o", color="0.6", ms=3.5,
                  label="one seed" if j == 0 else None)
    ax.loglog(widths, mean, "s", color="C0", ms=6,
              label=f"geometric mean over {errors.shape[1]} seeds")
    grid = np.geomspace(widths.min() / 1.3, widths.max() * 1.3, 20)
    ax.loglog(grid, np.exp(fit.intercept) * grid ** fit.slope, "-", color="C0",
              label=f"fit: slope {fit.slope:.3f} [{fit.ci_low:.2f}, {fit.ci_high:.2f}]")
    ax.loglog(grid, mean[0] * (grid / widths[0]) ** SLOPE_THEORY, "k--", lw=1,
              label="$m^{-1/2}$ reference")
    ax.set_xlabel("width $m$")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def f_figure(x, curves: dict, limit, path: str, *, title: str, limit_label: str) -> str:
    """f_m on the evaluation grid for a few widths against the limit's f (and the data)."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.0, 3.5))
    ax1.plot(x, limit, "k-", lw=2.0, label=limit_label, zorder=3)
    colors = plt.cm.viridis(np.linspace(0.1, 0.85, len(curves)))
    for c, (m, f) in zip(colors, sorted(curves.items())):
        ax1.plot(x, f, color=c, lw=1.0, label=f"m = {m}")
        ax2.plot(x, f - limit, color=c, lw=1.0, label=f"m = {m}")
    ax1.set_ylabel("$f(x)$")
    ax2.set_ylabel("$f_m(x) - f_{limit}(x)$")
    ax2.axhline(0, color="k", lw=0.6)
    for ax in (ax1, ax2):
        ax.set_xlabel("$x$")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@dataclasses.dataclass(frozen=True, kw_only=True)
class Plan:
    """Sizes of one version of a convergence study.

    Attributes:
        widths: particle widths. seeds: per width (shared across widths: the first m neurons
            of a wider run are the narrower run's).
        slope_range: accepted fitted slope. Full studies: -1/2 +- 0.15, 1.5-2 times the 95%
            bootstrap half-width of the fit over 8 seeds and a 64-100x width range (0.07-0.1),
            so that seed noise alone rarely fails it while no convergence (slope 0) and m^-1
            do. Quick studies (4 seeds, 16x): +-0.25 against half-widths of 0.15 (kernel) and
            0.35 (mean field, where the quick row is therefore a finding).
        cells: PDE grid sizes for the refinement (mean-field study; the last is the reference).
    """

    widths: tuple[int, ...]
    seeds: tuple[int, ...]
    slope_range: tuple[float, float] = (-0.65, -0.35)
    cells: tuple[int, ...] = ()


def _luo_data_note() -> str:
    return ("Data: Luo et al.'s 1-D set x in {-1/2, -1/6, 1/6, 1/2}, y = x^2 (arXiv 2007.07497), "
            "squared loss, bias; errors are sup over the 201-point evaluation grid of [-1, 1].")


# ----------------------------------------------------------------------------- kernel-limit

KERNEL_GAMMA = 0.5
KERNEL_TAUS = (1.0, 3.0, 10.0)   # kernel times tau = t * kernel_rate (slowest mode ~ tau 1e-2)
KERNEL_FULL = Plan(widths=(1000, 4000, 16000, 64000), seeds=tuple(range(8)))
# every width is one compilation (~15 s) and the runs themselves take < 1 s: few widths
KERNEL_QUICK = Plan(widths=(1000, 4000, 16000), seeds=tuple(range(4)),
                    slope_range=(-0.75, -0.25))


def kernel_config(width: int, seed: int):
    """Luo 1-D at gamma = 0.5 (linear regime, ASI, float64), saved at the kernel times."""
    import meanfield as mf
    from meanfield.limits import kernel

    cfg = mf.presets.luo_1d(gamma=KERNEL_GAMMA, width=width, precision="float64", seed=seed)
    t = np.asarray(KERNEL_TAUS) / kernel.kernel_rate(cfg)
    return cfg.replace(**{"save.t": tuple(t), "save.snapshots": 0, "t_max": float(t[-1]),
                          "loss_tol": None})


def kernel_errors(plan: Plan) -> dict:
    """sup over the grid of |f_m - f_kernel| per (width, seed, tau), from ``meanfield.compare``."""
    import meanfield as mf
    from meanfield.limits import kernel

    from meanfield.validation.rates import compare_distance

    errors = np.full((len(plan.widths), len(plan.seeds), len(KERNEL_TAUS)), np.nan)
    f_last, limits = {}, {}
    for i, m in enumerate(plan.widths):
        for j, seed in enumerate(plan.seeds):
            cfg = kernel_config(m, seed)
            run = mf.simulate(cfg, progress=False)
            if m not in limits:  # the kernel limit depends on m only through the time unit
                limits[m] = kernel.kernel_limit(cfg, t=np.asarray(cfg.save.t))
            limit = limits[m]
            if not np.allclose(run.t.values[1:], limit.t.values[-len(KERNEL_TAUS):], rtol=1e-12):
                raise RuntimeError("the run and its kernel limit are not on the same times")
            errors[i, j] = [compare_distance(run, limit, t=t) for t in cfg.save.t]
            if j == 0:
                f_last[m] = run.f_eval.values[-1]
    x = np.asarray(cfg.data.x_eval)[:, 0]
    return dict(errors=errors, f_last=f_last, limit=limits[plan.widths[-1]].f_eval.values[-1],
                x=x, x_train=np.asarray(cfg.data.x)[:, 0], y_train=np.asarray(cfg.data.y))


def run_kernel(out_dir: str, quick: bool = False):
    """The kernel-limit study; returns a ``validation.Report``."""
    started = time.perf_counter()
    from meanfield.validation.rates import fit_slope
    from meanfield.validation.report import Check, Report

    plan = KERNEL_QUICK if quick else KERNEL_FULL
    report = Report(title="Kernel limit (linear regime, Luo 1-D at gamma = 0.5): finite-width "
                          f"error ~ m^-1/2{' (quick)' if quick else ''}")
    res = kernel_errors(plan)
    errors = res["errors"].max(axis=2)  # sup over the kernel times too
    widths = np.array(plan.widths)
    fit = fit_slope(widths, errors)
    lo, hi = plan.slope_range
    report.checks.append(Check(
        f"sup over x and tau in {KERNEL_TAUS} of |f_m - f_kernel|: log-log slope over m "
        f"in {plan.widths}", "-1/2", format_fit(fit), f"[{lo}, {hi}] (seed noise)",
        lo <= fit.slope <= hi))
    report.checks.append(Check(
        "the confidence interval of the slope contains -1/2", "-1/2",
        f"[{fit.ci_low:.3f}, {fit.ci_high:.3f}]", "-", fit.covers(SLOPE_THEORY), required=False,
        to_check=CI_TO_CHECK))
    e_big = float(geometric_mean(errors)[-1])
    y_scale = float(np.max(np.abs(res["y_train"])))
    report.checks.append(Check(f"error at the largest width m = {plan.widths[-1]}",
                               "-> 0", f"{e_big:.2e} (geometric mean over seeds)",
                               f"< 5e-3 (2% of max |y| = {y_scale:g}: a bound on the constant; "
                               "the slope row gates the rate)", e_big < 0.02 * y_scale))
    for k, tau in enumerate(KERNEL_TAUS):
        f_tau = fit_slope(widths, res["errors"][:, :, k])
        report.checks.append(Check(
            f"slope at kernel time tau = {tau:g} alone", "-1/2", format_fit(f_tau),
            f"[{lo}, {hi}]", lo <= f_tau.slope <= hi, required=False,
            to_check="One kernel time alone is noisier than the sup over tau (at tau = 1 its "
                     "interval is twice as wide in the full study), so the range above, sized "
                     "for the sup's seed noise, does not fit it. "
                     "The rate holds at every fixed tau: with about 4x the seeds, which halves "
                     "the interval, each tau could gate the study with the same range."))
    report.figures.append(os.path.basename(convergence_figure(
        widths, errors, fit, os.path.join(out_dir, "kernel_limit_convergence.png"),
        ylabel="sup$_{x, \\tau}$ |$f_m - f_{kernel}$|",
        title="Linear regime (gamma = 0.5): finite width vs the kernel flow")))
    report.figures.append(os.path.basename(f_figure(
        res["x"], res["f_last"], res["limit"], os.path.join(out_dir, "kernel_limit_f.png"),
        title=f"f at kernel time tau = {KERNEL_TAUS[-1]:g} (seed {plan.seeds[0]})",
        limit_label="kernel flow (m = infinity)")))
    report.sections.append(("Errors (sup over x and tau)", errors_table(widths, plan.seeds,
                                                                       errors)))
    _save_summary(out_dir, "kernel-limit", widths, plan.seeds, res["errors"],
                  {"tau": np.array(KERNEL_TAUS)})
    report.notes += [
        _luo_data_note(),
        "Each run is mf.presets.luo_1d(gamma=0.5, width=m, seed=s, precision='float64') (Gaussian "
        "init, ASI so f_0 = 0) integrated by the adaptive flow to the kernel times tau = t * "
        "kernel_rate in {1, 3, 10}; the limit is meanfield.limits.kernel.kernel_limit of the same "
        "config (mean-field NTK, closed-form flow); distances from meanfield.compare.",
        "Slope and CI: meanfield.validation.rates.fit_slope (OLS slope of the seed-mean of log error; "
        "expanded percentile bootstrap over whole seeds, which are coupled across widths by "
        "the nested neurons).",
    ]
    if quick:
        report.notes.append(f"QUICK mode: widths {plan.widths}, {len(plan.seeds)} seeds, "
                            f"slope accepted in {plan.slope_range}.")
    report.notes.append(wall_time_note(started))
    return report


def _save_summary(out_dir, study, widths, seeds, errors, extra_coords: dict):
    import xarray as xr

    dims = ("width", "seed") + tuple(extra_coords)
    xr.Dataset({"sup_error": (dims, errors)},
               coords={"width": np.asarray(widths), "seed": np.asarray(seeds), **extra_coords},
               attrs={"study": study}).to_netcdf(os.path.join(out_dir, "summary.nc"))


# ----------------------------------------------------------------------------- meanfield-limit

# why a bootstrap interval over seeds does not gate a study (both limit studies)
CI_TO_CHECK = ("A 95% interval misses the true slope in about 1 study in 20 even when the library "
               "is right, and curvature at the smallest width moves it; the rate is judged by "
               "the fixed range of the row above instead. With enough seeds that a 99% "
               "interval is narrower than that range (about 4x the full study's), covering "
               "-1/2 could be the check.")

MF_TIME = 1.0   # loss has halved, no concentration yet (tests/test_limits_mean_field.py)
MF_FULL = Plan(widths=(1000, 3162, 10000, 31622, 100000), seeds=tuple(range(8)),
               cells=(512, 1024, 2048, 4096, 8192, 16384))
# the kernel study's quick widths: same model shapes, so one process compiles them once
MF_QUICK = Plan(widths=KERNEL_QUICK.widths, seeds=tuple(range(4)), slope_range=(-0.75, -0.25),
                cells=(256, 512, 1024, 2048, 4096))


def mean_field_config(width: int, seed: int, t: float = MF_TIME):
    """Luo 1-D data, balanced init (scale 1, random signs), float64, saved at ``t`` only."""
    import meanfield as mf

    cfg = mf.presets.luo_1d(width=width, precision="float64", seed=seed)
    return cfg.replace(
        model=mf.ModelSpec(width=width, init=mf.InitialLaw(kind="balanced", scale=1.0,
                                                           signs="random")),
        t_max=t, loss_tol=None, save=mf.SaveAt(t=(t,), snapshots=0))


def pde_refinement(cells) -> dict:
    """f at MF_TIME on each grid; successive differences and observed orders log2(e_N/e_2N)."""
    from meanfield.limits import mean_field

    cfg = mean_field_config(10, 0)
    limits = {n: mean_field.mean_field_limit(cfg, n_cells=n, t=[MF_TIME]) for n in cells}
    f = {n: ds.f_eval.values[-1] for n, ds in limits.items()}
    diffs = np.array([np.abs(f[a] - f[b]).max() for a, b in zip(cells, cells[1:])])
    orders = np.log2(diffs[:-1] / diffs[1:])
    # first order: the error of the finest grid is about its difference to the previous one
    return dict(f=f, diffs=diffs, orders=orders, reference=f[cells[-1]],
                reference_limit=limits[cells[-1]], reference_error=float(diffs[-1]))


def mean_field_errors(plan: Plan, pde) -> dict:
    """sup over the grid at t = MF_TIME of |f_m - f_PDE| per (width, seed); ``pde``: the
    reference limit Dataset."""
    import meanfield as mf
    from meanfield.validation.rates import compare_distance

    errors = np.full((len(plan.widths), len(plan.seeds)), np.nan)
    f_last = {}
    for i, m in enumerate(plan.widths):
        for j, seed in enumerate(plan.seeds):
            ds = mf.simulate(mean_field_config(m, seed), progress=False)
            if not np.isclose(ds.t.values[-1], MF_TIME):
                raise RuntimeError(f"the run stopped at t = {ds.t.values[-1]}, not {MF_TIME}")
            errors[i, j] = compare_distance(ds, pde, t=MF_TIME)
            if j == 0:
                f_last[m] = ds.f_eval.values[-1]
    return dict(errors=errors, f_last=f_last, x=np.asarray(ds.x_eval.values)[:, 0])


def run_mean_field(out_dir: str, quick: bool = False):
    """The meanfield-limit study; returns a ``validation.Report``."""
    started = time.perf_counter()
    from meanfield.validation.rates import fit_slope
    from meanfield.validation.report import Check, Report, markdown_table

    plan = MF_QUICK if quick else MF_FULL
    report = Report(title="Mean-field limit (critical regime, balanced init, Luo 1-D): PDE "
                          f"refinement and finite-width error ~ m^-1/2{' (quick)' if quick else ''}")
    ref = pde_refinement(plan.cells)
    res = mean_field_errors(plan, ref["reference_limit"])
    widths = np.array(plan.widths)
    fit = fit_slope(widths, res["errors"])
    lo, hi = plan.slope_range
    report.checks.append(Check(
        f"sup_x |f_m - f_PDE| at t = {MF_TIME:g}: log-log slope over m in {plan.widths}", "-1/2",
        format_fit(fit), f"[{lo}, {hi}] (seed noise)", lo <= fit.slope <= hi,
        required=not quick,
        to_check="With the quick study's 4 seeds and widths to 16000 the 95% interval is about "
                 "+-0.35, wider than the accepted range, so the row cannot decide the rate; the "
                 "full study's 8 seeds and widths to 100000 (interval about +-0.1) make it a "
                 "check."))
    report.checks.append(Check(
        "the confidence interval of the slope contains -1/2", "-1/2",
        f"[{fit.ci_low:.3f}, {fit.ci_high:.3f}]", "-", fit.covers(SLOPE_THEORY), required=False,
        to_check=CI_TO_CHECK))
    last = ref["orders"][-2:]
    report.checks.append(Check(
        f"PDE grid refinement: observed order log2(e_N / e_2N) on the finest grids "
        f"(N up to {plan.cells[-1]})", "1 (first-order upwind)",
        ", ".join(f"{v:.3f}" for v in last),
        "[0.8, 1.2] (order 1 is reached only asymptotically in N; rejects 0 and 2)",
        bool(np.all((last > 0.8) & (last < 1.2)))))
    smallest = float(geometric_mean(res["errors"])[-1])
    ratio = ref["reference_error"] / smallest
    # an error e_ref added to the smallest particle error moves the fitted slope by about
    # log(1 + e_ref / e_particle) / log(m_max / m_min)
    slope_shift = np.log1p(0.1) / np.log(widths[-1] / widths[0])
    report.checks.append(Check(
        f"PDE reference error (N = {plan.cells[-1]}, ~ |f_N - f_N/2|) against the smallest "
        "particle error", "negligible", f"{ref['reference_error']:.2e} vs "
        f"{smallest:.2e} (ratio {ratio:.3f})",
        f"ratio < 0.1 (moves the fitted slope by ~{slope_shift:.2f})", ratio < 0.1))
    report.figures.append(os.path.basename(convergence_figure(
        widths, res["errors"], fit, os.path.join(out_dir, "meanfield_limit_convergence.png"),
        ylabel=f"sup$_x$ |$f_m - f_{{PDE}}$| at t = {MF_TIME:g}",
        title="Critical regime, balanced init: finite width vs the mean-field PDE")))
    report.figures.append(os.path.basename(f_figure(
        res["x"], res["f_last"], ref["reference"], os.path.join(out_dir, "meanfield_limit_f.png"),
        title=f"f at t = {MF_TIME:g} (seed {plan.seeds[0]})",
        limit_label=f"mean-field PDE (N = {plan.cells[-1]})")))
    report.sections.append(("Particle errors", errors_table(widths, plan.seeds, res["errors"])))
    report.sections.append(("PDE grid refinement", markdown_table(
        ["N -> 2N", "sup |f_N - f_2N|", "observed order"],
        [[f"{a} -> {b}", f"{d:.3e}", f"{o:.3f}" if k else "-"]
         for k, (a, b, d, o) in enumerate(zip(plan.cells, plan.cells[1:], ref["diffs"],
                                              np.r_[np.nan, ref["orders"]]))])))
    _save_summary(out_dir, "meanfield-limit", widths, plan.seeds, res["errors"], {})
    report.notes += [
        _luo_data_note(),
        "Runs: mf.presets.luo_1d(width=m, seed=s, precision='float64') with the balanced init "
        "(a = +-|w|, w ~ N(0, I), random signs), i.e. the mean-field scaling at gamma = 1 with a "
        "law whose limit is the transport + reaction PDE of docs/theory/limits.md "
        "(meanfield.limits.mean_field); the Gaussian init has a different limit (the conserved "
        "a^2 - |w|^2), so like is compared with like.",
        "The PDE is first order in the grid; its reference error is estimated by the last "
        "refinement difference. Slope and CI: meanfield.validation.rates.fit_slope (seed-mean of log "
        "error, expanded percentile bootstrap over whole seeds).",
    ]
    if quick:
        report.notes.append(f"QUICK mode: widths {plan.widths}, {len(plan.seeds)} seeds, grids "
                            f"{plan.cells}; the slope (range {plan.slope_range}) is a finding "
                            "at these seeds.")
    report.notes.append(wall_time_note(started))
    return report
