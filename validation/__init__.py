"""validation: studies built on meanfield, with pass/fail reports.

``meanfield validate --list`` lists the studies of ``meanfield.validation.studies.STUDIES``;
``meanfield validate STUDY [--quick] [--out DIR]`` runs one and writes ``DIR/report.md``
(default ``./validation-reports/STUDY``). The command is this package's plugin to the
``meanfield`` CLI (entry point group ``meanfield.commands``, ``meanfield.validation.cli``):
dependencies point one way, validation imports meanfield, never the reverse.
"""

from meanfield.validation.report import Check, Report
from meanfield.validation.studies import STUDIES, run_study

__all__ = ["Check", "Report", "STUDIES", "run_study"]
