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
# # Condensation on real data: scikit-learn's handwritten digits
#
# The 8x8 digits of scikit-learn (shipped with the package, no download), labelled even (+1)
# against odd (-1), projected on their top 3 principal components and scaled to unit mean norm.
# A two-layer ReLU network (no bias, logistic loss, balanced initialisation a = +-|w|,
# w ~ N(0, lambda^2 I)) is trained by gradient flow. How many directions do the neurons
# condense onto, and when, across widths m and initial scales lambda?
#
# The measure is the recorded `effective_directions` (exp of the entropy of the
# amplitude-weighted directional density over 120 angle bins in the plane of the top two
# components) and the condensation onset that `label_phases` marks (effective directions below
# half their initial value). At t = 0 the count is bounded by the width (m random directions
# fill at most m bins), so its initial value, and with it the onset threshold, depends on m;
# its final value is what compares across widths.
#
# Solver: the adaptive gradient flow. Without a bias every sample is a ReLU face (a plane
# through the origin) of every neuron, and the flow's steps go mostly into the alignment
# phase (t of about 1 to 100), where each neuron crosses many of the 300 faces; on the
# plateaus it takes large steps: going on from t = 300 to t_max = 3000 adds 5-8% to the steps
# at lambda <= 1e-2 and about 40% at lambda = 1, where the logistic loss keeps decreasing, and
# shows that the end states persist over a decade of time (fixed-step GD takes t_max / dt
# steps whatever the phase). Set `MEANFIELD_NOTEBOOK_QUICK=1` for reduced sizes.

# %%
from nbsetup import QUICK, Outputs  # notebooks/nbsetup.py: sizes, output files, headless

import json

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA

import meanfield as mf
from meanfield import plot
from meanfield.condensation import format_table, phase_summary

OUT = Outputs("06_digits_condensation")
N_SAMPLES = 100 if QUICK else 300
# quick: two widths that pad to one compiled shape (chunks of 8 particles)
WIDTHS = (50, 56) if QUICK else (50, 100)  # the flow's steps grow with m (about as sqrt(m) here)
SCALES = (1e-3, 1.0) if QUICK else (1e-4, 1e-2, 1.0)
T_MAX = 300.0 if QUICK else 3000.0

# %%
digits = load_digits()
rng = np.random.default_rng(0)
pick = rng.choice(len(digits.target), N_SAMPLES, replace=False)
x = PCA(n_components=3, random_state=0).fit_transform(digits.data[pick])
x /= np.linalg.norm(x, axis=1).mean()
y = np.where(digits.target[pick] % 2 == 0, 1.0, -1.0)
data = mf.TrainingData(x=x, y=y, name=f"digits even/odd, PCA 3, n={N_SAMPLES}")
print(f"{N_SAMPLES} digits, {int((y > 0).sum())} even; inputs in R^3")


def digits_config(width, scale, seed=0):
    model = mf.ModelSpec(width=width, bias=False, loss="logistic",
                         init=mf.InitialLaw(kind="balanced", scale=scale, signs="random"))
    return mf.SimulationConfig(model=model, data=data, t_max=T_MAX, seed=seed,
                               precision="float64", save=mf.SaveAt(n=120, snapshots=4),
                               name="digits")

# %%
runs = {(m, s): mf.simulate(digits_config(m, s), progress=False) for m in WIDTHS for s in SCALES}


def onset(ds):
    markers = json.loads(ds.phase.attrs["markers"])
    return markers.get("condensation_onset")


print("     m   lambda   effective directions: t=0 -> min (at t) -> end   onset t   "
      "peaks >= 10%   steps   loss    accuracy")
for (m, s), ds in runs.items():
    last = phase_summary(ds).isel(phase=-1).sel(end="end", sign="all")
    peaks = int((last.peak_share >= 0.1).sum())
    eff = ds.effective_directions.sel(sign="all").values
    low = int(np.argmin(eff))
    t_on = onset(ds)
    print(f"{m:6d}  {s:7.0e}   {eff[0]:6.1f} -> {eff[low]:5.2f} ({float(ds.t[low]):5.0f}) -> "
          f"{eff[-1]:5.2f}            {'-' if t_on is None else f'{t_on:6.3g}':>6s}   "
          f"{peaks:12d}   {int(ds.n_steps[-1]):5d}   {float(ds.loss[-1]):.3f}   "
          f"{float(ds.accuracy[-1]):.3f}")

# %% [markdown]
# At the default sizes, small initial scales condense. At lambda = 1e-4 the effective number of
# directions falls from 31.6 (m = 50; 55.2 at m = 100) to about 1.1 near t = 80 and ends at
# 1.98 at both widths: one direction per output sign (the per-phase table below, m = 100: the
# neurons with a > 0 end at +163 degrees and those with a < 0 at +50 degrees in the plane of
# the top two components, each sign at effective count 1.00). The onset (t = 13.6 at m = 50, 11
# at m = 100) is the same at lambda = 1e-2: while f is small the directions of balanced neurons
# turn at a rate independent of lambda. It comes during the initial alignment, long before the
# loss leaves its first plateau (at t = 61 in the table), and the network then stays on its two
# directions up to t = 3000, at loss 0.396 and training accuracy 0.670. At lambda = 1e-2 the
# count also collapses (1.6 and 1.9 at t = 51), then a few neurons leave the two directions
# and it ends at 3.7 (m = 50) and 4.0 (m = 100), with accuracy 0.843. At lambda = 1 it only
# falls to 9.4 and 11.5 (onset at t = 59 and 33), with accuracy 0.843 and 0.870. The smaller the
# initialisation, the fewer directions the trained network uses, and here the simpler network
# also fits its training set worse. The final counts depend little on the width; the initial
# counts, and with them the onset thresholds, do (see above).

# %%
fig, axes = plt.subplots(1, len(SCALES), figsize=(4.2 * len(SCALES), 3.6), sharey=True)
for ax, s in zip(np.atleast_1d(axes), SCALES):
    for m in WIDTHS:
        ds = runs[m, s]
        ax.semilogx(ds.t.values[1:], ds.effective_directions.sel(sign="all").values[1:],
                    label=f"m = {m}")
        if onset(ds):
            ax.axvline(onset(ds), color=ax.lines[-1].get_color(), ls=":", lw=0.8)
    ax.set_title(f"lambda = {s:g}")
    ax.set_xlabel("gradient-flow time t")
np.atleast_1d(axes)[0].set_ylabel("effective number of directions")
np.atleast_1d(axes)[0].legend(fontsize=8)
fig.suptitle("digits (even/odd, PCA 3): condensation; dotted: onset")
fig.tight_layout()
OUT.save(fig, "effective_directions")

# %%
small = runs[WIDTHS[-1], SCALES[0]]
print(format_table(phase_summary(small)))
OUT.save(plot.density_heatmap(small), "density_small_scale")
OUT.save(plot.neuron_rays(small), "rays_small_scale")
