"""How the directional density condenses during each phase of a run, as a Dataset.

``phase_summary(ds)`` reads only recorded observables (``loss``, ``effective_directions``,
``peak_mass``, ``alive_fraction``, ``density`` and the ``phase`` variable; the phases are labelled
with ``meanfield.phases.label_phases`` when the run has none), so it works on any run store,
including stores written before the summary existed. Every number is the recorded observable at
the first or last save time of a phase; only the peak directions are derived: the bins that the
greedy top-k peak search of ``meanfield.observables.peak_mass`` picks on the recorded density
(arXiv 2007.07497 measures condensation by such peaks), each named by the nearest reference
direction of the run (``observe.references``, e.g. Wang & Ma's mu, x_+, x_+perp; arXiv
2305.12467, docs/theory/wang-ma.md).

Schema of ``phase_summary`` (dims ``phase``, ``end`` = ("start", "end"), ``sign`` = ("+", "-", "all"),
``peak`` = 0..peaks-1); a phase in which no save time falls has NaN values:

======================  =======================  =========================================
variable                dims                     meaning
======================  =======================  =========================================
boundary                phase, end               phase start / end time (interpolated)
time                    phase, end               save time at which the values are read
loss                    phase, end               recorded ``loss``
accuracy                phase, end               recorded ``accuracy`` (classification runs)
effective_directions    phase, end, sign         recorded ``effective_directions``
peak_mass               phase, end, sign         recorded ``peak_mass``
alive_fraction          phase, end, sign         recorded ``alive_fraction``
peak_angle              phase, end, sign, peak   angle (rad) of each peak bin of ``density``
peak_share              phase, end, sign, peak   density mass in the peak's window
nearest_reference       phase, end, sign, peak   reference direction nearest to the peak
reference_distance      phase, end, sign, peak   angle (rad) between peak and that reference
======================  =======================  =========================================

``phase_variables(ds)`` returns the ``phase`` variable together with the summary renamed for the
run Dataset itself (prefix ``phase_``, dimension ``phase_id``: the run's ``phase`` variable on
``t`` already holds the name ``phase``).
"""

from __future__ import annotations

import json
import math

import numpy as np
import xarray as xr

ENDS = ("start", "end")
SIGNS = ("+", "-", "all")  # as recorded (meanfield.recording.SIGNS)
PREFIX = "phase_"
RUN_DIM = "phase_id"


def peak_bins(p: np.ndarray, delta_bins: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Bins and window masses of the greedy top-k peaks of one density row on the circle.

    The same search as ``meanfield.observables.peak_mass`` (highest remaining bin, its window of
    +-delta_bins bins wrapping around removed, k times; ties to the lowest index), so the window
    masses sum to that observable times the row's total.

    Args:
        p: (n_bins,) nonnegative density. delta_bins: window half-width in bins. k: peaks.
    Returns:
        (bins (k,) int, -1 once no mass remains; masses (k,) float, 0 there).
    """
    remaining = np.array(p, dtype=float)
    n_bins = remaining.size
    idx = np.arange(n_bins)
    bins, masses = np.full(k, -1), np.zeros(k)
    for j in range(k):
        if not np.any(remaining > 0):
            break
        peak = int(np.argmax(remaining))
        d = np.abs(idx - peak) % n_bins
        window = np.minimum(d, n_bins - d) <= delta_bins
        bins[j], masses[j] = peak, remaining[window].sum()
        remaining[window] = 0.0
    return bins, masses


def _config(ds: xr.Dataset) -> dict:
    return json.loads(ds.attrs.get("config", "{}")).get("observe", {})


def reference_angles(ds: xr.Dataset) -> dict[str, float]:
    """{reference name: angle (rad) of its projection on the run's angle plane}; references
    with no projection on the plane are left out."""
    from meanfield.observables import neuron_angles

    refs = _config(ds).get("references") or []
    if not refs or "angle_basis" not in ds:
        return {}
    basis = np.asarray(ds.angle_basis.values, dtype=float)
    vectors = np.array([np.asarray(v, dtype=float) for _, v in refs])
    if vectors.shape[1] < basis.shape[1]:  # input-space vectors: zero bias component
        vectors = np.pad(vectors, ((0, 0), (0, basis.shape[1] - vectors.shape[1])))
    angles = np.asarray(neuron_angles(vectors, basis), dtype=float)
    return {name: float(a) for (name, _), a in zip(refs, angles) if np.isfinite(a)}


def _circular_distance(a, b):
    d = np.abs(np.asarray(a) - np.asarray(b)) % (2 * math.pi)
    return np.minimum(d, 2 * math.pi - d)


def _phase_rows(ds: xr.Dataset) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Phase names, (first, last) record index per phase (-1 for a phase without a save time)
    and the (start, end) time of each phase."""
    from meanfield.phases import boundaries, label_phases

    phase = ds["phase"] if "phase" in ds else label_phases(ds)
    labels = np.asarray(phase.values)
    starts = boundaries(phase)
    t = np.asarray(ds.t.values, dtype=float)
    edges = np.r_[list(starts.values()), t[-1] if t.size else 0.0]
    index = np.full((len(starts), 2), -1)
    for k in range(len(starts)):
        inside = np.flatnonzero(labels == k)
        if inside.size:
            index[k] = inside[0], inside[-1]
    return list(starts), index, np.stack([edges[:-1], edges[1:]], axis=1)


def _at(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """values[index] along the first axis; NaN where index is -1 (nothing recorded)."""
    values = np.asarray(values, dtype=float)
    if not values.shape[0]:  # a run interrupted before its first record
        return np.full(index.shape + values.shape[1:], np.nan)
    out = values[np.maximum(index, 0)]
    out[index < 0] = np.nan
    return out


def phase_summary(ds: xr.Dataset) -> xr.Dataset:
    """Per-phase condensation summary of a run (schema in the module docstring).

    Args:
        ds: a run Dataset (``meanfield.simulate`` or ``meanfield.open_run``) with at least
            ``loss``; the per-sign variables appear when the run recorded them.
    Returns:
        Dataset on (phase, end[, sign[, peak]]); coordinate ``phase`` holds the phase names.
    """
    names, index, bounds = _phase_rows(ds)
    out = {
        "boundary": (("phase", "end"), bounds, {"long_name": "phase start / end time"}),
        "time": (("phase", "end"), _at(ds.t.values, index),
                 {"long_name": "save time of the summarised record"}),
    }

    def at_ends(name, signed):
        da = ds[name].sel(sign=list(SIGNS)) if signed else ds[name]
        values = _at(da.values, index)
        dims = ("phase", "end", "sign") if signed else ("phase", "end")
        return dims, values, dict(ds[name].attrs)

    for name in ("loss", "accuracy"):
        if name in ds:
            out[name] = at_ends(name, False)
    for name in ("effective_directions", "peak_mass", "alive_fraction"):
        if name in ds:
            out[name] = at_ends(name, True)
    coords = {"phase": names, "end": list(ENDS), "sign": list(SIGNS)}
    if "density" in ds:
        out.update(_peaks(ds, index))
        coords["peak"] = np.arange(out["peak_angle"][1].shape[-1])
    summary = xr.Dataset(out, coords=coords)
    summary.attrs["long_name"] = "per-phase condensation summary"
    return summary


def _peaks(ds: xr.Dataset, index: np.ndarray) -> dict:
    observe = _config(ds)
    k = int(observe.get("peaks", 4))
    n_bins = ds.sizes["angle"]
    delta_bins = int(round(float(observe.get("peak_delta", 0.1)) / (2 * math.pi / n_bins)))
    density = np.nan_to_num(_at(ds.density.sel(sign=list(SIGNS)).values, index))
    centres = np.asarray(ds.angle.values, dtype=float)
    refs = reference_angles(ds)
    ref_names, ref_angles = list(refs), np.array(list(refs.values()))
    shape = density.shape[:-1] + (k,)
    angle, share = np.full(shape, np.nan), np.zeros(shape)
    nearest, distance = np.full(shape, "", dtype=object), np.full(shape, np.nan)
    for pos in np.ndindex(density.shape[:-1]):
        bins, masses = peak_bins(density[pos], delta_bins, k)
        total = density[pos].sum()
        for j in np.flatnonzero(bins >= 0):
            angle[pos + (j,)] = centres[bins[j]]
            share[pos + (j,)] = masses[j] / total
            if ref_names:
                d = _circular_distance(centres[bins[j]], ref_angles)
                nearest[pos + (j,)] = ref_names[int(np.argmin(d))]
                distance[pos + (j,)] = float(d.min())
    dims = ("phase", "end", "sign", "peak")
    return {
        "peak_angle": (dims, angle, {"units": "rad", "long_name": "angle of the peak bin"}),
        "peak_share": (dims, share, {"units": "1", "long_name": "density mass in the peak window"}),
        "nearest_reference": (dims, nearest.astype(str), {"long_name": "nearest reference"}),
        "reference_distance": (dims, distance, {"units": "rad",
                                                "long_name": "angle from the peak to that reference"}),
    }


def phase_variables(ds: xr.Dataset) -> xr.Dataset:
    """The ``phase`` variable (labelled when missing) and the summary, ready to merge into the
    run Dataset, also a stored one (``meanfield.store``): summary variables prefixed ``phase_``
    on the dimensions ``phase_id`` (= the labels of ``phase``), ``phase_end`` and ``phase_peak``;
    the phase names in ``phase_names``. No coordinate whose length or type changes between runs,
    so the variables can be replaced in a store; ``phase_summary`` gives the labelled form."""
    from meanfield.phases import label_phases

    phase = ds["phase"] if "phase" in ds else label_phases(ds)
    summary = phase_summary(ds.assign(phase=phase))
    names = np.asarray(summary.phase.values, dtype=str)
    summary = summary.drop_vars(["phase", "peak"], errors="ignore")
    summary = summary.rename({"phase": RUN_DIM, "end": PREFIX + "end", **{
        n: PREFIX + n for n in summary.data_vars}})
    if "peak" in summary.dims:
        summary = summary.rename_dims({"peak": PREFIX + "peak"})
    summary = summary.assign({PREFIX + "names": ((RUN_DIM,), names, {"long_name": "phase name"})})
    from meanfield.schema import PHASE_SUMMARY  # units and long names of the written schema

    for name, spec in PHASE_SUMMARY.items():
        if name in summary:
            summary[name].attrs.update(units=spec.units, long_name=spec.long_name)
    return summary.assign(phase=phase.drop_vars("t", errors="ignore"))


def with_phase_summary(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with its ``phase`` variable and per-phase summary (``phase_variables``)."""
    return ds.drop_vars([n for n in ("phase",) if n in ds]).merge(phase_variables(ds),
                                                                  join="exact")


def _reference_note(name: str, distance: float) -> str:
    """' (mu)' for a peak on a reference, ' (mu 18deg off)' near one, '' far from all."""
    if not name or not np.isfinite(distance) or distance > math.radians(45):
        return ""
    off = math.degrees(distance)
    return f" ({name})" if off < 5 else f" ({name} {off:.0f}deg off)"


def format_table(summary: xr.Dataset) -> str:
    """Plain-text table of a ``phase_summary``: one row per phase and sign; the peaks of at
    least 10% of the mass at the phase end, each with its reference when within 45 degrees."""
    has_peaks = "peak_angle" in summary
    header = (f"{'phase':26s} {'t start':>9s} {'t end':>9s} {'loss start':>11s} {'loss end':>10s}"
              f" {'sign':>4s} {'alive':>11s} {'eff. dirs':>13s} {'peak mass':>11s}  peaks at end")
    lines = [header]
    for name in summary.phase.values:
        row = summary.sel(phase=name)
        b, loss = row.boundary.values, row.loss.values if "loss" in row else [np.nan] * 2
        for j, s in enumerate(SIGNS[:2]):
            def pair(var, fmt):
                if var not in row:
                    return "-"
                v = row[var].sel(sign=s).values
                return f"{v[0]:{fmt}}->{v[1]:{fmt}}"
            peaks = "-"
            if has_peaks:
                last = row.sel(sign=s, end="end")
                peaks = ", ".join(
                    f"{math.degrees(a):+.0f}deg {share:.2f}" + _reference_note(ref, off)
                    for a, share, ref, off in zip(
                        last.peak_angle.values, last.peak_share.values,
                        last.nearest_reference.values, last.reference_distance.values)
                    if np.isfinite(a) and share >= 0.1) or "-"
            lead = (f"{str(name)[:26]:26s} {b[0]:9.4g} {b[1]:9.4g} {loss[0]:11.4g} {loss[1]:10.4g}"
                    if j == 0 else " " * 69)
            lines.append(f"{lead} {s:>4s} {pair('alive_fraction', '.3f'):>11s} "
                         f"{pair('effective_directions', '.2f'):>13s} "
                         f"{pair('peak_mass', '.2f'):>11s}  {peaks}")
    return "\n".join(lines)
