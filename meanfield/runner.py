"""``simulate(config) -> xarray.Dataset``: one finite-width run, end to end.

Data flow (docs/architecture.md): config -> initial particles -> jitted chunks of save targets, each
a ``lax.while_loop`` of integrator steps followed by on-device observables -> host loop between
chunks (progress bar, stop rules, divergence check, sparse particle snapshots) -> Dataset.
The solver object (``config.solver.build()``: an integrator of
``meanfield.particles.integrators``) and the ``StopRule`` are pytree arguments of the compiled
chunk: their classes and static fields select the program, their numbers are traced, so width,
seed, step values and tolerances never recompile. Solvers on another clock (the analytic fit,
``clock = "iteration"``) go to their driver in ``DRIVERS``. Setup (``prepare``, schedules,
progress bar) is in ``meanfield.setup``, the errors in ``meanfield.errors``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

import meanfield.particles as pt
from meanfield.analytic_run import simulate_analytic
from meanfield.compilation import enable_compilation_cache
from meanfield.config import SimulationConfig
from meanfield.errors import (DivergenceError, RunInterrupted, StepBudgetError,
                              raise_if_interrupted)
from meanfield.particles._validate import check_bool, check_positive
from meanfield.particles.integrators import OK, STATUS_NAMES
from meanfield.recording import make_spec, measure
from meanfield.sharding import (agree, agreed_int, check_precision, device_count, is_writer,
                                place, resolve_mesh, scope, sync, to_host)
from meanfield.stops import (
    STOP_REASONS,
    all_neurons_dead,
    check_initial_scales,
    loss_stalled,
    step_collapsed,
)
from meanfield.setup import (
    CHUNK_SAVES,
    end_bar_here,
    chunk_plan,
    custom_initial,
    draw_particles,
    padded_targets,
    particle_shapes,
    particle_time_scale,
    prepare_problem,
    progress_bar,
)

TRACE_COUNT = {"run_chunk": 0}  # incremented at trace time (tests count recompilations)


def _observables(problem: pt.Problem, x_eval, state, initial, spec):
    f_train = state.f[problem.inverse]
    loss = pt.risk(problem, state.f)
    correct = (problem.y * f_train > 0).astype(f_train.dtype)
    return {
        "t": state.t, "loss": loss, "accuracy": pt.sample_sum(problem.weights * correct),
        "f_train": f_train,
        "f_eval": pt.network_output(state.particles, x_eval, problem.inv_width, problem.n_chunks),
        "n_steps": state.n_steps, "n_rejected": state.n_rejected, "step_size": state.h,
        "status": state.status,
        **measure(problem, state.particles, initial, spec),
    }


@jax.jit
def run_chunk(integrator: pt.TimeIntegrator, stop: pt.StopRule, problem, x_eval, state,
              targets, real, initial, spec, budget):
    """Advance through ``targets`` (K,), recording observables at each (``real`` masks padding),
    with at most ``budget`` step attempts (accepted or rejected).

    The integrator's class and static fields select the compiled program; its numbers, the
    stop rule's, the budget and the arrays are traced.

    Returns:
        (state, done, paused, records): ``done`` when the stop rule ended the run; ``paused``
        when the budget ran out before a target, which is then recorded neither: the targets
        before it are (``records["valid"]``), and a call from ``state`` with the rest of the
        targets takes the same steps the one call would have taken.
    """
    TRACE_COUNT["run_chunk"] += 1
    first_attempt = state.n_steps + state.n_rejected
    observe, shapes = pt.kernels.trace_once(_observables, problem, x_eval, state, initial, spec)
    # what a target not recorded (padding, after the stop, after a pause) records instead of
    # computing the observables
    blank = jax.tree.map(lambda v: jnp.zeros(v.shape, v.dtype), shapes)

    def one_target(carry, inputs):
        state, done, paused = carry
        target, is_real = inputs

        def cond(s):
            within_budget = s.n_steps + s.n_rejected - first_attempt < budget
            return (~done) & (~paused) & (s.t < target) & ~stop.stopped(problem, s) & within_budget

        state = jax.lax.while_loop(cond, lambda s: integrator.step(problem, s, target), state)
        stopped = stop.stopped(problem, state)
        paused = paused | ((~done) & (state.t < target) & ~stopped)
        valid = (~done) & (~paused) & is_real
        record = jax.lax.cond(valid, lambda: observe(problem, x_eval, state, initial, spec),
                              lambda: blank)
        return (state, done | stopped, paused), dict(record, valid=valid)

    (state, done, paused), records = jax.lax.scan(
        one_target, (state, jnp.asarray(False), jnp.asarray(False)), (targets, real))
    return state, done, paused, records


CALL_SECONDS = 0.5  # a compiled call returns to the host about this often (Ctrl-C, progress)
FIRST_CALL_ATTEMPTS = 64  # step attempts of a run's first call, before any is timed


def next_call_attempts(attempts: int, used: int, seconds: float) -> int:
    """Step attempts allowed in the next ``run_chunk`` call: about ``CALL_SECONDS`` of steps at
    the pace of the last call (``used`` attempts in ``seconds``), at most four times its
    ``attempts`` (a pace timed on a few steps is rough) and at least 16."""
    if used <= 0 or seconds <= 0:
        return attempts
    paced = CALL_SECONDS * used / seconds
    return int(min(max(paced, 16), 4 * attempts, np.iinfo(np.int32).max))


@jax.jit
def init_state(integrator: pt.TimeIntegrator, problem, particles):
    """The integrator's initial state (compiled per integrator structure, like ``run_chunk``)."""
    return integrator.init(problem, particles)


def compile_ahead(integrator: pt.TimeIntegrator, stop: pt.StopRule, problem, x_eval,
                  particles, spec, dtype) -> threading.Thread:
    """Start compiling the ``run_chunk`` program of a run in a background thread.

    XLA compiles without holding the GIL, so the initial state, the store and the modules of the
    result are prepared meanwhile. ``jax.jit`` keeps the compiled program in its cache and the
    loop's first call finds it there: the same program, so nothing the run computes changes.
    The thread is not a daemon: an interrupted process waits for the compiler before it exits.

    Args:
        integrator, stop, problem, x_eval, particles, spec: the arguments the loop passes to
            ``run_chunk`` (the state and the save targets are taken abstractly).
        dtype: the run's float dtype (of the save targets).
    Returns:
        The started thread; join it before the first ``run_chunk`` call (two compilations of
        one program are not shared).
    """
    def compile_run_chunk():
        try:
            state = jax.eval_shape(init_state, integrator, problem, particles)
            targets = jax.ShapeDtypeStruct((CHUNK_SAVES,), dtype)
            real = jax.ShapeDtypeStruct((CHUNK_SAVES,), np.bool_)
            budget = jax.ShapeDtypeStruct((), np.int32)
            run_chunk.lower(integrator, stop, problem, x_eval, state, targets, real, particles,
                            spec, budget).compile()
        except Exception:  # the loop's own call then compiles, and raises what went wrong
            pass

    thread = threading.Thread(target=compile_run_chunk, name="meanfield-compile-ahead")
    thread.start()
    return thread


def check_run_arguments(config, *, progress, out, resume, overwrite) -> None:
    """Refuse ``simulate`` arguments of the wrong type, or that would be ignored, before any
    compute."""
    if not isinstance(config, SimulationConfig):
        hint = " (SimulationConfig.from_dict builds one from a dict)" if isinstance(
            config, dict) else ""
        raise ValueError(f"config of type {type(config).__name__} is not allowed; it must be a "
                         f"meanfield.SimulationConfig, e.g. meanfield.presets.wang_ma(){hint}")
    config.check_angle_plane()
    check_bool("progress", progress, allow_none=True)
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise ValueError(f"out={out!r} is not allowed; it must be a directory path (str or "
                         "os.PathLike) or None")
    check_bool("resume", resume)
    check_bool("overwrite", overwrite)
    if resume and overwrite:
        raise ValueError("resume=True and overwrite=True exclude each other: resume continues "
                         "the run in out, overwrite replaces it")
    if out is None and (resume or overwrite):
        flag, what = ("resume", "continue") if resume else ("overwrite", "replace")
        raise ValueError(f"{flag}=True needs out=, the store to {what} (without out the run is "
                         "kept in memory only)")


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
        overwrite: replace an existing ``out`` (otherwise an existing store is an error). The
            new run is written beside it and replaces it when the run ends; a crash or a
            Ctrl-C before leaves ``out`` as it was (after a Ctrl-C the interrupted run is
            discarded: ``RunInterrupted.dataset`` holds it in memory).
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
            a ``jax.sharding.Mesh`` with a ``"particles"`` axis. The Dataset is bitwise the
            same for any number of devices (sums over particles are added chunk by chunk in
            one order).
    Returns:
        ``xarray.Dataset`` on the time coordinate ``t`` (see ``meanfield.schema`` for the schema);
        with ``out``, the store opened lazily. ``solver.kind="analytic"`` runs Barbu's analytic
        solver instead and ``t`` counts its iterations (``meanfield.analytic_run``).
    Raises:
        ValueError: an argument of the wrong type, ``resume`` with ``overwrite``, or either
            without ``out`` (before any compute).
        DivergenceError / StepBudgetError: with ``.dataset`` holding what was recorded.
        RunInterrupted: on Ctrl-C, with ``.dataset`` holding what was recorded
            (KeyboardInterrupt if that Dataset cannot be built, e.g. after a Ctrl-C in the
            middle of a first import; a store keeps its last commit either way).
        meanfield.store.StoreError: ``out`` is unreadable or belongs to another config.
    """
    check_run_arguments(config, progress=progress, out=out, resume=resume, overwrite=overwrite)
    mesh = resolve_mesh(devices)
    check_precision(config.precision, mesh)
    if mesh is not None and config.solver.kind == "analytic":
        raise ValueError("devices: solver.kind='analytic' runs on the host; devices apply "
                         "to the particle integrators (euler, heun, optax, adaptive)")
    with scope(mesh), contextlib.ExitStack() as on_exit:
        return _simulate(config, progress=progress, out=out, resume=resume, overwrite=overwrite,
                         checkpoint_seconds=checkpoint_seconds, initial=initial, mesh=mesh,
                         on_exit=on_exit)


def _simulate(config: SimulationConfig, *, progress, out, resume: bool, overwrite: bool,
              checkpoint_seconds: float, initial, mesh, on_exit) -> xr.Dataset:
    """``simulate`` under the context of its particle mesh (None: one device); ``on_exit``
    (an ``ExitStack``) runs its callbacks on every way out."""
    from meanfield.io import open_run
    from meanfield.store import RunStore, deferred_interrupt, read_progress

    started = time.time()
    check_positive("checkpoint_seconds", checkpoint_seconds, allow_zero=True)
    enable_compilation_cache()
    sync("meanfield: run starts")  # every process sees the store as it was before the run
    solver = config.solver.build()
    if solver.clock != "time":  # iterations on the host (the analytic solver)
        return DRIVERS[solver.clock](config, progress=progress, out=out, resume=resume,
                                     overwrite=overwrite, initial=initial)
    if out is not None and os.path.exists(out) and not (resume or overwrite):
        from meanfield.store import check_no_live_writer, store_status, stored_attrs

        check_no_live_writer(out)
        status = store_status(out)
        if status == "foreign":  # never replaced, not even with overwrite=True
            raise FileExistsError(f"{out} exists and is not a meanfield run store (or holds "
                                  "files a store never writes); choose another out")
        if status == "finished":
            stored = stored_attrs(out).get("config")
            if stored not in (None, config.to_json()):
                from meanfield.store import config_changes

                raise FileExistsError(f"{out} holds a finished run of another config ("
                                      f"{config_changes(stored, config.to_json())}); choose "
                                      "another out, or pass overwrite=True (CLI --overwrite) to "
                                      "replace it")
            raise FileExistsError(f"{out} holds a finished run; pass resume=True (CLI --resume) "
                                  "to return it or overwrite=True (CLI --overwrite) to replace it")
        raise FileExistsError(f"{out} exists; pass resume=True (CLI --resume) to continue it "
                              "or overwrite=True (CLI --overwrite) to replace it")
    if initial is not None and out is not None and resume:
        raise ValueError("resume=True cannot be combined with initial=...: the store does not "
                         "record custom initial particles; rerun with overwrite=True instead")
    check_initial_scales(config)
    problem, x_eval, dtype = prepare_problem(config, device_count(mesh))
    integrator = solver.with_dtype(dtype)
    spec = make_spec(config, np.asarray(problem.x), pt.default_band_eps(dtype), dtype)
    stop = pt.StopRule(max_steps=pt.to_device(config.max_steps, np.int32),
                       loss_tol=pt.to_device(-np.inf if config.loss_tol is None
                                             else config.loss_tol, dtype))
    # Started before the particles are drawn: the run program needs only their shapes, and
    # the sampler then compiles beside it. On a particle mesh the programs are compiled under
    # its context, in this thread.
    shapes = particle_shapes(config, problem, dtype)
    custom = None if initial is None else custom_initial(config, initial, shapes)
    ahead = (compile_ahead(integrator, stop, problem, x_eval, shapes, spec, dtype)
             if mesh is None else None)
    if ahead is not None:  # also on an early return (a finished store resumed) or an error:
        on_exit.callback(ahead.join)  # no compile thread outlives its run
    particles = draw_particles(config, problem, dtype) if custom is None else custom
    m_pad = particles.a.shape[0]
    particles = place(particles, mesh, m_pad)
    times, snap = config.save.schedule(config.t_max, particle_time_scale(problem, particles))
    plan = chunk_plan(times, snap)
    state = init_state(integrator, problem, particles)
    recorder = _Recorder(config, {"initial": "custom"} if initial is not None else {})
    # Import what the result needs (xarray loads dask on its first Dataset) before the store and
    # the loop: a Ctrl-C that lands in a first import leaves a half-imported module behind, which
    # the interrupt path below would trip on; here it is a plain KeyboardInterrupt.
    _result_of_records(recorder, started, "running")
    store, first_chunk = None, 0
    # sizes the store's chunk files: every record, and a snapshot at the start, after the
    # chunks that end on a snapshot time and at the end
    planned = {"t": len(times), "t_snapshot": 2 + sum(after for _, _, after in plan)}
    if out is not None and resume and os.path.exists(out):
        # process 0 opens (and truncates) the store, the others then read where it resumes
        store = RunStore.open(out, config.to_json(), planned=planned) if is_writer() else None
        sync("meanfield: store opened")
        if store is None:
            store = RunStore(out, config.to_json())
            store.progress = read_progress(out)
        if store.progress["finished"]:
            return open_run(out)
        state = store.load_state(to_host(state)) or state  # host template: shards of all processes
        first_chunk = store.progress["chunks_done"]
        if first_chunk:  # the wall time counts the earlier sessions up to their last commit
            started -= _committed_wall_time(out)
        recorder.resume(store.last_record(), store.progress["records"],
                        store.last_snapshot_time())
        store = store if is_writer() else None
    elif out is not None and is_writer():
        store = RunStore.create(out, config.to_json(), overwrite=overwrite, planned=planned)
    if store is not None:  # every way out: an overwrite not swapped in is discarded
        on_exit.callback(store.discard)
    state = place(state, mesh, m_pad)
    if first_chunk == 0:
        recorder.snapshot(state)
    bar = progress_bar(progress, len(times))
    if bar is not None:
        bar.update(recorder.count)
    last_commit, committed_state, committed_chunks = time.time(), state, 0
    early = None  # a stop reason of meanfield.stops
    attempts, attempted = FIRST_CALL_ATTEMPTS, _attempts(state)
    try:
        if ahead is not None:
            ahead.join()
        raise_if_interrupted()
        for index in range(first_chunk, len(plan)):
            start, end, snapshot_after = plan[index]
            while True:  # calls of at most `attempts` steps, each from where the last paused
                targets, real = padded_targets(times, start, end)
                called = time.perf_counter()
                # the numpy mask goes in as it is: jnp.asarray would compile a copy program
                state, done, paused, records = run_chunk(
                    integrator, stop, problem, x_eval, state, pt.to_device(targets, dtype), real,
                    particles, spec, pt.to_device(attempts, np.int32))
                done, paused, records = jax.device_get((done, paused, records))
                done, paused = bool(done), bool(paused)
                raise_if_interrupted()  # before these records: the ones before it are committed
                start += int(np.sum(records["valid"]))
                kept = recorder.add(records)
                now = _attempts(state)
                used, attempted = now - attempted, now
                # process 0's pace decides for all: every process runs the same calls
                attempts = agreed_int(next_call_attempts(attempts, used,
                                                         time.perf_counter() - called))
                if not paused:
                    break
                if bar is not None:
                    bar.update(kept)
                    _show_pace(bar, recorder, state)
            early = early_stop(recorder, state, problem, config) if not done else None
            done = done or early is not None
            if done or snapshot_after:
                recorder.snapshot(state)
            # a commit and its bookkeeping are one step for a Ctrl-C: taken after both, the
            # interrupt path never writes the committed records a second time
            with deferred_interrupt():
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
                _show_pace(bar, recorder, state)
            if done:
                if (bar is not None and early is None and int(state.status) == OK
                        and int(state.n_steps) < config.max_steps):  # loss_tol: a success
                    end_bar_here(bar)
                break
    except KeyboardInterrupt:
        try:
            if (store is not None and recorder.has_pending and committed_chunks
                    and not store.replaces):  # an overwrite's records are discarded anyway
                store.append(recorder.pending_dataset(started), committed_state,
                             committed_chunks)
            interrupted = _result(recorder, store, started, "interrupted", finished=False)
        except Exception:  # e.g. a module the interrupt left half-imported
            if store is not None:
                store.close()  # the last commit stands: resumable
            raise KeyboardInterrupt from None
        raise RunInterrupted(interrupted) from None
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
    if early is not None:
        warnings.warn(f"run stopped at t={t_final:.6g} ({early}): {STOP_REASONS[early]}",
                      RuntimeWarning, stacklevel=3)  # the caller of simulate
        return _result(recorder, store, started, early)
    # t is kept in the run's precision: a float32 t_max is t_max rounded (a few ulps below)
    reached = t_final >= config.t_max * (1 - 4 * float(np.finfo(np.dtype(config.precision)).eps))
    reason = "t_max" if reached or config.loss_tol is None else "loss_tol"
    return _result(recorder, store, started, reason)


def _attempts(state) -> int:
    """Steps attempted so far, accepted or rejected (read on the host: no program)."""
    return int(state.n_steps) + int(state.n_rejected)


def _show_pace(bar, recorder, state) -> None:
    """Time reached, last recorded loss, steps and step size on the progress bar: a stalling
    run shows as a shrinking h."""
    bar.set_postfix(t=f"{float(state.t):.3g}", loss=f"{recorder.last('loss'):.3g}",
                    steps=int(state.n_steps), h=f"{float(state.h):.2g}")


def _committed_wall_time(path: str) -> float:
    """Seconds the run in the store at ``path`` had computed at its last commit (0 if the
    store does not say)."""
    from meanfield.store import stored_attrs

    value = stored_attrs(path).get("wall_time_s")
    return float(value) if isinstance(value, (int, float)) and np.isfinite(value) else 0.0


STALL_RECORDS = 20  # records over which an unchanged loss means a stalled run


def early_stop(recorder, state, problem: pt.Problem, config: SimulationConfig) -> str | None:
    """The reason (a key of ``meanfield.stops.STOP_REASONS``) to end a run that can no longer
    change, checked on the host between compiled chunks, or None.

    * ``all_dead``: the last record has no alive neuron, confirmed on the particles;
    * ``loss_stalled``: over the last ``STALL_RECORDS`` records the loss, the relative
      displacement of the particles and the output at every training input are unchanged to
      working precision while time at least doubled (a plateau of a small initialisation
      keeps its loss but its particles and outputs grow: not a stall; the outputs also tell
      when the displacement underflows, e.g. output weights of 1e-20 in float32);
    * ``step_collapsed``: t + h == t in the run's precision.
    """
    alive = recorder.recent("alive_fraction", 1)
    if alive.size and not np.any(alive[-1] > 0):
        width = config.model.width
        w = np.asarray(to_host(state.particles.w[:width]))
        if all_neurons_dead(w, np.asarray(problem.x)):
            return "all_dead"
    t, loss = recorder.recent("t", STALL_RECORDS), recorder.recent("loss", STALL_RECORDS)
    moved = recorder.recent("rd", STALL_RECORDS)
    if (t.size == STALL_RECORDS and t[0] > 0 and t[-1] >= 2 * t[0]
            and loss_stalled(loss, config.precision, window=STALL_RECORDS)
            and loss_stalled(moved, config.precision, window=STALL_RECORDS)
            and all(loss_stalled(f, config.precision, window=STALL_RECORDS)
                    for f in recorder.recent("f_train", STALL_RECORDS).T)):
        return "loss_stalled"
    if step_collapsed(float(state.h), float(state.t), config.precision):
        return "step_collapsed"
    return None


def _result(recorder, store, started: float, stop_reason: str, finished: bool = True):
    """The run's Dataset with its phases: from the store (finalised) when streaming, else from
    memory."""
    from meanfield.condensation import phase_variables
    from meanfield.io import open_run

    if store is None or not store.written:
        return _result_of_records(recorder, started, stop_reason)
    if not finished and store.replaces:  # an interrupted overwrite: the old store stays
        store.discard()
        return _result_of_records(recorder, started, stop_reason)
    ds = open_run(store.path, dask=False)  # each variable the phases use is read once, whole
    store.finish({"stop_reason": stop_reason, "wall_time_s": time.time() - started},
                 finished=finished,
                 extra=phase_variables(ds.assign_attrs(stop_reason=stop_reason)))
    return open_run(store.path)


def _result_of_records(recorder, started: float, stop_reason: str):
    """The in-memory Dataset of what ``recorder`` holds, with its phases."""
    from meanfield.condensation import with_phase_summary

    return with_phase_summary(recorder.dataset(started, stop_reason))


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
        self._last_snapshot_time: float | None = None  # of the snapshots stored before a resume
        self.count = 0

    def resume(self, last: dict, count: int, last_snapshot_time: float | None = None) -> None:
        """Continue after records and snapshots already stored (only the last ones matter).

        A Ctrl-C between a chunk's computation and its commit stores that chunk's records and
        end snapshot beside the state before it, so the resumed run computes them again: records
        up to ``last["t"]`` and snapshots up to ``last_snapshot_time`` are not kept twice.
        """
        self._last, self.count = dict(last), count
        self._last_snapshot_time = last_snapshot_time

    def add(self, records) -> int:
        records = jax.device_get(records)
        valid = np.array(records.pop("valid"))
        # fixed-step solvers can pass several save times in one step: keep each time once
        t = np.asarray(records["t"])
        previous = self._last.get("t", -np.inf)
        for i in np.flatnonzero(valid):
            valid[i] = t[i] > previous
            previous = t[i] if valid[i] else previous
        if not valid.any():  # e.g. a call paused before its first target: no empty entries
            return 0
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

    def recent(self, name: str, count: int) -> np.ndarray:
        """The last ``count`` records of ``name`` kept in this process (fewer after a resume)."""
        tail, have = [], 0
        for chunk in reversed(self.records.get(name, [])):
            tail.append(np.asarray(chunk))
            have += len(chunk)
            if have >= count:
                break
        return np.concatenate(tail[::-1])[-count:] if tail else np.zeros((0,))

    def last(self, name: str) -> float:
        return self._last.get(name, 0.0)

    def snapshot(self, state) -> None:
        m = self.config.model.width
        t = float(state.t)
        if self.snapshots and self.snapshots[-1][0] == t:
            return
        if self._last_snapshot_time is not None and t <= self._last_snapshot_time:
            return
        # sliced on the host: a slice on the device compiles a program per run
        a, w = to_host((state.particles.a, state.particles.w))
        snap = (t, np.asarray(a)[:m], np.asarray(w)[:m])
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


DRIVERS = {"iteration": simulate_analytic}  # solver.clock -> driver (``clock="time"``: above)
