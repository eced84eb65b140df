"""Regenerate the overview figure of the README and the docs site.

    python docs/figures/make_figures.py        # writes docs/figures/wang_ma_overview.png

Runs the ``wang_ma`` preset at its defaults (m = 100, seed 0, t = 0..1500; a few seconds) and
draws the loss against gradient-flow time with the four phases of arXiv 2305.12467, the
plateau level 2 sqrt(p)/(1+p), and the amplitude-weighted directional density of the positive
and negative neurons over log t (each time column scaled to its maximum; angle 0 = x_+; dashed:
the reference directions mu, x_+perp and x_-perp).
"""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import meanfield as mf  # noqa: E402
from meanfield import plot  # noqa: E402
from meanfield.limits.wang_ma import plateau_loss  # noqa: E402
from meanfield.phases import boundaries  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wang_ma_overview.png")


def reference_angle(ds, name: str) -> float:
    """Angle (degrees) of a named reference direction in the plane of the recorded angles."""
    ref = np.asarray(dict(mf.run_config(ds).observe.references)[name], dtype=float)
    return math.degrees(float(plot.neuron_angles(ds, ref[None])[0]))


def main(out: str = OUT) -> str:
    ds = mf.simulate(mf.presets.wang_ma(), progress=False)
    t = ds.t.values
    keep = t > 0
    starts = boundaries(ds.phase)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), layout="constrained")

    ax = axes[0]
    ax.loglog(t[keep], ds.loss.values[keep], color="k")
    ax.axhline(plateau_loss(4), color="grey", ls=":", lw=1)
    ax.text(t[keep][1], plateau_loss(4) * 1.06, "plateau 2 sqrt(p)/(1+p)", fontsize=7, color="grey")
    edges = list(starts.values())[1:] + [t[-1]]
    for (name, t0), t1, shade in zip(starts.items(), edges, (0.0, 0.08, 0.0, 0.08)):
        ax.axvspan(max(t0, t[keep][0]), t1, color="C0", alpha=shade, lw=0)
        ax.text(math.sqrt(max(t0, t[keep][0]) * t1), 0.17, name.split(":")[0], ha="center", fontsize=8)
    ax.set(xlabel="gradient-flow time t", ylabel="loss", title="loss and the four phases")

    angles = np.degrees(ds.angle.values)
    log_t = t[keep]
    for ax, sign, label in zip(axes[1:], ("+", "-"), ("positive", "negative")):
        dens = ds.density.sel(sign=sign).values[keep]
        dens = dens / np.maximum(dens.max(axis=1, keepdims=True), 1e-300)
        ax.pcolormesh(log_t, angles, dens.T, shading="nearest", cmap="magma")
        ax.set_xscale("log")
        ax.set_ylim(-100, 100)
        for name, text in (("mu", "mu"), ("x_plus_perp", "x+perp"), ("x_minus_perp", "x-perp")):
            angle = reference_angle(ds, name)
            ax.axhline(angle, color="w", ls="--", lw=0.8)
            ax.text(log_t[0], angle + 4, text, color="w", fontsize=8)
        ax.set(xlabel="gradient-flow time t", ylabel="angle in the data plane (deg)",
               title=f"direction density, {label} neurons")
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


if __name__ == "__main__":
    print(main())
