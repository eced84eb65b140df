"""What a run records at every save time, computed on device inside the jitted chunk.

``RecordSpec`` holds the (traced) arrays that define the observables of a run: the plane in
which neuron angles are measured, the named reference directions, the face band; ``measure``
evaluates all observables of ``meanfield.observables`` on the current particles. Outputs are
small (O(n_bins + n) per save): trajectories are never stored, particles only on the sparse
snapshot clock.
"""

from __future__ import annotations

import math

import jax
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
        basis=pt.to_device(angle_plane(config, x_unique), dtype),
        references=pt.to_device(references, dtype),
        band_eps=pt.to_device(band_eps, dtype),
        delta_bins=pt.to_device(int(round(observe.peak_delta / bin_width)), np.int32),
        peaks=pt.to_device(observe.peaks, np.int32),
        n_angle_bins=observe.n_angle_bins, n_cosine_bins=observe.n_cosine_bins,
        trainable=config.model.trainable_output,
        patterns=x_unique.shape[0] <= ob.MAX_PATTERN_POINTS,
    )


def _chunked(problem: pt.Problem, particles: pt.Particles, initial: pt.Particles, spec: RecordSpec):
    """The observables that sum over neurons, chunk by chunk: no (m, n) matrix is ever formed,
    and the sums are taken in chunk order, so they do not depend on the number of devices
    (``pt.kernels.chunk_partials`` and ``ordered_sum``).

    Returns:
        (alive (m,) bool, dict of sums over the neurons: per-sign ``density`` and ``counts``
        (2, n_angle_bins), ``cosine_density`` (2, k, n_cosine_bins), ``active_counts`` (2, n),
        ``pattern_counts`` (2, 2^n) or None, ``alive`` (2,) alive neurons per sign,
        ``displacement`` (``ob.displacement_sums``), ``cosines`` and ``cosines_together``
        (``ob.reference_cosine_sums`` of the signs and of all neurons, min/max excluded),
        ``cosine_extremes``: the min and max of those, ``dead_displacement_max`` scalar).
    """
    x, band = problem.x, spec.band_eps
    width = jnp.round(1.0 / problem.inv_width).astype(jnp.int32)
    valid = ob.valid_mask(particles.a.shape[0], width)
    has_refs = spec.references.shape[0] > 0

    def fn(chunk):
        a, w, a0, w0, v_c = chunk
        sign = ob.sign_index(a)
        amp = ob.amplitude(a, w, spec.trainable)
        angles = ob.neuron_angles(w, spec.basis)
        stats = ob.activation_patterns(w, x, sign, v_c, band)
        n_real = jnp.sum(v_c).astype(w.dtype)
        alive = ob.alive_mask(w, x, band, v_c)
        summed = {
            "density": ob.directional_density(angles, sign, v_c, amp, n_bins=spec.n_angle_bins),
            "counts": ob.directional_density(angles, sign, v_c, None, n_bins=spec.n_angle_bins),
            "active_counts": stats.active_counts, "pattern_counts": stats.pattern_counts,
            "alive": stats.alive_fraction * jnp.maximum(n_real, 1),
            "displacement": ob.displacement_sums(a, w, a0, w0, v_c),
        }
        extremes = {}
        if has_refs:
            summed["cosine_density"] = ob.cosine_density(w, spec.references, sign, v_c, amp,
                                                         n_bins=spec.n_cosine_bins)
            for name, ids in (("cosines", sign), ("cosines_together",
                                                  jnp.where(sign < 2, 0, 2))):
                sums = ob.reference_cosine_sums(w, spec.references, ids, alive)
                extremes[name] = {k: sums.pop(k)[None] for k in ("min", "max")}
                summed[name] = sums
        dead = ob.dead_displacement_max(w, w0, x, band, v_c)
        return (alive, dead[None], extremes), summed

    (alive, dead, extremes), partials = pt.kernels.chunk_partials(
        fn, (particles.a, particles.w, initial.a, initial.w, valid), problem.n_chunks)
    summed = pt.kernels.ordered_sum(
        partials, jax.tree.map(lambda v: jnp.zeros(v.shape[1:], v.dtype), partials))
    summed["dead_displacement_max"] = jnp.max(dead)
    summed["cosine_extremes"] = {name: {"min": jnp.min(e["min"], axis=0),
                                        "max": jnp.max(e["max"], axis=0)}
                                 for name, e in extremes.items()}
    return alive, summed


def measure(problem: pt.Problem, particles: pt.Particles, initial: pt.Particles,
            spec: RecordSpec) -> dict:
    """All observables of the current particles (see ``meanfield.io`` for names and dims)."""
    alive, sums = _chunked(problem, particles, initial, spec)
    with_all = lambda per_sign: jnp.concatenate([per_sign, per_sign.sum(0, keepdims=True)])
    density = with_all(sums["density"])
    out = {
        "density": ob.normalise(density),
        "density_count": ob.normalise(with_all(sums["counts"])),
        "mass": jnp.sum(density, axis=-1) * problem.inv_width,
        "effective_directions": ob.effective_directions(density),
        "peak_mass": ob.peak_mass(density, spec.delta_bins, spec.peaks),
        "alive_fraction": with_all(sums["alive"] * problem.inv_width),
        "active_count": with_all(sums["active_counts"]),
        "dead_displacement_max": sums["dead_displacement_max"],
    }
    rd = ob.displacements_from_sums(sums["displacement"])
    out.update(rd_w=rd["w"], rd_a=rd["a"], rd=rd["theta"])
    if spec.patterns:
        out["pattern_count"] = with_all(sums["pattern_counts"])
    if spec.references.shape[0]:
        out["cosine_density"] = ob.normalise(with_all(sums["cosine_density"]))
        per_sign, together = (ob.reference_cosine_stats(dict(sums[name],
                                                             **sums["cosine_extremes"][name]))
                              for name in ("cosines", "cosines_together"))
        out["cosine_stats"] = jnp.concatenate([per_sign, together[:1]])
    return out
