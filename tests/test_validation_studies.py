"""The wang-ma, boursier, kernel-limit and meanfield-limit validation studies in quick mode, via
the CLI: exit status, report table, figures, summary dataset (the slope fits are
``meanfield.validation.rates``, tested in its own module)."""

import os

import numpy as np
import pytest
import xarray as xr

from meanfield.cli import main

STUDY_FILES = {
    "wang-ma": ("wang_ma_phases.png", "wang_ma_widths.png", "wang_ma_kappa.png",
                "wang_ma_plateau_grid.png"),
    "boursier": ("boursier_losses.png", "boursier_escapes.png", "boursier_training_curves.png"),
    "kernel-limit": ("kernel_limit_convergence.png", "kernel_limit_f.png"),
    "meanfield-limit": ("meanfield_limit_convergence.png", "meanfield_limit_f.png"),
}


def test_validate_list_shows_the_studies(capsys):
    assert main(["validate", "--list"]) == 0
    out = capsys.readouterr().out
    for name in STUDY_FILES:
        assert name in out


@pytest.mark.parametrize("study", list(STUDY_FILES))
def test_quick_study_writes_a_passing_report(study, tmp_path, capsys):
    out = tmp_path / study
    status = main(["validate", study, "--quick", "--out", str(out)])
    printed = capsys.readouterr().out
    report = (out / "report.md").read_text()
    assert status == 0, report
    assert "PASS" in printed
    assert "| quantity | paper / theory | measured | tolerance | verdict |" in report
    assert f"meanfield validate {study} --quick" in report
    assert "**FAIL**" not in report and "**Status: PASS**" in report
    assert report.count("| PASS |") >= 2
    assert "study wall time" in report and "jax " in report  # provenance footer
    for name in STUDY_FILES[study]:
        assert os.path.getsize(out / name) > 5000, name
        assert f"]({name})" in report
    summary = xr.open_dataset(out / "summary.nc")
    assert all(np.isfinite(v.values).any() for v in summary.data_vars.values())
    summary.close()



def test_validate_all_runs_every_study_and_fails_if_one_fails(tmp_path, capsys, monkeypatch):
    from meanfield.validation import studies
    from meanfield.validation.report import Check, Report

    def study(passed):
        def run(out_dir, quick=False):
            assert quick
            return Report(title="t", checks=[Check("q", "r", "m", "-", passed)])
        return run

    monkeypatch.setattr(studies, "STUDIES", {"good": (study(True), "passes"),
                                             "bad": (study(False), "fails")})
    monkeypatch.setattr("meanfield.validation.cli.STUDIES", studies.STUDIES)
    monkeypatch.setattr("meanfield.validation.cli.takes_executor", lambda name: False)
    assert main(["validate", "--all", "--quick", "--out", str(tmp_path)]) == 1
    printed = capsys.readouterr().out
    assert "1/2 pass; failing: bad" in printed
    assert "**Status: PASS**" in (tmp_path / "good-quick" / "report.md").read_text()
    assert "**Status: FAIL**" in (tmp_path / "bad-quick" / "report.md").read_text()
    assert main(["validate", "good", "--all"]) == 2
    assert "drop the study name 'good'" in capsys.readouterr().err


def test_report_names_the_commit_it_came_from():
    import re
    import subprocess

    from meanfield.validation.report import provenance, source_commit

    commit = source_commit()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        head = ""
    if head:  # a checkout: the commit, marked when tracked files differ from it
        assert re.fullmatch(re.escape(head) + r"(\+modified)?", commit), (commit, head)
        assert f"(commit {commit})" in provenance()
    else:
        assert commit == ""


def _rows_that_can_be_findings(path):
    """(line, has to_check) of every ``Check(...)`` call in a study module whose ``required``
    is not the constant True (False, or an expression such as ``not quick``)."""
    import ast

    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Check":
            kw = {k.arg: k.value for k in node.keywords}
            required = kw.get("required")
            if required is None or (isinstance(required, ast.Constant) and required.value is True):
                continue
            yield node.lineno, "to_check" in kw


def test_every_finding_says_what_would_make_it_a_check():
    import glob

    import meanfield.validation.studies as studies

    paths = sorted(glob.glob(os.path.join(os.path.dirname(studies.__file__), "*.py")))
    rows = [(os.path.basename(p), line, ok) for p in paths
            for line, ok in _rows_that_can_be_findings(p)]
    assert len(rows) >= 10  # the studies' findings were found at all
    assert [(name, line) for name, line, ok in rows if not ok] == []


def test_report_lists_each_finding_with_what_would_make_it_a_check(tmp_path):
    from meanfield.validation.report import Check, Report

    report = Report(title="t", checks=[
        Check("a", "ref", "1", "-", True),
        Check("b", "ref", "2", "-", False, required=False, to_check="a wider grid of widths")])
    text = report.markdown(str(tmp_path))
    assert "## Why each finding is not a check, and what would make it one" in text
    assert "- **b**: a wider grid of widths" in text
    assert "- **a**" not in text
