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
# # Orthogonal inputs (Boursier et al.) and the analytic solver (Barbu)
#
# **Orthogonal inputs.** Boursier, Pillaud-Vivien & Flammarion (arXiv 2206.00939) train a
# two-layer ReLU network on orthogonal inputs x_k = e_k with labels y = (1, 1, -0.3, -0.3), from
# a balanced initialisation at a small scale lambda. The loss sits on a plateau
# L0 = (1/2n) sum y_k^2 until the neurons of the faster class align with
# D_+ = (1/n) sum_{y_k > 0} y_k x_k (or D_-), escapes at t ~ ln(1/lambda)/|D|, plateaus again at
# the slower class's share L1, escapes again, and ends at the minimum-norm interpolator.
# The config is `meanfield.validation.studies.boursier.config` (references D_plus and D_minus
# recorded, so `label_phases` uses Boursier's rules).
#
# **Analytic solver.** `Solver(kind="analytic")` (Barbu, arXiv 2304.02972) does not integrate a
# gradient flow: it alternates least-squares solves of the two layers with the activation
# pattern refreshed in between. Its time axis counts iterations.
#
# Set `MEANFIELD_NOTEBOOK_QUICK=1` for reduced sizes.

# %%
from nbsetup import QUICK, Outputs  # notebooks/nbsetup.py: sizes, output files, headless

import matplotlib.pyplot as plt
import numpy as np

import meanfield as mf
from meanfield import plot
from meanfield.condensation import format_table, phase_summary
from meanfield.limits import boursier
from meanfield.validation.studies.boursier import X, Y, config, down_crossing

OUT = Outputs("05_orthogonal_and_analytic")
WIDTH = 100 if QUICK else 400

# %% [markdown]
# ## Plateaus and escapes against the predictions

# %%
lambdas = (1e-3, 1e-6) if QUICK else (1e-3, 1e-6, 1e-9)
runs = {lam: mf.simulate(config(lam, 0, WIDTH), progress=False) for lam in lambdas}
print(" lambda   first escape (run / ln(1/lambda)/|D|)   second escape (run / prediction)")
for lam, ds in runs.items():
    pred = boursier.boursier_predictions(X, Y, lam)
    t, loss = ds.t.values, ds.loss.values
    e1 = down_crossing(t, loss, 0.5 * (pred["L0"] + pred["L1"]))
    e2 = down_crossing(t, loss, 0.5 * pred["L1"])
    print(f"{lam:7.0e}   {e1:9.4g} / {pred['t_escape'][0]:9.4g} = {e1 / pred['t_escape'][0]:.3f}"
          f"            {e2:9.4g} / {pred['t_escape'][1]:9.4g} = {e2 / pred['t_escape'][1]:.3f}")

# %% [markdown]
# The ratio tends to 1 as lambda shrinks (the correction is O(1 / ln(1/lambda))).

# %%
pred = boursier.boursier_predictions(X, Y, lambdas[-1])
fig, ax = plt.subplots(figsize=(6.5, 4))
for lam, ds in runs.items():
    ax.loglog(ds.t.values[1:], ds.loss.values[1:], label=f"lambda = {lam:.0e}")
for level, name in ((pred["L0"], "L0"), (pred["L1"], "L1")):
    ax.axhline(level, color="k", ls=":", lw=0.8)
    ax.text(ax.get_xlim()[0] * 1.5, level * 1.1, name, fontsize=8)
ax.set_ylim(1e-6, 1)
ax.set_xlabel("gradient-flow time t")
ax.set_ylabel("training loss")
ax.legend(fontsize=8)
OUT.save(fig, "boursier_plateaus")

ds = runs[lambdas[-1]]
print(format_table(phase_summary(ds)))
OUT.save(plot.training_curves(ds), "boursier_training_curves")
OUT.save(plot.neuron_rays(ds), "boursier_rays")

# %% [markdown]
# The neurons end along beta_+ and beta_-: the network is the minimum variation-norm
# interpolator h(x) = relu(<beta_+, x>) - relu(<beta_-, x>).

# %%
f_end, h = ds.f_eval.values[-1], boursier.interpolator(ds.x_eval.values, pred["beta_plus"],
                                                        pred["beta_minus"])
a, w = ds.snapshot_a.values[-1], ds.snapshot_w.values[-1]
print(f"max |f - h| on the evaluation points: {np.max(np.abs(f_end - h)):.2e}; variation norm "
      f"{boursier.variation_norm(a, w):.4f} against |beta_+| + |beta_-| = "
      f"{pred['variation_norm']:.4f}")

# %% [markdown]
# ## The analytic solver on Luo's 1-D data
#
# The same particles as the gradient-flow run of the config (same seed) are trained by
# alternating least squares; it stops once the loss is below the preset's tolerance (MSE 1e-6),
# here after one iteration, where the gradient flow needs t of a few hundred.

# %%
# quick: the width and precision of 03 (one compiled program)
luo = mf.presets.luo_1d(width=104 if QUICK else 1000, gamma=1.0,
                        precision="float64" if QUICK else None)
fit = mf.simulate(luo.replace(solver=mf.Solver(kind="analytic", iterations=10 if QUICK else 30)),
                  progress=False)
flow = mf.simulate(luo.replace(t_max=1e3 if QUICK else 1e5), progress=False)
print(f"analytic: loss {float(fit.loss[0]):.3g} -> {float(fit.loss[-1]):.3g} in "
      f"{int(fit.t[-1])} iterations ({fit.attrs['stop_reason']}); flow: "
      f"{float(flow.loss[-1]):.3g} at t = {float(flow.t[-1]):.3g}")
fig, (ax_fit, ax_f) = plt.subplots(1, 2, figsize=(11, 4))
ax_fit.semilogy(fit.t.values, fit.loss.values, "o-")
ax_fit.set_xlabel("analytic iteration")
ax_fit.set_ylabel("training loss")
ax_fit.axhline(float(flow.loss[-1]), color="k", ls="--", label="gradient flow, final loss")
ax_fit.legend(fontsize=8)
x_eval = fit.x_eval.values[:, 0]
ax_f.plot(x_eval, fit.f_eval.values[-1], label="analytic")
ax_f.plot(x_eval, flow.f_eval.values[-1], ls="--", label="gradient flow")
ax_f.plot(fit.x_train.values[:, 0], fit.y_train.values, "ko", label="training data")
ax_f.set_xlabel("x")
ax_f.set_ylabel("f(x)")
ax_f.legend(fontsize=8)
fig.tight_layout()
OUT.save(fig, "analytic_against_flow")
