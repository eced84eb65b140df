"""``meanfield limit PRESET`` for every preset and every limit kind that applies to it: at the
preset's defaults (slow where the defaults are expensive) and a quick version at a short t_max;
limit stores are named by what the limit depends on."""

import os
import re

import pytest

from meanfield import presets
from meanfield.cli import main, make_parser
from meanfield.io import open_run
from meanfield.limits.api import KINDS, applicable_limits, store_name

# (preset, kind): the default-size run is slow (quadrature widths up to 65536)
CASES = {("wang_ma", "wang_ma"): False, ("wang_ma", "mean_field_reference"): True,
         ("luo_1d", "mean_field_reference"): True}
QUICK_T_MAX = {"wang_ma": 0.01, "luo_1d": 0.5}
QUICK_OPTIONS = {"mean_field_reference": ["--option", "levels=(64, 128)"]}


def test_cases_are_every_applicable_limit_of_every_preset():
    applicable = {(name, kind) for name in presets.PRESETS
                  for kind, why in applicable_limits(presets.get(name)).items() if why == "applies"}
    assert applicable == set(CASES)


def _limit(tmp_path, preset, kind, *extra):
    out = str(tmp_path / f"{preset}-{kind}.zarr")
    code = main(["limit", preset, "--kind", kind, "--out", out, *extra])
    return code, out


@pytest.mark.parametrize("preset,kind", [c for c, slow in CASES.items() if not slow])
def test_limit_at_the_preset_defaults(tmp_path, capsys, preset, kind):
    code, out = _limit(tmp_path, preset, kind)
    assert code == 0, capsys.readouterr().err
    ds = open_run(out)
    assert ds.attrs["kind"] == f"limit:{kind}" and float(ds.loss[-1]) < float(ds.loss[0])
    assert float(ds.t[-1]) == pytest.approx(presets.get(preset).t_max)


@pytest.mark.slow
@pytest.mark.parametrize("preset,kind", [c for c, slow in CASES.items() if slow])
def test_expensive_limit_at_the_preset_defaults(tmp_path, capsys, preset, kind):
    code, out = _limit(tmp_path, preset, kind)
    assert code == 0, capsys.readouterr().err
    ds = open_run(out)
    assert ds.attrs["kind"] == f"limit:{kind}" and float(ds.loss[-1]) < float(ds.loss[0])
    config = presets.get(preset)
    if config.loss_tol is not None:  # stops where a run of the preset stops (see reference.py)
        assert ds.attrs["stop_reason"] == "loss_tol" and float(ds.loss[-1]) <= config.loss_tol


@pytest.mark.parametrize("preset,kind", [c for c, slow in CASES.items() if slow])
def test_quick_limit_of_every_preset(tmp_path, capsys, preset, kind):
    t_max = QUICK_T_MAX[preset]
    code, out = _limit(tmp_path, preset, kind, "--t-max", str(t_max), *QUICK_OPTIONS[kind])
    assert code == 0, capsys.readouterr().err
    ds = open_run(out)
    assert ds.attrs["kind"] == f"limit:{kind}"
    assert float(ds.t[-1]) == pytest.approx(t_max, rel=1e-6)
    assert ds.attrs["levels"] == [64, 128]
    assert main(["limit", preset, "--kind", kind, "--out", out, "--t-max", str(t_max)]) == 2
    assert "holds something else" in capsys.readouterr().err  # other levels: not the same


def test_limit_refuses_up_front_with_the_reason(capsys):
    assert main(["limit", "luo_1d", "--kind", "kernel"]) == 2
    assert "the kernel limit does not apply: the parametrisation is in the critical regime" \
        in capsys.readouterr().err
    assert main(["limit", "luo_1d", "--kind", "wang_ma"]) == 2
    assert "needs frozen +-1 marks" in capsys.readouterr().err


def test_store_names_follow_what_the_limit_depends_on(tmp_path, capsys, monkeypatch):
    wm, wm_wide = presets.get("wang_ma"), presets.get("wang_ma", width=1000, seed=3)
    assert store_name(wm, "auto") == store_name(wm_wide, "wang_ma") == "wang_ma-limit-wang_ma.zarr"
    assert store_name(presets.get("luo_1d", width=8), "auto") == \
        "luo_1d-limit-mean_field_reference.zarr"
    linear = presets.get("luo_1d", gamma=0.5, width=8, seed=2)
    assert store_name(linear, "kernel") == "luo_1d-m8-s2-limit-kernel.zarr"  # K_m is at width m
    # the same limit at another width is found, not recomputed; another config is refused
    monkeypatch.chdir(tmp_path)
    assert main(["limit", "wang_ma"]) == 0
    assert capsys.readouterr().out.endswith("saved      runs/wang_ma-limit-wang_ma.zarr\n")
    assert main(["limit", "wang_ma", "--width", "1000"]) == 0
    assert "already computed" in capsys.readouterr().out
    assert main(["limit", "wang_ma", "--t-max", "10"]) == 0  # another preset argument
    assert capsys.readouterr().out.endswith("saved      runs/wang_ma-t_max10-limit-wang_ma.zarr\n")
    assert main(["limit", "wang_ma", "--t-max", "10", "--out",
                 os.path.join("runs", "wang_ma-limit-wang_ma.zarr")]) == 2
    err = capsys.readouterr().err
    assert "holds something else" in err and "t_max (stored 1500.0, given 10.0)" in err
    assert "model.width" not in err  # the wang_ma limit does not depend on it
    assert main(["run", "wang_ma", "--out", os.path.join("runs", "wang_ma-limit-wang_ma.zarr"),
                 "--no-progress", "--no-plots"]) == 2  # a limit store is no run of its config
    assert "holds the infinite-width limit of this config" in capsys.readouterr().err
    assert main(["limit", "wang_ma", "--option", "foo=1"]) == 2  # a typo, not a clash
    assert "option 'foo' is not one of the wang_ma limit's options" in capsys.readouterr().err
    # options given other values than their defaults follow the preset arguments in the name
    assert main(["limit", "wang_ma", "--option", "rho_plus=0.3", "--option", "t=[1, 10]"]) == 0
    assert capsys.readouterr().out.endswith(
        "saved      runs/wang_ma-t1_10-rho_plus0.3-limit-wang_ma.zarr\n")  # the solver's order
    assert main(["limit", "wang_ma", "--option", "rho_plus=None"]) == 0  # the default
    assert "already computed" in capsys.readouterr().out
    times = [round(0.01 * 1.3 ** k, 6) for k in range(40)]  # a long value: named by its hash
    assert main(["limit", "wang_ma", "--option", f"t={times}"]) == 0
    name = capsys.readouterr().out.split("saved      runs/")[1].split("\n")[0]
    assert re.fullmatch(r"wang_ma-t[0-9a-f]{8}-limit-wang_ma\.zarr", name), name


def test_kind_help_lists_every_kind():
    limit = make_parser()._subparsers._group_actions[0].choices["limit"]
    help_text = next(a.help for a in limit._actions if a.dest == "kind")
    assert all(kind in help_text for kind in KINDS)
