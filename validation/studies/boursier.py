"""Boursier, Pillaud-Vivien & Flammarion (arXiv 2206.00939, docs/theory/boursier.md): orthogonal inputs.

Data X = I_4 (orthogonal unit inputs), y = (1, 1, -0.3, -0.3), squared loss, no bias, balanced
init at scale lambda (w = lambda z, a = s |w|, random signs), m = 400, float64, adaptive
gradient flow until the loss is below 1e-14. Predictions (``meanfield.limits.boursier``):

* the loss plateaus at L0 = (1/2n) sum y_k^2 (f = 0), then at the slower class's share L1, then
  goes to 0;
* the escapes happen at t ~ ln(1/lambda) / |D_+-| (D_+- = (1/n) sum over the class of |y_k| x_k),
  so t_esc * |D| / ln(1/lambda) -> 1 as lambda shrinks (the correction is O(1 / ln(1/lambda)));
* activation sets only shrink;
* the network converges to the minimum variation-norm interpolator
  h(x) = relu(<beta_+, x>) - relu(<beta_-, x>), of norm |beta_+| + |beta_-|.

Escape times are read where the loss crosses (L0 + L1)/2 (first) and L1/2 (second),
log-interpolated between save times.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import numpy as np

from meanfield.validation.report import pyplot

X = np.eye(4)
Y = np.array([1.0, 1.0, -0.3, -0.3])
T_MAX = 1e5
LOSS_TOL = 1e-14
LAMBDA_NORM = 1e-6      # the variation-norm acceptance is at this scale (docs/theory/boursier.md)
# Neurons active on a strict subset of a class (one of its two equal-label points) grow at
# |D|/sqrt(2); at their class's escape they carry lambda^(2 - sqrt 2) (docs/theory/boursier.md):
# the finite-lambda error of the final network and of its variation norm.
SUBSET_EXPONENT = 2 - math.sqrt(2)
END_TOL = 1e-3          # ~3 lambda^(2 - sqrt 2) at LAMBDA_NORM (= 3e-4)
N_EVAL = 200            # random test directions for the interpolator check


@dataclasses.dataclass(frozen=True, kw_only=True)
class Plan:
    """Sizes of one version of the study.

    Attributes:
        width: neurons (``> 2^(class size)`` so that some neuron of each sign is active on its
            whole class). lambdas: init scales, decreasing. seeds: per scale.
    """

    width: int = 400
    lambdas: tuple[float, ...]
    seeds: tuple[int, ...]


FULL = Plan(lambdas=(1e-3, 1e-4, 1e-6, 1e-8, 1e-10), seeds=(0, 1, 2, 3, 4))
QUICK = Plan(lambdas=(1e-4, 1e-6, 1e-8), seeds=(0,))


def eval_points(n: int = N_EVAL, d: int = 4) -> np.ndarray:
    """Fixed random unit vectors plus the training inputs: where f is compared with h."""
    u = np.random.default_rng(0).standard_normal((n, d))
    return np.concatenate([X, u / np.linalg.norm(u, axis=1, keepdims=True)])


def config(lam: float, seed: int = 0, width: int = 400):
    """The orthogonal-input run (docs/theory/boursier.md) with the D_+- references recorded."""
    import meanfield as mf
    from meanfield.observables import boursier_references

    refs = boursier_references(X, Y)
    return mf.SimulationConfig(
        model=mf.ModelSpec(width=width, bias=False,
                           init=mf.InitialLaw(kind="balanced", scale=lam, signs="random")),
        data=mf.TrainingData(x=X, y=Y, x_eval=eval_points(), name="orthogonal"),
        observe=mf.Observe(references=(("D_plus", tuple(refs[0])), ("D_minus", tuple(refs[1])))),
        t_max=T_MAX, loss_tol=LOSS_TOL, precision="float64", seed=seed,
        save=mf.SaveAt(n=400, snapshots=2), name="boursier")


def down_crossing(t, loss, level) -> float:
    """First time the loss falls below ``level`` (log-log interpolation); NaN if never."""
    k = np.flatnonzero((loss[1:] < level) & (loss[:-1] >= level))
    if not len(k):
        return math.nan
    k = int(k[0]) + 1
    return math.exp(np.interp(math.log(level), [math.log(loss[k]), math.log(loss[k - 1])],
                              [math.log(t[k]), math.log(t[k - 1])]))


def measure(ds, pred: dict) -> dict:
    """Plateaus, escape times, variation norm, interpolator error and active-set inclusion."""
    from meanfield.limits import boursier

    t, loss = ds.t.values, ds.loss.values
    e1 = down_crossing(t, loss, 0.5 * (pred["L0"] + pred["L1"]))
    e2 = down_crossing(t, loss, 0.5 * pred["L1"])
    first = (t > 1.0) & (t < e1 / 2)
    plateau0 = float(np.max(np.abs(loss[first] / pred["L0"] - 1))) if first.any() else math.nan
    mid = math.sqrt(e1 * e2)
    plateau1 = float(np.exp(np.interp(math.log(mid), np.log(t[1:]), np.log(loss[1:]))))
    w0 = ds.snapshot_w.values[0]
    a, w = ds.snapshot_a.values[-1], ds.snapshot_w.values[-1]
    h = boursier.interpolator(ds.x_eval.values, pred["beta_plus"], pred["beta_minus"])
    f = ds.f_eval.values[-1]
    active0, active = w0 @ X.T > 0, w @ X.T > 0
    # neurons that carry mass at the end along their class's beta (cosine >= 0.99)
    beta = np.where((a > 0)[:, None], pred["beta_plus"], pred["beta_minus"])
    cos = np.sum(w * beta, 1) / np.maximum(np.linalg.norm(w, axis=1) * np.linalg.norm(beta, axis=1),
                                           1e-300)
    amp = np.abs(a) * np.linalg.norm(w, axis=1)
    return dict(
        e1=e1, e2=e2, plateau0_dev=plateau0, plateau1=plateau1,
        norm=boursier.variation_norm(a, w), interp_err=float(np.max(np.abs(f - h))),
        shrink_violations=int(np.sum(active & ~active0)),
        aligned_fraction=float(amp[cos >= 0.99].sum() / amp.sum()),
        stop=ds.attrs["stop_reason"], t_final=float(t[-1]),
        # a positive neuron switches off on the negative-label points and vice versa
        wrong_class_active=int(np.sum(active[a > 0][:, Y < 0]) + np.sum(active[a < 0][:, Y > 0])))


def study(plan: Plan) -> dict:
    """Run every (lambda, seed); keep the lambda = LAMBDA_NORM, seed 0 run for figures."""
    import meanfield as mf
    from meanfield.limits import boursier

    rows, keep = [], {}
    for lam in plan.lambdas:
        pred = boursier.boursier_predictions(X, Y, lam)
        for seed in plan.seeds:
            ds = mf.simulate(config(lam, seed, plan.width), progress=False)
            rows.append(dict(lam=lam, seed=seed, **measure(ds, pred)))
            if seed == plan.seeds[0]:
                keep[lam] = ds
    return dict(rows=rows, runs=keep, pred=boursier.boursier_predictions(X, Y, LAMBDA_NORM))


def escape_fit(rows: list[dict], which: str) -> tuple[float, float]:
    """Least-squares line t_esc = slope * ln(1/lambda) + c over all rows: (slope, c)."""
    x = np.array([math.log(1 / r["lam"]) for r in rows])
    y = np.array([r[which] for r in rows])
    slope, c = np.polyfit(x, y, 1)
    return float(slope), float(c)


def checks(result: dict, plan: Plan) -> list:
    from meanfield.validation.report import Check

    rows, out = result["rows"], []
    pred = result["pred"]
    n_runs = len(rows)
    out.append(Check("every run interpolates (loss < 1e-14 before t = 1e5)",
                     "loss -> 0", f"{sum(r['stop'] == 'loss_tol' for r in rows)}/{n_runs} runs",
                     "all", all(r["stop"] == "loss_tol" for r in rows)))
    worst0 = max(r["plateau0_dev"] for r in rows)
    lam_max = max(plan.lambdas)
    out.append(Check("first plateau (1 < t < t_esc,1 / 2) at L0 = (1/2n) sum y^2",
                     f"{pred['L0']:.5f}", f"worst relative deviation {worst0:.2e}",
                     f"1% (deviation O(lambda): f ~ lambda^2 e^(2|D_+|t) = lambda at t_esc,1/2; "
                     f"largest lambda {lam_max:g})", worst0 <= 0.01))
    dev1 = [abs(r["plateau1"] / pred["L1"] - 1) for r in rows]
    # at the midpoint the slower class has grown to lambda^(2 - 2 sqrt(|D_-|/|D_+|))
    mid_exponent = 2 - 2 * math.sqrt(pred["norm_D_minus"] / pred["norm_D_plus"])
    out.append(Check("second plateau (at sqrt(t_esc,1 t_esc,2)) at the slower class's share L1",
                     f"{pred['L1']:.5f}", f"worst relative deviation {max(dev1):.2e}",
                     f"2% (deviation ~ 2 f_-/|y_-| with f_- ~ lambda^{mid_exponent:.2f} = "
                     f"{lam_max ** mid_exponent:.0e} at lambda = {lam_max:g})",
                     max(dev1) <= 0.02))
    # escape times against ln(1/lambda) / |D|
    norms = {"e1": pred["norm_D_plus"], "e2": pred["norm_D_minus"]}
    for which, label in (("e1", "+"), ("e2", "-")):
        ratios = []
        for lam in plan.lambdas:
            sub = [r[which] for r in rows if r["lam"] == lam]
            ratios.append(float(np.mean(sub)) * norms[which] / math.log(1 / lam))
        errs = np.abs(np.array(ratios) - 1)
        out.append(Check(
            f"escape {which[-1]} (class {label}): t_esc |D_{label}| / ln(1/lambda) -> 1 as lambda "
            "shrinks", "1 (error O(1/ln(1/lambda)))",
            ", ".join(f"{lam:g}: {v:.4f}" for lam, v in zip(plan.lambdas, ratios)),
            f"error decreasing; < 3% at the smallest lambda (an O(1) offset of t_esc |D| below "
            f"{0.03 * math.log(1 / min(plan.lambdas)):.2f})",
            bool(np.all(np.diff(errs) < 0) and errs[-1] < 0.03)))
        slope, c = escape_fit(rows, which)
        out.append(Check(
            f"escape {which[-1]}: slope of t_esc against ln(1/lambda)", f"1/|D_{label}| = "
            f"{1 / norms[which]:.4f}", f"{slope:.4f} (offset {c:.3f})",
            "2% (the offset is fitted; about twice the seed spread of t_esc at one lambda)",
            abs(slope * norms[which] - 1) <= 0.02))
    at = [r for r in rows if r["lam"] == LAMBDA_NORM]
    if at:
        worst = max(abs(r["norm"] / pred["variation_norm"] - 1) for r in at)
        out.append(Check(f"variation norm at the end (lambda = {LAMBDA_NORM:g}) = minimum "
                         "|beta_+| + |beta_-|", f"{pred['variation_norm']:.6f}",
                         ", ".join(f"{r['norm']:.6f}" for r in at) + f" (worst {worst:.1e})",
                         f"relative {END_TOL:g} (excess ~ lambda^(2 - sqrt 2) = "
                         f"{LAMBDA_NORM ** SUBSET_EXPONENT:.0e})", worst <= END_TOL))
        ierr = max(r["interp_err"] for r in at)
        out.append(Check(f"final network = h(x) = relu(<beta_+, x>) - relu(<beta_-, x>) on "
                         f"{N_EVAL} random unit directions + the inputs (lambda = {LAMBDA_NORM:g})",
                         "0", f"sup |f - h| = {ierr:.2e}",
                         f"{END_TOL:g} x max |y| (subset neurons ~ lambda^(2 - sqrt 2))",
                         ierr <= END_TOL * np.max(np.abs(Y))))
        aligned = min(r["aligned_fraction"] for r in at)
        out.append(Check("final amplitude along beta_+- (cosine >= 0.99)", "all of it",
                         f"{aligned:.5f} of (1/m) sum |a||w| (worst seed)",
                         f">= 1 - {END_TOL:g} (subset neurons ~ lambda^(2 - sqrt 2))",
                         aligned >= 1 - END_TOL))
    viol = sum(r["shrink_violations"] for r in rows)
    out.append(Check("activation sets only shrink (active at the end => active at t = 0)",
                     "0 neuron-input pairs switched on", f"{viol} over {n_runs} runs",
                     "0 (exact for orthogonal inputs)",
                     viol == 0))
    wrong = sum(r["wrong_class_active"] for r in rows)
    out.append(Check("at the end, positive neurons are off on negative-label inputs and vice versa",
                     "0", f"{wrong} neuron-input pairs over {n_runs} runs",
                     "0 (exact for orthogonal inputs)", wrong == 0))
    # the excess variation norm over lambda: a finding (its exponent is this study's heuristic)
    if len(plan.lambdas) > 2:
        exc = np.array([float(np.mean([r["norm"] for r in rows if r["lam"] == lam])) /
                        pred["variation_norm"] - 1 for lam in plan.lambdas])
        exponent = (float(np.polyfit(np.log(plan.lambdas), np.log(exc), 1)[0])
                    if np.all(exc > 0) else math.nan)
        out.append(Check(
            "excess variation norm -> 0 as lambda shrinks, like lambda^(2 - sqrt 2)",
            f"decreasing; exponent {SUBSET_EXPONENT:.3f} (subset neurons, "
            "docs/theory/boursier.md)",
            ", ".join(f"{lam:g}: {v:+.1e}" for lam, v in zip(plan.lambdas, exc))
            + f"; fitted exponent {exponent:.3f}",
            "decreasing at every lambda; exponent within 0.1",
            bool(np.all(np.diff(np.abs(exc)) < 0)) and abs(exponent - SUBSET_EXPONENT) <= 0.1,
            required=False,
            to_check="The exponent 2 - sqrt 2 is a heuristic of docs/theory/boursier.md (neurons "
                     "active on one point of a class grow at |D|/sqrt 2), not a theorem of the "
                     "paper, and at lambda = 1e-10 the excess (~3e-7) reaches the interpolation "
                     "residual of a loss of 1e-14. A derivation of the excess with its constant, "
                     "and a fit over lambda in [1e-8, 1e-3] with several seeds, would make it a "
                     "check; the required end-of-training rows already bound it at lambda = 1e-6."))
    return out


# ----------------------------------------------------------------------------- figures

def figure_losses(result: dict, out_dir: str) -> str:
    """Loss against t / ln(1/lambda) for each lambda (seed 0), with L0, L1 and 1/|D_+-|."""
    plt = pyplot()
    pred = result["pred"]
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    lams = sorted(result["runs"], reverse=True)
    colors = plt.cm.viridis(np.linspace(0.1, 0.9, len(lams)))
    for c, lam in zip(colors, lams):
        ds = result["runs"][lam]
        t, loss = ds.t.values[1:], ds.loss.values[1:]
        ax.semilogy(t / math.log(1 / lam), loss, color=c, label=f"$\\lambda$ = {lam:g}")
    for level, name in ((pred["L0"], "$L_0$"), (pred["L1"], "$L_1$")):
        ax.axhline(level, color="0.4", ls=":", lw=0.9)
        ax.text(0.02, level * 1.15, name, fontsize=8, color="0.3")
    for norm, name in ((pred["norm_D_plus"], "$1/|D_+|$"), (pred["norm_D_minus"], "$1/|D_-|$")):
        ax.axvline(1 / norm, color="C3", ls="--", lw=0.9)
        ax.text(1 / norm, 1e-10, " " + name, fontsize=8, color="C3")
    ax.set_xlim(0, 1.4 / pred["norm_D_minus"])
    ax.set_ylim(1e-13, 1)
    ax.set_xlabel("$t / \\ln(1/\\lambda)$")
    ax.set_ylabel("training loss")
    ax.set_title("Orthogonal inputs, m = 400: plateaus and escapes (seed 0)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    path = os.path.join(out_dir, "boursier_losses.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def figure_escapes(result: dict, out_dir: str) -> str:
    """Escape times against ln(1/lambda) with the predicted slopes 1/|D_+-|."""
    plt = pyplot()
    pred, rows = result["pred"], result["rows"]
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    x = np.array([math.log(1 / r["lam"]) for r in rows])
    grid = np.linspace(0, x.max() * 1.05, 10)
    for which, norm, c, name in (("e1", pred["norm_D_plus"], "C0", "+"),
                                 ("e2", pred["norm_D_minus"], "C1", "-")):
        ax.plot(x, [r[which] for r in rows], "o", color=c, ms=4, label=f"escape {name} (runs)")
        ax.plot(grid, grid / norm, "--", color=c, lw=1, label=f"$\\ln(1/\\lambda)/|D_{name}|$")
        slope, off = escape_fit(rows, which)
        ax.plot(grid, slope * grid + off, ":", color=c, lw=1, label=f"fit: slope {slope:.3f}")
    ax.set_xlabel("$\\ln(1/\\lambda)$")
    ax.set_ylabel("escape time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out_dir, "boursier_escapes.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def figure_curves(result: dict, out_dir: str) -> str:
    """The library's training curves (Boursier phase bands) at lambda = LAMBDA_NORM."""
    from meanfield.plot import training_curves

    plt = pyplot()
    fig = training_curves(result["runs"][LAMBDA_NORM])
    path = os.path.join(out_dir, "boursier_training_curves.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def table(rows: list[dict], pred: dict) -> str:
    from meanfield.validation.report import markdown_table

    return markdown_table(
        ["lambda", "seed", "t_esc,1", "t_esc,1 |D_+| / ln(1/lambda)", "t_esc,2",
         "t_esc,2 |D_-| / ln(1/lambda)", "L1 at mid", "variation norm", "sup |f - h|"],
        [[f"{r['lam']:g}", r["seed"], f"{r['e1']:.2f}",
          f"{r['e1'] * pred['norm_D_plus'] / math.log(1 / r['lam']):.4f}", f"{r['e2']:.2f}",
          f"{r['e2'] * pred['norm_D_minus'] / math.log(1 / r['lam']):.4f}",
          f"{r['plateau1']:.5f}", f"{r['norm']:.6f}", f"{r['interp_err']:.1e}"] for r in rows])


def summary_dataset(rows: list[dict]):
    import xarray as xr

    names = ("e1", "e2", "plateau0_dev", "plateau1", "norm", "interp_err", "aligned_fraction")
    return xr.Dataset({k: (("run",), np.array([r[k] for r in rows], float)) for k in names},
                      coords={"lam": ("run", [r["lam"] for r in rows]),
                              "seed": ("run", [r["seed"] for r in rows])},
                      attrs={"study": "boursier", "reference": "arXiv 2206.00939",
                             "labels": str(Y.tolist())})


def run(out_dir: str, quick: bool = False):
    """The Boursier study; returns a ``validation.Report`` (figures written to ``out_dir``)."""
    started = time.perf_counter()
    from meanfield.validation.report import Report
    from meanfield.validation.studies.limits import wall_time_note

    plan = QUICK if quick else FULL
    plan = plan if LAMBDA_NORM in plan.lambdas else dataclasses.replace(
        plan, lambdas=tuple(sorted({*plan.lambdas, LAMBDA_NORM}, reverse=True)))
    report = Report(title="Boursier, Pillaud-Vivien & Flammarion (arXiv 2206.00939): orthogonal "
                          f"inputs{' (quick)' if quick else ''}")
    result = study(plan)
    report.checks += checks(result, plan)
    pred = result["pred"]
    report.sections.append((
        "Predictions and runs",
        f"X = I_4, y = {Y.tolist()}, m = {plan.width}, balanced init (random signs), float64. "
        f"|D_+| = {pred['norm_D_plus']:.4f}, |D_-| = {pred['norm_D_minus']:.4f}, "
        f"L0 = {pred['L0']:.5f}, L1 = {pred['L1']:.5f}, |beta_+| + |beta_-| = "
        f"{pred['variation_norm']:.6f}.\n\n" + table(result["rows"], pred)))
    for fig in (figure_losses, figure_escapes, figure_curves):
        report.figures.append(os.path.basename(fig(result, out_dir)))
    summary_dataset(result["rows"]).to_netcdf(os.path.join(out_dir, "summary.nc"))
    report.notes += [
        "Escape times: the loss crosses (L0 + L1)/2 (first escape) and L1/2 (second), "
        "interpolated in log-log between save times. t_esc |D| / ln(1/lambda) = 1 + O(1/ln(1/lambda)):"
        " the check asks that the error decreases with lambda and is < 3% at the smallest; the "
        "fitted slope of t_esc against ln(1/lambda) removes the O(1) offset and must equal 1/|D|.",
        "Labels equal within a sign keep neurons active on a strict subset of a class slower than "
        "the aligned ones (1/sqrt(2) as fast), so at their class's escape they carry "
        "lambda^(2 - sqrt 2): the finite-lambda excess of the variation norm, of sup |f - h| and "
        "of the amplitude off beta_+- (about 3e-4 at lambda = 1e-6). The three end-of-training "
        f"checks allow {END_TOL:g}, about 3 lambda^(2 - sqrt 2) at lambda = {LAMBDA_NORM:g}.",
        "Plateau tolerances: on the first plateau f ~ lambda^2 e^(2|D_+| t) is O(lambda) up to "
        "t_esc,1 / 2 (1% is 10 times the largest lambda); at the midpoint of the second plateau "
        "the slower class has grown to lambda^(2 - 2 sqrt(|D_-|/|D_+|)) = lambda^0.90, which "
        "moves the loss by about 2 f_-/|y_-| (1.3% at lambda = 1e-3).",
        "The interpolator check evaluates the final network at 200 fixed random unit directions "
        "of R^4 (not only the training inputs): it must be h, the minimum variation-norm "
        "interpolator, not merely some interpolator.",
    ]
    if quick:
        report.notes.append(f"QUICK mode: lambdas {plan.lambdas}, seed 0 only.")
    report.notes.append(wall_time_note(started))
    return report
