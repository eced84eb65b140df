"""Streaming, resumable, checksummed zarr store of a run, with one writer at a time.

A run streams into its store chunk by chunk: records are appended along ``t``, snapshots along
``t_snapshot``, and the integrator state is checkpointed into one of two slots
(``_state_0``/``_state_1``, written alternately). Only then is ``_progress/.zattrs`` replaced
atomically (write + ``os.replace``); it names the valid record and snapshot counts, the
completed chunks, the current state slot and the size and CRC-32 of every chunk file of the
commit (``files``). A run killed at any moment (SIGKILL included) therefore loses at most the
chunk in flight: on resume the arrays are truncated to the counts in ``_progress/.zattrs`` and
the run continues from the checkpoint, giving the same numbers as an uninterrupted run (the
compiled step is deterministic on CPU).

Safety rules:

* **One writer.** A writer holds an advisory lock (``filelock``) on ``.meanfield-lock`` inside
  the store, released by the OS when the process dies, and names itself in
  ``.meanfield-writer``; a second writer is refused with the holder's pid.
* **Integrity.** Opening a store checks that every committed chunk file exists with its
  committed size (``verify_store``; CRC-32 too with ``hashes=True``, CLI ``meanfield verify``):
  a missing or damaged chunk is a ``StoreCorrupt`` error naming the variable and the records,
  never a fill value read back as data.
* **Nothing a user owns is deleted.** Overwriting replaces only a store this library wrote
  (``check_replaceable``): never ``.``, ``~``, ``/``, a parent of the working directory, a
  directory that is not a store or a store holding a foreign file. The new store is written
  beside the old one and exchanged with it at the end, so a crash mid-overwrite leaves the old
  store intact.
* **First save.** A store killed before its first commit holds no records and says so: it is
  resumable (``--resume`` starts it afresh), never reported as unreadable.

The store is a plain zarr (format 2) group readable by ``xarray.open_zarr``; its metadata is
consolidated at every commit. The chunk files of appended arrays are sized from the config
(``append_chunk_length``); an append rewrites the last, partly filled one atomically (zarr
writes a temporary file and renames it), so its committed records stay intact.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import json
import os
import re
import shutil
import signal
import threading
import warnings
import zlib

import jax
import numpy as np
import xarray as xr
import zarr

PROGRESS = os.path.join("_progress", ".zattrs")  # attrs of a zarr group: xarray ignores it
FORMAT_VERSION = 1
LOCK = ".meanfield-lock"
WRITER = ".meanfield-writer"  # JSON {"pid": ...} of the process holding LOCK
_OWN_FILES = (LOCK, WRITER)
_METADATA = (".zarray", ".zattrs", ".zgroup", ".zmetadata")
_CHUNK_KEY = re.compile(r"^\d+(\.\d+)*$")
_OVERWRITE_TAG = ".overwrite-"
CHUNK_BYTES = 2**20  # target size of a chunk file along an appended dimension


class StoreError(RuntimeError):
    """A store that is corrupt, unfinished in an unexpected way, or belongs to another config."""


class StoreLocked(StoreError):
    """Another process is writing the store."""


class StoreCorrupt(StoreError):
    """A committed chunk file is missing or differs from its checksum."""


@contextlib.contextmanager
def quiet_zarr():
    """Silence zarr's warning about the files that sit beside the zarr hierarchy (lock files,
    a sweep's per-point checksum records)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Object at .* is not recognized")
        yield


def _group(path: str, mode: str) -> zarr.Group:
    """The store's root group, read from its own metadata files: the consolidated metadata
    describe the last commit, not what an interrupted write left."""
    return zarr.open_group(path, mode=mode, zarr_format=2, use_consolidated=False)


def _dims_with(ds: xr.Dataset, dim: str) -> xr.Dataset:
    names = [v for v in ds.data_vars if dim in ds[v].dims]
    return ds[names]


def append_chunk_length(planned: int, item_bytes: int) -> int:
    """Items per chunk file along an appended dimension: all ``planned`` items of the run, or
    as many as fit in ``CHUNK_BYTES`` (at least one).

    The layout then depends on the config alone, not on how many records the first commit
    happened to hold (a run whose first chunk compiles commits after a few records).
    """
    return max(1, min(int(planned), CHUNK_BYTES // max(int(item_bytes), 1)))


def append_encoding(ds: xr.Dataset, planned: dict) -> dict:
    """zarr chunk encoding of the variables of ``ds`` with an appended dimension of
    ``planned`` (``{dim: items the run will write}``): whole along every other dimension."""
    encoding = {}
    for name, var in ds.variables.items():
        axes = [axis for axis, dim in enumerate(var.dims) if dim in planned]
        if axes:
            axis = axes[0]
            chunks = [max(n, 1) for n in var.shape]
            item = var.dtype.itemsize * int(np.prod(chunks[:axis] + chunks[axis + 1:]))
            chunks[axis] = append_chunk_length(planned[var.dims[axis]], item)
            encoding[name] = {"chunks": tuple(chunks)}
    return encoding


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
    """The committed progress of a store (None for a store without a commit record)."""
    path = os.fspath(path)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise StoreError(f"{path} is a file, not a store (a store is a directory)")
    try:
        with open(os.path.join(path, PROGRESS)) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None


def consolidate(path: str) -> None:
    """Write the consolidated metadata (``.zmetadata``) of the store at ``path``."""
    with quiet_zarr():
        zarr.consolidate_metadata(path, zarr_format=2)


# -- what a directory holds ----------------------------------------------------------------

def _foreign_entries(path: str, *, root: bool = True) -> list[str]:
    """Entries under ``path`` that a meanfield store never holds (relative paths)."""
    foreign = []
    names = os.listdir(path)
    is_array = ".zarray" in names
    for name in names:
        full = os.path.join(path, name)
        if name in _METADATA or name.endswith(".partial") or name.endswith(".tmp"):
            continue
        if root and name in _OWN_FILES:
            continue
        if name == "parts" and os.path.basename(path) == "_progress" and os.path.isdir(full) \
                and all(f.endswith((".json", ".tmp")) for f in os.listdir(full)):
            continue  # the per-part checksum records
        if os.path.isdir(full) and not os.path.islink(full):
            inner = os.listdir(full)
            # a zarr node, or one whose metadata a full disk or a kill cut short
            if is_array and _CHUNK_KEY.match(name) or not inner or set(_METADATA) & set(inner):
                foreign += [os.path.join(name, f) for f in _foreign_entries(full, root=False)]
                continue
        elif is_array and _CHUNK_KEY.match(name):
            continue
        foreign.append(name)
    return foreign


def config_changes(stored_json: str | None, config_json: str, limit: int = 6) -> str:
    """The fields in which a stored config differs from another, for a message:
    ``"t_max (stored 100.0, given 20.0); model.width (stored 100, given 500)"`` (dotted
    names, at most ``limit`` of them; long values shortened)."""
    from meanfield.config import changed_fields, flat_fields

    def short(value) -> str:
        text = json.dumps(value)
        return text if len(text) <= 40 else text[:37] + "..."

    try:
        stored, given = json.loads(stored_json), json.loads(config_json)
    except (TypeError, ValueError):
        return "the stored config is unreadable"
    keys, old, new = changed_fields(stored, given), flat_fields(stored), flat_fields(given)
    listed = [f"{k} (stored {short(old.get(k))}, given {short(new.get(k))})"
              for k in keys[:limit]]
    return "; ".join(listed + ([f"and {len(keys) - limit} more"] if len(keys) > limit else []))


def stored_attrs(path: str) -> dict:
    """The group attributes of the store at ``path`` ({} if it has none)."""
    try:
        with open(os.path.join(path, ".zattrs")) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def check_resumable_versions(path: str) -> None:
    """Refuse to resume the store at ``path`` in a process with other library, jax or backend
    versions than those it records (``schema.NUMERIC_VERSIONS``): its stored part and the
    resumed part would not be one computation. Raised before anything is written.

    Raises:
        StoreError: naming each version that differs.
    """
    from meanfield.schema import changed_versions

    changed = changed_versions(stored_attrs(path))
    if changed:
        listed = "; ".join(f"{key.removesuffix('_version')} {old} (this process: {new})"
                           for key, (old, new) in changed.items())
        raise StoreError(f"{path} was computed with {listed}: resuming it would mix results of "
                         "two versions in one store; nothing was overwritten (resume it with "
                         "those versions, or start afresh at another output path or with "
                         "overwrite)")


def store_status(path: str) -> str:
    """What ``path`` holds: ``absent``; ``empty`` (a store created but never written: only its
    lock files); ``first_save`` (a run stopped during its first save: resumable from the
    start); ``unfinished`` (resumable); ``finished``; ``foreign`` (not a meanfield store, or a
    store holding files it never writes)."""
    path = os.fspath(path)
    if not os.path.lexists(path):
        return "absent"
    if not os.path.isdir(path) or os.path.islink(path):
        return "foreign"
    try:
        if _foreign_entries(path):
            return "foreign"
        names = set(os.listdir(path))
    except OSError:
        return "foreign"
    progress = read_progress(path)
    if progress is None:
        if not names - set(_OWN_FILES):
            return "empty"
        if LOCK in names and ".zmetadata" not in names:  # a writer of this library made it
            return "first_save"
        if {"config", "sweep"} & set(stored_attrs(path)):
            return "finished"  # a store written in one piece before commit records existed
        # a writer of this library stopped in its first save after the metadata (a full disk)
        return "first_save" if LOCK in names else "foreign"
    if not isinstance(progress, dict) or "format" not in progress:
        return "foreign"
    return "finished" if progress.get("finished") else "unfinished"


# files only a zarr store (or a store of this library being created) has at its top
_STORE_MARKERS = (".zgroup", "zarr.json", LOCK, "_progress")


def enclosing_store(path: str) -> str | None:
    """The zarr store that ``path`` is or lies inside (the nearest one, through symbolic links
    too), or None."""
    for start in (os.path.abspath(os.fspath(path)), os.path.realpath(os.fspath(path))):
        path = start
        while True:
            if os.path.isdir(path) and any(os.path.lexists(os.path.join(path, name))
                                           for name in _STORE_MARKERS):
                return path
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
    return None


def check_store_label(name: str) -> None:
    """Raise ``StoreError`` unless the config name ``name`` can label a default store path
    (``runs/NAME-...zarr``): a plain label, no path separator, not empty, no leading '.'."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise StoreError(f"name={name!r} cannot label the default store runs/NAME-....zarr (a "
                         "path separator, empty, or a leading '.'); give the store's path (--out, "
                         "out=) or a plain name")


def check_store_path(path: str) -> None:
    """Raise ``StoreError`` if ``path`` is ``.``, ``~``, ``/`` or a parent of the working
    directory: a store is never written there."""
    real = os.path.realpath(path)
    cwd = os.path.realpath(os.getcwd())
    protected = {os.path.realpath(os.sep), os.path.realpath(os.path.expanduser("~"))}
    if real in protected or os.path.commonpath([real, cwd]) == real:
        raise StoreError(f"refusing to write a store at {path}: it is the working directory, "
                         "a parent of it, the home directory or the root; nothing was changed "
                         "(choose a new folder, e.g. runs/NAME.zarr)")


def check_replaceable(path: str) -> None:
    """Raise ``StoreError`` unless ``path`` may be replaced by a new store: it must be a store
    this library wrote holding nothing else (``store_status``), and not a protected path
    (``check_store_path``)."""
    path = os.fspath(path)
    check_store_path(path)
    status = store_status(path)
    if status == "foreign":
        foreign = _foreign_entries(path) if os.path.isdir(path) else []
        detail = (f"it holds files a meanfield store never writes ({', '.join(foreign[:3])}"
                  f"{', ...' if len(foreign) > 3 else ''})" if foreign
                  else "it is not a meanfield store")
        raise StoreError(f"refusing to overwrite {path}: {detail}; nothing was deleted "
                         "(choose another output path)")


def remove_store(path: str) -> None:
    """Delete a store this library wrote (``check_replaceable`` first; nothing else goes)."""
    check_replaceable(path)
    shutil.rmtree(path)


# -- one writer ----------------------------------------------------------------------------

class WriterLock:
    """Exclusive advisory lock of one store (``filelock``), with the holder's pid beside it."""

    def __init__(self, path: str):
        from filelock import FileLock, Timeout

        self.path = path
        self._lock = FileLock(os.path.join(path, LOCK), timeout=0, thread_local=False)
        try:
            self._lock.acquire()
        except Timeout:
            if holder(path) == f"pid {os.getpid()}":  # a failed earlier call of this process
                gc.collect()  # frees its writer, whose lock goes with it
                with contextlib.suppress(Timeout):
                    self._lock.acquire()
        if not self._lock.is_locked:
            raise StoreLocked(_being_written(path, holder(path))) from None
        write_json_atomic(os.path.join(path, WRITER), {"pid": os.getpid()})

    def release(self) -> None:
        if self._lock.is_locked:
            with contextlib.suppress(OSError):
                os.remove(os.path.join(self.path, WRITER))
            self._lock.release(force=True)


def holder(path: str) -> str:
    """Who holds the writer lock of ``path``, as recorded in its writer file."""
    try:
        with open(os.path.join(path, WRITER)) as fh:
            return f"pid {int(json.load(fh)['pid'])}"
    except (OSError, ValueError, KeyError, TypeError):
        return "pid unknown"


def _being_written(path: str, writer: str) -> str:
    return f"{path} is being written by another process ({writer}); wait for it to finish or " \
           "stop it first"


def check_no_live_writer(path: str) -> None:
    """Raise ``StoreLocked`` if another process holds the writer lock of ``path``
    (``live_writer``): before any advice to resume or replace the store."""
    writer = live_writer(path)
    if writer is not None:
        raise StoreLocked(_being_written(path, writer))


def live_writer(path: str) -> str | None:
    """``pid N`` of the process holding the writer lock of ``path``, else None. Reads only: a
    reader never takes the lock.

    On Linux the holder comes from the kernel's lock table (``/proc/locks``), so a writer file
    left behind by a killed writer, or naming a pid since reused, does not count. Elsewhere the
    writer file's pid counts if a process of that pid is alive.
    """
    try:
        lock = os.stat(os.path.join(path, LOCK))
    except OSError:
        return None
    try:
        with open("/proc/locks") as fh:
            table = fh.read().splitlines()
    except OSError:
        table = None
    if table is not None:
        # "1: FLOCK  ADVISORY  WRITE 22910 fe:00:2154695 0 EOF"; a waiter's line has "->"
        key = f"{os.major(lock.st_dev):02x}:{os.minor(lock.st_dev):02x}:{lock.st_ino}"
        for line in table:
            fields = line.split()
            if "->" not in fields and key in fields[2:]:
                pid = fields[fields.index(key) - 1]
                if pid.isdigit() and int(pid) != os.getpid():
                    return f"pid {pid}"
        return None
    try:
        with open(os.path.join(path, WRITER)) as fh:
            pid = int(json.load(fh)["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if pid == os.getpid() or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except PermissionError:  # alive, another user's
        return f"pid {pid}"
    except OSError:
        return None
    return f"pid {pid}"


def _exchange(a: str, b: str) -> None:
    """Swap two directories atomically (Linux ``renameat2(RENAME_EXCHANGE)``); elsewhere by two
    renames."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None:
        at_fdcwd, rename_exchange = -100, 2
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
        if ctypes.get_errno() not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), a)
    aside = a + ".aside"
    os.rename(a, aside)
    os.rename(b, a)
    os.rename(aside, b)


def _sibling(target: str) -> str:
    parent, name = os.path.split(os.path.abspath(target))
    return os.path.join(parent, f".{name}{_OVERWRITE_TAG}{os.getpid()}")


def _clean_stale_siblings(target: str) -> None:
    """Remove the new stores of overwrites that were killed (their writer is gone)."""
    parent, name = os.path.split(os.path.abspath(target))
    prefix = f".{name}{_OVERWRITE_TAG}"
    for entry in os.listdir(parent):
        full = os.path.join(parent, entry)
        if entry.startswith(prefix) and entry[len(prefix):].isdigit():
            with contextlib.suppress(StoreError, OSError):
                lock = WriterLock(full)
                try:
                    remove_store(full)
                finally:
                    lock.release()


# -- checksums -----------------------------------------------------------------------------

def _crc32(path: str) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            crc = zlib.crc32(block, crc)
    return crc


def _manifest_entry(full: str, old: list | None) -> list:
    """``[size, crc32, mtime_ns]`` of the file ``full``; ``old`` is kept if size and mtime
    did not change since it was taken."""
    st = os.stat(full)
    if old is not None and old[0] == st.st_size and old[2] == st.st_mtime_ns:
        return old
    return [st.st_size, _crc32(full), st.st_mtime_ns]


def file_manifest(path: str, previous: dict | None = None, *, skip: tuple[str, ...] = ()) -> dict:
    """``{relative path: [size, crc32, mtime_ns]}`` of every chunk file under ``path``
    (metadata, lock and progress files excluded; directories in ``skip`` too). Files unchanged
    since ``previous`` (same size and mtime) keep their checksum without being read."""
    previous = previous or {}
    out = {}
    for folder, dirs, files in os.walk(path):
        rel_folder = os.path.relpath(folder, path)
        if rel_folder == ".":
            dirs[:] = [d for d in dirs if d != "_progress" and d not in skip]
            continue
        for name in files:
            if name in _METADATA or name.endswith((".partial", ".tmp")):
                continue
            rel = os.path.join(rel_folder, name)
            out[rel] = _manifest_entry(os.path.join(folder, name), previous.get(rel))
    return out


def chunk_manifest(path: str, rels) -> dict:
    """``file_manifest`` of the chunk files ``rels`` (relative to ``path``) that exist: zarr
    writes no file for a chunk left at its fill value."""
    out = {}
    for rel in rels:
        try:
            out[rel] = _manifest_entry(os.path.join(path, rel), None)
        except FileNotFoundError:
            pass
    return out


def _describe(path: str, rel: str) -> str:
    """``variable 'loss' records t[30:40]`` for the chunk file ``loss/3``."""
    folder, key = os.path.split(rel)
    if folder.startswith("_state_"):
        return f"the state checkpoint ({rel})"
    try:
        with open(os.path.join(path, folder, ".zarray")) as fh:
            meta = json.load(fh)
        dims = stored_attrs(os.path.join(path, folder)).get("_ARRAY_DIMENSIONS", [])
        index = [int(i) for i in re.split(r"[./]", key)]
        chunks, shape = meta["chunks"], meta["shape"]
        if dims and index:
            start = index[0] * chunks[0]
            stop = min(start + chunks[0], shape[0])
            what = "records" if dims[0] == "t" else (
                "snapshots" if dims[0] == "t_snapshot" else "entries")
            return f"variable {folder!r} {what} {dims[0]}[{start}:{stop}] (chunk file {rel})"
    except (OSError, ValueError, KeyError, IndexError):
        pass
    return f"variable {folder!r} (chunk file {rel})"


def _in_flight(path: str, rel: str, progress: dict) -> bool:
    """Whether ``rel`` is the last committed chunk of an appended array of an unfinished run:
    the append in flight when the run stopped rewrites it (atomically, adding records)."""
    if progress.get("finished") or progress.get("one_piece"):
        return False
    folder, key = os.path.split(rel)
    try:
        with open(os.path.join(path, folder, ".zarray")) as fh:
            chunk = json.load(fh)["chunks"][0]
        dim = stored_attrs(os.path.join(path, folder))["_ARRAY_DIMENSIONS"][0]
    except (OSError, ValueError, KeyError, IndexError):
        return False
    count = {"t": progress.get("records"), "t_snapshot": progress.get("snapshots")}.get(dim)
    return bool(count) and int(re.split(r"[./]", key)[0]) == (count - 1) // chunk


PARTS = os.path.join("_progress", "parts")  # per-part checksum records of a sweep store


def write_part_manifest(path: str, part: int, manifest: dict) -> None:
    """Record the checksums of one part of a store (a sweep point) atomically, before the
    commit that names the part done; the commit record then stays small however many parts
    the store has."""
    os.makedirs(os.path.join(path, PARTS), exist_ok=True)
    write_json_atomic(os.path.join(path, PARTS, f"{int(part)}.json"), manifest)


def committed_files(path: str, progress: dict) -> dict:
    """``{relative path: [size, crc32, mtime_ns]}`` of every chunk file a store committed."""
    return _committed_files(path, progress)[0]


def _committed_files(path: str, progress: dict) -> tuple[dict, dict, list]:
    """``(files, owner, missing)``: the committed ``{rel: [size, crc32, mtime_ns]}``, the part
    each file belongs to (None: the commit record itself) and the parts whose record is
    missing. A store with ``manifest_parts`` keeps one record per part in ``done``."""
    files = dict(progress.get("files", {}))
    owner = dict.fromkeys(files)
    missing = []
    for part in progress.get("done", []) if progress.get("manifest_parts") else []:
        try:
            with open(os.path.join(path, PARTS, f"{part}.json")) as fh:
                manifest = json.load(fh)
        except (OSError, ValueError):
            missing.append(part)
            continue
        files.update(manifest)
        owner.update(dict.fromkeys(manifest, part))
    return files, owner, missing


def damaged_chunks(path: str, progress: dict, *,
                   hashes: bool = False) -> list[tuple[str, str, int | None]]:
    """``(relative path, description, part)`` of every committed chunk file that is missing or
    differs from its committed size (and CRC-32 with ``hashes=True``), and of every committed
    part whose checksum record is missing (``part``: the sweep point it belongs to, None for
    the store as a whole). The chunk an unfinished run was appending to when it stopped does
    not count (``_in_flight``)."""
    files, owner, missing = _committed_files(path, progress)
    damaged = [(os.path.join(PARTS, f"{part}.json"),
                f"the checksum record of part {part} is missing or unreadable", part)
               for part in missing]
    for rel, (size, crc, _) in sorted(files.items()):
        full = os.path.join(path, rel)
        try:
            actual = os.path.getsize(full)
        except OSError:
            damaged.append((rel, f"{_describe(path, rel)} is missing", owner[rel]))
            continue
        if (actual != size or hashes and _crc32(full) != crc) and not _in_flight(path, rel,
                                                                                 progress):
            damaged.append((rel, f"{_describe(path, rel)} is damaged ("
                            + (f"{actual} bytes, committed {size}" if actual != size
                               else "checksum differs") + ")", owner[rel]))
    return damaged


def verify_store(path: str, *, hashes: bool = False) -> dict | None:
    """Check a store against its last commit and return its progress record (None for a store
    written in one piece).

    Every committed chunk file must exist with its committed size (and CRC-32 with
    ``hashes=True``). Raises ``StoreCorrupt`` naming the variable and records of the first
    damaged chunks, and ``StoreError`` for a store with no commit yet (resumable) or a path
    that holds no store (an empty directory, a directory without a zarr group, a file).
    """
    path = os.fspath(path)
    status = store_status(path)
    if os.path.isdir(path) and not os.listdir(path):
        raise StoreError(f"{path} is an empty directory, not a store")
    if status in ("empty", "first_save"):
        writer = live_writer(path)
        if writer is not None:
            raise StoreError(f"{path} is being written by another process ({writer}) and holds "
                             "no committed records yet; open it once its first save is committed")
        raise StoreError(f"{path} holds no committed records yet (the run stopped during its "
                         "first save); continue it with --resume (resume=True)")
    progress = read_progress(path)
    if progress is None and not any(os.path.exists(os.path.join(path, name))
                                    for name in (".zgroup", "zarr.json")):  # zarr format 2, 3
        raise StoreError(f"{path} is not a store: it holds no zarr group (.zgroup, zarr.json)")
    if progress is None:
        return None
    damaged = [text for _, text, _ in damaged_chunks(path, progress, hashes=hashes)]
    if damaged:
        raise StoreCorrupt(f"{path} is damaged: " + "; ".join(damaged[:3])
                           + (f"; and {len(damaged) - 3} more" if len(damaged) > 3 else "")
                           + ". Its data cannot be trusted: " + (
                               "resume the sweep (run_sweep(..., resume=True), or the study "
                               "again) to recompute the damaged points" if "done" in progress
                               else "recompute it (--overwrite)"))
    return None if progress.get("one_piece") else progress


def save_dataset(ds: xr.Dataset, path: str, *, overwrite: bool = False) -> None:
    """Write a Dataset in one piece as a checksummed store: into a new directory beside
    ``path`` first, then moved (or, with ``overwrite``, exchanged) into place."""
    path = os.fspath(path)
    check_store_path(path)
    exists = os.path.lexists(path)
    if exists and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to "
                              "replace it")
    old = None
    if exists:
        check_replaceable(path)
        old = WriterLock(path)
    try:
        new = _sibling(path)
        if os.path.lexists(new):
            remove_store(new)
        ds.to_zarr(new, mode="w-", zarr_format=2, consolidated=True)
        _group(new, "r+").require_group("_progress")
        write_json_atomic(os.path.join(new, PROGRESS), {
            "format": FORMAT_VERSION, "finished": True, "one_piece": True,
            "files": file_manifest(new)})
        if old is None:
            os.rename(new, path)
        else:
            _exchange(path, new)
            shutil.rmtree(new)
    finally:
        if old is not None:
            old.release()


# -- the run store -------------------------------------------------------------------------

@contextlib.contextmanager
def deferred_interrupt():
    """Hold a Ctrl-C (SIGINT) that arrives inside the block and deliver it when the block ends.

    zarr carries out a write on its own event-loop thread; a KeyboardInterrupt raised in the
    waiting thread would abandon the write half done, with its files still landing after the
    interrupt handler has looked at the store. Outside the main thread (where Python delivers
    signals) the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
        if received and previous is not signal.SIG_IGN:
            if callable(previous):
                previous(signal.SIGINT, received[0])
            else:
                raise KeyboardInterrupt


class RunStore:
    """Append-only writer of one run's zarr store (see module docstring).

    ``target`` is the store's path; ``path`` is where it is being written (a directory beside
    ``target`` while an overwrite is in progress, exchanged with ``target`` by ``finish``)."""

    def __init__(self, path: str, config_json: str, *, target: str | None = None,
                 locks: tuple = (), planned: dict | None = None):
        self.path = os.fspath(path)
        self.planned = dict(planned or {})
        self.target = os.fspath(target) if target is not None else self.path
        self.config_json = config_json
        self._locks = list(locks)
        self.progress = {"format": FORMAT_VERSION, "records": 0, "snapshots": 0,
                         "chunks_done": 0, "state_slot": None, "finished": False, "files": {}}

    # -- creation / resume ------------------------------------------------------------
    @classmethod
    def create(cls, path: str, config_json: str, *, overwrite: bool = False,
               planned: dict | None = None) -> "RunStore":
        """A new store at ``path``. An existing ``path`` is an error unless it is an empty
        store or ``overwrite`` is set and it is a store this library wrote (then the new run
        is written beside it and replaces it at ``finish``).

        ``planned``: ``{"t": records, "t_snapshot": snapshots}`` the run will write, which
        sizes the chunk files of the appended arrays (``append_chunk_length``); without it
        the first append's length does."""
        path = os.fspath(path)
        check_store_path(path)
        status = store_status(path)
        if status in ("empty", "first_save", "unfinished"):
            check_no_live_writer(path)
        if status not in ("absent", "empty") and not overwrite:
            hint = {"first_save": "it holds a run stopped during its first save: resume it "
                                  "(CLI --resume)",
                    "unfinished": "resume it (CLI --resume)",
                    "foreign": "it is not a meanfield run store; choose another path"}.get(
                status, "resume it (CLI --resume) or pass overwrite=True (CLI --overwrite)")
            raise FileExistsError(f"{path} exists; {hint}")
        if status in ("absent", "empty"):
            os.makedirs(path, exist_ok=True)
            lock = WriterLock(path)
            if store_status(path) != "empty":  # another writer got there first and finished
                lock.release()
                raise FileExistsError(f"{path} was just written by another process")
            return cls(path, config_json, locks=(lock,), planned=planned)
        check_replaceable(path)
        old = WriterLock(path)
        try:
            _clean_stale_siblings(path)
            new = _sibling(path)
            os.makedirs(new)
            return cls(new, config_json, target=path, locks=(old, WriterLock(new)),
                       planned=planned)
        except BaseException:
            old.release()
            raise

    @classmethod
    def open(cls, path: str, config_json: str, *, planned: dict | None = None) -> "RunStore":
        """Open an existing store to resume it; the config must match exactly. A store
        stopped before or during its first save restarts from nothing (sized by ``planned``
        as in ``create``); records written after the last commit are dropped."""
        path = os.fspath(path)
        check_store_path(path)
        status = store_status(path)
        if status == "foreign":
            raise StoreError(f"{path} is not a readable meanfield run store (it holds files a "
                             "run store never writes, or no run); nothing was overwritten")
        lock = WriterLock(path)
        try:
            stored_config = stored_attrs(path).get("config")
            if status in ("empty", "first_save"):
                if stored_config not in (None, config_json):
                    raise StoreError(f"{path} holds a run of another config ("
                                     f"{config_changes(stored_config, config_json)}); nothing "
                                     "was overwritten (choose another output path, or "
                                     "overwrite explicitly)")
                for name in os.listdir(path):  # only this library's files (status checked)
                    if name not in _OWN_FILES:
                        full = os.path.join(path, name)
                        shutil.rmtree(full) if os.path.isdir(full) else os.remove(full)
                return cls(path, config_json, locks=(lock,), planned=planned)
            progress = verify_store(path) or read_progress(path)
            if progress.get("format") != FORMAT_VERSION:
                raise StoreError(f"{path} has store format {progress.get('format')}, expected "
                                 f"{FORMAT_VERSION}")
            if stored_config != config_json:
                raise StoreError(f"{path} holds a run of another config ("
                                 f"{config_changes(stored_config, config_json)}); nothing was "
                                 "overwritten (choose another output path, or overwrite "
                                 "explicitly)")
            if not progress["finished"]:
                check_resumable_versions(path)
            store = cls(path, config_json, locks=(lock,))
            store.progress = {**store.progress, **progress}
            if not progress["finished"]:
                store._repair()
            return store
        except BaseException:
            lock.release()
            raise

    def _repair(self):
        """Back to the last commit: drop records/snapshots written after it, leftovers of
        interrupted writes and the derived phases (recomputed at the end)."""
        with quiet_zarr():
            group = _group(self.path, "r+")
            for dim, count in (("t", self.progress["records"]),
                               ("t_snapshot", self.progress["snapshots"])):
                for name in group.array_keys():
                    array = group[name]
                    dims = array.attrs.get("_ARRAY_DIMENSIONS", [])
                    if dims and dims[0] == dim and array.shape[0] != count:
                        array.resize((count,) + array.shape[1:])
            if "phase" in group:
                del group["phase"]
        for folder, _, files in os.walk(self.path):
            for name in files:
                if name.endswith(".partial"):
                    os.remove(os.path.join(folder, name))
        self._commit()  # the same counts, with the checksums of the repaired files

    # -- writing ------------------------------------------------------------------------
    @property
    def written(self) -> bool:
        """Whether any chunk has been committed to the store."""
        return self.progress["chunks_done"] > 0

    def append(self, chunk: xr.Dataset, state, chunks_done: int) -> None:
        """Append one chunk (records on ``t``, snapshots on ``t_snapshot``), checkpoint the
        state, then commit the new counts and checksums. A Ctrl-C meanwhile takes effect once
        the commit is written (``deferred_interrupt``)."""
        try:
            with deferred_interrupt():
                self._append(chunk, state, chunks_done)
        except OSError:  # full disk, read-only: the last commit stands; let go of the store
            self.close()
            raise

    def _append(self, chunk: xr.Dataset, state, chunks_done: int) -> None:
        n_records = chunk.sizes.get("t", 0)
        n_snaps = chunk.sizes.get("t_snapshot", 0)
        with quiet_zarr():
            if not os.path.exists(os.path.join(self.path, ".zgroup")):
                chunk.to_zarr(self.path, mode="a", zarr_format=2, consolidated=False,
                              encoding=append_encoding(chunk, self.planned))
            else:
                for dim, count in (("t", n_records), ("t_snapshot", n_snaps)):
                    if count:
                        _dims_with(chunk, dim).to_zarr(self.path, append_dim=dim,
                                                       zarr_format=2, consolidated=False)
        slot = 0 if self.progress["state_slot"] is None else 1 - self.progress["state_slot"]
        self._write_state(slot, state)
        self.progress.update(records=self.progress["records"] + n_records,
                             snapshots=self.progress["snapshots"] + n_snaps,
                             chunks_done=chunks_done, state_slot=slot)
        self._commit()

    def _write_state(self, slot: int, state) -> None:
        with quiet_zarr():
            group = _group(self.path, "r+")
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
        group = _group(self.path, "r")[f"_state_{slot}"]
        leaves, treedef = jax.tree.flatten(template)
        loaded = [np.asarray(group[f"leaf_{i}"][...]) for i in range(len(leaves))]
        for old, new in zip(leaves, loaded):
            if np.shape(old) != new.shape or np.asarray(old).dtype != new.dtype:
                raise StoreError(f"{self.path}: checkpoint does not match this config's state")
        return jax.tree.unflatten(treedef, [jax.numpy.asarray(v) for v in loaded])

    def _commit(self) -> None:
        """Checksum what the store holds (the other state slot excepted), consolidate its
        metadata, then replace the commit record atomically: the commit point."""
        slot = self.progress["state_slot"]
        skip = () if slot is None else (f"_state_{1 - slot}",)
        self.progress["files"] = file_manifest(self.path, self.progress.get("files"), skip=skip)
        if not os.path.exists(os.path.join(self.path, "_progress", ".zgroup")):
            with quiet_zarr():
                _group(self.path, "r+").require_group("_progress")
        consolidate(self.path)
        write_json_atomic(os.path.join(self.path, PROGRESS), self.progress)

    def finish(self, attrs: dict, *, finished: bool = True, extra: xr.Dataset | None = None) -> None:
        """Record final attributes and derived variables (``extra``, e.g. the phases, replaced
        if present), commit, move an overwrite into place and release the store;
        ``finished=False`` (an interrupted run) leaves the store resumable."""
        with deferred_interrupt(), quiet_zarr():
            group = _group(self.path, "r+")
            kept = dict(group.attrs)
            if extra is not None:
                replaced = [name for name in extra.data_vars if name in group]
                for name in replaced:
                    del group[name]
                if replaced:  # xarray's append reads the metadata: no deleted array
                    consolidate(self.path)
                extra.to_zarr(self.path, mode="a", zarr_format=2, consolidated=False)
            group.attrs.put({**kept, **attrs})  # xarray's append rewrites the group attrs
            self.progress["finished"] = finished
            self._commit()
            if self.replaces and finished:  # one step for a Ctrl-C: new in place, old gone
                _exchange(self.target, self.path)
                shutil.rmtree(self.path)  # now the replaced store
                self.path = self.target
        self.close()

    @property
    def replaces(self) -> bool:
        """Whether this store is written beside an existing one that ``finish`` replaces."""
        return self.path != self.target

    def discard(self) -> None:
        """Release the store on a way out without ``finish``: a replacement written beside its
        target (an interrupted overwrite) is removed, so the store it was to replace stays as it
        was; any other store only lets go of its lock (what it committed stays resumable)."""
        if self.replaces:
            with contextlib.suppress(OSError):
                shutil.rmtree(self.path)
        self.close()

    def close(self) -> None:
        """Release the writer lock; a store created here and never written is removed."""
        if self.path == self.target and store_status(self.path) == "empty" and self._locks:
            with contextlib.suppress(OSError):
                for name in _OWN_FILES:
                    os.remove(os.path.join(self.path, name))
                os.rmdir(self.path)
        elif self.path != self.target and not self.written:
            with contextlib.suppress(OSError):
                shutil.rmtree(self.path)
        for lock in self._locks:
            lock.release()
        self._locks = []

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()

    def last_record(self) -> dict:
        if not self.progress["records"]:
            return {}
        with quiet_zarr():
            ds = xr.open_zarr(self.path, consolidated=False)
        last = ds.isel(t=self.progress["records"] - 1)
        return {k: float(last[k]) for k in ("t", "loss", "n_steps", "status") if k in last}

    def last_snapshot_time(self) -> float | None:
        """Time of the last committed particle snapshot (None before the first)."""
        if not self.progress["snapshots"]:
            return None
        with quiet_zarr():
            ds = xr.open_zarr(self.path, consolidated=False)
        return float(ds.t_snapshot[self.progress["snapshots"] - 1])
