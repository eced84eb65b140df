"""Frozen dataclasses registered as JAX pytrees (array fields are leaves, the rest static)."""

from __future__ import annotations

import dataclasses

import jax


def pytree_dataclass(cls=None, *, static: tuple[str, ...] = ()):
    """Make ``cls`` a frozen keyword-only dataclass and a pytree.

    Fields named in ``static`` are compile-time metadata (hashable); all others are leaves.
    """

    def wrap(cls):
        cls = dataclasses.dataclass(frozen=True, kw_only=True)(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        data = [n for n in names if n not in static]
        return jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=list(static))

    return wrap if cls is None else wrap(cls)


def replace(obj, **changes):
    return dataclasses.replace(obj, **changes)
