"""Initial particle laws, sampled neuron by neuron from ``fold_in(key, k)`` (docs/theory/model.md).

Neuron k depends only on (key, k), so the first m neurons of a width-2m run equal the width-m
run (coupled width sweeps) and the result does not depend on chunking or device layout:
bitwise for the Gaussian law; the sphere and balanced laws take the norm |w|, a reduction that
XLA may round differently for different numbers of neurons, so there the neurons agree to one or
two units in the last place.
With ASI, neurons 2j and 2j+1 share w and have opposite a, so f_0 = 0.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from meanfield.particles import sharding
from meanfield.particles.kernels import Particles, to_device
from meanfield.particles.model import InitialLaw, ModelSpec


def law_parameters(spec: ModelSpec, input_dim: int) -> dict[str, float]:
    """Numeric parameters of the initial law (traced at sampling time)."""
    law = spec.init
    sigma_a, sigma_w = spec.gaussian_scales(input_dim)
    scale = 0.0 if law.scale is None else law.scale
    return {"sigma_a": sigma_a, "sigma_w": sigma_w, "scale": scale,
            "output_scale": law.output_scale}


def _sample_neuron(key, k, params, *, kind: str, signs: str, asi: bool, dim: int, dtype):
    pair = k // 2 if asi else k
    key_a, key_w, key_s = jax.random.split(jax.random.fold_in(key, pair), 3)
    normal_w = jax.random.normal(key_w, (dim,), dtype)
    if signs == "alternating":
        sign = jnp.where(pair % 2 == 0, 1.0, -1.0).astype(dtype)
    else:
        sign = jnp.where(jax.random.bernoulli(key_s), 1.0, -1.0).astype(dtype)
    if kind == "gaussian":
        a = params["sigma_a"] * jax.random.normal(key_a, (), dtype)
        w = params["sigma_w"] * normal_w
    elif kind == "sphere":
        w = params["scale"] * normal_w / jnp.linalg.norm(normal_w)
        a = sign * params["output_scale"]
    else:  # balanced
        w = params["scale"] * normal_w
        a = sign * jnp.linalg.norm(w)
    if asi:
        a = jnp.where(k % 2 == 0, a, -a)
    return a.astype(dtype), w.astype(dtype)


@partial(jax.jit, static_argnames=("kind", "signs", "asi", "dim", "m_pad", "dtype", "seeded"))
def _sample(key, width, params, *, kind, signs, asi, dim, m_pad, dtype, seeded):
    if seeded:  # key is the seed array of jax.random.key: the same key, made in this program
        key = jax.random.key(key)
    k = jnp.arange(m_pad, dtype=jnp.int32)
    a, w = jax.vmap(
        partial(_sample_neuron, kind=kind, signs=signs, asi=asi, dim=dim, dtype=dtype),
        in_axes=(None, 0, None),
    )(key, k, params)
    valid = k < width
    # under a particle mesh each device draws only its own neurons
    return sharding.constrain(Particles(a=jnp.where(valid, a, 0),
                                        w=jnp.where(valid[:, None], w, 0)))


def init_particles(key, spec: ModelSpec, input_dim: int, *, m_pad: int | None = None,
                   dtype=jnp.float32) -> Particles:
    """Sample the initial particles of ``spec``.

    Args:
        key: a PRNG key (e.g. ``jax.random.key(seed)``), or an integer seed: the key
            ``jax.random.key(seed)`` is then made inside the compiled sampler (the same key,
            without a program of its own).
        spec: the model (width, bias, initial law).
        input_dim: d, the raw input dimension (the bias adds one component).
        m_pad: total length including zero padding (default: the width).
        dtype: float32 or float64.
    Returns:
        Particles with a: (m_pad,), w: (m_pad, d + bias); neurons >= width are zero.
    """
    m_pad = spec.width if m_pad is None else m_pad
    if m_pad < spec.width:
        raise ValueError(f"m_pad={m_pad} must be >= model.width={spec.width}")
    params = {k: to_device(v, dtype) for k, v in law_parameters(spec, input_dim).items()}
    law: InitialLaw = spec.init
    seeded = isinstance(key, (int, np.integer)) and not isinstance(key, bool)
    if seeded:  # as jax.random.key converts a Python int
        key = to_device(np.int64(key), np.int64)
    return _sample(key, to_device(spec.width, np.int32), params, kind=law.kind,
                   signs=law.signs, asi=law.asi, dim=spec.fan_in(input_dim), m_pad=m_pad,
                   dtype=jnp.dtype(dtype), seeded=seeded)
