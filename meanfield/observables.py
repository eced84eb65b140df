"""Observables of the (weighted) empirical measure of the particles.

Every observable is a small pure JAX function of the particle arrays (no Python control flow on
traced values, static output shapes), cheap enough to be evaluated inside the jitted run loop
at every save time: O(m) or O(m n) time and O(m * small) memory, with ``m`` the padded width.

Conventions shared by all functions:

* Particles are ``a`` (m,) and ``w`` (m, D) with the bias LAST in ``w`` (docs/theory/model.md). Padding
  neurons (a = 0, w = 0, beyond the real width) are excluded through a boolean ``valid`` mask
  (m,); ``valid=None`` means every row is real. ``valid_mask(m_pad, width)`` builds the mask
  from the width (which may be traced).
* Sign split: ``sign_index(a)`` is 0 for a > 0 ("+"), 1 for a < 0 ("-") and 2 for a == 0
  (no sign: such neurons are left out of every per-sign quantity). Per-sign outputs have a
  leading axis of length 2 (index 0 = "+", index 1 = "-").
* Histograms use the ``numpy.histogram`` convention: equal bins, each closed on the left and
  open on the right, except the last, which is closed. Angles live in (-pi, pi], so the angle
  pi falls in the last bin.
* Activity of neuron k on a distinct input x_j uses a tolerance band (as the integrator does):
  active iff ``w . x_j > band_eps * |w| * |x_j|``, so a neuron sliding on a face (w . x_j ~ 0)
  counts as inactive and does not flicker.

References: arXiv 2007.07497 (Luo, Xu, Ma, Zhang: relative displacement, condensation plot),
arXiv 2305.12467 (Wang & Ma: data plane, alive fractions rho_+-, reference directions),
arXiv 2206.00939 (Boursier, Pillaud-Vivien, Flammarion: activation patterns, D_+-).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from meanfield.particles.kernels import matmul

__all__ = [
    "MAX_PATTERN_POINTS", "ActivationStats", "activation_patterns", "active_matrix",
    "alive_mask", "amplitude", "bias_plane_basis", "boursier_references", "cosine_density",
    "cosines", "dead_displacement_max", "directional_density", "effective_directions",
    "neuron_angles", "normalise", "pattern_counts", "peak_mass", "principal_basis",
    "reference_cosines", "relative_displacement", "relative_displacements", "sign_index",
    "span_basis", "valid_mask", "wang_ma_references",
]

MAX_PATTERN_POINTS = 10  # pattern histograms have 2^n bins per sign: n <= 10 keeps it <= 1024


# ----------------------------------------------------------------------------- masks and signs

def valid_mask(m_pad: int, width) -> jax.Array:
    """Boolean mask of the real (non-padding) neurons, shape (m_pad,).

    Args:
        m_pad: padded number of particles (static).
        width: real width m <= m_pad (may be traced); padding occupies rows m..m_pad-1.
    """
    return jnp.arange(m_pad) < width


def _valid(valid, m: int) -> jax.Array:
    return jnp.ones(m, bool) if valid is None else jnp.asarray(valid, bool)


def sign_index(a) -> jax.Array:
    """Sign class of each neuron, int32 (m,): 0 if a > 0 ("+"), 1 if a < 0 ("-"), 2 if a == 0.

    Neurons of class 2 (exactly zero output weight, e.g. padding) belong to neither sign and are
    excluded from every per-sign observable (they still count in the width of ``alive_fraction``
    if they are real).
    """
    a = jnp.asarray(a)
    return jnp.where(a > 0, 0, jnp.where(a < 0, 1, 2)).astype(jnp.int32)


# ----------------------------------------------------------------------------- amplitudes

@partial(jax.jit, static_argnames=("trainable",))
def amplitude(a, w, trainable: bool = True) -> jax.Array:
    """Amplitude of each neuron, shape (m,).

    ``|a_k| * |w_k|`` for a trainable output layer (the neuron's size in function space, the
    radial coordinate of the condensation plot of arXiv 2007.07497), ``|w_k|`` for frozen
    marks (arXiv 2305.12467: |a_k| is fixed, only w moves).

    Args:
        a: output weights or marks, (m,). w: input weights (bias last), (m, D).
        trainable: whether a is a trainable output weight (static).
    """
    norm = jnp.linalg.norm(w, axis=-1)
    return jnp.abs(a) * norm if trainable else norm


# ----------------------------------------------------------------------------- planes (host)

def bias_plane_basis(D: int) -> np.ndarray:
    """Orthonormal basis (2, D) of the (w, b) plane: components 0 and D - 1.

    For 1-D inputs with bias (D = 2) this is the identity and ``neuron_angles`` gives
    atan2(b, w), the angle of the condensation plot of arXiv 2007.07497. For d > 1 it is the
    plane of the first input weight and the bias.
    """
    if D < 2:
        raise ValueError(
            f"bias_plane_basis needs D >= 2 components (an input and the bias), got {D}")
    basis = np.zeros((2, D))
    basis[0, 0] = basis[1, D - 1] = 1.0
    return basis


def span_basis(u, v) -> np.ndarray:
    """Orthonormal basis (2, D) of span(u, v) by Gram-Schmidt: b0 = u/|u|, b1 along v's rest.

    In this basis u has angle 0 and v an angle in (0, pi). For the Wang & Ma data plane
    (arXiv 2305.12467) use ``span_basis(x_plus, x_minus)``: x_+ at angle 0, x_- at +Delta.

    Args:
        u, v: (D,) linearly independent directions (augmented with the bias if the model has one).
    Raises:
        ValueError: if u is zero or v is parallel to u.
    """
    u = np.asarray(u, dtype=float).reshape(-1)
    v = np.asarray(v, dtype=float).reshape(-1)
    if u.shape != v.shape:
        raise ValueError(f"span_basis: u and v must have the same shape, got {u.shape}, {v.shape}")
    nu = np.linalg.norm(u)
    if nu == 0:
        raise ValueError("span_basis: u must be nonzero")
    b0 = u / nu
    r = v - (v @ b0) * b0
    r = r - (r @ b0) * b0  # second Gram-Schmidt pass for accuracy
    nr = np.linalg.norm(r)
    if nr <= 1e-12 * max(np.linalg.norm(v), 1e-300):
        raise ValueError("span_basis: v is (numerically) parallel to u; they span no plane")
    return np.stack([b0, r / nr])


def principal_basis(x) -> np.ndarray:
    """Top-2 principal directions (2, D) of the data, from the SVD of the UNCENTRED x.

    Uncentred on purpose: the particles' velocity field lies in the linear span of the inputs
    (dw/dt is a combination of the x_j), so the relevant plane is the best 2-D linear subspace
    containing the data, not the affine plane through its mean. Pass the augmented inputs
    (x, 1) if the model has a bias. Signs are fixed deterministically: b0 has a nonnegative
    mean projection of the data, b1 has its largest-magnitude component positive.

    Args:
        x: (n, D) inputs, n >= 2.
    Raises:
        ValueError: if the data span less than two dimensions (use ``span_basis`` then).
    """
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"principal_basis: x must be (n, D), got shape {x.shape}")
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    if s.shape[0] < 2 or s[1] <= 1e-12 * s[0]:
        raise ValueError("principal_basis: the data span fewer than 2 dimensions; "
                         "choose the plane with span_basis(u, v)")
    b0, b1 = vt[0].copy(), vt[1].copy()
    if np.sum(x @ b0) < 0:
        b0 = -b0
    if b1[np.argmax(np.abs(b1))] < 0:
        b1 = -b1
    return np.stack([b0, b1])


def wang_ma_references(x_plus, x_minus, p: float) -> np.ndarray:
    """Reference directions of arXiv 2305.12467 (docs/theory/wang-ma.md), unit rows (3, D).

    Rows: mu ~ p x_+ - x_- (Phase I alignment of the positives), x_-perp =
    (x_+ - cos(D) x_-)/sin(D) and x_+perp = (x_- - cos(D) x_+)/sin(D), D the angle between the
    unit vectors x_+ and x_- (Phase III/IV directions).

    Args:
        x_plus, x_minus: (D,) the two data directions (normalised here). p: copies of x_+.
    """
    xp = np.asarray(x_plus, dtype=float).reshape(-1)
    xm = np.asarray(x_minus, dtype=float).reshape(-1)
    xp, xm = xp / np.linalg.norm(xp), xm / np.linalg.norm(xm)
    cos_d = float(np.clip(xp @ xm, -1.0, 1.0))
    sin_d = np.sqrt(1.0 - cos_d ** 2)
    if sin_d == 0:
        raise ValueError("wang_ma_references: x_plus and x_minus are parallel")
    rows = [p * xp - xm, (xp - cos_d * xm) / sin_d, (xm - cos_d * xp) / sin_d]
    return np.stack([r / np.linalg.norm(r) for r in rows])


def boursier_references(x, y) -> np.ndarray:
    """Alignment directions of arXiv 2206.00939 (docs/theory/boursier.md), rows (2, D) (not normalised).

    Row 0: D_+ = (1/n) sum_{y_k > 0} y_k x_k, where positive neurons align. Row 1:
    (1/n) sum_{y_k < 0} |y_k| x_k, where negative neurons align (the paper's D_- up to the
    sign convention on y). Use as ``references`` of ``reference_cosines`` / ``cosine_density``.

    Args:
        x: (n, D) inputs. y: (n,) labels.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float).reshape(-1)
    n = x.shape[0]
    return np.stack([(np.where(y > 0, y, 0.0) @ x) / n, (np.where(y < 0, -y, 0.0) @ x) / n])


# ----------------------------------------------------------------------------- angles, cosines

@jax.jit
def neuron_angles(w, basis) -> jax.Array:
    """In-plane angle of each neuron, atan2(w . b1, w . b0) in (-pi, pi], shape (m,).

    With ``bias_plane_basis(2)`` (1-D inputs + bias) this is atan2(b, w), the convention of the
    condensation plot of arXiv 2007.07497. The angle -pi (atan2 with y = -0.0) is mapped to pi.
    Neurons whose projection on the plane is exactly zero (e.g. padding) get NaN; the
    histograms skip them.

    Args:
        w: (m, D) input weights (bias last). basis: (2, D) orthonormal rows b0, b1.
    """
    basis = jnp.asarray(basis, w.dtype)
    c, s = matmul(w, basis[0]), matmul(w, basis[1])
    angle = jnp.arctan2(s, c)
    angle = jnp.where(angle <= -jnp.pi, jnp.pi, angle)
    return jnp.where((c == 0) & (s == 0), jnp.nan, angle)


@jax.jit
def cosines(w, references) -> jax.Array:
    """cos(w_k, r_j) for every neuron and reference, shape (m, k); NaN where |w_k| = 0.

    Args:
        w: (m, D) input weights. references: (k, D) nonzero reference directions (any d).
    """
    r = jnp.asarray(references, w.dtype)
    r = r / jnp.linalg.norm(r, axis=-1, keepdims=True)
    norm = jnp.linalg.norm(w, axis=-1, keepdims=True)
    cos = matmul(w, r.T) / jnp.where(norm > 0, norm, 1.0)
    return jnp.where(norm > 0, jnp.clip(cos, -1.0, 1.0), jnp.nan)


# ----------------------------------------------------------------------------- histograms

def _bin_index(value, lo: float, hi: float, n_bins: int) -> jax.Array:
    """numpy.histogram bin of each value on [lo, hi] (last bin closed), int32."""
    idx = jnp.floor((value - lo) / (hi - lo) * n_bins)
    idx = jnp.clip(jnp.where(jnp.isfinite(idx), idx, 0), 0, n_bins - 1)
    return idx.astype(jnp.int32)


def _per_sign_sum(data, segment, include, n_segments: int) -> jax.Array:
    """segment_sum of data by ``segment`` (same shape); excluded entries go to a dump segment."""
    ids = jnp.where(include, segment, n_segments).reshape(-1)
    data = jnp.where(include, data, 0).reshape(-1)
    return jax.ops.segment_sum(data, ids, num_segments=n_segments + 1)[:n_segments]


@partial(jax.jit, static_argnames=("n_bins",))
def directional_density(angles, sign_index, valid=None, weights=None, *,
                        n_bins: int) -> jax.Array:
    """Per-sign histogram of neuron angles, raw weighted sums, shape (2, n_bins).

    (-pi, pi] is split into ``n_bins`` equal bins (bin i = [-pi + i h, -pi + (i+1) h), the last
    closed at pi, h = 2 pi / n_bins). Row s sums ``weights`` over the real neurons of sign s in
    each bin: counts with ``weights=None`` (each neuron 1), the amplitude-weighted density of
    the condensation plot (arXiv 2007.07497) with ``weights=amplitude(a, w, trainable)``.
    Each row sums to the total weight of its sign; NaN angles are skipped. O(m) with one
    ``segment_sum`` over the key bin * 2 + sign. Divide by the width for the measure's density.

    Args:
        angles: (m,) from ``neuron_angles``. sign_index: (m,) from ``sign_index(a)``.
        valid: (m,) bool real-neuron mask (None: all). weights: (m,) or None.
        n_bins: number of angle bins (static).
    """
    angles = jnp.asarray(angles)
    m = angles.shape[0]
    weights = jnp.ones_like(angles) if weights is None else jnp.asarray(weights, angles.dtype)
    include = _valid(valid, m) & (sign_index < 2) & jnp.isfinite(angles)
    key = _bin_index(angles, -jnp.pi, jnp.pi, n_bins) * 2 + sign_index
    return _per_sign_sum(weights, key, include, 2 * n_bins).reshape(n_bins, 2).T


@partial(jax.jit, static_argnames=("n_bins",))
def cosine_density(w, references, sign_index, valid=None, weights=None, *,
                   n_bins: int) -> jax.Array:
    """Per-sign histogram of cos(w_k, r_j) over [-1, 1] for each reference, shape (2, k, n_bins).

    Works in any dimension (the plane-free counterpart of ``directional_density``). Bins are
    the numpy.histogram bins of [-1, 1]; neurons with w = 0 are skipped. Raw weighted sums:
    each (sign, reference) row sums to the total weight of that sign.

    Args:
        w: (m, D). references: (k, D). sign_index: (m,). valid: (m,) bool or None.
        weights: (m,) or None (counts). n_bins: static.
    """
    cos = cosines(w, references)  # (m, k)
    m, k = cos.shape
    weights = jnp.ones(m, cos.dtype) if weights is None else jnp.asarray(weights, cos.dtype)
    include = (_valid(valid, m) & (sign_index < 2))[:, None] & jnp.isfinite(cos)
    key = (sign_index[:, None] * k + jnp.arange(k)[None, :]) * n_bins \
        + _bin_index(cos, -1.0, 1.0, n_bins)
    data = jnp.broadcast_to(weights[:, None], cos.shape)
    return _per_sign_sum(data, key, include, 2 * k * n_bins).reshape(2, k, n_bins)


@jax.jit
def normalise(density) -> jax.Array:
    """Divide each row (last axis) by its total; rows with zero total stay 0. Same shape."""
    total = jnp.sum(density, axis=-1, keepdims=True)
    return jnp.where(total > 0, density / jnp.where(total > 0, total, 1), 0)


@jax.jit
def reference_cosines(w, references, sign_index, alive) -> jax.Array:
    """Min / mean / max of cos(w_k, r_j) over the ALIVE neurons of each sign, shape (2, k, 3).

    The alignment diagnostic of arXiv 2305.12467 (positives align with mu ~ p x_+ - x_-) and
    arXiv 2206.00939 (alignment with D_+-). Entries are NaN where a sign has no alive neuron.

    Args:
        w: (m, D). references: (k, D). sign_index: (m,).
        alive: (m,) bool, e.g. ``alive_mask(w, x, band_eps, valid)`` (must exclude padding).
    """
    return reference_cosine_stats(reference_cosine_sums(w, references, sign_index, alive))


@jax.jit
def reference_cosine_sums(w, references, sign_index, alive) -> dict:
    """Per-sign count, sum, min and max of cos(w_k, r_j) over the alive neurons (see
    ``reference_cosines``): ``{"count": (2, 1), "sum", "min", "max": (2, k)}``. Sums and counts
    of groups of neurons add up, minima and maxima combine by min and max (the empty min is
    +inf, the empty max -inf)."""
    cos = cosines(w, references)
    include = jnp.asarray(alive, bool) & (sign_index < 2) & jnp.all(jnp.isfinite(cos), axis=1)
    ids = jnp.where(include, sign_index, 2)
    return {"count": jax.ops.segment_sum(include.astype(cos.dtype), ids, num_segments=3)[:2, None],
            "sum": jax.ops.segment_sum(jnp.where(include[:, None], cos, 0), ids,
                                       num_segments=3)[:2],
            "min": jax.ops.segment_min(jnp.where(include[:, None], cos, jnp.inf), ids,
                                       num_segments=3)[:2],
            "max": jax.ops.segment_max(jnp.where(include[:, None], cos, -jnp.inf), ids,
                                       num_segments=3)[:2]}


@jax.jit
def reference_cosine_stats(sums: dict) -> jax.Array:
    """Min / mean / max (2, k, 3) from ``reference_cosine_sums``; NaN for empty signs."""
    count = sums["count"]
    out = jnp.stack([sums["min"], sums["sum"] / jnp.where(count > 0, count, 1), sums["max"]],
                    axis=-1)
    return jnp.where(count[..., None] > 0, out, jnp.nan)


# ----------------------------------------------------------------------------- activation

@jax.jit
def active_matrix(w, x, band_eps=0.0) -> jax.Array:
    """Activity of each neuron on each distinct input, bool (m, n).

    Active iff ``w . x_j > band_eps * |w| * |x_j|``: neurons inside the band around a face
    (including exactly on it, and w = 0) count as inactive.

    Args:
        w: (m, D). x: (n, D) distinct augmented inputs (``problem.x``). band_eps: relative
            half-width of the band (0: strict w . x_j > 0).
    """
    x = jnp.asarray(x, w.dtype)
    z = matmul(w, x.T)
    band = band_eps * jnp.linalg.norm(w, axis=-1)[:, None] * jnp.linalg.norm(x, axis=-1)[None, :]
    return z > band


@jax.jit
def alive_mask(w, x, band_eps=0.0, valid=None) -> jax.Array:
    """Real neurons active on at least one distinct input, bool (m,) (see ``active_matrix``)."""
    return _valid(valid, w.shape[0]) & jnp.any(active_matrix(w, x, band_eps), axis=1)


class ActivationStats(NamedTuple):
    """Output of ``activation_patterns`` (a pytree; ``pattern_counts`` may be None).

    Attributes:
        pattern_counts: (2, 2^n) neurons of each sign per activation pattern, pattern index
            sum_j active_j 2^j (index 0: active on no point); None when n > MAX_PATTERN_POINTS.
        active_counts: (2, n) neurons of each sign active on each distinct input.
        alive_fraction: (2,) fraction of ALL real neurons that have this sign and are active on
            at least one point: Wang & Ma's rho_+, rho_- (arXiv 2305.12467).
    """

    pattern_counts: jax.Array | None
    active_counts: jax.Array
    alive_fraction: jax.Array


def _pattern_counts(active, sign_index, valid):
    n = active.shape[1]
    pattern = active.astype(jnp.int32) @ (2 ** jnp.arange(n, dtype=jnp.int32))
    include = valid & (sign_index < 2)
    ones = jnp.ones(active.shape[0], jnp.int32)
    counts = _per_sign_sum(ones, sign_index * 2 ** n + pattern, include, 2 * 2 ** n)
    return counts.reshape(2, 2 ** n)


def _check_pattern_points(n: int):
    if n > MAX_PATTERN_POINTS:
        raise ValueError(
            f"pattern_counts needs n <= MAX_PATTERN_POINTS = {MAX_PATTERN_POINTS} distinct inputs "
            f"(2^n patterns per sign), got n = {n}; use active_counts / alive_fraction instead")


@jax.jit
def pattern_counts(w, x, sign_index, valid=None, band_eps=0.0) -> jax.Array:
    """Neurons of each sign per activation pattern, int32 (2, 2^n), index sum_j active_j 2^j.

    The activation-pattern census of arXiv 2206.00939 / 2305.12467 (Phase IV pattern changes).

    Args:
        w: (m, D). x: (n, D) distinct augmented inputs. sign_index: (m,). valid: (m,) or None.
        band_eps: face band (see ``active_matrix``).
    Raises:
        ValueError: if n > MAX_PATTERN_POINTS (= 10) (checked on the static shape).
    """
    _check_pattern_points(x.shape[0])
    return _pattern_counts(active_matrix(w, x, band_eps), sign_index,
                           _valid(valid, w.shape[0]))


@jax.jit
def activation_patterns(w, x, sign_index, valid=None, band_eps=0.0) -> ActivationStats:
    """Activation statistics of the neurons on the distinct inputs, O(m n).

    Args:
        w: (m, D). x: (n, D) DISTINCT augmented inputs (``problem.x``; duplicates would be
            counted as separate points). sign_index: (m,). valid: (m,) bool or None.
        band_eps: face band (see ``active_matrix``).
    Returns:
        ``ActivationStats(pattern_counts (2, 2^n) int32 or None if n > 10, active_counts (2, n)
        int32, alive_fraction (2,))``.
    """
    valid = _valid(valid, w.shape[0])
    active = active_matrix(w, x, band_eps)
    include = valid & (sign_index < 2)
    ids = jnp.where(include, sign_index, 2)
    active_counts = jax.ops.segment_sum(active.astype(jnp.int32), ids, num_segments=3)[:2]
    alive = jnp.any(active, axis=1).astype(w.dtype)
    n_real = jnp.sum(valid).astype(w.dtype)
    alive_fraction = (jax.ops.segment_sum(alive, ids, num_segments=3)[:2]
                      / jnp.maximum(n_real, 1))
    patterns = (_pattern_counts(active, sign_index, valid)
                if x.shape[0] <= MAX_PATTERN_POINTS else None)
    return ActivationStats(patterns, active_counts, alive_fraction)


# ----------------------------------------------------------------------------- displacement

@jax.jit
def relative_displacement(v, v0, valid=None) -> jax.Array:
    """RD = |v(t) - v(0)|_F / |v(0)|_F over the real neurons, scalar (arXiv 2007.07497).

    Luo et al.'s order parameter with ``v = w`` (all input weights, bias included): RD -> 0
    with m in the linear regime, grows in the condensed one. Also usable with ``v = a``.
    NaN if v(0) = 0 and v did not move, inf if it did.

    Args:
        v, v0: (m,) or (m, D) current and initial parameters. valid: (m,) bool or None.
    """
    m = v.shape[0]
    keep = _valid(valid, m)
    dv = jnp.where(keep[:, None], (v - v0).reshape(m, -1), 0)
    v0 = jnp.where(keep[:, None], jnp.asarray(v0).reshape(m, -1), 0)
    return jnp.sqrt(jnp.sum(dv ** 2)) / jnp.sqrt(jnp.sum(v0 ** 2))


@jax.jit
def relative_displacements(a, w, a0, w0, valid=None) -> dict:
    """RD of w, of a and of theta = (a, w) jointly, dict of scalars ``{"w", "a", "theta"}``.

    ``theta`` is |(a, w)(t) - (a, w)(0)|_F / |(a, w)(0)|_F (arXiv 2007.07497; its Fig. 3 uses
    RD of w). For frozen marks RD of a is 0.
    """
    return displacements_from_sums(displacement_sums(a, w, a0, w0, valid))


@jax.jit
def displacement_sums(a, w, a0, w0, valid=None) -> dict:
    """Squared norms behind ``relative_displacements``, scalars that add up over groups of
    neurons: ``{"da2": |a - a0|^2, "a02": |a0|^2, "dw2": |w - w0|_F^2, "w02": |w0|_F^2}``."""
    keep = _valid(valid, w.shape[0])
    # Per neuron first, then over neurons: a flat sum over all (m, D) entries may be split
    # over the backend's threads, which would make the last bits depend on the core count.
    per_neuron = {"da2": (a - a0) ** 2, "a02": a0 ** 2,
                  "dw2": jnp.sum((w - w0) ** 2, axis=1), "w02": jnp.sum(w0 ** 2, axis=1)}
    return {name: jnp.sum(jnp.where(keep, v, 0)) for name, v in per_neuron.items()}


@jax.jit
def displacements_from_sums(sums: dict) -> dict:
    """RD of w, a and theta (``relative_displacements``) from ``displacement_sums``."""
    da2, a02, dw2, w02 = sums["da2"], sums["a02"], sums["dw2"], sums["w02"]
    return {"w": jnp.sqrt(dw2 / w02), "a": jnp.sqrt(da2 / a02),
            "theta": jnp.sqrt((da2 + dw2) / (a02 + w02))}


@jax.jit
def dead_displacement_max(w, w0, x, band_eps=0.0, valid=None) -> jax.Array:
    """Max of |w_k - w_k(0)| over real neurons inactive on every input now AND at t = 0, scalar.

    Such neurons see no field and never move under the gradient flow, so this is exactly 0 for
    a correct integrator; a nonzero value flags an integration artefact (e.g. a GD step that
    carried a neuron through its last face and back). Inactivity uses the face band of
    ``active_matrix``; 0 when there is no such neuron.

    Args:
        w, w0: (m, D) current and initial input weights. x: (n, D) distinct augmented inputs.
        band_eps: face band. valid: (m,) bool or None.
    """
    dead = (_valid(valid, w.shape[0]) & ~jnp.any(active_matrix(w, x, band_eps), axis=1)
            & ~jnp.any(active_matrix(w0, x, band_eps), axis=1))
    moved = jnp.linalg.norm(w - w0, axis=-1)
    return jnp.max(jnp.where(dead, moved, 0), initial=0.0)


# ----------------------------------------------------------------------------- condensation

@jax.jit
def effective_directions(p) -> jax.Array:
    """Effective number of occupied directions exp(-sum p log p) per row, shape p.shape[:-1].

    The exponential of the Shannon entropy of a density row over angle bins (normalised here,
    so raw or normalised rows give the same value): 1 when all mass is in one bin, n_bins for a
    uniform row. Apply to the amplitude-weighted ``directional_density`` of one sign to measure
    condensation (arXiv 2007.07497: condensed runs concentrate on a few directions). NaN for a
    row with no mass.

    Args:
        p: (..., n_bins) nonnegative densities.
    """
    q = normalise(p)
    entropy = -jnp.sum(jnp.where(q > 0, q * jnp.log(jnp.where(q > 0, q, 1)), 0), axis=-1)
    total = jnp.sum(p, axis=-1)
    return jnp.where(total > 0, jnp.exp(entropy), jnp.nan)


@jax.jit
def peak_mass(p, delta_bins, k) -> jax.Array:
    """Fraction of the mass within +-delta_bins of the top-k peaks, per row, shape p.shape[:-1].

    Peaks are picked greedily on the circle of bins: take the highest remaining bin, add the
    remaining mass of its window [peak - delta, peak + delta] (indices wrapping around), remove
    that window, repeat k times. Overlapping windows never count a bin twice; ties go to the
    lowest bin index. 1 when all mass lies within delta of k peaks; NaN for a row with no mass.

    Args:
        p: (..., n_bins) nonnegative densities (e.g. a normalised amplitude-weighted
            ``directional_density`` row of one sign). delta_bins: window half-width in bins
            (integer >= 0, may be traced). k: number of peaks (integer >= 0, may be traced).
    """
    p = jnp.asarray(p)
    n_bins = p.shape[-1]
    idx = jnp.arange(n_bins)

    def body(_, carry):
        remaining, mass = carry
        peak = jnp.argmax(remaining, axis=-1)[..., None]
        d = jnp.abs(idx - peak) % n_bins
        window = jnp.minimum(d, n_bins - d) <= delta_bins
        mass = mass + jnp.sum(jnp.where(window, remaining, 0), axis=-1)
        return jnp.where(window, 0, remaining), mass

    _, mass = jax.lax.fori_loop(0, k, body, (p, jnp.zeros(p.shape[:-1], p.dtype)))
    total = jnp.sum(p, axis=-1)
    return jnp.where(total > 0, mass / jnp.where(total > 0, total, 1), jnp.nan)
