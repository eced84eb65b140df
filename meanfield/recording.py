"""What a run records at every save time, computed on device inside the jitted chunk.

``RecordSpec`` holds the (traced) arrays that define the observables of a run: the plane in
which neuron angles are measured, the named reference directions, the face band; ``measure``
evaluates all observables of ``meanfield.observables`` on the current particles. Outputs are
small (O(n_bins + n) per save): trajectories are never stored, particles only on the sparse
snapshot clock.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

import meanfield.particles as pt
from meanfield import observables as ob
from meanfield.particles._pytree import pytree_dataclass

SIGNS = ("+", "-", "all")  # per-sign observables also give the whole measure
STATS = ("min", "mean", "max")


@pytree_dataclass(static=("n_angle_bins", "n_cosine_bins", "trainable", "patterns"))
class RecordSpec:
    """Arrays and static sizes of a run's observables.

    Attributes:
        basis: orthonormal (2, D) plane of the neuron angles.
        references: unit reference directions, shape (k, D).
        band_eps: relative face band (activity is w.x > band_eps |w| |x|).
        delta_bins: half-width in bins of the peak windows (condensation mass).
        peaks: number of peaks for the condensation mass.
    """

    basis: jnp.ndarray
    references: jnp.ndarray
    band_eps: jnp.ndarray
    delta_bins: jnp.ndarray
    peaks: jnp.ndarray
    n_angle_bins: int
    n_cosine_bins: int
    trainable: bool
    patterns: bool


def angle_plane(config, x_unique: np.ndarray) -> np.ndarray:
    """The (2, D) plane of the directional density: explicit, else (w, b) for 1-D inputs with
    bias (Luo's angle atan2(b, w)), else the top-2 principal directions of the data."""
    observe = config.observe
    if observe.plane is not None:
        return ob.span_basis(np.asarray(observe.plane[0]), np.asarray(observe.plane[1]))
    dim = x_unique.shape[1]
    if dim == 2 and config.model.bias:
        return ob.bias_plane_basis(2)
    return ob.principal_basis(x_unique)


def make_spec(config, x_unique: np.ndarray, band_eps: float, dtype) -> RecordSpec:
    observe = config.observe
    refs = [np.asarray(v, float) / np.linalg.norm(v) for _, v in observe.references]
    dim = x_unique.shape[1]
    references = np.array(refs).reshape(len(refs), dim)
    bin_width = 2 * math.pi / observe.n_angle_bins
    return RecordSpec(
        basis=jnp.asarray(angle_plane(config, x_unique), dtype),
        references=jnp.asarray(references, dtype),
        band_eps=jnp.asarray(band_eps, dtype),
        delta_bins=jnp.asarray(int(round(observe.peak_delta / bin_width)), jnp.int32),
        peaks=jnp.asarray(observe.peaks, jnp.int32),
        n_angle_bins=observe.n_angle_bins, n_cosine_bins=observe.n_cosine_bins,
        trainable=config.model.trainable_output,
        patterns=x_unique.shape[0] <= ob.MAX_PATTERN_POINTS,
    )


def _activity(problem: pt.Problem, w, w0, sign, valid, spec: RecordSpec):
    """Activity observables, chunked over particles so no (m, n) matrix is ever formed.

    Returns:
        (alive (m,) bool, summed per-sign counts: ``active_counts`` (2, n),
        ``pattern_counts`` (2, 2^n) or None, ``alive`` (2,) alive neurons per sign;
        ``dead_displacement_max`` scalar).
    """
    x, band = problem.x, spec.band_eps

    def fn(chunk):
        w_c, w0_c, s_c, v_c = chunk
        stats = ob.activation_patterns(w_c, x, s_c, v_c, band)
        n_real = jnp.sum(v_c).astype(w_c.dtype)
        summed = {"active_counts": stats.active_counts, "pattern_counts": stats.pattern_counts,
                  "alive": stats.alive_fraction * jnp.maximum(n_real, 1)}
        dead = ob.dead_displacement_max(w_c, w0_c, x, band, v_c)
        return (ob.alive_mask(w_c, x, band, v_c), dead[None]), summed

    n = x.shape[0]
    zeros = {"active_counts": jnp.zeros((2, n), jnp.int32),
             "pattern_counts": jnp.zeros((2, 2 ** n), jnp.int32) if spec.patterns else None,
             "alive": jnp.zeros(2, w.dtype)}
    (alive, dead), summed = pt.kernels.scan_chunks(fn, (w, w0, sign, valid), problem.n_chunks,
                                                   zeros)
    return alive, summed, jnp.max(dead)


def measure(problem: pt.Problem, particles: pt.Particles, initial: pt.Particles,
            spec: RecordSpec) -> dict:
    """All observables of the current particles (see ``meanfield.io`` for names and dims)."""
    a, w = particles.a, particles.w
    width = jnp.round(1.0 / problem.inv_width).astype(jnp.int32)
    valid = ob.valid_mask(a.shape[0], width)
    sign = ob.sign_index(a)
    signed = sign < 2
    amp = ob.amplitude(a, w, spec.trainable)
    angles = ob.neuron_angles(w, spec.basis)
    with_all = lambda per_sign: jnp.concatenate([per_sign, per_sign.sum(0, keepdims=True)])
    density = with_all(ob.directional_density(angles, sign, valid, amp, n_bins=spec.n_angle_bins))
    counts = with_all(ob.directional_density(angles, sign, valid, None, n_bins=spec.n_angle_bins))
    alive, activity, dead_max = _activity(problem, w, initial.w, sign, valid, spec)
    out = {
        "density": ob.normalise(density),
        "density_count": ob.normalise(counts),
        "mass": jnp.sum(density, axis=-1) * problem.inv_width,
        "effective_directions": ob.effective_directions(density),
        "peak_mass": ob.peak_mass(density, spec.delta_bins, spec.peaks),
        "alive_fraction": with_all(activity["alive"] * problem.inv_width),
        "active_count": with_all(activity["active_counts"]),
        "dead_displacement_max": dead_max,
    }
    rd = ob.relative_displacements(a, w, initial.a, initial.w, valid)
    out.update(rd_w=rd["w"], rd_a=rd["a"], rd=rd["theta"])
    if spec.patterns:
        out["pattern_count"] = with_all(activity["pattern_counts"])
    if spec.references.shape[0]:
        out["cosine_density"] = ob.normalise(with_all(ob.cosine_density(
            w, spec.references, sign, valid, amp, n_bins=spec.n_cosine_bins)))
        per_sign = ob.reference_cosines(w, spec.references, sign, alive)
        together = ob.reference_cosines(w, spec.references, jnp.where(signed, 0, 2), alive)
        out["cosine_stats"] = jnp.concatenate([per_sign, together[:1]])
    return out
