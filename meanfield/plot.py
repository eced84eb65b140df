"""Figures of a run Dataset (see ``meanfield.schema`` for the schema).

Every function takes the Dataset of one run and returns a ``matplotlib.figure.Figure``:

* ``training_curves(ds)``: loss (log-log), accuracy and f at each distinct training input
  against gradient-flow time t, with phase bands when the run carries a ``phase`` variable;
  inputs along a named reference are called by it (x_+, x_-), and a wang_ma run shows the
  theory plateau 2 sqrt(p)/(1+p).
* ``density_heatmap(ds)``: the directional density of the neurons over (log t, angle), one panel
  per sign of the output weight. Uses the ``density`` / ``density_count`` variables when present;
  otherwise computes it from the particle snapshots (``snapshot_density``). ``save_all`` draws
  neuron counts: with amplitude weights the never-moving dead neurons fade as alive ones grow.
* ``neuron_rays(ds)``: polar plots of every neuron as a ray (angle in the data plane, length =
  amplitude on one log scale for all panels) at the phase boundaries or chosen times; dead
  neurons grey with hollow tips; reference directions (Wang & Ma: x_+, x_-, mu, x_+perp, x_-perp).
* ``luo_scatter(ds)``: Luo et al.'s condensation plot (angle of w~ = (w, b), amplitude |a| ||w~||).
* ``save_all(ds, out_dir)``: the applicable PNGs.

Angles (docs/theory/model.md, docs/theory/phase-diagram.md, docs/theory/wang-ma.md): for 1-D inputs with bias, the angle of w~ = (w, b) is atan2(b, w).
Otherwise neurons are projected on the plane of the training inputs: e1 = the first distinct
(augmented) training input, e2 = Gram-Schmidt of the distinct input farthest from span(e1) (for two
distinct inputs: the first two), angle = atan2(w.e2, w.e1). Amplitude = |a| ||w|| for a trainable
output layer, ||w|| for frozen marks (``model.output`` in the run's config).

matplotlib is imported inside the functions, so ``import meanfield`` never imports it. Figures
built by ``save_all`` are off-screen (Agg canvas, no pyplot); the other functions use pyplot.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import json
import math
import os
import threading
import warnings
from collections.abc import Callable

import numpy as np
import xarray as xr

from meanfield.particles._validate import check_bool, check_int
from meanfield.schema import require

TIME_LABEL = "gradient-flow time $t$"


def _time_label(ds: xr.Dataset) -> str:
    """x-axis label: gradient-flow time, or the iteration count of an analytic fit."""
    return "iteration" if ds.attrs.get("time_axis") == "iteration" else TIME_LABEL
SIGN_COLOURS = {"+": "#c0392b", "-": "#2166ac"}
SIGN_NAMES = {"+": "$a_k > 0$", "-": "$a_k < 0$"}
DPI = 120
LABEL_SIZE = 8  # points: reference labels
SNAPSHOT_FACTOR = 3.0  # rays: a phase boundary is drawn at a snapshot within this time factor
REFERENCE_COLOURS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02",
                     "#a6761d", "#666666"]

_OFFSCREEN = contextvars.ContextVar("meanfield_plot_offscreen", default=False)


# ----------------------------------------------------------------------------- helpers

@contextlib.contextmanager
def _offscreen():
    token = _OFFSCREEN.set(True)
    try:
        yield
    finally:
        _OFFSCREEN.reset(token)


def _margins(width: float, height: float, *, left: float, right: float, top: float,
             bottom: float) -> dict:
    """subplots_adjust arguments for margins given in inches. Fixed margins instead of a
    layout engine: constrained layout measured every tick label of every axis before each
    draw, most of the time a figure took."""
    return {"left": left / width, "right": 1 - right / width, "top": 1 - top / height,
            "bottom": bottom / height}


def _figure(**kwargs):
    """A pyplot figure, or an off-screen Agg figure inside ``_offscreen()``."""
    if _OFFSCREEN.get():
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(**kwargs)
        FigureCanvasAgg(fig)
        return fig
    import matplotlib.pyplot as plt

    return plt.figure(**kwargs)


def _config(ds: xr.Dataset) -> dict:
    try:
        return json.loads(ds.attrs.get("config", "{}"))
    except (TypeError, ValueError):
        return {}


def _frozen_output(ds: xr.Dataset) -> bool:
    return _config(ds).get("model", {}).get("output") == "frozen"


def _has_bias(ds: xr.Dataset) -> bool:
    if "component" in ds.coords:
        return "b" in [str(c) for c in ds.component.values]
    return bool(_config(ds).get("model", {}).get("bias", False))


def _x_train(ds: xr.Dataset) -> np.ndarray:
    x = np.asarray(ds.x_train.values, dtype=float)
    return x[:, None] if x.ndim == 1 else x


def is_1d_with_bias(ds: xr.Dataset) -> bool:
    """True for 1-D inputs with a bias (the (w, b)-plane case of Luo et al.)."""
    return _x_train(ds).shape[1] == 1 and _has_bias(ds)


def distinct_inputs(ds: xr.Dataset) -> tuple[np.ndarray, list[np.ndarray]]:
    """Indices of the first occurrence of each distinct training input, and each one's members."""
    x = _x_train(ds)
    _, first, inverse = np.unique(x, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)
    inverse = np.asarray(inverse).reshape(-1)
    return first[order], [np.flatnonzero(inverse == k) for k in order]


def _records_density(ds: xr.Dataset) -> bool:
    return any(name in ds and "angle" in ds[name].dims for name in ("density", "density_count"))


def plane_basis(ds: xr.Dataset) -> np.ndarray:
    """(2, n_components) orthonormal rows spanning the plane in which angles are measured: the
    run's recorded ``angle_basis``, else the recorder's choice for the run's config
    (``meanfield.recording.angle_plane``), so every figure shares the recorded plane."""
    if "angle_basis" in ds:
        return np.asarray(ds.angle_basis.values, dtype=float)
    from meanfield.io import run_config
    from meanfield.recording import angle_plane

    config = run_config(ds)
    return angle_plane(config, config.data.unique_inputs(config.model.bias)[0])


def neuron_angles(ds: xr.Dataset, w: np.ndarray) -> np.ndarray:
    """Angles (radians, in (-pi, pi]) of input-weight vectors ``w`` (..., component) in the plane;
    NaN for a zero projection (``meanfield.observables.neuron_angles``)."""
    from meanfield.observables import neuron_angles as angles

    w = np.asarray(w, dtype=float)
    flat = np.asarray(angles(w.reshape(-1, w.shape[-1]), plane_basis(ds)))
    return flat.reshape(w.shape[:-1])


def neuron_amplitudes(ds: xr.Dataset, a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """|a| ||w|| (trainable output) or ||w|| (frozen marks)."""
    norm = np.linalg.norm(np.asarray(w, dtype=float), axis=-1)
    return norm if _frozen_output(ds) else np.abs(np.asarray(a, dtype=float)) * norm


def _snapshot(ds: xr.Dataset, index: int):
    """(a, w) of snapshot ``index`` as float arrays."""
    return (np.asarray(_at_snapshot(ds.snapshot_a, index), dtype=float),
            np.asarray(_at_snapshot(ds.snapshot_w, index), dtype=float))


def _at_snapshot(da: xr.DataArray, index: int) -> np.ndarray:
    """``da.isel(t_snapshot=index).values``; numpy indexing for data in memory, where a new
    xarray variable would import dask.array (most of the first figure of a fresh process)."""
    if isinstance(da.data, np.ndarray):
        return np.take(da.data, index, axis=da.get_axis_num("t_snapshot"))
    return da.isel(t_snapshot=index).values


def _has_snapshots(ds: xr.Dataset) -> bool:
    return "snapshot_w" in ds and ds.sizes.get("t_snapshot", 0) > 0


def angle_bin_edges(bins: int = 90) -> np.ndarray:
    """Edges (radians) of ``bins`` equal angle bins covering [-pi, pi]."""
    return np.linspace(-math.pi, math.pi, bins + 1)


def snapshot_density(ds: xr.Dataset, *, weighted: bool = True,
                     bins: int | None = None) -> xr.DataArray:
    """Directional density of the neurons at the snapshot times, per sign of a.

    density[t, s, theta] = (1/m) sum over neurons k with sign(a_k) = s (a_k = 0 counts as "+")
    and angle in the bin, of amplitude_k (``weighted``) or 1, divided by the bin width: a density
    per radian whose integral over angles is the sign's share of total amplitude (or of neurons).
    Angles in (-pi, pi] (-pi is mapped to pi); neurons with no projection on the plane are
    skipped. ``bins``: default the run's recorded ``angle`` coordinate size, else 90.
    """
    require(ds, ("snapshot_a", "snapshot_w"), "snapshot_density")
    check_bool("weighted", weighted)
    if bins is None:
        bins = ds.sizes["angle"] if _records_density(ds) else 90
    bins = check_int("bins", bins, minimum=1)
    edges = angle_bin_edges(bins)
    width = np.diff(edges)
    n_t = ds.sizes["t_snapshot"]
    out = np.zeros((n_t, 2, bins))
    for j in range(n_t):
        a, w = _snapshot(ds, j)
        theta = neuron_angles(ds, w)
        mass = neuron_amplitudes(ds, a, w) if weighted else np.ones_like(a)
        ok = np.isfinite(theta)
        for s, mask in enumerate((ok & (a >= 0), ok & (a < 0))):
            hist, _ = np.histogram(theta[mask], bins=edges, weights=mass[mask])
            out[j, s] = hist / (a.size * width)
    centres = 0.5 * (edges[1:] + edges[:-1])
    what = "amplitude" if weighted else "neuron count"
    return xr.DataArray(
        out, dims=("t_snapshot", "sign", "angle"),
        coords={"t_snapshot": ds.t_snapshot.values, "sign": ["+", "-"],
                "angle": xr.Variable(("angle",), centres, {"units": "rad",
                                                           "long_name": "angle in the data plane"})},
        attrs={"long_name": f"directional density ({what}-weighted)", "units": "1/rad",
               "bin_edges": edges.tolist()})


def _attr_list(value):
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return list(np.atleast_1d(value))


def phase_info(ds: xr.Dataset):
    """(names, boundaries) from the ``phase`` variable's attrs (or the Dataset's), else None."""
    if "phase" not in ds:
        return None
    attrs = {**ds.attrs, **ds["phase"].attrs}
    names = _attr_list(attrs.get("phase_names"))
    bounds = _attr_list(attrs.get("phase_boundaries"))
    if names is None:
        return None
    bounds = sorted(float(b) for b in (bounds or []) if np.isfinite(float(b)) and float(b) > 0)
    # band labels: the short name before ':' (e.g. "II"); narrow bands would overlap otherwise
    return [str(n).split(":")[0] for n in names], bounds


def _phase_bands(ds: xr.Dataset, t_lo: float, t_hi: float):
    """[(start, end, name)] bands covering [t_lo, t_hi] between the phase boundaries."""
    info = phase_info(ds)
    if info is None:
        return []
    names, bounds = info
    edges = [t_lo] + [b for b in bounds if t_lo < b < t_hi] + [t_hi]
    t = np.asarray(ds.t.values, dtype=float)
    phase = np.asarray(ds["phase"].values)
    bands = []
    for j, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        inside = np.flatnonzero((t >= lo) & (t <= hi) & (t > 0))
        if inside.size:  # name from the recorded phase in the middle of the band
            k = int(phase[inside[inside.size // 2]])
        else:
            k = j + sum(b <= t_lo for b in bounds)
        name = names[k] if 0 <= k < len(names) else ""
        bands.append((lo, hi, name))
    return bands


def _shade_phases(axes, bands, *, label_axis=None):
    """Alternating grey bands on every axis; phase names on top of ``label_axis``."""
    for ax in axes:
        for j, (lo, hi, _) in enumerate(bands):
            if j % 2:
                ax.axvspan(lo, hi, color="0.5", alpha=0.12, lw=0, zorder=0)
            if j:
                ax.axvline(lo, color="0.45", lw=0.7, ls=":", zorder=0.5)
    if label_axis is not None:
        for lo, hi, name in bands:
            label_axis.text(math.sqrt(lo * hi), 1.02, name, transform=label_axis.get_xaxis_transform(),
                            ha="center", va="bottom", fontsize=8, color="0.25", clip_on=False)


def _positive_time_range(t: np.ndarray) -> tuple[float, float]:
    t = np.asarray(t, dtype=float)
    pos = t[t > 0]
    if pos.size == 0:
        return 1e-3, 1.0
    lo, hi = float(pos.min()), float(pos.max())
    return (lo, hi) if hi > lo else (lo / 2, lo * 2)  # one positive time: a visible window


def _run_title(ds: xr.Dataset) -> str:
    preset = ds.attrs.get("preset", "run")
    cfg = _config(ds)
    extra = ""
    par = cfg.get("model", {}).get("parametrisation", {})
    if par.get("kind") == "luo":
        extra = f", $\\gamma$={par.get('gamma')}, $\\gamma'$={par.get('gamma_prime')}"
    limit = ds.attrs.get("limit")
    if limit:  # no particles, no seed: the kernel limit is the flow of width m's kernel
        width = cfg.get("model", {}).get("width")
        at = f"kernel of m={width}" if limit == "kernel" else "m=$\\infty$"
        return f"{preset}: {limit} limit ({at}{extra})"
    return f"{preset} (m={ds.attrs.get('width', '?')}, seed={ds.attrs.get('seed', '?')}{extra})"


# ----------------------------------------------------------------------------- references

PRETTY_REFERENCE_NAMES = {"mu": r"$\mu$", "x_plus": "$x_+$", "x_minus": "$x_-$",
                          "x_plus_perp": r"$x_+^\perp$", "x_minus_perp": r"$x_-^\perp$"}


def default_references(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """The run's reference directions (``observe.references`` of its config; the wang_ma preset
    names mu, x_+, x_-, x_+perp, x_-perp)."""
    refs = _config(ds).get("observe", {}).get("references") or []
    return {PRETTY_REFERENCE_NAMES.get(name, name): np.asarray(v, dtype=float) for name, v in refs}


def _reference_angles(ds: xr.Dataset, references) -> dict[str, float]:
    """Angles (radians) of the reference directions: vectors are projected, scalars are angles.

    Vectors of input length are augmented with a zero bias component when the model has one.
    """
    if references is None:
        references = default_references(ds)
    n_in = _x_train(ds).shape[1]
    out = {}
    for name, v in (references or {}).items():
        v = np.asarray(v, dtype=float)
        if v.ndim == 0:
            out[name] = float(v)
            continue
        if _has_bias(ds) and v.size == n_in:
            v = np.r_[v, 0.0]
        out[name] = float(neuron_angles(ds, v))
    return out


def _input_names(ds: xr.Dataset, indices) -> dict[int, str]:
    """{training input index: reference name} for inputs along a named reference direction
    (the wang_ma references x_+ and x_-), so every figure names the inputs alike."""
    refs = default_references(ds)
    x = _x_train(ds)
    out = {}
    for i in indices:
        xi = x[i] / (np.linalg.norm(x[i]) or 1.0)
        for name, v in refs.items():
            if v.size == xi.size and float(xi @ v) / (np.linalg.norm(v) or 1.0) > 1 - 1e-9:
                out[int(i)] = name
                break
    return out


def theory_plateau(ds: xr.Dataset) -> float | None:
    """Wang & Ma's plateau loss 2 sqrt(p) / (1 + p) (arXiv 2305.12467) for a noise-free
    wang_ma run, None for any other run (``meanfield.limits.wang_ma.plateau_loss``)."""
    if ds.attrs.get("preset") != "wang_ma" or "config" not in ds.attrs:
        return None
    from meanfield.limits.wang_ma import input_geometry, plateau_loss

    try:  # from the stored data: building the run's config imports the whole simulator
        p, _ = input_geometry(ds.x_train.values, ds.y_train.values)
    except ValueError:  # noisy data: no closed form
        return None
    return float(plateau_loss(p))


def _thin_log_ticks(axis, decades: float = 4) -> None:
    """No minor ticks on a log axis spanning more than ``decades`` decades: there they crowd
    the axis, and building a few hundred tick artists dominated the drawing time."""
    lo, hi = sorted(axis.get_view_interval())
    if lo > 0 and math.log10(hi / lo) > decades:
        from matplotlib.ticker import NullLocator

        axis.set_minor_locator(NullLocator())


# ----------------------------------------------------------------------------- figures

def training_curves(ds: xr.Dataset, *, phases: bool = True):
    """Loss (log-log), accuracy (if recorded) and f at each distinct training input against t.

    Args:
        ds: a run Dataset.
        phases: shade the phase bands and name them when the run has a ``phase`` variable.
    Returns:
        Figure with 2 or 3 stacked axes sharing the log time axis (t = 0 is not shown).
    """
    require(ds, ("loss", "f_train", "x_train"), "training_curves")
    check_bool("phases", phases)
    t = np.asarray(ds.t.values, dtype=float)
    keep = t > 0
    t = t[keep]
    has_acc = "accuracy" in ds
    n_panels = 3 if has_acc else 2
    height = 2.3 * n_panels + 0.9
    fig = _figure(figsize=(6.6, height))
    fig.subplots_adjust(**_margins(6.6, height, left=1.2, right=0.15, top=0.55, bottom=0.5),
                        hspace=0.08)
    axes = fig.subplots(n_panels, 1, sharex=True, squeeze=False)[:, 0]
    ax_loss, ax_f = axes[0], axes[-1]

    loss = np.asarray(ds.loss.values, dtype=float)[keep]
    ax_loss.loglog(t, loss, color="k", lw=1.4)
    ax_loss.set_ylabel(f"training loss\n({_config(ds).get('model', {}).get('loss', '')})")
    if ds.sizes["t"] and np.all(np.isfinite(loss)) and loss.size:
        ax_loss.axhline(float(ds.loss.values[0]), color="0.6", lw=0.8, ls="--",
                        label="loss at $t=0$")
        plateau = theory_plateau(ds)
        if plateau is not None:
            ax_loss.axhline(plateau, color="tab:purple", lw=1.0, ls=(0, (5, 3)),
                            label=r"plateau $2\sqrt{p}/(1+p)$ = " + f"{plateau:.3f} (theory)")
        ax_loss.legend(loc="lower left", fontsize=8, frameon=False)

    if has_acc:
        ax_acc = axes[1]
        ax_acc.semilogx(t, 100 * np.asarray(ds.accuracy.values, dtype=float)[keep], color="k",
                        lw=1.4, drawstyle="steps-post")
        ax_acc.set_ylabel("training accuracy (%)")
        ax_acc.set_ylim(-5, 105)

    first, members = distinct_inputs(ds)
    x, y = _x_train(ds), np.asarray(ds.y_train.values, dtype=float)
    f = np.asarray(ds.f_train.values, dtype=float)[keep]
    squared = _config(ds).get("model", {}).get("loss") == "squared"
    import matplotlib as mpl

    names = _input_names(ds, first)
    colours = mpl.colormaps["tab10" if len(first) <= 10 else "viridis"]
    for j, (i, group) in enumerate(zip(first, members)):
        c = colours(j % 10) if len(first) <= 10 else colours(j / max(len(first) - 1, 1))
        where = names.get(i) or (f"$x={x[i, 0]:.3g}$" if x.shape[1] == 1 else f"$x_{{{i}}}$")
        copies = f", $\\times${len(group)}" if len(group) > 1 else ""
        lw = max(3.0 - 0.6 * j, 1.2) if len(first) <= 4 else 1.4  # coinciding curves stay visible
        ax_f.semilogx(t, f[:, i], color=c, lw=lw, label=f"{where} ($y={y[i]:+.3g}${copies})")
        if squared:
            ax_f.axhline(y[i], color=c, lw=0.8, ls="--")
    ax_f.axhline(0.0, color="0.3", lw=0.6)
    ax_f.set_ylabel("network output $f(x_i)$")
    ncol = 1 if len(first) <= 5 else 2
    ax_f.legend(fontsize=8, ncol=ncol, frameon=False, loc="best",
                title="training input" + (" (dashed: target)" if squared else ""),
                title_fontsize=8)
    ax_f.set_xlabel(_time_label(ds))
    lo, hi = _positive_time_range(t)
    ax_f.set_xlim(lo, hi)
    for ax in axes:
        ax.grid(True, which="major", lw=0.3, alpha=0.5)
    _thin_log_ticks(ax_f.xaxis)  # shared: once for all panels
    if phases:
        bands = _phase_bands(ds, lo, hi)
        if bands:
            _shade_phases(axes, bands, label_axis=axes[0])
    fig.suptitle(_run_title(ds), fontsize=10)
    return fig


def name_of(weighted: bool) -> str:
    return "density" if weighted else "density_count"


def _density_source(ds: xr.Dataset, weighted: bool):
    """(DataArray on (time, sign, angle) in radians, time values, time dim name, from_snapshots)."""
    name = name_of(weighted)
    if name in ds:
        da = ds[name]
        angle = np.asarray(da.angle.values, dtype=float)
        if "deg" in str(da.angle.attrs.get("units", "")):
            da = da.assign_coords(angle=np.deg2rad(angle))
        return da.transpose("t", "sign", "angle"), np.asarray(da.t.values, float), "t", False
    if not _has_snapshots(ds):
        raise ValueError("the run has neither a density variable nor particle snapshots")
    da = snapshot_density(ds, weighted=weighted)
    return da, np.asarray(da.t_snapshot.values, float), "t_snapshot", True


def _log_edges(t: np.ndarray) -> np.ndarray:
    """Cell edges around positive times on a log axis (geometric midpoints)."""
    lt = np.log(t)
    if lt.size == 1:
        return np.exp([lt[0] - 0.5, lt[0] + 0.5])
    mid = 0.5 * (lt[1:] + lt[:-1])
    return np.exp(np.r_[lt[0] - (mid[0] - lt[0]), mid, lt[-1] + (lt[-1] - mid[-1])])


def _angle_label_axis(ax, *, degrees: bool = True):
    ax.set_ylim(-180, 180)
    ax.set_yticks(np.arange(-180, 181, 60))
    ax.set_ylabel("neuron angle in the data plane (deg)")


def density_heatmap(ds: xr.Dataset, *, weighted: bool = True, references=None,
                    normalise: bool = True):
    """Heat map of the directional density over (log t, angle), one panel per sign of a.

    Uses ``ds.density`` (amplitude-weighted) / ``ds.density_count`` when present, else computes
    it from the particle snapshots (``snapshot_density``; one column per snapshot time).

    Args:
        weighted: amplitude-weighted density (else neuron counts).
        references: {name: vector or angle in radians} drawn as horizontal lines; default: the
            Wang & Ma directions for a wang_ma run, none otherwise.
        normalise: divide each time column by that sign's total, so the colour shows where the
            mass is at each time (the total grows by orders of magnitude over a run).
    Returns:
        Figure with 2 image axes (sign +, sign -) and a colour bar.
    """
    recorded = isinstance(ds, xr.Dataset) and "density" in ds
    require(ds, ("density",) if recorded else ("snapshot_a", "snapshot_w"),
            "density_heatmap (a recorded density or particle snapshots)")
    check_bool("weighted", weighted)
    check_bool("normalise", normalise)
    from matplotlib.colors import LogNorm

    da, times, tdim, from_snapshots = _density_source(ds, weighted)
    values = np.asarray(da.values, dtype=float)
    keep = times > 0
    times, values = times[keep], values[keep]
    angle = np.asarray(da.angle.values, dtype=float)
    if "bin_edges" in da.attrs:
        a_edges = np.asarray(da.attrs["bin_edges"], dtype=float)
    else:
        step = np.diff(angle).mean() if angle.size > 1 else 2 * math.pi
        a_edges = np.r_[angle - step / 2, angle[-1] + step / 2]
    if normalise:
        total = (values * np.diff(a_edges)).sum(axis=-1, keepdims=True)
        values = np.divide(values, total, out=np.zeros_like(values), where=total > 0)
    positive = values[values > 0]
    vmax = float(positive.max()) if positive.size else 1.0
    vmin = max(float(positive.min()) if positive.size else 1e-3, vmax * 1e-4)
    norm = LogNorm(vmin=vmin, vmax=vmax)

    fig = _figure(figsize=(11, 4.4))
    fig.subplots_adjust(**_margins(11, 4.4, left=0.75, right=1.75, top=0.6, bottom=0.5),
                        wspace=0.16)
    axes = fig.subplots(1, 2, sharey=True)
    t_edges = _log_edges(times)
    signs = [str(s) for s in da.sign.values]
    refs = _reference_angles(ds, references)
    bands = _phase_bands(ds, t_edges[0], t_edges[-1])
    mesh = None
    # labels one text line apart: 360 degrees span about 3/4 of the figure height
    label_gap = 360 * 1.3 * LABEL_SIZE / (0.75 * 72 * fig.get_figheight())
    for ax, s in zip(axes, ["+", "-"]):
        if s not in signs:
            ax.set_visible(False)
            continue
        grid = np.ma.masked_less_equal(values[:, signs.index(s)].T, 0)
        mesh = ax.pcolormesh(t_edges, np.rad2deg(a_edges), grid, norm=norm, cmap="magma_r",
                             shading="flat", rasterized=True)
        ax.set_xscale("log")
        ax.set_xlim(t_edges[0], t_edges[-1])
        _thin_log_ticks(ax.xaxis)
        ax.set_facecolor("white")
        _angle_label_axis(ax)
        ax.set_xlabel(_time_label(ds))
        ax.set_title(f"{SIGN_NAMES[s]} neurons", fontsize=10, pad=14 if bands else 6)
        label_y = _spread([math.degrees(th) for th in refs.values()], gap=label_gap, lo=-180,
                          hi=180)
        for (name, th), c, ly in zip(refs.items(), REFERENCE_COLOURS, label_y):
            ax.axhline(math.degrees(th), color=c, lw=0.8, ls=(0, (4, 2)), alpha=0.9)
            ax.annotate(name, (1.0, ly), xycoords=("axes fraction", "data"), xytext=(3, 0),
                        textcoords="offset points", va="center", fontsize=LABEL_SIZE, color=c,
                        annotation_clip=False)
        for lo, _, _ in bands[1:]:
            ax.axvline(lo, color="tab:green", lw=1.0, ls="-", alpha=0.8)
        for lo, hi, name in bands:
            ax.text(math.sqrt(lo * hi), 1.0, name, transform=ax.get_xaxis_transform(), ha="center",
                    va="bottom", fontsize=7, color="tab:green")
        if from_snapshots:
            for tv in times:
                ax.axvline(tv, color="0.6", lw=0.4, ls=":", alpha=0.6)
    axes[1].set_ylabel("")
    what = "amplitude" if weighted else "neuron"
    if normalise and weighted:
        label = ("share of the sign's amplitude per radian\n"
                 "(never-moving dead neurons fade as alive ones grow)")
    elif normalise:
        label = "fraction of the sign's neurons per radian\n(every neuron counts once, dead or alive)"
    elif from_snapshots:
        label = f"{what} density (per radian, $1/m$ normalised)"
    else:
        label = da.attrs.get("long_name", name_of(weighted))
    if mesh is not None:
        right = axes[1].get_position()
        cax = fig.add_axes((right.x1 + 0.55 / 11, right.y0, 0.15 / 11, right.height))
        fig.colorbar(mesh, cax=cax, label=label)
    source = (f"from {len(times)} particle snapshots (dotted: snapshot times)" if from_snapshots
              else "recorded at every save time")
    shown = "amplitude-weighted" if weighted else "neuron counts"
    fig.suptitle(f"{_run_title(ds)}: directional density, {shown}, {source}", fontsize=10)
    return fig


def _spread(values, *, gap: float, lo: float, hi: float) -> list[float]:
    """Label positions near ``values`` at least ``gap`` apart (order kept), within [lo, hi]."""
    if not values:
        return []
    order = np.argsort(values)
    pos = np.asarray(values, dtype=float)[order]
    for _ in range(50):
        moved = False
        for k in range(1, pos.size):
            overlap = gap - (pos[k] - pos[k - 1])
            if overlap > 1e-9:
                pos[k - 1] -= overlap / 2
                pos[k] += overlap / 2
                moved = True
        pos = np.clip(pos, lo, hi)
        if not moved:
            break
    out = np.empty_like(pos)
    out[order] = pos
    return out.tolist()


def _checked_times(times) -> np.ndarray:
    """``times`` of a figure's panels as a 1-D float array: at least one finite time >= 0."""
    try:
        values = np.atleast_1d(np.asarray(times, dtype=float))
    except (TypeError, ValueError):
        values = np.array([np.nan])
    if values.ndim != 1 or not values.size or not np.all(np.isfinite(values) & (values >= 0)):
        raise ValueError(f"times={times!r} is not allowed; it must be one or more finite times "
                         ">= 0 (or None for the default panels)")
    return values


def _snapshot_indices(ds: xr.Dataset, times, default: str) -> list[int]:
    t = np.asarray(ds.t_snapshot.values, dtype=float)
    if times is None:
        n = t.size
        picks = [0, n // 2, n - 1] if default == "first_mid_last" else [0, n - 1]
        out = []
        for i in picks:
            if i not in out:
                out.append(i)
        return out
    return [int(np.argmin(np.abs(t - v))) for v in _checked_times(times)]


def _time_title(t: float) -> str:
    return "$t = 0$" if t == 0 else f"$t = {t:.4g}$"


def _nearest_in_log_time(t: np.ndarray, value: float) -> int:
    """Index of the snapshot time nearest ``value`` on a log axis (t = 0 only for value 0)."""
    if value <= 0 or not np.any(t > 0):
        return int(np.argmin(np.abs(t - value)))
    distance = np.where(t > 0, np.abs(np.log(np.where(t > 0, t, 1.0)) - math.log(value)), np.inf)
    return int(np.argmin(distance))


def _ray_panels(ds: xr.Dataset, times) -> list[tuple[int, str]]:
    """(snapshot index, caption) per panel: the user's times, else the first snapshot, the
    snapshot nearest each phase boundary and the last one (first / middle / last without
    phases). A boundary without a snapshot within a factor SNAPSHOT_FACTOR in time gets no
    panel of its own: the store's snapshots do not resolve it."""
    t = np.asarray(ds.t_snapshot.values, dtype=float)
    if times is not None:
        return [(_nearest_in_log_time(t, v), f"nearest snapshot to $t = {v:.4g}$")
                for v in _checked_times(times)]
    info = phase_info(ds)
    if info is None or not info[1]:
        return [(i, "") for i in _snapshot_indices(ds, None, "first_mid_last")]
    names, bounds = info
    panels = [(0, "initial")]
    for name, start in zip(names[1:], bounds):
        i = _nearest_in_log_time(t, start)
        if t[i] > 0 and abs(math.log(t[i] / start)) < math.log(SNAPSHOT_FACTOR):
            panels.append((i, f"start of {name} ($t = {start:.3g}$)"))
    last_phase = names[min(int(np.searchsorted(bounds, t[-1], side="left")), len(names) - 1)]
    panels.append((t.size - 1, f"final (in {last_phase})"))
    out = {}
    for i, caption in panels:  # one panel per snapshot: merge the captions
        out[i] = f"{out[i]}; {caption}" if i in out and caption not in out[i] else caption
    return sorted(out.items())


def _alive(ds: xr.Dataset, w: np.ndarray) -> np.ndarray:
    """(m,) bool: active (w . x > 0) on at least one distinct training input."""
    from meanfield.observables import alive_mask

    if "x_unique" in ds:
        x = np.asarray(ds.x_unique.values, dtype=float)
    else:
        x = _x_train(ds)[distinct_inputs(ds)[0]]
        x = np.c_[x, np.ones(len(x))] if _has_bias(ds) and x.shape[1] < w.shape[1] else x
    return np.asarray(alive_mask(w, x))


def neuron_rays(ds: xr.Dataset, times=None, *, references=None):
    """Polar plots of all neurons as rays at the phase boundaries (or at chosen times).

    Angle = angle in the data plane (module docstring), length = amplitude on one logarithmic
    radial scale shared by all panels (so growth and the never-moving dead neurons stay
    visible side by side). Alive neurons (active on some training input) are coloured by the
    sign of a; dead ones (inactive on every input) are grey with hollow tips. Reference
    directions are dashed labelled rays.

    Args:
        times: times to show (the nearest snapshot in log t is drawn); default: the first
            snapshot, the snapshot nearest each phase boundary of the run's ``phase`` variable,
            and the last one (first, middle and last snapshot for a run without phases).
        references: {name: vector (component space or input space) or angle in radians};
            default: x_+, x_-, mu, x_+perp, x_-perp for a wang_ma run, none otherwise; {} for none.
    Returns:
        Figure with one polar axis per chosen time.
    """
    require(ds, ("snapshot_a", "snapshot_w"), "neuron_rays")
    ref_angles = {name: th for name, th in _reference_angles(ds, references).items()
                  if np.isfinite(th)}  # a reference orthogonal to the plane has no angle
    panels = _ray_panels(ds, times)
    t_snap = np.asarray(ds.t_snapshot.values, dtype=float)
    drawn = []
    for i, _ in panels:
        a, w = _snapshot(ds, i)
        drawn.append((a, neuron_angles(ds, w), neuron_amplitudes(ds, a, w), _alive(ds, w)))
    amps = np.concatenate([d[2] for d in drawn])
    positive = amps[np.isfinite(amps) & (amps > 0)]
    r_max = float(positive.max()) * 1.15 if positive.size else 1.0
    # the origin a decade below the smallest amplitude: the smallest rays stay visible
    r_min = float(positive.min()) / 10 if positive.size else 0.1
    r_min = max(r_min, r_max * 1e-8)
    width = 3.2 * len(panels) + 1.8
    fig = _figure(figsize=(width, 4.3))
    fig.subplots_adjust(**_margins(width, 4.3, left=0.3, right=1.9, top=1.0, bottom=0.3),
                        wspace=0.35)
    n_alive = []
    for j, ((i, caption), (a, theta, amp, alive)) in enumerate(zip(panels, drawn)):
        ax = fig.add_subplot(1, len(panels), j + 1, projection="polar")
        ax.set_rscale("log")
        ax.set_rlim(r_min, r_max)
        _thin_log_ticks(ax.yaxis, decades=0)
        r = np.clip(amp, r_min, r_max)
        alpha = float(np.clip(20 / math.sqrt(max(a.size, 1)), 0.25, 0.8))
        groups = [("dead", ~alive, "0.55", 0.6, alpha * 0.7),
                  ("+", alive & (a >= 0), SIGN_COLOURS["+"], 1.0, alpha),
                  ("-", alive & (a < 0), SIGN_COLOURS["-"], 1.0, alpha)]
        for s, mask, colour, lw, al in groups:
            if not mask.any():
                continue
            th = np.repeat(theta[mask], 3)
            rr = np.full(th.size, r_min)
            rr[1::3] = r[mask]
            rr[2::3] = np.nan
            ax.plot(th, rr, color=colour, lw=lw, alpha=al, solid_capstyle="round", zorder=2)
            if s == "dead":
                ax.plot(theta[mask], r[mask], ls="none", marker="o", ms=3.5, mfc="none",
                        mec="0.45", mew=0.7, zorder=2.5)
        for (name, th), c in zip(ref_angles.items(), REFERENCE_COLOURS):
            ax.plot([th, th], [r_min, r_max], color=c, lw=1.1, ls=(0, (4, 2)), zorder=1,
                    label=name)
        ax.tick_params(axis="x", labelsize=7)
        ax.tick_params(axis="y", labelsize=6)
        ax.set_rlabel_position(100)
        n_alive.append(int(alive.sum()))
        ax.set_title(f"{_time_title(t_snap[i])}" + (f"\n{caption}" if caption else "")
                     + f"\nalive {n_alive[-1]} of {a.size}", fontsize=8.5, pad=10)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=SIGN_COLOURS["+"], lw=1.5, label=SIGN_NAMES["+"] + " alive"),
               Line2D([], [], color=SIGN_COLOURS["-"], lw=1.5, label=SIGN_NAMES["-"] + " alive"),
               Line2D([], [], color="0.55", lw=1.0, marker="o", mfc="none", mec="0.45", ms=4,
                      label="dead (inactive on\nevery training input)")]
    handles += [Line2D([], [], color=c, lw=1.1, ls=(0, (4, 2)), label=name)
                for name, c in zip(ref_angles, REFERENCE_COLOURS)]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    amp_name = "$\\|w_k\\|$" if _frozen_output(ds) else "$|a_k|\\,\\|\\tilde w_k\\|$"
    plane = ("angle of $\\tilde w=(w,b)$" if is_1d_with_bias(ds)
             else "angle in the plane of the training inputs")
    fig.suptitle(f"{_run_title(ds)}: neurons as rays\n({plane}; length {amp_name}, log scale "
                 "shared by all panels)", fontsize=9.5)
    return fig


def luo_scatter(ds: xr.Dataset, times=None):
    """Luo et al.'s condensation plot: each neuron at (angle of w~, amplitude |a| ||w~||).

    For 1-D inputs with bias the angle is atan2(b, w); otherwise the plane angle. One panel per
    chosen snapshot time (default: initial and final).
    """
    require(ds, ("snapshot_a", "snapshot_w", "x_train"), "luo_scatter")
    if not is_1d_with_bias(ds):
        raise ValueError("luo_scatter draws 1-D inputs with a bias (the (w, b) plane); this "
                         "dataset has other inputs: use neuron_rays")
    idx = _snapshot_indices(ds, times, "first_last")
    t_snap = np.asarray(ds.t_snapshot.values, dtype=float)
    fig = _figure(figsize=(4.6 * len(idx), 3.8))
    fig.subplots_adjust(**_margins(4.6 * len(idx), 3.8, left=0.75, right=0.2, top=0.55,
                                   bottom=0.55), wspace=0.25)
    axes = np.atleast_1d(fig.subplots(1, len(idx), squeeze=False)[0])
    size = float(np.clip(3000 / max(ds.sizes["neuron"], 1), 1.5, 12))
    for ax, i in zip(axes, idx):
        a, w = _snapshot(ds, i)
        theta = np.rad2deg(neuron_angles(ds, w))
        amp = neuron_amplitudes(ds, a, w)
        for s, mask in (("+", a >= 0), ("-", a < 0)):
            ax.scatter(theta[mask], amp[mask], s=size, color=SIGN_COLOURS[s], alpha=0.6, lw=0,
                       label=SIGN_NAMES[s], rasterized=True)
        ax.set_xlim(-180, 180)
        ax.set_xticks(np.arange(-180, 181, 90))
        ax.set_ylim(bottom=0)
        ax.set_xlabel(r"orientation $\arctan2(b, w)$ (deg)" if is_1d_with_bias(ds)
                      else "angle in the data plane (deg)")
        ax.set_title(_time_title(t_snap[i]), fontsize=10)
        ax.grid(True, lw=0.3, alpha=0.5)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    axes[0].set_ylabel("amplitude " + ("$\\|w_k\\|$" if _frozen_output(ds)
                                       else r"$|a_k|\,\|\tilde w_k\|$"))
    axes[0].legend(fontsize=8, markerscale=3, frameon=False, loc="upper left")
    fig.suptitle(f"{_run_title(ds)}: condensation", fontsize=10)
    return fig


# every figure save_all may write
FIGURE_NAMES = ("training_curves.png", "density.png", "rays.png", "luo_scatter.png")


def remove_figures(out_dir: str | os.PathLike) -> None:
    """Remove the figures ``save_all`` wrote to ``out_dir`` (only its file names), and the
    folder if nothing else is left in it: the figures of a run that was replaced."""
    out_dir = os.fspath(out_dir)
    for name in FIGURE_NAMES:
        path = os.path.join(out_dir, name)
        if os.path.isfile(path) and not os.path.islink(path):
            os.remove(path)
    with contextlib.suppress(OSError):  # absent, or holding something else: kept
        os.rmdir(out_dir)


# figures a run of its kind would have, left out for lack of data (said when skipped)
SKIP_NOTES = {"density.png": "the dataset has neither a density nor particle snapshots",
              "rays.png": "the dataset has no particle snapshots",
              "luo_scatter.png": "the dataset has no particle snapshots"}


# matplotlib modules the figures of ``save_all`` use
FIGURE_MODULES = ("matplotlib.figure", "matplotlib.backends.backend_agg", "matplotlib.colors",
                  "matplotlib.lines", "matplotlib.ticker")


def import_figure_modules() -> None:
    """Import the matplotlib modules of ``save_all``."""
    for name in FIGURE_MODULES:
        importlib.import_module(name)


def import_figure_modules_in_background() -> threading.Thread:
    """Start ``import_figure_modules`` in a background thread.

    For a caller that draws after a run: the run's XLA compilation does not hold the GIL, so
    the import (about 0.3 s) then costs no wall time. Not a daemon thread: a process that stops
    meanwhile waits for the import to finish rather than leaving it half done.
    """
    thread = threading.Thread(target=import_figure_modules, name="meanfield-import-figures")
    thread.start()
    return thread


def _figure_jobs(ds: xr.Dataset) -> list[tuple[str, Callable]]:
    """(file name, figure function of ds) of every figure ``save_all`` draws for ``ds``."""
    jobs = [("training_curves.png", training_curves)]
    if "density" in ds or _has_snapshots(ds):
        # neuron counts: with amplitude weights the never-moving dead neurons fade as the
        # alive ones grow, which reads as neurons disappearing
        counts = "density_count" in ds or _has_snapshots(ds)
        jobs.append(("density.png", lambda d: density_heatmap(d, weighted=not counts)))
    if _has_snapshots(ds):
        jobs.append(("rays.png", neuron_rays))
        if is_1d_with_bias(ds):
            jobs.append(("luo_scatter.png", luo_scatter))
    return jobs


def figure_names(ds: xr.Dataset) -> list[str]:
    """The PNG file names ``save_all`` writes for ``ds``."""
    return [name for name, _ in _figure_jobs(ds)]


def check_figure_folder(out_dir: str | os.PathLike, name: str = "out_dir") -> None:
    """Raise ``ValueError`` (naming the parameter ``name``) if ``out_dir`` is a zarr store or
    lies inside one: a file a store never writes would make it foreign, no longer replaceable."""
    from meanfield.store import enclosing_store

    store = enclosing_store(out_dir)
    if store is not None:
        raise ValueError(f"{name} {os.fspath(out_dir)} is inside the store {store}: figures go "
                         "beside a store, not into it")


def save_all(ds: xr.Dataset, out_dir: str | os.PathLike, *, dpi: int = DPI,
             names=None) -> list[str]:
    """Write the applicable PNGs of a run to ``out_dir`` (created) and return their paths
    (``names``: only those of these file names).

    training_curves.png always; density.png (neuron counts) when the run has a density variable
    or snapshots; rays.png (at the phase boundaries) with snapshots; luo_scatter.png with
    snapshots of 1-D inputs with bias. A figure the run's kind would have but its data lack is
    skipped with a warning. Figures are drawn off-screen (Agg, no pyplot).

    Raises:
        ValueError: ``out_dir`` is a zarr store or lies inside one (``check_figure_folder``).
    """
    require(ds, ("loss", "f_train", "x_train"), "save_all")
    out_dir = os.fspath(out_dir)
    check_figure_folder(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    jobs = _figure_jobs(ds)
    for name, needs in SKIP_NOTES.items():
        # luo_scatter.png is a figure of 1-D inputs with a bias only: not missed elsewhere
        if name not in dict(jobs) and (name != "luo_scatter.png" or is_1d_with_bias(ds)):
            warnings.warn(f"{name} skipped: {needs}", stacklevel=2)
    if names is not None:
        jobs = [(name, fn) for name, fn in jobs if name in set(names)]
    paths = []
    with _offscreen():
        for name, fn in jobs:
            fig = fn(ds)
            path = os.path.join(out_dir, name)
            fig.savefig(path, dpi=dpi)
            paths.append(path)
    return paths
