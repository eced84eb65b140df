"""Per-sample losses l(f, y) and their derivatives l'(f, y) = dl/df (docs/theory/model.md).

The derivative is the residual that couples all particles: every particle feels only the
n-vector r_i = l'(f(x_i), y_i).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def loss_value(kind: str, f, y):
    """l(f, y), elementwise. kind: squared | exponential | logistic."""
    if kind == "squared":
        return 0.5 * (f - y) ** 2
    if kind == "exponential":
        return jnp.exp(-y * f)
    if kind == "logistic":
        return jax.nn.softplus(-y * f)
    raise ValueError(f"loss={kind!r} is not allowed; choose one of ('squared', 'exponential', 'logistic')")


def loss_derivative(kind: str, f, y):
    """dl/df (f, y), elementwise, in closed form (tested against autodiff)."""
    if kind == "squared":
        return f - y
    if kind == "exponential":
        return -y * jnp.exp(-y * f)
    if kind == "logistic":
        return -y * jax.nn.sigmoid(-y * f)
    raise ValueError(f"loss={kind!r} is not allowed; choose one of ('squared', 'exponential', 'logistic')")


def is_classification(kind: str) -> bool:
    """Margin losses (exponential, logistic) take labels +-1 and define an accuracy."""
    return kind in ("exponential", "logistic")
