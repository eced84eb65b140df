"""Phase segmentation and condensation observables on the papers' settings."""

import json
import math

import numpy as np
import pytest
import xarray as xr

import meanfield as mf
from meanfield.phases import boundaries, general_phases, label_phases


@pytest.fixture(scope="module")
def wang_ma_run():
    return mf.simulate(mf.presets.wang_ma(width=1000, kappa=0.01), progress=False)


def test_wang_ma_phase_boundaries_match_the_rules(wang_ma_run):
    ds = wang_ma_run
    starts = list(boundaries(ds.phase).values())
    assert [n.split(":")[0] for n in boundaries(ds.phase)] == ["I", "II", "III", "IV"]
    assert abs(starts[1] / (11.58 * 0.01) - 1) < 0.05  # end of I
    p, delta = 4, math.pi / 15
    rho = float(ds.alive_fraction.sel(sign="+").interp(t=30.0)
                + ds.alive_fraction.sel(sign="-").interp(t=30.0))
    t_esc = 2 * (1 + p) * (1 - p ** -0.5) / (rho * delta ** 2)
    assert abs(starts[3] / t_esc - 1) < 0.03  # end of III
    f_minus = ds.f_train.isel(sample=-1)
    assert float(f_minus.sel(t=starts[2], method="nearest")) == pytest.approx(
        float(f_minus.sel(t=slice(starts[1], starts[3])).max()), rel=1e-6)  # end of II: max f(x_-)
    assert np.all(np.diff(ds.phase.values) >= 0) and ds.phase.values[-1] == 3


def test_a_run_stopped_before_the_maximum_of_f_minus_ends_in_phase_two(wang_ma_run):
    from meanfield.condensation import phase_summary

    ds = wang_ma_run.drop_vars("phase")
    full = list(boundaries(wang_ma_run.phase).values())
    f_minus = ds.f_train.isel(sample=-1)
    for t_stop in (5.0, 20.0):  # f(x_-) still rises at the last record
        cut = ds.sel(t=slice(None, t_stop))
        assert np.argmax(f_minus.sel(t=slice(None, t_stop)).values) == cut.sizes["t"] - 1
        phase = label_phases(cut)
        assert list(boundaries(phase)) == ["I: initial condensation", "II: saddle to plateau"]
        assert list(boundaries(phase).values())[1] == full[1]
        summary = phase_summary(cut.assign(phase=phase))
        assert summary.sizes["phase"] == 2 and np.isfinite(summary.loss.values).all()
    cut = ds.sel(t=slice(None, 2 * full[2]))  # past the maximum: the same end of Phase II
    assert list(boundaries(label_phases(cut)).values())[:3] == full[:3]


def test_wang_ma_densities_condense_on_mu_and_x_plus_perp(wang_ma_run):
    ds = wang_ma_run
    end_one, end_two = list(boundaries(ds.phase).values())[1:3]
    # once the alive positives outweigh the (never moving) dead ones, one direction remains
    eff = ds.effective_directions.sel(sign="+")
    fell = float(eff.t[np.argmax(eff.values < 1.5)])
    assert end_one < fell < end_two
    negatives = ds.cosine_stats.sel(sign="-", reference="x_plus_perp", stat="min")
    assert float(negatives.sel(t=20.0, method="nearest")) > 0.99  # they slide onto x_+perp
    peak_minus = ds.density.sel(sign="-").sel(t=20.0, method="nearest").argmax("angle")
    assert abs(ds.angle.values[int(peak_minus)] - math.pi / 2) < 0.06
    mu_angle = math.atan2(*reversed(np.array([4 - math.cos(math.pi / 15), -math.sin(math.pi / 15)])))
    peak = ds.density.sel(sign="+").sel(t=fell).argmax("angle")
    assert abs(ds.angle.values[int(peak)] - mu_angle) < 0.06


def test_luo_condensed_and_linear_densities():
    cond = mf.simulate(mf.presets.luo_1d(gamma=1.75, width=4000), progress=False)
    assert float(cond.peak_mass.sel(sign="all").isel(t=-1)) >= 0.9  # 4 peaks, +-0.1 rad
    lin = mf.simulate(mf.presets.luo_1d(gamma=0.5, width=4000), progress=False)
    density = lin.density.sel(sign="all")
    assert 0.5 * float(np.abs(density.isel(t=-1) - density.isel(t=0)).sum()) < 0.1
    assert float(lin.rd_w.isel(t=-1)) < float(cond.rd_w.isel(t=-1))


def test_general_detector_on_a_synthetic_two_plateau_curve():
    t = np.r_[0.0, np.geomspace(1e-3, 1e4, 200)]
    loss = 1.0 - 0.5 / (1 + (10 / np.maximum(t, 1e-12)) ** 8) - 0.49 / (1 + (1000 / np.maximum(t, 1e-12)) ** 8)
    ds = xr.Dataset({"loss": ("t", loss)}, coords={"t": t})
    phase = general_phases(ds)
    starts = list(boundaries(phase).values())[1:]
    names = list(boundaries(phase))
    assert [n.split(": ")[1] for n in names] == ["plateau", "descent", "plateau", "descent", "plateau"]
    assert 3 < starts[0] < 10 < starts[1] < 30 and 300 < starts[2] < 1000 < starts[3] < 3000
    assert label_phases(ds).attrs["rules"] == "general"
    assert json.loads(phase.attrs["phase_boundaries"]) == starts
    with pytest.raises(ValueError, match="rules"):
        label_phases(ds, rules="nope")


def test_boursier_alignment_plateaus_and_escapes():
    """4 orthogonal inputs, |D_+| >= 2 |D_-|, balanced init at lambda = 1e-6 (arXiv 2206.00939):
    alignment, the L0 plateau, the first escape, the plateau at the slower class's share, the
    second escape."""
    x, y = np.eye(4), np.array([1.0, 1.0, -0.4, -0.2])
    d_plus = (x[:2] * y[:2, None]).sum(0) / 4
    d_minus = (x[2:] * np.abs(y[2:, None])).sum(0) / 4
    cfg = mf.SimulationConfig(
        model=mf.ModelSpec(width=200, bias=False,
                           init=mf.InitialLaw(kind="balanced", scale=1e-6, signs="random")),
        data=mf.TrainingData(x=x, y=y), t_max=2e4, loss_tol=1e-10, precision="float64",
        observe=mf.Observe(references=(("D_plus", tuple(d_plus)), ("D_minus", tuple(d_minus)))),
        save=mf.SaveAt(n=300))
    ds = mf.simulate(cfg, progress=False)
    assert ds.phase.attrs["rules"] == "boursier"
    starts = boundaries(ds.phase)
    assert list(starts) == ["alignment", "plateau 1", "escape 1", "plateau 2", "escape 2"]
    t = ds.t.values
    l0, l1 = float(np.sum(y ** 2) / 8), float(np.sum(y[2:] ** 2) / 8)
    mid_1 = (t > starts["plateau 1"]) & (t < starts["escape 1"])
    mid_2 = (t > starts["plateau 2"]) & (t < starts["escape 2"])
    assert np.allclose(ds.loss.values[mid_1], l0, rtol=0.01)
    assert np.allclose(ds.loss.values[mid_2], l1, rtol=0.02)
    assert starts["escape 1"] < math.log(1e6) / np.linalg.norm(d_plus) < starts["plateau 2"] * 1.2
