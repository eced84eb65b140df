"""Exact motion of one particle in a frozen residual field, with ReLU face events.

With the residual vector R frozen and the activation pattern fixed, a particle obeys the
linear ODE (DESIGN A1)::

    da/dt = -w . G,    dw/dt = -a G,    G = sum_{j active} R_j x_j

whose exact solution is a hyperbolic rotation in the (a, w . G/|G|) plane (for a frozen mark
a it is the straight line w - a G t). Every margin then moves along one scalar curve,
``z_j(t) = z_j(0) + phi(t) (x_j . G)``, so the first activation face a particle meets inside a
step is found by a safeguarded Newton solve of ``phi(tau) = -z_j / (x_j . G)``. At the face the
Filippov rule decides (arXiv 2305.12467 needs it: surviving negatives ride the face
w . x_+ = 0): if both one-sided fields push into the face the particle slides along it with the
field projected onto the face; otherwise it crosses and continues in the new pattern.

A particle that starts a step on a face (inside a band of ``band_eps |w| |x_j|``) is snapped
onto it and slides, leaves, or keeps its side by the same rule. The step-size bound that
keeps each particle to at most one new face per step is ``tau2``: the linearised time to the
second-nearest face not being slid on.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _sinhc(x):
    """sinh(x)/x, accurate at 0."""
    small = jnp.abs(x) < 1e-3
    safe = jnp.where(small, 1.0, x)
    return jnp.where(small, 1.0 + x * x / 6.0, jnp.sinh(safe) / safe)


def free_motion(a, w, field, t, trainable: bool):
    """Exact motion for time t in the constant field G with a fixed pattern.

    Args:
        a: (), w: (D,), field: G (D,), t: () elapsed time.
        trainable: frozen marks keep a and move w on a straight line.
    Returns:
        (a(t), w(t), phi(t)) with w(t) = w + phi(t) G. Zero field leaves (a, w) bit-exact.
    """
    if not trainable:
        phi = -a * t
        return a, w + phi * field, phi
    g = jnp.sqrt(field @ field)
    gw = field @ w
    s1 = _sinhc(g * t)
    s2 = _sinhc(0.5 * g * t)
    phi = -a * t * s1 + 0.5 * t * t * s2 * s2 * gw
    da = 0.5 * a * (g * t) ** 2 * s2 * s2 - gw * t * s1
    return a + da, w + phi * field, phi


def _phi_and_rate(a, w, field, t, trainable: bool):
    """phi(t) of ``free_motion`` and dphi/dt = -a(t)."""
    a_t, _, phi = free_motion(a, w, field, t, trainable)
    return phi, -a_t


def face_time(a, w, field, phi_star, h, trainable: bool, iterations: int = 12):
    """Time tau in [0, h] at which phi(tau) = phi_star (a sign change is known on [0, h]).

    Newton's method safeguarded by bisection on the bracket; exact after one iteration for
    frozen marks (phi is linear).
    """
    f_lo = -phi_star  # phi(0) - phi_star

    def body(_, carry):
        t, lo, hi = carry
        phi, rate = _phi_and_rate(a, w, field, t, trainable)
        resid = phi - phi_star
        same = jnp.sign(resid) == jnp.sign(f_lo)
        lo = jnp.where(same, t, lo)
        hi = jnp.where(same, hi, t)
        safe_rate = jnp.where(rate == 0, 1.0, rate)
        newton = t - resid / safe_rate
        ok = (rate != 0) & (newton >= lo) & (newton <= hi)
        t_next = jnp.where(ok, newton, 0.5 * (lo + hi))
        return jnp.where(resid == 0, t, t_next), lo, hi

    safe_a = jnp.where(a == 0, 1.0, a)
    t0 = jnp.clip(-phi_star / safe_a, 0.0, h)
    t, _, _ = jax.lax.fori_loop(0, iterations, body, (t0, jnp.zeros_like(h), h))
    return jnp.clip(t, 0.0, h)


def _one_sided_rates(a, field_without, x_j, xx_j, r_j):
    """Normal rates dz_j/dt on the inactive (-) and active (+) side of face j."""
    g_dot = field_without @ x_j
    return -a * g_dot, -a * (g_dot + r_j * xx_j)


def move_particle(a, w, x, xx, residual, h, band_eps, mass_floor, trainable: bool):
    """Advance one particle by h in the frozen field of ``residual``.

    Args:
        a: (), w: (D,) the particle; x: (n, D) distinct inputs; xx: (n,) |x_j|^2;
        residual: (n,) frozen aggregated residuals R; h: () step;
        band_eps: relative half-width of the face band; mass_floor: particles with
            |a| |w| below it do not bound the step.
        trainable: whether a moves.
    Returns:
        a_new (), w_new (D,), contribution a relu(x w) (n,) at the new position,
        tau2 () linearised time to the second face, g () |G| of the last field used,
        amplitude () |a| |w| at the new position.
    """
    dtype = w.dtype
    inf = jnp.asarray(jnp.inf, dtype)
    z0 = x @ w
    band = band_eps * jnp.sqrt(w @ w) * jnp.sqrt(xx)
    in_band = jnp.abs(z0) <= band
    strict = z0 > band

    # Particles starting on a face: slide, leave upwards, leave downwards, or keep their side.
    field_strict = (residual * strict) @ x
    x_field = x @ field_strict
    n_minus = -a * x_field
    n_plus = -a * (x_field + residual * xx)
    slide_candidate = in_band & (n_minus > 0) & (n_plus < 0)
    up = in_band & (n_minus > 0) & (n_plus >= 0)
    down = in_band & (n_minus <= 0) & (n_plus < 0)
    score = jnp.where(slide_candidate, n_minus - n_plus, -inf)
    slide_face = jnp.argmax(score)
    sliding = jnp.any(slide_candidate)
    keep_side = in_band & ~up & ~down & (z0 > 0)
    active = strict | up | keep_side
    active = active & ~(sliding & (jnp.arange(x.shape[0]) == slide_face))

    field = (residual * active) @ x
    x_s, xx_s = x[slide_face], xx[slide_face]
    field = jnp.where(sliding, field - (field @ x_s / xx_s) * x_s, field)
    w = jnp.where(sliding, w - (z0[slide_face] / xx_s) * x_s, w)
    z0 = jnp.where(sliding, x @ w, z0)

    # Free motion over the whole step, then the first face crossed (if any).
    x_field = x @ field
    a_h, w_h, phi_h = free_motion(a, w, field, h, trainable)
    z_h = z0 + phi_h * x_field
    crossed = ~in_band & ((z0 > 0) != (z_h > 0)) & (x_field != 0)
    target = -z0 / jnp.where(x_field == 0, 1.0, x_field)
    face = jnp.argmin(jnp.where(crossed, jnp.abs(target), inf))
    has_event = jnp.any(crossed)

    tau = face_time(a, w, field, target[face], h, trainable)
    a_e, w_e, _ = free_motion(a, w, field, tau, trainable)
    x_e, xx_e, r_e = x[face], xx[face], residual[face]
    w_e = w_e - (x_e @ w_e / xx_e) * x_e
    was_active = active[face].astype(dtype)
    field_without = field - was_active * r_e * x_e
    rate_minus, rate_plus = _one_sided_rates(a_e, field_without, x_e, xx_e, r_e)
    slide_e = (rate_minus > 0) & (rate_plus < 0)
    field_after = jnp.where(
        slide_e,
        field_without - (field_without @ x_e / xx_e) * x_e,
        field_without + (1.0 - was_active) * r_e * x_e,
    )
    a_2, w_2, _ = free_motion(a_e, w_e, field_after, h - tau, trainable)

    a_new = jnp.where(has_event, a_2, a_h)
    w_new = jnp.where(has_event, w_2, w_h)
    last_field = jnp.where(has_event, field_after, field)

    # Step bound for the next step: linearised time to the second face not in the band.
    z_new = x @ w_new
    band_new = band_eps * jnp.sqrt(w_new @ w_new) * jnp.sqrt(xx)
    rate = -a_new * (x @ last_field)
    approaching = (jnp.abs(z_new) > band_new) & (z_new * rate < 0)
    times = jnp.where(approaching, -z_new / jnp.where(rate == 0, 1.0, rate), inf)
    first = jnp.argmin(times)
    tau2 = jnp.min(jnp.where(jnp.arange(x.shape[0]) == first, inf, times))
    amplitude = jnp.abs(a_new) * jnp.sqrt(w_new @ w_new)
    tau2 = jnp.where(amplitude >= mass_floor, tau2, inf)
    g = jnp.sqrt(last_field @ last_field)
    contribution = a_new * jax.nn.relu(z_new)
    return a_new, w_new, contribution, tau2, g, amplitude
