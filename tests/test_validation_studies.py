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
    for name in STUDY_FILES[study]:
        assert os.path.getsize(out / name) > 5000, name
        assert f"]({name})" in report
    summary = xr.open_dataset(out / "summary.nc")
    assert all(np.isfinite(v.values).any() for v in summary.data_vars.values())
    summary.close()

