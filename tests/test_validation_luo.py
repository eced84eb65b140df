"""The luo-slopes and luo-diagram studies in quick mode, via the CLI: the report is written,
its numbers are the dataset's (recomputed independently here), reruns resume the stores."""

import json
import math
import os
import re

import numpy as np
import pytest
import xarray as xr

from meanfield.cli import main
from meanfield.validation.studies import luo


@pytest.fixture(scope="module")
def slopes_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("luo") / "slopes"
    status = main(["validate", "luo-slopes", "--quick", "--out", str(out)])
    return out, status, (out / "report.md").read_text()


@pytest.fixture(scope="module")
def diagram_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("luo") / "diagram"
    status = main(["validate", "luo-diagram", "--quick", "--out", str(out)])
    return out, status, (out / "report.md").read_text()


def _row(report: str, quantity: str) -> list[str]:
    for line in report.splitlines():
        if line.startswith(f"| {quantity} |"):
            return [c.strip() for c in line.strip("|").split("|")]
    raise AssertionError(f"no report row {quantity!r}")


def test_list_names_both_studies(capsys):
    assert main(["validate", "--list"]) == 0
    listed = capsys.readouterr().out
    assert "luo-slopes" in listed and "luo-diagram" in listed


def test_family_parametrisations_map_to_the_closed_form_scales():
    m, g = 5000, 1.25
    for family, factor in (("exponent", 1.0), ("output", 1.0), ("prefactors", 2.0)):
        cfg = luo.family_config(family=family, gamma=g, width=m)
        sigma_a, sigma_w = cfg.model.parametrisation.scales(m, 2)
        assert sigma_a == pytest.approx(factor * m ** ((1 - g) / 2), rel=1e-12)
        assert sigma_w == pytest.approx(factor * m ** ((1 - g) / 2), rel=1e-12)
        alpha, beta1, beta2 = cfg.model.parametrisation.constants(m, 2)
        assert -math.log(beta1 / beta2) / math.log(m) == pytest.approx(0.0, abs=1e-12)
        assert -math.log(beta1 * beta2 / alpha / factor ** 2) / math.log(m) == pytest.approx(g)
    with pytest.raises(ValueError, match="family='other' is not allowed"):
        luo.family_config(family="other", gamma=1.0)


def test_slopes_quick_report(slopes_report):
    out, status, report = slopes_report
    assert status == 0, report
    assert "| quantity | paper / theory | measured | tolerance | verdict |" in report
    assert "meanfield validate luo-slopes --quick" in report and "**FAIL**" not in report
    for name in ("luo_slopes_rd", "luo_slopes_families", "luo_slopes_condensation"):
        assert os.path.getsize(out / f"{name}.png") > 10_000 and f"]({name}.png)" in report
    ds = xr.open_dataset(out / "luo-slopes-paper.nc")
    assert set(ds.stop_reason.values.ravel()) == {"loss_tol"}
    for gamma, paper in ((0.5, "-0.506"), (1.0, "+0.007"), (1.75, "+0.372")):
        row = _row(report, f"S_w at gamma = {gamma:g}, gamma' = 0")
        assert row[1] == f"{paper} (Fig. 3)"
        rd = ds.rd_w_end.sel(gamma=gamma, gamma_prime=0.0, seed=0).values
        slope = np.polyfit(np.log(ds.width.values), np.log(rd), 1)[0]
        assert row[2] == f"{slope:+.3f}"
        assert row[4].startswith("finding")  # quick widths: a finding, not a check
    signs = _row(report, "regime signs: S_w(0.5) < 0 (linear), S_w(1.75) > 0 (condensed)")
    assert signs[-1] == "PASS"
    # the library against itself (one particle system, two parametrisations): a finding
    assert _row(report, "'exponent' and 'output' families (same sigma_a, sigma_w) give the "
                        "same S_w")[-1] == "finding: holds"
    fam = xr.open_dataset(out / "luo-slopes-families.nc")
    assert fam.rd_w_end.dims == ("width", "seed", "family", "gamma")


def test_slopes_rerun_resumes_the_stores_without_recomputing(slopes_report, monkeypatch):
    out, _, report = slopes_report
    from meanfield.validation import sweep

    monkeypatch.setattr(sweep, "run_point", lambda *a: pytest.fail("recomputed a point"))
    assert main(["validate", "luo-slopes", "--quick", "--out", str(out)]) == 0
    again = (out / "report.md").read_text()
    keep = lambda text: [line for line in text.splitlines()
                         if line.startswith("| S_w") or line.startswith("| 1.75")]
    assert keep(again) == keep(report)


def test_diagram_quick_report(diagram_report):
    out, status, report = diagram_report
    assert status == 0, report
    assert "**FAIL**" not in report and "meanfield validate luo-diagram --quick" in report
    for name in ("luo_diagram_sw", "luo_diagram_condensation"):
        assert os.path.getsize(out / f"{name}.png") > 10_000 and f"]({name}.png)" in report
    ds = xr.open_dataset(out / "luo-diagram-quick.nc")
    assert ds.rd_w_end.dims == ("width", "seed", "gamma_prime", "gamma")
    gammas = ds.gamma.values
    for gp, theory in ((-0.4, 1.0), (0.0, 1.0), (0.4, 1.4)):
        row = _row(report, f"boundary at gamma' = {gp:+.1f} (m = 256..1024)")
        assert row[1].startswith(f"gamma = {theory:.2f}")
        rd = ds.rd_w_end.sel(gamma_prime=gp, seed=0)
        s = np.array([np.polyfit(np.log(ds.width.values), np.log(rd.sel(gamma=g).values), 1)[0]
                      for g in gammas])
        k = np.flatnonzero(np.sign(s[:-1]) != np.sign(s[1:]))
        if k.size == 1:  # one sign change: linear interpolation
            j = k[0]
            crossing = gammas[j] - s[j] * (gammas[j + 1] - gammas[j]) / (s[j + 1] - s[j])
            assert float(re.match(r"[\d.]+", row[2]).group()) == pytest.approx(crossing, abs=1e-3)
            assert "extrapolated" not in row[2]
        assert row[4].startswith("finding")
        assert f"\n| {gp:+.1f} | {theory:.2f} | {row[2].split()[0]} |" in report  # boundary table
    assert "wall time of the quick study" in report
    assert "| gamma' \\ gamma |" in report  # the S_w table


def test_rows_that_miss_the_boundary_are_remeasured_at_larger_widths(tmp_path, monkeypatch):
    """The larger-width diagnosis of luo-diagram on a tiny real sweep; a zero tolerance makes
    every row miss. Its crossings are recomputed here from the datasets."""
    from meanfield.validation import phase_diagram as pd
    from meanfield.validation.report import Report
    from meanfield.validation.sweep import run_sweep

    monkeypatch.setattr(luo, "BOUNDARY_TOL", 0.0)
    monkeypatch.setattr(luo, "WIDTH_FACTORS", (2, 4))
    monkeypatch.setattr(luo, "WIDEST_FACTORS", (8,))
    widths = (64, 128)
    ds = run_sweep(pd.diagram_sweep(gammas=(0.6, 1.4), gamma_primes=(-0.2,), widths=widths,
                                    name="tiny"), progress=False).load()
    slopes = pd.slope_map(ds)
    boundary = pd.measured_boundary(slopes)
    report = Report(title="t")
    rows, gammas = pd.refinement_cells(slopes, boundary, 0.0, max_rows=1)
    assert rows == (-0.2,) and gammas == (0.6, 1.4)
    wide_ds, text, session, summed = luo._refine_boundary(report, ds, rows, gammas, widths,
                                                          True, str(tmp_path))
    assert tuple(wide_ds.width.values) == (256, 512, 1024)
    assert "summed over the 4 runs" in text and "m = 1024: " in text
    assert "summed over the 2 runs" in text and session > 0 and summed > 0
    wide = xr.open_dataset(tmp_path / "luo-diagram-wide-quick.nc")
    widest = xr.open_dataset(tmp_path / "luo-diagram-widest-quick.nc")
    assert tuple(wide.width.values) == (256, 512) and tuple(widest.width.values) == (1024,)
    rd = xr.concat([ds.rd_w_end, wide.rd_w_end, widest.rd_w_end], "width").sel(gamma_prime=-0.2,
                                                                               seed=0)
    slope = lambda window, g: np.polyfit(np.log(window), np.log(rd.sel(width=list(window),
                                                                       gamma=g).values), 1)[0]
    crossing = []
    for window in (widths, (512, 1024)):  # the widest len(widths) widths
        s0, s1 = slope(window, 0.6), slope(window, 1.4)
        assert s0 < 0 < s1
        crossing.append(0.6 - s0 * 0.8 / (s1 - s0))
    check = report.checks[-1]
    assert check.quantity == "boundary at gamma' = -0.2 over larger widths (m = 512..1024)"
    assert check.measured == (f"{crossing[0]:.3f} (m = 64..128) -> {crossing[1]:.3f} "
                              "(m = 512..1024)")
    assert not check.required
    assert check.passed == bool(abs(crossing[1] - 1) < abs(crossing[0] - 1) and
                                abs(crossing[1] - 1) <= 0)
    assert report.checks[0].passed  # the larger-width runs reach the loss tolerance
    title, body = report.sections[-1]
    assert "larger widths" in title and "| -0.2 | 0.6 |" in body
    assert os.path.getsize(tmp_path / "luo_diagram_larger_widths.png") > 10_000


def test_rows_that_miss_the_boundary_get_integration_and_seed_controls(tmp_path):
    """The controls of luo-diagram on a tiny real sweep: a tenth of the integrator tolerance
    and one more seed at the study's widths; crossings recomputed here from the datasets."""
    from meanfield.validation import phase_diagram as pd
    from meanfield.validation.report import Report
    from meanfield.validation.sweep import run_sweep

    widths, gammas = (64, 128), (0.6, 1.4)
    ds = run_sweep(pd.diagram_sweep(gammas=gammas, gamma_primes=(-0.2,), widths=widths,
                                    name="tiny"), progress=False).load()
    report = Report(title="t")
    more_ds, text, session, summed = luo._control_boundary(report, ds, (-0.2,), gammas,
                                                           widths, True, str(tmp_path))
    assert tuple(more_ds.seed.values) == luo.CONTROL_SEEDS[True]
    assert text.startswith("rtol 0.0001: ") and session > 0 and summed > 0
    tight = xr.open_dataset(tmp_path / "luo-diagram-rtol-quick.nc")
    more = xr.open_dataset(tmp_path / "luo-diagram-seeds-quick.nc")
    assert tuple(more.seed.values) == luo.CONTROL_SEEDS[True]
    assert dict(json.loads(tight.attrs["sweep"])["fixed"])["rtol"] == 1e-4
    assert json.loads(tight.attrs["base_config"])["solver"]["rtol"] == 1e-4

    def crossing(rd):  # rd over (width, gamma), one seed
        s0, s1 = (np.polyfit(np.log(widths), np.log(rd.sel(gamma=g).values), 1)[0]
                  for g in gammas)
        assert s0 < 0 < s1
        return gammas[0] - s0 * (gammas[1] - gammas[0]) / (s1 - s0)

    pick = lambda d, seed: d.rd_w_end.sel(gamma_prime=-0.2, seed=seed)  # noqa: E731
    c_base, c_tight, c_seed1 = (crossing(pick(ds, 0)), crossing(pick(tight, 0)),
                                crossing(pick(more, 1)))
    assert report.checks[0].passed and report.checks[0].quantity.startswith("controls")
    integration, seeds = report.checks[1], report.checks[2]
    assert integration.measured == f"{c_tight:.3f} against {c_base:.3f}"
    assert integration.passed == (abs(c_tight - c_base) <= luo.INTEGRATION_TOL)
    assert not integration.required and not seeds.required
    low, high = sorted((c_base, c_seed1))
    assert seeds.measured.startswith(f"{low:.3f}..{high:.3f}")
    dev = np.array([c_base, c_seed1]) - 1.0
    assert seeds.passed == bool(np.all(np.abs(dev) > luo.BOUNDARY_TOL)
                                and abs(np.sign(dev).sum()) == 2)
    title, body = report.sections[-1]
    assert "seed noise" in title and f"| -0.2 | {c_base:.3f} | {c_tight:.3f} |" in body


def test_paper_protocol_runs_plain_gd_at_the_fixed_rate_and_stops_at_the_threshold(tmp_path):
    """The GD protocol of luo-diagram on a tiny real sweep: every run is Euler at the fixed
    learning rate, stops at the first step whose MSE is below 1e-6 (one step earlier the MSE
    is still above it), and the reported crossing is recomputed here."""
    import meanfield as mf
    from meanfield.validation import phase_diagram as pd
    from meanfield.validation.report import Report
    from meanfield.validation.sweep import run_sweep

    widths, gammas = (64, 128), (0.6, 1.4)
    ds = run_sweep(pd.diagram_sweep(gammas=gammas, gamma_primes=(-0.2,), widths=widths,
                                    name="tiny"), progress=False).load()
    report = Report(title="t")
    text, session, summed = luo._gradient_descent(report, ds, (-0.2,), gammas, widths, True,
                                                  str(tmp_path))
    assert session > 0 and summed > 0
    gd = xr.open_dataset(tmp_path / "luo-diagram-gd-quick.nc")
    config = json.loads(gd.attrs["base_config"])["solver"]
    assert config["kind"] == "euler" and config["dt"] == luo.GD_LEARNING_RATE
    assert report.checks[0].required and report.checks[0].passed
    assert np.all(gd.stop_reason.values == "loss_tol")
    lr = luo.GD_LEARNING_RATE
    np.testing.assert_allclose(gd.t_end.values, gd.n_steps.values * lr, rtol=1e-4)
    point = dict(width=64, seed=0, gamma_prime=-0.2, gamma=1.4)
    steps = int(gd.n_steps.sel(point).values)
    config = mf.presets.luo_1d(gamma=1.4, gamma_prime=-0.2, width=64, n_saves=luo.N_SAVES)
    config = config.replace(**{"solver.kind": "euler", "solver.dt": lr})
    before = mf.simulate(config.replace(t_max=(steps - 1) * lr), progress=False)
    assert 2 * float(before.loss.values[-1]) >= 1e-6 > 2 * float(gd.loss_end.sel(point))
    s0, s1 = (np.polyfit(np.log(widths), np.log(gd.rd_w_end.sel(gamma_prime=-0.2, seed=0,
                                                                 gamma=g).values), 1)[0]
              for g in gammas)
    crossing = gammas[0] - s0 * (gammas[1] - gammas[0]) / (s1 - s0)
    finding = report.checks[1]
    assert not finding.required and finding.measured == f"{crossing:.3f}"
    assert "plain GD" in report.sections[-1][0]


def test_rows_that_miss_the_boundary_are_gated_by_their_large_width_limit(tmp_path, monkeypatch):
    """The limit gate of luo-diagram on a tiny real sweep: further seeds at the larger widths,
    the crossing extrapolated to m -> infinity recomputed here from the datasets."""
    from meanfield.validation import phase_diagram as pd
    from meanfield.validation.report import Report
    from meanfield.validation.sweep import run_sweep

    widths, gammas, rows = (64, 128), (0.6, 1.4), (-0.2,)
    cells = dict(gammas=gammas, gamma_primes=rows, n_saves=luo.N_SAVES)
    ds = run_sweep(pd.diagram_sweep(**cells, widths=widths, name="tiny"), progress=False).load()
    more = run_sweep(pd.diagram_sweep(**cells, widths=widths, seeds=(1,), name="tiny-seeds"),
                     progress=False).load()
    wide = run_sweep(pd.diagram_sweep(**cells, widths=(256, 512, 1024), name="tiny-wide"),
                     progress=False).load()
    report = Report(title="t")
    text, session, summed = luo._limit_boundary(report, ds, wide, more, rows, gammas, True,
                                                str(tmp_path))
    assert session > 0 and summed > 0
    limit = xr.open_dataset(tmp_path / "luo-diagram-limit-quick.nc")
    assert tuple(limit.width.values) == (256, 512) and tuple(limit.seed.values) == (1,)
    assert report.checks[0].passed and not report.checks[1].required  # quick: a finding
    rd = np.log(np.stack([  # (width, seed, gamma)
        np.concatenate([ds.rd_w_end.sel(seed=0, gamma_prime=-0.2).values,
                        wide.rd_w_end.sel(seed=0, gamma_prime=-0.2, width=[256, 512]).values]),
        np.concatenate([more.rd_w_end.sel(seed=1, gamma_prime=-0.2).values,
                        limit.rd_w_end.sel(seed=1, gamma_prime=-0.2).values])], axis=1))
    m = np.array([64, 128, 256, 512], float)
    design = np.stack([np.ones(4), np.log(m), np.log(np.log(m))], axis=1)
    s = np.linalg.lstsq(design, rd.mean(axis=1), rcond=None)[0][1]  # (gamma,)
    crossing = gammas[0] - s[0] * (gammas[1] - gammas[0]) / (s[1] - s[0])
    assert report.checks[1].measured.startswith(f"inverse_log: {crossing:.3f} [")
    assert "large-width limit" in report.sections[-2][0]
    # m = 1024 is held out of the fit: each correction is tested there, and only a kept one
    # can gate the row
    fit = xr.concat([xr.concat([ds, more], "seed"),
                     xr.concat([wide.sel(width=[256, 512]), limit], "seed")], "width")
    tests = {c: pd.heldout_test(fit, wide.sel(width=[1024]), correction=c)
             for c in pd.CORRECTIONS}
    for c, t in tests.items():
        verdict = "kept" if bool(t.consistent[0]) else "rejected"
        assert f"(held out m = 1024..1024: p {float(t.p_value[0]):.2f}, {verdict})" in \
            report.checks[1].measured
    if not any(bool(t.consistent[0]) for t in tests.values()):
        assert not report.checks[1].passed
    title, body = report.sections[-1]
    assert "held-out widths" in title and "| -0.2 | inverse_log |" in body
