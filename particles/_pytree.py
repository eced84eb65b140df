"""Frozen dataclasses registered as JAX pytrees (array fields are leaves, the rest static)."""

from __future__ import annotations

import dataclasses

import jax


def pytree_dataclass(cls=None, *, static: tuple[str, ...] = ()):
    """Make ``cls`` a frozen keyword-only dataclass and a pytree.

    Fields named in ``static`` are compile-time metadata (hashable); all others are leaves.

    Registered with ``register_pytree_with_keys`` rather than ``register_dataclass``: in
    jax 0.10 the tree structures of two ``register_dataclass`` classes with the same fields
    compare equal (only their hashes differ), so a cache that finds a key by a partial hash
    match and then compares structures can hand one class's compiled program to the other
    (``Euler(dt=h)`` and ``Heun(dt=h)``; tests/test_integrators.py). Unflattening calls the
    constructor, as ``register_dataclass`` does.
    """

    def wrap(cls):
        cls = dataclasses.dataclass(frozen=True, kw_only=True)(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        data = tuple(n for n in names if n not in static)
        meta = tuple(n for n in names if n in static)
        keys = tuple(jax.tree_util.GetAttrKey(n) for n in data)

        def flatten_with_keys(obj):
            return ([(key, getattr(obj, n)) for key, n in zip(keys, data)],
                    tuple(getattr(obj, n) for n in meta))

        def flatten(obj):
            return [getattr(obj, n) for n in data], tuple(getattr(obj, n) for n in meta)

        def unflatten(aux, children):
            return cls(**dict(zip(data, children)), **dict(zip(meta, aux)))

        jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
        return cls

    return wrap if cls is None else wrap(cls)


def replace(obj, **changes):
    return dataclasses.replace(obj, **changes)
