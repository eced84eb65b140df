"""Errors of a run; each carries the Dataset recorded before the stop."""

from __future__ import annotations

import xarray as xr


class RunError(RuntimeError):
    """A run that stopped abnormally; ``.dataset`` holds everything recorded before the stop."""

    def __init__(self, message: str, dataset: xr.Dataset | None = None):
        super().__init__(message)
        self.dataset = dataset


class DivergenceError(RunError):
    """The state became NaN/inf (or the step size underflowed)."""


class StepBudgetError(RunError):
    """``max_steps`` was exhausted before ``t_max``."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; ``.dataset`` holds everything recorded before it."""

    def __init__(self, dataset: xr.Dataset | None):
        super().__init__("run interrupted; partial dataset in .dataset")
        self.dataset = dataset
