"""Integrators in gradient-flow time t, as ``(init, step)`` pairs over frozen pytree states.

* ``euler``: explicit Euler with step dt (= plain GD on the unnormalised parameters).
* ``optax_solver``: any ``optax.GradientTransformation`` fed with the mean-field gradient
  m * grad R = -velocity; t advances by ``dt`` per step.
* ``adaptive_flow``: the gradient flow itself. Each step moves every particle *exactly* in a
  frozen residual field (``meanfield.particles.flow``: hyperbolic rotation plus one ReLU face event with
  the Filippov sliding rule), first with R(t) (order 1), then with the trapezoidal field
  (R(t) + R_pred(t+h))/2 (order 2: second-order Magnus for the linear-in-R velocity). The
  difference of the two residual vectors is the error estimate, relative to |R|: the smooth
  part every particle feels controls the step, the faces are handled per particle, with a
  CFL-like bound (at most one new face per particle per step) and a cap on the per-step
  growth factor exp(|G| h). Exact for constant R, so plateaus take large steps.

Every ``step(problem, state, params, t_target)`` never passes ``t_target``; runs of any width
share the same time axis. All numeric parameters are traced (no recompilation).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from meanfield.particles._pytree import pytree_dataclass
from meanfield.particles.flow import move_particles
from meanfield.particles.kernels import (
    Particles,
    Problem,
    euler_pass,
    network_output,
    residuals,
    velocity,
)

OK, DIVERGED, STEP_UNDERFLOW = 0, 1, 2
STATUS_NAMES = {OK: "ok", DIVERGED: "diverged", STEP_UNDERFLOW: "step_underflow"}


class Integrator(NamedTuple):
    """``init(problem, particles, params) -> state``; ``step(problem, state, params, t_target)``."""

    name: str
    init: Callable
    step: Callable


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunState:
    """Fields every integrator state has."""

    particles: Particles
    t: jax.Array
    f: jax.Array  # f at the distinct inputs, (n_u,)
    n_steps: jax.Array
    n_rejected: jax.Array
    status: jax.Array
    h: jax.Array  # step used (fixed) or proposed by the error controller (adaptive)


@pytree_dataclass
class FixedStepState(RunState):
    opt_state: Any = None


@pytree_dataclass
class FlowState(RunState):
    h_face: jax.Array  # CFL-like bound: half the time to any massive particle's second face
    g_max: jax.Array  # max |G| over particles (growth rate bound)
    mass_floor: jax.Array


def _counters(dtype):
    return dict(n_steps=jnp.asarray(0, jnp.int32), n_rejected=jnp.asarray(0, jnp.int32),
                status=jnp.asarray(OK, jnp.int32), t=jnp.asarray(0.0, dtype))


def _finite(*arrays):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in arrays]))


def kernel_scale(problem: Problem, particles: Particles):
    """Scale of the tangent kernel, (mean a^2 + mean |w|^2) max |x_j|^2 (rate of f per unit R)."""
    width = 1.0 / problem.inv_width
    mean_a2 = jnp.sum(particles.a ** 2) / width
    mean_w2 = jnp.sum(particles.w ** 2) / width
    xmax = jnp.max(jnp.sum(problem.x ** 2, axis=1))
    return (mean_a2 + jnp.where(problem.trainable, mean_w2, 0.0)) * xmax


# ----------------------------------------------------------------------------- fixed step

def euler() -> Integrator:
    """Explicit Euler / plain GD; ``params = {"dt": step in gradient-flow time}``."""

    def init(problem, particles, params):
        f = network_output(particles, problem.x, problem.inv_width, problem.n_chunks)
        dtype = problem.x.dtype
        return FixedStepState(particles=particles, f=f, h=jnp.asarray(params["dt"], dtype),
                              **_counters(dtype))

    def step(problem, state, params, t_target):
        del t_target  # fixed steps: the caller stops at the first t >= t_target
        dt = jnp.asarray(params["dt"], state.t.dtype)
        new, f = euler_pass(problem, state.particles, residuals(problem, state.f), dt)
        ok = _finite(f, new.a, new.w)
        n = state.n_steps + 1
        return FixedStepState(
            particles=jax.tree.map(lambda u, v: jnp.where(ok, u, v), new, state.particles),
            f=jnp.where(ok, f, state.f), t=jnp.where(ok, n * dt, state.t),
            n_steps=jnp.where(ok, n, state.n_steps), n_rejected=state.n_rejected,
            status=jnp.where(ok, state.status, DIVERGED), h=dt, opt_state=None)

    return Integrator("euler", init, step)


def optax_solver(optimizer: optax.GradientTransformation) -> Integrator:
    """Any optax optimiser on the particles; ``params = {"dt": time per step}``.

    The gradient passed to optax is m * grad R = -velocity, so ``optax.sgd(dt)`` is Euler.
    Frozen marks keep a. Optimiser hyperparameters are baked into ``optimizer`` (use
    ``optax.inject_hyperparams`` to trace them).
    """

    def init(problem, particles, params):
        f = network_output(particles, problem.x, problem.inv_width, problem.n_chunks)
        dtype = problem.x.dtype
        return FixedStepState(particles=particles, f=f, h=jnp.asarray(params["dt"], dtype),
                              opt_state=optimizer.init(particles), **_counters(dtype))

    def step(problem, state, params, t_target):
        del t_target
        dt = jnp.asarray(params["dt"], state.t.dtype)
        vel = velocity(problem, state.particles, residuals(problem, state.f))
        grads = jax.tree.map(jnp.negative, vel)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.particles)
        new = optax.apply_updates(state.particles, updates)
        if not problem.trainable:
            new = Particles(a=state.particles.a, w=new.w)
        f = network_output(new, problem.x, problem.inv_width, problem.n_chunks)
        ok = _finite(f, new.a, new.w)
        n = state.n_steps + 1
        keep = lambda u, v: jax.tree.map(lambda p, q: jnp.where(ok, p, q), u, v)
        return FixedStepState(
            particles=keep(new, state.particles), f=jnp.where(ok, f, state.f),
            t=jnp.where(ok, n * dt, state.t), n_steps=jnp.where(ok, n, state.n_steps),
            n_rejected=state.n_rejected, status=jnp.where(ok, state.status, DIVERGED), h=dt,
            opt_state=keep(opt_state, state.opt_state))

    return Integrator("optax", init, step)


# ----------------------------------------------------------------------------- adaptive flow

def _split(particles: Particles, problem: Problem) -> int:
    """Sub-chunks per chunk for the motion kernel: its (chunk, n) intermediates are many, and
    sub-chunks of ~1000 particles keep them in cache (integrator steps on the Luo data at
    m = 4e4, one thread: 7% faster than 500, 2% than 2000, 1.7x than 4000; at n = 100 all
    within 8%)."""
    chunk = particles.a.shape[0] // problem.n_chunks
    return next(f for f in (8, 4, 2, 1) if chunk % f == 0 and chunk // f >= 1000 or f == 1)


def motion_pass(problem: Problem, particles: Particles, residual, h, band_eps, mass_floor):
    """Move every particle by h in the frozen field of ``residual`` (``flow.move_particles``).

    Returns:
        (new particles, f at the distinct inputs (n_u,), dict of per-particle diagnostics:
        tau2 (m_pad,), g (m_pad,), amplitude (m_pad,)).
    """
    motion = _move(problem, particles, residual, h, band_eps, mass_floor, "all")
    return (Particles(a=motion.a, w=motion.w), motion.total * problem.inv_width,
            {"tau2": motion.tau2, "g": motion.g, "amplitude": motion.amplitude})


def _move(problem: Problem, particles: Particles, residual, h, band_eps, mass_floor,
          outputs: str):
    """``flow.move_particles`` on the particles of ``problem``."""
    x = problem.x
    return move_particles(particles.a, particles.w, x, jnp.sum(x * x, axis=1), residual, h,
                          band_eps, mass_floor, problem.trainable,
                          n_chunks=problem.n_chunks * _split(particles, problem),
                          outputs=outputs)


def default_flow_params(dtype=jnp.float32) -> dict:
    """Numeric parameters of ``adaptive_flow`` (all traced)."""
    eps = float(jnp.finfo(dtype).eps)
    return {"rtol": 1e-3, "band_eps": 64 * eps, "mass_rel": 1e-4, "face_safety": 0.5,
            "max_growth": 3.0, "h_min_rel": 1e-14}


def adaptive_flow() -> Integrator:
    """Adaptive exact-in-frozen-field integrator of the particle gradient flow.

    ``params``: rtol (relative tolerance on the residual field), band_eps (face band),
    mass_rel (particles lighter than mass_rel * mean |a||w| do not bound the step),
    face_safety (fraction of the time to the second face a step may take), max_growth
    (max |G| h per step), h_min_rel (step underflow threshold relative to t + 1/kernel scale).
    """

    def _aux_bounds(motion, params, width, dtype):
        h_face = params["face_safety"] * motion.tau2_min
        mass_floor = params["mass_rel"] * motion.amplitude_sum / width
        return h_face.astype(dtype), motion.g_max.astype(dtype), mass_floor.astype(dtype)

    def init(problem, particles, params):
        dtype = problem.x.dtype
        f = network_output(particles, problem.x, problem.inv_width, problem.n_chunks)
        r0 = residuals(problem, f)
        width = 1.0 / problem.inv_width
        amp = jnp.abs(particles.a) * jnp.linalg.norm(particles.w, axis=1)
        floor0 = params["mass_rel"] * jnp.sum(amp) / width
        motion = _move(problem, particles, r0, jnp.asarray(0.0, dtype), params["band_eps"],
                       floor0, "step")
        h_face, g_max, mass_floor = _aux_bounds(motion, params, width, dtype)
        rate = kernel_scale(problem, particles) * jnp.max(jnp.abs(problem.weights))
        rate = rate * problem.x.shape[0] + jnp.finfo(dtype).tiny
        h0 = jnp.asarray(1e-3, dtype) / rate
        return FlowState(particles=particles, f=f, h=h0.astype(dtype), h_face=h_face,
                         g_max=g_max, mass_floor=mass_floor, **_counters(dtype))

    def step(problem, state, params, t_target):
        dtype = state.t.dtype
        width = 1.0 / problem.inv_width
        h_growth = params["max_growth"] / jnp.where(state.g_max > 0, state.g_max, 1.0)
        h_growth = jnp.where((state.g_max > 0) & problem.trainable, h_growth, jnp.inf)
        h = jnp.minimum(jnp.minimum(state.h, state.h_face), h_growth)
        h = jnp.minimum(h, t_target - state.t).astype(dtype)
        clipped = h < state.h

        r0 = residuals(problem, state.f)
        f1 = _move(problem, state.particles, r0, h, params["band_eps"], state.mass_floor,
                   "total").total * problem.inv_width
        r1 = residuals(problem, f1)
        motion = _move(problem, state.particles, 0.5 * (r0 + r1), h, params["band_eps"],
                       state.mass_floor, "step")
        new, f2 = Particles(a=motion.a, w=motion.w), motion.total * problem.inv_width
        r2 = residuals(problem, f2)

        scale = jnp.maximum(jnp.max(jnp.abs(r0)), jnp.max(jnp.abs(r2)))
        err = jnp.max(jnp.abs(r2 - r1)) / (params["rtol"] * scale + jnp.finfo(dtype).tiny)
        finite = _finite(f1, f2, new.a, new.w)
        accept = finite & (err <= 1.0)
        factor = jnp.where(err > 0, 0.9 * jax.lax.rsqrt(jnp.where(err > 0, err, 1.0)), 5.0)
        factor = jnp.where(finite, jnp.clip(factor, 0.2, 5.0), 0.25)
        h_next = h * factor
        h_next = jnp.where(accept & clipped, jnp.maximum(h_next, state.h), h_next)

        h_face, g_max, mass_floor = _aux_bounds(motion, params, width, dtype)
        t_scale = state.t + 1.0 / (kernel_scale(problem, state.particles) + 1.0)
        underflow = ~accept & (h_next < params["h_min_rel"] * t_scale)
        pick = lambda u, v: jax.tree.map(lambda p, q: jnp.where(accept, p, q), u, v)
        return FlowState(
            particles=pick(new, state.particles), f=jnp.where(accept, f2, state.f),
            t=jnp.where(accept, state.t + h, state.t),
            n_steps=state.n_steps + accept.astype(jnp.int32),
            n_rejected=state.n_rejected + (~accept).astype(jnp.int32),
            status=jnp.where(underflow, jnp.where(finite, STEP_UNDERFLOW, DIVERGED),
                             state.status),
            h=h_next.astype(dtype), h_face=jnp.where(accept, h_face, state.h_face),
            g_max=jnp.where(accept, g_max, state.g_max),
            mass_floor=jnp.where(accept, mass_floor, state.mass_floor))

    return Integrator("adaptive_flow", init, step)
