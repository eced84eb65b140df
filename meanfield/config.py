"""Run configuration: frozen, validated, keyword-only dataclasses (JSON round-trippable).

A ``SimulationConfig`` is everything that determines a run's numbers: the model, the data,
the solver, the save schedule, the stop rules, the seed and the precision.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Literal

import numpy as np

from meanfield.particles._validate import (SEED_MAX, check_bool, check_choice, check_positive,
                                           check_tolerance, closest, named_arguments,
                                           normalise_int)
from meanfield.particles.analytic import AnalyticConfig, AnalyticSolver
from meanfield.particles.integrators import (
    DEFAULT_RTOL,
    AdaptiveFlow,
    Euler,
    Heun,
    OptaxSolver,
    check_optax_arguments,
)
from meanfield.particles.model import (
    InitialLaw,
    ModelSpec,
    Parametrisation,
    TrainingData,
    value_key,
)

PRECISIONS = ("float32", "float64")
HALF_PRECISIONS = ("float16", "bfloat16")  # refused with their own reason, not a "did you mean"
MAX_SAVES = 10_000_000  # records per run: every one is held on the host while it streams
MAX_BINS = 100_000  # histogram bins of an observable, recorded at every save


def check_precision_name(value) -> None:
    """Raise unless ``value`` is one of ``PRECISIONS``; half precision gets its own reason
    (whether the devices support the precision is ``meanfield.sharding.check_precision``)."""
    if isinstance(value, str) and value in HALF_PRECISIONS:
        raise ValueError(f"precision={value!r} is not allowed; choose one of {PRECISIONS}: the "
                         "engine has no half-precision mode, 'float32' is its lowest precision")
    check_choice("precision", value, PRECISIONS)


def flat_fields(value, prefix: str = "") -> dict:
    """A nested dict (``SimulationConfig.to_dict``, or its JSON loaded) as {dotted name: value}."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items()
                for k, v in flat_fields(item, f"{prefix}{key}.").items()}
    return {prefix[:-1]: value}


def changed_fields(a: dict, b: dict) -> list[str]:
    """Dotted names, sorted, of the fields whose values differ between two nested config dicts
    (a field present in one only counts as changed)."""
    a, b = flat_fields(a), flat_fields(b)
    return [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _floats(name: str, value, what: str) -> tuple[float, ...]:
    """``value`` flattened to a tuple of floats, or a ValueError naming ``name``."""
    try:
        out = tuple(float(v) for v in np.ravel(np.asarray(value, dtype=float)))
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not allowed; it must be {what}") from None
    return out
_ANALYTIC_DEFAULTS = AnalyticConfig()  # Solver(kind="analytic") defaults = the solver's own


@dataclasses.dataclass(frozen=True)
class SolverKind:
    """One row of ``SOLVER_KINDS``: how a ``Solver`` of that kind becomes a solver object.

    Attributes:
        solver: the solver class, built as ``solver(**{name: Solver.<name>})`` over
            ``parameters`` (a ``TimeIntegrator`` or an iteration-clock sibling).
        parameters: the ``Solver`` fields this kind takes; every other field must keep its
            default (``PARAMETER_CHECKS`` validates the ones it takes).
        required: parameters without a usable default (None) that must be given.
        check: validation across parameters, ``check(solver)`` raising ValueError.
    """

    solver: type
    parameters: tuple[str, ...]
    required: tuple[str, ...] = ()
    check: Callable[["Solver"], None] | None = None


def _check_optax(solver: "Solver") -> None:
    check_optax_arguments(solver.optimizer, solver.optimizer_kwargs, prefix="solver.")


SOLVER_KINDS: dict[str, SolverKind] = {
    "adaptive": SolverKind(AdaptiveFlow, ("rtol",)),
    "euler": SolverKind(Euler, ("dt",), required=("dt",)),
    "heun": SolverKind(Heun, ("dt",), required=("dt",)),
    "optax": SolverKind(OptaxSolver, ("dt", "optimizer", "optimizer_kwargs"),
                        required=("dt", "optimizer"), check=_check_optax),
    "analytic": SolverKind(AnalyticSolver, ("iterations", "ridge", "output_bias")),
}
SOLVERS = tuple(SOLVER_KINDS)


# validation of each Solver field a kind takes (run only for the kinds that take it)
PARAMETER_CHECKS: dict[str, Callable[["Solver"], None]] = {
    "rtol": lambda s: check_tolerance("solver.rtol", s.rtol),
    "dt": lambda s: check_positive("solver.dt", s.dt),
    "optimizer": lambda s: None,  # with optimizer_kwargs, in the optax row's check
    "optimizer_kwargs": lambda s: None,
    "iterations": lambda s: normalise_int(s, "iterations", "solver.iterations", minimum=1),
    "ridge": lambda s: check_positive("solver.ridge", s.ridge, allow_zero=True),
    "output_bias": lambda s: check_bool("solver.output_bias", s.output_bias),
}


@named_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class Solver:
    """How the particles are advanced in gradient-flow time t (or, ``analytic``, in iterations).

    ``build()`` makes the solver object from the ``SOLVER_KINDS`` row of ``kind``; fields a kind
    does not take must keep their defaults.

    Attributes:
        kind: a key of ``SOLVER_KINDS``: ``adaptive`` (the gradient flow, error-controlled:
            ``meanfield.particles.integrators.AdaptiveFlow``), ``euler`` (fixed step dt = plain
            GD), ``heun`` (Heun's method, second order, fixed step dt), ``optax`` (an optax
            optimiser fed with the mean-field gradient; t advances by dt), or ``analytic``
            (Barbu's alternating least squares, arXiv 2304.02972, docs/theory/analytic.md:
            ``meanfield.particles.analytic``; not a gradient flow: the run's time axis ``t``
            counts iterations, see ``meanfield.analytic_run``).
        rtol: relative tolerance on the residual field (adaptive).
        dt: time step (euler, heun, optax).
        optimizer: name of an optax optimiser factory, e.g. ``adam``, ``sgd`` (optax).
        optimizer_kwargs: keyword arguments of that factory, e.g. ``{"learning_rate": 1e-3}``,
            checked against its signature (optax).
        iterations: number of analytic iterations (first-layer solve, pattern refresh, output
            solve), >= 1 (analytic).
        ridge: proximal ridge >= 0 of the analytic least-squares solves (analytic).
        output_bias: fit an output bias c (starting at 0) in the analytic output solve; the
            particle model has none, so f then differs from the particles' network by c
            (analytic).
    """

    kind: str = "adaptive"  # a key of SOLVER_KINDS
    rtol: float = DEFAULT_RTOL
    dt: float | None = None
    optimizer: str | None = None
    optimizer_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    iterations: int = _ANALYTIC_DEFAULTS.iterations
    ridge: float = _ANALYTIC_DEFAULTS.ridge
    output_bias: bool = False

    def __post_init__(self):
        check_choice("solver.kind", self.kind, SOLVERS)
        row = SOLVER_KINDS[self.kind]
        for field in dataclasses.fields(self):
            name, value = field.name, getattr(self, field.name)
            if name == "kind":
                continue
            if name not in row.parameters:
                default = (field.default_factory() if field.default_factory
                           is not dataclasses.MISSING else field.default)
                if value != default:
                    users = [k for k, r in SOLVER_KINDS.items() if name in r.parameters]
                    where = (f"solver.kind={users[0]!r}" if len(users) == 1
                             else f"solver.kind in {tuple(users)}")
                    raise ValueError(f"solver.kind={self.kind!r} takes no {name}: solver.{name} "
                                     f"is only used with {where} (it takes "
                                     f"{', '.join(row.parameters)})")
            elif value is None and name in row.required:
                raise ValueError(f"solver.{name} is required for solver.kind={self.kind!r}")
            else:
                PARAMETER_CHECKS[name](self)
        if row.check is not None:
            row.check(self)

    def build(self):
        """The solver object of this kind (its class in ``SOLVER_KINDS``) with these parameters."""
        row = SOLVER_KINDS[self.kind]
        return row.solver(**{name: getattr(self, name) for name in row.parameters})

    def __hash__(self):
        return hash(value_key(self))


@named_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class SaveAt:
    """When to record (diffrax-style).

    Attributes:
        t: explicit save times (sorted, > 0); t = 0 and t_max are always recorded, times
            beyond t_max are not. Default: ``n`` log-spaced times from ``t_min`` to ``t_max``
            (``n = 1``: t_max alone).
        t_min: first log-spaced save time (default: 1e-3 of the initial particle time scale).
        n: number of log-spaced save times.
        snapshots: particle snapshots on a sparse clock: a count k of save times nearest k
            log-spaced times from the first save time to the final time (the last is the
            final time; with t = 0, k + 1 snapshots), or explicit times (added to the save
            times; with t = 0 and the final time).
    """

    t: tuple[float, ...] | None = None
    t_min: float | None = None
    n: int = 200
    snapshots: int | tuple[float, ...] = 6

    def __post_init__(self):
        normalise_int(self, "n", "save.n", minimum=1, maximum=MAX_SAVES)
        check_positive("save.t_min", self.t_min, allow_none=True)
        if self.t is not None:
            what = "strictly increasing finite times > 0"
            t = _floats("save.t", self.t, what)
            if (not t or len(t) > MAX_SAVES or not all(np.isfinite(t)) or min(t) <= 0
                    or list(t) != sorted(set(t))):
                raise ValueError(f"save.t must be {what} (at most {MAX_SAVES})")
            object.__setattr__(self, "t", t)
        if isinstance(self.snapshots, (int, np.integer)) and not isinstance(self.snapshots, bool):
            normalise_int(self, "snapshots", "save.snapshots", minimum=0, maximum=MAX_SAVES)
        else:
            what = f"a count from 0 to {MAX_SAVES} or finite times >= 0"
            snaps = _floats("save.snapshots", self.snapshots, what)
            if (isinstance(self.snapshots, (bool, str)) or len(snaps) > MAX_SAVES
                    or not all(np.isfinite(snaps)) or any(v < 0 for v in snaps)):
                raise ValueError(f"save.snapshots={self.snapshots!r} is not allowed; it must be "
                                 f"{what}")
            object.__setattr__(self, "snapshots", tuple(sorted(set(snaps))))

    def log_times(self, t_min: float, t_max: float) -> np.ndarray:
        """``n`` log-spaced save times from ``t_min`` to ``t_max`` (n = 1: t_max alone)."""
        return np.geomspace(t_min, t_max, self.n) if self.n > 1 else np.array([float(t_max)])

    def schedule(self, t_max: float, time_scale: float) -> tuple[np.ndarray, np.ndarray]:
        """The save times of a run to ``t_max`` and which of them carry a particle snapshot.

        Args:
            t_max: final time of the run.
            time_scale: the initial particle time scale (``meanfield.setup.
                particle_time_scale``), which sets the default first save time; NaN when
                ``t_min`` or ``t`` is given.
        Returns:
            (times (k,) starting with 0 and ending at t_max, snapshot mask (k,) bool: t = 0,
            the last time and the snapshot times).
        """
        if self.t is not None:
            times = np.array([v for v in self.t if v <= t_max], dtype=float)
            if not times.size or times[-1] < t_max:  # a run always ends at t_max
                times = np.append(times, float(t_max))
        else:
            t_min = self.t_min if self.t_min is not None else min(1e-3 * time_scale, t_max / 10)
            times = self.log_times(t_min, t_max)
        if isinstance(self.snapshots, tuple):
            times = np.union1d(times, [v for v in self.snapshots if 0 < v <= t_max])
        times = np.concatenate([[0.0], times[times > 0]])
        snap = np.zeros(times.shape, bool)
        snap[0] = snap[-1] = True
        if isinstance(self.snapshots, tuple):
            snap |= np.isin(times, self.snapshots)
        elif self.snapshots > 0:
            grid = np.geomspace(times[1], times[-1], self.snapshots) if len(times) > 1 else []
            for v in grid:
                snap[1 + np.argmin(np.abs(np.log(times[1:]) - np.log(v)))] = True
        return times, snap


@named_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class Observe:
    """What is measured at every save time (``meanfield.recording``).

    Attributes:
        n_angle_bins: bins of the directional density over (-pi, pi].
        n_cosine_bins: bins of the cosine densities over [-1, 1].
        plane: two directions in weight space (length D = d + bias) spanning the plane of the
            neuron angles; None: (w, b) for 1-D inputs with bias, else the top-2 principal
            directions of the data.
        references: named reference directions in weight space, ((name, vector), ...).
        peak_delta: half-width (radians) of the windows of the condensation mass.
        peaks: number of peaks of the condensation mass.
    """

    n_angle_bins: int = 120
    n_cosine_bins: int = 50
    plane: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    references: tuple[tuple[str, tuple[float, ...]], ...] = ()
    peak_delta: float = 0.1
    peaks: int = 4

    def __post_init__(self):
        normalise_int(self, "n_angle_bins", "observe.n_angle_bins", minimum=4, maximum=MAX_BINS)
        normalise_int(self, "n_cosine_bins", "observe.n_cosine_bins", minimum=2, maximum=MAX_BINS)
        check_positive("observe.peak_delta", self.peak_delta, allow_zero=True)
        normalise_int(self, "peaks", "observe.peaks", minimum=1, maximum=self.n_angle_bins)
        if self.plane is not None:
            what = "two finite vectors of equal length"
            try:
                plane = tuple(_floats("observe.plane", u, what) for u in self.plane)
            except TypeError:  # not iterable
                raise ValueError(f"observe.plane={self.plane!r} is not allowed; it must be "
                                 f"{what}") from None
            if len(plane) != 2 or len(plane[0]) != len(plane[1]) or not np.all(np.isfinite(plane)):
                raise ValueError(f"observe.plane must be {what}")
            object.__setattr__(self, "plane", plane)
        refs = []
        what = "((name, nonzero finite vector), ...)"
        try:
            items = [tuple(item) for item in self.references]
        except TypeError:
            raise ValueError(f"observe.references={self.references!r} is not allowed; it must "
                             f"be {what}") from None
        for item in items:
            if len(item) != 2 or not isinstance(item[0], str):
                raise ValueError(f"observe.references entry {item!r} is not allowed; it must be "
                                 "(name, nonzero finite vector)")
            name, vector = item
            vector = _floats(f"observe.references[{name!r}]", vector, "a nonzero finite vector")
            if not vector or not np.all(np.isfinite(vector)) or not np.any(vector):
                raise ValueError(f"observe.references entry {name!r} must be (name, nonzero "
                                 "finite vector)")
            refs.append((name, vector))
        if len({name for name, _ in refs}) != len(refs):
            raise ValueError("observe.references names must be unique")
        object.__setattr__(self, "references", tuple(refs))


@named_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class SimulationConfig:
    """Everything that determines a run (equal and hashed by value, arrays by content).

    Attributes:
        model: the particle system (width, bias, output layer, loss, parametrisation, init).
        data: training data and evaluation grid.
        solver: integrator and its tolerance / step.
        save: save schedule.
        observe: observables recorded at every save.
        t_max: final gradient-flow time.
        loss_tol: stop at the first time the training loss falls below it (None: never).
        seed: PRNG seed of the initial particles.
        precision: ``float32`` (default) or ``float64`` (tiny init scales need it).
        chunk_size: particles per chunk (memory is O(n * chunk)); None picks a default.
        max_steps: step budget; exceeding it stops the run with an error.
        name: a label (the preset name).
    """

    model: ModelSpec
    data: TrainingData
    solver: Solver = dataclasses.field(default_factory=Solver)
    save: SaveAt = dataclasses.field(default_factory=SaveAt)
    observe: Observe = dataclasses.field(default_factory=Observe)
    t_max: float = 100.0
    loss_tol: float | None = None
    seed: int = 0
    precision: Literal["float32", "float64"] = "float32"
    chunk_size: int | None = None
    max_steps: int = 10_000_000
    name: str = "custom"

    def __post_init__(self):
        if not isinstance(self.model, ModelSpec):
            raise ValueError("model must be a meanfield.ModelSpec, got "
                             f"{type(self.model).__name__}")
        if not isinstance(self.data, TrainingData):
            raise ValueError("data must be a meanfield.TrainingData, got "
                             f"{type(self.data).__name__}")
        if not isinstance(self.solver, Solver):
            raise ValueError("solver must be a meanfield.Solver, got "
                             f"{type(self.solver).__name__}")
        if not isinstance(self.save, SaveAt):
            raise ValueError("save must be a meanfield.SaveAt, got "
                             f"{type(self.save).__name__}")
        check_positive("t_max", self.t_max)
        check_positive("loss_tol", self.loss_tol, allow_none=True)
        normalise_int(self, "seed", "seed", minimum=0, maximum=SEED_MAX)
        check_precision_name(self.precision)
        if self.chunk_size is not None:
            normalise_int(self, "chunk_size", "chunk_size", minimum=1)
        normalise_int(self, "max_steps", "max_steps", minimum=1)  # an int32 counter
        if not isinstance(self.name, str):
            raise ValueError(f"name={self.name!r} is not allowed; it must be a string")
        if self.model.loss in ("exponential", "logistic") and not np.all(np.abs(self.data.y) == 1):
            raise ValueError(f"data.y must be +-1 for model.loss={self.model.loss!r}")
        if not isinstance(self.observe, Observe):
            raise ValueError("observe must be a meanfield.Observe, got "
                             f"{type(self.observe).__name__}")
        fan_in = self.model.fan_in(self.data.input_dim)
        vectors = [v for _, v in self.observe.references] + list(self.observe.plane or ())
        if any(len(v) != fan_in for v in vectors):
            raise ValueError(f"observe.plane / observe.references vectors must have length "
                             f"{fan_in} (input dim + bias)")
        if self.save.t_min is not None and self.save.t_min >= self.t_max:
            raise ValueError(f"save.t_min={self.save.t_min} must be below t_max={self.t_max}")

    def check_angle_plane(self) -> None:
        """Refuse, before any compute, a config whose runs would have no plane of neuron
        angles: every particle run records the angles in one (``meanfield.recording.
        angle_plane``); a limit that has no particles (the kernel limit) needs none."""
        from meanfield.recording import angle_plane

        fan_in = self.model.fan_in(self.data.input_dim)
        if fan_in < 2:
            raise ValueError(
                f"model.bias={self.model.bias!r} with {self.data.input_dim}-dimensional inputs "
                f"gives each neuron a weight of length {fan_in}: no plane of neuron angles exists "
                "(every run records one); use model.bias=True or inputs of dimension 2 or more")
        try:
            angle_plane(self, self.data.unique_inputs(self.model.bias)[0])
        except ValueError as exc:
            if self.observe.plane is not None:
                raise ValueError(f"observe.plane={self.observe.plane!r} is not allowed: "
                                 f"{str(exc).partition(': ')[2]}; it must be two independent "
                                 f"vectors of length {fan_in}") from None
            with_bias = " with the bias" if self.model.bias else ""
            raise ValueError(
                f"observe.plane=None takes the plane of neuron angles from the training "
                f"inputs{with_bias}, but they span fewer than 2 dimensions; pass "
                f"observe.plane=(u, v), two independent vectors of length {fan_in}") from None

    def replace(self, **changes) -> "SimulationConfig":
        """Copy with changes; dotted keys reach nested fields: ``replace(**{"solver.rtol": 1e-4})``."""
        return replace_path(self, changes)

    def to_dict(self) -> dict:
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = value.to_dict() if isinstance(value, TrainingData) else (
                dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "SimulationConfig":
        d = dict(d)
        model = dict(d.pop("model"))
        model["parametrisation"] = Parametrisation(**model["parametrisation"])
        model["init"] = InitialLaw(**model["init"])
        save = dict(d.pop("save"))
        if save.get("t") is not None:
            save["t"] = tuple(save["t"])
        if isinstance(save.get("snapshots"), list):
            save["snapshots"] = tuple(save["snapshots"])
        observe = dict(d.pop("observe", {}))
        return cls(model=ModelSpec(**model), data=TrainingData(**d.pop("data")),
                   solver=Solver(**d.pop("solver")), save=SaveAt(**save),
                   observe=Observe(**observe), **d)

    @classmethod
    def from_json(cls, text: str) -> "SimulationConfig":
        return cls.from_dict(json.loads(text))


def replace_path(obj, changes: dict, prefix: str = ""):
    """``dataclasses.replace`` with dotted paths into nested dataclasses; unknown keys raise."""
    direct, nested = {}, {}
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        names = {f.name for f in dataclasses.fields(obj)}
        if head not in names:
            raise ValueError(f"unknown config key {prefix + key!r} for {type(obj).__name__}"
                             f"{closest(head, names)}; allowed: {sorted(names)}")
        if rest:
            if not dataclasses.is_dataclass(getattr(obj, head)):
                raise ValueError(f"config key {prefix + key!r}: {prefix + head} has no fields")
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    for head, sub in nested.items():
        direct[head] = replace_path(direct.get(head, getattr(obj, head)), sub, f"{prefix}{head}.")
    return dataclasses.replace(obj, **direct)
