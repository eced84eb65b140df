"""Devices of one run: the particle mesh of ``simulate(config, devices=...)``.

The particles (and the integrator state that is per particle: optax moments, per-particle
diagnostics) are split along a one-axis ``"particles"`` mesh; the data, the residuals and
every recorded observable are replicated. The passes over the particles reduce over the
mesh (``meanfield.particles.sharding``): a step gathers the per-chunk sums of the n residual
terms per pass, and each device holds O(m D / devices) particle memory. Neuron k is drawn
from ``fold_in(key, k)`` wherever it lives, the chunks do not depend on the device count and
the per-chunk sums are added in chunk order, so the run is bitwise the same on any number of
devices.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from meanfield.particles import sharding as particle_sharding


def resolve_mesh(devices) -> Mesh | None:
    """The particle mesh asked for by ``devices``.

    Args:
        devices: None (no mesh: one device, the default), a count N (the first N of
            ``jax.devices()``, across all processes), a sequence of jax devices, or a
            ``jax.sharding.Mesh`` with a ``"particles"`` axis.
    Returns:
        The mesh, or None for ``devices=None``.
    """
    if devices is None:
        return None
    if isinstance(devices, Mesh):
        if particle_sharding.AXIS not in devices.axis_names:
            raise ValueError(f"devices: a Mesh must have a '{particle_sharding.AXIS}' axis, "
                             f"got axes {devices.axis_names}")
        return devices
    available = jax.devices()
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise ValueError(f"devices={devices} must be between 1 and the {len(available)} "
                             f"{available[0].platform} devices available (jax.devices())")
        return particle_sharding.particle_mesh(available[:int(devices)])
    if isinstance(devices, Sequence) and devices and all(isinstance(d, jax.Device)
                                                         for d in devices):
        if len(set(devices)) != len(devices):
            raise ValueError("devices: the list names a device twice")
        return particle_sharding.particle_mesh(devices)
    raise ValueError(f"devices={devices!r} must be None, a device count, a list of jax "
                     "devices or a jax.sharding.Mesh")


def device_count(mesh: Mesh | None) -> int:
    """Devices along the particle axis (1 without a mesh)."""
    return 1 if mesh is None else mesh.shape[particle_sharding.AXIS]


def scope(mesh: Mesh | None):
    """Context in which the run's programs are traced and compiled on ``mesh``."""
    return contextlib.nullcontext() if mesh is None else jax.set_mesh(mesh)


def place(tree, mesh: Mesh | None, m_pad: int):
    """Put ``tree`` on ``mesh``: leaves with a leading axis of length ``m_pad`` (per particle)
    split along the particle axis, the others replicated. Leaves already laid out so are kept
    (no copy); host values (or arrays of one process) must be equal on every process."""
    if mesh is None:
        return tree

    def put(leaf):
        per_particle = np.ndim(leaf) >= 1 and np.shape(leaf)[0] == m_pad
        spec = particle_sharding.SHARDED if per_particle else particle_sharding.REPLICATED
        target = NamedSharding(mesh, spec)
        if isinstance(leaf, jax.Array) and leaf.sharding.is_equivalent_to(target, leaf.ndim):
            return leaf
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return jax.device_put(leaf, target)
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, target, lambda index: host[index])

    return jax.tree.map(put, tree)


def to_host(tree):
    """``tree`` as numpy arrays on every process (gathers shards held by other processes)."""
    leaves, treedef = jax.tree.flatten(tree)
    if all(not isinstance(v, jax.Array) or v.is_fully_addressable or v.is_fully_replicated
           for v in leaves):
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return jax.tree.unflatten(treedef, [np.asarray(v) for v in
                                        multihost_utils.process_allgather(leaves, tiled=True)])


# ----------------------------------------------------------------------------- processes

def is_writer() -> bool:
    """Whether this process writes the run's store (process 0 of a multi-process run)."""
    return jax.process_index() == 0


def sync(name: str) -> None:
    """Wait for every process to reach ``name`` (no-op in one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def agree(flag: bool) -> bool:
    """Process 0's ``flag`` on every process (decisions that start collectives must agree)."""
    return bool(agreed_int(bool(flag)))


def agreed_int(value: int) -> int:
    """Process 0's integer ``value`` on every process."""
    if jax.process_count() == 1:
        return int(value)
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.asarray(int(value), np.int64)))


# ----------------------------------------------------------------------------- backends

# Platforms without native float64 arithmetic (XLA:TPU has none).
NO_FLOAT64 = ("tpu",)


def platform_of(mesh: Mesh | None) -> str:
    """Platform of the devices a run uses: the mesh's, else JAX's default backend."""
    return mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()


def check_precision(precision: str, mesh: Mesh | None) -> None:
    """Refuse, before any compute, a precision the run's devices cannot provide."""
    platform = platform_of(mesh)
    if precision == "float64" and platform in NO_FLOAT64:
        raise ValueError(f"precision='float64' cannot run on {platform}: the backend has no "
                         "float64 arithmetic; use precision='float32' (see the preset's "
                         "precision notes) or run on CPU/GPU")
