"""``infinite_width(config)``: the m = infinity counterpart of a finite-width config.

The regime decides the limit (docs/theory/limits.md):

* ``wang_ma``: frozen +-1 marks, sphere init, exponential loss, two distinct inputs: the reduced
  2-D ODE of arXiv 2305.12467 (``meanfield.limits.wang_ma``);
* ``mean_field``: balanced init, 1-D inputs with bias: the transport + reaction PDE
  (``meanfield.limits.mean_field``);
* ``kernel``: Gaussian init in the linear regime (gamma < 1, or gamma' > gamma - 1): the
  kernel gradient flow (``meanfield.limits.kernel``), for every loss with or without ASI
  (without: mean and variance over the Gaussian-process initial function, closed form for the
  squared loss, a Monte-Carlo estimate with its standard error for margin losses);
* ``mean_field_reference``: any m-independent initial law (critical regime, explicit sigmas,
  sphere/balanced in any d): a particle system from a Sobol quadrature of the law, refined
  over levels, reported with its measured error (an approximation, not exact;
  ``meanfield.limits.reference``);
* condensed regime (gamma > 1, gamma' < gamma - 1): no fixed-time limit exists; use
  ``meanfield.limits.condensed`` (extremal vectors, escape times growing like log m).
"""

from __future__ import annotations

import xarray as xr

KINDS = ("wang_ma", "mean_field", "kernel", "mean_field_reference")


def applicable_limits(config) -> dict[str, str]:
    """For each limit kind, ``"applies"`` or the reason it does not apply to ``config``."""
    model, data = config.model, config.data
    x_unique, _ = data.unique_inputs(model.bias)
    out = {}
    wang_ma = (model.output == "frozen" and model.init.kind == "sphere"
               and model.loss == "exponential" and not model.bias and x_unique.shape[0] == 2)
    out["wang_ma"] = "applies" if wang_ma else (
        "needs frozen +-1 marks, sphere init, exponential loss, no bias and two distinct inputs "
        "(the Wang & Ma setting)")
    mean_field = model.init.kind == "balanced" and model.bias and data.input_dim == 1
    out["mean_field"] = "applies" if mean_field else (
        "needs init.kind='balanced' and 1-D inputs with bias (the PDE on the circle of "
        "directions); other laws need the weighted-particle reference")
    if model.init.kind != "gaussian":
        out["kernel"] = "needs a Gaussian initial law"
    else:
        try:
            regime = model.parametrisation.regime(model.width, model.fan_in(data.input_dim))
        except ValueError as exc:
            regime = str(exc)
        out["kernel"] = "applies" if regime == "linear" else (
            f"the parametrisation is in the {regime} regime; the kernel limit holds in the linear "
            "regime (gamma < 1 or gamma' > gamma - 1)" + (
                ". Condensed regime: there is no fixed-time limit; see "
                "meanfield.limits.condensed for extremal vectors and log m escape times"
                if regime == "condensed" else ""))
    try:
        from meanfield.limits.reference import check_config

        check_config(config)
        out["mean_field_reference"] = "applies"
    except ValueError as exc:
        out["mean_field_reference"] = str(exc)
    return out


def infinite_width(config, *, kind: str = "auto", **options) -> xr.Dataset:
    """The infinite-width limit Dataset of ``config`` (same variable names as a run).

    Args:
        config: a SimulationConfig.
        kind: ``auto`` (the first applicable of wang_ma, mean_field, kernel) or one of them.
        options: passed to the limit solver (e.g. ``n_cells`` for the PDE, ``samples`` /
            ``seed`` for the kernel limit's Monte Carlo).
    Raises:
        ValueError: naming the applicable limits and why the others do not apply.
    """
    reasons = applicable_limits(config)
    if kind == "auto":
        kind = next((k for k in KINDS if reasons[k] == "applies"), None)
        if kind is None:
            raise ValueError("no infinite-width limit applies to this config:\n" + "\n".join(
                f"  {k}: {why}" for k, why in reasons.items()))
    elif kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not allowed; choose one of {('auto', *KINDS)}")
    elif reasons[kind] != "applies":
        raise ValueError(f"the {kind} limit does not apply: {reasons[kind]}")
    if kind == "wang_ma":
        from meanfield.limits.wang_ma import wang_ma_limit

        return wang_ma_limit(config, **options)
    if kind == "mean_field":
        from meanfield.limits.mean_field import mean_field_limit

        return mean_field_limit(config, **options)
    if kind == "mean_field_reference":
        from meanfield.limits.reference import mean_field_reference

        return mean_field_reference(config, **options)
    from meanfield.limits.kernel import kernel_limit

    return kernel_limit(config, **options)
