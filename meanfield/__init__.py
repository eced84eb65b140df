"""meanfield: neurons of a two-layer ReLU network as interacting particles.

>>> import meanfield as mf
>>> ds = mf.simulate(mf.presets.wang_ma(width=100, seed=0))   # doctest: +SKIP
"""

from meanfield import presets
from meanfield.config import Observe, SaveAt, SimulationConfig, Solver
from meanfield.io import export_netcdf, open_run, run_config, save_run
from meanfield.limits.api import applicable_limits, infinite_width
from meanfield.limits.compare import compare
from meanfield.errors import DivergenceError, RunError, RunInterrupted, StepBudgetError
from meanfield.runner import simulate
from meanfield.particles.model import InitialLaw, ModelSpec, Parametrisation, TrainingData

__version__ = "0.1.0"

__all__ = [
    "DivergenceError", "InitialLaw", "applicable_limits", "compare", "infinite_width", "ModelSpec", "Observe", "Parametrisation", "RunError",
    "RunInterrupted", "SaveAt", "SimulationConfig", "Solver", "StepBudgetError",
    "TrainingData", "export_netcdf", "open_run", "presets", "run_config", "save_run", "simulate",
]
