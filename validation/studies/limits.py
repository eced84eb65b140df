"""Finite width against the infinite-width limits (DESIGN A3): the ``kernel-limit`` and
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
import math
import os

import numpy as np

SLOPE_THEORY = -0.5
N_BOOTSTRAP = 2000


# ----------------------------------------------------------------------------- shared helpers

def slope_fit(widths, errors, *, aggregate: str = "rms", n_boot: int = N_BOOTSTRAP,
              seed: int = 0) -> dict:
    """Least-squares slope of log(error) against log(width), with a bootstrap CI over seeds.

    Args:
        widths: (W,) widths. errors: (W, S) one error per width and seed (seeds coupled across
            widths, so whole seed columns are resampled). aggregate: ``rms`` or ``mean`` over
            seeds at each width. n_boot: bootstrap resamples. seed: of the resampling.
    Returns:
        dict with ``slope``, ``intercept``, ``ci`` (2.5 and 97.5 percentiles), ``per_width``
        (W,) aggregated errors, ``aggregate``, ``n_seeds``.
    """
    if aggregate not in ("rms", "mean"):
        raise ValueError(f"aggregate={aggregate!r} is not allowed; choose 'rms' or 'mean'")
    x = np.log(np.asarray(widths, float))
    e = np.asarray(errors, float)
    if e.ndim != 2 or e.shape[0] != x.shape[0] or e.shape[0] < 2:
        raise ValueError(f"errors must be (W >= 2, S) matching widths {x.shape}, got {e.shape}")

    def agg(cols):
        return np.sqrt(np.mean(cols ** 2, axis=-1)) if aggregate == "rms" else np.mean(cols, -1)

    per_width = agg(e)
    slope, intercept = np.polyfit(x, np.log(per_width), 1)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, e.shape[1], size=(n_boot, e.shape[1]))
    boot = np.log(agg(np.transpose(e[:, picks], (1, 0, 2))))  # (n_boot, W)
    xc = x - x.mean()
    slopes = (boot - boot.mean(axis=1, keepdims=True)) @ xc / (xc @ xc)
    ci = tuple(float(v) for v in np.percentile(slopes, [2.5, 97.5]))
    return dict(slope=float(slope), intercept=float(intercept), ci=ci, per_width=per_width,
                aggregate=aggregate, n_seeds=e.shape[1])


def format_fit(fit: dict) -> str:
    return (f"{fit['slope']:.3f} (95% bootstrap CI over {fit['n_seeds']} seeds "
            f"[{fit['ci'][0]:.3f}, {fit['ci'][1]:.3f}])")


def errors_table(widths, seeds, errors, fit: dict | None = None) -> str:
    """Markdown table: one row per width, one column per seed, plus the aggregate."""
    from validation.report import markdown_table

    errors = np.asarray(errors, float)
    agg = (np.sqrt(np.mean(errors ** 2, axis=1)) if fit is None or fit["aggregate"] == "rms"
           else errors.mean(axis=1))
    name = "rms" if fit is None else fit["aggregate"]
    return markdown_table(["m"] + [f"seed {s}" for s in seeds] + [name],
                          [[int(m)] + [f"{v:.3e}" for v in row] + [f"{a:.3e}"]
                           for m, row, a in zip(widths, errors, agg)])


def convergence_figure(widths, errors, fit: dict, path: str, *, ylabel: str,
                       title: str) -> str:
    """Error against width (log-log): every seed, the aggregate, the fit and an m^-1/2 line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    widths, errors = np.asarray(widths, float), np.asarray(errors, float)
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for j in range(errors.shape[1]):
        ax.loglog(widths, errors[:, j], "o", color="0.6", ms=3.5,
                  label="one seed" if j == 0 else None)
    ax.loglog(widths, fit["per_width"], "s", color="C0", ms=6,
              label=f"{fit['aggregate']} over {fit['n_seeds']} seeds")
    grid = np.geomspace(widths.min() / 1.3, widths.max() * 1.3, 20)
    ax.loglog(grid, np.exp(fit["intercept"]) * grid ** fit["slope"], "-", color="C0",
              label=f"fit: slope {fit['slope']:.3f} [{fit['ci'][0]:.2f}, {fit['ci'][1]:.2f}]")
    ref = fit["per_width"][0] * (grid / widths[0]) ** SLOPE_THEORY
    ax.loglog(grid, ref, "k--", lw=1, label="$m^{-1/2}$ reference")
    ax.set_xlabel("width $m$")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
