"""Per-neuron kernels, lifted with ``vmap`` and evaluated in memory-bounded chunks.

Particles interact only through the n-vector of aggregated residuals
``R_j = sum_{i: x_i = x_j} weight_i * l'(f(x_i), y_i)`` over the distinct inputs x_j, so one
evaluation costs O(m n D) time and O(m D + n D + n * chunk) memory, never O(m n)
(arXiv 2007.07497 / docs/theory/model.md).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from meanfield.particles import sharding
from meanfield.particles._pytree import pytree_dataclass
from meanfield.particles.losses import loss_derivative, loss_value

# Particles per chunk. The (chunk, n) activations of one chunk (1.6 MB at n = 100, float32)
# then stay in a 2 MB per-core L2: with the fused kernels below, chunks of 2000-6000 measured
# ~1.5x faster than 12000 at m = 10^5..10^7 on a CPU with 2 MB L2 (benchmarks/bench_engine.py),
# and power-of-two chunks (4096, 65536) were no slower than their neighbours.
DEFAULT_CHUNK = 4_000

# Chunks evaluated side by side in one iteration of the Euler pass's chunk loop on CPU.
# XLA:CPU runs the independent operations of a program concurrently on its thread pool: two
# chunks per iteration give it two independent chains, where one chunk's operations were each
# split over the threads and joined (1.3-1.5x at m = 10^4..10^7, benchmarks/bench_engine.py).
# Each concurrent chunk is one more copy of the chunk body to compile (a third for the last
# chunk of an odd count). Only the Euler pass uses it, where every integrator keeps the bits
# of one chunk at a time (tests/test_kernels.py); the adaptive flow's motion pass and Heun's
# two velocity passes rounded differently when unrolled (XLA fuses the unrolled program
# differently), by one ulp.
CPU_CONCURRENT_CHUNKS = 2

# Widest D whose pre-activations are multiply-adds rather than a dot (neuron_preactivation).
# Euler steps at m = 1e5, n = 100, float32: multiply-adds 1.5x faster at D = 4, a dot 1.1x
# faster at D = 5, 2.9x at D = 7, 12x at D = 101.
MULTIPLY_ADD_MAX_DIM = 4

# Longest sum over samples taken as one flat reduction (``sample_sum``). XLA:CPU splits a
# longer flat reduction over its threads (a weighted count over 50000 float32 samples rounded
# differently on one core than on two); shorter ones, every preset's, keep their programs.
SAMPLE_SUM_BLOCK = 4_096

# Precision of every matrix product of the engine (``matmul``). JAX's default lets TPUs
# multiply float32 operands in one bfloat16 pass (about 3 significant digits) and GPUs in
# TF32 (about 4); HIGHEST keeps float32 products float32, as the multiply-adds of narrow
# inputs are. On CPU both give the same bits (docs/precision.md).
MATMUL_PRECISION = jax.lax.Precision.HIGHEST


@pytree_dataclass
class Particles:
    """Neurons as particles theta_k = (a_k, w_k), padded to a whole number of chunks.

    Attributes:
        a: output weights (or frozen marks), shape (m_pad,).
        w: input weights with the bias last, shape (m_pad, D).
    Padding neurons are exactly zero: they contribute nothing and never move.
    """

    a: jax.Array
    w: jax.Array


@pytree_dataclass(static=("loss", "trainable", "n_chunks"))
class Problem:
    """Array-level description of one run (all per-run numbers are traced, not baked in).

    Attributes:
        x: distinct augmented training inputs, shape (n_u, D).
        inverse: index of each sample among the distinct inputs, shape (n,).
        y: labels, shape (n,).
        weights: sample weights (sum 1), shape (n,).
        inv_width: 1/m, scalar (traced: changing the width does not recompile).
        loss: loss kind (static).
        trainable: whether a moves (static).
        n_chunks: number of particle chunks (static; chunk = m_pad / n_chunks).
    """

    x: jax.Array
    inverse: jax.Array
    y: jax.Array
    weights: jax.Array
    inv_width: jax.Array
    loss: str
    trainable: bool
    n_chunks: int


def chunk_layout(width: int, chunk_size: int | None = None,
                 devices: int = 1) -> tuple[int, int]:
    """(n_chunks, chunk) with n_chunks * chunk >= width, the chunk independent of ``devices``.

    The width is split into ceil(width / chunk_size) chunks of equal size rounded up to a
    multiple of 8 (one chunk for small widths); with ``devices`` the number of chunks is then
    padded with all-zero chunks to a multiple of it, so every device of a particle mesh holds
    whole chunks (``meanfield.particles.sharding``). The real chunks are the same for every
    device count, and sums over particles are taken chunk by chunk in chunk order
    (``scan_chunks``), so they do not depend on the device count.
    """
    chunk_size = DEFAULT_CHUNK if chunk_size is None else int(chunk_size)
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be a positive integer")
    if devices < 1:
        raise ValueError(f"devices={devices} must be a positive integer")
    n_real = max(1, math.ceil(width / chunk_size))
    chunk = 8 * math.ceil(math.ceil(width / n_real) / 8)
    return devices * math.ceil(n_real / devices), chunk


# ----------------------------------------------------------------------------- one neuron

def matmul(a, b):
    """``a @ b`` (``jnp.matmul``) at ``MATMUL_PRECISION``: the engine's one matrix product."""
    return jnp.matmul(a, b, precision=MATMUL_PRECISION)


def neuron_activation(w, x):
    """Hidden activation relu(w . x_j) of one neuron at every input, shape (n,)."""
    return jax.nn.relu(matmul(x, w))


def neuron_output(a, w, x):
    """Contribution a * relu(w . x_j) of one neuron to m f, shape (n,). a: (), w: (D,), x: (n, D)."""
    return a * neuron_activation(w, x)


def neuron_preactivation(w, x, max_multiply_add_dim: int | None = None):
    """Pre-activation w . x_j of one neuron at every input, shape (n,). w: (D,), x: (n, D).

    Also the adaptive flow's other products of a D-vector with the inputs (x_j . G).
    For D <= ``max_multiply_add_dim`` it is written as D scalar-times-column multiply-adds:
    vmapped over a chunk, XLA:CPU emits the (chunk, n) result as one elementwise loop fusion
    that it fuses with its consumer (the mask or the ReLU), where a dot with a width-D
    contraction is a separate library call writing its own (chunk, n) buffer. Wider, the
    unrolled loop costs more than the buffer (and grows the program), so it is
    ``matmul(x, w)`` (``benchmarks/bench_engine.py --input-dim``).

    Args:
        w: (D,) weights (or any D-vector).
        x: (n, D) inputs.
        max_multiply_add_dim: a Python int, the widest D written as multiply-adds (static: it
            picks the program); None reads ``MULTIPLY_ADD_MAX_DIM`` when called.
    Returns:
        (n,) the products x_j . w.
    """
    if max_multiply_add_dim is None:
        max_multiply_add_dim = MULTIPLY_ADD_MAX_DIM
    if x.shape[1] > max_multiply_add_dim:
        return matmul(x, w)
    z = w[0] * x[:, 0]
    for k in range(1, x.shape[1]):
        z = z + w[k] * x[:, k]
    return z


def neuron_velocity(a, w, x, residual, trainable: bool):
    """Gradient-flow velocity of one particle, -grad_theta Psi(theta; mu) (docs/theory/model.md).

    With the masked residual field g = sum_j R_j 1[w . x_j > 0] x_j, dw/dt = -a g and, since
    relu(z) = z 1[z > 0], da/dt = -sum_j R_j relu(w . x_j) = -w . g: one reduction over the
    inputs serves both layers. Vmapped over a chunk, the masked residuals form one (chunk, n)
    loop fusion (``neuron_preactivation``, for narrow inputs) and g is one (chunk, n) x (n, D)
    matrix product.

    Args:
        a: (), w: (D,), x: (n, D) distinct inputs, residual: (n,) aggregated residuals R.
        trainable: if False the output weight is a frozen mark (da/dt = 0).
    Returns:
        (da/dt (), dw/dt (D,)).
    """
    g = matmul(jnp.where(neuron_preactivation(w, x) > 0, residual, 0), x)
    # w . g as multiply-adds for narrow inputs (``neuron_preactivation`` at the one input w):
    # vmapped, a dot of width D per neuron is a library call per chunk that cost as much as
    # the (chunk, n) x (n, D) product above
    da = -neuron_preactivation(g, w[None, :])[0] if trainable else jnp.zeros_like(a)
    return da, -a * g


# ----------------------------------------------------------------------------- chunked passes

def concurrent_chunks() -> int:
    """Chunks per iteration of the Euler pass's chunk loop on the default backend
    (``CPU_CONCURRENT_CHUNKS`` on CPU; 1 on GPU and TPU, where one chunk fills the device)."""
    return CPU_CONCURRENT_CHUNKS if jax.default_backend() == "cpu" else 1


def scan_chunks(fn: Callable, tree, n_chunks: int, summed_init, *, concurrent: int = 1):
    """Apply ``fn`` chunk by chunk, stacking per-particle outputs and summing the rest.

    Args:
        fn: chunk_tree -> (per_particle_tree, summed_tree); per-particle leaves have the chunk
            as leading axis, summed leaves are reduced over chunks by addition.
        tree: pytree with leading axis m_pad = n_chunks * chunk.
        n_chunks: static number of chunks.
        summed_init: start of the sums, with the structure of summed_tree.
        concurrent: chunks per loop iteration (``concurrent_chunks``); the same results for
            any value.
    Returns:
        (per_particle_tree with leading axis m_pad, summed_init + the chunk sums in chunk order).

    The sums do not depend on how the chunks are split over a particle mesh: every device
    computes the sums of its own chunks, the per-chunk sums are gathered, and every device adds
    them in chunk order (``ordered_sum``).
    """
    per_particle, partials = chunk_partials(fn, tree, n_chunks, concurrent=concurrent)
    return per_particle, ordered_sum(partials, summed_init)


def chunk_partials(fn: Callable, tree, n_chunks: int, *, concurrent: int = 1):
    """Apply ``fn`` chunk by chunk; per-particle outputs stacked, summed outputs kept per chunk.

    Args:
        fn, tree, n_chunks, concurrent: as in ``scan_chunks``.
    Returns:
        (per_particle_tree with leading axis m_pad, summed_tree of every chunk with leading
        axis n_chunks). Under a particle mesh the per-particle tree stays sharded and the
        per-chunk sums are gathered (replicated) in chunk order.
    """
    if sharding.mesh_size():
        local = sharding.local_chunks(n_chunks)
        return sharding.per_shard(
            lambda shard: _gathered(_scan(fn, shard, local, concurrent)), (tree,),
            (sharding.SHARDED, sharding.REPLICATED))
    return _scan(fn, tree, n_chunks, concurrent)


def _gathered(result):
    """(per_particle, per-chunk sums of one shard) -> the per-chunk sums of all shards."""
    per_particle, partials = result
    return per_particle, sharding.all_gather(partials)


def trace_once(fn: Callable, *example):
    """``fn`` traced once, on arguments shaped like ``example``, for calls inside one program.

    Every call of a Python function in a program being traced runs its Python again, and a
    large function (the observables, a chunk of a pass) costs that time at every call site.
    The function returned evaluates the one trace instead: the same operations, so the same
    compiled program and numbers, without running ``fn``'s Python again.

    Args:
        fn: a function of pytrees of arrays.
        example: its arguments, or ``jax.ShapeDtypeStruct`` trees of the same structure.
    Returns:
        (call, out_shape): ``call(*args)`` for arguments of the example's structure, shapes
        and dtypes gives ``fn(*args)``; ``out_shape`` is the tree of its output shapes.
    """
    traced, out_shape = jax.make_jaxpr(fn, return_shape=True)(*example)
    out_tree = jax.tree.structure(out_shape)
    evaluate = jax.extend.core.jaxpr_as_fun(traced)
    return (lambda *args: jax.tree.unflatten(out_tree, evaluate(*jax.tree.leaves(args))),
            out_shape)


def _scan(fn: Callable, tree, n_chunks: int, concurrent: int):
    """``chunk_partials`` on the particles at hand.

    The per-particle outputs are written chunk by chunk into whole-width buffers carried by the
    loop; a chunk's output of leading length k (the chunk, or 1 for one value per chunk) fills
    rows i k to (i + 1) k. Outputs shaped like ``tree`` (the Euler pass's new particles, the
    velocities) are written over one copy of ``tree``, taken before the loop: no zero-filled
    buffer and no stacking (at m = 1e7 filling and stacking took a quarter of an Euler step).
    Other outputs get zero-filled buffers. The chunks are read from ``tree``, never from the
    buffers written (XLA:CPU then copies the whole buffer on every trip), and the per-chunk
    sums are carried too (a loop that also stacks outputs, ``lax.scan``'s ys, copies its
    carried buffers on every trip as well).
    """
    if not isinstance(concurrent, int) or concurrent < 1:
        raise ValueError(f"concurrent={concurrent!r} must be a positive integer")
    m_pad = jax.tree.leaves(tree)[0].shape[0]
    if m_pad % n_chunks:
        raise ValueError(f"{m_pad} particles are not {n_chunks} chunks of equal size")
    size = m_pad // n_chunks
    chunk_shape = jax.eval_shape(lambda t: _take(t, 0, size), tree)
    # tracing fn again for every chunk side by side made starting a run's program 15-20% slower
    chunk_fn, (out_shape, partial_shape) = trace_once(fn, chunk_shape)
    if any(s.ndim == 0 for s in jax.tree.leaves(out_shape)):
        raise ValueError("a per-particle output of a chunk needs a leading axis (the chunk, or "
                         "1 for one value per chunk)")
    in_place = _same_layout(out_shape, chunk_shape)
    zeros = lambda s: jnp.zeros((n_chunks * s.shape[0],) + s.shape[1:], s.dtype)
    buffers = tree if in_place else jax.tree.map(zeros, out_shape)
    partials = jax.tree.map(lambda s: jnp.zeros((n_chunks,) + s.shape, s.dtype), partial_shape)

    def group(first, count, carry):  # chunks first .. first + count - 1, side by side
        buffers, partials = carry
        chunks = [_take(tree, first + k, size) for k in range(count)]
        for k, (per_particle, partial) in enumerate([chunk_fn(chunk) for chunk in chunks]):
            i = first + k
            buffers = jax.tree.map(lambda b, v: jax.lax.dynamic_update_slice_in_dim(
                b, v, i * v.shape[0], 0), buffers, per_particle)
            partials = jax.tree.map(lambda b, v: jax.lax.dynamic_update_index_in_dim(b, v, i, 0),
                                    partials, partial)
        return buffers, partials

    # Every chunk is computed inside a loop, even a lone one (a loop of one trip): inlined into
    # the program around it, a chunk rounds differently (a luo_1d Heun run at one chunk then
    # differed from the previous version by one ulp; the last chunk of an odd count, from the
    # same chunk inside the loop, by one ulp).
    concurrent = min(concurrent, n_chunks)
    n_groups, rest = divmod(n_chunks, concurrent)
    carry = jax.lax.fori_loop(0, n_groups, lambda g, c: group(g * concurrent, concurrent, c),
                              (buffers, partials))
    if rest:
        carry = jax.lax.fori_loop(n_groups * concurrent, n_chunks, lambda i, c: group(i, 1, c),
                                  carry)
    return carry


def _take(source, i, size: int):
    """Chunk i (of ``size`` particles) of every leaf of ``source``."""
    return jax.tree.map(lambda v: jax.lax.dynamic_slice_in_dim(v, i * size, size), source)


def _same_layout(a, b) -> bool:
    """Whether two pytrees of shapes have the same structure, shapes and dtypes."""
    return (jax.tree.structure(a) == jax.tree.structure(b)
            and all(x.shape == y.shape and x.dtype == y.dtype
                    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))))


def ordered_sum(partials, init):
    """init + partials[0] + partials[1] + ... added one after the other, leafwise.

    A fixed order, so the sum is the same for any number of trailing zero partials and for
    any split of the partials over devices.

    Args:
        partials: pytree whose leaves have a leading axis (k, ...).
        init: pytree of the leaves' trailing shapes (or None where partials has None).
    """
    if partials is None:
        return init
    total, _ = jax.lax.scan(lambda acc, p: (jax.tree.map(jnp.add, acc, p), None), init,
                            partials)
    return total


def sample_sum(values):
    """Sum of ``values`` (n,) over the samples, the same bits on any number of cores.

    Up to ``SAMPLE_SUM_BLOCK`` entries one flat reduction; longer, the sums of blocks of
    ``SAMPLE_SUM_BLOCK`` entries (a row reduction, whose rows XLA:CPU may spread over its
    threads but never splits) added in block order (``ordered_sum``).
    """
    n = values.shape[0]
    if n <= SAMPLE_SUM_BLOCK:
        return jnp.sum(values)
    blocks = jnp.pad(values, (0, -n % SAMPLE_SUM_BLOCK)).reshape(-1, SAMPLE_SUM_BLOCK)
    return ordered_sum(blocks.sum(axis=1), jnp.zeros((), values.dtype))


def particle_sum(values, n_chunks: int):
    """Sum of every leaf of ``values`` over its leading (particle) axis of n_chunks * chunk
    entries, chunk by chunk in chunk order (``scan_chunks``: independent of the device count).
    """
    def fn(chunk):
        return None, jax.tree.map(lambda v: v.sum(0), chunk)

    zeros = jax.tree.map(lambda v: jnp.zeros(v.shape[1:], v.dtype), values)
    return scan_chunks(fn, values, n_chunks, zeros)[1]


def network_output(particles: Particles, x, inv_width, n_chunks: int):
    """f(x) = (1/m) sum_k a_k relu(w_k . x), shape (k,), for points x of shape (k, D)."""

    def fn(chunk):
        out = jax.vmap(neuron_output, in_axes=(0, 0, None))(chunk.a, chunk.w, x)
        return None, out.sum(0)

    _, total = scan_chunks(fn, particles, n_chunks, jnp.zeros(x.shape[0], x.dtype))
    return total * inv_width


def residuals(problem: Problem, f_unique):
    """Aggregated residuals R_j = sum over samples at x_j of weight_i l'(f, y_i), shape (n_u,)."""
    r = problem.weights * loss_derivative(problem.loss, f_unique[problem.inverse], problem.y)
    return jax.ops.segment_sum(r, problem.inverse, num_segments=problem.x.shape[0])


def risk(problem: Problem, f_unique):
    """Training loss R = sum_i weight_i l(f(x_i), y_i), scalar."""
    return sample_sum(problem.weights * loss_value(problem.loss, f_unique[problem.inverse],
                                                   problem.y))


def velocity(problem: Problem, particles: Particles, residual):
    """Velocities of all particles for a given residual vector, chunked over particles.

    Returns:
        Particles-shaped pytree of (da/dt (m_pad,), dw/dt (m_pad, D)).
    """
    kernel = jax.vmap(neuron_velocity, in_axes=(0, 0, None, None, None))

    def fn(chunk):
        da, dw = kernel(chunk.a, chunk.w, problem.x, residual, problem.trainable)
        return Particles(a=da, w=dw), None

    vel, _ = scan_chunks(fn, particles, problem.n_chunks, None)
    return vel


def chunk_output(chunk: Particles, x):
    """sum_k a_k relu(w_k . x_j) over one chunk, shape (n,).

    The activations are stacked as (chunk, n), for narrow inputs one loop fusion of the D
    multiply-adds and the ReLU (``neuron_preactivation``), and contracted with a as one
    vector-matrix product.
    ``network_output`` keeps ``neuron_output`` (a dot per neuron): the adaptive flow starts from
    it, and its results stay bitwise those of the committed validation reports.
    """
    relu_preactivation = lambda w: jax.nn.relu(neuron_preactivation(w, x))
    return matmul(chunk.a, jax.vmap(relu_preactivation)(chunk.w))


def euler_pass(problem: Problem, particles: Particles, residual, dt):
    """One explicit Euler (= GD) update fused with the forward pass at the new positions.

    Returns:
        (new particles, f at the distinct inputs after the update (n_u,)).
    """
    kernel = jax.vmap(neuron_velocity, in_axes=(0, 0, None, None, None))

    def fn(chunk):
        da, dw = kernel(chunk.a, chunk.w, problem.x, residual, problem.trainable)
        new = Particles(a=chunk.a + dt * da, w=chunk.w + dt * dw)
        return new, chunk_output(new, problem.x)

    new, total = scan_chunks(fn, particles, problem.n_chunks,
                             jnp.zeros(problem.x.shape[0], problem.x.dtype),
                             concurrent=concurrent_chunks())
    return new, total * problem.inv_width


def to_device(value, dtype) -> jax.Array:
    """Host data ``value`` as a device array of ``dtype``, converted on the host: a transfer
    only (``jnp.asarray`` of host data, or a dtype conversion on the device, compiles a small
    program for every shape and dtype)."""
    return jax.device_put(np.asarray(value, dtype=dtype))


def make_problem(*, x_unique, inverse, y, weights, width: int, loss: str, trainable: bool,
                 n_chunks: int, dtype) -> Problem:
    """Build a Problem from host arrays (see ``meanfield.particles.model.TrainingData.unique_inputs``)."""
    return Problem(
        x=to_device(x_unique, dtype), inverse=to_device(inverse, np.int32),
        y=to_device(y, dtype), weights=to_device(weights, dtype),
        inv_width=to_device(1.0 / width, dtype),
        loss=loss, trainable=trainable, n_chunks=n_chunks,
    )
