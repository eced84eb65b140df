"""Analytic training (Barbu, arXiv 2304.02972; docs/theory/analytic.md) of a ``SimulationConfig`` as a run
Dataset, with the iteration as the time axis.

``simulate(config)`` with ``config.solver.kind == "analytic"`` lands here
(``simulate_analytic``): the particles of ``config`` (the same initial particles as the
gradient-flow run of that config: ``meanfield.setup.prepare``, same seed) are trained by
``meanfield.particles.analytic`` (first-layer ridge solve with the pattern frozen, pattern refresh, output
solve; ``solver.iterations``, ``solver.ridge``, ``solver.output_bias``), and the network after
every iteration is recorded with the schema of a particle run (``meanfield.io``):

* the coordinate ``t`` holds the iteration number k = 0 (initial network), 1, ...,
  ``solver.iterations`` (its ``units`` attr says so; ``t_snapshot`` likewise), so
  ``meanfield.plot`` (log axis, k = 0 not shown) and ``mf.compare`` consume it as they consume
  gradient-flow time; the two are different clocks and are not to be set on one axis;
* ``loss`` is the solver's own float64 loss of iterate k (the loss after the output solve;
  the initial loss at k = 0); ``f_train`` / ``f_eval`` are the float64 network of iterate k
  (``meanfield.particles.analytic.network``, including the output bias c when ``output_bias=True``);
  every other observable (density, RD, activity, ...) is ``meanfield.recording.measure`` of the
  particles, in ``config.precision``; ``phase`` is ``meanfield.phases.label_phases`` on the
  iteration axis (boundaries in iterations);
* ``n_steps`` = k, ``n_rejected`` = 0 (no iterate is rejected: the best one is kept instead),
  ``step_size`` = 1 (one iteration);
* every save is an iteration (``save.t``, ``save.n``, ``save.t_min`` and ``t_max`` are not
  used); snapshots at k = 0, the last iteration and ``save.snapshots`` log-spaced iterations,
  or at explicit iteration numbers; ``loss_tol`` stops at the first iterate at or below it.

Solver-specific variables, all prefixed ``analytic_`` (dims ``t``; NaN / -1 at k = 0, where no
iteration ran): ``analytic_loss_first_layer`` (frozen-pattern loss after the W solve),
``analytic_loss_refresh`` (true loss with the new W and the old a, c), ``analytic_loss_output``
(after the (a, c) solve; equals ``loss`` for k >= 1), ``analytic_flips`` (pattern entries
changed), ``analytic_cond_first_layer`` / ``analytic_cond_output`` (condition numbers of the
normal matrices), ``analytic_cg_iterations`` (-1 when assembled), ``analytic_ridge_first_layer``
/ ``analytic_ridge_output`` (after ill-conditioning fallbacks), ``analytic_iteration_time`` (s),
``analytic_output_bias`` (c), ``analytic_best_loss`` / ``analytic_best_iteration`` (best iterate
so far); and the best iterate itself: ``analytic_best_a`` (neuron), ``analytic_best_w`` (neuron,
component), ``analytic_best_c``. Attributes: ``time_axis="iteration"``,
``analytic_best_loss``, ``analytic_best_iteration``, ``analytic_first_layer_forms``,
``analytic_ridge``, ``analytic_output_bias``, ``analytic_precision="float64"``.

A fit is written to its store in one piece at the end (fits take seconds); on Ctrl-C,
``RunInterrupted.dataset`` holds the iterations done and nothing is written.
"""

from __future__ import annotations

import math
import os
import time

import jax
import numpy as np
import xarray as xr

import meanfield.particles as pt
from meanfield.config import SaveAt
from meanfield.errors import DivergenceError, RunInterrupted
from meanfield.particles.analytic import AnalyticSolver, network
from meanfield.recording import make_spec, measure
from meanfield.setup import (custom_initial, draw_particles, end_bar_here, pad_particles,
                             particle_shapes, prepare_problem, progress_bar)

ITERATION_UNITS = "iteration of the analytic solver (arXiv 2304.02972), not gradient-flow time"

# per-iteration record of ``meanfield.particles.analytic.analytic_step``: (value at k = 0, long_name)
SOLVER_RECORDS = {
    "loss_first_layer": (math.nan, "frozen-pattern loss after the first-layer solve"),
    "loss_refresh": (math.nan, "loss after the pattern refresh (new W, previous a and c)"),
    "loss_output": (math.nan, "loss after the output-layer solve"),
    "flips": (0, "activation-pattern entries changed by the refresh"),
    "cond_first_layer": (math.nan, "condition number of the first-layer normal matrix"),
    "cond_output": (math.nan, "condition number of the output-layer normal matrix"),
    "cg_iterations": (-1, "conjugate-gradient iterations of the first-layer solve (-1: assembled)"),
    "ridge_first_layer": (math.nan, "ridge of the first-layer solve (after fallbacks)"),
    "ridge_output": (math.nan, "ridge of the output solve (after fallbacks)"),
}


def check_analytic(config) -> None:
    """Raise ValueError unless the analytic solver can train ``config`` (before any compute)."""
    if config.solver.kind != "analytic":
        raise ValueError(f"solver.kind={config.solver.kind!r}; the analytic fit needs "
                         "solver.kind='analytic'")
    if config.model.loss != "squared":
        raise ValueError(f"model.loss={config.model.loss!r} is not allowed with "
                         "solver.kind='analytic'; it solves least squares: choose ('squared',)")
    if not config.model.trainable_output:
        raise ValueError("model.output='frozen' is not allowed with solver.kind='analytic' "
                         "(it solves the output layer): choose ('trainable',)")
    snaps = config.save.snapshots
    if isinstance(snaps, tuple) and any(v != round(v) for v in snaps):
        raise ValueError(f"save.snapshots={snaps} must be iteration numbers (integers >= 0) "
                         "with solver.kind='analytic'")


def snapshot_iterations(config) -> np.ndarray:
    """Boolean mask over iterations 0..N of the snapshot iterations (``save.snapshots``: a
    count of log-spaced iterations, or explicit iteration numbers; 0 and N always)."""
    n = config.solver.iterations
    on_iterations = config.replace(
        save=SaveAt(t=tuple(float(k) for k in range(1, n + 1)), snapshots=config.save.snapshots),
        t_max=float(n))
    times, snap = on_iterations.save.schedule(on_iterations.t_max, math.nan)
    return snap[np.isin(times, np.arange(n + 1))]


_measure = jax.jit(measure)


class _Fit:
    """Host-side records of an analytic fit and the Dataset built from them."""

    def __init__(self, config, problem, initial: pt.Particles, spec, attrs: dict):
        data, bias = config.data, config.model.bias
        self.config, self.problem, self.initial, self.spec = config, problem, initial, spec
        self.x_train = np.asarray(data.augmented(data.x, bias), float)
        self.x_eval = np.asarray(data.augmented(data.x_eval, bias), float)
        self.leak = 0.0
        self.attrs = attrs
        self.columns: dict[str, list] = {}
        self.snapshots: list[tuple[float, np.ndarray, np.ndarray]] = []

    def record(self, k: int, state, step: dict | None) -> None:
        a, w, c = state.a, state.w, float(state.c)
        row = {"t": float(k), "loss": float(state.loss),
               "f_train": network(a, w, c, self.x_train, self.leak),
               "f_eval": network(a, w, c, self.x_eval, self.leak),
               "n_steps": k, "n_rejected": 0, "step_size": 1.0}
        observed = jax.device_get(_measure(self.problem, pad_particles(a, w, self.initial),
                                           self.initial, self.spec))
        row.update({name: np.asarray(v) for name, v in observed.items()})
        for name, (initial_value, _) in SOLVER_RECORDS.items():
            row[f"analytic_{name}"] = initial_value if step is None else step[name]
        row["analytic_iteration_time"] = 0.0 if step is None else step["time"]
        row["analytic_output_bias"] = c
        row["analytic_best_loss"] = float(state.best_loss)
        row["analytic_best_iteration"] = int(state.best_iteration)
        for name, value in row.items():
            self.columns.setdefault(name, []).append(value)
        if step is not None:
            self.columns.setdefault("_forms", []).append(step["first_layer_form"])

    def snapshot(self, k: int, state) -> None:
        self.snapshots.append((float(k), np.asarray(state.a), np.asarray(state.w)))

    def dataset(self, state, started: float, stop_reason: str) -> xr.Dataset:
        from meanfield.condensation import with_phase_summary
        from meanfield.io import build_dataset

        columns = {k: np.asarray(v) for k, v in self.columns.items() if not k.startswith("_")}
        ds = build_dataset(self.config, columns, self.snapshots,
                           wall_time=time.time() - started, stop_reason=stop_reason)
        iteration = {"units": ITERATION_UNITS, "long_name": "iteration"}
        ds["t"].attrs.update(iteration)
        ds["t_snapshot"].attrs.update(iteration | {"long_name": "snapshot iteration"})
        ds["step_size"].attrs.update(units=ITERATION_UNITS,
                                     long_name="iterations per record (always 1)")
        ds["n_steps"].attrs["long_name"] = "analytic iterations done"
        ds["n_rejected"].attrs["long_name"] = "rejected iterations (always 0: best iterate kept)"
        for name, (_, long_name) in SOLVER_RECORDS.items():
            ds[f"analytic_{name}"] = xr.Variable(("t",), columns[f"analytic_{name}"],
                                                 {"units": "1", "long_name": long_name})
        extra = {
            "iteration_time": ("s", "wall time of the iteration"),
            "output_bias": ("1", "output bias c of the iterate"),
            "best_loss": ("1", "lowest loss over the iterates so far (best iterate)"),
            "best_iteration": ("1", "iteration of the best iterate so far"),
        }
        for name, (units, long_name) in extra.items():
            ds[f"analytic_{name}"] = xr.Variable(("t",), columns[f"analytic_{name}"],
                                                 {"units": units, "long_name": long_name})
        best = (f"best iterate (iteration {int(state.best_iteration)}, loss "
                f"{float(state.best_loss):.6g})")
        ds["analytic_best_a"] = xr.Variable(("neuron",), np.asarray(state.best_a),
                                            {"units": "1", "long_name": f"a of the {best}"})
        ds["analytic_best_w"] = xr.Variable(("neuron", "component"), np.asarray(state.best_w),
                                            {"units": "1", "long_name": f"w of the {best}"})
        ds["analytic_best_c"] = xr.Variable((), float(state.best_c),
                                            {"units": "1", "long_name": f"c of the {best}"})
        solver = self.config.solver
        ds.attrs.update(self.attrs)
        ds.attrs.update({
            "time_axis": "iteration",
            "analytic_best_loss": float(state.best_loss),
            "analytic_best_iteration": int(state.best_iteration),
            "analytic_first_layer_forms": ",".join(sorted(set(self.columns.get("_forms", [])))),
            "analytic_ridge": float(solver.ridge),
            "analytic_output_bias": int(solver.output_bias),
            "analytic_precision": "float64",
        })
        return with_phase_summary(ds)


def simulate_analytic(config, *, progress: bool | None = None, out=None, resume: bool = False,
                      overwrite: bool = False, initial: pt.Particles | None = None) -> xr.Dataset:
    """Analytic fit of ``config`` (``solver.kind="analytic"``) as a run Dataset (module
    docstring); called by ``meanfield.simulate``, whose arguments it takes.

    Args:
        config: a SimulationConfig with ``solver.kind="analytic"``, squared loss and a
            trainable output layer.
        progress: tqdm progress bar over iterations (default: when stderr is a terminal).
        out: zarr directory to write the Dataset into (written at the end).
        resume: return the fit already stored in ``out`` (same config required) instead of
            refitting; a fit is never partially stored.
        overwrite: replace an existing ``out``.
        initial: explicit initial particles (a (width,), w (width, D)) instead of the drawn
            ones (as in ``simulate``).
    Returns:
        The Dataset on ``t`` = iteration (see the module docstring).
    Raises:
        ValueError: a config the analytic solver cannot train (before any compute).
        DivergenceError: a non-finite loss (``.dataset`` holds the iterations before it).
        RunInterrupted: on Ctrl-C, with ``.dataset`` holding the iterations done.
    """
    from meanfield.io import open_run, save_run
    from meanfield.store import StoreError, config_changes

    started = time.time()
    check_analytic(config)
    if initial is not None and out is not None and resume:
        raise ValueError("resume=True cannot be combined with initial=...: the store does not "
                         "record custom initial particles; rerun with overwrite=True instead")
    if out is not None and os.path.exists(out):
        if resume:
            stored = open_run(out)
            if stored.attrs.get("config") != config.to_json():
                raise StoreError(f"{out} holds a run of another config ("
                                 f"{config_changes(stored.attrs.get('config'), config.to_json())}"
                                 "); nothing was overwritten (choose another output path, or "
                                 "overwrite explicitly)")
            return stored
        if not overwrite:
            raise FileExistsError(f"{out} exists; pass resume=True (CLI --resume) to return it "
                                  "or overwrite=True (CLI --overwrite) to replace it")
    snap = snapshot_iterations(config)
    problem, _, dtype = prepare_problem(config)
    particles = (draw_particles(config, problem, dtype) if initial is None
                 else custom_initial(config, initial, particle_shapes(config, problem, dtype)))
    m = config.model.width
    spec = make_spec(config, np.asarray(problem.x), pt.default_band_eps(dtype), dtype)
    solver = config.solver.build()
    data = config.data
    state = solver.init(
        pt.Particles(a=np.asarray(particles.a[:m], float), w=np.asarray(particles.w[:m], float)),
        (data.augmented(data.x, config.model.bias), data.y, data.weights))
    fit = _Fit(config, problem, particles, spec,
               {"initial": "custom"} if initial is not None else {})
    fit.record(0, state, None)
    fit.snapshot(0, state)
    loss_tol = -math.inf if config.loss_tol is None else config.loss_tol
    bar = progress_bar(progress, config.solver.iterations, unit="iteration")
    stop_reason = "loss_tol" if float(state.loss) <= loss_tol else "iterations"
    try:
        for k in range(1, config.solver.iterations + 1 if stop_reason == "iterations" else 1):
            state, step = solver.step(state)
            fit.record(k, state, step)
            if not math.isfinite(float(state.loss)):
                fit.snapshot(k, state)
                raise DivergenceError(
                    f"analytic fit diverged (loss {float(state.loss)}) at iteration {k}; the "
                    "iterations before are in exc.dataset. Try a larger solver.ridge.",
                    fit.dataset(state, started, "diverged"))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(state.loss):.3g}")
            if float(state.loss) <= loss_tol:
                stop_reason = "loss_tol"
                if bar is not None:
                    end_bar_here(bar)
                break
            if snap[k]:
                fit.snapshot(k, state)
    except KeyboardInterrupt:
        raise RunInterrupted(fit.dataset(state, started, "interrupted")) from None
    finally:
        if bar is not None:
            bar.close()
    if fit.snapshots[-1][0] != float(state.iteration):
        fit.snapshot(int(state.iteration), state)
    ds = fit.dataset(state, started, stop_reason)
    if out is None:
        return ds
    save_run(ds, out, overwrite=overwrite)
    return open_run(out)
