"""Distances between a finite-width run and its infinite-width limit, as a Dataset over ``t``.

``compare(run, limit)`` puts both on the run's save times (the limit is interpolated linearly
in log t where its times differ) and returns:

* ``f_sup_error``, ``f_l2_error``: sup and root-mean-square of f_run - f_limit on the
  evaluation grid (sample mean over eval points);
* ``loss_gap``: loss_run - loss_limit;
* where both have ``density`` (t, sign, angle): ``density_tv`` (total variation, 0..1),
  ``density_w1`` (circular Wasserstein-1 distance, radians) and ``density_mmd`` (maximum mean
  discrepancy with a Gaussian kernel of the circular distance, bandwidth ``mmd_bandwidth``),
  per sign, between the binned measures.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from meanfield.particles._validate import check_positive


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


def compare(run: xr.Dataset, limit: xr.Dataset, *, mmd_bandwidth: float = 0.2) -> xr.Dataset:
    """Distances between ``run`` and ``limit`` on the run's time axis (see module docstring)."""
    check_positive("mmd_bandwidth", mmd_bandwidth)
    t = run.t.values
    out = {}
    if "f_eval" in run and "f_eval" in limit:
        diff = run.f_eval - _on_times(limit.f_eval, t)
        out["f_sup_error"] = np.abs(diff).max("eval_point").assign_attrs(
            units="1", long_name="sup over the evaluation grid of |f_run - f_limit|")
        out["f_l2_error"] = np.sqrt((diff ** 2).mean("eval_point")).assign_attrs(
            units="1", long_name="RMS over the evaluation grid of f_run - f_limit")
    if "loss" in run and "loss" in limit:
        out["loss_gap"] = (run.loss - _on_times(limit.loss, t)).assign_attrs(
            units="1", long_name="loss_run - loss_limit")
    if "density" in run and "density" in limit:
        p = run.density.transpose("t", "sign", "angle").values
        q = _on_times(limit.density, t).transpose("t", "sign", "angle").values
        if p.shape[-1] != q.shape[-1]:
            raise ValueError(f"density bins differ: run {p.shape[-1]}, limit {q.shape[-1]}")
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
        raise ValueError("run and limit share no comparable variables (f_eval, loss, density)")
    coords = {"t": t}
    if "sign" in run.coords:
        coords["sign"] = run.sign.values
    return xr.Dataset(out, coords=coords, attrs={
        "run_config": run.attrs.get("config", ""), "limit": limit.attrs.get("limit", "unknown")})
