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
# # Quickstart: Wang & Ma's four phases
#
# A two-layer ReLU network with frozen output signs s_k = +-1, trained with the exponential
# loss on p = 4 copies of x_+ (label +1) and one x_- (label -1) at angle Delta = 12 degrees
# (Wang & Ma, arXiv 2305.12467). Each neuron is a particle; `meanfield` integrates their
# gradient flow with an adaptive solver and returns an `xarray.Dataset` on the time axis `t`.
#
# This file is a jupytext percent script paired with `01_quickstart.ipynb`: run it as a
# notebook or as `python notebooks/01_quickstart.py`.

# %%
import math
import os

import matplotlib.pyplot as plt
import numpy as np

import meanfield as mf
from meanfield.limits import wang_ma as wm
from meanfield.presets import wang_ma_directions

config = mf.presets.wang_ma(width=100, seed=0)  # kappa = 0.1, d = 20, t_max = 1500
ds = mf.simulate(config)
print(f"stopped at t = {float(ds.t[-1]):g} ({ds.attrs['stop_reason']}), "
      f"{int(ds.n_steps[-1])} steps, final loss {float(ds.loss[-1]):.4g}, "
      f"accuracy {float(ds.accuracy[-1]):.3f}")

# %% [markdown]
# ## Theoretical escape time
#
# Alive positive neurons are a fraction rho_+ = 1/4 of all neurons; negative neurons that
# survive Phase I are a fraction
# rho_- = [pi - arccos(p sin^2 Delta / |n2|)] / (4 pi), n2 = (p - cos Delta) x_- - (p cos Delta - 1) x_+.
# The plateau (loss near 2 sqrt(p) / (1 + p)) ends, and the accuracy jumps to 100%, around
#
#     t_esc = 2 (1 + p) (1 - p^-1/2) / ((rho_+ + rho_-) Delta^2).

# %%
p, delta = 4, math.pi / 15
_, x_minus = wang_ma_directions(d=20, delta=delta)
rho_plus, rho_minus = wm.rho_plus(), wm.rho_minus(p, delta)
t_esc = wm.t_escape(p, delta, rho_plus + rho_minus)
plateau = wm.plateau_loss(p)
# Accuracy goes 0.2 -> 1 -> 0.8 within Phase I-II (f(x_-) dips below 0, then rises with
# f(x_+)); the escape is the last switch to 100%.
acc = ds.accuracy.values
t_escape = float(ds.t[np.flatnonzero((acc[1:] >= 1) & (acc[:-1] < 1))[-1] + 1])
print(f"rho_- = {rho_minus:.4f}: t_esc (theory) = {t_esc:.0f}, "
      f"measured escape (accuracy back to 100%) at t = {t_escape:.0f}")

# %%
t = ds.t.values[1:]  # t = 0 cannot go on a log axis
fig, (ax_loss, ax_acc) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
ax_loss.loglog(t, ds.loss.values[1:], label="loss (m = 100)")
ax_loss.axhline(plateau, color="gray", ls=":", label=r"plateau $2\sqrt{p}/(1+p)$")
ax_loss.set_ylabel("training loss")
ax_acc.semilogx(t, acc[1:], color="C1")
ax_acc.axvline(t_escape, color="C1", ls=":", lw=1, label=f"measured escape, t = {t_escape:.0f}")
ax_acc.set_ylabel("training accuracy")
ax_acc.set_xlabel("gradient-flow time t")
for ax in (ax_loss, ax_acc):
    ax.axvline(t_esc, color="k", ls="--", lw=1, label=rf"$t_{{esc}}$ = {t_esc:.0f} (theory)")
    ax.grid(True, which="major", alpha=0.3)
ax_loss.legend(loc="lower left")
ax_acc.legend(loc="upper left")
fig.suptitle("Wang & Ma, m = 100, kappa = 0.1, seed 0")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Gradient flow is not GD
#
# The authors train with GD at step 1e-2. At kappa = 0.1 that step is not small on the scale of
# Phase I: a negative neuron that, under the flow, reaches the face w . x_+ = 0 with a small
# margin on x_- and slides along it is instead thrown across both faces by one GD step, where it
# is inactive on every input and never moves again. Count the negative neurons still active on
# x_- after Phase I (t = 10) under the adaptive flow and under Euler (= GD) with dt = 1e-2.
# Only Phase I matters, so the runs stop at t = 10 and save only t = 0 and t = 10.

# %%
T_CHECK = 10.0
SEEDS = range(int(os.environ.get("QUICKSTART_SEEDS", "5")))  # the test sets 2 to stay fast


def surviving_negatives(ds):
    """Negative neurons active on x_- at the last snapshot."""
    a = ds.snapshot_a.isel(t_snapshot=-1).values
    w = ds.snapshot_w.isel(t_snapshot=-1).values
    return int(np.sum((a < 0) & (w @ x_minus > 0)))


print(f"expected under the flow: rho_- m = {100 * rho_minus:.1f}")
print("seed  flow  GD(dt=1e-2)")
for seed in SEEDS:
    short = mf.presets.wang_ma(width=100, seed=seed, t_max=T_CHECK)
    short = short.replace(save=mf.SaveAt(t=(T_CHECK,), snapshots=0))
    flow = mf.simulate(short)
    gd = mf.simulate(short.replace(solver=mf.Solver(kind="euler", dt=1e-2)))
    print(f"{seed:4d}  {surviving_negatives(flow):4d}  {surviving_negatives(gd):11d}")
