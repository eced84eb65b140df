"""The per-phase condensation summary: every number is the recorded observable it summarises."""

import math

import numpy as np
import pytest

import meanfield as mf
from meanfield import cli
from meanfield.condensation import (format_table, peak_bins, phase_summary, phase_variables,
                                    with_phase_summary)
from meanfield.observables import peak_mass


@pytest.fixture(scope="module")
def wang_ma_run():
    return mf.simulate(mf.presets.wang_ma(), progress=False)  # the preset's defaults, m = 100


@pytest.fixture(scope="module")
def luo_run():
    return mf.simulate(mf.presets.luo_1d(gamma=1.75, width=400), progress=False)


def _check_against_recording(ds, summary):
    labels = ds.phase.values
    for k, name in enumerate(summary.phase.values):
        inside = np.flatnonzero(labels == k)
        row = summary.sel(phase=name)
        assert row.time.values.tolist() == [ds.t.values[inside[0]], ds.t.values[inside[-1]]]
        for end, i in zip(("start", "end"), (inside[0], inside[-1])):
            at = ds.isel(t=i)
            assert float(row.loss.sel(end=end)) == float(at.loss)
            for var in ("effective_directions", "peak_mass", "alive_fraction"):
                np.testing.assert_array_equal(row[var].sel(end=end).values,
                                              at[var].sel(sign=list(summary.sign.values)).values)
            # the peaks: the first is the density's maximum, their shares add up to peak_mass
            for s in summary.sign.values:
                peaks = row.sel(end=end, sign=s)
                density = at.density.sel(sign=s).values
                assert float(peaks.peak_angle[0]) == float(ds.angle[np.argmax(density)])
                assert float(peaks.peak_share.sum()) == pytest.approx(
                    float(at.peak_mass.sel(sign=s)), rel=float(10 * np.finfo(at.peak_mass.dtype).eps))


def test_wang_ma_positives_condense_on_mu_negatives_on_x_plus_perp(wang_ma_run):
    ds = wang_ma_run
    summary = phase_summary(ds)
    assert [str(n).split(":")[0] for n in summary.phase.values] == ["I", "II", "III", "IV"]
    end_two = summary.isel(phase=1).sel(end="end")
    assert float(end_two.effective_directions.sel(sign="+")) < 1.5
    assert str(end_two.nearest_reference.sel(sign="+", peak=0).values) == "mu"
    assert float(end_two.peak_share.sel(sign="+", peak=0)) > 0.9
    assert str(end_two.nearest_reference.sel(sign="-", peak=0).values) == "x_plus_perp"
    assert float(end_two.peak_share.sel(sign="-", peak=0)) > 0.8
    end_three = summary.isel(phase=2).sel(end="end")
    assert float(end_three.effective_directions.sel(sign="-")) < 1.5
    assert str(end_three.nearest_reference.sel(sign="-", peak=0).values) == "x_plus_perp"
    # x_+perp lies at 90 degrees in the plane of (x_+ = angle 0, x_-)
    assert abs(float(end_three.peak_angle.sel(sign="-", peak=0)) - math.pi / 2) \
        < float(ds.angle[1] - ds.angle[0])
    _check_against_recording(ds, summary)
    assert float(summary.boundary[0, 0]) == 0 and float(summary.boundary[-1, 1]) == float(ds.t[-1])
    table = format_table(summary)
    assert "(mu)" in table and "(x_plus_perp)" in table and len(table.splitlines()) == 1 + 2 * 4
    assert table in "\n".join(line[2:] for line in cli._summary(ds, None).splitlines())


def test_luo_run_summary_and_old_stores(luo_run, tmp_path):
    ds = luo_run
    summary = phase_summary(ds)
    _check_against_recording(ds, summary)
    assert "nearest_reference" in summary and not summary.nearest_reference.values.any()  # no refs
    final = summary.isel(phase=-1).sel(end="end", sign="all")
    assert float(final.peak_mass) >= 0.9  # condensed regime
    # a store written without phase and summary (older runs) gives the same summary
    mf.save_run(ds.drop_vars("phase"), tmp_path / "old.zarr")
    old = phase_summary(mf.open_run(tmp_path / "old.zarr"))
    np.testing.assert_array_equal(old.effective_directions.values,
                                  summary.effective_directions.values)


def test_phase_variables_round_trip_a_store(luo_run, tmp_path):
    # a run as stored before the summary existed: simulate now adds it itself
    luo_run = luo_run.drop_vars([v for v in luo_run.data_vars if v.startswith("phase")])
    ds = with_phase_summary(luo_run)
    n = len(phase_summary(luo_run).phase)
    assert ds.sizes["phase_id"] == n and ds.phase.dims == ("t",)
    mf.save_run(ds, tmp_path / "run.zarr")
    back = mf.open_run(tmp_path / "run.zarr").load()
    np.testing.assert_array_equal(back.phase_peak_mass.values, ds.phase_peak_mass.values)
    assert list(back.phase_names.values) == list(phase_summary(luo_run).phase.values)
    assert set(phase_variables(luo_run).data_vars) == set(ds.data_vars) - set(luo_run.data_vars) \
        | {"phase"}


def test_peak_bins_match_the_recorded_peak_mass(rng):
    for _ in range(20):
        p = rng.exponential(size=36) * (rng.uniform(size=36) < 0.4)
        delta, k = int(rng.integers(0, 4)), int(rng.integers(1, 5))
        bins, masses = peak_bins(p, delta, k)
        expected = float(peak_mass(p, delta, k)) if p.sum() > 0 else 0.0
        assert masses.sum() / max(p.sum(), 1e-300) == pytest.approx(expected, rel=1e-9, abs=0)
        assert np.all(bins[masses > 0] >= 0) and (bins[0] == np.argmax(p) or p.sum() == 0)
