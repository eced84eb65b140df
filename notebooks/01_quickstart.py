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
# # Quickstart: one run, its density, its limit, its files
#
# A two-layer ReLU network with frozen output signs s_k = +-1, trained with the exponential
# loss on p = 4 copies of x_+ (label +1) and one x_- (label -1) at angle Delta = 12 degrees
# (Wang & Ma, arXiv 2305.12467). Each neuron is a particle; `meanfield` integrates their
# gradient flow with an adaptive solver and returns an `xarray.Dataset` on the time axis `t`.
#
# This file is a jupytext percent script paired with `01_quickstart.ipynb`: run it as a
# notebook or as `python notebooks/01_quickstart.py` (figures are written to
# `MEANFIELD_NOTEBOOK_OUT`, default `notebook_outputs/`; `MEANFIELD_NOTEBOOK_QUICK=1` runs
# reduced sizes).

# %%
from nbsetup import QUICK, Outputs  # notebooks/nbsetup.py: sizes, output files, headless

import matplotlib.pyplot as plt
import numpy as np

import meanfield as mf
from meanfield import plot
from meanfield.condensation import format_table, phase_summary
from meanfield.limits import wang_ma as wm
from meanfield.presets import wang_ma_directions

OUT = Outputs("01_quickstart")

# %% [markdown]
# ## One run
#
# `simulate` with `out=` streams the dataset into a zarr store as it runs (the command
# `meanfield run wang_ma` does the same and writes the figures beside it).

# %%
config = mf.presets.wang_ma(width=100, seed=0, n_saves=150 if QUICK else 400)  # kappa 0.1, d 20
store = OUT.dir / "wang_ma-m100-s0.zarr"
ds = mf.simulate(config, out=store, overwrite=True, progress=False)
print(f"stopped at t = {float(ds.t[-1]):g} ({ds.attrs['stop_reason']}), "
      f"{int(ds.n_steps[-1])} steps, final loss {float(ds.loss[-1]):.4g}, "
      f"accuracy {float(ds.accuracy[-1]):.3f}")

# %% [markdown]
# ## How the neurons condense, phase by phase
#
# `phase_summary` reads the recorded observables at the start and end of each phase (labelled
# by `meanfield.phases.label_phases`): alive fractions, effective number of directions, peak
# mass and the reference direction nearest each peak.

# %%
summary = phase_summary(ds)
print(format_table(summary))
OUT.save(plot.density_heatmap(ds, weighted=False), "density")
OUT.save(plot.training_curves(ds), "training_curves")

# %% [markdown]
# ## Its infinite-width limit
#
# `mf.infinite_width(config)` picks the limit that applies: here Wang & Ma's reduced model
# (alive fractions rho_+ = 1/4 and the wedge rho_-). The finite run escapes the plateau later
# than the limit's t_esc = 287 (notebook 02 shows why: this run has fewer alive neurons than
# the infinite-width law).

# %%
limit = mf.infinite_width(config)
gaps = mf.compare(ds, limit)
p, delta = wm.data_geometry(config)
t_esc = wm.t_escape(p, delta, wm.rho_plus() + wm.rho_minus(p, delta))
print(f"limit: {limit.attrs.get('limit', 'wang_ma')}; theory t_esc = {t_esc:.0f}; "
      f"run's escape (start of Phase IV) t = {list(summary.boundary.values[:, 0])[-1]:.0f}; "
      f"largest |loss gap| = {float(np.abs(gaps.loss_gap).max()):.3f}")
t = ds.t.values[1:]
fig, ax = plt.subplots(figsize=(6.5, 4))
ax.loglog(t, ds.loss.values[1:], label="run, m = 100")
ax.loglog(limit.t.values[1:], limit.loss.values[1:], "--", label="reduced model (m = infinity)")
ax.axhline(wm.plateau_loss(p), color="gray", ls=":", label=r"plateau $2\sqrt{p}/(1+p)$")
ax.axvline(t_esc, color="k", lw=0.8, ls="--", label=f"theory $t_{{esc}}$ = {t_esc:.0f}")
ax.set_xlabel("gradient-flow time t")
ax.set_ylabel("training loss")
ax.legend(fontsize=8)
OUT.save(fig, "run_against_limit")

# %% [markdown]
# ## Where the outputs are
#
# The store reopens lazily with `mf.open_run`; `plot.save_all` writes the standard figures
# (`meanfield plot STORE` from the shell).

# %%
reopened = mf.open_run(store)
paths = plot.save_all(reopened.load(), OUT.dir / "plots")
print("store:", store)
print("figures:", *paths, sep="\n  ")

# %% [markdown]
# ## Gradient flow is not GD
#
# The authors train with GD at step 1e-2. At kappa = 0.1 that step is not small on the scale of
# Phase I: a negative neuron that, under the flow, reaches the face w . x_+ = 0 with a small
# margin on x_- and slides along it is instead thrown across both faces by one GD step, where it
# is inactive on every input and never moves again. Count the negative neurons still active on
# x_- after Phase I (t = 10) under the adaptive flow and under Euler (= GD) with dt = 1e-2.

# %%
T_CHECK = 10.0
_, x_minus = wang_ma_directions(d=20, delta=delta)


def surviving_negatives(run):
    """Negative neurons active on x_- at the last snapshot."""
    a = run.snapshot_a.isel(t_snapshot=-1).values
    w = run.snapshot_w.isel(t_snapshot=-1).values
    return int(np.sum((a < 0) & (w @ x_minus > 0)))


print(f"expected under the flow: rho_- m = {100 * wm.rho_minus(p, delta):.1f}")
print("seed  flow  GD(dt=1e-2)")
for seed in range(2 if QUICK else 5):
    short = mf.presets.wang_ma(width=100, seed=seed, t_max=T_CHECK)
    short = short.replace(save=mf.SaveAt(t=(T_CHECK,), snapshots=0))
    flow = mf.simulate(short, progress=False)
    gd = mf.simulate(short.replace(solver=mf.Solver(kind="euler", dt=1e-2)), progress=False)
    print(f"{seed:4d}  {surviving_negatives(flow):4d}  {surviving_negatives(gd):11d}")
