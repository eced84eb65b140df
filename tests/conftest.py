"""Shared fixtures: float64 is enabled for the test session (explicit dtypes keep float32 runs float32)."""

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
