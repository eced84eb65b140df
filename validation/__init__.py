"""validation: studies built on meanfield, with pass/fail reports.

``meanfield validate --list`` lists the studies of ``meanfield.validation.studies.STUDIES``;
``meanfield validate STUDY [--quick] [--out DIR] [--workers N | --scheduler ADDRESS]`` runs one
and writes ``DIR/report.md`` (default ``./validation-reports/STUDY``); the sweep points of the
studies built on sweeps run on a local Dask cluster of N workers, or on a running Dask cluster.
The command is this package's plugin to the ``meanfield`` CLI (entry point group
``meanfield.commands``, ``meanfield.validation.cli``): dependencies point one way, validation
imports meanfield, never the reverse.
"""

from meanfield.validation.executors import (DaskCluster, LocalProcesses, Serial,
                                            executor_from_options)
from meanfield.validation.report import Check, Report
from meanfield.validation.studies import STUDIES, run_study

__all__ = ["Check", "DaskCluster", "LocalProcesses", "Report", "STUDIES", "Serial",
           "executor_from_options", "run_study"]
