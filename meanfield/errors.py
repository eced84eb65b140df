"""Errors of a run; each carries the Dataset recorded before the stop; and the Ctrl-C that a
command received but Python swallowed."""

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


_interrupted = False  # set by the command's Ctrl-C handler (meanfield.cli.console_main)


def mark_interrupted() -> None:
    """Record that the command's Ctrl-C handler ran (it raises KeyboardInterrupt next)."""
    global _interrupted
    _interrupted = True


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if the command received a Ctrl-C whose KeyboardInterrupt never
    arrived: a signal handler's exception raised inside a garbage-collector callback or a
    ``__del__`` is only printed by Python ("Exception ignored"), and the run would go on with
    every later Ctrl-C ignored. Called between compiled calls and before the figures."""
    if _interrupted:
        raise KeyboardInterrupt
