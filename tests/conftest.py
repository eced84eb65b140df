"""Shared fixtures: float64 is enabled for the test session (explicit dtypes keep float32 runs float32).

Compiled programs: the persistent compilation cache of the test session lives in pytest's cache
directory (``.pytest_cache``; ``pytest --cache-clear`` empties it; a temporary directory with
``-p no:cacheprovider``), shared by the test processes and the subprocesses they start and never
the user's own cache directory. After each test module the in-memory compiled programs are
dropped and the freed memory returned to the system, which bounds the session's peak memory; a
later module that needs one of them again reads it from the persistent cache.

Garbage collection: what the collected test modules imported, and whatever is still alive after a
module's full collection, is moved to the collector's permanent generation (``gc.freeze``), so
that the full collections of later tests walk only what those tests made.
"""

import ctypes
import gc
import os
import shutil
import tempfile

import jax
import numpy as np
import pytest

from meanfield.compilation import ENV_VAR

jax.config.update("jax_enable_x64", True)


def pytest_configure(config):
    if "PYTEST_XDIST_WORKER" in os.environ:  # a worker inherits the controller's directory
        return
    previous = os.environ.get(ENV_VAR)
    if getattr(config, "cache", None) is not None:
        path, temporary = str(config.cache.mkdir("meanfield-compilation")), False
    else:
        path, temporary = tempfile.mkdtemp(prefix="meanfield-test-cache-"), True
    config._meanfield_cache = (path, temporary, previous)
    os.environ[ENV_VAR] = path


def pytest_unconfigure(config):
    path, temporary, previous = getattr(config, "_meanfield_cache", (None, False, None))
    if path is None:
        return
    if temporary:
        shutil.rmtree(path, ignore_errors=True)
    os.environ.pop(ENV_VAR, None)
    if previous is not None:
        os.environ[ENV_VAR] = previous


def pytest_collection_finish(session):
    gc.freeze()  # jax, xarray, zarr, matplotlib, hypothesis...: alive for the whole session


def _release_memory() -> None:
    jax.clear_caches()
    gc.collect()
    gc.freeze()  # what survived a full collection is alive
    try:  # glibc keeps freed arenas otherwise
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@pytest.fixture(autouse=True, scope="module")
def _compiled_programs_per_module():
    yield
    _release_memory()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def _files_under(path) -> dict[str, bytes]:
    """Every file under ``path`` (path relative to it) with its bytes."""
    out = {}
    for folder, _, names in os.walk(path):
        for name in names:
            full = os.path.join(folder, name)
            with open(full, "rb") as fh:
                out[os.path.relpath(full, path)] = fh.read()
    return out


@pytest.fixture
def files_under():
    """``files_under(path)``: every file under a folder with its bytes (to check that a
    refused call wrote nothing)."""
    return _files_under
