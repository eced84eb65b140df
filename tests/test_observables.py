"""Observables of the particle measure against independent numpy computations (loops,
numpy.histogram, np.arctan2), with weights, the sign split, zero padding and the face band."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meanfield import observables as ob

M, WIDTH, D = 40, 33, 4  # padded rows, real neurons, components (bias last)


def particle_set(rng, *, m=M, width=WIDTH, d=D, garbage_padding=False):
    """Random particles with some exactly-zero output weights and padding rows beyond width."""
    a = rng.standard_normal(m)
    a[rng.choice(width, 3, replace=False)] = 0.0  # real neurons with no sign
    w = rng.standard_normal((m, d))
    if garbage_padding:  # padding is zero in the engine; nonzero here tests the mask
        a[width:] = rng.standard_normal(m - width)
        w[width:] = rng.standard_normal((m - width, d))
    else:
        a[width:] = 0.0
        w[width:] = 0.0
    valid = np.arange(m) < width
    return a, w, valid


def np_sign(a):
    return np.where(a > 0, 0, np.where(a < 0, 1, 2))


# ----------------------------------------------------------------------------- masks, amplitude

def test_valid_mask_and_sign_index():
    np.testing.assert_array_equal(ob.valid_mask(6, 4), [1, 1, 1, 1, 0, 0])
    traced = jax.jit(lambda width: ob.valid_mask(6, width))(jnp.asarray(2))
    np.testing.assert_array_equal(traced, [1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(ob.sign_index(jnp.array([1.0, -2.0, 0.0, -0.0, 1e-300])),
                                  [0, 1, 2, 2, 0])


@pytest.mark.parametrize("trainable", (True, False))
def test_amplitude(rng, trainable):
    a, w, _ = particle_set(rng)
    got = np.asarray(ob.amplitude(jnp.asarray(a), jnp.asarray(w), trainable))
    for k in range(M):
        norm = np.sqrt(sum(c * c for c in w[k]))
        assert got[k] == pytest.approx(abs(a[k]) * norm if trainable else norm, rel=1e-13, abs=0)


# ----------------------------------------------------------------------------- bases and angles

def test_bias_plane_basis_gives_luo_angle(rng):
    w = rng.standard_normal((25, 2))
    angles = ob.neuron_angles(jnp.asarray(w), ob.bias_plane_basis(2))
    np.testing.assert_allclose(angles, np.arctan2(w[:, 1], w[:, 0]), rtol=1e-14)
    basis = ob.bias_plane_basis(5)
    np.testing.assert_array_equal(basis, [[1, 0, 0, 0, 0], [0, 0, 0, 0, 1]])
    with pytest.raises(ValueError, match="D >= 2"):
        ob.bias_plane_basis(1)


def test_span_basis(rng):
    u, v = rng.standard_normal(6), rng.standard_normal(6)
    basis = ob.span_basis(u, v)
    np.testing.assert_allclose(basis @ basis.T, np.eye(2), atol=1e-14)
    angles = np.asarray(ob.neuron_angles(jnp.asarray(np.stack([u, v])), basis))
    between = np.arccos(u @ v / np.linalg.norm(u) / np.linalg.norm(v))
    np.testing.assert_allclose(angles, [0.0, between], atol=1e-13)
    # v lies in the plane: its projection reconstructs it
    np.testing.assert_allclose(basis.T @ (basis @ v), v, atol=1e-13)
    with pytest.raises(ValueError, match="parallel"):
        ob.span_basis(u, -2.5 * u)
    with pytest.raises(ValueError, match="nonzero"):
        ob.span_basis(np.zeros(6), v)


def test_principal_basis(rng):
    plane = rng.standard_normal((2, 5))
    x = rng.standard_normal((30, 2)) @ plane + 1e-3 * rng.standard_normal((30, 5)) + plane[0]
    basis = ob.principal_basis(x)
    np.testing.assert_allclose(basis @ basis.T, np.eye(2), atol=1e-13)
    evals, evecs = np.linalg.eigh(x.T @ x)  # uncentred second moment, ascending
    top = evecs[:, -2:]
    np.testing.assert_allclose(basis.T @ basis, top @ top.T, atol=1e-10)
    assert np.sum(x @ basis[0]) >= 0 and basis[1][np.argmax(np.abs(basis[1]))] > 0
    with pytest.raises(ValueError, match="fewer than 2"):
        ob.principal_basis(np.outer(rng.standard_normal(7), rng.standard_normal(3)))


def test_neuron_angles_against_arctan2(rng):
    a, w, valid = particle_set(rng)
    basis = ob.span_basis(rng.standard_normal(D), rng.standard_normal(D))
    got = np.asarray(ob.neuron_angles(jnp.asarray(w), basis))
    for k in range(WIDTH):
        c = sum(w[k, i] * basis[0, i] for i in range(D))
        s = sum(w[k, i] * basis[1, i] for i in range(D))
        assert got[k] == pytest.approx(np.arctan2(s, c), abs=1e-13)
    assert np.all(np.isnan(got[WIDTH:]))  # zero padding has no direction
    edge = ob.neuron_angles(jnp.array([[-1.0, -0.0], [-1.0, 0.0], [0.0, 0.0]]),
                            ob.bias_plane_basis(2))
    np.testing.assert_array_equal(edge[:2], [np.pi, np.pi])  # range is (-pi, pi]
    assert np.isnan(edge[2])


# ----------------------------------------------------------------------------- densities

def np_directional(angles, weights, signs, valid, n_bins):
    out = np.zeros((2, n_bins))
    edges = np.linspace(-np.pi, np.pi, n_bins + 1)
    for s in (0, 1):
        keep = valid & (signs == s) & np.isfinite(angles)
        out[s] = np.histogram(angles[keep], bins=edges, weights=weights[keep])[0]
    return out


@pytest.mark.parametrize("garbage_padding", (False, True))
def test_directional_density_against_histogram(rng, garbage_padding):
    a, w, valid = particle_set(rng, garbage_padding=garbage_padding)
    basis = ob.span_basis(rng.standard_normal(D), rng.standard_normal(D))
    angles = np.asarray(ob.neuron_angles(jnp.asarray(w), basis))
    signs = np_sign(a)
    amp = np.abs(a) * np.linalg.norm(w, axis=1)
    n_bins = 12
    for weights in (None, amp):
        got = np.asarray(ob.directional_density(jnp.asarray(angles), ob.sign_index(a), valid,
                                                weights, n_bins=n_bins))
        wts = np.ones(M) if weights is None else weights
        np.testing.assert_allclose(got, np_directional(angles, wts, signs, valid, n_bins),
                                   rtol=1e-13, atol=1e-14)
        for s in (0, 1):  # each row sums to the sign's total weight
            assert got[s].sum() == pytest.approx(wts[valid & (signs == s)].sum(), rel=1e-13)
    counts = ob.directional_density(jnp.asarray(angles), ob.sign_index(a), valid, n_bins=n_bins)
    assert counts.sum() == np.sum(valid & (signs < 2))


def test_directional_density_bin_edges():
    # numpy.histogram convention on (-pi, pi]: left-closed bins, last closed at pi
    angles = jnp.array([np.pi, -np.pi + 1e-12, 0.0, -np.pi / 2 - 1e-12, np.nan])
    signs = jnp.array([0, 0, 1, 1, 0])
    got = np.asarray(ob.directional_density(angles, signs, n_bins=4))
    np.testing.assert_array_equal(got, [[1, 0, 0, 1], [1, 0, 1, 0]])


def test_normalise():
    density = jnp.array([[1.0, 3.0, 0.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(ob.normalise(density), [[0.125, 0.375, 0, 0.5], [0, 0, 0, 0]])


@pytest.mark.parametrize("garbage_padding", (False, True))
def test_cosine_density_against_histogram(rng, garbage_padding):
    d, k, n_bins = 5, 3, 7
    a, w, valid = particle_set(rng, d=d, garbage_padding=garbage_padding)
    w[0] = 0.0  # a real neuron with no direction is skipped
    refs = rng.standard_normal((k, d))
    weights = rng.uniform(0.1, 2.0, M)
    got = np.asarray(ob.cosine_density(jnp.asarray(w), jnp.asarray(refs), ob.sign_index(a), valid,
                                       jnp.asarray(weights), n_bins=n_bins))
    signs = np_sign(a)
    edges = np.linspace(-1.0, 1.0, n_bins + 1)
    for s, j in itertools.product((0, 1), range(k)):
        vals, wts = [], []
        for i in range(M):
            norm = np.linalg.norm(w[i])
            if valid[i] and signs[i] == s and norm > 0:
                vals.append(w[i] @ refs[j] / (norm * np.linalg.norm(refs[j])))
                wts.append(weights[i])
        expect = np.histogram(vals, bins=edges, weights=wts)[0]
        np.testing.assert_allclose(got[s, j], expect, rtol=1e-13, atol=1e-14)
        assert got[s, j].sum() == pytest.approx(sum(wts), rel=1e-13)


def test_cosine_density_extremes():
    w = jnp.array([[2.0, 0.0], [-1.0, 0.0], [0.0, 3.0]])
    got = ob.cosine_density(w, jnp.array([[1.0, 0.0]]), jnp.array([0, 0, 1]), n_bins=4)
    np.testing.assert_array_equal(got[0, 0], [1, 0, 0, 1])  # cos = -1 first bin, +1 last
    np.testing.assert_array_equal(got[1, 0], [0, 0, 1, 0])  # cos = 0 opens bin 2


def test_reference_cosines_against_loops(rng):
    d, k = 5, 2
    a, w, valid = particle_set(rng, d=d, garbage_padding=True)
    refs = rng.standard_normal((k, d))
    alive = valid & (rng.uniform(size=M) < 0.7)
    got = np.asarray(ob.reference_cosines(jnp.asarray(w), jnp.asarray(refs), ob.sign_index(a),
                                          jnp.asarray(alive)))
    assert got.shape == (2, k, 3)
    signs = np_sign(a)
    for s, j in itertools.product((0, 1), range(k)):
        cos = [w[i] @ refs[j] / np.linalg.norm(w[i]) / np.linalg.norm(refs[j])
               for i in range(M) if alive[i] and signs[i] == s]
        np.testing.assert_allclose(got[s, j], [min(cos), np.mean(cos), max(cos)], rtol=1e-12)
    # no alive negative neuron: NaN for that sign only
    alive_pos = alive & (signs == 0)
    got = np.asarray(ob.reference_cosines(jnp.asarray(w), jnp.asarray(refs), ob.sign_index(a),
                                          jnp.asarray(alive_pos)))
    assert np.all(np.isnan(got[1])) and np.all(np.isfinite(got[0]))


# ----------------------------------------------------------------------------- activation

def np_activation(w, x, signs, valid, eps):
    m, n = w.shape[0], x.shape[0]
    active = np.zeros((m, n), bool)
    for i, j in itertools.product(range(m), range(n)):
        active[i, j] = w[i] @ x[j] > eps * np.linalg.norm(w[i]) * np.linalg.norm(x[j])
    patterns = np.zeros((2, 2 ** n), int) if n <= 10 else None
    counts = np.zeros((2, n), int)
    alive = np.zeros(2)
    for i in range(m):
        if not valid[i] or signs[i] == 2:
            continue
        s = signs[i]
        if patterns is not None:
            patterns[s, sum(2 ** j for j in range(n) if active[i, j])] += 1
        counts[s] += active[i]
        alive[s] += active[i].any()
    return active, patterns, counts, alive / valid.sum()


@pytest.mark.parametrize("eps", (0.0, 0.3))
def test_activation_patterns_against_loops(rng, eps):
    a, w, valid = particle_set(rng, garbage_padding=True)
    x = np.concatenate([rng.standard_normal((5, D - 1)), np.ones((5, 1))], axis=1)
    stats = ob.activation_patterns(jnp.asarray(w), jnp.asarray(x), ob.sign_index(a), valid, eps)
    active, patterns, counts, alive = np_activation(w, x, np_sign(a), valid, eps)
    np.testing.assert_array_equal(ob.active_matrix(jnp.asarray(w), jnp.asarray(x), eps), active)
    np.testing.assert_array_equal(stats.pattern_counts, patterns)
    np.testing.assert_array_equal(stats.active_counts, counts)
    np.testing.assert_allclose(stats.alive_fraction, alive, rtol=1e-14)
    assert stats.pattern_counts.sum() == np.sum(valid & (np_sign(a) < 2))
    np.testing.assert_array_equal(
        ob.pattern_counts(jnp.asarray(w), jnp.asarray(x), ob.sign_index(a), valid, eps), patterns)
    np.testing.assert_array_equal(ob.alive_mask(jnp.asarray(w), jnp.asarray(x), eps, valid),
                                  valid & active.any(axis=1))


def test_pattern_limit(rng):
    w = jnp.asarray(rng.standard_normal((8, 3)))
    x = jnp.asarray(rng.standard_normal((11, 3)))
    signs = ob.sign_index(jnp.asarray(rng.standard_normal(8)))
    stats = ob.activation_patterns(w, x, signs)
    assert stats.pattern_counts is None and stats.active_counts.shape == (2, 11)
    with pytest.raises(ValueError, match="MAX_PATTERN_POINTS = 10"):
        ob.pattern_counts(w, x, signs)


def test_face_band():
    """Neurons exactly on a face, inside the band and outside it."""
    eps = 1e-6
    x = np.array([[1.0, 2.0, 1.0], [-1.0, 0.5, 1.0]])
    xh = x[0] / np.linalg.norm(x[0])
    base = np.array([2.0, -1.0, 0.0])  # base . x_0 = 0, base . x_1 = -2.5 < 0
    assert base @ x[0] == 0
    step = eps * np.linalg.norm(base) * xh
    rows = [base, base + 0.5 * step, base + 2.0 * step, base - 2.0 * step]
    w = jnp.asarray(np.stack(rows))
    xj = jnp.asarray(x)
    np.testing.assert_array_equal(ob.active_matrix(w, xj, eps)[:, 0], [False, False, True, False])
    # without a band, any positive margin counts; exactly on the face is still inactive
    np.testing.assert_array_equal(ob.active_matrix(w, xj, 0.0)[:, 0], [False, True, True, False])
    signs = jnp.array([0, 0, 0, 1])
    stats = ob.activation_patterns(w, xj, signs, None, eps)
    np.testing.assert_array_equal(stats.pattern_counts, [[2, 1, 0, 0], [1, 0, 0, 0]])
    np.testing.assert_allclose(stats.alive_fraction, [0.25, 0.0])
    # zero padding is never active, even with band 0
    assert not ob.active_matrix(jnp.zeros((1, 3)), xj, 0.0).any()


# ----------------------------------------------------------------------------- displacement

def test_relative_displacement_against_numpy(rng):
    a0, w0, valid = particle_set(rng, garbage_padding=True)
    a = a0 + 0.1 * rng.standard_normal(M)
    w = w0 + 0.2 * rng.standard_normal((M, D))
    r = WIDTH
    rd_w = np.sqrt(np.sum((w[:r] - w0[:r]) ** 2) / np.sum(w0[:r] ** 2))
    rd_a = np.sqrt(np.sum((a[:r] - a0[:r]) ** 2) / np.sum(a0[:r] ** 2))
    theta, theta0 = np.c_[a[:r], w[:r]], np.c_[a0[:r], w0[:r]]
    rd_theta = np.linalg.norm(theta - theta0) / np.linalg.norm(theta0)
    args = [jnp.asarray(v) for v in (a, w, a0, w0)]
    got = ob.relative_displacements(*args, valid)
    assert float(got["w"]) == pytest.approx(rd_w, rel=1e-13)
    assert float(got["a"]) == pytest.approx(rd_a, rel=1e-13)
    assert float(got["theta"]) == pytest.approx(rd_theta, rel=1e-13)
    rd = ob.relative_displacement
    assert float(rd(args[1], args[3], valid)) == pytest.approx(rd_w, rel=1e-13)
    assert float(rd(args[0], args[2], valid)) == pytest.approx(rd_a, rel=1e-13)
    assert float(ob.relative_displacement(args[3], args[3], valid)) == 0.0


def test_dead_displacement_max():
    x = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    w0 = np.array([[-1.0, -1.0, -0.5],   # dead, stays dead after moving: counts (0.3)
                   [-2.0, -2.0, -1.0],   # dead, moves 0.5 but stays dead: counts (max)
                   [1.0, 1.0, 0.0],      # alive at 0 and now: ignored
                   [-1.0, -1.0, -0.5],   # dead at 0, alive now: ignored
                   [0.0, -1.0, 0.0],     # on the face w.x_0 = 0 at t=0 (inactive), dead now
                   [-5.0, -5.0, -5.0]])  # padding (nonzero to test the mask)
    w = w0.copy()
    w[0] += [0.0, 0.0, 0.3]
    w[1] += [0.0, -0.3, 0.4]
    w[2] += [3.0, 0.0, 0.0]
    w[3] += [2.0, 2.0, 2.0]
    w[4] += [-0.1, 0.0, 0.0]
    w[5] += [0.0, 0.0, 9.0]
    valid = np.array([True] * 5 + [False])
    got = ob.dead_displacement_max(jnp.asarray(w), jnp.asarray(w0), jnp.asarray(x), 1e-9, valid)
    expect = max(np.linalg.norm(w[i] - w0[i]) for i in (0, 1, 4))
    assert float(got) == pytest.approx(expect, rel=1e-14) and expect == pytest.approx(0.5)
    assert float(ob.dead_displacement_max(jnp.asarray(w0), jnp.asarray(w0), jnp.asarray(x))) == 0.0
    none_dead = ob.dead_displacement_max(jnp.asarray(w[2:3]), jnp.asarray(w0[2:3]), jnp.asarray(x))
    assert float(none_dead) == 0.0


# ----------------------------------------------------------------------------- condensation

def test_effective_directions(rng):
    n = 16
    one_hot = np.zeros(n)
    one_hot[5] = 3.0
    rows = np.stack([one_hot, np.full(n, 0.25), rng.uniform(size=n), np.zeros(n)])
    got = np.asarray(ob.effective_directions(jnp.asarray(rows)))
    q = rows[2] / rows[2].sum()
    np.testing.assert_allclose(got[:3], [1.0, n, np.exp(-sum(v * np.log(v) for v in q))],
                               rtol=1e-13)
    assert np.isnan(got[3])
    # batch over signs, raw and normalised rows agree
    dens = jnp.asarray(rng.uniform(size=(2, n)))
    np.testing.assert_allclose(ob.effective_directions(dens),
                               ob.effective_directions(ob.normalise(dens)), rtol=1e-14)


def np_peak_mass(p, delta, k):
    """Greedy top-k windows on the circle, with explicit index sets."""
    n = len(p)
    remaining = set(range(n))
    mass = 0.0
    for _ in range(k):
        if not remaining:
            break
        peak = max(sorted(remaining), key=lambda i: p[i])
        window = {(peak + o) % n for o in range(-delta, delta + 1)}
        mass += sum(p[i] for i in window & remaining)
        remaining -= window
    return mass / sum(p)


def test_peak_mass_against_greedy_loop(rng):
    n = 20
    rows = rng.uniform(size=(6, n)) ** 4
    for delta, k in [(0, 1), (1, 2), (2, 3), (3, 5), (9, 1), (10, 1), (0, 0)]:
        got = np.asarray(ob.peak_mass(jnp.asarray(rows), delta, k))
        expect = [np_peak_mass(r, delta, k) for r in rows]
        np.testing.assert_allclose(got, expect, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(ob.peak_mass(jnp.asarray(rows), 10, 1), 1.0, rtol=1e-14)
    assert np.isnan(ob.peak_mass(jnp.zeros(n), 1, 1))


def test_peak_mass_concentrated_rows():
    n = 24
    p = np.zeros(n)
    p[[0, 1, 23]] = [0.5, 0.1, 0.2]      # peak at 0, wrapping to bin 23
    p[[10, 12]] = [0.3, 0.25]           # second peak at 10 (bin 12 within delta = 2)
    assert float(ob.peak_mass(jnp.asarray(p), 2, 2)) == pytest.approx(1.0, rel=1e-14)
    assert float(ob.peak_mass(jnp.asarray(p), 1, 2)) == pytest.approx(1.1 / 1.35, rel=1e-14)
    assert float(ob.peak_mass(jnp.asarray(p), 2, 1)) == pytest.approx(0.8 / 1.35, rel=1e-14)
    # overlapping windows do not double count: k larger than needed stays 1
    assert float(ob.peak_mass(jnp.asarray(p), 2, 6)) == pytest.approx(1.0, rel=1e-14)


# ----------------------------------------------------------------------------- jit composition

def test_observables_compose_in_one_jit_with_traced_width(rng):
    """As in the run loop: one jitted function, traced width, padded particles."""
    a, w, _ = particle_set(rng)
    a0, w0 = a.copy(), w - 0.01
    w0[WIDTH:] = 0.0
    x = np.concatenate([rng.standard_normal((4, D - 1)), np.ones((4, 1))], axis=1)
    basis = jnp.asarray(ob.span_basis(x[0], x[1]))

    @jax.jit
    def record(a, w, a0, w0, x, width):
        valid = ob.valid_mask(a.shape[0], width)
        sign = ob.sign_index(a)
        amp = ob.amplitude(a, w, True)
        dens = ob.directional_density(ob.neuron_angles(w, basis), sign, valid, amp, n_bins=8)
        stats = ob.activation_patterns(w, x, sign, valid, 1e-9)
        return {"density": dens, "eff": ob.effective_directions(dens),
                "peak": ob.peak_mass(ob.normalise(dens), 1, 2), "alive": stats.alive_fraction,
                "rd": ob.relative_displacements(a, w, a0, w0, valid)["w"],
                "cos": ob.reference_cosines(w, x[:2], sign, ob.alive_mask(w, x, 1e-9, valid)),
                "dead": ob.dead_displacement_max(w, w0, x, 1e-9, valid)}

    args = [jnp.asarray(v) for v in (a, w, a0, w0, x)]
    out = record(*args, jnp.asarray(WIDTH))
    valid = np.arange(M) < WIDTH
    angles = np.asarray(ob.neuron_angles(args[1], basis))
    amp = np.abs(a) * np.linalg.norm(w, axis=1)
    np.testing.assert_allclose(out["density"], np_directional(angles, amp, np_sign(a), valid, 8),
                               rtol=1e-13)
    _, _, _, alive = np_activation(w, x, np_sign(a), valid, 1e-9)
    np.testing.assert_allclose(out["alive"], alive, rtol=1e-14)
    assert out["cos"].shape == (2, 2, 3) and out["peak"].shape == (2,)
    # a smaller traced width reuses the program and masks more rows
    fewer = record(*args, jnp.asarray(10))
    assert float(fewer["density"].sum()) < float(out["density"].sum())
