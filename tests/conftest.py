"""Shared fixtures: float64 is enabled for the test session (explicit dtypes keep float32 runs float32).

Compiled programs: the persistent compilation cache of the test session lives in pytest's cache
directory (``.pytest_cache``; ``pytest --cache-clear`` empties it; a temporary directory with
``-p no:cacheprovider``), shared by the test processes and the subprocesses they start and never
the user's own cache directory. After each test module the in-memory compiled programs are
dropped and the freed memory returned to the system, which bounds the session's peak memory; a
later module that needs one of them again reads it from the persistent cache.

Compile options: most of the session's time is XLA compiling small programs, so the session
compiles with less optimisation (``TEST_XLA_FLAGS``: LLVM at -O0 and XLA:CPU's elemental
emitters instead of its MLIR fusion emitters), which takes about a third of the CPU time of a
default compile for the same programs; the compiled programs run slower, but the session's
runs are short. The flags go into ``XLA_FLAGS`` before jax starts its backend, so the
subprocesses the tests start inherit them; flags already in ``XLA_FLAGS`` are kept. Results are
equal to a default compile up to rounding (float64 values differ in the last bits, so a count
at a threshold, such as the alive fraction or a density bin, can move by one particle): every
test compares results computed within the session (or against tolerances), none against
stored bits. The persistent cache keys its entries on the flags, so these programs are never
served to a run outside the test session.
"""

import ctypes
import gc
import os
import shutil
import tempfile

TEST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"


def with_test_flags(flags: str) -> str:
    """``XLA_FLAGS`` with the session's compile options first (once), the given flags after."""
    return flags if TEST_XLA_FLAGS in flags else f"{TEST_XLA_FLAGS} {flags}".strip()


os.environ["XLA_FLAGS"] = with_test_flags(os.environ.get("XLA_FLAGS", ""))

import jax  # noqa: E402  (after XLA_FLAGS: read when the backend starts)
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from meanfield.compilation import ENV_VAR  # noqa: E402

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


def _release_memory() -> None:
    jax.clear_caches()
    gc.collect()
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
