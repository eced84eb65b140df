"""The one schema of every meanfield Dataset, as data, and the one builder that applies it.

Every Dataset the library writes carries ``attrs["kind"]``:

* ``"run"``: a finite-width gradient flow (``meanfield.simulate``);
* ``"analytic"``: an analytic fit (``solver.kind="analytic"``; ``t`` counts iterations);
* ``"limit:<name>"``: an infinite-width limit (``meanfield.limits``), ``<name>`` one of
  ``LIMIT_KINDS``;
* ``"sweep-summary"``: a grid of runs summarised (``meanfield.validation.sweep``).

``VARIABLES`` and ``COORDS`` give each name its dims, units and long name; ``KIND_VARIABLES``
says which variables each kind may hold (``KIND_REQUIRED``: which it always holds).
``build(kind, config, data)`` is the only place a Dataset of these kinds is assembled: it takes
arrays by name and attaches dims and attributes from the tables, so a producer cannot invent a
name or a unit. ``docs/schema.md`` is the written account of these tables.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import os
import platform
from importlib import metadata
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: the command line reads LIMIT_KINDS without xarray
    import xarray as xr

SCHEMA_VERSION = 1
TIME_UNITS = "gradient-flow time (mean-field normalisation, docs/theory/model.md)"
ITERATION_UNITS = "iteration of the analytic solver (arXiv 2304.02972), not gradient-flow time"
LIMIT_KINDS = ("wang_ma", "mean_field", "kernel", "mean_field_reference")
KINDS = ("run", "analytic", *(f"limit:{k}" for k in LIMIT_KINDS), "sweep-summary")


@dataclasses.dataclass(frozen=True)
class Var:
    """One variable of the schema: its dims, units (CF ``units``) and default ``long_name``."""

    dims: tuple[str, ...]
    units: str
    long_name: str


V = Var
VARIABLES: dict[str, Var] = {
    # time series of the network output and the loss
    "loss": V(("t",), "1", "training loss"),
    "accuracy": V(("t",), "1", "training accuracy (weighted)"),
    "f_train": V(("t", "sample"), "1", "network output at training inputs"),
    "f_eval": V(("t", "eval_point"), "1", "network output on the evaluation grid"),
    # integrator bookkeeping
    "n_steps": V(("t",), "1", "accepted integrator steps"),
    "n_rejected": V(("t",), "1", "rejected integrator steps"),
    "step_size": V(("t",), TIME_UNITS, "proposed step size"),
    # the data
    "x_train": V(("sample", "input_dim"), "1", "training inputs"),
    "y_train": V(("sample",), "1", "training labels"),
    "x_eval": V(("eval_point", "input_dim"), "1", "evaluation inputs"),
    "x_unique": V(("input", "component"), "1", "distinct augmented training inputs"),
    "angle_basis": V(("plane_axis", "component"), "1", "orthonormal basis of the plane of the "
                     "neuron angles (angle = atan2(w.b1, w.b0))"),
    # observables of the particles (meanfield.recording)
    "density": V(("t", "sign", "angle"), "1",
                 "amplitude-weighted directional density (per sign, sums to 1)"),
    "density_count": V(("t", "sign", "angle"), "1",
                       "directional density of neuron counts (per sign, sums to 1)"),
    "mass": V(("t", "sign"), "1", "total amplitude (1/m) sum |a||w| (|w| for frozen marks) per sign"),
    "effective_directions": V(("t", "sign"), "1", "exp(entropy) of the amplitude-weighted density"),
    "peak_mass": V(("t", "sign"), "1", "amplitude fraction within peak_delta of the top peaks"),
    "alive_fraction": V(("t", "sign"), "1", "fraction of all neurons, of this sign, active on some input"),
    "active_count": V(("t", "sign", "input"), "1", "neurons of this sign active on each distinct input"),
    "pattern_count": V(("t", "sign", "pattern"), "1", "neurons per activation pattern (bit j: input j)"),
    "cosine_density": V(("t", "sign", "reference", "cosine"), "1",
                        "amplitude-weighted density of cos(w, reference) (per sign, sums to 1)"),
    "cosine_stats": V(("t", "sign", "reference", "stat"), "1",
                      "min/mean/max cosine of alive neurons with each reference"),
    "rd_w": V(("t",), "1", "relative displacement |w(t) - w(0)| / |w(0)| (arXiv 2007.07497)"),
    "rd_a": V(("t",), "1", "relative displacement |a(t) - a(0)| / |a(0)|"),
    "rd": V(("t",), "1", "relative displacement of theta = (a, w)"),
    "dead_displacement_max": V(("t",), "1", "max |w(t) - w(0)| over never-active neurons (0 for the flow)"),
    "phase": V(("t",), "1", "phase label (meanfield.phases.label_phases)"),
    # particle snapshots
    "snapshot_a": V(("t_snapshot", "neuron"), "1", "output weight a_k (frozen mark if output='frozen')"),
    "snapshot_w": V(("t_snapshot", "neuron", "component"), "1", "input weights w_k (bias last)"),
    # limit-specific
    "f_plus": V(("t",), "1", "f at x_+ (reduced model, arXiv 2305.12467)"),
    "f_minus": V(("t",), "1", "f at x_- (reduced model, arXiv 2305.12467)"),
    "f_minus_positive_part": V(("t",), "1", "contribution of the positive neurons to f at x_-"),
    "f_train_var": V(("t", "sample"), "1", "variance of f over the Gaussian-process initial function"),
    "f_eval_var": V(("t", "eval_point"), "1", "variance of f over the Gaussian-process initial function"),
    "loss_expected": V(("t",), "1", "expected training loss over the Gaussian-process initial function"),
    "f_eval_level": V(("level", "t", "eval_point"), "1",
                      "network output on the evaluation grid at each quadrature level"),
    "refinement_error": V(("coarse_level", "t"), "1", "sup over the evaluation grid of |f_level - f_finest|"),
    "refinement_sup_error": V(("coarse_level",), "1", "sup over the evaluation grid and saved times of "
                              "|f_level - f_finest|"),
}
del V

COORDS: dict[str, Var] = {
    "t": Var(("t",), TIME_UNITS, "time"),
    "t_snapshot": Var(("t_snapshot",), TIME_UNITS, "snapshot time"),
    "component": Var(("component",), "", "weight component"),
    "sign": Var(("sign",), "", "sign of the output weight"),
    "angle": Var(("angle",), "rad", "neuron angle in the observation plane"),
    "cosine": Var(("cosine",), "1", "cosine with the reference"),
    "reference": Var(("reference",), "", "reference direction"),
    "stat": Var(("stat",), "", ""),
    "pattern": Var(("pattern",), "", ""),
    "sample": Var(("sample",), "", ""),
    "level": Var(("level",), "", "width of the quadrature level"),
    "coarse_level": Var(("coarse_level",), "", "width of the coarser quadrature level"),
}

# the per-phase condensation summary (meanfield.condensation.phase_variables)
PHASE_SUMMARY = {
    "phase_boundary": Var(("phase_id", "phase_end"), TIME_UNITS, "phase start / end time"),
    "phase_time": Var(("phase_id", "phase_end"), TIME_UNITS, "save time of the summarised record"),
    "phase_loss": Var(("phase_id", "phase_end"), "1", "training loss at the phase start / end"),
    "phase_accuracy": Var(("phase_id", "phase_end"), "1", "training accuracy at the phase start / end"),
    "phase_effective_directions": Var(("phase_id", "phase_end", "sign"), "1",
                                    "exp(entropy) of the amplitude-weighted density"),
    "phase_peak_mass": Var(("phase_id", "phase_end", "sign"), "1",
                         "amplitude fraction within peak_delta of the top peaks"),
    "phase_alive_fraction": Var(("phase_id", "phase_end", "sign"), "1",
                              "fraction of all neurons, of this sign, active on some input"),
    "phase_peak_angle": Var(("phase_id", "phase_end", "sign", "phase_peak"), "rad",
                          "angle of the peak bin"),
    "phase_peak_share": Var(("phase_id", "phase_end", "sign", "phase_peak"), "1",
                          "density mass in the peak window"),
    "phase_nearest_reference": Var(("phase_id", "phase_end", "sign", "phase_peak"), "",
                                 "nearest named reference direction"),
    "phase_reference_distance": Var(("phase_id", "phase_end", "sign", "phase_peak"), "rad",
                                  "angle from the peak to that reference"),
    "phase_names": Var(("phase_id",), "", "phase name"),
}
VARIABLES.update(PHASE_SUMMARY)

_RUN = tuple(PHASE_SUMMARY) + ("loss", "accuracy", "f_train", "f_eval", "n_steps", "n_rejected", "step_size", "x_train",
        "y_train", "x_eval", "x_unique", "angle_basis", "density", "density_count", "mass",
        "effective_directions", "peak_mass", "alive_fraction", "active_count", "pattern_count",
        "cosine_density", "cosine_stats", "rd_w", "rd_a", "rd", "dead_displacement_max",
        "phase", "snapshot_a", "snapshot_w")
# Variables with the prefix ``analytic_`` are the analytic solver's own records (listed in
# ``meanfield.analytic_run.SOLVER_RECORDS``); they are allowed in the ``analytic`` kind only.
ANALYTIC_PREFIX = "analytic_"
KIND_VARIABLES: dict[str, tuple[str, ...]] = {
    "run": _RUN,
    "analytic": _RUN,
    "limit:wang_ma": ("loss", "accuracy", "f_train", "x_train", "y_train", "f_plus", "f_minus",
                      "f_minus_positive_part"),
    "limit:mean_field": ("loss", "f_train", "f_eval", "density", "mass", "n_steps", "step_size",
                         "x_train", "y_train", "x_eval"),
    "limit:kernel": ("loss", "accuracy", "f_train", "f_eval", "x_train", "y_train", "x_eval",
                     "f_train_var", "f_eval_var", "loss_expected"),
    "limit:mean_field_reference": _RUN + ("f_eval_level", "refinement_error",
                                          "refinement_sup_error"),
}
KIND_REQUIRED: dict[str, tuple[str, ...]] = {
    "run": ("loss", "f_train", "f_eval", "x_train", "y_train", "x_eval"),
    "analytic": ("loss", "f_train", "f_eval", "x_train", "y_train", "x_eval"),
    "limit:wang_ma": ("loss", "f_train", "f_plus", "f_minus"),
    "limit:mean_field": ("loss", "f_train", "f_eval", "density", "mass"),
    "limit:kernel": ("loss", "f_train", "f_eval"),
    "limit:mean_field_reference": ("loss", "f_train", "f_eval", "refinement_error"),
}
# The sweep summary (meanfield.validation.sweep) keeps run variables under these names, each
# with the units of the run variable it summarises (CURVE: one of the run's (t,) variables).
SWEEP_SUMMARY = {
    "NAME_end": "the run variable NAME at its last record",
    "t_end": "final time", "n_steps": "accepted steps", "stop_reason": "why the run stopped",
    "error": "failure message", "wall_time": "seconds for the point", "done": "point finished",
    "CURVE": "the run variable CURVE on the common log-time grid t",
    "density": "the run's density at the save nearest in log t (dim t_density)",
    "density_end": "the run's density at its last record",
    "particles_a": "snapshot_a at the first and last snapshot (dim stage)",
    "particles_w": "snapshot_w at the first and last snapshot (dim stage)",
}
# units of the sweep-summary names that are not NAME_end or CURVE, and the coordinates'
# long names
_SWEEP_UNITS = {"t_end": TIME_UNITS, "n_steps": "1", "wall_time": "s", "density": "1",
                "density_end": "1", "particles_a": "1", "particles_w": "1", "t": TIME_UNITS,
                "t_density": TIME_UNITS, "stage": "", "neuron": ""}
_SWEEP_COORDS = {"t": "common log-time grid of the curves",
                 "t_density": "times of the density curve", "stage": "snapshot stage",
                 "neuron": "neuron index"}


def sweep_summary_attrs(name: str) -> dict[str, str]:
    """``units`` and ``long_name`` of the sweep-summary variable or coordinate ``name``
    (``SWEEP_SUMMARY``): a summarised run variable keeps its units; an empty one is left out
    (as ``variable`` does), and a sweep axis has none."""
    return {key: value for key, value in _sweep_summary_attrs(name).items() if value}


def _sweep_summary_attrs(name: str) -> dict[str, str]:
    if name.endswith("_end") and name[:-4] in VARIABLES:
        run = VARIABLES[name[:-4]]
        return {"units": run.units, "long_name": f"{run.long_name}, at the run's last record"}
    if name in _SWEEP_COORDS:
        return {"units": _SWEEP_UNITS[name], "long_name": _SWEEP_COORDS[name]}
    if name in SWEEP_SUMMARY:
        return {"units": _SWEEP_UNITS.get(name, ""), "long_name": SWEEP_SUMMARY[name]}
    if name in VARIABLES and VARIABLES[name].dims == ("t",):  # a curve
        run = VARIABLES[name]
        return {"units": run.units, "long_name": f"{run.long_name}, on the common log-time grid"}
    if name in COORDS:
        return {"units": COORDS[name].units, "long_name": COORDS[name].long_name}
    return {}


def versions() -> dict[str, str]:
    """Library, jax and backend versions recorded in every dataset."""
    return dict(_versions())


# What a run's numbers depend on besides its config: a store is resumed only with the same.
NUMERIC_VERSIONS = ("meanfield_version", "jax_version", "jaxlib_version", "backend")


def numeric_versions() -> dict[str, str]:
    """This process's values of ``NUMERIC_VERSIONS`` (what another process's must equal for
    its numbers to join this one's)."""
    current = _versions()
    return {key: current[key] for key in NUMERIC_VERSIONS}


def changed_versions(stored: dict) -> dict[str, tuple[str, str]]:
    """``{key: (stored value, this process's)}`` for each of ``NUMERIC_VERSIONS`` in which the
    attributes of a store differ from this process (keys the store does not record are
    skipped)."""
    current = _versions()
    return {key: (str(stored[key]), current[key]) for key in NUMERIC_VERSIONS
            if key in stored and str(stored[key]) != current[key]}


@functools.cache  # fixed for the life of a process; a run builds a Dataset at every commit
def _versions() -> dict[str, str]:
    import jax

    out = {"python_version": platform.python_version()}
    # the library's distribution is meanfield-relu; the key keeps the import name
    for package, distribution in (("meanfield", "meanfield-relu"), ("jax", "jax"),
                                  ("jaxlib", "jaxlib"), ("optax", "optax"), ("numpy", "numpy"),
                                  ("xarray", "xarray"), ("zarr", "zarr")):
        try:
            out[f"{package}_version"] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            out[f"{package}_version"] = "unknown"
    out["backend"] = jax.default_backend()
    out["devices"] = ", ".join(str(d) for d in jax.devices())
    return out


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not allowed; choose one of {KINDS}")


def variable(name: str, values, *, long_name: str | None = None, units: str | None = None,
             dims: tuple[str, ...] | None = None) -> xr.Variable:
    """``values`` as the schema's variable ``name`` (its dims, units and long name).

    Args:
        name: a key of ``VARIABLES`` or ``COORDS``.
        values: array whose shape matches the dims.
        long_name, units: overrides of the schema's defaults (e.g. the loss names its kind).
        dims: only for the sweep summary, whose axes come first.
    """
    spec = VARIABLES.get(name) or COORDS.get(name)
    if spec is None:
        raise KeyError(f"{name!r} is not a variable of the meanfield schema (meanfield.schema)")
    import xarray as xr

    attrs = {}
    if (spec.units if units is None else units):
        attrs["units"] = spec.units if units is None else units
    if (spec.long_name if long_name is None else long_name):
        attrs["long_name"] = spec.long_name if long_name is None else long_name
    return xr.Variable(spec.dims if dims is None else dims, values, attrs)


def _checked(name: str, value) -> xr.Variable:
    """A Variable taken as it is (attributes included) once its dims are the schema's."""
    import xarray as xr

    value = value.variable if isinstance(value, xr.DataArray) else value
    if value.dims != VARIABLES[name].dims:
        raise ValueError(f"variable {name!r} has dims {value.dims}; the schema says "
                         f"{VARIABLES[name].dims}")
    return value


def build(kind: str, config, data: dict, *, coords: dict | None = None,
          long_names: dict | None = None, units: dict | None = None,
          attrs: dict | None = None, created: bool = False) -> xr.Dataset:
    """The Dataset of ``kind`` from arrays named by the schema (the only Dataset builder).

    Args:
        kind: one of ``KINDS``.
        config: the SimulationConfig the data come from (recorded as ``attrs["config"]``), or
            None (a reduced model called without a config).
        data: {name: array} with the schema's names (``VARIABLES``); names the kind may not
            hold are an error. An ``xr.Variable`` is taken with its attributes (its dims must
            be the schema's).
        coords: {name: array or xr.Variable} coordinates; arrays get the schema's
            attributes (``COORDS``), Variables are taken as they are.
        long_names, units: per-variable overrides of the schema's defaults.
        attrs: the producer's attributes (kind-specific, e.g. ``limit``, ``n_cells``); they
            come after the common ones (``kind``, ``schema_version``, ``config``, ``preset``,
            ``Conventions`` and the versions).
        created: add the UTC creation time (``created``).
    Returns:
        The Dataset.
    Raises:
        ValueError: an unknown kind, a variable the kind may not hold, or a required one absent.
    """
    import xarray as xr

    _check_kind(kind)
    allowed = KIND_VARIABLES.get(kind, ())
    extra = [n for n in data if n not in allowed
             and not (kind == "analytic" and n.startswith(ANALYTIC_PREFIX))]
    if extra:
        raise ValueError(f"variables {extra} are not in the schema of kind {kind!r}; allowed: "
                         f"{list(allowed)} (meanfield.schema.KIND_VARIABLES)")
    long_names, units = long_names or {}, units or {}
    variables = {name: _checked(name, value) if isinstance(value, (xr.Variable, xr.DataArray))
                 else variable(name, value, long_name=long_names.get(name), units=units.get(name))
                 for name, value in data.items()}
    coordinates = {name: value if isinstance(value, xr.Variable) else
                   variable(name, value, long_name=long_names.get(name), units=units.get(name))
                   for name, value in (coords or {}).items()}
    common = {"kind": kind, "schema_version": SCHEMA_VERSION}
    if config is not None:
        common.update({"config": config.to_json(), "preset": config.name})
    if created:
        common["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    common.update({"Conventions": "CF-1.10", **versions()})
    return xr.Dataset(variables, coords=coordinates, attrs={**common, **(attrs or {})})


def kind_of(ds: xr.Dataset) -> str:
    """The kind of ``ds`` (``attrs["kind"]``; inferred for stores written before it existed)."""
    kind = ds.attrs.get("kind")
    if kind:
        return kind
    if "sweep" in ds.attrs:
        return "sweep-summary"
    if "limit" in ds.attrs:
        name = ds.attrs["limit"]
        return "limit:wang_ma" if name.startswith("wang_ma") else f"limit:{name}"
    if ds.attrs.get("time_axis") == "iteration":
        return "analytic"
    return "run"


def missing(ds: xr.Dataset, needed, purpose: str) -> str | None:
    """None if ``ds`` holds every variable of ``needed``, else a sentence naming what it lacks."""
    absent = [n for n in needed if n not in ds.variables]
    if not absent:
        return None
    return (f"{purpose} needs {', '.join(absent)}, which this {kind_of(ds)} dataset does not "
            f"hold (it has: {', '.join(sorted(map(str, ds.data_vars))) or 'nothing'})")


def check_dataset(ds, name: str) -> None:
    """Refuse anything but an ``xarray.Dataset`` for the argument ``name`` (a store's path
    included: ``meanfield.load_run`` reads it)."""
    import xarray as xr

    if not isinstance(ds, xr.Dataset):
        hint = (f"; meanfield.load_run({ds!r}) reads the store at that path"
                if isinstance(ds, (str, os.PathLike)) else "")
        raise ValueError(f"{name} of type {type(ds).__name__} is not allowed; it must be an "
                         f"xarray.Dataset (e.g. meanfield.simulate's result){hint}")


def require(ds: xr.Dataset, needed, purpose: str) -> None:
    """Refuse, with a sentence naming what is absent, a Dataset ``purpose`` cannot use.

    Raises:
        ValueError: ``ds`` is not a Dataset, is a sweep summary (many runs), or lacks a variable
            of ``needed`` (a snapshot variable with no snapshot counts as absent).
    """
    check_dataset(ds, f"the dataset of {purpose}")
    if kind_of(ds) == "sweep-summary":
        raise ValueError(f"{purpose} draws one dataset; this is a sweep summary (kind "
                         "'sweep-summary'): simulate the config of one sweep point and use that")
    why = missing(ds, needed, purpose)
    if why is None and any(n.startswith("snapshot_") for n in needed) \
            and ds.sizes.get("t_snapshot", 0) == 0:
        why = f"{purpose} needs particle snapshots; this {kind_of(ds)} dataset has none"
    if why:
        raise ValueError(why)
