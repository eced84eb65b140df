"""The Barbu validation study (analytic ALS vs Adam / GD / gradient flow) in quick mode, via the CLI."""

import os

from meanfield.cli import main


def test_validate_list_names_barbu(capsys):
    assert main(["validate", "--list"]) == 0
    assert "barbu" in capsys.readouterr().out


def test_validate_barbu_quick_writes_report(tmp_path, capsys):
    out = tmp_path / "barbu"
    assert main(["validate", "barbu", "--quick", "--out", str(out)]) == 0
    assert "PASS" in capsys.readouterr().out
    report = (out / "report.md").read_text()
    assert "| quantity | paper / theory | measured | tolerance | verdict |" in report
    assert "meanfield validate barbu --quick" in report
    assert "**FAIL**" not in report
    for name in ("sin", "sdf", "luo"):
        assert os.path.getsize(out / f"barbu_{name}.png") > 1000
        assert f"](barbu_{name}.png)" in report
    # diabetes runs when scikit-learn is installed, else it is skipped with a note
    assert (out / "barbu_diabetes.png").exists() or "SKIPPED - scikit-learn" in report
    for method in ("analytic", "adam", "gd", "flow"):
        assert f"| {method} |" in report


def test_validate_unknown_study_is_an_error(capsys):
    assert main(["validate", "no_such_study"]) == 2
    assert "unknown study" in capsys.readouterr().err
