"""Sweeps: a grid of runs over preset arguments and config fields, streamed into one zarr store.

A ``Sweep`` names where configs come from (a preset of ``meanfield.presets`` or a function
returning a ``SimulationConfig``), ordered ``axes`` {name: values} whose Cartesian product is the
grid, ``fixed`` arguments shared by every point, and a ``Summary`` (what is kept of each run).
A name is a preset / builder argument (``width``, ``seed``, ``gamma``, ...) or, otherwise, a
dotted config field (``solver.rtol``, ``precision``, ...) applied with
``SimulationConfig.replace``. ``run_sweep(sweep, out)`` returns an ``xarray.Dataset`` whose
dims are the axes (plus the summary's own dims):

=================  ===============================  =========================================
variable           dims                             meaning
=================  ===============================  =========================================
loss_end, rd_w_end axes                             loss / RD(theta_w) / RD(a) / RD(theta) at
rd_a_end, rd_end                                    the last record (the end of training)
t_end, n_steps     axes                             final time, accepted steps
stop_reason        axes                             loss_tol, t_max, or the failure (diverged,
                                                    max_steps, ...)
error              axes                             the failure message ("" if none)
wall_time          axes                             seconds for the point (with compilation
                                                    for the first point of a compiled shape)
done               axes                             the point is finished (ok or failed)
CURVE              axes, t                          each of ``summary.curves`` resampled on
                                                    the common log-time grid ``t`` (NaN
                                                    outside the recorded times)
density            axes, t_density, sign, angle     directional density at the save nearest
                                                    in log t (NaN outside the recorded times)
density_end        axes, sign, angle                directional density at the end
particles_a/_w     axes, stage, neuron[, component] initial and final particles of the first
                                                    ``summary.particles`` neurons (NaN padding)
=================  ===============================  =========================================

Attributes: ``sweep`` (JSON of the spec), ``base_config`` (config JSON of the first point),
``compile_groups`` (the run order), versions (``meanfield.io.versions``), wall time.

**Execution.** Every config is built (and so validated) before any run. Points are grouped by
compiled shape (padded width, precision, solver, data shapes: ``compile_key``) and the groups
run cheapest first; within a group each point reuses the runner's compiled program (width,
seed, exponents and tolerances are traced values), so a sweep compiles once per shape.

Why one point at a time and not ``vmap`` over seeds / equal-shape configs: the adaptive flow
takes a different number of steps per member (luo_1d at m = 1000: 230 to 2000 steps across the
(gamma, gamma') grid), and a vmapped ``while_loop`` runs every member until the slowest
finishes, so a batch costs max(steps) x batch particle passes. Measured on a 2-core CPU
(busy with other jobs, so +-30%) with one compiled chunk program vmapped over the state of
luo_1d seeds at gamma = 1 (max/mean steps only 1.05): m = 1000, 8 seeds: 3.7 s batched against
5.1-7.0 s sequential; m = 5000, 4 seeds: 12.6-15.8 s batched against 8.7-9.1 s sequential. So
batching only pays at the smallest widths, where a width sweep spends little (in Luo's widths
1000..40000, m = 1000 is 1.3% of the particle work), and loses from m = 5000 on; it also
changes the floating-point reduction order (one seed took 417 instead of 418 steps), so a
sweep's numbers would no longer be those of ``meanfield.simulate``. Points therefore run one
at a time, each exactly as ``simulate(config)``.

**Executors.** ``run_sweep(..., executor=...)`` runs the points in this process (``Serial()``,
the default), in a local process pool (``LocalProcesses(workers=N)``) or on a Dask cluster
(``DaskCluster(address=None, workers=N)``); see ``meanfield.validation.executors``. Workers
return each point's summary and only the calling process writes the store, at the point's grid
index, so the store does not depend on the executor or on the completion order (every variable
but ``wall_time``). A worker process sets JAX's process-wide ``jax_enable_x64`` to the caller's
value before each point (``run_point_in_worker``; float64 points switch it on, as in the
caller), so whatever it ran before, a point gives the caller's numbers: float32 runs use
explicit dtypes and do not depend on the flag. A worker whose meanfield, jax or jaxlib version
or backend (``meanfield.schema.NUMERIC_VERSIONS``) differs from the caller's refuses the point
before computing it (``WorkerVersionError``), and the sweep stops with the points finished so
far committed: a Dask cluster may span machines with their own installations.

**Store.** With ``out``, every finished point is written at its grid index (one zarr chunk per
point, so a point's write never touches another's data; zarr writes each chunk file
atomically), then the sizes and CRC-32 of the point's chunk files are recorded
(``_progress/parts/POINT.json``) and the set of finished points is committed by atomically
replacing ``_progress/.zattrs`` (write + ``os.replace``), as in ``meanfield.store``. Opening a
store checks every finished point's chunk files against their sizes (``meanfield verify``
checks the CRC-32 too): a missing or cut chunk is an error, never a fill value read as data,
and resuming computes the damaged points again. A sweep killed at any
moment (SIGKILL included) loses at most the point in flight; ``run_sweep(..., resume=True)``
recomputes no finished point and gives the same numbers (the compiled step is deterministic on
CPU). A store of another sweep spec is never overwritten. A failed point (divergence, step
budget) is recorded with its stop reason and message, and the sweep goes on.
"""

from __future__ import annotations

import dataclasses
import datetime
import inspect
import json
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr
import zarr

from meanfield.store import (PROGRESS, check_resumable_versions,  # one commit protocol
                             chunk_manifest, consolidate, damaged_chunks, file_manifest,
                             quiet_zarr, read_progress, remove_store, verify_store,
                             write_json_atomic, write_part_manifest)
from meanfield.validation.executors import check_executor
from meanfield.particles._validate import (check_positive, closest, named_arguments,
                                            normalise_int)
from meanfield.schema import sweep_summary_attrs

FORMAT_VERSION = 1
FINAL = ("loss", "rd_w", "rd_a", "rd")  # kept at the end of training as NAME_end
CURVE_NAMES = ("loss", "accuracy", "rd_w", "rd_a", "rd", "step_size", "n_steps", "n_rejected",
               "dead_displacement_max")
STOP_REASON_DTYPE, ERROR_DTYPE = "<U16", "<U256"
STAGES = ("initial", "final")
RESERVED = ("t", "t_density", "sign", "angle", "stage", "neuron", "component")  # summary dims


# ----------------------------------------------------------------------------- spec

@named_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class Summary:
    """What is kept of each run of a sweep (summaries only: a 500-point sweep stays small).

    Attributes:
        curves: scalar run variables (dims (t,)) resampled on the common grid; one of
            ``CURVE_NAMES``. Missing in a run (e.g. accuracy for squared loss): NaN.
        t_min: first time of the common log-time grid ``t``.
        t_max: last time of the common grid.
        n_times: number of log-spaced times of the common grid (>= 2).
        density_times: number of log-spaced times in [t_min, t_max] at which the directional
            density is kept (0: none; ``density_end`` is always kept).
        particles: keep the initial and final particles of the first ``particles`` neurons
            (0: none). Neuron k is the same draw at every width (``meanfield`` README), so the
            first neurons are a fair sample for condensation plots.
    """

    curves: tuple[str, ...] = ("loss", "rd_w")
    t_min: float = 1e-6
    t_max: float = 1e6
    n_times: int = 97
    density_times: int = 13
    particles: int = 0

    def __post_init__(self):
        curves = (self.curves,) if isinstance(self.curves, str) else tuple(self.curves)
        for name in curves:
            if name not in CURVE_NAMES:
                raise ValueError(f"summary.curves entry {name!r} is not allowed; choose from "
                                 f"{CURVE_NAMES}")
        if len(set(curves)) != len(curves):
            raise ValueError(f"summary.curves={curves!r} has duplicates")
        object.__setattr__(self, "curves", curves)
        check_positive("summary.t_min", self.t_min)
        check_positive("summary.t_max", self.t_max)
        if self.t_max <= self.t_min:
            raise ValueError(f"summary.t_max={self.t_max!r} must be > summary.t_min="
                             f"{self.t_min!r}")
        normalise_int(self, "n_times", "summary.n_times", minimum=2)
        normalise_int(self, "density_times", "summary.density_times", minimum=0)
        normalise_int(self, "particles", "summary.particles", minimum=0)

    @property
    def times(self) -> np.ndarray:
        """The common log-time grid, shape (n_times,)."""
        return np.geomspace(self.t_min, self.t_max, self.n_times)

    @property
    def density_grid(self) -> np.ndarray:
        """Times of the sparse density clock, shape (density_times,)."""
        return np.geomspace(self.t_min, self.t_max, self.density_times)


def _scalar(name: str, value):
    """A JSON-able scalar axis value (numpy scalars become Python ones)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or isinstance(value, (int, str)):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise ValueError(f"sweep axis {name!r}: value {value!r} is not allowed; axis values must be "
                     "finite numbers, strings or booleans")


def _pairs(field: str, value) -> tuple:
    if isinstance(value, Mapping):
        items = list(value.items())
    else:
        try:
            items = [tuple(p) for p in value]
        except TypeError:
            raise ValueError(f"sweep.{field} must be a mapping {{name: ...}}, got "
                             f"{type(value).__name__}") from None
        if any(len(p) != 2 for p in items):
            raise ValueError(f"sweep.{field} must be a mapping {{name: ...}} or (name, value) "
                             "pairs")
    for name, _ in items:
        if not isinstance(name, str) or not name:
            raise ValueError(f"sweep.{field} names must be non-empty strings, got {name!r}")
    return tuple(items)


def _json_default(value):
    if dataclasses.is_dataclass(value):
        return value.to_dict() if hasattr(value, "to_dict") else dataclasses.asdict(value)
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return repr(value)


@named_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class Sweep:
    """A grid of runs (see module docstring).

    Attributes:
        preset: a preset name of ``meanfield.presets.PRESETS`` or a function returning a
            ``SimulationConfig`` (recorded by ``module:qualname``; define it at module level
            so a resumed sweep can name the same one).
        axes: ordered {name: values}; the grid is their Cartesian product, the Dataset dims
            follow this order. Values: finite numbers, strings or booleans, unique per axis.
        fixed: {name: value} given to every point.
        summary: what is kept of each run.
        name: a label.

    Every point's config is built once at construction: a bad name or value is a ValueError
    naming the point, before any run.
    """

    preset: str | Callable[..., Any] = "luo_1d"
    axes: Mapping[str, Sequence] | tuple = ()
    fixed: Mapping[str, Any] | tuple = ()
    summary: Summary = dataclasses.field(default_factory=Summary)
    name: str = "sweep"

    def __post_init__(self):
        from meanfield import presets

        if isinstance(self.preset, str):
            if self.preset not in presets.PRESETS:
                raise ValueError(f"sweep.preset={self.preset!r} is not allowed; choose one of "
                                 f"{sorted(presets.PRESETS)} or pass a function returning a "
                                 "SimulationConfig")
        elif not callable(self.preset):
            raise ValueError(f"sweep.preset must be a preset name {sorted(presets.PRESETS)} or "
                             f"a function returning a SimulationConfig, got {self.preset!r}")
        axes = []
        for name, values in _pairs("axes", self.axes):
            if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
                raise ValueError(f"sweep axis {name!r} must be a sequence of values, got "
                                 f"{values!r}")
            values = tuple(_scalar(name, v) for v in values)
            if not values:
                raise ValueError(f"sweep axis {name!r} has no values")
            if len(set(values)) != len(values):
                raise ValueError(f"sweep axis {name!r} has repeated values {values!r}")
            axes.append((name, values))
        if not axes:
            raise ValueError("sweep.axes must name at least one axis, e.g. {'seed': (0, 1)}")
        reserved = [n for n, _ in axes if n in RESERVED]
        if reserved:
            raise ValueError(f"sweep axes {reserved} clash with the summary dims {RESERVED}")
        if len({n for n, _ in axes}) != len(axes):
            raise ValueError("sweep.axes names must be unique")
        fixed = _pairs("fixed", self.fixed)
        clash = {n for n, _ in fixed} & {n for n, _ in axes}
        if clash:
            raise ValueError(f"sweep names {sorted(clash)} are both axes and fixed")
        if not isinstance(self.summary, Summary):
            raise ValueError("sweep.summary must be a meanfield.validation.sweep.Summary")
        object.__setattr__(self, "axes", tuple(axes))
        object.__setattr__(self, "fixed", tuple(fixed))
        unknown = [n for n in self.names if n not in self.builder_arguments and "." not in n
                   and n not in _config_fields()]
        if unknown:
            known = sorted(set(self.builder_arguments) | set(_config_fields()))
            raise ValueError(f"sweep names {unknown} are neither arguments of the preset "
                             f"({sorted(self.builder_arguments)}) nor config fields "
                             f"({sorted(_config_fields())}, dotted for nested ones)"
                             f"{closest(unknown[0], known)}")
        build_configs(self)  # every point's config is valid (a dotted name, a value)

    # -- grid -----------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.axes] + [n for n, _ in self.fixed]

    @property
    def dims(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.axes)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for _, v in self.axes)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def coords(self, index: tuple[int, ...]) -> dict:
        """{axis: value} of the grid point ``index``."""
        return {name: values[i] for (name, values), i in zip(self.axes, index)}

    @property
    def builder(self) -> Callable[..., Any]:
        from meanfield import presets

        return presets.PRESETS[self.preset] if isinstance(self.preset, str) else self.preset

    @property
    def builder_arguments(self) -> set[str]:
        return set(inspect.signature(self.builder).parameters)

    def config(self, **coords):
        """The ``SimulationConfig`` of one point, from its axis values (all axes required)."""
        missing = [n for n in self.dims if n not in coords]
        extra = [n for n in coords if n not in self.dims]
        if missing or extra:
            raise ValueError(f"sweep.config needs exactly the axes {list(self.dims)}; missing "
                             f"{missing}, unknown {extra}")
        coords = {name: _scalar(name, value) for name, value in coords.items()}
        values = {**dict(self.fixed), **coords}
        args = {k: v for k, v in values.items() if k in self.builder_arguments}
        fields = {k: v for k, v in values.items() if k not in args}
        config = self.builder(**args)
        from meanfield.config import SimulationConfig

        if not isinstance(config, SimulationConfig):
            raise ValueError(f"sweep.preset returned {type(config).__name__}, not a "
                             "SimulationConfig")
        return config.replace(**fields) if fields else config

    def config_at(self, index: tuple[int, ...]):
        return self.config(**self.coords(index))

    def to_json(self) -> str:
        preset = self.preset if isinstance(self.preset, str) else (
            f"{self.preset.__module__}:{self.preset.__qualname__}")
        return json.dumps({"preset": preset, "axes": [[n, list(v)] for n, v in self.axes],
                           "fixed": [[n, v] for n, v in self.fixed],
                           "summary": dataclasses.asdict(self.summary), "name": self.name},
                          default=_json_default, sort_keys=True)


def _config_fields() -> set[str]:
    from meanfield.config import SimulationConfig

    return {f.name for f in dataclasses.fields(SimulationConfig)}


def compile_key(config) -> tuple:
    """What decides the runner's compiled program: padded width first (the cost order), then
    precision, the solver's structure (its class and static fields, ``jax.tree.structure`` of
    the solver object: numbers such as dt and rtol are traced), data shapes and the recording
    layout. Points with equal keys share one compiled program."""
    import jax

    import meanfield.particles as pt

    n_chunks, chunk = pt.chunk_layout(config.model.width, config.chunk_size)
    observe = config.observe
    return (n_chunks * chunk, n_chunks, config.precision,
            jax.tree.structure(config.solver.build()), config.data.x.shape,
            config.data.x_eval.shape,
            config.model.bias, config.model.output, config.model.loss,
            observe.n_angle_bins, observe.n_cosine_bins, len(observe.references))


def run_order(sweep: Sweep, configs: dict) -> list[list[tuple[int, ...]]]:
    """Grid indices grouped by ``compile_key``; groups cheapest (smallest padded width) first,
    grid order within a group."""
    groups: dict[tuple, list] = {}
    for index in np.ndindex(*sweep.shape):
        groups.setdefault(compile_key(configs[index]), []).append(index)
    order = sorted(groups, key=lambda k: (k[0], list(groups).index(k)))
    return [groups[k] for k in order]


# ----------------------------------------------------------------------------- summaries

def on_log_grid(t: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """``values`` (n_t,) recorded at times ``t`` resampled at ``grid`` (k,): linear in log t
    between records, NaN outside [first positive record, last record]."""
    t, values = np.asarray(t, float), np.asarray(values, float)
    keep = t > 0
    out = np.full(np.shape(grid), np.nan)
    if not keep.any():
        return out
    log_t, v = np.log(t[keep]), values[keep]
    inside = (grid >= t[keep][0]) & (grid <= t[keep][-1])
    out[inside] = np.interp(np.log(grid[inside]), log_t, v)
    return out


def nearest_in_log(t: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Index of the record nearest in log t to each grid time (-1 outside the recorded
    positive times), shape (k,)."""
    t = np.asarray(t, float)
    positive = np.flatnonzero(t > 0)
    out = np.full(np.shape(grid), -1)
    if positive.size == 0:
        return out
    inside = (grid >= t[positive[0]]) & (grid <= t[positive[-1]])
    distance = np.abs(np.log(grid[inside])[:, None] - np.log(t[positive])[None, :])
    out[inside] = positive[np.argmin(distance, axis=1)]
    return out


def summarise(ds: xr.Dataset, summary: Summary) -> dict[str, np.ndarray]:
    """The summary of one run Dataset (``meanfield.simulate``'s, possibly partial).

    Returns {name: array} with the per-point shapes of the module docstring's table (without
    the axes); ``particles_a`` (2, k) / ``particles_w`` (2, k, D) hold the first
    k = min(summary.particles, width) neurons (the caller pads).
    """
    n_t = ds.sizes.get("t", 0)
    t = np.asarray(ds.t.values, float) if n_t else np.zeros(0)
    out: dict[str, np.ndarray] = {}
    for name in FINAL:
        out[f"{name}_end"] = np.asarray(float(ds[name].values[-1]) if n_t and name in ds
                                        else np.nan)
    out["t_end"] = np.asarray(t[-1] if n_t else np.nan)
    out["n_steps"] = np.asarray(int(ds.n_steps.values[-1]) if n_t else 0)
    for name in summary.curves:
        out[name] = (on_log_grid(t, ds[name].values, summary.times) if n_t and name in ds
                     else np.full(summary.n_times, np.nan))
    if "density" in ds and n_t:
        density = np.asarray(ds.density.values, float)  # (t, sign, angle)
        out["density_end"] = density[-1]
        if summary.density_times:
            picks = nearest_in_log(t, summary.density_grid)
            kept = np.full((summary.density_times,) + density.shape[1:], np.nan)
            kept[picks >= 0] = density[picks[picks >= 0]]
            out["density"] = kept
    if summary.particles and ds.sizes.get("t_snapshot", 0):
        k = min(summary.particles, ds.sizes["neuron"])
        snaps = [0, ds.sizes["t_snapshot"] - 1]
        out["particles_a"] = np.asarray(ds.snapshot_a.values[snaps, :k], float)
        out["particles_w"] = np.asarray(ds.snapshot_w.values[snaps, :k], float)
    return out


def run_point(config, summary: Summary) -> dict[str, np.ndarray]:
    """Run one config and summarise it; a divergence or step-budget stop is recorded (with its
    stop reason and message), not raised."""
    from meanfield.errors import RunError
    from meanfield.runner import simulate

    started = time.perf_counter()
    error = ""
    try:
        ds = simulate(config, progress=False)
    except RunError as exc:
        ds, error = exc.dataset, f"{type(exc).__name__}: {exc}"
    values = summarise(ds, summary) if ds is not None else {}
    values["stop_reason"] = np.asarray(ds.attrs.get("stop_reason", "error") if ds is not None
                                       else "error", STOP_REASON_DTYPE)
    values["error"] = np.asarray(error[:256], ERROR_DTYPE)
    values["wall_time"] = np.asarray(time.perf_counter() - started)
    return values


# one point at a time per process: jax_enable_x64 is process-wide (a Dask worker may run tasks
# in several threads)
_WORKER_POINT = threading.Lock()


class WorkerVersionError(RuntimeError):
    """A worker whose library, jax or backend versions differ from the sweep's: its points
    would not be the computation of the others."""


def run_point_in_worker(config, summary: Summary, x64: bool,
                        versions: Mapping[str, str]) -> dict[str, np.ndarray]:
    """``run_point`` in a worker process, with the caller's ``jax_enable_x64`` (``x64``) set
    first, so the point does not depend on what the worker ran before.

    Raises:
        WorkerVersionError: the worker's ``meanfield.schema.NUMERIC_VERSIONS`` differ from the
            caller's ``versions`` (raised before any compute, naming each of them).
    """
    import jax

    from meanfield.schema import changed_versions

    changed = changed_versions(dict(versions))
    if changed:
        listed = "; ".join(f"{key.removesuffix('_version')} {new} (the sweep: {old})"
                           for key, (old, new) in changed.items())
        raise WorkerVersionError(
            f"the worker on {socket.gethostname()} (process {os.getpid()}) runs {listed}: its "
            "points would mix results of two versions in one sweep; install the sweep's "
            "versions on every worker")
    with _WORKER_POINT:
        if jax.config.jax_enable_x64 != x64:
            jax.config.update("jax_enable_x64", x64)
        return run_point(config, summary)


# ----------------------------------------------------------------------------- store layout

def _layout(sweep: Sweep, configs: dict) -> tuple[dict, dict]:
    """Variables {name: (extra dims, extra shape, dtype, fill)} and extra coordinates."""
    from meanfield.io import build_dataset

    first = configs[(0,) * len(sweep.shape)]
    template = build_dataset(first, {}, [], wall_time=0.0, stop_reason="template")
    n_bins = {c.observe.n_angle_bins for c in configs.values()}
    components = {c.model.fan_in(c.data.input_dim) for c in configs.values()}
    if len(n_bins) > 1 or len(components) > 1:
        raise ValueError("a sweep keeps one density / particle layout: observe.n_angle_bins and "
                         "the input dimension (+ bias) must be equal at every point, got "
                         f"{sorted(n_bins)} bins and {sorted(components)} components")
    s = sweep.summary
    n_sign, n_angle = template.sizes["sign"], template.sizes["angle"]
    variables = {f"{name}_end": ((), (), "f8", np.nan) for name in FINAL}
    variables.update({
        "t_end": ((), (), "f8", np.nan), "n_steps": ((), (), "i8", None),
        "stop_reason": ((), (), STOP_REASON_DTYPE, None), "error": ((), (), ERROR_DTYPE, None),
        "wall_time": ((), (), "f8", np.nan), "done": ((), (), "bool", None),
        "density_end": (("sign", "angle"), (n_sign, n_angle), "f4", np.nan),
    })
    variables.update({name: (("t",), (s.n_times,), "f8", np.nan) for name in s.curves})
    coords = {"t": ("t", s.times), "sign": ("sign", template.sign.values),
              "angle": ("angle", template.angle.values)}
    if s.density_times:
        variables["density"] = (("t_density", "sign", "angle"),
                                (s.density_times, n_sign, n_angle), "f4", np.nan)
        coords["t_density"] = ("t_density", s.density_grid)
    if s.particles:
        k = min(s.particles, max(c.model.width for c in configs.values()))
        d = template.sizes["component"]
        variables["particles_a"] = (("stage", "neuron"), (2, k), "f4", np.nan)
        variables["particles_w"] = (("stage", "neuron", "component"), (2, k, d), "f4", np.nan)
        coords.update(stage=("stage", np.array(STAGES)), neuron=("neuron", np.arange(k)),
                      component=("component", template.component.values))
    return variables, coords


class SweepStore:
    """One zarr (format 2) group per sweep, on disk (``path``) or in memory (``path=None``);
    see the module docstring for the write / commit protocol."""

    def __init__(self, group, path: str | None, progress: dict):
        self.group, self.path, self.progress = group, path, progress
        self._done = set(progress["done"])
        self._arrays = {name: group[name] for name in group.array_keys()}
        self._written: list[str] = []  # chunk files of the point to commit next

    @classmethod
    def create(cls, path: str | None, sweep: Sweep, variables: dict, coords: dict,
               attrs: dict) -> "SweepStore":
        store = zarr.storage.MemoryStore() if path is None else path
        group = zarr.open_group(store, mode="w", zarr_format=2)
        dims, shape = sweep.dims, sweep.shape
        for name, values in sweep.axes:
            group.create_array(name, data=np.asarray(values), fill_value=None,
                               attributes={"_ARRAY_DIMENSIONS": [name]})
        for name, (dim, values) in coords.items():
            group.create_array(name, data=np.asarray(values), fill_value=None,
                               attributes={"_ARRAY_DIMENSIONS": [dim],
                                           **sweep_summary_attrs(name)})
        for name, (extra_dims, extra_shape, dtype, fill) in variables.items():
            group.create_array(name, shape=shape + extra_shape, dtype=dtype, fill_value=fill,
                               chunks=(1,) * len(shape) + extra_shape,
                               attributes={"_ARRAY_DIMENSIONS": list(dims + extra_dims),
                                           **sweep_summary_attrs(name)})
        group.attrs.put(attrs)
        group.create_group("_progress")  # holds the commit record (its .zattrs)
        progress = {"format": FORMAT_VERSION, "done": [], "sessions": 1, "finished": False,
                    "files": {} if path is None else file_manifest(path),
                    "manifest_parts": True}
        out = cls(group, path, progress)
        out._commit()
        return out

    @classmethod
    def open(cls, path: str, spec_json: str) -> "SweepStore":
        """Reopen a store to resume it; the sweep spec must match exactly, and with points left
        to run, the versions it records (``check_resumable_versions``)."""
        from meanfield.store import StoreError

        progress = read_progress(path)
        try:
            group = zarr.open_group(path, mode="r+", zarr_format=2)
            stored = group.attrs["sweep"]
        except (OSError, ValueError, KeyError) as exc:
            raise StoreError(f"{path} is not a readable sweep store ({exc}); nothing was "
                             "overwritten") from None
        if progress is None or progress.get("format") != FORMAT_VERSION:
            raise StoreError(f"{path} is not a sweep store of format {FORMAT_VERSION}; nothing "
                             "was overwritten")
        if stored != spec_json:
            raise StoreError(f"{path} holds another sweep (its spec differs); nothing was "
                             "overwritten (choose another output path, or overwrite=True)")
        if len(progress.get("done", ())) < group["done"].size:  # points are left to run
            check_resumable_versions(path)
        progress = {**progress, "sessions": progress.get("sessions", 1) + 1, "finished": False}
        progress["done"] = _drop_damaged_points(path, progress)
        metadata = os.path.join(path, ".zmetadata")
        if os.path.exists(metadata):  # stale once more points are written
            os.remove(metadata)
        return cls(group, path, progress)

    def is_done(self, flat: int) -> bool:
        return flat in self._done

    @property
    def n_done(self) -> int:
        return len(self._done)

    def write(self, index: tuple[int, ...], values: dict) -> None:
        """Write one point's summary at its grid index (``done`` last)."""
        for name, value in values.items():
            array = self._arrays[name]
            value = np.asarray(value)
            if name.startswith("particles_"):  # first k neurons of a narrower width: pad
                padded = np.full(array.shape[len(index):], np.nan, array.dtype)
                padded[(slice(None), slice(0, value.shape[1]))] = value
                value = padded
            array[index] = value
        self._arrays["done"][index] = True
        if self.path is not None:
            self._written += [_chunk_file(self._arrays[name], name, index)
                              for name in (*values, "done")]

    def commit(self, flat: int) -> None:
        """Mark point ``flat`` (C order) done with the sizes and CRC-32 of its chunk files,
        atomically."""
        self._done.add(flat)
        self.progress["done"] = sorted(self._done)
        if self.path is not None:
            write_part_manifest(self.path, flat, chunk_manifest(self.path, self._written))
        self._written = []
        self._commit()

    def _commit(self) -> None:
        if self.path is None:
            return
        write_json_atomic(os.path.join(self.path, PROGRESS), self.progress)

    def finish(self, attrs: dict) -> None:
        self.group.attrs.update(attrs)
        self.progress["finished"] = len(self._done) == int(np.prod(self._arrays["done"].shape))
        self._commit()
        if self.path is not None:
            consolidate(self.path)

    def dataset(self) -> xr.Dataset:
        """The sweep Dataset: lazy on disk, loaded when in memory; ``done`` from the commits."""
        with quiet_zarr():
            ds = xr.open_zarr(self.group.store, consolidated=False)
        if self.path is None:
            ds = ds.load()
        done = np.zeros(ds.done.size, bool)
        done[sorted(self._done)] = True
        return ds.assign(done=(ds.done.dims, done.reshape(ds.done.shape), ds.done.attrs))


def _chunk_file(array, name: str, index: tuple[int, ...]) -> str:
    """The chunk file (relative to the store) holding point ``index`` of array ``name``: one
    chunk per point, the summary's own dims in one piece."""
    key = tuple(index) + (0,) * (array.ndim - len(index))
    separator = getattr(array.metadata, "dimension_separator", ".") or "."
    return os.path.join(name, separator.join(map(str, key)))


def _drop_damaged_points(path: str, progress: dict) -> list[int]:
    """The committed points whose chunk files are all intact; a point with a missing or damaged
    chunk file is warned about and left to recompute. A damaged axis or coordinate array (no
    point owns it) is ``StoreCorrupt``."""
    import warnings

    from meanfield.store import StoreCorrupt

    damaged = damaged_chunks(path, progress)
    if not damaged:
        return progress["done"]
    for _, text, point in damaged:
        if point is None:
            raise StoreCorrupt(f"{path} is damaged: {text}; recompute the sweep "
                               "(overwrite=True)")
    points = {point for _, _, point in damaged}
    warnings.warn(f"{path}: {len(damaged)} chunk files of {len(points)} finished points are "
                  f"missing or damaged ({damaged[0][1]}); those points are computed again",
                  stacklevel=3)
    return sorted(set(progress["done"]) - points)


def open_sweep(path: str | os.PathLike) -> xr.Dataset:
    """Open a sweep store lazily (also one killed mid-way); ``done`` is the committed mask
    (values of points not done are fill values, or partial for the point in flight).

    Raises:
        meanfield.store.StoreCorrupt: a committed chunk file is missing or has another size
            than when it was committed (resuming the sweep recomputes those points).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no sweep store at {path}")
    progress = read_progress(path)
    if progress is None:
        raise ValueError(f"{path} is not a sweep store (no {PROGRESS})")
    verify_store(path)
    with quiet_zarr():
        ds = xr.open_zarr(path, consolidated=os.path.exists(os.path.join(path, ".zmetadata")))
    done = np.zeros(ds.done.size, bool)
    done[progress["done"]] = True
    return ds.assign(done=(ds.done.dims, done.reshape(ds.done.shape), ds.done.attrs))


# ----------------------------------------------------------------------------- run

def build_configs(sweep: Sweep) -> dict:
    """{grid index: SimulationConfig} for every point, validated before any compute."""
    configs = {}
    for index in np.ndindex(*sweep.shape):
        coords = sweep.coords(index)
        try:
            configs[index] = sweep.config(**coords)
            configs[index].check_angle_plane()  # every point is a particle run
        except (ValueError, TypeError) as exc:
            raise ValueError(f"sweep {sweep.name!r} point {coords}: {exc}") from None
    return configs


def run_sweep(sweep: Sweep, out: str | os.PathLike | None = None, *, resume: bool = True,
              overwrite: bool = False, progress: bool | None = True,
              executor=None) -> xr.Dataset:
    """Run every point of ``sweep`` (see the module docstring) and return the summaries.

    Args:
        sweep: the grid.
        out: zarr directory the points stream into; None keeps them in memory.
        resume: continue the sweep already in ``out`` (same spec required), skipping its
            finished points; a finished sweep is returned as stored.
        overwrite: replace an existing ``out`` (otherwise an existing store of another sweep,
            or any existing ``out`` with ``resume=False``, is an error).
        progress: one tqdm bar over the whole sweep (None: when stderr is a terminal).
        executor: where the points run (``meanfield.validation.executors``): None or
            ``Serial()`` in this process, ``LocalProcesses(workers=N)``, or
            ``DaskCluster(address=None, workers=N)``. The store is the same with each.
    Returns:
        ``xarray.Dataset`` with the axes as dims (lazy when read from ``out``).
    Raises:
        ValueError: a point's config or the executor is invalid (before any run).
        FileExistsError / meanfield.store.StoreError: ``out`` exists and may not be reused.
    """
    from meanfield.io import versions

    if not isinstance(sweep, Sweep):
        raise ValueError(f"sweep must be a meanfield.validation.sweep.Sweep, got {type(sweep).__name__}")
    executor = check_executor(executor)
    started = time.time()
    configs = build_configs(sweep)
    order = run_order(sweep, configs)
    path = None if out is None else os.fspath(out)
    spec = sweep.to_json()
    if path is not None and os.path.exists(path) and overwrite:
        remove_store(path)  # only a store this library wrote, holding nothing else
    if path is not None and os.path.exists(path):
        if not resume:
            raise FileExistsError(f"{path} exists; pass resume=True to continue it or "
                                  "overwrite=True to replace it")
        store = SweepStore.open(path, spec)
    else:
        variables, coords = _layout(sweep, configs)
        attrs = {"kind": "sweep-summary", "sweep": spec, "name": sweep.name,
                 "base_config": next(iter(configs.values())).to_json(),
                 "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                 "compile_groups": json.dumps([[int(compile_key(configs[g[0]])[0]), len(g)]
                                               for g in order]), **versions()}
        store = SweepStore.create(path, sweep, variables, coords, attrs)
    pending = [index for group in order for index in group
               if not store.is_done(int(np.ravel_multi_index(index, sweep.shape)))]
    if executor.in_process:
        fn, calls = run_point, [(configs[index], sweep.summary) for index in pending]
    else:
        import jax

        from meanfield.schema import numeric_versions

        x64, own = bool(jax.config.jax_enable_x64), numeric_versions()
        fn = run_point_in_worker
        calls = [(configs[index], sweep.summary, x64, own) for index in pending]
    bar = _progress_bar(progress, sweep.size, store.n_done, sweep.name)
    results = executor.map_unordered(fn, calls)
    try:
        for position, values in results:
            index = pending[position]
            store.write(index, values)
            store.commit(int(np.ravel_multi_index(index, sweep.shape)))
            if bar is not None:
                bar.set_postfix(sweep.coords(index), refresh=False)
                bar.update(1)
    finally:
        results.close()  # stops the workers of an interrupted sweep
        if bar is not None:
            bar.close()
    store.finish({"wall_time_s_last_session": time.time() - started,
                  "points_run_last_session": len(pending), "executor": executor.describe()})
    return store.dataset()


def _progress_bar(progress: bool | None, total: int, initial: int, name: str):
    if progress is None:
        import sys

        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="run", desc=name)
