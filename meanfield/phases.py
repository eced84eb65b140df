"""Phase segmentation of a run from its recorded observables.

``label_phases(ds)`` returns a ``phase`` variable on ``t`` (integer labels) whose attrs hold the
phase names, the boundary times and any markers, using

* ``wang_ma`` rules (arXiv 2305.12467, docs/theory/wang-ma.md): end of I when every alive
  positive neuron is within cosine 0.99 of mu; end of II at the maximum of f(x_-), once f(x_-)
  has fallen after it (a run stopped while it still rises ends in Phase II); end of III when
  f(x_-) crosses 0 (100% accuracy); Phase IV markers at the activation-pattern changes after it;
* ``boursier`` rules (arXiv 2206.00939, docs/theory/boursier.md): alignment with D_+- (references
  ``D_plus``/``D_minus``), then the plateau / escape segments of the general detector;
* a ``general`` detector: plateaus of log-loss against log-time (|d log L / d log t| below a
  threshold) alternate with descents; condensation onset (effective number of directions below
  half its initial value) and activation-pattern changes are recorded as markers.

All crossing times are interpolated linearly in log t between save times.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr


def crossing_time(t: np.ndarray, values: np.ndarray, level: float, *, last: bool = False,
                  rising: bool = True) -> float | None:
    """Time (log-interpolated) where ``values`` crosses ``level`` upward (or downward)."""
    v = np.asarray(values, float) - level
    if not rising:
        v = -v
    idx = np.flatnonzero((v[1:] >= 0) & (v[:-1] < 0)) + 1
    idx = idx[t[idx - 1] > 0] if len(idx) else idx
    if not len(idx):
        return None
    k = idx[-1] if last else idx[0]
    lt = np.log(t[k - 1:k + 1])
    return float(np.exp(np.interp(0.0, v[k - 1:k + 1], lt)))


def _pattern_changes(ds: xr.Dataset, after: float = 0.0) -> list[float]:
    if "pattern_count" not in ds:
        return []
    counts = ds.pattern_count.sel(sign=["+", "-"]).values.reshape(ds.sizes["t"], -1)
    t = ds.t.values
    changed = np.flatnonzero(np.any(counts[1:] != counts[:-1], axis=1)) + 1
    return [float(t[k]) for k in changed if t[k] > after]


def _labels(t: np.ndarray, boundaries: list[float]) -> np.ndarray:
    return np.searchsorted(np.asarray(boundaries, float), t, side="left").astype(np.int16)


def _phase_variable(t, names, boundaries, markers, rules) -> xr.DataArray:
    return xr.DataArray(_labels(t, boundaries), dims=("t",), attrs={
        "long_name": "training phase", "units": "1", "rules": rules,
        "phase_names": json.dumps(names), "phase_boundaries": json.dumps(boundaries),
        "markers": json.dumps(markers)})


def wang_ma_phases(ds: xr.Dataset, *, cosine: float = 0.99) -> xr.DataArray:
    """Wang & Ma's phases I-IV (arXiv 2305.12467); needs the ``mu`` reference."""
    t = ds.t.values
    worst = ds.cosine_stats.sel(sign="+", reference="mu", stat="min").values
    end_one = crossing_time(t, np.nan_to_num(worst, nan=-1.0), cosine)
    negative = ds.y_train.values < 0
    f_minus = ds.f_train.values[:, negative].mean(axis=1)
    end_three = crossing_time(t, f_minus, 0.0, last=True, rising=False)
    search = t >= (end_one or 0.0)
    if end_three is not None:
        search &= t <= end_three
    end_two = None
    if search.any():
        peak = np.flatnonzero(search)[np.argmax(f_minus[search])]
        # a maximum only once f(x_-) has fallen after it: a run that stops while f(x_-) still
        # rises is still in Phase II
        if f_minus[peak + 1:].size and f_minus[peak + 1:].min() < f_minus[peak]:
            end_two = float(t[peak])
    boundaries = [b for b in (end_one, end_two, end_three) if b is not None]
    names = ["I: initial condensation", "II: saddle to plateau", "III: plateau and escape",
             "IV: pattern changes"][:len(boundaries) + 1]
    markers = {"pattern_changes": _pattern_changes(ds, after=end_three or np.inf)}
    return _phase_variable(t, names, boundaries, markers, "wang_ma")


def general_phases(ds: xr.Dataset, *, slope: float = 0.1, min_points: int = 3) -> xr.DataArray:
    """Plateau / descent segments of log L against log t, plus condensation and pattern markers.

    Args:
        slope: a save time is on a plateau when |d log L / d log t| < slope there.
        min_points: segments shorter than this many save times are merged into their neighbour.
    """
    t = ds.t.values
    keep = t > 0
    lt, ll = np.log(t[keep]), np.log(np.maximum(ds.loss.values[keep], 1e-300))
    rate = np.gradient(ll, lt) if len(lt) > 2 else np.zeros_like(lt)
    state = np.abs(rate) < slope
    # merge short runs of a state into the surrounding segment
    runs = np.flatnonzero(np.diff(state.astype(int))) + 1
    edges = np.r_[0, runs, len(state)]
    for a, b in zip(edges[:-1], edges[1:]):
        if b - a < min_points and a > 0:
            state[a:b] = state[a - 1]
    changes = np.flatnonzero(np.diff(state.astype(int))) + 1
    boundaries = [float(np.exp(0.5 * (lt[k - 1] + lt[k]))) for k in changes]
    segments = np.r_[state[0], state[changes]] if len(state) else np.array([True])
    names = [f"{i + 1}: {'plateau' if s else 'descent'}" for i, s in enumerate(segments)]
    markers = {"pattern_changes": _pattern_changes(ds)}
    if "effective_directions" in ds:
        eff = ds.effective_directions.sel(sign="all").values
        onset = crossing_time(t, -eff, -0.5 * eff[0]) if np.isfinite(eff[0]) else None
        markers["condensation_onset"] = onset
    return _phase_variable(t, names, boundaries, markers, "general")


def boursier_phases(ds: xr.Dataset, *, cosine: float = 0.99, slope: float = 0.1) -> xr.DataArray:
    """Boursier et al.'s alignment, plateaus and escapes (arXiv 2206.00939, docs/theory/boursier.md).

    Alignment ends when the best-aligned neuron of each sign has cosine ``cosine`` with its
    class direction (references ``D_plus`` and ``D_minus``); the plateaus (L0, then the slower
    class's share) and escapes are the plateau / descent segments of ``general_phases`` after it.
    """
    refs = list(ds.reference.values) if "reference" in ds.coords else []
    if "D_plus" not in refs or "D_minus" not in refs:
        raise ValueError("boursier rules need observe.references named 'D_plus' and 'D_minus' "
                         "(see meanfield.observables.boursier_references)")
    t = ds.t.values
    best = np.minimum(ds.cosine_stats.sel(sign="+", reference="D_plus", stat="max").values,
                      ds.cosine_stats.sel(sign="-", reference="D_minus", stat="max").values)
    t_align = crossing_time(t, np.nan_to_num(best, nan=-1.0), cosine)
    general = general_phases(ds, slope=slope)
    starts = boundaries(general)
    names, bounds = ["alignment"], [] if t_align is None else [t_align]
    plateaus = escapes = 0
    for name, start in starts.items():
        if t_align is not None and start < t_align and list(starts).index(name) + 1 < len(starts) \
                and list(starts.values())[list(starts).index(name) + 1] <= t_align:
            continue  # segment over before alignment ends
        if "plateau" in name:
            plateaus += 1
            label = f"plateau {plateaus}"
        else:
            escapes += 1
            label = f"escape {escapes}"
        if start > (t_align or 0.0):
            bounds.append(start)
            names.append(label)
        elif len(names) == 1:
            names.append(label)
    if t_align is None:
        names = names[1:]
    markers = json.loads(general.attrs["markers"])
    markers["alignment"] = t_align
    return _phase_variable(t, names, bounds, markers, "boursier")


RULES = {"wang_ma": wang_ma_phases, "boursier": boursier_phases, "general": general_phases}


def label_phases(ds: xr.Dataset, rules: str = "auto") -> xr.DataArray:
    """The ``phase`` variable of a run; ``auto`` picks the preset's rules, else ``general``."""
    if rules == "auto":
        refs = list(ds.reference.values) if "reference" in ds.coords else []
        if ds.attrs.get("preset") == "wang_ma" and "cosine_stats" in ds:
            rules = "wang_ma"
        elif "D_plus" in refs and "D_minus" in refs and "cosine_stats" in ds:
            rules = "boursier"
        else:
            rules = "general"
    if rules not in RULES:
        raise ValueError(f"rules={rules!r} is not allowed; choose one of {('auto', *RULES)}")
    if ds.sizes.get("t", 0) < 2:
        return _phase_variable(ds.t.values, ["1"], [], {}, rules)
    return RULES[rules](ds)


def boundaries(phase: xr.DataArray) -> dict[str, float]:
    """{phase name: start time} from a ``phase`` variable."""
    names = json.loads(phase.attrs["phase_names"])
    starts = [0.0] + json.loads(phase.attrs["phase_boundaries"])
    return dict(zip(names, starts))
