"""Shared fixtures: float64 is enabled for the test session (explicit dtypes keep float32 runs float32).

The persistent compilation cache of the session lives in a temporary directory shared by the
test processes and the subprocesses they start (never the user's own cache directory), and is
removed at the end of the session.
"""

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
    config._meanfield_cache = (tempfile.mkdtemp(prefix="meanfield-test-cache-"),
                               os.environ.get(ENV_VAR))
    os.environ[ENV_VAR] = config._meanfield_cache[0]


def pytest_unconfigure(config):
    path, previous = getattr(config, "_meanfield_cache", (None, None))
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)
        os.environ.pop(ENV_VAR, None)
        if previous is not None:
            os.environ[ENV_VAR] = previous


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
