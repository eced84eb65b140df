"""Integrators in gradient-flow time t: frozen pytree objects that carry their own parameters.

Every integrator offers ``init(problem, particles) -> state`` and
``step(problem, state, t_target) -> state`` (the ``TimeIntegrator`` protocol, diffrax-style).
Its numeric fields are traced leaves and its class plus static fields are the compiled
structure, so runs that differ only in numbers (dt, rtol, width, seed) share one program.

* ``Euler``: explicit Euler with step dt (= plain GD on the unnormalised parameters).
* ``Heun``: explicit trapezoidal rule (Heun's method), second order, step dt.
* ``OptaxSolver``: any optax optimiser (named factory + keyword arguments) fed with the
  mean-field gradient m * grad R = -velocity; t advances by ``dt`` per step.
* ``AdaptiveFlow``: the gradient flow itself. Each step moves every particle *exactly* in a
  frozen residual field (``meanfield.particles.flow``: hyperbolic rotation plus one ReLU face
  event with the Filippov sliding rule), first with R(t) (order 1), then with the trapezoidal
  field (R(t) + R_pred(t+h))/2 (order 2: second-order Magnus for the linear-in-R velocity). The
  difference of the two residual vectors is the error estimate, relative to |R|
  (``AdaptiveFlow.propose``); the step size is chosen by a separate controller object
  (``IController``: the smooth part every particle feels controls the step, the faces are
  handled per particle, with a CFL-like bound of at most one new face per particle per step
  and a cap on the per-step growth factor exp(|G| h)). Exact for constant R, so plateaus take
  large steps.

Time contract: ``AdaptiveFlow.step`` never passes ``t_target`` (runs of any width share the
same time axis); fixed-step integrators ignore it and advance t = n dt, so the caller's loop
ends on the first step with t >= t_target (``exact_targets = False``).

``StopRule`` is the on-device stop test of a run (status, step budget, loss tolerance).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from meanfield.particles._pytree import pytree_dataclass
from meanfield.particles._validate import closest
from meanfield.particles.flow import Motion, move_particles
from meanfield.particles.kernels import (
    Particles,
    Problem,
    euler_pass,
    network_output,
    particle_sum,
    residuals,
    risk,
    to_device,
    velocity,
)

if TYPE_CHECKING:  # imported where used: only optax runs need it (``_optax``)
    import optax

OK, DIVERGED, STEP_UNDERFLOW = 0, 1, 2
STATUS_NAMES = {OK: "ok", DIVERGED: "diverged", STEP_UNDERFLOW: "step_underflow"}
DEFAULT_RTOL = 1e-3  # relative tolerance of AdaptiveFlow (and of the config's Solver)


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
    h_face: jax.Array  # CFL-like bound: a fraction of the time to any massive particle's second face
    g_max: jax.Array  # max |G| over particles (growth rate bound)
    mass_floor: jax.Array


def _counters(dtype):
    return dict(n_steps=jnp.asarray(0, jnp.int32), n_rejected=jnp.asarray(0, jnp.int32),
                status=jnp.asarray(OK, jnp.int32), t=jnp.asarray(0.0, dtype))


def _finite(*arrays):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in arrays]))


def mean_squares(problem: Problem, particles: Particles):
    """(mean a^2, mean |w|^2) over the width's particles, scalars; summed chunk by chunk in
    chunk order (``particle_sum``), so the bits depend neither on the device count nor on how
    many threads the backend splits a reduction over."""
    width = 1.0 / problem.inv_width
    sum_a2, sum_w2 = particle_sum((particles.a ** 2, particles.w ** 2), problem.n_chunks)
    return sum_a2 / width, jnp.sum(sum_w2) / width


def kernel_scale(problem: Problem, particles: Particles):
    """Scale of the tangent kernel, (mean a^2 + mean |w|^2) max |x_j|^2 (rate of f per unit R)."""
    mean_a2, mean_w2 = mean_squares(problem, particles)
    xmax = jnp.max(jnp.sum(problem.x ** 2, axis=1))
    return (mean_a2 + jnp.where(problem.trainable, mean_w2, 0.0)) * xmax


def default_band_eps(dtype) -> float:
    """Relative half-width of a ReLU face band, 64 machine epsilons of ``dtype``."""
    return 64 * float(jnp.finfo(dtype).eps)


class TimeIntegrator:
    """Base of the integrators in gradient-flow time (subclasses are ``pytree_dataclass``es).

    ``clock = "time"`` tells ``meanfield.simulate`` to drive it with the compiled chunk loop.
    """

    clock: ClassVar[str] = "time"
    exact_targets: ClassVar[bool] = False  # True: step never passes t_target (lands on it)

    def with_dtype(self, dtype):
        """Copy whose numeric leaves are arrays of ``dtype`` (what ``simulate`` traces)."""
        return jax.tree.map(lambda v: (jnp.asarray(v, dtype) if isinstance(v, jax.Array)
                                       else to_device(v, dtype)), self)

    def init(self, problem: Problem, particles: Particles):
        """The state at t = 0 of ``particles`` (a (m_pad,), w (m_pad, D)) on ``problem``:
        the particles, f at the distinct inputs (n_u,), t, counters, status and the first step
        size (``FlowState`` or ``FixedStepState``)."""
        raise NotImplementedError

    def step(self, problem: Problem, state, t_target):
        """One step attempt from ``state``: accepted (t and ``n_steps`` advance) or, when
        an error-controlled step fails its test, rejected (particles and t kept,
        ``n_rejected`` + 1, a smaller step proposed for the next call). Integrators with
        ``exact_targets`` never pass ``t_target`` (a scalar of the run's dtype); the others
        ignore it."""
        raise NotImplementedError


@pytree_dataclass
class StopRule:
    """On-device stop test of a run: abnormal status, step budget, or loss tolerance reached.

    Attributes:
        max_steps: step budget (int32 leaf).
        loss_tol: stop once the training loss is <= loss_tol (-inf: never).
    """

    max_steps: Any
    loss_tol: Any

    def stopped(self, problem: Problem, state: RunState):
        """A bool scalar: the state is abnormal (``state.status``), the step budget is spent,
        or the training loss ``risk(problem, state.f)`` is at most ``loss_tol``."""
        return ((state.status != OK) | (state.n_steps >= self.max_steps)
                | (risk(problem, state.f) <= self.loss_tol))


# ----------------------------------------------------------------------------- fixed step

# Particle entries (a and w of every particle) from which a fixed step picks the accepted or
# the kept state with a ``cond`` rather than an elementwise select (``_fixed_step``).
COND_MIN_ENTRIES = 2**22

def _fixed_step(state: FixedStepState, new: Particles, f, dt, opt_state=None) -> FixedStepState:
    """Accept a fixed step if everything stays finite, else keep ``state`` and flag DIVERGED.

    Beyond ``COND_MIN_ENTRIES`` particle entries the choice is a ``cond``: an elementwise
    select reads both states and writes a third, one more pass over every particle (Euler
    steps at m = 1e7 ran ~10% faster with the ``cond``). Below, the select: the ``cond``
    waits for its predicate before either branch (~7% slower at m = 1e4;
    ``benchmarks/bench_engine.py``). Both give the same values.
    """
    ok = _finite(f, new.a, new.w)
    n = state.n_steps + 1
    accepted = FixedStepState(particles=new, f=f, t=n * dt, n_steps=n,
                              n_rejected=state.n_rejected, status=state.status, h=dt,
                              opt_state=opt_state)
    kept = FixedStepState(particles=state.particles, f=state.f, t=state.t,
                          n_steps=state.n_steps, n_rejected=state.n_rejected,
                          status=jnp.full_like(state.status, DIVERGED), h=dt,
                          opt_state=state.opt_state)
    if sum(v.size for v in jax.tree.leaves(new)) >= COND_MIN_ENTRIES:
        return jax.lax.cond(ok, lambda: accepted, lambda: kept)
    return jax.tree.map(lambda u, v: jnp.where(ok, u, v), accepted, kept)


def _fixed_init(problem: Problem, particles: Particles, dt, opt_state=None) -> FixedStepState:
    f = network_output(particles, problem.x, problem.inv_width, problem.n_chunks)
    dtype = problem.x.dtype
    return FixedStepState(particles=particles, f=f, h=jnp.asarray(dt, dtype), opt_state=opt_state,
                          **_counters(dtype))


class FixedStep(TimeIntegrator):
    """Base of the fixed-step integrators without optimiser state: a subclass declares the
    field ``dt`` and ``advance``; t advances by dt per step."""

    def advance(self, problem: Problem, particles: Particles, f, dt):
        """(particles after one step of size dt, f at the distinct inputs there (n_u,))."""
        raise NotImplementedError

    def init(self, problem, particles):
        return _fixed_init(problem, particles, self.dt)

    def step(self, problem, state, t_target):
        del t_target  # fixed steps: the caller stops at the first t >= t_target
        dt = jnp.asarray(self.dt, state.t.dtype)
        new, f = self.advance(problem, state.particles, state.f, dt)
        return _fixed_step(state, new, f, dt)


@pytree_dataclass
class Euler(FixedStep):
    """Explicit Euler / plain GD with step ``dt`` in gradient-flow time (traced)."""

    dt: Any

    def advance(self, problem, particles, f, dt):
        return euler_pass(problem, particles, residuals(problem, f), dt)


@pytree_dataclass
class Heun(FixedStep):
    """Heun's method (explicit trapezoidal rule), second order, step ``dt`` (traced):
    predictor p = x + dt v(x), then x + dt (v(x) + v(p)) / 2."""

    dt: Any

    def advance(self, problem, particles, f, dt):
        r0 = residuals(problem, f)
        predicted, f_predicted = euler_pass(problem, particles, r0, dt)
        v0 = velocity(problem, particles, r0)
        v1 = velocity(problem, predicted, residuals(problem, f_predicted))
        new = jax.tree.map(lambda x, u, v: x + 0.5 * dt * (u + v), particles, v0, v1)
        return new, network_output(new, problem.x, problem.inv_width, problem.n_chunks)


def _optax():
    """The optax module, imported when an optax run or check first needs it (~40 ms that
    every other run's start would pay)."""
    import optax

    return optax


def _optax_factory(name: str):
    optax = _optax()
    factory = getattr(optax, name, None) if isinstance(name, str) else None
    if not callable(factory):
        # lower-case callables of optax; for the hint, its optimisers (the factories optax
        # defines beside adam) when they can be told apart from its other functions
        names = [n for n in dir(optax) if n.islower() and not n.startswith("_")
                 and callable(getattr(optax, n))]
        home = lambda f: getattr(getattr(f, "func", f), "__module__", None)  # partials too
        names = [n for n in names if home(getattr(optax, n)) == home(optax.adam)] or names
        raise ValueError(f"optimizer={name!r} is not an optax optimiser name (e.g. 'adam', "
                         f"'sgd', 'rmsprop'){closest(name, names)}")
    return factory


def check_optax_arguments(optimizer, optimizer_kwargs: dict, *, prefix: str = "") -> None:
    """Raise ValueError unless ``optax.<optimizer>(**optimizer_kwargs)`` matches the factory's
    signature: unknown keywords are named (``prefix`` + ``optimizer_kwargs``) with the closest
    valid name, missing required arguments listed. No optimiser is built."""
    try:
        factory = _optax_factory(optimizer)
    except ValueError as error:
        raise ValueError(f"{prefix}{error}") from None
    if not isinstance(optimizer_kwargs, dict) or not all(isinstance(k, str)
                                                         for k in optimizer_kwargs):
        raise ValueError(f"{prefix}optimizer_kwargs must be a dict of keyword arguments of "
                         f"optax.{optimizer}, got {optimizer_kwargs!r}")
    parameters = inspect.signature(factory).parameters
    names = [n for n, p in parameters.items()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    takes_any = any(p.kind == p.VAR_KEYWORD for p in parameters.values())
    for key in optimizer_kwargs:
        if key not in names and not takes_any:
            raise ValueError(f"{prefix}optimizer_kwargs key {key!r} is not an argument of "
                             f"optax.{optimizer}{closest(key, names)}; allowed: {names}")
    missing = [n for n, p in parameters.items() if p.default is p.empty
               and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in optimizer_kwargs]
    if missing:
        raise ValueError(f"{prefix}optimizer_kwargs must give {missing} for optax.{optimizer}")


def _frozen(value):
    """A hashable copy of a keyword-argument value (lists become tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    hash(value)
    return value


@pytree_dataclass(static=("optimizer", "optimizer_kwargs"))
class OptaxSolver(TimeIntegrator):
    """An optax optimiser on the particles, ``dt`` of gradient-flow time per step.

    The gradient passed to optax is m * grad R = -velocity, so ``optimizer="sgd"`` with
    ``learning_rate = dt`` is Euler. Frozen marks keep a. The optimiser's name and keyword
    arguments are static (part of the compiled program); ``dt`` is traced.

    Attributes:
        dt: gradient-flow time per step.
        optimizer: name of an optax factory, e.g. ``"adam"``.
        optimizer_kwargs: its keyword arguments as a dict (stored as sorted, hashable pairs).
    """

    dt: Any
    optimizer: str = "sgd"
    optimizer_kwargs: Any = ()

    def __post_init__(self):
        kwargs = self.optimizer_kwargs
        if isinstance(kwargs, dict):
            object.__setattr__(self, "optimizer_kwargs", _frozen(kwargs))

    @property
    def transformation(self) -> optax.GradientTransformation:
        return _optax_factory(self.optimizer)(**dict(self.optimizer_kwargs))

    def init(self, problem, particles):
        return _fixed_init(problem, particles, self.dt, self.transformation.init(particles))

    def step(self, problem, state, t_target):
        del t_target
        dt = jnp.asarray(self.dt, state.t.dtype)
        vel = velocity(problem, state.particles, residuals(problem, state.f))
        grads = jax.tree.map(jnp.negative, vel)
        updates, opt_state = self.transformation.update(grads, state.opt_state, state.particles)
        new = _optax().apply_updates(state.particles, updates)
        if not problem.trainable:
            new = Particles(a=state.particles.a, w=new.w)
        f = network_output(new, problem.x, problem.inv_width, problem.n_chunks)
        return _fixed_step(state, new, f, dt, opt_state)


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
          outputs: str, event_block: int | None = None):
    """``flow.move_particles`` on the particles of ``problem``."""
    x = problem.x
    return move_particles(particles.a, particles.w, x, jnp.sum(x * x, axis=1), residual, h,
                          band_eps, mass_floor, problem.trainable,
                          n_chunks=problem.n_chunks * _split(particles, problem),
                          outputs=outputs, event_block=event_block)


@pytree_dataclass
class IController:
    """Integral step-size controller of ``AdaptiveFlow`` with its step bounds.

    Next step h * clip(safety * err^(-1/2), factor_min, factor_max) (err: error over tolerance
    of an order-2 proposal with an order-1 embedded estimate; err = 0 gives factor_max),
    factor_nonfinite after a non-finite proposal. Bounds: ``face_safety`` times the time to
    any massive particle's second face, ``max_growth / max |G|`` (trainable outputs only),
    and the time left to the target. All fields are traced.
    """

    safety: Any = 0.9
    factor_min: Any = 0.2
    factor_max: Any = 5.0
    factor_nonfinite: Any = 0.25
    face_safety: Any = 0.5
    max_growth: Any = 3.0

    def face_bound(self, tau2_min):
        """Step bound from the smallest second-face time (m_pad,) -> scalar."""
        return self.face_safety * tau2_min

    def clip(self, h_proposed, h_face, g_max, trainable, remaining):
        """(step to try, whether a bound shortened ``h_proposed``)."""
        h_growth = self.max_growth / jnp.where(g_max > 0, g_max, 1.0)
        h_growth = jnp.where((g_max > 0) & trainable, h_growth, jnp.inf)
        h = jnp.minimum(jnp.minimum(h_proposed, h_face), h_growth)
        h = jnp.minimum(h, remaining).astype(h_proposed.dtype)
        return h, h < h_proposed

    def adapt(self, h, err, finite, accepted, clipped, h_proposed):
        """Next proposed step after trying ``h`` with scaled error ``err`` (accept iff <= 1).

        An accepted step that a bound had shortened does not shrink the proposal below the
        previous one (``h_proposed``)."""
        factor = jnp.where(err > 0, self.safety * jax.lax.rsqrt(jnp.where(err > 0, err, 1.0)),
                           self.factor_max)
        factor = jnp.where(finite, jnp.clip(factor, self.factor_min, self.factor_max),
                           self.factor_nonfinite)
        h_next = h * factor
        return jnp.where(accepted & clipped, jnp.maximum(h_next, h_proposed), h_next)


class Proposal(NamedTuple):
    """One trial step of ``AdaptiveFlow``: the order-2 result and its error estimate."""

    particles: Particles
    f: jax.Array  # order-2 f at the distinct inputs (n_u,)
    err: jax.Array  # max |R2 - R1| / (rtol max(|R0|, |R2|)): accept iff <= 1
    finite: jax.Array
    motion: Motion  # order-2 motion summary (tau2_min, g_max, amplitude_sum)


@pytree_dataclass
class AdaptiveFlow(TimeIntegrator):
    """Adaptive exact-in-frozen-field integrator of the particle gradient flow.

    Attributes:
        rtol: relative tolerance on the residual field.
        band_eps: relative face band (None: ``default_band_eps`` of the run's dtype).
        mass_rel: particles lighter than mass_rel * mean |a||w| do not bound the step.
        h_min_rel: step underflow threshold relative to t + 1/kernel scale.
        controller: step-size controller (``IController`` or any object with its methods).
    """

    exact_targets: ClassVar[bool] = True

    rtol: Any = DEFAULT_RTOL
    band_eps: Any = None
    mass_rel: Any = 1e-4
    h_min_rel: Any = 1e-14
    controller: Any = dataclasses.field(default_factory=IController)

    def with_dtype(self, dtype):
        resolved = dataclasses.replace(self, band_eps=self._band(dtype))
        return TimeIntegrator.with_dtype(resolved, dtype)

    def _band(self, dtype):
        return default_band_eps(dtype) if self.band_eps is None else self.band_eps

    def _bounds(self, motion: Motion, width, dtype):
        h_face = self.controller.face_bound(motion.tau2_min)
        mass_floor = self.mass_rel * motion.amplitude_sum / width
        return h_face.astype(dtype), motion.g_max.astype(dtype), mass_floor.astype(dtype)

    def init(self, problem, particles):
        dtype = problem.x.dtype
        f = network_output(particles, problem.x, problem.inv_width, problem.n_chunks)
        r0 = residuals(problem, f)
        width = 1.0 / problem.inv_width
        amp = jnp.abs(particles.a) * jnp.linalg.norm(particles.w, axis=1)
        floor0 = self.mass_rel * particle_sum(amp, problem.n_chunks) / width
        # A step of 0 takes every particle's full step, without the fast step and its redo
        # pass: the same bounds (a particle in no face band has the fast step's field exactly
        # and crosses no face in no time; particles that start in a band only add up their
        # amplitudes in another order) from a program about a quarter smaller to compile.
        motion = _move(problem, particles, r0, jnp.asarray(0.0, dtype), self._band(dtype),
                       floor0, "step", event_block=particles.a.shape[0])
        h_face, g_max, mass_floor = self._bounds(motion, width, dtype)
        rate = kernel_scale(problem, particles) * jnp.max(jnp.abs(problem.weights))
        rate = rate * problem.x.shape[0] + jnp.finfo(dtype).tiny
        h0 = jnp.asarray(1e-3, dtype) / rate
        return FlowState(particles=particles, f=f, h=h0.astype(dtype), h_face=h_face,
                         g_max=g_max, mass_floor=mass_floor, **_counters(dtype))

    def propose(self, problem: Problem, state: FlowState, h) -> Proposal:
        """Second-order Magnus step of size h and its error estimate (no accept/reject)."""
        dtype = state.t.dtype
        band_eps = self._band(dtype)
        r0 = residuals(problem, state.f)
        f1 = _move(problem, state.particles, r0, h, band_eps, state.mass_floor,
                   "total").total * problem.inv_width
        r1 = residuals(problem, f1)
        motion = _move(problem, state.particles, 0.5 * (r0 + r1), h, band_eps,
                       state.mass_floor, "step")
        new, f2 = Particles(a=motion.a, w=motion.w), motion.total * problem.inv_width
        r2 = residuals(problem, f2)
        scale = jnp.maximum(jnp.max(jnp.abs(r0)), jnp.max(jnp.abs(r2)))
        err = jnp.max(jnp.abs(r2 - r1)) / (self.rtol * scale + jnp.finfo(dtype).tiny)
        return Proposal(particles=new, f=f2, err=err, finite=_finite(f1, f2, new.a, new.w),
                        motion=motion)

    def step(self, problem, state, t_target):
        dtype = state.t.dtype
        width = 1.0 / problem.inv_width
        remaining = t_target - state.t
        h, clipped = self.controller.clip(state.h, state.h_face, state.g_max, problem.trainable,
                                          remaining)
        # t within a subnormal distance below the target (t < ~1e-292 in float64): the
        # difference flushes to zero on XLA:CPU, so h = 0; no motion is representable in that
        # time, and the step lands on the target rather than repeating forever
        t_next = jnp.where((remaining == 0) & (state.t < t_target), t_target, state.t + h)
        trial = self.propose(problem, state, h)
        accept = trial.finite & (trial.err <= 1.0)
        h_next = self.controller.adapt(h, trial.err, trial.finite, accept, clipped, state.h)
        h_face, g_max, mass_floor = self._bounds(trial.motion, width, dtype)

        # Only a rejected step can underflow, so the kernel scale (a pass over the particles)
        # is computed only then.
        def underflows():
            t_scale = state.t + 1.0 / (kernel_scale(problem, state.particles) + 1.0)
            # written as "not >=" so that a NaN scale (non-finite particles) counts as underflow
            return ~(h_next >= self.h_min_rel * t_scale)

        underflow = jax.lax.cond(accept, lambda: jnp.asarray(False), underflows)
        pick = lambda u, v: jax.tree.map(lambda p, q: jnp.where(accept, p, q), u, v)
        return FlowState(
            particles=pick(trial.particles, state.particles),
            f=jnp.where(accept, trial.f, state.f),
            t=jnp.where(accept, t_next, state.t),
            n_steps=state.n_steps + accept.astype(jnp.int32),
            n_rejected=state.n_rejected + (~accept).astype(jnp.int32),
            status=jnp.where(underflow, jnp.where(trial.finite, STEP_UNDERFLOW, DIVERGED),
                             state.status),
            h=h_next.astype(dtype), h_face=jnp.where(accept, h_face, state.h_face),
            g_max=jnp.where(accept, g_max, state.g_max),
            mass_floor=jnp.where(accept, mass_floor, state.mass_floor))
