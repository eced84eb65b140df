"""Setup of a run, shared by ``simulate``, the analytic fit, the limits and the benchmarks.

From a ``SimulationConfig`` to device arrays (``prepare``: problem, initial particles, evaluation
inputs; ``custom_initial`` / ``pad_particles`` for explicit particles), the particle time scale
that sets the default save schedule (``particle_time_scale``; the schedule itself is the
``SaveAt`` rule of the config: ``config.save.schedule``), the split of
the save times into compiled chunks (``chunk_plan``) and the progress bar.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

import meanfield.particles as pt
from meanfield.config import SimulationConfig
from meanfield.particles.integrators import kernel_scale, mean_squares

CHUNK_SAVES = 16  # save targets per compiled chunk (host sees progress this often)


def enable_precision(precision: str):
    """The JAX dtype of ``precision`` (``float32`` / ``float64``), enabling x64 when needed."""
    if precision == "float64" and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)
    return jnp.float64 if precision == "float64" else jnp.float32


def prepare(config: SimulationConfig, devices: int = 1):
    """Arrays of a run: (problem, initial particles, x_eval augmented, dtype); the particles
    are padded to whole chunks on each of ``devices`` (traced under their mesh: sharded)."""
    problem, x_eval, dtype = prepare_problem(config, devices)
    return problem, draw_particles(config, problem, dtype), x_eval, dtype


def prepare_problem(config: SimulationConfig, devices: int = 1):
    """``prepare`` without the initial particles: (problem, x_eval augmented, dtype)."""
    dtype = enable_precision(config.precision)
    spec, data = config.model, config.data
    n_chunks, _ = pt.chunk_layout(spec.width, config.chunk_size, devices)
    x_unique, inverse = data.unique_inputs(spec.bias)
    problem = pt.make_problem(x_unique=x_unique, inverse=inverse, y=data.y,
                              weights=data.weights, width=spec.width, loss=spec.loss,
                              trainable=spec.trainable_output, n_chunks=n_chunks, dtype=dtype)
    x_eval = pt.to_device(data.augmented(data.x_eval, spec.bias), dtype)
    return problem, x_eval, dtype


def _padded_width(config: SimulationConfig, problem: pt.Problem) -> int:
    """m_pad of the run's particles: ``problem.n_chunks`` chunks of ``pt.chunk_layout``."""
    _, chunk = pt.chunk_layout(config.model.width, config.chunk_size)
    return problem.n_chunks * chunk


def draw_particles(config: SimulationConfig, problem: pt.Problem, dtype) -> pt.Particles:
    """The initial particles of ``config`` (seeded by ``config.seed``) in the chunk layout of
    ``problem``: a (m_pad,), w (m_pad, D), zero beyond the width."""
    return pt.init_particles(config.seed, config.model, config.data.input_dim,
                             m_pad=_padded_width(config, problem), dtype=dtype)


def particle_shapes(config: SimulationConfig, problem: pt.Problem, dtype) -> pt.Particles:
    """Shapes and dtypes of ``draw_particles`` (``jax.ShapeDtypeStruct`` leaves), without
    drawing: what a program that takes the particles is compiled for."""
    m_pad = _padded_width(config, problem)
    fan_in = config.model.fan_in(config.data.input_dim)
    return pt.Particles(a=jax.ShapeDtypeStruct((m_pad,), dtype),
                        w=jax.ShapeDtypeStruct((m_pad, fan_in), dtype))


def pad_particles(a, w, like: pt.Particles) -> pt.Particles:
    """(a (m,), w (m, D)) zero-padded to the chunk layout of ``like`` (m_pad >= m), in its dtype."""
    m = np.shape(a)[0]
    a_pad = np.zeros(like.a.shape, like.a.dtype)
    w_pad = np.zeros(like.w.shape, like.w.dtype)
    a_pad[:m], w_pad[:m] = a, w
    return pt.Particles(a=pt.to_device(a_pad, a_pad.dtype), w=pt.to_device(w_pad, w_pad.dtype))


def custom_initial(config: SimulationConfig, initial, padded: pt.Particles) -> pt.Particles:
    """``initial`` (width,) / (width, D) validated and zero-padded like ``padded`` (the drawn
    particles of ``prepare``, laid out by ``pt.chunk_layout``, or their ``particle_shapes``)."""
    if not isinstance(initial, pt.Particles):
        raise ValueError(f"initial must be meanfield.particles.Particles(a=..., w=...), got "
                         f"{type(initial).__name__}")
    m = config.model.width
    fan_in = config.model.fan_in(config.data.input_dim)
    a, w = np.asarray(initial.a), np.asarray(initial.w)
    if a.shape != (m,) or w.shape != (m, fan_in):
        raise ValueError(f"initial particles must have a: ({m},) and w: ({m}, {fan_in}) "
                         f"(model.width, input dim + bias); got a: {a.shape}, w: {w.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(w))):
        raise ValueError("initial particles contain NaN or inf")
    return pad_particles(a, w, padded)


@jax.jit
def time_scales(problem: pt.Problem, particles: pt.Particles):
    """(rotation, kernel) time scales of the initial particles: the time for a typical w to
    turn by its own size, and 1 / (kernel scale * sum |R|)."""
    f0 = pt.network_output(particles, problem.x, problem.inv_width, problem.n_chunks)
    r_sum = jnp.sum(jnp.abs(pt.residuals(problem, f0))) + 1e-30
    mean_a2, mean_w2 = mean_squares(problem, particles)
    rms_a, rms_w = jnp.sqrt(mean_a2) + 1e-30, jnp.sqrt(mean_w2) + 1e-30
    x_max = jnp.sqrt(jnp.max(jnp.sum(problem.x ** 2, axis=1)))
    rotation = rms_w / (rms_a * x_max * r_sum)
    kernel = 1.0 / (kernel_scale(problem, particles) * r_sum + 1e-30)
    return rotation, kernel


def particle_time_scale(problem: pt.Problem, particles: pt.Particles) -> float:
    """Time for a typical particle to move by its own size, min over rotation and kernel scales."""
    return float(min(jax.device_get(time_scales(problem, particles))))


def chunk_plan(times: np.ndarray, snap: np.ndarray) -> list[tuple[int, int, bool]]:
    """Index ranges [start, end) of the save times run per compiled chunk, and whether a
    snapshot follows the chunk. Every snapshot time ends a chunk; the plan depends only on the
    schedule, so a resumed run replays exactly the chunks of an uninterrupted one."""
    plan, start = [], 0
    for end in list(np.flatnonzero(snap) + 1) + [len(times)]:
        for s in range(start, end, CHUNK_SAVES):
            e = min(s + CHUNK_SAVES, end)
            plan.append((s, e, e == end and bool(snap[end - 1])))
        start = max(start, end)
    return plan


def padded_targets(times: np.ndarray, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    """Save targets ``times[start:end]`` repeated up to ``CHUNK_SAVES`` (one compiled shape)
    and the mask of the real ones."""
    targets = times[start:end]
    real = np.arange(CHUNK_SAVES) < len(targets)
    return np.concatenate([targets, np.repeat(targets[-1:], CHUNK_SAVES - len(targets))]), real


def progress_bar(progress: bool | None, total: int, *, unit: str = "save",
                 desc: str = "meanfield", initial: int = 0):
    """A tqdm bar over ``total`` items, or None (``progress=None``: when stderr is a terminal)."""
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, desc=desc, initial=initial)


def end_bar_here(bar) -> None:
    """End the progress bar of a run that reached its loss tolerance before its last save (or
    iteration) at the ones it made: 100%, not short of ones it did not need (a notebook's bar
    would close red, as failed)."""
    container = getattr(bar, "container", None)
    if container is not None:  # tqdm.notebook: the widget keeps its own maximum (as its reset)
        container.children[1].max = bar.n
    bar.total = bar.n
    bar.refresh()
