"""validation: studies built on meanfield, with pass/fail reports.

``meanfield validate --list`` lists the studies of ``meanfield.validation.studies.STUDIES``;
``meanfield validate STUDY [--quick] [--out DIR] [--workers N | --scheduler ADDRESS]`` runs one
and writes ``DIR/report.md`` (default ``./validation-reports/STUDY``); the sweep points of the
studies built on sweeps run on a local Dask cluster of N workers, or on a running Dask cluster.
The command is this package's plugin to the ``meanfield`` CLI (entry point group
``meanfield.commands``, ``meanfield.validation.cli``): dependencies point one way, validation
imports meanfield, never the reverse.

The public names load their modules on first use (PEP 562), so building the ``meanfield``
command line (which loads the plugin) does not import jax.
"""

from __future__ import annotations

from meanfield.lazy import lazy_attributes

# public name -> module that defines it
_LAZY = {
    "DaskCluster": "meanfield.validation.executors",
    "LocalProcesses": "meanfield.validation.executors",
    "Serial": "meanfield.validation.executors",
    "executor_from_options": "meanfield.validation.executors",
    "Check": "meanfield.validation.report", "Report": "meanfield.validation.report",
    "STUDIES": "meanfield.validation.studies", "run_study": "meanfield.validation.studies",
}

__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_attributes(globals(), _LAZY)
del lazy_attributes
