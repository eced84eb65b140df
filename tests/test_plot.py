"""meanfield.plot: figures of small real runs, the snapshot density, references, the CLI."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import meanfield as mf
from meanfield import cli
from meanfield import plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def agg_backend(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture(scope="module")
def wm():
    return mf.simulate(mf.presets.wang_ma(width=20, t_max=50.0, n_saves=40), progress=False)


@pytest.fixture(scope="module")
def luo():
    return mf.simulate(mf.presets.luo_1d(width=50, t_max=5.0, n_saves=30), progress=False)


def with_phases(ds, names=("I", "II", "III"), bounds=(0.5, 5.0)):
    ds = ds.copy()
    phase = np.searchsorted(np.asarray(bounds), ds.t.values, side="right")
    ds["phase"] = ("t", phase.astype(int), {"phase_names": json.dumps(list(names)),
                                            "phase_boundaries": json.dumps(list(bounds))})
    return ds


def texts(fig):
    return {t.get_text() for ax in fig.axes for t in ax.texts}


def test_import_meanfield_does_not_import_matplotlib():
    code = "import sys, meanfield, meanfield.plot; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_training_curves(wm, luo):
    fig = plot.training_curves(wm)
    assert len(fig.axes) == 3  # loss, accuracy, f_train
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_yscale() == "log"
    # one line per distinct training input: x_+ (4 copies) and x_-
    labels = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert len(labels) == 2 and "4" in labels[0]
    fig = plot.training_curves(luo)
    assert len(fig.axes) == 2  # squared loss: no accuracy
    assert len(fig.axes[-1].get_legend().get_texts()) == 4
    assert "gradient-flow time" in fig.axes[-1].get_xlabel()


def test_analytic_fit_is_plotted_against_iterations():
    ds = mf.simulate(mf.presets.luo_1d(width=40).replace(
        solver=mf.Solver(kind="analytic", iterations=3)), progress=False)
    assert plot.training_curves(ds).axes[-1].get_xlabel() == "iteration"
    assert plot.density_heatmap(ds).axes[0].get_xlabel() == "iteration"
    config = mf.presets.luo_1d(width=40)
    paths = {cli._default_out(config.replace(solver=s)) for s in
             (mf.Solver(), mf.Solver(kind="analytic"), mf.Solver(kind="euler", dt=0.1))}
    assert len(paths) == 3  # a flow run and an analytic fit of one preset never clash


def test_phase_bands(wm):
    fig = plot.training_curves(with_phases(wm))
    assert {"I", "II", "III"} <= texts(fig)
    assert not {"I", "II", "III"} & texts(plot.training_curves(with_phases(wm), phases=False))
    fig = plot.density_heatmap(with_phases(wm))
    assert {"I", "II", "III"} <= texts(fig)


def direct_density(theta, amp, a, bins=90):
    edges = np.linspace(-math.pi, math.pi, bins + 1)
    out = []
    for mask in (a >= 0, a < 0):
        h, _ = np.histogram(theta[mask], bins=edges, weights=amp[mask])
        out.append(h / (a.size * (2 * math.pi / bins)))
    return np.array(out)


def test_snapshot_density_is_a_numpy_histogram(wm, luo):
    # Wang & Ma: x_+ = e1 and x_- in the (e1, e2) plane; frozen marks, amplitude ||w||
    dens = plot.snapshot_density(wm, bins=90)
    assert dens.dims == ("t_snapshot", "sign", "angle") and dens.sizes["angle"] == 90
    for j in range(wm.sizes["t_snapshot"]):
        a, w = wm.snapshot_a.values[j], wm.snapshot_w.values[j]
        want = direct_density(np.arctan2(w[:, 1], w[:, 0]), np.linalg.norm(w, axis=1), a)
        np.testing.assert_allclose(dens.values[j], want, rtol=1e-12, atol=1e-12)
    counts = plot.snapshot_density(wm, weighted=False, bins=90)
    a, w = wm.snapshot_a.values[-1], wm.snapshot_w.values[-1]
    np.testing.assert_allclose(counts.values[-1], direct_density(
        np.arctan2(w[:, 1], w[:, 0]), np.ones_like(a), a))
    # integral over angles = share of neurons per sign
    np.testing.assert_allclose((counts.values * 2 * math.pi / 90).sum(-1), 0.5)
    # Luo 1-D with bias: angle atan2(b, w), amplitude |a| ||(w, b)||
    dens = plot.snapshot_density(luo, bins=90)
    a, w = luo.snapshot_a.values[-1].astype(float), luo.snapshot_w.values[-1].astype(float)
    want = direct_density(np.arctan2(w[:, 1], w[:, 0]), np.abs(a) * np.linalg.norm(w, axis=1), a)
    np.testing.assert_allclose(dens.values[-1], want, rtol=1e-6)


def without_recorded_density(ds):
    """The run as the snapshot-only schema had it (no per-save observables on sign/angle)."""
    drop = [v for v in ds.data_vars if {"sign", "angle"} & set(ds[v].dims)]
    ds = ds.drop_vars(drop)
    return ds.drop_vars([c for c in ("sign", "angle") if c in ds.coords])


def test_density_heatmap(wm, luo):
    for ds in (wm, luo):
        for weighted in (True, False):
            fig = plot.density_heatmap(without_recorded_density(ds), weighted=weighted)
            assert len(fig.axes) == 3  # two signs + colour bar
            assert fig.axes[0].get_xscale() == "log"
            assert "snapshots" in fig._suptitle.get_text()
    # a recorded density variable (dims t, sign, angle; signs +, -, all) is used when present
    ds = without_recorded_density(wm)
    values = np.random.default_rng(0).random((wm.sizes["t"], 3, 36))
    values /= values.sum(-1, keepdims=True)
    ds["density"] = (("t", "sign", "angle"), values)
    ds = ds.assign_coords(sign=["+", "-", "all"],
                          angle=np.linspace(-math.pi, math.pi, 37)[:-1] + math.pi / 36)
    fig = plot.density_heatmap(ds, normalise=False)
    assert len(fig.axes) == 3
    assert "recorded at every save time" in fig._suptitle.get_text()
    shown = fig.axes[1].collections[0].get_array()  # sign "-", angle x time, t = 0 dropped
    np.testing.assert_allclose(np.ma.filled(shown, 0).reshape(36, -1), values[1:, 1].T)


def test_snapshot_density_matches_recorded_density(wm, luo):
    for ds in (wm, luo):
        if "density" not in ds:
            pytest.skip("the runner records no density yet")
        mine = plot.snapshot_density(ds).values
        mine = mine / mine.sum(-1, keepdims=True)
        for j, t in enumerate(ds.t_snapshot.values):
            rec = ds.density.sel(t=t, sign=["+", "-"]).values
            np.testing.assert_allclose(mine[j], rec, atol=1e-6)


def test_wang_ma_references(wm):
    refs = plot._reference_angles(wm, None)
    delta = math.pi / 15
    assert refs["$x_+$"] == pytest.approx(0.0, abs=1e-12)
    assert refs["$x_-$"] == pytest.approx(delta)
    assert refs[r"$\mu$"] == pytest.approx(math.atan2(-math.sin(delta), 4 - math.cos(delta)))
    assert refs[r"$x_+^\perp$"] == pytest.approx(math.pi / 2)
    assert refs[r"$x_-^\perp$"] == pytest.approx(delta - math.pi / 2)
    assert plot._reference_angles(wm, {}) == {}


def test_neuron_rays_and_luo_scatter(wm, luo):
    fig = plot.neuron_rays(wm)
    assert len(fig.axes) == 3 and all(ax.name == "polar" for ax in fig.axes)
    assert len(plot.neuron_rays(wm, times=[0.0, 50.0], references={}).axes) == 2
    assert len(plot.neuron_rays(luo, references={"x": 0.3}).axes) == 3
    fig = plot.luo_scatter(luo)
    assert len(fig.axes) == 2
    # every neuron is a point at (angle of (w, b) in degrees, |a| ||(w, b)||)
    offsets = np.concatenate([c.get_offsets() for c in fig.axes[1].collections])
    a, w = luo.snapshot_a.values[-1].astype(float), luo.snapshot_w.values[-1].astype(float)
    assert offsets.shape == (a.size, 2)
    np.testing.assert_allclose(np.sort(offsets[:, 1]),
                               np.sort(np.abs(a) * np.linalg.norm(w, axis=1)), rtol=1e-5)
    assert len(plot.luo_scatter(luo, times=[0.0, 1.0, 5.0]).axes) == 3


def test_save_all(wm, luo, tmp_path):
    paths = plot.save_all(wm, tmp_path / "wm")
    assert [os.path.basename(p) for p in paths] == ["training_curves.png", "density.png",
                                                    "rays.png"]
    paths += plot.save_all(luo, tmp_path / "luo")
    assert os.path.basename(paths[-1]) == "luo_scatter.png"
    for p in paths:
        with open(p, "rb") as fh:
            assert fh.read(8) == PNG_MAGIC
        assert os.path.getsize(p) > 10_000


def test_cli_plot(luo, tmp_path, capsys):
    store = tmp_path / "run.zarr"
    mf.save_run(luo, store)
    assert cli.main(["plot", str(store)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "run_plots" / n) for n in
                       ("training_curves.png", "density.png", "rays.png", "luo_scatter.png")]
    assert all(os.path.getsize(p) > 0 for p in printed)
    assert cli._default_plot_dir("runs/a.zarr/") == "runs/a_plots"
    assert cli._default_plot_dir("runs/a") == "runs/a_plots"
    args = cli.make_parser().parse_args(["plot", str(store), "--out", "figs"])
    assert args.func is cli.cmd_plot and args.out == "figs"
    assert cli.main(["plot", str(tmp_path / "missing.zarr")]) == 2


def test_rays_at_phase_boundaries_dead_grey_one_log_scale(wm):
    t = wm.t_snapshot.values
    assert t.size >= 5
    ds = with_phases(wm, bounds=(t[2] * 1.1, t[3] / 1.1))
    fig = plot.neuron_rays(ds)
    titles = [ax.get_title() for ax in fig.axes]
    # the first and last snapshots and the snapshot nearest (in log t) each boundary
    assert len(fig.axes) == 4
    assert "start of II" in titles[1] and f"{t[2]:.4g}" in titles[1]
    assert "start of III" in titles[2] and f"{t[3]:.4g}" in titles[2]
    assert "final (in III)" in titles[3]
    # a boundary no snapshot resolves (no snapshot within a factor 3) gets no panel
    far = with_phases(wm, bounds=(math.sqrt(t[-2] * t[-1]),)) if t[-1] > 9 * t[-2] else None
    if far is not None:
        assert len(plot.neuron_rays(far).axes) == 2
    # one radial scale for every panel, logarithmic, in amplitude units (not normalised)
    limits = {tuple(ax.get_ylim()) for ax in fig.axes}
    assert len(limits) == 1 and all(ax.get_yscale() == "log" for ax in fig.axes)
    a, w = wm.snapshot_a.values[-1], wm.snapshot_w.values[-1]
    amp = np.linalg.norm(w, axis=1)  # frozen marks: ||w||
    lo, hi = limits.pop()
    assert lo < amp.min() and hi >= amp.max()
    # dead neurons (inactive on both inputs) are grey; alive counted in the title
    alive = np.any(w @ wm.x_unique.values.T > 0, axis=1)
    assert f"alive {alive.sum()} of {a.size}" in titles[-1]
    grey = [line for line in fig.axes[-1].lines if line.get_color() == "0.55"]
    assert grey and np.isfinite(grey[0].get_ydata()).sum() == 2 * (~alive).sum()
    # user-named times pick the nearest snapshot in log time
    assert len(plot.neuron_rays(ds, times=[1.0]).axes) == 1


def test_density_png_counts_neurons_and_labels_do_not_overlap(wm, tmp_path):
    fig = plot.density_heatmap(wm, weighted=False)
    assert "neuron counts" in fig._suptitle.get_text()
    assert "counts once" in fig.axes[-1].get_ylabel()  # the colour bar says what is shown
    ax = fig.axes[0]
    labels = [t for t in ax.texts if t.get_text() in {"$x_+$", "$x_-$", r"$\mu$"}]
    assert len(labels) == 3
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in labels]
    assert not any(b.overlaps(c) for i, b in enumerate(boxes) for c in boxes[i + 1:])
    plot.save_all(wm, tmp_path)
    assert (tmp_path / "density.png").exists()


def test_training_curves_name_inputs_and_draw_the_plateau(wm, luo):
    fig = plot.training_curves(wm)
    names = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert names[0].startswith("$x_+$") and names[1].startswith("$x_-$")
    plateau = [line for line in fig.axes[0].lines if "plateau" in str(line.get_label())]
    assert len(plateau) == 1 and plateau[0].get_ydata()[0] == pytest.approx(0.8)  # p = 4
    assert plot.theory_plateau(luo) is None


def test_bad_arguments_are_refused_naming_them(wm, luo, tmp_path):
    path = str(tmp_path / "run.zarr")
    for draw in (plot.training_curves, plot.density_heatmap, plot.neuron_rays,
                 plot.luo_scatter, lambda ds: plot.save_all(ds, tmp_path / "plots")):
        with pytest.raises(ValueError, match=r"of type str is not allowed; it must be an "
                                             r"xarray.Dataset .*meanfield.load_run"):
            draw(path)
    for draw, name in ((lambda: plot.density_heatmap(wm, weighted="no"), "weighted"),
                       (lambda: plot.density_heatmap(wm, normalise=1), "normalise"),
                       (lambda: plot.training_curves(wm, phases="no"), "phases"),
                       (lambda: plot.snapshot_density(wm, bins=0), "bins"),
                       (lambda: plot.neuron_rays(wm, times=[-1.0]), "times"),
                       (lambda: plot.neuron_rays(wm, times=[]), "times"),
                       (lambda: plot.luo_scatter(luo, times="late"), "times")):
        with pytest.raises(ValueError, match=rf"^{name}="):
            draw()
    with pytest.raises(ValueError, match="^run of type str"):
        mf.compare(path, wm)


def test_a_limit_is_titled_as_a_limit():
    limit = mf.infinite_width(mf.presets.wang_ma(t_max=50.0), kind="wang_ma")
    title = plot.training_curves(limit)._suptitle.get_text()
    assert title == "wang_ma: wang_ma_reduced limit (m=$\\infty$)" and "seed" not in title
