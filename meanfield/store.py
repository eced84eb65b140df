"""Streaming, resumable zarr store of a run.

A run streams into its store chunk by chunk: records are appended along ``t``, snapshots along
``t_snapshot``, and the integrator state is checkpointed into one of two slots
(``_state_0``/``_state_1``, written alternately). Only then is ``_progress/.zattrs`` replaced
atomically (write + ``os.replace``); it names the valid record and snapshot counts, the
completed chunks and the current state slot. A run killed at any moment (SIGKILL included)
therefore loses at most the chunk in flight: on resume the arrays are truncated to the counts
in ``_progress/.zattrs`` and the run continues from the checkpoint, giving the same numbers as an
uninterrupted run (the compiled step is deterministic on CPU).

The store is a plain zarr (format 2) group readable by ``xarray.open_zarr``; consolidated
metadata is written when a run ends (a killed store falls back to reading the arrays).
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
import xarray as xr
import zarr

PROGRESS = os.path.join("_progress", ".zattrs")  # attrs of a zarr group: xarray ignores it
FORMAT_VERSION = 1


class StoreError(RuntimeError):
    """A store that is corrupt, unfinished in an unexpected way, or belongs to another config."""


def _dims_with(ds: xr.Dataset, dim: str) -> xr.Dataset:
    names = [v for v in ds.data_vars if dim in ds[v].dims]
    return ds[names]


def write_json_atomic(path: str, obj) -> None:
    """Write ``obj`` as JSON to ``path`` so that a reader (or a crash) sees the old file or the
    new one, never a torn one: temporary file, fsync, atomic rename."""
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_progress(path: str) -> dict | None:
    """The committed progress of a streamed store (None for a store written in one piece)."""
    try:
        with open(os.path.join(os.fspath(path), PROGRESS)) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None


class RunStore:
    """Append-only writer of one run's zarr store (see module docstring)."""

    def __init__(self, path: str, config_json: str):
        self.path = os.fspath(path)
        self.config_json = config_json
        self.progress = {"format": FORMAT_VERSION, "records": 0, "snapshots": 0,
                         "chunks_done": 0, "state_slot": None, "finished": False}

    # -- creation / resume ------------------------------------------------------------
    @classmethod
    def create(cls, path: str, config_json: str, *, overwrite: bool = False) -> "RunStore":
        path = os.fspath(path)
        if os.path.exists(path):
            if not overwrite:
                raise FileExistsError(f"{path} exists; resume it (CLI --resume) or pass "
                                      "overwrite=True (CLI --overwrite) to replace it")
            shutil.rmtree(path)
        return cls(path, config_json)

    @classmethod
    def open(cls, path: str, config_json: str) -> "RunStore":
        """Open an existing store to resume it; the config must match exactly."""
        path = os.fspath(path)
        progress_file = os.path.join(path, PROGRESS)
        try:
            with open(progress_file) as fh:
                progress = json.load(fh)
            group = zarr.open_group(path, mode="r", zarr_format=2)
            stored_config = group.attrs["config"]
        except (OSError, ValueError, KeyError) as exc:
            raise StoreError(f"{path} is not a readable meanfield run store ({exc}); "
                             "nothing was overwritten") from None
        if progress.get("format") != FORMAT_VERSION:
            raise StoreError(f"{path} has store format {progress.get('format')}, expected "
                             f"{FORMAT_VERSION}")
        if stored_config != config_json:
            raise StoreError(f"{path} holds a run of another config; nothing was overwritten "
                             "(choose another output path, or overwrite explicitly)")
        store = cls(path, config_json)
        store.progress = progress
        if not progress["finished"]:
            store._truncate()
            metadata = os.path.join(path, ".zmetadata")
            if os.path.exists(metadata):  # stale once the run continues
                os.remove(metadata)
            group = zarr.open_group(path, mode="r+", zarr_format=2)
            if "phase" in group:  # derived from the records: recomputed at the end
                del group["phase"]
        return store

    def _truncate(self):
        """Drop records/snapshots written after the last completed checkpoint."""
        group = zarr.open_group(self.path, mode="r+", zarr_format=2)
        for dim, count in (("t", self.progress["records"]),
                           ("t_snapshot", self.progress["snapshots"])):
            for name in group.array_keys():
                array = group[name]
                dims = array.attrs.get("_ARRAY_DIMENSIONS", [])
                if dims and dims[0] == dim and array.shape[0] != count:
                    array.resize((count,) + array.shape[1:])

    # -- writing ------------------------------------------------------------------------
    @property
    def written(self) -> bool:
        """Whether any chunk has been committed to the store."""
        return self.progress["chunks_done"] > 0

    def append(self, chunk: xr.Dataset, state, chunks_done: int) -> None:
        """Append one chunk (records on ``t``, snapshots on ``t_snapshot``), checkpoint the
        state, then commit the new counts."""
        n_records = chunk.sizes.get("t", 0)
        n_snaps = chunk.sizes.get("t_snapshot", 0)
        if not os.path.exists(os.path.join(self.path, ".zgroup")):
            chunk.to_zarr(self.path, mode="w-", zarr_format=2, consolidated=False)
        else:
            for dim, count in (("t", n_records), ("t_snapshot", n_snaps)):
                if count:
                    _dims_with(chunk, dim).to_zarr(self.path, append_dim=dim, zarr_format=2,
                                                   consolidated=False)
        slot = 0 if self.progress["state_slot"] is None else 1 - self.progress["state_slot"]
        self._write_state(slot, state)
        self.progress.update(records=self.progress["records"] + n_records,
                             snapshots=self.progress["snapshots"] + n_snaps,
                             chunks_done=chunks_done, state_slot=slot)
        self._commit()

    def _write_state(self, slot: int, state) -> None:
        group = zarr.open_group(self.path, mode="r+", zarr_format=2)
        name = f"_state_{slot}"
        if name in group:
            del group[name]
        sub = group.create_group(name)
        for i, leaf in enumerate(jax.tree.leaves(jax.device_get(state))):
            sub.create_array(f"leaf_{i}", data=np.asarray(leaf))

    def load_state(self, template):
        """The checkpointed state, with the pytree structure of ``template``."""
        slot = self.progress["state_slot"]
        if slot is None:
            return None
        group = zarr.open_group(self.path, mode="r", zarr_format=2)[f"_state_{slot}"]
        leaves, treedef = jax.tree.flatten(template)
        loaded = [np.asarray(group[f"leaf_{i}"][...]) for i in range(len(leaves))]
        for old, new in zip(leaves, loaded):
            if np.shape(old) != new.shape or np.asarray(old).dtype != new.dtype:
                raise StoreError(f"{self.path}: checkpoint does not match this config's state")
        return jax.tree.unflatten(treedef, [jax.numpy.asarray(v) for v in loaded])

    def _commit(self) -> None:
        folder = os.path.join(self.path, os.path.dirname(PROGRESS))
        if not os.path.exists(folder):
            zarr.open_group(self.path, mode="r+", zarr_format=2).create_group("_progress")
        write_json_atomic(os.path.join(self.path, PROGRESS), self.progress)

    def finish(self, attrs: dict, *, finished: bool = True, extra: xr.Dataset | None = None) -> None:
        """Record final attributes and derived variables (``extra``, e.g. the phases, replaced
        if present) and consolidate metadata; ``finished=False`` (an interrupted run) leaves
        the store resumable."""
        group = zarr.open_group(self.path, mode="r+", zarr_format=2)
        kept = dict(group.attrs)
        if extra is not None:
            for name in extra.data_vars:
                if name in group:
                    del group[name]
            extra.to_zarr(self.path, mode="a", zarr_format=2, consolidated=False)
        group.attrs.put({**kept, **attrs})  # xarray's append rewrites the group attrs
        self.progress["finished"] = finished
        self._commit()
        zarr.consolidate_metadata(self.path, zarr_format=2)

    def last_record(self) -> dict:
        if not self.progress["records"]:
            return {}
        ds = xr.open_zarr(self.path, consolidated=False)
        last = ds.isel(t=self.progress["records"] - 1)
        return {k: float(last[k]) for k in ("t", "loss", "n_steps", "status") if k in last}
