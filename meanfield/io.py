"""The run Dataset schema and its zarr store.

Schema (finite runs; infinite-width limits use the same names):

=================  =============================  ==========================================
variable           dims                           meaning
=================  =============================  ==========================================
loss               t                              training loss R = sum_i weight_i l(f_i, y_i)
accuracy           t                              weighted fraction with y_i f(x_i) > 0
f_train            t, sample                      f at the training inputs
f_eval             t, eval_point                  f on the evaluation grid
n_steps            t                              accepted integrator steps so far
n_rejected         t                              rejected (adaptive) steps so far
step_size          t                              step proposed for the next step
x_train, y_train   sample[, input_dim]            the training data
x_eval             eval_point, input_dim          the evaluation grid
snapshot_a         t_snapshot, neuron             output weights (marks) at snapshot times
snapshot_w         t_snapshot, neuron, component  input weights (bias last) at snapshot times
=================  =============================  ==========================================

Attributes: ``config`` (JSON of the full SimulationConfig), versions of meanfield, jax and
jaxlib, the backend and devices, precision, seed, width, stop_reason, wall time.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from importlib import metadata

import numpy as np
import xarray as xr

TIME_UNITS = "gradient-flow time (mean-field normalisation, docs/theory/model.md)"


def versions() -> dict[str, str]:
    """Library, jax and backend versions recorded in every dataset."""
    import jax

    out = {"python_version": platform.python_version()}
    for package in ("meanfield", "jax", "jaxlib", "optax", "numpy", "xarray", "zarr"):
        try:
            out[f"{package}_version"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[f"{package}_version"] = "unknown"
    out["backend"] = jax.default_backend()
    out["devices"] = ", ".join(str(d) for d in jax.devices())
    return out


OBSERVABLES = {  # name: (dims after t, units, long_name); see meanfield.recording
    "density": (("sign", "angle"), "1", "amplitude-weighted directional density (per sign, sums to 1)"),
    "density_count": (("sign", "angle"), "1", "directional density of neuron counts (per sign, sums to 1)"),
    "mass": (("sign",), "1", "total amplitude (1/m) sum |a||w| (|w| for frozen marks) per sign"),
    "effective_directions": (("sign",), "1", "exp(entropy) of the amplitude-weighted density"),
    "peak_mass": (("sign",), "1", "amplitude fraction within peak_delta of the top peaks"),
    "alive_fraction": (("sign",), "1", "fraction of all neurons, of this sign, active on some input"),
    "active_count": (("sign", "input"), "1", "neurons of this sign active on each distinct input"),
    "pattern_count": (("sign", "pattern"), "1", "neurons per activation pattern (bit j: input j)"),
    "cosine_density": (("sign", "reference", "cosine"), "1",
                       "amplitude-weighted density of cos(w, reference) (per sign, sums to 1)"),
    "cosine_stats": (("sign", "reference", "stat"), "1",
                     "min/mean/max cosine of alive neurons with each reference"),
    "rd_w": ((), "1", "relative displacement |w(t) - w(0)| / |w(0)| (arXiv 2007.07497)"),
    "rd_a": ((), "1", "relative displacement |a(t) - a(0)| / |a(0)|"),
    "rd": ((), "1", "relative displacement of theta = (a, w)"),
    "dead_displacement_max": ((), "1", "max |w(t) - w(0)| over never-active neurons (0 for the flow)"),
}


def _angle_basis(config) -> np.ndarray:
    from meanfield.recording import angle_plane

    return angle_plane(config, config.data.unique_inputs(config.model.bias)[0])


def observable_coords(config) -> dict:
    """Coordinates of the observables' dimensions (sign, angle, cosine, reference, ...)."""
    from meanfield.recording import SIGNS, STATS

    observe = config.observe
    n_a, n_c = observe.n_angle_bins, observe.n_cosine_bins
    n_unique = config.data.unique_inputs(config.model.bias)[0].shape[0]
    coords = {
        "sign": xr.Variable(("sign",), list(SIGNS), {"long_name": "sign of the output weight"}),
        "angle": xr.Variable(("angle",), -np.pi + (np.arange(n_a) + 0.5) * 2 * np.pi / n_a,
                             {"units": "rad", "long_name": "neuron angle in the observation plane"}),
        "cosine": xr.Variable(("cosine",), -1 + (np.arange(n_c) + 0.5) * 2 / n_c,
                              {"units": "1", "long_name": "cosine with the reference"}),
        "reference": xr.Variable(("reference",), np.array([n for n, _ in observe.references], str),
                                 {"long_name": "reference direction"}),
        "stat": xr.Variable(("stat",), list(STATS)),
    }
    if n_unique <= 10:
        coords["pattern"] = xr.Variable(("pattern",), np.arange(2 ** n_unique))
    return coords


def build_dataset(config, columns: dict, snapshots: list, *, wall_time: float,
                  stop_reason: str) -> xr.Dataset:
    """Assemble the run Dataset from host records (see module docstring for the schema)."""
    data, spec = config.data, config.model
    n_t = len(columns.get("t", []))
    t = np.asarray(columns.get("t", np.zeros(0)), dtype=float)
    components = [f"w{i + 1}" for i in range(data.input_dim)] + (["b"] if spec.bias else [])

    def series(name, dims, units, long_name, empty_shape=()):
        value = np.asarray(columns.get(name, np.zeros((n_t,) + empty_shape)))
        return xr.Variable(dims, value.reshape((n_t,) + value.shape[1:]),
                           {"units": units, "long_name": long_name})

    variables = {
        "loss": series("loss", ("t",), "1", f"training loss ({spec.loss})"),
        "f_train": series("f_train", ("t", "sample"), "1", "network output at training inputs",
                          (data.n,)),
        "f_eval": series("f_eval", ("t", "eval_point"), "1", "network output on the evaluation grid",
                         (data.x_eval.shape[0],)),
        "n_steps": series("n_steps", ("t",), "1", "accepted integrator steps"),
        "n_rejected": series("n_rejected", ("t",), "1", "rejected integrator steps"),
        "step_size": series("step_size", ("t",), TIME_UNITS, "proposed step size"),
        "x_train": xr.Variable(("sample", "input_dim"), data.x, {"units": "1", "long_name": "training inputs"}),
        "y_train": xr.Variable(("sample",), data.y, {"units": "1", "long_name": "training labels"}),
        "x_eval": xr.Variable(("eval_point", "input_dim"), data.x_eval,
                              {"units": "1", "long_name": "evaluation inputs"}),
        "x_unique": xr.Variable(("input", "component"), data.unique_inputs(spec.bias)[0],
                                {"units": "1", "long_name": "distinct augmented training inputs"}),
        "angle_basis": xr.Variable(("plane_axis", "component"), _angle_basis(config),
                                   {"units": "1", "long_name": "orthonormal basis of the plane "
                                    "of the neuron angles (angle = atan2(w.b1, w.b0))"}),
    }
    if spec.loss in ("exponential", "logistic"):
        variables["accuracy"] = series("accuracy", ("t",), "1", "training accuracy (weighted)")
    for name, (dims, units, long_name) in OBSERVABLES.items():
        if name in columns:
            variables[name] = series(name, ("t",) + dims, units, long_name)
    if snapshots:
        t_snap = np.array([s[0] for s in snapshots])
        variables["snapshot_a"] = xr.Variable(
            ("t_snapshot", "neuron"), np.stack([s[1] for s in snapshots]),
            {"units": "1", "long_name": "output weight a_k (frozen mark if output='frozen')"})
        variables["snapshot_w"] = xr.Variable(
            ("t_snapshot", "neuron", "component"), np.stack([s[2] for s in snapshots]),
            {"units": "1", "long_name": "input weights w_k (bias last)"})
    else:
        t_snap = np.zeros(0)
    coords = {
        "t": xr.Variable(("t",), t, {"units": TIME_UNITS, "long_name": "time"}),
        "t_snapshot": xr.Variable(("t_snapshot",), t_snap, {"units": TIME_UNITS,
                                                            "long_name": "snapshot time"}),
        "component": xr.Variable(("component",), components, {"long_name": "weight component"}),
        **observable_coords(config),
    }
    attrs = {
        "title": f"meanfield run: {config.name}",
        "config": config.to_json(),
        "preset": config.name,
        "precision": config.precision,
        "seed": config.seed,
        "width": spec.width,
        "solver": config.solver.kind,
        "stop_reason": stop_reason,
        "wall_time_s": float(wall_time),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "Conventions": "CF-1.10",
        **versions(),
    }
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def save_run(ds: xr.Dataset, path: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Write a run Dataset to a zarr directory, checksummed and atomically (see
    ``meanfield.store.save_dataset``); ``overwrite`` replaces only a store this library wrote."""
    from meanfield.store import save_dataset

    save_dataset(ds, os.fspath(path), overwrite=overwrite)


def open_run(path: str | os.PathLike) -> xr.Dataset:
    """Open a run store lazily (also a partially written one: only committed chunks)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no run store at {path}")
    from meanfield.store import verify_store

    progress = verify_store(path)  # committed chunk files present, sizes as committed
    if progress is None:
        return xr.open_zarr(path)
    consolidated = os.path.exists(os.path.join(path, ".zmetadata"))
    ds = xr.open_zarr(path, consolidated=consolidated)
    return ds.isel(t=slice(0, progress["records"]),
                   t_snapshot=slice(0, progress["snapshots"]))


def export_netcdf(run: str | os.PathLike | xr.Dataset, path: str | os.PathLike) -> str:
    """Write a run (a store path or a Dataset) to a netCDF file; returns the path."""
    ds = open_run(run) if isinstance(run, (str, os.PathLike)) else run
    ds.load().to_netcdf(os.fspath(path))
    return os.fspath(path)


def run_config(ds: xr.Dataset):
    """The SimulationConfig recorded in a run Dataset."""
    from meanfield.config import SimulationConfig

    return SimulationConfig.from_dict(json.loads(ds.attrs["config"]))
