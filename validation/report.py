"""A tiny report framework for validation studies: pass/fail rows, figures, a markdown file.

A study returns a ``Report``; ``Report.write(DIR)`` writes ``DIR/report.md`` (a pass/fail table,
extra sections, figures embedded as relative PNG links, notes and the command that regenerates
it) and returns whether every *required* check passed.

Two kinds of rows share one table:

* a **check** (``required=True``) is about correctness (finite losses, a solver decreasing its
  loss, ...); a failing check makes ``meanfield validate STUDY`` exit non-zero;
* a **finding** (``required=False``) is a measured statement about a paper's claim; it is
  reported as holding or not, honestly, and never fails the study.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
import time


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (studies write files, never windows);
    imported lazily so that importing a study does not import matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def wall_time_note(started: float) -> str:
    """A report note: wall time since ``started`` (``time.perf_counter()``) and the machine."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"Wall time {time.perf_counter() - started:.0f} s, compilation included, on "
            f"{os.cpu_count()} CPU cores (1-minute load average {load:.1f} at the end).")


def source_commit() -> str:
    """The git commit of the source tree this library runs from, or "" outside a git checkout.

    A tree with changes to tracked files outside ``validation/reports`` (which regenerating the
    reports rewrites) is marked ``+modified``, so a report states whether its numbers come from
    exactly that commit.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args) -> str:
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True,
                              timeout=30, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                      ":(exclude)validation/reports")
    except (OSError, subprocess.SubprocessError):
        return ""
    return commit + ("+modified" if changed else "")


def provenance() -> str:
    """One line naming what produced a report: library version and commit, jax, backend."""
    from meanfield.schema import versions

    v = versions()
    commit = source_commit()
    return (f"meanfield-relu {v['meanfield_version']}"
            + (f" (commit {commit})" if commit else "")
            + f", jax {v['jax_version']} on {v['backend']}, Python {v['python_version']}, "
              f"{platform.machine()}, {os.cpu_count()} CPU cores")


@dataclasses.dataclass(frozen=True)
class Check:
    """One row of the report table.

    Attributes:
        quantity: what is compared (e.g. "sin |x|^2: analytic training loss decreases").
        reference: the paper's / theory's value or statement (text).
        measured: what the study measured (text).
        tolerance: the tolerance or criterion applied (text; "-" if none).
        passed: whether the criterion holds.
        required: True for a correctness check (fails the study), False for a finding.
        to_check: for a row that can be a finding (``required`` False, or an expression that
            is False in some mode): why it does not gate the study, and what measurement would
            turn it into a check. Listed under the table for every finding.
    """

    quantity: str
    reference: str
    measured: str
    tolerance: str
    passed: bool
    required: bool = True
    to_check: str = ""

    @property
    def verdict(self) -> str:
        if self.required:
            return "PASS" if self.passed else "**FAIL**"
        return "finding: holds" if self.passed else "finding: does not hold"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclasses.dataclass
class Report:
    """What a study found.

    Attributes:
        title: heading of report.md.
        checks: the table rows (``Check``).
        figures: PNG paths (absolute or relative to the report directory), embedded in order.
        notes: free-text paragraphs (method, caveats, what is missing).
        sections: extra (heading, markdown) blocks placed after the check table.
        command: the command line that regenerates the report.
        wall_seconds: wall time of the whole study (set by ``run_study``), or None.
        load_average: 1-minute load average of the machine when the study ended, or None.
    """

    title: str
    checks: list[Check] = dataclasses.field(default_factory=list)
    figures: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    sections: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    command: str = ""
    wall_seconds: float | None = None
    load_average: float | None = None

    @property
    def passed(self) -> bool:
        """All required checks passed (findings never fail a study)."""
        return all(c.passed for c in self.checks if c.required)

    def markdown(self, directory: str) -> str:
        n_req = sum(c.required for c in self.checks)
        n_ok = sum(c.passed for c in self.checks if c.required)
        findings = [c for c in self.checks if not c.required]
        lines = [f"# {self.title}", ""]
        if self.command:
            lines += ["Regenerate with:", "", "```bash", self.command, "```", ""]
        lines += [f"**Status: {'PASS' if self.passed else 'FAIL'}** - {n_ok}/{n_req} "
                  f"correctness checks pass; {sum(c.passed for c in findings)}/{len(findings)} "
                  "findings hold (findings report a paper's claim and never fail the study).",
                  "", markdown_table(
                      ["quantity", "paper / theory", "measured", "tolerance", "verdict"],
                      [[c.quantity, c.reference, c.measured, c.tolerance, c.verdict]
                       for c in self.checks]), ""]
        if findings:
            lines += ["## Why each finding is not a check, and what would make it one", ""]
            lines += [f"- **{c.quantity}**: {c.to_check or 'not stated.'}" for c in findings]
            lines += [""]
        for heading, body in self.sections:
            lines += [f"## {heading}", "", body, ""]
        if self.figures:
            lines += ["## Figures", ""]
            for path in self.figures:
                rel = os.path.relpath(path, directory) if os.path.isabs(path) else path
                name = os.path.splitext(os.path.basename(rel))[0]
                lines += [f"![{name}]({rel.replace(os.sep, '/')})", ""]
        if self.notes:
            lines += ["## Notes", ""] + [f"- {note}" for note in self.notes] + [""]
        timing = ""
        if self.wall_seconds is not None:
            timing = f"; study wall time {self.wall_seconds:.0f} s"
            if self.load_average is not None:
                timing += f", 1-minute load average {self.load_average:.1f} at the end"
        lines += [f"_Generated {time.strftime('%Y-%m-%d %H:%M:%S')} by {provenance()}"
                  f"{timing}._", ""]
        return "\n".join(lines)

    def write(self, directory: str) -> bool:
        """Write ``directory/report.md``; return whether all required checks passed."""
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "report.md"), "w") as fh:
            fh.write(self.markdown(directory))
        return self.passed
