# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Luo et al.'s phase diagram: linear, critical and condensed regimes
#
# Luo, Xu, Ma & Zhang (arXiv 2007.07497) scale the initial weights of a two-layer ReLU network
# with the width m through two exponents: sigma_a = m^((1 - gamma - gamma')/2),
# sigma_w = m^((1 - gamma + gamma')/2). At gamma' = 0, gamma < 1 is the linear (kernel)
# regime: the neurons barely move; gamma > 1 is the condensed regime: they gather on a few
# directions; gamma = 1 is the critical (mean-field) line. Their 1-D data: x in
# {-1/2, -1/6, 1/6, 1/2}, y = x^2, with a bias, so each neuron is a point
# (orientation atan2(b, w), amplitude |a| ||(w, b)||).
#
# Set `MEANFIELD_NOTEBOOK_QUICK=1` for reduced sizes; figures go to `MEANFIELD_NOTEBOOK_OUT`
# (default `notebook_outputs/`).

# %%
from nbsetup import QUICK, Outputs  # notebooks/nbsetup.py: sizes, output files, headless

import matplotlib.pyplot as plt
import numpy as np

import meanfield as mf
from meanfield import plot
from meanfield.condensation import phase_summary
from meanfield.validation.rates import fit_slope

OUT = Outputs("03_luo_phase_diagram")

# %% [markdown]
# ## Three regimes at one width

# %%
REGIMES = {"linear": 0.5, "critical": 1.0, "condensed": 1.75}
# quick: widths that pad to one compiled shape (chunks of 8 particles), shared with 04 and 05
WIDTHS = (98, 104) if QUICK else (250, 1000, 4000)
SHOWN = WIDTHS[-1] if QUICK else 1000
T_MAX = 1e3 if QUICK else 1e6  # the runs stop earlier, at MSE 1e-6
# quick: float64, the compiled programs of 04's Luo runs; None: the preset's float32
PRECISION = "float64" if QUICK else None

runs = {(name, m): mf.simulate(mf.presets.luo_1d(gamma=g, width=m, t_max=T_MAX,
                                                  precision=PRECISION), progress=False)
        for m in WIDTHS for name, g in REGIMES.items()}
for name in REGIMES:
    ds = runs[name, SHOWN]
    last = phase_summary(ds).isel(phase=-1).sel(end="end", sign="all")
    print(f"{name:9s} gamma = {REGIMES[name]:4.2f}: stopped at t = {float(ds.t[-1]):.3g} "
          f"({ds.attrs['stop_reason']}), RD = {float(ds.rd_w[-1]):.3g}, effective directions "
          f"{float(last.effective_directions):.1f}, mass within 0.1 rad of 4 peaks "
          f"{float(last.peak_mass):.2f}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=False)
for ax, name in zip(axes, REGIMES):
    ds = runs[name, SHOWN]
    a, w = ds.snapshot_a.values[-1], ds.snapshot_w.values[-1]
    amp = plot.neuron_amplitudes(ds, a, w)
    ax.scatter(np.rad2deg(plot.neuron_angles(ds, w)), amp / amp.max(), s=10, color="C3",
               alpha=0.6, lw=0)
    ax.set_title(f"{name}: gamma = {REGIMES[name]}, t = {float(ds.t_snapshot[-1]):.3g}")
    ax.set_xlabel("orientation atan2(b, w) (deg)")
    ax.set_xlim(-180, 180)
axes[0].set_ylabel("amplitude / its maximum")
fig.suptitle(f"Luo 1-D, m = {SHOWN}: the neurons at the end of training, side by side")
fig.tight_layout()
OUT.save(fig, "three_regimes_scatter")

# %%
for name in REGIMES:
    OUT.save(plot.density_heatmap(runs[name, SHOWN], weighted=True), f"density_{name}")
    OUT.save(plot.luo_scatter(runs[name, SHOWN]), f"luo_scatter_{name}")

# %% [markdown]
# ## Relative displacement against the width
#
# RD = ||w(t_end) - w(0)|| / ||w(0)||: it falls with m in the linear regime (the kernel
# limit: the neurons stay put), stays of order one on the critical line, and grows in the
# condensed regime. The slope is fitted with `meanfield.validation.rates.fit_slope`.

# %%
fig, ax = plt.subplots(figsize=(5.5, 4))
for name in REGIMES:
    rd = np.array([float(runs[name, m].rd_w[-1]) for m in WIDTHS])
    fit = fit_slope(np.array(WIDTHS, float), rd)
    ax.loglog(WIDTHS, rd, "o-", label=f"{name} (gamma = {REGIMES[name]}): slope {fit.slope:+.2f}")
    print(f"{name:9s} RD at m = {WIDTHS}: {np.array2string(rd, precision=3)}; "
          f"log-log slope {fit.slope:+.2f}")
ax.set_xlabel("width m")
ax.set_ylabel("relative displacement of w at the end")
ax.legend(fontsize=8)
OUT.save(fig, "rd_against_width")

# %% [markdown]
# At the default widths (m = 250, 1000, 4000, one seed) the fitted slopes come out near Luo et
# al.'s Fig. 3 values S_w = -0.506, 0.007 and 0.372 (here about -0.56, -0.02 and +0.37): RD
# falls like m^-1/2 in the linear regime, is flat on the critical line and grows in the
# condensed one. The `luo-slopes` validation study fits them over m = 1000..40000 with three
# seeds and confidence intervals (`meanfield validate luo-slopes`).
