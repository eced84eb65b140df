"""The wang-ma, boursier, kernel-limit and meanfield-limit validation studies in quick mode, via
the CLI: exit status, report table, figures, summary dataset; plus the slope-fit helper against
independent computations."""

import os

import numpy as np
import pytest
import xarray as xr

from meanfield.cli import main
from validation.studies import limits

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
    assert report.count("| PASS |") >= 3
    for name in STUDY_FILES[study]:
        assert os.path.getsize(out / name) > 5000, name
        assert f"]({name})" in report
    summary = xr.open_dataset(out / "summary.nc")
    assert all(np.isfinite(v.values).any() for v in summary.data_vars.values())
    summary.close()


# ----------------------------------------------------------------------------- slope fit

def test_slope_fit_recovers_a_power_law_and_matches_polyfit():
    widths = np.array([100.0, 400.0, 1600.0, 6400.0])
    rng = np.random.default_rng(1)
    noise = np.exp(0.1 * rng.standard_normal((4, 6)))
    errors = 3.0 * widths[:, None] ** -0.5 * noise
    fit = limits.slope_fit(widths, errors, aggregate="mean")
    # independent: numpy's fit on the seed means
    expected = np.polyfit(np.log(widths), np.log(errors.mean(axis=1)), 1)[0]
    assert fit["slope"] == pytest.approx(expected, rel=1e-12)
    assert abs(fit["slope"] + 0.5) < 0.05
    assert fit["ci"][0] < fit["slope"] < fit["ci"][1] and fit["ci"][1] - fit["ci"][0] < 0.2
    rms = limits.slope_fit(widths, errors, aggregate="rms")
    assert rms["per_width"] == pytest.approx(np.sqrt(np.mean(errors ** 2, axis=1)))
    # noiseless data: every bootstrap resample gives the exact slope
    exact = limits.slope_fit(widths, np.repeat(widths[:, None] ** -0.7, 3, axis=1))
    assert exact["ci"] == pytest.approx((-0.7, -0.7)) and exact["slope"] == pytest.approx(-0.7)


def test_slope_fit_bootstrap_resamples_whole_seeds():
    """Against a direct loop: resampled seed columns, mean per width, polyfit."""
    widths = np.array([10.0, 100.0, 1000.0])
    errors = np.array([[1.0, 2.0], [0.3, 0.9], [0.1, 0.2]])
    fit = limits.slope_fit(widths, errors, aggregate="mean", n_boot=500, seed=3)
    rng = np.random.default_rng(3)
    picks = rng.integers(0, 2, size=(500, 2))
    slopes = [np.polyfit(np.log(widths), np.log(errors[:, p].mean(axis=1)), 1)[0] for p in picks]
    assert fit["ci"] == pytest.approx(tuple(np.percentile(slopes, [2.5, 97.5])), rel=1e-10)


@pytest.mark.parametrize("kwargs, word", [({"aggregate": "median"}, "aggregate"),
                                          ({}, "errors")])
def test_slope_fit_rejects_bad_input(kwargs, word):
    errors = np.ones((3, 2)) if kwargs else np.ones((2, 2))
    with pytest.raises(ValueError, match=word):
        limits.slope_fit([1.0, 2.0, 4.0], errors, **kwargs)

