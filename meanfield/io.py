"""Run Datasets and their zarr stores: building (with ``meanfield.schema``), opening, exporting.

The variables, dims, units and attributes of every Dataset kind (runs, analytic fits, limits,
sweep summaries) are the tables of ``meanfield.schema``, described in docs/schema.md.
"""

from __future__ import annotations

import json
import os

import numpy as np
import xarray as xr

from meanfield.schema import TIME_UNITS, build, kind_of, versions  # noqa: F401 (re-exports)

OBSERVABLES = ("density", "density_count", "mass", "effective_directions", "peak_mass",
               "alive_fraction", "active_count", "pattern_count", "cosine_density",
               "cosine_stats", "rd_w", "rd_a", "rd", "dead_displacement_max")  # meanfield.recording


def _angle_basis(config) -> np.ndarray:
    from meanfield.recording import angle_plane

    return angle_plane(config, config.data.unique_inputs(config.model.bias)[0])


def observable_coords(config) -> dict:
    """Coordinates of the observables' dimensions (sign, angle, cosine, reference, ...)."""
    from meanfield.recording import SIGNS, STATS
    from meanfield.schema import variable

    observe = config.observe
    n_a, n_c = observe.n_angle_bins, observe.n_cosine_bins
    n_unique = config.data.unique_inputs(config.model.bias)[0].shape[0]
    coords = {
        "sign": variable("sign", list(SIGNS)),
        "angle": variable("angle", -np.pi + (np.arange(n_a) + 0.5) * 2 * np.pi / n_a),
        "cosine": variable("cosine", -1 + (np.arange(n_c) + 0.5) * 2 / n_c),
        "reference": variable("reference", np.array([n for n, _ in observe.references], str)),
        "stat": variable("stat", list(STATS)),
    }
    if n_unique <= 10:
        coords["pattern"] = variable("pattern", np.arange(2 ** n_unique))
    return coords


def data_variables(config) -> dict:
    """The training data, evaluation grid, distinct inputs and angle plane of ``config``."""
    data, bias = config.data, config.model.bias
    return {"x_train": data.x, "y_train": data.y, "x_eval": data.x_eval,
            "x_unique": data.unique_inputs(bias)[0], "angle_basis": _angle_basis(config)}


def build_dataset(config, columns: dict, snapshots: list, *, wall_time: float,
                  stop_reason: str) -> xr.Dataset:
    """The run (or analytic fit) Dataset from host records (``meanfield.schema``).

    Args:
        config: the SimulationConfig (``solver.kind="analytic"`` gives kind ``analytic``).
        columns: {name: (T, ...) array} records with the schema's names, ``t`` included
            (names outside the schema, e.g. an analytic fit's own records, are ignored).
        snapshots: [(t, a (m,), w (m, D))] particle snapshots.
        wall_time, stop_reason: recorded as attributes.
    """
    data, spec = config.data, config.model
    n_t = len(columns.get("t", []))
    t = np.asarray(columns.get("t", np.zeros(0)), dtype=float)
    components = [f"w{i + 1}" for i in range(data.input_dim)] + (["b"] if spec.bias else [])

    def series(name):
        shape = {"f_train": (data.n,), "f_eval": (data.x_eval.shape[0],)}.get(name, ())
        value = np.asarray(columns.get(name, np.zeros((n_t,) + shape)))
        return value.reshape((n_t,) + value.shape[1:])

    names = ["loss", "f_train", "f_eval", "n_steps", "n_rejected", "step_size"]
    if spec.loss in ("exponential", "logistic"):
        names.append("accuracy")
    names += [name for name in OBSERVABLES if name in columns]
    values = {name: series(name) for name in names}
    values.update(data_variables(config))
    if snapshots:
        t_snap = np.array([s[0] for s in snapshots])
        values["snapshot_a"] = np.stack([s[1] for s in snapshots])
        values["snapshot_w"] = np.stack([s[2] for s in snapshots])
    else:
        t_snap = np.zeros(0)
    coords = {"t": t, "t_snapshot": t_snap, "component": components,
              **observable_coords(config)}
    kind = "analytic" if config.solver.kind == "analytic" else "run"
    return build(kind, config, values, coords=coords,
                 long_names={"loss": f"training loss ({spec.loss})"}, created=True, attrs={
                     "title": f"meanfield run: {config.name}",
                     "precision": config.precision,
                     "seed": config.seed,
                     "width": spec.width,
                     "solver": config.solver.kind,
                     "stop_reason": stop_reason,
                     "wall_time_s": float(wall_time),
                 })


def save_run(ds: xr.Dataset, path: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Write a run Dataset to a zarr directory, checksummed and atomically (see
    ``meanfield.store.save_dataset``); ``overwrite`` replaces only a store this library wrote."""
    from meanfield.store import save_dataset

    save_dataset(ds, os.fspath(path), overwrite=overwrite)


def open_run(path: str | os.PathLike, *, dask: bool = True) -> xr.Dataset:
    """Open a store of any kind lazily (a run, an analytic fit or a limit; a partially written
    run shows only its committed chunks). A sweep store is refused (``open_sweep`` reads it).

    Args:
        path: the store.
        dask: dask arrays when dask is installed (xarray's default); False reads each variable
            into numpy when it is first used, with no task graph: the same values, faster for
            a run's summary and figures.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no run store at {path}")
    from meanfield.store import verify_store

    progress = verify_store(path)  # committed chunk files present, sizes as committed
    consolidated = os.path.exists(os.path.join(path, ".zmetadata"))
    ds = xr.open_zarr(path, consolidated=consolidated if progress is not None else None,
                      **({} if dask else {"chunks": None}))
    _refuse_sweep(ds, path)
    if progress is None:
        return ds
    return ds.isel(t=slice(0, progress["records"]),
                   t_snapshot=slice(0, progress["snapshots"]))


def load_run(path: str | os.PathLike) -> xr.Dataset:
    """A whole store of any kind in memory: ``open_run(path, dask=False).load()``, one read per
    variable instead of one dask task per chunk file (a streamed run has one chunk per record).

    Raises:
        meanfield.store.StoreCorrupt: a chunk file cannot be decoded (its bytes changed but not
            its size, which ``open_run`` checks; ``meanfield verify`` finds it by checksum).
    """
    ds = open_run(path, dask=False)
    try:
        return ds.load()
    except (RuntimeError, ValueError) as exc:  # the codec's error on damaged bytes
        from meanfield.store import StoreCorrupt

        raise StoreCorrupt(f"{os.fspath(path)}: a chunk file cannot be read ({exc}); "
                           f"`meanfield verify {os.fspath(path)}` names the damaged "
                           "ones") from None


def _refuse_sweep(ds: xr.Dataset, path: str) -> None:
    if kind_of(ds) == "sweep-summary":
        raise ValueError(f"{path} is a sweep store (kind 'sweep-summary'), not one run: open it "
                         "with meanfield.validation.sweep.open_sweep")


def check_new_file(path: str | os.PathLike, overwrite: bool) -> str:
    """``path`` as a string if a file may be written there: it does not exist, or it is a file
    and ``overwrite`` is True.

    Raises:
        FileExistsError: naming the path and how to go on.
        FileNotFoundError: the folder of ``path`` does not exist.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise FileExistsError(f"{path} is a directory; give a file name such as run.nc")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        what = ("is a file; choose another path" if os.path.lexists(folder)
                else "does not exist; create it or choose another path")
        raise FileNotFoundError(f"{path}: the folder {folder} {what}")
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; choose another file name or pass overwrite=True "
                              "(--overwrite) to replace it")
    return path


def export_netcdf(run: str | os.PathLike | xr.Dataset, path: str | os.PathLike, *,
                  overwrite: bool = False) -> str:
    """Write a Dataset (or the store at a path) to a netCDF file; returns the path.

    Attributes netCDF cannot hold (booleans, None) are written as strings. The file is written
    beside ``path`` under a temporary name and then renamed onto it, so a failed write (a full
    disk) leaves no partial file and whatever ``path`` held before.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False, or ``path`` is a
            directory (never replaced).
    """
    path = check_new_file(path, overwrite)
    ds = load_run(run) if isinstance(run, (str, os.PathLike)) else run.load()
    ds = ds.copy()
    ds.attrs = {k: (str(v) if isinstance(v, bool) or v is None else v) for k, v in ds.attrs.items()}
    partial = os.path.join(os.path.dirname(os.path.abspath(path)),
                           f".{os.path.basename(path)}.{os.getpid()}.partial")
    try:
        ds.to_netcdf(partial)
        os.replace(partial, path)
    finally:
        if os.path.lexists(partial):
            os.remove(partial)
    return path


def run_config(ds: xr.Dataset):
    """The SimulationConfig recorded in a run Dataset."""
    from meanfield.config import SimulationConfig

    if "config" not in ds.attrs:
        raise ValueError(f"this {kind_of(ds)} dataset records no config (attrs['config']); "
                         "it was built without one (e.g. a reduced model called directly)")
    return SimulationConfig.from_dict(json.loads(ds.attrs["config"]))
