"""Distances between a finite-width run and its infinite-width limit, as a Dataset over ``t``.

``compare(run, limit)`` first checks that both come from compatible configs (same data, loss,
output layer, initial law and parametrisation regime; ``config_differences``) and share a time
axis, keeps the run's save times inside the limit's time range (``clip``), puts the limit on
them (interpolated linearly in log t where its times differ) and returns every distance the two
datasets support (the ``not_computed`` attribute says which are left out, and why):

* ``f_sup_error``, ``f_l2_error``: sup and root-mean-square of f_run - f_limit on the
  evaluation grid (mean over eval points);
* ``f_train_sup_error``, ``f_train_l2_error``: the same at the training inputs;
* ``loss_gap``: loss_run - loss_limit;
* where both have ``density`` (t, sign, angle): ``density_tv`` (total variation, 0..1),
  ``density_w1`` (circular Wasserstein-1 distance, radians) and ``density_mmd`` (maximum mean
  discrepancy with a Gaussian kernel of the circular distance, bandwidth ``mmd_bandwidth``),
  per sign, between the binned measures.
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from meanfield.particles._validate import check_positive
from meanfield.schema import check_dataset, kind_of


def _on_times(limit: xr.DataArray, t: np.ndarray) -> xr.DataArray:
    """``limit`` at times ``t``: exact where the times coincide, else log-t interpolation."""
    lt = limit.t.values
    if lt.shape == t.shape and np.allclose(lt, t, rtol=1e-12, atol=0):
        return limit.assign_coords(t=t)
    log = lambda v: np.log(np.maximum(v, 1e-300))
    moved = limit.assign_coords(t=log(lt)).interp(t=log(t), kwargs={"fill_value": np.nan})
    return moved.assign_coords(t=t)


def circular_w1(p: np.ndarray, q: np.ndarray, bin_width: float) -> np.ndarray:
    """W1 distance on the circle between histograms p, q (..., n_bins) with equal total mass.

    W1 = min_c sum_i |F_i - G_i - c| * bin_width, attained at c = median(F - G) (cumulative
    sums F, G of the normalised histograms).
    """
    p = p / np.sum(p, axis=-1, keepdims=True)
    q = q / np.sum(q, axis=-1, keepdims=True)
    diff = np.cumsum(p - q, axis=-1)
    shift = np.median(diff, axis=-1, keepdims=True)
    return np.sum(np.abs(diff - shift), axis=-1) * bin_width


def circular_mmd(p: np.ndarray, q: np.ndarray, angles: np.ndarray, bandwidth: float) -> np.ndarray:
    """MMD between binned measures on the circle, Gaussian kernel of the circular distance."""
    d = np.abs(angles[:, None] - angles[None, :])
    d = np.minimum(d, 2 * np.pi - d)
    k = np.exp(-0.5 * (d / bandwidth) ** 2)
    e = p - q
    return np.sqrt(np.maximum(np.einsum("...i,ij,...j->...", e, k, e), 0.0))


def _refuse_kind(ds: xr.Dataset, role: str) -> None:
    check_dataset(ds, role)
    if kind_of(ds) == "sweep-summary":
        raise ValueError(f"the {role} is a sweep summary (kind 'sweep-summary'), not one "
                         "dataset: compare one run (e.g. simulate the sweep's config at a point)")


def _time_axis(ds: xr.Dataset) -> str:
    return ds.attrs.get("time_axis", "gradient-flow time")


def config_differences(run: xr.Dataset, limit: xr.Dataset) -> list[str]:
    """Fields on which the configs of ``run`` and ``limit`` disagree (width, seed, solver and
    save times may differ): ``data.x``, ``data.y``, ``data.weights``, ``data.x_eval``,
    ``model.loss``, ``model.bias``, ``model.output``, ``model.init`` and the parametrisation
    regime, and ``model.width`` for a limit whose dynamics are those of its width (the kernel
    limit, ``limits.api.DYNAMICS_AT_WIDTH``). Without a recorded config on either side, the
    stored data arrays are compared."""
    from meanfield.io import run_config
    from meanfield.limits.api import DYNAMICS_AT_WIDTH

    if "config" in run.attrs and "config" in limit.attrs:
        a, b = run_config(run), run_config(limit)
        fields = {f"data.{name}": (getattr(a.data, name), getattr(b.data, name))
                  for name in ("x", "y", "weights", "x_eval")}
        fields.update({f"model.{name}": (getattr(a.model, name), getattr(b.model, name))
                       for name in ("loss", "bias", "output", "init")})
        fields["model.parametrisation regime"] = (_regime(a), _regime(b))
        if any(kind_of(ds) == f"limit:{kind}" for ds in (run, limit)
               for kind in DYNAMICS_AT_WIDTH):
            fields["model.width"] = (a.model.width, b.model.width)
    else:
        fields = {f"data.{name}": (run[var].values, limit[var].values) for name, var in
                  (("x", "x_train"), ("y", "y_train"), ("x_eval", "x_eval"))
                  if var in run and var in limit}
    return [f"{name} (run {_short(va)}, limit {_short(vb)})"
            for name, (va, vb) in fields.items() if not _same(va, vb)]


def _regime(config) -> str:
    model = config.model
    try:
        return model.parametrisation.regime(model.width, model.fan_in(config.data.input_dim))
    except ValueError as exc:
        return str(exc)


def _same(a, b) -> bool:
    if isinstance(a, (str, bool, type(None))) or not hasattr(np.asarray(a), "shape") or \
            np.asarray(a).dtype == object:
        return a == b
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-6, atol=1e-12))


def _short(value) -> str:
    text = repr(value) if not hasattr(value, "shape") else f"array{np.shape(value)}"
    return text if len(text) < 80 else text[:77] + "..."


def _nan_note(out: dict, limit: xr.Dataset) -> str:
    """Which distances are NaN where the limit itself is NaN (e.g. the reduced model past its
    Phase IV event, ``attrs["event_time"]``), or "" if none is."""
    notes = [f"{name} at {int(np.isnan(v.values).any(axis=tuple(range(1, v.ndim))).sum())} "
             "times" for name, v in out.items() if np.isnan(v.values).any()]
    if not notes:
        return ""
    where = (f" (its {limit.attrs['event']} event at t={limit.attrs['event_time']:.6g})"
             if "event_time" in limit.attrs and np.isfinite(limit.attrs["event_time"]) else "")
    return "NaN where the limit is undefined" + where + ": " + ", ".join(notes)


def compare(run: xr.Dataset, limit: xr.Dataset, *, mmd_bandwidth: float = 0.2,
            clip: bool = True) -> xr.Dataset:
    """Distances between ``run`` and ``limit`` on the run's time axis (see module docstring).

    Args:
        run, limit: Datasets of any kind but a sweep summary, with the same data, loss, bias,
            output layer, initial law and parametrisation regime (``config_differences``) and
            the same time axis (an analytic fit counts iterations).
        mmd_bandwidth: kernel bandwidth of ``density_mmd`` (radians).
        clip: run times outside the limit's time range are dropped with a warning; False:
            such times are an error.
    Returns:
        Dataset over the kept run times with every distance both datasets support; the
        attribute ``not_computed`` lists each distance left out and why ("" if none), and
        ``nan_where_limit_undefined`` the distances that are NaN because the limit is (a
        reduced model past its event; also warned about).
    Raises:
        ValueError: a sweep summary, swapped arguments (a limit as ``run`` and a run as
            ``limit``), incompatible configs (naming the differing fields), different time
            axes, or no overlapping times.
    """
    check_positive("mmd_bandwidth", mmd_bandwidth)
    for ds, role in ((run, "run"), (limit, "limit")):
        _refuse_kind(ds, role)
        if "t" not in ds.coords:
            raise ValueError("run and limit share no comparable variables (f_eval, f_train, "
                             f"loss, density): the {role} has no time axis t")
    if kind_of(run).startswith("limit:") and not kind_of(limit).startswith("limit:"):
        raise ValueError(f"the run is a limit ({kind_of(run)}) and the limit a {kind_of(limit)}: "
                         "the arguments are swapped; call compare(run, limit)")
    if _time_axis(run) != _time_axis(limit):
        raise ValueError(f"the run's t is {_time_axis(run)} and the limit's is "
                         f"{_time_axis(limit)}: they cannot be put on one time axis")
    differ = config_differences(run, limit)
    if differ:
        raise ValueError("run and limit come from incompatible configs; they differ in "
                         + "; ".join(differ))
    if "config" not in run.attrs or "config" not in limit.attrs:
        warnings.warn("the run or the limit records no config: only their stored data arrays "
                      "were checked for compatibility", stacklevel=2)
    lo, hi = float(limit.t.min()), float(limit.t.max())
    t_all = run.t.values
    keep = (t_all >= lo - 1e-12 * max(abs(lo), 1.0)) & (t_all <= hi * (1 + 1e-9))
    if not keep.any():
        raise ValueError(f"the run's times [{t_all.min():.6g}, {t_all.max():.6g}] do not overlap "
                         f"the limit's [{lo:.6g}, {hi:.6g}]")
    if not keep.all():
        message = (f"{int((~keep).sum())} of {len(t_all)} run times lie outside the limit's "
                   f"time range [{lo:.6g}, {hi:.6g}] (run up to t={t_all.max():.6g})")
        if not clip:
            raise ValueError(message + "; pass clip=True to compare on the overlap")
        warnings.warn(message + "; comparing on the overlap only", stacklevel=2)
        run = run.isel(t=np.flatnonzero(keep))
    t = run.t.values
    out, absent = {}, {}

    def why_not(var, dim=None):
        for ds, role in ((run, "run"), (limit, "limit")):
            if var not in ds:
                return f"the {role} ({kind_of(ds)}) has no {var}"
        if dim is not None and run.sizes[dim] != limit.sizes[dim]:
            return f"{var} has {run.sizes[dim]} {dim}s in the run, {limit.sizes[dim]} in the limit"
        return None

    for var, dim, names in (("f_eval", "eval_point", ("f_sup_error", "f_l2_error")),
                            ("f_train", "sample", ("f_train_sup_error", "f_train_l2_error"))):
        reason = why_not(var, dim)
        if reason:
            absent.update(dict.fromkeys(names, reason))
            continue
        where = "the evaluation grid" if var == "f_eval" else "the training inputs"
        diff = run[var] - _on_times(limit[var], t)
        out[names[0]] = np.abs(diff).max(dim).assign_attrs(
            units="1", long_name=f"sup over {where} of |f_run - f_limit|")
        out[names[1]] = np.sqrt((diff ** 2).mean(dim)).assign_attrs(
            units="1", long_name=f"RMS over {where} of f_run - f_limit")
    reason = why_not("loss")
    if reason:
        absent["loss_gap"] = reason
    else:
        out["loss_gap"] = (run.loss - _on_times(limit.loss, t)).assign_attrs(
            units="1", long_name="loss_run - loss_limit")
    density = ("density_tv", "density_w1", "density_mmd")
    reason = why_not("density", "angle")
    if reason:
        absent.update(dict.fromkeys(density, reason))
    else:
        p = run.density.transpose("t", "sign", "angle").values
        q = _on_times(limit.density, t).transpose("t", "sign", "angle").values
        angles = run.angle.values
        width = 2 * np.pi / len(angles)
        dims = ("t", "sign")
        with np.errstate(invalid="ignore", divide="ignore"):
            out["density_tv"] = xr.DataArray(0.5 * np.abs(p - q).sum(-1), dims=dims, attrs={
                "units": "1", "long_name": "total-variation distance of directional densities"})
            out["density_w1"] = xr.DataArray(circular_w1(p, q, width), dims=dims, attrs={
                "units": "rad", "long_name": "circular Wasserstein-1 distance of directional densities"})
            out["density_mmd"] = xr.DataArray(circular_mmd(p, q, angles, mmd_bandwidth), dims=dims,
                                              attrs={"units": "1", "long_name":
                                                     f"MMD (Gaussian kernel, {mmd_bandwidth} rad)"})
    if not out:
        raise ValueError("run and limit share no comparable variables (f_eval, f_train, loss, "
                         "density): " + "; ".join(f"{k}: {v}" for k, v in absent.items()))
    nan_note = _nan_note(out, limit)
    if nan_note:
        warnings.warn(nan_note, stacklevel=2)
    coords = {"t": t}
    if "density_tv" in out:
        coords["sign"] = run.sign.values
    return xr.Dataset(out, coords=coords, attrs={
        "run_config": run.attrs.get("config", ""), "limit": limit.attrs.get("limit", "unknown"),
        "run_kind": kind_of(run), "limit_kind": kind_of(limit),
        "not_computed": "; ".join(f"{k}: {v}" for k, v in absent.items()),
        "nan_where_limit_undefined": nan_note})
