"""The README is executable: every Python block runs, every ``meanfield`` command line parses.

Python blocks run in order in one namespace, in a temporary directory, after the store that the
Quickstart command ``meanfield run wang_ma`` writes has been created there (a shorter run of the
same preset). Shell blocks are not run: each ``meanfield ...`` line is parsed with the CLI's own
parser, so a renamed subcommand or flag fails here.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(language: str) -> list[str]:
    """Bodies of the README's fenced blocks in ``language`` (``python``, ``bash``, or ``""``)."""
    return [body for lang, body in FENCE.findall(README.read_text()) if lang == language]


def command_lines(text: str) -> list[str]:
    """Shell command lines of a block: continuations joined, comments and prompts dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = []
    for line in joined.splitlines():
        line = line.split(" #")[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def meanfield_commands() -> list[str]:
    """Every ``meanfield ...`` command in the README's bash blocks (also after ``&&``)."""
    out = []
    for block in blocks("bash"):
        for line in command_lines(block):
            out += [part.strip() for part in line.split("&&") if part.strip().startswith("meanfield ")]
    return out


def test_readme_has_python_and_shell_blocks():
    assert len(blocks("python")) >= 6
    assert len(meanfield_commands()) >= 8


@pytest.mark.parametrize("command", meanfield_commands())
def test_readme_command_parses(command):
    from meanfield.cli import make_parser

    args = make_parser().parse_args(shlex.split(command)[1:])
    assert callable(args.func)


def test_readme_documents_every_subcommand():
    from meanfield.cli import make_parser

    parser = make_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # argparse keeps them here
    text = README.read_text()
    missing = [name for name in sub.choices if f"meanfield {name}" not in text]
    assert not missing, f"README does not document: {missing}"
    for flag in ("--resume", "--no-plots", "--overwrite", "--no-progress", "--kind", "--quick",
                 "--list"):
        assert flag in text, flag


def test_test_command_markers():
    """``.ci/run`` reads exactly one command line between the test-command markers."""
    text = README.read_text()
    inside = text.split("<!-- test-command -->", 1)[1].split("<!-- /test-command -->", 1)[0]
    lines = [ln for ln in inside.splitlines() if ln.strip() and not ln.strip().startswith("```")]
    assert len(lines) == 1 and "pytest" in lines[0]


def test_readme_links_exist():
    """Relative links of the README point to files of the repository."""
    text = README.read_text()
    targets = {t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text)
                if not re.match(r"[a-z]+://", t)}
    missing = sorted(t for t in targets if t and not (ROOT / t).exists())
    assert not missing, f"README links to missing files: {missing}"


@pytest.mark.slow  # ~8 compiled programs and a sweep: about 90 s of CPU time
def test_readme_python_blocks_run(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import meanfield as mf

    monkeypatch.chdir(tmp_path)
    # What `meanfield run wang_ma` leaves in the current directory (shorter, same preset).
    mf.simulate(mf.presets.wang_ma(t_max=20.0), progress=False,
                out=os.path.join("runs", "wang_ma-m100-s0.zarr"))
    namespace: dict = {"__name__": "readme"}
    for i, block in enumerate(blocks("python")):
        try:
            exec(compile(block, f"README.md python block {i}", "exec"), namespace)
        except Exception as exc:  # name the block in the failure
            raise AssertionError(f"README python block {i} failed:\n{block}") from exc


def test_readme_study_table_agrees_with_the_committed_reports():
    """The README's validation table names every committed full report, with its status."""
    text = README.read_text()
    table = text[text.index("| study | claim |"):]
    table = table[:table.index("\n\n")]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows[cells[0].strip("`")] = cells[-1].strip("*")
    reports = sorted(p.parent.name for p in (ROOT / "validation" / "reports").glob("*/report.md")
                     if not p.parent.name.endswith("-quick"))
    assert sorted(rows) == reports
    for study, status in rows.items():
        report = (ROOT / "validation" / "reports" / study / "report.md").read_text()
        found = re.search(r"\*\*Status: (PASS|FAIL)\*\*", report)
        assert found and found.group(1) == status, (study, status)
