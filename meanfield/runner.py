"""``simulate(config) -> xarray.Dataset``: one finite-width run, end to end.

Data flow (docs/architecture.md): config -> initial particles -> jitted chunks of save targets, each
a ``lax.while_loop`` of integrator steps followed by on-device observables -> host loop between
chunks (progress bar, stop rules, divergence check, sparse particle snapshots) -> Dataset.
Width, seed, step values and tolerances are traced: runs that share shapes share one compiled
program.
"""

from __future__ import annotations

import json
import os
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

import meanfield.particles as pt
from meanfield.config import SimulationConfig, Solver
from meanfield.recording import make_spec, measure
from meanfield.particles._validate import check_positive
from meanfield.particles.integrators import OK, STATUS_NAMES, kernel_scale
from meanfield.sharding import (agree, check_precision, device_count, is_writer, place,
                                resolve_mesh, scope, sync, to_host)

CHUNK_SAVES = 16  # save targets per compiled chunk (host sees progress this often)


class RunError(RuntimeError):
    """A run that stopped abnormally; ``.dataset`` holds everything recorded before the stop."""

    def __init__(self, message: str, dataset: xr.Dataset | None = None):
        super().__init__(message)
        self.dataset = dataset


class DivergenceError(RunError):
    """The state became NaN/inf (or the step size underflowed)."""


class StepBudgetError(RunError):
    """``max_steps`` was exhausted before ``t_max``."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; ``.dataset`` holds everything recorded before it."""

    def __init__(self, dataset: xr.Dataset | None):
        super().__init__("run interrupted; partial dataset in .dataset")
        self.dataset = dataset


# ----------------------------------------------------------------------------- integrators

_INTEGRATORS: dict[tuple, pt.Integrator] = {}


def _integrator_key(solver: Solver) -> tuple:
    if solver.kind == "optax":
        return ("optax", solver.optimizer, json.dumps(solver.optimizer_kwargs, sort_keys=True))
    return (solver.kind,)


def _integrator(key: tuple) -> pt.Integrator:
    if key not in _INTEGRATORS:
        if key[0] == "adaptive":
            _INTEGRATORS[key] = pt.adaptive_flow()
        elif key[0] == "euler":
            _INTEGRATORS[key] = pt.euler()
        else:
            import optax

            _INTEGRATORS[key] = pt.optax_solver(getattr(optax, key[1])(**json.loads(key[2])))
    return _INTEGRATORS[key]


def _solver_params(solver: Solver, dtype) -> dict:
    if solver.kind == "adaptive":
        params = pt.default_flow_params(dtype)
        params["rtol"] = solver.rtol
    else:
        params = {"dt": solver.dt}
    return {k: jnp.asarray(v, dtype) for k, v in params.items()}


# ----------------------------------------------------------------------------- compiled chunk

TRACE_COUNT = {"run_chunk": 0}  # incremented at trace time (tests count recompilations)


def _observables(problem: pt.Problem, x_eval, state, initial, spec):
    f_train = state.f[problem.inverse]
    loss = pt.risk(problem, state.f)
    correct = (problem.y * f_train > 0).astype(f_train.dtype)
    return {
        "t": state.t, "loss": loss, "accuracy": jnp.sum(problem.weights * correct),
        "f_train": f_train,
        "f_eval": pt.network_output(state.particles, x_eval, problem.inv_width, problem.n_chunks),
        "n_steps": state.n_steps, "n_rejected": state.n_rejected, "step_size": state.h,
        "status": state.status,
        **measure(problem, state.particles, initial, spec),
    }


@partial(jax.jit, static_argnames=("integrator_key",))
def _run_chunk(integrator_key, problem, x_eval, state, params, targets, real, limits, initial,
               spec):
    """Advance through ``targets`` (K,), recording observables at each (``real`` masks padding)."""
    TRACE_COUNT["run_chunk"] += 1
    integrator = _integrator(integrator_key)

    def stopped(s):
        return ((s.status != OK) | (s.n_steps >= limits["max_steps"])
                | (pt.risk(problem, s.f) <= limits["loss_tol"]))

    def one_target(carry, inputs):
        state, done = carry
        target, is_real = inputs

        def cond(s):
            return (~done) & (s.t < target) & ~stopped(s)

        state = jax.lax.while_loop(
            cond, lambda s: integrator.step(problem, s, params, target), state)
        record = _observables(problem, x_eval, state, initial, spec)
        record["valid"] = (~done) & is_real
        return (state, done | stopped(state)), record

    (state, done), records = jax.lax.scan(one_target, (state, jnp.asarray(False)),
                                          (targets, real))
    return state, done, records


# ----------------------------------------------------------------------------- schedule

@jax.jit
def _time_scales(problem: pt.Problem, particles: pt.Particles):
    f0 = pt.network_output(particles, problem.x, problem.inv_width, problem.n_chunks)
    r_sum = jnp.sum(jnp.abs(pt.residuals(problem, f0))) + 1e-30
    rms_a = jnp.sqrt(jnp.sum(particles.a ** 2) * problem.inv_width) + 1e-30
    rms_w = jnp.sqrt(jnp.sum(particles.w ** 2) * problem.inv_width) + 1e-30
    x_max = jnp.sqrt(jnp.max(jnp.sum(problem.x ** 2, axis=1)))
    rotation = rms_w / (rms_a * x_max * r_sum)
    kernel = 1.0 / (kernel_scale(problem, particles) * r_sum + 1e-30)
    return rotation, kernel


def particle_time_scale(problem: pt.Problem, particles: pt.Particles) -> float:
    """Time for a typical particle to move by its own size, min over rotation and kernel scales."""
    return float(min(jax.device_get(_time_scales(problem, particles))))


@partial(jax.jit, static_argnames=("integrator_key",))
def _init_state(integrator_key, problem, particles, params):
    return _integrator(integrator_key).init(problem, particles, params)


def save_schedule(config: SimulationConfig, time_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Save times (starting with 0) and a boolean mask of snapshot times."""
    save = config.save
    if save.t is not None:
        times = np.array([v for v in save.t if v <= config.t_max], dtype=float)
    else:
        t_min = save.t_min if save.t_min is not None else min(1e-3 * time_scale,
                                                             config.t_max / 10)
        times = np.geomspace(t_min, config.t_max, save.n)
    if isinstance(save.snapshots, tuple):
        times = np.union1d(times, [v for v in save.snapshots if 0 < v <= config.t_max])
    times = np.concatenate([[0.0], times[times > 0]])
    snap = np.zeros(times.shape, bool)
    snap[0] = snap[-1] = True
    if isinstance(save.snapshots, tuple):
        snap |= np.isin(times, save.snapshots)
    elif save.snapshots > 0:
        grid = np.geomspace(times[1], times[-1], save.snapshots) if len(times) > 1 else []
        for v in grid:
            snap[1 + np.argmin(np.abs(np.log(times[1:]) - np.log(v)))] = True
    return times, snap


# ----------------------------------------------------------------------------- simulate

def _enable_precision(precision: str):
    if precision == "float64" and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)
    return jnp.float64 if precision == "float64" else jnp.float32


def prepare(config: SimulationConfig, devices: int = 1):
    """Arrays of a run: (problem, initial particles, x_eval augmented, dtype); the particles
    are padded to whole chunks on each of ``devices`` (traced under their mesh: sharded)."""
    dtype = _enable_precision(config.precision)
    spec, data = config.model, config.data
    n_chunks, chunk = pt.chunk_layout(spec.width, config.chunk_size, devices)
    x_unique, inverse = data.unique_inputs(spec.bias)
    problem = pt.make_problem(x_unique=x_unique, inverse=inverse, y=data.y,
                              weights=data.weights, width=spec.width, loss=spec.loss,
                              trainable=spec.trainable_output, n_chunks=n_chunks, dtype=dtype)
    particles = pt.init_particles(jax.random.key(config.seed), spec, data.input_dim,
                                  m_pad=n_chunks * chunk, dtype=dtype)
    x_eval = jnp.asarray(data.augmented(data.x_eval, spec.bias), dtype)
    return problem, particles, x_eval, dtype


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


def _custom_initial(config: SimulationConfig, initial, padded: pt.Particles) -> pt.Particles:
    """``initial`` (width,) / (width, D) validated and zero-padded like ``padded`` (the drawn
    particles of ``prepare``, laid out by ``pt.chunk_layout``)."""
    if not isinstance(initial, pt.Particles):
        raise ValueError(f"initial must be a particles.Particles, got {type(initial).__name__}")
    m = config.model.width
    fan_in = config.model.fan_in(config.data.input_dim)
    a, w = np.asarray(initial.a), np.asarray(initial.w)
    if a.shape != (m,) or w.shape != (m, fan_in):
        raise ValueError(f"initial particles must have a: ({m},) and w: ({m}, {fan_in}) "
                         f"(model.width, input dim + bias); got a: {a.shape}, w: {w.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(w))):
        raise ValueError("initial particles contain NaN or inf")
    m_pad = padded.a.shape[0]
    dtype = padded.a.dtype
    a_pad = np.zeros((m_pad,), dtype)
    w_pad = np.zeros((m_pad, fan_in), dtype)
    a_pad[:m], w_pad[:m] = a, w
    return pt.Particles(a=jnp.asarray(a_pad), w=jnp.asarray(w_pad))


def simulate(config: SimulationConfig, *, progress: bool | None = None, out=None,
             resume: bool = False, overwrite: bool = False,
             checkpoint_seconds: float = 5.0, initial: pt.Particles | None = None,
             devices=None) -> xr.Dataset:
    """Run the particle system of ``config`` and return its Dataset.

    Args:
        config: the run.
        progress: show a tqdm progress bar (default: when stderr is a terminal).
        out: zarr directory to stream the run into, chunk by chunk (see ``meanfield.store``);
            None keeps the run in memory only.
        resume: continue the run already in ``out`` (same config required) from its last
            checkpoint; a finished run is returned as stored.
        overwrite: replace an existing ``out`` (otherwise an existing store is an error).
        checkpoint_seconds: with ``out``, commit records and a state checkpoint at the end of
            the first compiled chunk that finishes this long after the previous commit (0:
            after every chunk). A SIGKILL loses at most what was computed since the last
            commit; Ctrl-C, divergence and the end of the run always commit.
        initial: explicit initial particles (a: (width,), w: (width, input dim + bias)) that
            replace the ones drawn from ``config.seed`` (e.g. a deterministic quadrature,
            ``meanfield.limits.reference``); they are zero-padded like the drawn ones and the
            Dataset records ``initial="custom"``. Not allowed with ``resume=True`` (the store
            cannot check that the same particles are given).
        devices: split the particles over devices (``meanfield.sharding``): None (one
            device), a count N (the first N of ``jax.devices()``), a list of jax devices or
            a ``jax.sharding.Mesh`` with a ``"particles"`` axis. The Dataset is the same for
            any number of devices (to the rounding of the sums over particles).
    Returns:
        ``xarray.Dataset`` on the time coordinate ``t`` (see ``meanfield.io`` for the schema);
        with ``out``, the store opened lazily. ``solver.kind="analytic"`` runs Barbu's analytic
        solver instead and ``t`` counts its iterations (``meanfield.analytic_run``).
    Raises:
        DivergenceError / StepBudgetError: with ``.dataset`` holding what was recorded.
        RunInterrupted: on Ctrl-C, with ``.dataset`` holding what was recorded.
        meanfield.store.StoreError: ``out`` is unreadable or belongs to another config.
    """
    mesh = resolve_mesh(devices)
    check_precision(config.precision, mesh)
    if mesh is not None and config.solver.kind == "analytic":
        raise ValueError("devices: solver.kind='analytic' runs on the host; devices apply "
                         "to the particle integrators (euler, optax, adaptive)")
    with scope(mesh):
        return _simulate(config, progress=progress, out=out, resume=resume, overwrite=overwrite,
                         checkpoint_seconds=checkpoint_seconds, initial=initial, mesh=mesh)


def _simulate(config: SimulationConfig, *, progress, out, resume: bool, overwrite: bool,
              checkpoint_seconds: float, initial, mesh) -> xr.Dataset:
    """``simulate`` under the context of its particle mesh (None: one device)."""
    from meanfield.io import open_run
    from meanfield.store import RunStore, read_progress

    started = time.time()
    check_positive("checkpoint_seconds", checkpoint_seconds, allow_zero=True)
    sync("meanfield: run starts")  # every process sees the store as it was before the run
    if config.solver.kind == "analytic":  # not a time integrator: iterations on the host
        from meanfield.analytic_run import simulate_analytic

        return simulate_analytic(config, progress=progress, out=out, resume=resume,
                                 overwrite=overwrite, initial=initial)
    if out is not None and os.path.exists(out) and not (resume or overwrite):
        raise FileExistsError(f"{out} exists; pass resume=True (CLI --resume) to continue it "
                              "or overwrite=True (CLI --overwrite) to replace it")
    if initial is not None and out is not None and resume:
        raise ValueError("resume=True cannot be combined with initial=...: the store does not "
                         "record custom initial particles; rerun with overwrite=True instead")
    problem, particles, x_eval, dtype = prepare(config, device_count(mesh))
    if initial is not None:
        particles = _custom_initial(config, initial, particles)
    m_pad = particles.a.shape[0]
    particles = place(particles, mesh, m_pad)
    key = _integrator_key(config.solver)
    params = _solver_params(config.solver, dtype)
    times, snap = save_schedule(config, particle_time_scale(problem, particles))
    plan = chunk_plan(times, snap)
    spec = make_spec(config, np.asarray(problem.x), pt.default_flow_params(dtype)["band_eps"],
                     dtype)
    limits = {"max_steps": jnp.asarray(config.max_steps, jnp.int32),
              "loss_tol": jnp.asarray(-jnp.inf if config.loss_tol is None else config.loss_tol,
                                      dtype)}
    state = _init_state(key, problem, particles, params)
    recorder = _Recorder(config, {"initial": "custom"} if initial is not None else {})
    store, first_chunk = None, 0
    if out is not None and resume and os.path.exists(out):
        # process 0 opens (and truncates) the store, the others then read where it resumes
        store = RunStore.open(out, config.to_json()) if is_writer() else None
        sync("meanfield: store opened")
        if store is None:
            store = RunStore(out, config.to_json())
            store.progress = read_progress(out)
        if store.progress["finished"]:
            return open_run(out)
        state = store.load_state(to_host(state)) or state  # host template: shards of all processes
        first_chunk = store.progress["chunks_done"]
        recorder.resume(store.last_record(), store.progress["records"])
        store = store if is_writer() else None
    elif out is not None and is_writer():
        store = RunStore.create(out, config.to_json(), overwrite=overwrite)
    state = place(state, mesh, m_pad)
    if first_chunk == 0:
        recorder.snapshot(state)
    bar = _progress_bar(progress, len(times))
    if bar is not None:
        bar.update(recorder.count)
    last_commit, committed_state, committed_chunks = time.time(), state, 0
    try:
        for index in range(first_chunk, len(plan)):
            start, end, snapshot_after = plan[index]
            targets = times[start:end]
            real = np.arange(CHUNK_SAVES) < len(targets)
            padded = np.concatenate([targets, np.repeat(targets[-1:], CHUNK_SAVES - len(targets))])
            state, done, records = _run_chunk(key, problem, x_eval, state, params,
                                              jnp.asarray(padded, dtype), jnp.asarray(real), limits,
                                              particles, spec)
            done = bool(done)
            kept = recorder.add(records)
            if done or snapshot_after:
                recorder.snapshot(state)
            # process 0's clock decides for all: gathering the state is collective
            if agree(out is not None and (done or index + 1 == len(plan) or
                                          time.time() - last_commit >= checkpoint_seconds)):
                checkpoint = to_host(state)
                if store is not None:
                    store.append(recorder.pending_dataset(started), checkpoint, index + 1)
                recorder.clear_pending()
                last_commit = time.time()
            elif store is None:
                recorder.clear_pending()
            committed_state, committed_chunks = state, index + 1
            if bar is not None:
                bar.update(kept)
                bar.set_postfix(t=f"{recorder.last('t'):.3g}", loss=f"{recorder.last('loss'):.3g}",
                                steps=int(recorder.last("n_steps")))
            if done:
                break
    except KeyboardInterrupt:
        if store is not None and recorder.has_pending and committed_chunks:
            store.append(recorder.pending_dataset(started), committed_state, committed_chunks)
        raise RunInterrupted(_result(recorder, store, started, "interrupted",
                                     finished=False)) from None
    finally:
        if bar is not None:
            bar.close()
    status, t_final, steps = int(state.status), float(state.t), int(state.n_steps)
    if status != OK:
        ds = _result(recorder, store, started, STATUS_NAMES[status])
        raise DivergenceError(
            f"run diverged ({STATUS_NAMES[status]}) at t={t_final:.6g} after {steps} steps: the "
            "state became NaN/inf or the step size underflowed; everything recorded before is "
            "in exc.dataset. Try precision='float64', a smaller solver.dt or solver.rtol.", ds)
    if steps >= config.max_steps and t_final < config.t_max:
        raise StepBudgetError(f"max_steps={config.max_steps} exhausted at t={t_final:.6g} < "
                              f"t_max={config.t_max}", _result(recorder, store, started, "max_steps"))
    reason = "t_max" if t_final >= config.t_max * (1 - 1e-12) else "loss_tol"
    return _result(recorder, store, started, reason)


def _result(recorder, store, started: float, stop_reason: str, finished: bool = True):
    """The run's Dataset with its phases: from the store (finalised) when streaming, else from
    memory."""
    from meanfield.io import open_run
    from meanfield.phases import label_phases

    if store is None or not store.written:
        ds = recorder.dataset(started, stop_reason)
        return ds.assign(phase=label_phases(ds))
    ds = open_run(store.path)
    phase = label_phases(ds.assign_attrs(stop_reason=stop_reason))
    store.finish({"stop_reason": stop_reason, "wall_time_s": time.time() - started},
                 finished=finished, extra=xr.Dataset({"phase": phase.drop_vars("t", errors="ignore")}))
    return open_run(store.path)


def _progress_bar(progress: bool | None, total: int):
    import sys

    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="save", desc="meanfield")


class _Recorder:
    """Accumulates valid records and snapshots on the host and builds Datasets.

    Everything recorded in this process stays in memory (the in-memory result); ``pending_*``
    holds what the current chunk added, for streaming into a store.
    """

    def __init__(self, config: SimulationConfig, attrs: dict | None = None):
        self.config = config
        self.attrs = dict(attrs or {})  # extra Dataset attrs (e.g. initial="custom")
        self.records: dict[str, list[np.ndarray]] = {}
        self.snapshots: list[tuple[float, np.ndarray, np.ndarray]] = []
        self.pending_records: dict[str, np.ndarray] = {}
        self.pending_snapshots: list[tuple[float, np.ndarray, np.ndarray]] = []
        self._last: dict[str, float] = {}
        self.count = 0

    def resume(self, last: dict, count: int) -> None:
        """Continue after records already stored (only the last one matters here)."""
        self._last, self.count = dict(last), count

    def add(self, records) -> int:
        records = jax.device_get(records)
        valid = np.array(records.pop("valid"))
        # fixed-step solvers can pass several save times in one step: keep each time once
        t = np.asarray(records["t"])
        previous = self._last.get("t", -np.inf)
        for i in np.flatnonzero(valid):
            valid[i] = t[i] > previous
            previous = t[i] if valid[i] else previous
        for name, value in records.items():
            kept = np.asarray(value)[valid]
            self.records.setdefault(name, []).append(kept)
            pending = self.pending_records.get(name)
            self.pending_records[name] = kept if pending is None else np.concatenate([pending, kept])
        if valid.any():
            last = np.flatnonzero(valid)[-1]
            self._last = {k: float(np.asarray(v)[last]) for k, v in records.items()
                          if np.ndim(v) == 1}
        self.count += int(valid.sum())
        return int(valid.sum())

    def last(self, name: str) -> float:
        return self._last.get(name, 0.0)

    def snapshot(self, state) -> None:
        m = self.config.model.width
        t = float(state.t)
        if self.snapshots and self.snapshots[-1][0] == t:
            return
        a, w = to_host((state.particles.a[:m], state.particles.w[:m]))
        snap = (t, np.asarray(a), np.asarray(w))
        self.snapshots.append(snap)
        self.pending_snapshots.append(snap)

    @property
    def has_pending(self) -> bool:
        return bool(self.pending_snapshots) or len(self.pending_records.get("t", ())) > 0

    def clear_pending(self) -> None:
        self.pending_records, self.pending_snapshots = {}, []

    def pending_dataset(self, started: float) -> xr.Dataset:
        from meanfield.io import build_dataset

        return build_dataset(self.config, self.pending_records, self.pending_snapshots,
                             wall_time=time.time() - started,
                             stop_reason="running").assign_attrs(self.attrs)

    def dataset(self, started: float, stop_reason: str) -> xr.Dataset:
        from meanfield.io import build_dataset

        columns = {k: (np.concatenate(v) if v else np.zeros((0,))) for k, v in self.records.items()}
        return build_dataset(self.config, columns, self.snapshots,
                             wall_time=time.time() - started,
                             stop_reason=stop_reason).assign_attrs(self.attrs)
