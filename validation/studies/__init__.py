"""Registry of validation studies: ``STUDIES = {name: (function, one-line description)}``.

A study function takes ``(out_dir: str, quick: bool)`` and returns a ``validation.Report``
(it may write figures into ``out_dir``); ``run_study`` writes the report. Studies built on
``meanfield.validation.sweep.run_sweep`` also take ``executor`` (where their sweep points run:
``meanfield.validation.executors``; command line ``--workers N`` / ``--scheduler ADDRESS``).
"""

from __future__ import annotations

import importlib
import inspect
import os
import time


def _lazy(module: str, name: str):
    """The study function ``module.name``, imported only when called."""

    def run(out_dir: str, quick: bool = False, executor=None):
        study = getattr(importlib.import_module(module), name)
        if executor is None:
            return study(out_dir, quick)
        return study(out_dir, quick, executor=executor)

    run.__name__ = name
    run.target = (module, name)
    return run


STUDIES = {
    "barbu": (_lazy("meanfield.validation.studies.barbu", "run"),
              "analytic ALS training (Barbu 2304.02972) vs Adam, GD and the gradient flow on "
              "4 regression data sets: loss vs wall time and iterations, test loss, tuning"),
    "wang-ma": (_lazy("meanfield.validation.studies.wang_ma", "run"),
                "Wang & Ma 2305.12467: the four phases (survivor sets, alignment time, plateau, "
                "escape, 1/t loss, pattern changes) vs the reduced model; reduced-model error "
                "~ m^-1/2 over widths; Phase I time ~ kappa; plateau level/length over p x Delta"),
    "boursier": (_lazy("meanfield.validation.studies.boursier", "run"),
                 "Boursier et al. 2206.00939, orthogonal inputs: plateaus L0 and L1, escape times "
                 "vs ln(1/lambda)/|D_+-|, minimum variation-norm interpolator"),
    "kernel-limit": (_lazy("meanfield.validation.studies.limits", "run_kernel"),
                     "linear regime (Luo 1-D, gamma = 0.5): sup |f_m - f_kernel| at fixed kernel "
                     "times ~ m^-1/2, fitted slope with a bootstrap CI over seeds"),
    "meanfield-limit": (_lazy("meanfield.validation.studies.limits", "run_mean_field"),
                        "critical regime, balanced init (Luo 1-D): sup |f_m - f_PDE| at t = 1 "
                        "~ m^-1/2 with a bootstrap CI; the PDE's first-order grid refinement"),
    "luo-slopes": (_lazy("meanfield.validation.studies.luo", "run_slopes"),
                   "Luo 2007.07497 Fig. 3: S_w (slope of log RD(theta_w) vs log m, m = 1000..40000)"
                   " at gamma' = 0, gamma = 0.5/1/1.75 vs -0.506/0.007/0.372 (+-0.05); S_w(gamma) "
                   "of three (alpha, beta1, beta2) families agree within 0.05"),
    "luo-diagram": (_lazy("meanfield.validation.studies.luo", "run_diagram"),
                    "Luo 2007.07497 Fig. 4: S_w over gamma' in [-0.4, 0.4] x gamma in [0.6, 1.4], "
                    "m = 1000..40000; zero crossing of S_w within 0.06 of gamma = 1 (gamma' <= 0) "
                    "/ 1 + gamma' (gamma' >= 0), rows that miss gated by their crossing "
                    "extrapolated to m -> infinity (bootstrap over seeds), beside plain GD; "
                    "S_w heat map; wall time"),
}

DEFAULT_OUT = "validation-reports"  # relative to the working directory


def takes_executor(name: str) -> bool:
    """Whether study ``name`` runs sweeps on an executor (its function takes ``executor``)."""
    module, function = STUDIES[name][0].target
    study = getattr(importlib.import_module(module), function)
    return "executor" in inspect.signature(study).parameters


def run_study(name: str, out_dir: str | None = None, quick: bool = False, executor=None):
    """Run study ``name``, write ``out_dir/report.md`` (default ./validation-reports/NAME).

    Args:
        name: a key of ``STUDIES``.
        out_dir: report directory.
        quick: the small, fast version.
        executor: where the study's sweep points run (``meanfield.validation.executors``;
            None: in this process); only for the studies built on sweeps (``takes_executor``).
    Returns (report, path of report.md).
    """
    from meanfield.validation.executors import Serial, check_executor  # imports jax

    if name not in STUDIES:
        from meanfield.particles._validate import closest

        raise ValueError(f"unknown study {name!r}{closest(str(name).replace('_', '-'), STUDIES)}"
                         f"; choose one of {sorted(STUDIES)}")
    executor = check_executor(executor)
    if isinstance(executor, Serial):
        executor = None
    elif not takes_executor(name):
        raise ValueError(f"study {name!r} runs no sweep, so --workers / --scheduler (executor) "
                         "do not apply; the studies that take them: "
                         f"{sorted(n for n in STUDIES if takes_executor(n))}")
    out_dir = out_dir or os.path.join(DEFAULT_OUT, name + ("-quick" if quick else ""))
    os.makedirs(out_dir, exist_ok=True)
    started = time.perf_counter()
    if executor is None:
        report = STUDIES[name][0](out_dir, quick)
    else:
        with executor:  # one cluster for all the study's sweeps
            report = STUDIES[name][0](out_dir, quick, executor)
    report.wall_seconds = time.perf_counter() - started
    report.load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if not report.command:
        report.command = (f"meanfield validate {name}{' --quick' if quick else ''} "
                          f"--out {out_dir}")
    report.write(out_dir)
    return report, os.path.join(out_dir, "report.md")
