"""Exact motion of particles in a frozen residual field, with ReLU face events.

With the residual vector R frozen and the activation pattern fixed, a particle obeys the
linear ODE (docs/theory/model.md, arXiv 2007.07497)::

    da/dt = -w . G,    dw/dt = -a G,    G = sum_{j active} R_j x_j

whose exact solution is a hyperbolic rotation in the (a, w . G/|G|) plane (for a frozen mark
a it is the straight line w - a G t). Every margin then moves along one scalar curve,
``z_j(t) = z_j(0) + phi(t) (x_j . G)``, and with s = |G| t, u = expm1(s)::

    phi(t) = -a sinh(s)/|G| + (G . w)(cosh(s) - 1)/|G|^2
    sinh(s) = u (2 + u) / (2 (1 + u)),    cosh(s) - 1 = u^2 / (2 (1 + u))

(one ``expm1`` and no cancellation for s >= 0). The first activation face a particle meets
inside a step solves ``phi(tau) = -z_j / (x_j . G)``, which is a quadratic equation in
u = expm1(|G| tau), solved in closed form. At the face the Filippov rule decides
(arXiv 2305.12467 needs it: surviving negatives ride the face w . x_+ = 0): if both one-sided
fields push into the face the particle slides along it with the field projected onto the face;
otherwise it crosses and continues in the new pattern.

A particle that starts a step on a face (inside a band of ``band_eps |w| |x_j|``) is snapped
onto it and slides, leaves, or keeps its side by the same rule. The step-size bound that
keeps each particle to at most one new face per step is ``tau2``: the linearised time to the
second-nearest face not being slid on.

``move_particle`` moves one particle; ``move_particles`` moves all of them, equal to it to
rounding but several times faster (benchmarks/bench_flow.py): every particle takes a fast
step (margins, the field of its strict faces and its products x_j . G, hyperbolic motion: the
per-input work of an Euler pass), and only the few particles in a face band or with a face
event (~1% in the Luo runs) are gathered in blocks and redone with the full step. The
previous kernel (two ``sinh`` per motion, 12 safeguarded Newton iterations per face time,
every branch for every particle) lives in ``tests/reference_kernels.py`` for the equivalence
test and the benchmark.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from meanfield.particles import sharding
from meanfield.particles.kernels import (Particles, chunk_partials, matmul,
                                         neuron_preactivation, ordered_sum)

# Widest D whose products with the inputs are multiply-adds (``neuron_preactivation``): the
# motion pass gains from them up to a wider D than the Euler pass (adaptive steps at
# m = 1e4, n = 100, float32: multiply-adds 1.4x faster at D = 5, 1.1x at D = 8; a dot 1.4x
# faster at D = 11, 2.1-2.6x at D = 21; benchmarks/bench_engine.py --input-dim).
FLOW_MULTIPLY_ADD_MAX_DIM = 8


def _preactivation(w, x):
    """x_j . w for every input, shape (n,) (``neuron_preactivation``)."""
    return neuron_preactivation(w, x, FLOW_MULTIPLY_ADD_MAX_DIM)


def _second_smallest(v):
    """Second smallest entry of v (k,) counted with multiplicity (inf if k < 2)."""
    first = jnp.min(v)
    ties = jnp.sum(v == first)
    return jnp.where(ties >= 2, first, jnp.min(jnp.where(v == first, jnp.inf, v)))


# ----------------------------------------------------------------------------- one field

def _hyperbolic_terms(s):
    """(sinh(s)/s, (cosh(s) - 1)/s^2) for s >= 0 from one ``expm1``; (1, 1/2) at s = 0."""
    u = jnp.expm1(s)
    ratio = jnp.where(s == 0, 1.0, u / jnp.where(s == 0, 1.0, s))  # expm1(s)/s
    inv = 1.0 / (1.0 + u)
    return 0.5 * ratio * ((2.0 + u) * inv), 0.5 * ratio * (ratio * inv)


def _motion(a, gw, g, t, trainable: bool):
    """Exact (a(t), phi(t)) in a constant field (module docstring), all arguments scalars.

    Args:
        a: mark or output weight, gw: G . w, g: |G|, t: elapsed time (>= 0).
    """
    if not trainable:
        return a, -a * t
    s = g * t
    sinhc, coshc = _hyperbolic_terms(s)
    phi = t * (gw * t * coshc - a * sinhc)
    return a + (a * s * s * coshc - gw * t * sinhc), phi


def free_motion(a, w, field, t, trainable: bool):
    """Exact motion for time t in the constant field G with a fixed pattern.

    Args:
        a: (), w: (D,), field: G (D,), t: () elapsed time (>= 0).
        trainable: frozen marks keep a and move w on a straight line.
    Returns:
        (a(t), w(t), phi(t)) with w(t) = w + phi(t) G. Zero field leaves (a, w) bit-exact.
    """
    g = jnp.sqrt(matmul(field, field))
    a_t, phi = _motion(a, matmul(field, w), g, t, trainable)
    return a_t, w + phi * field, phi


def _log1p_ratio(u):
    """log1p(u)/u, 1 at u = 0."""
    return jnp.where(u == 0, 1.0, jnp.log1p(u) / jnp.where(u == 0, 1.0, u))


def _face_time(a, gw, g, phi_star, h, trainable: bool):
    """Root tau in [0, h] of phi(tau) = phi_star (a sign change is known on [0, h]).

    With A = -a, B = G . w / |G|, C = |G| phi_star, phi(tau) = phi_star reads
    A sinh(s) + B (cosh(s) - 1) = C, s = |G| tau, i.e. (A + B) u^2 + 2 (A - C) u - 2 C = 0 in
    u = expm1(s). The root near u = 0 is 2C/D with D = (A - C) + sign(A - C) sqrt(disc), so
    tau = (2 phi_star / D) log1p(u)/u needs no division by |G|; the other root is -D/(A + B).
    Of the two, the one in [0, h] is returned (the nearest to it under rounding).
    """
    if not trainable:  # phi = -a t
        return jnp.clip(-phi_star / jnp.where(a == 0, 1.0, a), 0.0, h)
    safe_g = jnp.where(g == 0, 1.0, g)
    big_a, c = -a, g * phi_star
    alpha, beta = big_a + gw / safe_g, big_a - c
    disc = jnp.maximum(beta * beta + 2.0 * c * alpha, 0.0)
    d = beta + jnp.where(beta < 0, -1.0, 1.0) * jnp.sqrt(disc)
    safe_d = jnp.where(d == 0, 1.0, d)
    near = (2.0 * phi_star / safe_d) * _log1p_ratio(2.0 * c / safe_d)
    u_far = -d / jnp.where(alpha == 0, 1.0, alpha)
    has_far = (alpha != 0) & (g > 0) & (u_far > -1.0)
    far = jnp.where(has_far, jnp.log1p(jnp.where(has_far, u_far, 0.0)) / safe_g, jnp.inf)

    def outside(t):  # distance of t to [0, h]; inf for nan
        dist = jnp.maximum(jnp.maximum(-t, t - h), 0.0)
        return jnp.where(jnp.isnan(dist), jnp.inf, dist)

    tau = jnp.where(outside(far) < outside(near), far, near)
    return jnp.clip(jnp.where(jnp.isnan(tau), h, tau), 0.0, h)


def face_time(a, w, field, phi_star, h, trainable: bool):
    """Time tau in [0, h] at which phi(tau) = phi_star (a sign change is known on [0, h]).

    Closed form (a quadratic in expm1(|G| tau), see ``_face_time``); exact for frozen marks
    (phi is linear).

    Args:
        a: (), w: (D,), field: G (D,), phi_star: () target value of phi, h: () step.
        trainable: whether a moves.
    Returns:
        tau ().
    """
    g = jnp.sqrt(matmul(field, field))
    return _face_time(a, matmul(field, w), g, phi_star, h, trainable)


def _one_sided_rates(a, field_without, x_j, xx_j, r_j):
    """Normal rates dz_j/dt on the inactive (-) and active (+) side of face j."""
    g_dot = matmul(field_without, x_j)
    return -a * g_dot, -a * (g_dot + r_j * xx_j)


# ----------------------------------------------------------------------------- one particle

def _margins(w, x, xx, band_eps):
    """(z (n,) margins x_j . w, in_band (n,) within ``band_eps |w| |x_j|`` of face j,
    strict (n,) active beyond the band)."""
    z = _preactivation(w, x)
    band = band_eps * jnp.sqrt(matmul(w, w)) * jnp.sqrt(xx)
    return z, jnp.abs(z) <= band, z > band


def _masked_field(mask, residual, x):
    """(G (D,), x_j . G (n,)) of the field G = sum_{j in mask} R_j x_j.

    Two products of length D per input (the inputs' Gram matrix would cost n); x_j . G
    is formed like the margins (``_preactivation``: vmapped and up to
    D = ``FLOW_MULTIPLY_ADD_MAX_DIM``, one loop fusion with the (particles, n) layout of the
    margins rather than a dot with a width-D contraction).
    """
    field = matmul(jnp.where(mask, residual, 0.0), x)
    return field, _preactivation(field, x)


class _Start(NamedTuple):
    """A particle at the start of a step, after the band rule (shapes for one particle)."""

    w: jax.Array  # (D,) position, snapped onto the face it slides on
    z: jax.Array  # (n,) margins x_j . w
    in_band: jax.Array  # (n,) bool, faces the particle started on
    active: jax.Array  # (n,) bool, faces whose residual enters the field
    field: jax.Array  # (D,) G, projected onto the slide face
    x_field: jax.Array  # (n,) x_j . G
    g: jax.Array  # () |G|
    gw: jax.Array  # () G . w

    @classmethod
    def of(cls, w, z, in_band, active, field, x_field):
        """The start with |G| and G . w computed from ``field`` and ``w``."""
        return cls(w=w, z=z, in_band=in_band, active=active, field=field, x_field=x_field,
                   g=jnp.sqrt(matmul(field, field)), gw=matmul(field, w))


class _Moved(NamedTuple):
    """A particle at the end of a step (shapes for one particle)."""

    a: jax.Array  # ()
    w: jax.Array  # (D,)
    z: jax.Array  # (n,) margins x_j . w
    x_field: jax.Array  # (n,) x_j . G of the last field used
    g: jax.Array  # () |G| of the last field used


def _start(a, w, x, xx, residual, band_eps) -> _Start:
    """Band rule: particles on a face slide, leave upwards, leave downwards, or keep their side.

    Args:
        a: (), w: (D,); x: (n, D); xx: (n,) |x_j|^2; residual: (n,); band_eps: relative
            half-width of the face band.
    Returns:
        ``_Start``, with the field and the position projected onto the face slid on.
    """
    z, in_band, strict = _margins(w, x, xx, band_eps)
    field_strict, x_strict = _masked_field(strict, residual, x)
    n_minus = -a * x_strict
    n_plus = -a * (x_strict + residual * xx)
    slide_candidate = in_band & (n_minus > 0) & (n_plus < 0)
    up = in_band & (n_minus > 0) & (n_plus >= 0)
    down = in_band & (n_minus <= 0) & (n_plus < 0)
    score = jnp.where(slide_candidate, n_minus - n_plus, -jnp.inf)
    slide = (jnp.arange(score.shape[0]) == jnp.argmax(score)) & slide_candidate
    keep_side = in_band & ~up & ~down & (z > 0)
    # The faces of the band join the strict ones (no strict face is in the band): zero terms
    # for a particle in no band, which has the fast step's field exactly.
    active_band = (up | keep_side) & ~slide
    field_band, x_band = _masked_field(active_band, residual, x)
    field, x_field = field_strict + field_band, x_strict + x_band
    # Onto face s: zero terms unless sliding.
    x_s = matmul(slide.astype(x.dtype), x)
    gram_s = _preactivation(x_s, x)
    # The face's entries are picked before dividing: divided by the whole vector xx (the
    # same in every step), XLA may turn the division into a product with 1/xx in one
    # compiled program and not in another, and a sharded run would then round differently.
    xx_s = jnp.sum(jnp.where(slide, xx, 0.0)) + (1.0 - jnp.any(slide))  # 1 if none slides
    field_ratio = jnp.sum(jnp.where(slide, x_field, 0.0)) / xx_s  # G . x_s / |x_s|^2
    snap_ratio = jnp.sum(jnp.where(slide, z, 0.0)) / xx_s  # w . x_s / |x_s|^2
    return _Start.of(w=w - snap_ratio * x_s, z=z - snap_ratio * gram_s, in_band=in_band,
                     active=strict | active_band, field=field - field_ratio * x_s,
                     x_field=x_field - field_ratio * gram_s)


def _advance(a, start: _Start, h, trainable: bool):
    """(moved, crossed (n,) bool): the step in the start's field without face events."""
    a_h, phi = _motion(a, start.gw, start.g, h, trainable)
    z_h = start.z + phi * start.x_field
    crossed = ~start.in_band & ((start.z > 0) != (z_h > 0)) & (start.x_field != 0)
    moved = _Moved(a=a_h, w=start.w + phi * start.field, z=z_h, x_field=start.x_field,
                   g=start.g)
    return moved, crossed


# A particle that crosses a face is placed this fraction of the face band inside its new side
# (rather than on the face up to rounding), so that the side it is on is the one the Filippov
# rule chose and not the sign of a rounding error (a particle that dies on a face stays dead).
_SIDE_FRACTION = 0.125


def _filippov_slides(a_e, field, field_without, x_e, xx_e, r_e, band_eps):
    """Whether both one-sided fields push into face e (then the particle slides on it).

    Rates within ``band_eps`` of the size of their terms count as zero: a particle whose only
    active face is e has field_without = 0 up to the rounding of ``field - r_e x_e`` (fused
    multiply-adds make it nonzero), and it crosses (dies) rather than slides.
    """
    rate_minus, rate_plus = _one_sided_rates(a_e, field_without, x_e, xx_e, r_e)
    norm_x = jnp.sqrt(xx_e)
    field_norm = jnp.sqrt(matmul(field, field))
    tol = band_eps * jnp.abs(a_e) * (field_norm + jnp.abs(r_e) * norm_x) * norm_x
    return (rate_minus > tol) & (rate_plus < -tol)


def _event_step(a, start: _Start, crossed, x, xx, residual, h, band_eps,
                trainable: bool) -> _Moved:
    """The step through the first face crossed (Filippov: slide on it or cross it)."""
    target = -start.z / jnp.where(start.x_field == 0, 1.0, start.x_field)
    face = jnp.argmin(jnp.where(crossed, jnp.abs(target), jnp.inf))
    tau = _face_time(a, start.gw, start.g, target[face], h, trainable)
    a_e, phi_e = _motion(a, start.gw, start.g, tau, trainable)
    w_e = start.w + phi_e * start.field
    x_e, xx_e, r_e = x[face], xx[face], residual[face]
    was_active = start.active[face].astype(w_e.dtype)
    field_without = start.field - was_active * r_e * x_e
    slide_e = _filippov_slides(a_e, start.field, field_without, x_e, xx_e, r_e, band_eps)
    side = jnp.where(slide_e, 0.0, 1.0 - 2.0 * was_active)  # -1: crossed into inactive
    margin = side * _SIDE_FRACTION * band_eps * jnp.sqrt(matmul(w_e, w_e) * xx_e)
    w_e = w_e - ((matmul(x_e, w_e) - margin) / xx_e) * x_e
    field_after = jnp.where(
        slide_e,
        field_without - (matmul(field_without, x_e) / xx_e) * x_e,
        field_without + (1.0 - was_active) * r_e * x_e,
    )
    a_2, w_2, _ = free_motion(a_e, w_e, field_after, h - tau, trainable)
    return _Moved(a=a_2, w=w_2, z=_preactivation(w_2, x),
                  x_field=_preactivation(field_after, x),
                  g=jnp.sqrt(matmul(field_after, field_after)))


def _full_step(a, w, x, xx, residual, h, band_eps, trainable: bool):
    """(moved, has_event): the exact step, event branch included."""
    start = _start(a, w, x, xx, residual, band_eps)
    free, crossed = _advance(a, start, h, trainable)
    has_event = jnp.any(crossed)
    event = _event_step(a, start, crossed, x, xx, residual, h, band_eps, trainable)
    return jax.tree.map(lambda e, f: jnp.where(has_event, e, f), event, free), has_event


def _finish(moved: _Moved, xx, band_eps, mass_floor):
    """(contribution a relu(z) (n,), tau2 (), amplitude ()) at the end of a step.

    tau2: linearised time to the second face not in the band (inf for particles with
    amplitude |a| |w| below ``mass_floor``).
    """
    norm_w = jnp.sqrt(matmul(moved.w, moved.w))
    rate = -moved.a * moved.x_field
    approaching = (jnp.abs(moved.z) > band_eps * norm_w * jnp.sqrt(xx)) & (moved.z * rate < 0)
    times = jnp.where(approaching, -moved.z / jnp.where(rate == 0, 1.0, rate), jnp.inf)
    amplitude = jnp.abs(moved.a) * norm_w
    tau2 = jnp.where(amplitude >= mass_floor, _second_smallest(times), jnp.inf)
    return moved.a * jax.nn.relu(moved.z), tau2, amplitude


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
    moved, _ = _full_step(a, w, x, xx, residual, h, band_eps, trainable)
    contribution, tau2, amplitude = _finish(moved, xx, band_eps, mass_floor)
    return moved.a, moved.w, contribution, tau2, moved.g, amplitude


# ----------------------------------------------------------------------------- all particles

def default_event_block(m_pad: int, chunk: int | None = None) -> int:
    """Particles per block of the redo pass: m_pad/128, at least 64; all of them (no redo
    pass: the full step for everyone) if the chunks hold at most 256 particles.

    Particles in a face band or with a face event are few (~0.1-1% per step in the Luo runs, a
    few percent at times); more than a block are redone in further blocks. The choice of the
    full step depends on the chunk (``m_pad`` itself if None), not on ``m_pad``, which grows
    with the padding chunks of a particle mesh: the sums over particles are then the same on
    any number of devices.
    """
    return m_pad if (m_pad if chunk is None else chunk) <= 256 else max(64, m_pad // 128)


OUTPUTS = ("total", "step", "all")


class Motion(NamedTuple):
    """Result of ``move_particles`` (fields not asked for are None).

    total: (n,) sum_k a_k relu(x_j . w_k) at the new positions (outputs "total", "step", "all").
    a, w: (m_pad,), (m_pad, D) the new particles ("step", "all").
    tau2_min: () min over particles of tau2, the step bound; g_max: () max |G| of the last
        fields; amplitude_sum: () sum of |a| |w| at the new positions ("step", "all").
    tau2, g, amplitude: (m_pad,) the same per particle ("all").
    """

    total: jax.Array
    a: jax.Array | None = None
    w: jax.Array | None = None
    tau2_min: jax.Array | None = None
    g_max: jax.Array | None = None
    amplitude_sum: jax.Array | None = None
    tau2: jax.Array | None = None
    g: jax.Array | None = None
    amplitude: jax.Array | None = None


def move_particles(a, w, x, xx, residual, h, band_eps, mass_floor, trainable: bool, *,
                   n_chunks: int, outputs: str = "all", event_block: int | None = None):
    """Advance all particles by h in the frozen field of ``residual``.

    Equal to ``vmap(move_particle)`` to rounding. Every particle takes the fast step (field
    of its strict faces and hyperbolic motion), chunk by chunk; the few particles in a face
    band or with a face event are then gathered ``event_block`` at a time and redone with the
    full step.

    Args:
        a: (m_pad,), w: (m_pad, D) the particles; x, xx, residual, h, band_eps, mass_floor,
            trainable as in ``move_particle``.
        n_chunks: static number of chunks of the fast step (divides m_pad).
        outputs: "total" (the contribution only), "step" (also the new particles and the
            reduced step bounds) or "all" (also the per-particle diagnostics); see ``Motion``.
        event_block: static block size of the redo pass (default
            ``default_event_block(m_pad)``; ``>= m_pad`` runs the full step on everyone).
    Returns:
        ``Motion``.
    """
    if outputs not in OUTPUTS:
        raise ValueError(f"outputs={outputs!r} must be one of {OUTPUTS}")
    m_pad = a.shape[0]
    block = (default_event_block(m_pad, m_pad // max(n_chunks, 1)) if event_block is None
             else event_block)
    if not isinstance(block, int) or block < 1:
        raise ValueError(f"event_block={event_block!r} must be a positive integer")
    if not isinstance(n_chunks, int) or n_chunks < 1 or m_pad % n_chunks:
        raise ValueError(f"n_chunks={n_chunks!r} must be a positive integer dividing "
                         f"m_pad={m_pad}")
    if sharding.mesh_size():  # particle mesh: every device moves (and redoes) its own shard
        out, partials = _move_per_shard(a, w, x, xx, residual, h, band_eps, mass_floor,
                                        trainable, n_chunks=n_chunks, outputs=outputs,
                                        block=block)
    else:
        out, partials = _move_chunks(a, w, x, xx, residual, h, band_eps, mass_floor,
                                     trainable, n_chunks=n_chunks, outputs=outputs,
                                     block=block, redo=block < m_pad)
    total, summary = _combine(partials, x.shape[0], x.dtype)
    return Motion(total=total, tau2_min=summary[0], g_max=summary[1],
                  amplitude_sum=summary[2], **out)


def _move_chunks(a, w, x, xx, residual, h, band_eps, mass_floor, trainable: bool, *,
                 n_chunks: int, outputs: str, block: int, redo: bool):
    """``move_particles`` on the particles at hand: (per-particle outputs, per-chunk partials
    {"total": (n_chunks, n), "summary": 3 x (n_chunks,)} with the redone particles added to
    the chunks they belong to)."""
    m_pad = a.shape[0]
    shared = (x, xx, residual, h, band_eps)
    step = _fast_step if redo else _full_step

    def fn(chunk):
        moved, special = jax.vmap(step, (0, 0) + (None,) * 6)(chunk.a, chunk.w, *shared,
                                                              trainable)
        # Particles in a face band or with a face event are redone below: their fast step
        # does not count.
        kept = ~special if redo else jnp.ones_like(special)
        partial = {"total": matmul(jnp.where(kept, moved.a, 0.0), jax.nn.relu(moved.z))}
        if outputs == "total":
            return {"special": special}, partial
        tau2, amplitude = _bounds(moved, xx, band_eps, mass_floor)
        partial["summary"] = _summary(kept, tau2, moved.g, amplitude)
        out = {"a": moved.a, "w": moved.w, "special": special}
        if outputs == "all":
            out.update(tau2=tau2, g=moved.g, amplitude=amplitude)
        return out, partial

    out, partials = chunk_partials(fn, Particles(a=a, w=w), n_chunks)
    special = out.pop("special")
    if redo:
        out, partials = _redo(out, partials, special, a, w, shared, mass_floor, trainable,
                              block, m_pad // n_chunks)
    return out, partials


def _move_per_shard(a, w, x, xx, residual, h, band_eps, mass_floor, trainable: bool, *,
                    n_chunks: int, outputs: str, block: int):
    """``_move_chunks`` shard by shard on the particle mesh: the per-particle outputs stay
    sharded, the per-chunk partials are gathered in chunk order."""
    local = sharding.local_chunks(n_chunks)

    def body(a_shard, w_shard):
        out, partials = _move_chunks(a_shard, w_shard, x, xx, residual, h, band_eps,
                                     mass_floor, trainable, n_chunks=local, outputs=outputs,
                                     block=min(block, a_shard.shape[0]),
                                     redo=block < a.shape[0])
        return out, sharding.all_gather(partials)

    return sharding.per_shard(body, (a, w), (sharding.SHARDED, sharding.REPLICATED))


def _bounds(moved: _Moved, xx, band_eps, mass_floor):
    """Per-particle (tau2, amplitude) of a chunk of moved particles (see ``_finish``)."""
    _, tau2, amplitude = jax.vmap(_finish, (0, None, None, None))(moved, xx, band_eps,
                                                                 mass_floor)
    return tau2, amplitude


def _summary(kept, tau2, g, amplitude):
    """(min tau2, max g, sum amplitude) over the kept particles of a chunk."""
    return (jnp.min(jnp.where(kept, tau2, jnp.inf)), jnp.max(jnp.where(kept, g, -jnp.inf)),
            jnp.sum(jnp.where(kept, amplitude, 0.0)))


def _combine(partials: dict, n: int, dtype):
    """(total (n,), (min tau2, max g, sum amplitude) or Nones) from per-chunk partials; the
    sums in chunk order (``kernels.ordered_sum``: independent of the device count)."""
    total = ordered_sum(partials["total"], jnp.zeros(n, dtype))
    if "summary" not in partials:
        return total, (None, None, None)
    tau2, g, amplitude = partials["summary"]
    return total, (jnp.min(tau2), jnp.max(g),
                   ordered_sum(amplitude, jnp.zeros((), amplitude.dtype)))


def _fast_step(a, w, x, xx, residual, h, band_eps, trainable: bool):
    """(moved, special): the step of a particle in no face band and without a face event,
    and whether it is in a band or has an event (it is then redone with ``_full_step``).

    Outside the bands the active faces are the strict ones and the band rule is void: the
    per-input work is that of an Euler pass (margins, masked field, x_j . G).
    """
    z, in_band, strict = _margins(w, x, xx, band_eps)
    start = _Start.of(w, z, in_band, strict, *_masked_field(strict, residual, x))
    moved, crossed = _advance(a, start, h, trainable)
    return moved, jnp.any(in_band | crossed)


def _count_before(mask):
    """Number of True entries before each entry of ``mask`` (m,), int32 (m,).

    Popcounts of 32-bit words: XLA:CPU's cumsum of 40000 flags costs ~3x more.
    """
    m = mask.shape[0]
    bits = jnp.left_shift(jnp.uint32(1), jnp.arange(32, dtype=jnp.uint32))
    words = jnp.pad(mask, (0, -m % 32)).reshape(-1, 32).astype(jnp.uint32)
    packed = jnp.sum(words * bits, axis=1, dtype=jnp.uint32)  # bit i = entry i of the word
    counts = jax.lax.population_count(packed).astype(jnp.int32)
    below = jax.lax.population_count(packed[:, None] & (bits - 1)).astype(jnp.int32)
    return ((jnp.cumsum(counts) - counts)[:, None] + below).reshape(-1)[:m]


def _redo(out: dict, partials: dict, special, a, w, shared, mass_floor, trainable: bool,
          block: int, chunk: int):
    """Redo the ``special`` particles with the full step, ``block`` at a time.

    Updates the per-particle entries of ``out`` (a, w, tau2, g, amplitude, when present) and
    adds each redone particle to the per-chunk ``partials`` of its chunk (of ``chunk``
    particles), in particle order whatever the blocks.
    """
    m_pad = a.shape[0]
    xx, band_eps = shared[1], shared[4]
    n_slots = -(-m_pad // block) * block
    rank = _count_before(special)
    # slots[r]: index of the r-th special particle; m_pad (dropped on scatter) after.
    slots = jnp.full(n_slots, m_pad, jnp.int32).at[jnp.where(special, rank, n_slots)].set(
        jnp.arange(m_pad, dtype=jnp.int32), mode="drop")
    count = rank[-1] + special[-1]
    n_blocks = (count + block - 1) // block

    def body(i, carry):
        out, partials = carry
        index = jax.lax.dynamic_slice(slots, (i * block,), (block,))
        real = index < m_pad
        owner = index // chunk  # n_chunks (dropped) for unused slots
        take = lambda v: jnp.take(v, index, axis=0, mode="clip")
        moved, _ = jax.vmap(_full_step, (0, 0) + (None,) * 6)(take(a), take(w), *shared,
                                                             trainable)
        contribution = jnp.where(real, moved.a, 0.0)[:, None] * jax.nn.relu(moved.z)
        partials = dict(partials, total=partials["total"].at[owner].add(contribution,
                                                                        mode="drop"))
        if not out:
            return out, partials
        tau2, amplitude = _bounds(moved, xx, band_eps, mass_floor)
        new = {"a": moved.a, "w": moved.w, "tau2": tau2, "g": moved.g, "amplitude": amplitude}
        out = {k: (v.at[index].set(new[k], mode="drop") if k in new else v)
               for k, v in out.items()}
        tau2_min, g_max, amplitude_sum = partials["summary"]
        partials["summary"] = (
            tau2_min.at[owner].min(jnp.where(real, tau2, jnp.inf), mode="drop"),
            g_max.at[owner].max(jnp.where(real, moved.g, -jnp.inf), mode="drop"),
            amplitude_sum.at[owner].add(jnp.where(real, amplitude, 0.0), mode="drop"))
        return out, partials

    return jax.lax.fori_loop(0, n_blocks, body, (out, partials))
