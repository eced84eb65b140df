"""Particle-axis sharding: every pass over the particles runs shard by shard on a device mesh.

Particles interact only through the n-vector of aggregated residuals (docs/theory/model.md,
arXiv 2007.07497), so a pass over m particles split over P devices needs each device to scan
its own m / P particles and one collective on the n-vector sums. So that a run gives the same
numbers on any number of devices, sums over particles are never all-reduced: each device keeps
the sum of each of its chunks, the (n_chunks, n) chunk sums are all-gathered, and every
device adds them in chunk order (``kernels.scan_chunks``); with the chunks themselves
independent of the device count (``kernels.chunk_layout``) the result is bitwise the same.
That costs n_chunks * n values per pass instead of n (about P * n / (chunk * D) of the
particle memory a device holds: 5% at P = 8, n = 100, chunk = 4000, D = 4); the step
bounds' per-chunk minima and maxima travel with them. The mesh is taken from the trace
context (``jax.set_mesh``), which is part of JAX's compilation cache key: the same code runs
unsharded without a mesh, and a run under a mesh with a ``"particles"`` axis compiles its own
program.

Only the chunked passes (``kernels.scan_chunks`` and ``flow.move_particles``) are written
per shard with ``jax.shard_map``; everything between them (the integrators' elementwise
updates, optax) stays global code that XLA partitions from the input shardings. Whatever
sums over particles outside these passes goes through ``kernels.scan_chunks`` (or
``kernels.particle_sum``) for the same reason.
"""

from __future__ import annotations

from typing import Callable

import jax
from jax.sharding import AxisType, Mesh, PartitionSpec

AXIS = "particles"


def particle_mesh(devices) -> Mesh:
    """A one-axis mesh named ``"particles"`` over ``devices`` (a sequence of jax devices)."""
    devices = list(devices)
    if not devices:
        raise ValueError("devices must name at least one device")
    return Mesh(devices, (AXIS,), axis_types=(AxisType.Auto,))


def mesh_size() -> int:
    """Devices along the particle axis of the context mesh; 0 outside a particle mesh and
    inside a per-shard body (where every pass is local)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or AXIS not in mesh.axis_names or AXIS in mesh.manual_axes:
        return 0
    return mesh.shape[AXIS]


def constrain(tree):
    """Lay out every leaf of ``tree`` (leading axis: particles) along the particle axis of the
    context mesh; identity without one."""
    if not mesh_size():
        return tree
    return jax.lax.with_sharding_constraint(tree, PartitionSpec(AXIS))


def local_chunks(n_chunks: int) -> int:
    """Chunks per device for ``n_chunks`` chunks in all (must divide by the mesh size)."""
    size = mesh_size()
    if n_chunks % size:
        raise ValueError(f"n_chunks={n_chunks} must be a multiple of the {size} devices of the "
                         f"'{AXIS}' mesh axis (lay the particles out with "
                         "chunk_layout(width, chunk_size, devices))")
    return n_chunks // size


def all_gather(tree):
    """Concatenate ``tree``'s per-device leaves (leading axis) over the particle axis in
    device order (inside a per-shard body)."""
    return jax.lax.all_gather(tree, AXIS, tiled=True)


def per_shard(body: Callable, particle_args: tuple, out_specs):
    """``body(*particle_args)`` on each device's shard of the particles.

    Args:
        body: function of the local shards (every argument's leading axis split over the
            mesh); values it closes over are replicated. It must reduce over the mesh itself
            (``all_gather``) whatever it returns replicated.
        particle_args: arrays or pytrees with the particles as leading axis.
        out_specs: pytree prefix of body's output: ``SHARDED`` (per particle) or
            ``REPLICATED`` (already reduced).
    """
    # check_vma=False: the chunk scans start from replicated zeros and carry shard sums
    return jax.shard_map(body, in_specs=(SHARDED,) * len(particle_args), out_specs=out_specs,
                         check_vma=False)(*particle_args)


SHARDED = PartitionSpec(AXIS)
REPLICATED = PartitionSpec()
