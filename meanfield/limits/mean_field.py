"""Mean-field limit (critical regime) for balanced initialisation and 1-D inputs with bias.

docs/theory/limits.md. Derivation from the particle ODE (docs/theory/model.md) with residuals
``R_i = weight_i l'(f(x_i), y_i)`` and ``G(w) = sum_i R_i relu(w . x~_i)`` (1-homogeneous)::

    da/dt = -G(w),        dw/dt = -a grad G(w).

Write a balanced particle as ``a = s r``, ``w = r u`` (sign s, radius r = |w| = |a|, unit
direction u) and set ``g(u) = -G(u) = -sum_i R_i relu(u . x~_i)``. Homogeneity gives
``G(r u) = r G(u)``, ``grad G(r u) = grad G(u)`` and ``u . grad G(u) = G(u)`` (Euler), so

    da/dt  = r g(u)                      => d|a|/dt = s da/dt = s r g(u)
    dw/dt  = s r grad g(u)               => d|w|/dt = u . dw/dt = s r g(u)
    du/dt  = (I - u u^T) dw/dt / r = s grad_S g(u)

|a| and |w| obey the same ODE, so ``a = s |w|`` is preserved and s never changes (r > 0 stays
> 0). The mass element is ``r^2`` (``f(x) = (1/m) sum s r^2 relu(u . x~)``), with
``d(r^2)/dt = 2 s g(u) r^2``. The measures ``mu_s = (1/m) sum_{sign s} r^2 delta_u`` therefore
follow the transport + reaction equations

    d_t mu_s = -div_S(mu_s s grad_S g) + 2 s g mu_s,   f(x) = int relu(u . x~) d(mu_+ - mu_-).

For x~ = (x, 1) in the (w, b) plane, u = (cos phi, sin phi) (phi = atan2(b, w), the angle of the
recorded densities) and with x~_i = |x~_i| (cos alpha_i, sin alpha_i)::

    relu(u . x~_i) = |x~_i| max(cos(phi - alpha_i), 0)
    g(phi)   = -sum_i R_i |x~_i| max(cos(phi - alpha_i), 0)
    g'(phi)  =  sum_i R_i |x~_i| sin(phi - alpha_i) 1[cos(phi - alpha_i) > 0]
    d_t mu_s + d_phi(s g' mu_s) = 2 s g mu_s.

Initial law: w ~ N(0, scale^2 I_2) has a uniform direction independent of r^2 ~ scale^2 chi^2_2
(E r^2 = 2 scale^2) and each sign has probability 1/2 (random, alternating or ASI signs give
the same marginal), so ``mu_s = scale^2 / (2 pi) dphi`` for each sign (total mass scale^2).

Discretisation: N equal cells on (-pi, pi] (periodic) holding the masses of mu_+ and mu_-.
f and the cell-averaged g use the exact cell averages of relu(u . x~) (mass uniform in a
cell); transport is first-order finite-volume upwind with the exact angular velocity at the
faces; the reaction is exact (mass *= exp(2 s g dt)); the step obeys the CFL bound
dt <= cfl * dphi / max|g'|, a reaction bound dt <= reaction / max|2 g| and a kernel bound
dt <= kernel / (2 (M_+ + M_-) max|x~|^2) (stability of the residual feedback). With
cfl <= 1/2 the upwind step keeps the masses nonnegative, and transport alone conserves the
mass of each sign to rounding.
"""

from __future__ import annotations

import math
import time

import numpy as np
import xarray as xr

from meanfield.config import SimulationConfig
from meanfield.particles._validate import check_bool, check_int, check_positive, check_times
from meanfield.schema import build

SIGNS = ("+", "-", "all")


def check_config(config: SimulationConfig) -> None:
    """Raise ValueError unless the config has what the balanced 1-D mean-field PDE requires."""
    spec, data = config.model, config.data
    problems = []
    if not spec.bias:
        problems.append("model.bias=True")
    if data.input_dim != 1:
        problems.append(f"data.input_dim == 1 (got {data.input_dim})")
    if spec.init.kind != "balanced":
        problems.append(f"model.init.kind='balanced' (got {spec.init.kind!r})")
    if not spec.trainable_output:
        problems.append("model.output='trainable'")
    if problems:
        raise ValueError("mean_field_limit needs 1-D inputs with bias and balanced initialisation "
                         "(docs/theory/limits.md); required: " + ", ".join(problems))


# ----------------------------------------------------------------------------- geometry

def _relu_cos_primitive(psi: np.ndarray) -> np.ndarray:
    """F(psi) = int_{-pi}^{psi} max(cos t, 0) dt for any real psi (F(psi + 2 pi) = F(psi) + 2)."""
    k = np.floor((psi + np.pi) / (2 * np.pi))
    p = psi - 2 * np.pi * k  # in [-pi, pi)
    base = np.where(p < -np.pi / 2, 0.0, np.where(p < np.pi / 2, np.sin(p) + 1.0, 2.0))
    return 2.0 * k + base


def cell_edges(n_cells: int) -> np.ndarray:
    """Edges -pi + c h, c = 0..N, of the N equal cells on (-pi, pi]."""
    return -np.pi + np.arange(n_cells + 1) * (2 * np.pi / n_cells)


def cell_kernel(points: np.ndarray, n_cells: int) -> np.ndarray:
    """Cell averages of relu(u(phi) . x~) for augmented points x~ (k, 2): shape (N, k).

    ``f(x) = sum_c (M_+c - M_-c) K[c, x]`` is exact for densities constant in each cell.
    """
    points = np.asarray(points, float)
    norm = np.linalg.norm(points, axis=1)
    alpha = np.arctan2(points[:, 1], points[:, 0])
    edges = cell_edges(n_cells)
    prim = _relu_cos_primitive(edges[:, None] - alpha[None, :])
    return norm * np.diff(prim, axis=0) / (2 * np.pi / n_cells)


def face_slope(points: np.ndarray, n_cells: int) -> np.ndarray:
    """d/dphi relu(u(phi) . x~) at the cell faces phi = -pi + c h (c = 0..N-1): shape (N, k).

    Face c is the left face of cell c (between cells c-1 and c, periodically)."""
    points = np.asarray(points, float)
    norm = np.linalg.norm(points, axis=1)
    alpha = np.arctan2(points[:, 1], points[:, 0])
    psi = cell_edges(n_cells)[:-1, None] - alpha[None, :]
    return -norm * np.sin(psi) * (np.cos(psi) > 0)


def aggregate_bins(cell_mass: np.ndarray, n_bins: int) -> np.ndarray:
    """Masses of N cells re-binned into ``n_bins`` equal bins of (-pi, pi] (uniform in a cell).

    Works on the last axis; totals are preserved."""
    n_cells = cell_mass.shape[-1]
    cum = np.concatenate([np.zeros(cell_mass.shape[:-1] + (1,)), np.cumsum(cell_mass, -1)], -1)
    edges_c, edges_b = cell_edges(n_cells), cell_edges(n_bins)
    flat = cum.reshape(-1, n_cells + 1)
    out = np.stack([np.interp(edges_b, edges_c, row) for row in flat])
    return np.diff(out, axis=-1).reshape(cell_mass.shape[:-1] + (n_bins,))


# ----------------------------------------------------------------------------- losses (numpy)

def _loss_value(kind: str, f, y):
    if kind == "squared":
        return 0.5 * (f - y) ** 2
    if kind == "exponential":
        return np.exp(-y * f)
    return np.logaddexp(0.0, -y * f)


def _loss_derivative(kind: str, f, y):
    if kind == "squared":
        return f - y
    if kind == "exponential":
        return -y * np.exp(-y * f)
    from scipy.special import expit

    return -y * expit(-y * f)


# ----------------------------------------------------------------------------- solver

def initial_masses(scale: float, n_cells: int) -> np.ndarray:
    """Cell masses (2, N) of mu_+ and mu_- at t = 0: scale^2 / (2 pi) per unit angle each."""
    return np.full((2, n_cells), scale ** 2 / n_cells)


class _PDE:
    """State and one time step of the discretised transport + reaction system."""

    def __init__(self, config: SimulationConfig, n_cells: int, *, cfl: float, reaction: float,
                 kernel: float, transport: bool = True, react: bool = True):
        data, spec = config.data, config.model
        self.loss = spec.loss
        self.n_cells, self.h = n_cells, 2 * np.pi / n_cells
        x_unique, inverse = data.unique_inputs(True)
        self.inverse, self.y, self.weights = inverse, data.y, data.weights
        self.n_unique = x_unique.shape[0]
        self.K = cell_kernel(x_unique, n_cells)           # (N, n_u)
        self.D = face_slope(x_unique, n_cells)            # (N, n_u)
        self.K_eval = cell_kernel(data.augmented(data.x_eval, True), n_cells)
        self.x_max2 = float(np.max(np.sum(x_unique ** 2, axis=1)))
        self.cfl, self.reaction, self.kernel = cfl, reaction, kernel
        self.transport, self.react = transport, react
        self.s = np.array([1.0, -1.0])[:, None]

    def f_unique(self, M):
        return (M[0] - M[1]) @ self.K

    def residual(self, f_u):
        r = self.weights * _loss_derivative(self.loss, f_u[self.inverse], self.y)
        return np.bincount(self.inverse, weights=r, minlength=self.n_unique)

    def risk(self, f_u):
        return float(np.sum(self.weights * _loss_value(self.loss, f_u[self.inverse], self.y)))

    def fields(self, M):
        """(cell-averaged g (N,), g' at the left faces (N,))."""
        R = self.residual(self.f_unique(M))
        return -self.K @ R, -self.D @ R

    def max_dt(self, M, g, gp):
        bounds = [np.inf]
        if self.transport:
            vmax = float(np.max(np.abs(gp)))
            if vmax > 0:
                bounds.append(self.cfl * self.h / vmax)
        if self.react:
            gmax = float(np.max(np.abs(g)))
            if gmax > 0:
                bounds.append(self.reaction / (2 * gmax))
        total = float(M.sum())
        if total > 0:
            bounds.append(self.kernel / (2 * total * self.x_max2))
        return min(bounds)

    def step(self, M, g, gp, dt):
        """Lie splitting: upwind transport with face velocities s g', then exact reaction."""
        if self.transport:
            v = self.s * gp[None, :]                      # (2, N) at left faces
            density = M / self.h
            left = np.roll(density, 1, axis=1)            # cell c-1
            flux = np.where(v > 0, v * left, v * density)  # through the left face of cell c
            M = M - dt * (np.roll(flux, -1, axis=1) - flux)
            M = np.maximum(M, 0.0)  # removes rounding negatives only (cfl <= 1/2)
        if self.react:
            M = M * np.exp(2 * self.s * g[None, :] * dt)
        return M


def check_mean_field_options(*, n_cells: int = 2048, t=None, cfl: float = 0.4,
                             reaction: float = 0.05, kernel: float = 0.5, transport: bool = True,
                             react: bool = True, stop_at_loss_tol: bool = True) -> int:
    """Raise a ValueError naming a ``mean_field_limit`` option whose value is not allowed;
    returns ``n_cells`` as an int."""
    n_cells = check_int("n_cells", n_cells, minimum=4)
    check_positive("cfl", cfl)
    if not cfl <= 0.5:
        raise ValueError(f"cfl={cfl} must be in (0, 1/2] (positivity of the upwind step)")
    for name, value in (("reaction", reaction), ("kernel", kernel)):
        check_positive(name, value)
    for name, value in (("transport", transport), ("react", react),
                        ("stop_at_loss_tol", stop_at_loss_tol)):
        check_bool(name, value)
    check_times("t", t)
    return n_cells


def mean_field_limit(config: SimulationConfig, *, n_cells: int = 2048, t=None,
                     cfl: float = 0.4, reaction: float = 0.05, kernel: float = 0.5,
                     transport: bool = True, react: bool = True,
                     stop_at_loss_tol: bool = True) -> xr.Dataset:
    """Solve the balanced mean-field PDE of ``config`` (docs/theory/limits.md) on ``n_cells`` angle cells.

    Args:
        config: 1-D inputs, ``model.bias=True``, ``model.init.kind='balanced'`` (scale lambda),
            trainable output; any loss, weights and evaluation grid. Width, seed and solver are
            ignored (m = infinity, deterministic), except to build the default save times.
        n_cells: number N of equal angle cells on (-pi, pi].
        t: explicit save times (t = 0 is always added); default: the config's schedule
            (``config.save.schedule`` with the particle time scale of the prepared
            config, as a finite run would use).
        cfl: Courant number of the transport (<= 1/2 keeps the masses nonnegative).
        reaction: bound on |2 g| dt per step.
        kernel: bound on dt times the tangent-kernel scale 2 (M_+ + M_-) max|x~|^2.
        transport, react: switch either part off (tests: pure transport conserves mass).
        stop_at_loss_tol: stop at the first save time where the loss is below config.loss_tol.
    Returns:
        Dataset on ``t`` with ``loss`` (t), ``f_train`` (t, sample), ``f_eval`` (t, eval_point),
        ``density`` (t, sign, angle) (amplitude-weighted = mass, rows sum to 1, on
        ``observe.n_angle_bins`` bins), ``mass`` (t, sign) (= int mu_s), ``n_steps`` (t),
        ``step_size`` (t), the data, and attrs ``limit='mean_field'``, ``config``,
        ``n_cells``.
    """
    from meanfield.setup import particle_time_scale, prepare

    check_config(config)
    n_cells = check_mean_field_options(n_cells=n_cells, t=t, cfl=cfl, reaction=reaction,
                                       kernel=kernel, transport=transport, react=react,
                                       stop_at_loss_tol=stop_at_loss_tol)
    started = time.time()
    if t is None:
        scale = math.nan
        if config.save.t is None:
            problem, particles, _, _ = prepare(config)
            scale = particle_time_scale(problem, particles)
        times, _ = config.save.schedule(config.t_max, scale)
    else:
        times = check_times("t", t)
        times = np.concatenate([[0.0], times[times > 0]])

    pde = _PDE(config, n_cells, cfl=cfl, reaction=reaction, kernel=kernel,
               transport=transport, react=react)
    M = initial_masses(config.model.init.scale, n_cells)
    rows = {k: [] for k in ("t", "loss", "f_train", "f_eval", "cells", "n_steps", "step_size")}
    now, steps = 0.0, 0
    loss_tol = config.loss_tol if stop_at_loss_tol else None
    stop_reason = "t_max"

    def record(t_now, g, gp):
        f_u = pde.f_unique(M)
        rows["t"].append(t_now)
        rows["loss"].append(pde.risk(f_u))
        rows["f_train"].append(f_u[pde.inverse])
        rows["f_eval"].append((M[0] - M[1]) @ pde.K_eval)
        rows["cells"].append(M.copy())
        rows["n_steps"].append(steps)
        rows["step_size"].append(pde.max_dt(M, g, gp))
        return rows["loss"][-1]

    g, gp = pde.fields(M)
    for target in times:
        while now < target * (1 - 1e-14):
            if steps >= config.max_steps:
                raise RuntimeError(f"mean_field_limit: max_steps={config.max_steps} exhausted "
                                   f"at t={now:.6g}")
            dt = min(pde.max_dt(M, g, gp), target - now)
            M = pde.step(M, g, gp, dt)
            if not np.all(np.isfinite(M)):
                raise FloatingPointError(f"mean_field_limit diverged at t={now:.6g}")
            now, steps = (target if dt == target - now else now + dt), steps + 1
            g, gp = pde.fields(M)
        loss = record(float(target), g, gp)
        if loss_tol is not None and loss < loss_tol:
            stop_reason = "loss_tol"
            break
    return _dataset(config, rows, n_cells, cfl, time.time() - started, stop_reason)


def _dataset(config, rows, n_cells, cfl, wall, stop_reason) -> xr.Dataset:
    data, observe = config.data, config.observe
    cells = np.stack(rows["cells"])                     # (t, 2, N)
    mass = cells.sum(-1)
    mass = np.concatenate([mass, mass.sum(-1, keepdims=True)], axis=1)
    binned = aggregate_bins(cells, observe.n_angle_bins)
    binned = np.concatenate([binned, binned.sum(1, keepdims=True)], axis=1)
    total = binned.sum(-1, keepdims=True)
    density = np.where(total > 0, binned / np.where(total > 0, total, 1), 0.0)
    n_a = observe.n_angle_bins
    coords = {"t": np.asarray(rows["t"]), "sign": list(SIGNS),
              "angle": -np.pi + (np.arange(n_a) + 0.5) * 2 * np.pi / n_a}
    variables = {
        "loss": np.asarray(rows["loss"]),
        "f_train": np.stack(rows["f_train"]),
        "f_eval": np.stack(rows["f_eval"]),
        "density": density,
        "mass": mass,
        "n_steps": np.asarray(rows["n_steps"]),
        "step_size": np.asarray(rows["step_size"]),
        "x_train": data.x,
        "y_train": data.y,
        "x_eval": data.x_eval,
    }
    long_names = {"loss": f"training loss ({config.model.loss})",
                  "mass": "total mass int mu_s (= (1/m) sum |a||w|)",
                  "n_steps": "PDE steps", "angle": "neuron angle atan2(b, w)"}
    attrs = {
        "title": f"mean-field limit (balanced, 1-D with bias): {config.name}",
        "limit": "mean_field",
        "n_cells": int(n_cells),
        "cfl": float(cfl),
        "scheme": "finite-volume upwind transport + exact exponential reaction, Lie splitting",
        "stop_reason": stop_reason,
        "wall_time_s": float(wall),
    }
    return build("limit:mean_field", config, variables, coords=coords, long_names=long_names,
                 attrs=attrs)
