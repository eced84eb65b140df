"""meanfield: neurons of a two-layer ReLU network as interacting particles.

>>> import meanfield as mf
>>> ds = mf.simulate(mf.presets.wang_ma(width=100, seed=0))   # doctest: +SKIP

The public names load their modules on first use (PEP 562), so ``import meanfield`` does not
import jax, xarray, zarr, scipy or matplotlib.
"""

from __future__ import annotations

import os as _os

from meanfield.lazy import lazy_attributes

# An installed package holds particles/ and validation/ inside it (pyproject.toml's
# package-dir); a source checkout keeps them beside this folder. Python started in the root of
# a checkout imports this folder even when the package is installed, so look beside it too.
_here = _os.path.dirname(_os.path.abspath(__file__))
_checkout = _os.path.dirname(_here)
if (not _os.path.isdir(_os.path.join(_here, "particles"))
        and _os.path.isfile(_os.path.join(_checkout, "particles", "__init__.py"))):
    __path__.append(_checkout)
del _here, _checkout

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "presets": "meanfield.presets",
    "Observe": "meanfield.config", "SaveAt": "meanfield.config",
    "SimulationConfig": "meanfield.config", "Solver": "meanfield.config",
    "export_netcdf": "meanfield.io", "open_run": "meanfield.io", "run_config": "meanfield.io",
    "save_run": "meanfield.io",
    "applicable_limits": "meanfield.limits.api", "infinite_width": "meanfield.limits.api",
    "compare": "meanfield.limits.compare",
    "DivergenceError": "meanfield.errors", "RunError": "meanfield.errors",
    "RunInterrupted": "meanfield.errors", "StepBudgetError": "meanfield.errors",
    "simulate": "meanfield.runner",
    "set_compilation_cache": "meanfield.compilation",
    "InitialLaw": "meanfield.particles.model", "ModelSpec": "meanfield.particles.model",
    "Parametrisation": "meanfield.particles.model", "TrainingData": "meanfield.particles.model",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes(globals(), _LAZY)
del lazy_attributes
