"""Condensed regime: extremal vectors and the log m growth of the escape time (docs/theory/limits.md; the
phase diagram of Luo et al., arXiv 2007.07497; extremal vectors as in Maennel, Bousquet & Gelly,
arXiv 1803.08367).

From a vanishing initial scale the network output stays ~0 for a while, so the residuals of the
squared loss are r_i = f_i - y_i = -y_i and every particle moves in the frozen field of

    g0(u) = sum_i weight_i y_i relu(u . x~_i)          (weights: the sample weights, 1/n by default)

on the unit sphere of directions u of w~ = (w, b). A neuron (a, w~) with w~ = |w~| u has
d|w~|/dt = a g0(u) and da/dt = |w~| g0(u) (ReLU is 1-homogeneous), while u ascends s g0 on the
sphere, s = sign(a). So directions condense at the local maximisers of s g0 (the extremal vectors)
and, once there, |a| and |w~| both grow like exp(s g0(u*) t): the amplitude |a| |w~| grows like
exp(2 s g0(u*) t) (exactly for balanced particles; asymptotically for the Gaussian law, since
a^2 - |w~|^2 is conserved and the growing mode takes over).

Escape time. With sigma_a = sigma_w = sigma = m^((1 - gamma)/2) (gamma' = 0, docs/theory/phase-diagram.md) the initial
amplitudes are ~ sigma^2 = m^(1 - gamma), and the output f = (1/m) sum a relu(w~ . x~) is the mean
amplitude near u* times O(1) factors that do not depend on m. The loss leaves its plateau when
f = O(1), i.e. when sigma^2 exp(2 g0* t) = O(1):

    t_escape = ln(1/sigma^2) / (2 g0*) + const = (gamma - 1) ln m / (2 g0*) + const,

g0* = the largest s g0(u*) over the extremal vectors of both signs. ``escape_time_slope`` returns
the slope d t_escape / d ln m = (gamma - 1) / (2 g0*) (natural log of m).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from meanfield.particles.kernels import matmul

__all__ = ["amplitude_near_extremal", "escape_time_slope", "extremal_vectors",
           "extremal_vectors_circle", "g0", "predicted_escape_slope", "small_scale_condensation"]


def _inputs(x_aug, y, weights):
    x_aug = np.asarray(x_aug, float)
    if x_aug.ndim == 1:
        x_aug = x_aug[:, None]
    y = np.asarray(y, float).reshape(-1)
    if weights is None:
        weights = np.full(y.shape, 1.0 / y.shape[0])
    weights = np.asarray(weights, float).reshape(-1)
    if x_aug.shape[0] != y.shape[0] or weights.shape != y.shape:
        raise ValueError(f"x_aug {x_aug.shape}, y {y.shape}, weights {weights.shape} disagree")
    return x_aug, y, weights


def g0(u, x_aug, y, weights=None):
    """g0(u) = sum_i weight_i y_i relu(u . x~_i) at directions u (..., D) -> (...).

    Args:
        u: directions (need not be normalised; g0 is 1-homogeneous). x_aug: (n, D) inputs with the
        bias column appended if the model has a bias. y: (n,). weights: (n,) (default 1/n).
    """
    x_aug, y, weights = _inputs(x_aug, y, weights)
    return np.maximum(np.asarray(u, float) @ x_aug.T, 0.0) @ (weights * y)


def _dedupe(dirs, vals, tol):
    order = np.argsort(-vals)
    keep = []
    for i in order:
        if all(math.acos(min(1.0, max(-1.0, float(dirs[i] @ dirs[j])))) > tol for j in keep):
            keep.append(i)
    return dirs[keep], vals[keep]


def extremal_vectors(x_aug, y, weights=None, *, sign: int = 1, n_starts: int = 64, seed: int = 0,
                     n_iter: int = 3000, step: float = 0.2, final_step: float = 1e-7,
                     angle_tol: float = 1e-2,
                     min_value: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Local maximisers of sign * g0 on the unit sphere by multi-start projected gradient ascent.

    Each start u_0 (uniform on the sphere) follows u <- normalise(u + eta_k P_u grad(sign g0)),
    P_u the tangent projection, with normalised (sub)gradient steps of geometrically decreasing
    length from ``step`` to ``final_step`` (so ascent also converges to maximisers on a kink of
    the piecewise-linear g0, where the gradient does not vanish). End points within ``angle_tol`` radians are
    merged (the best value kept). Flat regions (zero gradient, value <= ``min_value``: e.g.
    directions active on no input) carry no growth and are dropped.

    Args:
        x_aug: (n, D) inputs, bias column appended when the model has a bias. y: (n,) labels.
        weights: (n,) sample weights (default 1/n). sign: +1 (positive output weights) or -1.
    Returns:
        (directions (k, D) unit vectors, values (k,) of sign * g0), sorted by decreasing value.
    """
    if sign not in (1, -1):
        raise ValueError("sign must be +1 or -1")
    x_aug, y, weights = _inputs(x_aug, y, weights)
    coef = jnp.asarray(sign * weights * y)
    xa = jnp.asarray(x_aug)

    def value(u):
        return matmul(jnp.maximum(matmul(xa, u), 0.0), coef)

    grad = jax.grad(value)

    def ascend(u):
        def body(k, u):
            g = grad(u)
            g = g - matmul(g, u) * u
            norm = jnp.linalg.norm(g)
            eta = step * (final_step / step) ** (k / n_iter)
            u = u + jnp.where(norm > 0, eta / jnp.where(norm > 0, norm, 1.0), 0.0) * g
            return u / jnp.linalg.norm(u)
        return jax.lax.fori_loop(0, n_iter, body, u)

    u0 = jax.random.normal(jax.random.PRNGKey(seed), (n_starts, x_aug.shape[1]), dtype=xa.dtype)
    u0 = u0 / jnp.linalg.norm(u0, axis=1, keepdims=True)
    u = np.asarray(jax.jit(jax.vmap(ascend))(u0))
    vals = np.asarray(jax.vmap(value)(jnp.asarray(u)))
    keep = vals > min_value
    if not keep.any():
        return np.zeros((0, x_aug.shape[1])), np.zeros(0)
    dirs, vals = _dedupe(u[keep], vals[keep], angle_tol)
    return dirs, vals


def extremal_vectors_circle(x_aug, y, weights=None, *, sign: int = 1, n_grid: int = 1 << 16,
                            min_value: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Exact local maximisers of sign * g0 on the circle (1-D inputs with bias, D = 2).

    Scans phi on a fine grid (u = (cos phi, sin phi), phi = atan2(b, w), the angle of the
    condensation plot of arXiv 2007.07497), takes the grid local maxima, and refines each exactly:
    on an arc with a fixed active set g0 = u . v_S, so the maximiser in the bracket is the angle
    of sign * v_S when it lies inside, else a kink (u . x~_i = 0); the best candidate is kept.

    Returns:
        (angles (k,) in (-pi, pi], values (k,)), sorted by decreasing value; directions are
        (cos, sin) of the angles.
    """
    x_aug, y, weights = _inputs(x_aug, y, weights)
    if x_aug.shape[1] != 2:
        raise ValueError("extremal_vectors_circle needs 2-D augmented inputs (1-D input + bias)")
    coef = sign * weights * y
    phi = np.linspace(-math.pi, math.pi, n_grid, endpoint=False)
    u = np.stack([np.cos(phi), np.sin(phi)], axis=1)
    vals = np.maximum(u @ x_aug.T, 0.0) @ coef
    left, right = np.roll(vals, 1), np.roll(vals, -1)
    is_max = (vals >= left) & (vals >= right) & ((vals > left) | (vals > right)) & (vals > min_value)
    kinks = np.concatenate([np.arctan2(x_aug[:, 0], -x_aug[:, 1]),
                            np.arctan2(-x_aug[:, 0], x_aug[:, 1])])
    h = 2 * math.pi / n_grid
    angles, values = [], []

    def value(a):
        return float(np.maximum(np.array([math.cos(a), math.sin(a)]) @ x_aug.T, 0.0) @ coef)

    for k in np.flatnonzero(is_max):
        lo, hi = phi[k] - 2 * h, phi[k] + 2 * h
        cands = [phi[k]]
        for c in kinks:
            c = lo + (c - lo) % (2 * math.pi)
            if c <= hi:
                cands.append(c)
        for probe in np.linspace(lo, hi, 9):
            pu = np.array([math.cos(probe), math.sin(probe)])
            active = (x_aug @ pu) > 0
            v = (coef * active) @ x_aug
            if np.linalg.norm(v) > 0:
                c = math.atan2(v[1], v[0])
                c = lo + (c - lo) % (2 * math.pi)
                if c <= hi:
                    cands.append(c)
        best = max(cands, key=value)
        angles.append(math.atan2(math.sin(best), math.cos(best)))
        values.append(value(best))
    if not angles:
        return np.zeros(0), np.zeros(0)
    angles, values = np.array(angles), np.array(values)
    dirs, values = _dedupe(np.stack([np.cos(angles), np.sin(angles)], 1), values, 4 * h)
    return np.arctan2(dirs[:, 1], dirs[:, 0]), values


def escape_time_slope(gamma: float, g_star: float) -> float:
    """d t_escape / d ln m = (gamma - 1) / (2 g0*) for sigma_a = sigma_w = m^((1-gamma)/2)
    (gamma' = 0); see the module docstring for the derivation."""
    if g_star <= 0:
        raise ValueError("g0* must be > 0 (no growing direction: no escape)")
    return (gamma - 1) / (2 * g_star)


def predicted_escape_slope(x_aug, y, weights=None, *, gamma: float, **kwargs) -> dict:
    """Extremal vectors of both signs, g0* (their largest value) and the escape-time slope."""
    out = {}
    for name, s in (("plus", 1), ("minus", -1)):
        dirs, vals = extremal_vectors(x_aug, y, weights, sign=s, **kwargs)
        out[f"directions_{name}"], out[f"values_{name}"] = dirs, vals
    g_star = max([v.max() for v in (out["values_plus"], out["values_minus"]) if len(v)],
                 default=0.0)
    out["g_star"] = float(g_star)
    out["slope"] = escape_time_slope(gamma, g_star) if g_star > 0 else math.inf
    return out


def _extremal_directions(x_aug, y, weights, sign: int) -> np.ndarray:
    """Unit extremal vectors (k, D) of ``sign * g0``: exact on the circle for D = 2."""
    if np.asarray(x_aug).shape[1] == 2:
        angles, _ = extremal_vectors_circle(x_aug, y, weights, sign=sign)
        return np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return extremal_vectors(x_aug, y, weights, sign=sign)[0]


def amplitude_near_extremal(a, w, x_aug, y, weights=None, *, angle_tol: float = 0.1) -> float:
    """Fraction of the amplitude sum |a_k| |w~_k| carried by neurons whose direction lies within
    ``angle_tol`` radians of an extremal vector of their own sign (a > 0: maximisers of g0,
    a < 0: of -g0; arXiv 2007.07497's initial condensation).

    Args:
        a: (m,) output weights, w: (m, D) input weights with the bias last; x_aug: (n, D),
        y: (n,), weights: (n,) (default 1/n).
    """
    a, w = np.asarray(a, float), np.asarray(w, float)
    norm = np.linalg.norm(w, axis=1)
    amp = np.abs(a) * norm
    u = w / np.where(norm > 0, norm, 1.0)[:, None]
    near = np.zeros(a.shape, bool)
    for sign in (1, -1):
        dirs = _extremal_directions(x_aug, y, weights, sign)
        if len(dirs):
            gap = np.arccos(np.clip(u @ dirs.T, -1.0, 1.0)).min(axis=1)
            near |= (np.sign(a) == sign) & (gap <= angle_tol)
    total = amp.sum()
    return float(amp[near].sum() / total) if total > 0 else 0.0


def small_scale_condensation(config, *, level: float = 0.95, angle_tol: float = 0.1,
                             max_steps: int = 100_000) -> dict:
    """The small-initialisation prediction of initial condensation at the config's finite m.

    While the output is still ~0 every particle moves in the frozen field of the *initial*
    residuals (module docstring): the motion is the exact hyperbolic rotation of
    ``meanfield.particles.flow`` with ReLU face events, no feedback of f on the residuals. This evolves
    the config's own initial particles (same seed) in that frozen field until the training loss
    (computed from the frozen-field particles) falls to ``level`` times its initial value, then
    reports the time and the amplitude fraction near the extremal vectors. It is independent of
    the full nonlinear run and tells what the theory itself predicts at this width and scale.

    Returns:
        dict with ``t_level`` (time of the level crossing, refined by bisection on the exact
        motion), ``fraction`` (``amplitude_near_extremal`` there), ``steps``.
    """
    from meanfield.setup import prepare  # lazy: limits are imported by meanfield/__init__
    import meanfield.particles as pt
    from meanfield.particles.integrators import motion_pass

    if not 0 < level < 1:
        raise ValueError(f"level={level!r} must lie in (0, 1)")
    problem, particles, _, dtype = prepare(config)
    flow = pt.AdaptiveFlow()  # the run's default mass floor and face safety (Python floats)
    band_eps = pt.default_band_eps(dtype)
    f0 = pt.network_output(particles, problem.x, problem.inv_width, problem.n_chunks)
    r0 = pt.residuals(problem, f0)
    target = level * float(pt.risk(problem, f0))
    amp = np.abs(np.asarray(particles.a)) * np.linalg.norm(np.asarray(particles.w), axis=1)
    floor = jnp.asarray(flow.mass_rel * amp.sum() / config.model.width, dtype)

    @jax.jit
    def move(p, h):
        new, f, diag = motion_pass(problem, p, r0, h, band_eps, floor)
        return new, pt.risk(problem, f), jnp.min(diag["tau2"]), jnp.max(diag["g"])

    _, _, tau2, g = move(particles, jnp.asarray(0.0, dtype))
    t, p = 0.0, particles
    for step in range(max_steps):
        h = min(flow.controller.face_safety * float(tau2), 0.5 / max(float(g), 1e-30))
        new, loss, tau2_new, g_new = move(p, jnp.asarray(h, dtype))
        if float(loss) <= target:
            lo, hi = 0.0, h
            for _ in range(40):  # the motion is exact: bisect the crossing inside the step
                mid = 0.5 * (lo + hi)
                lo, hi = (lo, mid) if float(move(p, jnp.asarray(mid, dtype))[1]) <= target else (mid, hi)
            p = move(p, jnp.asarray(hi, dtype))[0]
            t += hi
            break
        t, p, tau2, g = t + h, new, tau2_new, g_new
    else:
        raise RuntimeError(f"loss did not reach {level} x its initial value in {max_steps} steps")
    m = config.model.width
    x_aug = config.data.augmented(config.data.x, config.model.bias)
    fraction = amplitude_near_extremal(np.asarray(p.a)[:m], np.asarray(p.w)[:m], x_aug,
                                       config.data.y, config.data.weights, angle_tol=angle_tol)
    return {"t_level": t, "fraction": fraction, "steps": step + 1}
