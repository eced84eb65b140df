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

TIME_UNITS = "gradient-flow time (mean-field normalisation, DESIGN A1)"


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
    }
    if spec.loss in ("exponential", "logistic"):
        variables["accuracy"] = series("accuracy", ("t",), "1", "training accuracy (weighted)")
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
    """Write a run Dataset to a zarr directory (refuses to overwrite unless told)."""
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    ds.to_zarr(path, mode="w", zarr_format=2, consolidated=True)


def open_run(path: str | os.PathLike) -> xr.Dataset:
    """Open a run store lazily (also a partially written one: only committed chunks)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no run store at {path}")
    from meanfield.store import read_progress

    progress = read_progress(path)
    if progress is None:
        return xr.open_zarr(path)
    consolidated = os.path.exists(os.path.join(path, ".zmetadata"))
    ds = xr.open_zarr(path, consolidated=consolidated)
    return ds.isel(t=slice(0, progress["records"]),
                   t_snapshot=slice(0, progress["snapshots"]))


def run_config(ds: xr.Dataset):
    """The SimulationConfig recorded in a run Dataset."""
    from meanfield.config import SimulationConfig

    return SimulationConfig.from_dict(json.loads(ds.attrs["config"]))
