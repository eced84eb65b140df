"""Reference kernels kept only to check (and benchmark) the production ones.

``move_particle_reference`` is the previous per-particle motion kernel of
``meanfield.particles.flow`` (docs/theory/model.md): two ``sinh`` per free motion, 12
safeguarded Newton iterations per face time, every branch evaluated for every particle.
``tests/test_flow.py`` checks ``move_particle`` / ``move_particles`` against it and
``benchmarks/bench_flow.py`` times it. Not part of the installed package.
"""

import jax
import jax.numpy as jnp


def sinhc(x):
    """sinh(x)/x, accurate at 0."""
    small = jnp.abs(x) < 1e-3
    safe = jnp.where(small, 1.0, x)
    return jnp.where(small, 1.0 + x * x / 6.0, jnp.sinh(safe) / safe)


def free_motion_reference(a, w, field, t, trainable: bool):
    """``free_motion`` of the reference kernel (two sinh per call)."""
    if not trainable:
        phi = -a * t
        return a, w + phi * field, phi
    g = jnp.sqrt(field @ field)
    gw = field @ w
    s1 = sinhc(g * t)
    s2 = sinhc(0.5 * g * t)
    phi = -a * t * s1 + 0.5 * t * t * s2 * s2 * gw
    da = 0.5 * a * (g * t) ** 2 * s2 * s2 - gw * t * s1
    return a + da, w + phi * field, phi


def face_time_reference(a, w, field, phi_star, h, trainable: bool, iterations: int = 12):
    """Newton's method safeguarded by bisection on the bracket [0, h], fixed iterations."""
    f_lo = -phi_star  # phi(0) - phi_star

    def body(_, carry):
        t, lo, hi = carry
        a_t, _, phi = free_motion_reference(a, w, field, t, trainable)
        rate = -a_t
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


def move_particle_reference(a, w, x, xx, residual, h, band_eps, mass_floor, trainable: bool):
    """The previous kernel, same contract as ``meanfield.particles.flow.move_particle``."""
    dtype = w.dtype
    inf = jnp.asarray(jnp.inf, dtype)
    z0 = x @ w
    band = band_eps * jnp.sqrt(w @ w) * jnp.sqrt(xx)
    in_band = jnp.abs(z0) <= band
    strict = z0 > band

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

    x_field = x @ field
    a_h, w_h, phi_h = free_motion_reference(a, w, field, h, trainable)
    z_h = z0 + phi_h * x_field
    crossed = ~in_band & ((z0 > 0) != (z_h > 0)) & (x_field != 0)
    target = -z0 / jnp.where(x_field == 0, 1.0, x_field)
    face = jnp.argmin(jnp.where(crossed, jnp.abs(target), inf))
    has_event = jnp.any(crossed)

    tau = face_time_reference(a, w, field, target[face], h, trainable)
    a_e, w_e, _ = free_motion_reference(a, w, field, tau, trainable)
    x_e, xx_e, r_e = x[face], xx[face], residual[face]
    w_e = w_e - (x_e @ w_e / xx_e) * x_e
    was_active = active[face].astype(dtype)
    field_without = field - was_active * r_e * x_e
    g_dot = field_without @ x_e
    rate_minus, rate_plus = -a_e * g_dot, -a_e * (g_dot + r_e * xx_e)
    slide_e = (rate_minus > 0) & (rate_plus < 0)
    field_after = jnp.where(
        slide_e,
        field_without - (field_without @ x_e / xx_e) * x_e,
        field_without + (1.0 - was_active) * r_e * x_e,
    )
    a_2, w_2, _ = free_motion_reference(a_e, w_e, field_after, h - tau, trainable)

    a_new = jnp.where(has_event, a_2, a_h)
    w_new = jnp.where(has_event, w_2, w_h)
    last_field = jnp.where(has_event, field_after, field)

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
