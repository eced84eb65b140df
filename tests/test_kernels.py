"""The engine's velocity is -m * grad R (autodiff), and the vmapped kernel equals a per-neuron loop."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import meanfield.particles as pt
from meanfield.particles.flow import FLOW_MULTIPLY_ADD_MAX_DIM, move_particle
from meanfield.particles.losses import loss_derivative, loss_value

VARIANTS = list(itertools.product(("squared", "exponential", "logistic"), (True, False),
                                  (True, False)))


def random_problem(rng, *, loss, bias, trainable, n=7, d=3, m=37, repeat=True, chunk=16):
    x = rng.standard_normal((n, d))
    if repeat:  # repeated inputs share a face: exercise the aggregation
        x[-1] = x[0]
    y = np.sign(rng.standard_normal(n)) if loss != "squared" else rng.standard_normal(n)
    w8 = rng.uniform(0.5, 1.5, n)
    data = pt.TrainingData(x=x, y=y, weights=w8 / w8.sum())
    xu, inv = data.unique_inputs(bias)
    n_chunks, c = pt.chunk_layout(m, chunk)
    problem = pt.make_problem(x_unique=xu, inverse=inv, y=y, weights=data.weights, width=m,
                              loss=loss, trainable=trainable, n_chunks=n_chunks, dtype=jnp.float64)
    a = np.zeros(n_chunks * c)
    w = np.zeros((n_chunks * c, d + bias))
    a[:m] = rng.standard_normal(m)
    w[:m] = rng.standard_normal((m, d + bias))
    return data, problem, pt.Particles(a=jnp.asarray(a), w=jnp.asarray(w)), m


def reference_risk(a, w, data, bias, loss):
    """Direct O(n m) risk on the raw (non-deduplicated) samples."""
    x = jnp.asarray(data.augmented(data.x, bias))
    f = jax.nn.relu(x @ w.T) @ a / a.shape[0]
    return jnp.sum(jnp.asarray(data.weights) * loss_value(loss, f, jnp.asarray(data.y)))


@pytest.mark.parametrize("d", (3, 20))  # D = 3, 4: multiply-adds; D = 20, 21: a dot
@pytest.mark.parametrize("loss,bias,trainable", VARIANTS)
def test_velocity_equals_minus_m_grad(rng, loss, bias, trainable, d):
    data, problem, parts, m = random_problem(rng, loss=loss, bias=bias, trainable=trainable,
                                             d=d)
    a, w = parts.a[:m], parts.w[:m]
    grad_a, grad_w = jax.grad(reference_risk, argnums=(0, 1))(a, w, data, bias, loss)
    f = pt.network_output(parts, problem.x, problem.inv_width, problem.n_chunks)
    vel = pt.velocity(problem, parts, pt.residuals(problem, f))
    expect_a = -m * grad_a if trainable else jnp.zeros_like(a)
    np.testing.assert_allclose(vel.w[:m], -m * grad_w, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(vel.a[:m], expect_a, rtol=1e-10, atol=1e-14)
    assert np.all(vel.a[m:] == 0) and np.all(vel.w[m:] == 0)  # padding never moves
    np.testing.assert_allclose(pt.risk(problem, f), reference_risk(a, w, data, bias, loss),
                               rtol=1e-12)


@pytest.mark.parametrize("trainable", (True, False))
def test_vmapped_kernel_equals_python_loop(rng, trainable):
    data, problem, parts, m = random_problem(rng, loss="squared", bias=True, trainable=trainable)
    residual = jnp.asarray(rng.standard_normal(problem.x.shape[0]))
    vel = pt.velocity(problem, parts, residual)
    x, r = np.asarray(problem.x), np.asarray(residual)
    for k in range(m):
        a, w = float(parts.a[k]), np.asarray(parts.w[k])
        da = db = 0.0
        dw = np.zeros_like(w)
        for j in range(x.shape[0]):
            z = x[j] @ w
            if z > 0:
                da -= r[j] * z
                dw -= a * r[j] * x[j]
        np.testing.assert_allclose(vel.w[k], dw, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(vel.a[k], da if trainable else db, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("loss", ("squared", "exponential", "logistic"))
def test_loss_derivative_matches_autodiff(loss):
    f = jnp.linspace(-3, 3, 41)
    for y in (-1.0, 1.0, 0.3):
        auto = jax.vmap(jax.grad(lambda v: loss_value(loss, v, y)))(f)
        np.testing.assert_allclose(loss_derivative(loss, f, y), auto, rtol=1e-12)


def test_network_output_independent_of_chunking(rng):
    data, problem, parts, m = random_problem(rng, loss="squared", bias=True, trainable=True, m=50)
    a, w = parts.a[:m], parts.w[:m]
    direct = jax.nn.relu(problem.x @ w.T) @ a / m
    for chunk in (1, 7, 16, 50, 1000):
        n_chunks, c = pt.chunk_layout(m, chunk)
        padded = pt.Particles(a=jnp.zeros(n_chunks * c).at[:m].set(a),
                              w=jnp.zeros((n_chunks * c, w.shape[1])).at[:m].set(w))
        out = pt.network_output(padded, problem.x, problem.inv_width, n_chunks)
        np.testing.assert_allclose(out, direct, rtol=1e-12)


@pytest.mark.parametrize("dim", (1, 2, 4, 5, 8, 9, 21))
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-13), (np.float32, 1e-5)])
def test_preactivation_equals_float64_product(rng, dim, dtype, rtol):
    """Both formulations (multiply-adds up to the threshold given, a dot beyond) against a
    float64 matrix product, at the thresholds of the Euler pass and of the motion pass."""
    x = rng.standard_normal((11, dim))
    w = rng.standard_normal((6, dim))
    want = w @ x.T
    for max_dim in (None, FLOW_MULTIPLY_ADD_MAX_DIM, 0, dim):
        got = jax.vmap(pt.kernels.neuron_preactivation, (0, None, None))(
            jnp.asarray(w, dtype), jnp.asarray(x, dtype), max_dim)
        assert got.dtype == dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())


def _dots(fn, *args) -> int:
    """Matrix products in the jaxpr of ``fn(*args)``."""
    return str(jax.make_jaxpr(fn)(*args)).count("dot_general")


def test_each_pass_switches_to_a_dot_above_its_threshold(rng):
    """The Euler pass's kernels take multiply-adds up to MULTIPLY_ADD_MAX_DIM and a dot above
    it; the motion pass up to FLOW_MULTIPLY_ADD_MAX_DIM (the two formulations agree to
    rounding, so only the programs tell which one runs)."""
    euler_max = pt.kernels.MULTIPLY_ADD_MAX_DIM
    for dim in (1, euler_max, euler_max + 1, 21):
        x, w = jnp.ones((5, dim)), jnp.ones(dim)
        assert (_dots(pt.kernels.neuron_preactivation, w, x) == 1) == (dim > euler_max)

    def velocity_dots(dim):
        x, r = jnp.ones((5, dim)), jnp.ones(5)
        return _dots(lambda a, w: pt.kernels.neuron_velocity(a, w, x, r, True), 1.0,
                     jnp.ones(dim))

    assert velocity_dots(euler_max - 1) == velocity_dots(euler_max) < velocity_dots(euler_max + 1)

    def motion_dots(dim):
        x = jnp.asarray(rng.standard_normal((5, dim)))
        args = (x, jnp.sum(x * x, 1), jnp.ones(5), jnp.asarray(0.1), 1e-6, 0.0, True)
        return _dots(lambda a, w: move_particle(a, w, *args), 1.0, jnp.ones(dim))

    flow_max = FLOW_MULTIPLY_ADD_MAX_DIM
    assert motion_dots(flow_max - 1) == motion_dots(flow_max) < motion_dots(flow_max + 1)


@pytest.mark.parametrize("d", (3, 20))
def test_euler_pass_equals_velocity_update(rng, d):
    data, problem, parts, m = random_problem(rng, loss="logistic", bias=False, trainable=True,
                                             d=d)
    f = pt.network_output(parts, problem.x, problem.inv_width, problem.n_chunks)
    r = pt.residuals(problem, f)
    vel = pt.velocity(problem, parts, r)
    new, f_new = pt.kernels.euler_pass(problem, parts, r, 0.01)
    np.testing.assert_allclose(new.w, parts.w + 0.01 * vel.w, rtol=1e-13)
    np.testing.assert_allclose(new.a, parts.a + 0.01 * vel.a, rtol=1e-13)
    np.testing.assert_allclose(f_new, pt.network_output(new, problem.x, problem.inv_width,
                                                        problem.n_chunks), rtol=1e-12)


def test_chunk_layout_bounds():
    for m in (1, 7, 100, 12_000, 12_001, 10**5, 2**17, 10**7):
        n_chunks, chunk = pt.chunk_layout(m)
        assert n_chunks * chunk >= m
        assert n_chunks * chunk - m < max(chunk, 8) + 8 * n_chunks


@pytest.mark.parametrize("dtype", (jnp.float32, jnp.float64))
def test_concurrent_chunks_give_the_same_bits(rng, dtype):
    """Chunks evaluated side by side in one loop iteration (any count, including an odd
    remainder) give bitwise the results of one chunk at a time."""
    _, problem, parts, m = random_problem(rng, loss="squared", bias=True, trainable=True,
                                          m=75, chunk=16)
    assert problem.n_chunks == 5
    parts = jax.tree.map(lambda v: v.astype(dtype), parts)
    x = problem.x.astype(dtype)
    residual = jnp.asarray(rng.standard_normal(x.shape[0]), dtype)

    def fn(chunk):
        g = jax.vmap(pt.kernels.neuron_velocity, in_axes=(0, 0, None, None, None))(
            chunk.a, chunk.w, x, residual, True)
        return g, pt.kernels.chunk_output(chunk, x)

    def run(concurrent):
        return jax.jit(lambda p: pt.kernels.scan_chunks(
            fn, p, problem.n_chunks, jnp.zeros(x.shape[0], dtype), concurrent=concurrent))(parts)

    one_at_a_time = run(1)
    for concurrent in (2, 3, 5, 8):
        result = run(concurrent)
        for got, want in zip(jax.tree.leaves(result), jax.tree.leaves(one_at_a_time)):
            np.testing.assert_array_equal(got, want)
    assert pt.kernels.concurrent_chunks() == (
        pt.kernels.CPU_CONCURRENT_CHUNKS if jax.default_backend() == "cpu" else 1)


def test_trace_once_runs_the_python_once_and_gives_what_the_function_gives(rng):
    """A function traced once and called at two sites of one program runs its Python once;
    both calls give the function's values on their own arguments (numpy), pytrees and
    None leaves included."""
    calls = []

    def fn(tree, scale):
        calls.append(1)
        return {"sum": jnp.sum(tree["a"]) * scale, "rows": tree["b"] * 2.0, "none": None}

    tree = {"a": rng.standard_normal(5), "b": rng.standard_normal((3, 2))}

    @jax.jit
    def program(tree, scale):
        call, shape = pt.kernels.trace_once(fn, tree, scale)
        assert shape["rows"].shape == (3, 2) and shape["none"] is None
        shifted = {"a": tree["a"] + 1.0, "b": tree["b"]}
        return call(tree, scale), call(shifted, scale * 3.0)

    first, second = program(tree, 0.5)
    assert len(calls) == 1
    np.testing.assert_allclose(first["sum"], np.sum(tree["a"]) * 0.5, rtol=1e-12)
    np.testing.assert_allclose(second["sum"], np.sum(tree["a"] + 1.0) * 1.5, rtol=1e-12)
    np.testing.assert_array_equal(first["rows"], tree["b"] * 2.0)
    assert first["none"] is None and second["none"] is None


def test_chunk_partials_layouts_against_numpy(rng):
    """Per-particle outputs (shaped like the input: written over its copy; of another dtype
    or shape; one value per chunk) and per-chunk sums land where numpy puts them, for every
    number of chunks side by side; a width that is no whole number of chunks and a chunk
    output without a leading axis are refused."""
    a = rng.standard_normal(35)
    w = rng.standard_normal((35, 3))
    tree = pt.Particles(a=jnp.asarray(a), w=jnp.asarray(w))

    def fn(chunk):
        per_particle = (pt.Particles(a=2 * chunk.a, w=chunk.w + 1), (chunk.a > 0)[:, None],
                        jnp.max(chunk.a)[None])
        return per_particle, {"sum_w": chunk.w.sum(0), "count": jnp.sum(chunk.a > 0)}

    chunks = np.split(np.arange(35), 5)
    for concurrent in (1, 2, 3, 5, 8):
        (same, flags, maxima), sums = jax.jit(
            lambda t: pt.kernels.chunk_partials(fn, t, 5, concurrent=concurrent))(tree)
        np.testing.assert_array_equal(same.a, 2 * a)
        np.testing.assert_array_equal(same.w, w + 1)
        np.testing.assert_array_equal(flags[:, 0], a > 0)
        np.testing.assert_array_equal(maxima, [a[c].max() for c in chunks])
        np.testing.assert_allclose(sums["sum_w"], [w[c].sum(0) for c in chunks], rtol=1e-12)
        np.testing.assert_array_equal(sums["count"], [(a[c] > 0).sum() for c in chunks])
    with pytest.raises(ValueError, match="35 particles are not 3 chunks of equal size"):
        pt.kernels.chunk_partials(fn, tree, 3)
    with pytest.raises(ValueError, match="needs a leading axis"):
        pt.kernels.chunk_partials(lambda c: (jnp.max(c.a), None), tree, 5)


@pytest.mark.parametrize("m", (10, 30, 40, 75))  # 1, 2, 3 and 5 chunks of 16
def test_concurrent_euler_chunks_keep_every_integrators_bits(rng, m, monkeypatch):
    """The integrators built on the Euler pass (Euler, Heun, optax) give the same bits with
    the pass's chunks side by side as one at a time, inside their own programs."""
    import meanfield.particles.integrators as integrators

    _, problem, parts, _ = random_problem(rng, loss="squared", bias=True, trainable=True, m=m,
                                          chunk=16)
    parts = jax.tree.map(lambda v: v.astype(jnp.float32), parts)
    problem = pt.make_problem(x_unique=np.asarray(problem.x), inverse=np.asarray(problem.inverse),
                              y=np.asarray(problem.y), weights=np.asarray(problem.weights),
                              width=m, loss="squared", trainable=True,
                              n_chunks=problem.n_chunks, dtype=jnp.float32)
    solvers = (integrators.Euler(dt=0.05), integrators.Heun(dt=0.05),
               integrators.OptaxSolver(dt=0.05, optimizer="adam",
                                       optimizer_kwargs={"learning_rate": 0.05}))

    def run(concurrent):
        monkeypatch.setattr(pt.kernels, "CPU_CONCURRENT_CHUNKS", concurrent)
        results = []
        for solver in solvers:
            solver = solver.with_dtype(jnp.float32)
            steps = jax.jit(lambda s: jax.lax.fori_loop(
                0, 3, lambda _, st: solver.step(problem, st, jnp.inf), s))
            results.append(steps(solver.init(problem, parts)))
        return results

    one_at_a_time, side_by_side = run(1), run(2)
    for want, got in zip(one_at_a_time, side_by_side):
        for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("width", (1000, 12000))  # 1 and 3 chunks
def test_concurrent_euler_chunks_keep_a_heun_runs_bits(width, monkeypatch):
    """A whole run (Heun: the Euler pass beside two velocity passes in one compiled program)
    gives the same Dataset with the Euler pass's chunks side by side as one at a time."""
    import dataclasses

    import meanfield as mf

    config = dataclasses.replace(mf.presets.luo_1d(width=width, t_max=2.0, n_saves=3),
                                 solver=mf.Solver(kind="heun", dt=0.01))
    runs = []
    for concurrent in (1, 2):
        monkeypatch.setattr(pt.kernels, "CPU_CONCURRENT_CHUNKS", concurrent)
        jax.clear_caches()
        runs.append(mf.simulate(config, progress=False))
    for name in runs[0].data_vars:
        np.testing.assert_array_equal(runs[1][name].values, runs[0][name].values, err_msg=name)


@pytest.mark.parametrize("n", [1, 4096, 4097, 50000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sample_sum_is_a_flat_sum_up_to_a_block_then_block_sums_in_block_order(n, dtype):
    from meanfield.particles.kernels import SAMPLE_SUM_BLOCK

    values = np.random.default_rng(n).normal(size=n).astype(dtype)
    got = jax.jit(pt.sample_sum)(values)
    assert got.dtype == dtype
    # within the rounding of n additions of the float64 reference
    reference = np.sum(values.astype(np.float64))
    bound = n * np.finfo(dtype).eps * np.sum(np.abs(values.astype(np.float64)))
    assert abs(float(got) - reference) <= bound
    if n <= SAMPLE_SUM_BLOCK:  # the flat reduction it always was
        assert got == jax.jit(jnp.sum)(values)
        return
    blocks = np.asarray(jax.jit(lambda v: v.sum(axis=1))(
        np.pad(values, (0, -n % SAMPLE_SUM_BLOCK)).reshape(-1, SAMPLE_SUM_BLOCK)))
    total = dtype(0)
    for partial in blocks:  # one IEEE addition after the other, in block order
        total = dtype(total + partial)
    assert got == total
