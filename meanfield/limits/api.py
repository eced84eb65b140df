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

import json

import xarray as xr

from meanfield.particles._validate import check_choice
from meanfield.schema import LIMIT_KINDS as KINDS

# What each limit's Dataset depends on besides the data, loss, initial law and times: the
# kernel limit's kernel is taken at the config's width; the mean-field PDE and the kernel limit
# take their default save times from the time scale of the config's drawn initial particles
# (width and seed). The reduced Wang & Ma model and the quadrature reference depend on neither.
DEPENDS_ON_WIDTH_AND_SEED = ("mean_field", "kernel")
# Limits whose dynamics are those of the config's width (the kernel flow of K_m): compared only
# with runs of that width.
DYNAMICS_AT_WIDTH = ("kernel",)


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
        "needs model.init.kind='balanced' and 1-D inputs with bias (the PDE on the circle of "
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


def resolve_kind(config, kind: str = "auto") -> str:
    """The limit kind ``infinite_width`` computes for ``config``: ``kind`` itself when it
    applies, for ``auto`` the first applicable of ``KINDS``.

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
        check_choice("kind", kind, ("auto", *KINDS))  # raises, with the closest kind
    elif reasons[kind] != "applies":
        raise ValueError(f"the {kind} limit does not apply: {reasons[kind]}")
    return kind


def store_name(config, kind: str, label: str = "") -> str:
    """File name of a limit store, from what the limit depends on: ``PRESET[LABEL]-limit-KIND.zarr``,
    with ``-mWIDTH-sSEED`` for the kinds in ``DEPENDS_ON_WIDTH_AND_SEED`` (``label``: e.g. the
    command line's non-default preset arguments, ``-gamma1.75``)."""
    from meanfield.store import check_store_label

    check_store_label(config.name)
    kind = resolve_kind(config, kind)
    tag = f"-m{config.model.width}-s{config.seed}" if kind in DEPENDS_ON_WIDTH_AND_SEED else ""
    return f"{config.name}{label}{tag}-limit-{kind}.zarr"


def _json_value(value):
    """JSON of a value json cannot write: arrays as lists, anything else as its text."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def options_set(kind: str, options: dict) -> dict:
    """The ``options`` of limit ``kind`` whose values differ from the solver's defaults (as
    JSON: a list, a tuple and an array of the same numbers are one value): the ones that make
    another limit, which the store records and its default name shows."""
    dump = lambda value: json.dumps(value, default=_json_value)
    defaults = option_defaults(kind)
    return {name: value for name, value in options.items()
            if name not in defaults or dump(value) != dump(defaults[name])}


def _options_json(kind: str, options: dict) -> str:
    return json.dumps(options_set(kind, options), sort_keys=True, default=_json_value)


def _stored_options_json(ds: xr.Dataset, kind: str) -> str:
    """The options a stored limit records, as ``_options_json`` writes them today (a store of
    an earlier version may also record options given at their default values)."""
    return _options_json(kind, json.loads(ds.attrs.get("limit_options", "{}")))


def _as_limit_of(config_json: str, kind: str) -> dict:
    """A config's JSON as the ``kind`` limit sees it: width and seed dropped unless it depends
    on them (``DEPENDS_ON_WIDTH_AND_SEED``)."""
    d = json.loads(config_json)
    if kind not in DEPENDS_ON_WIDTH_AND_SEED:
        d["seed"], d["model"]["width"] = None, None
    return d


def is_limit_of(ds: xr.Dataset, config, kind: str, options: dict | None = None) -> bool:
    """True when ``ds`` (written by ``infinite_width``) is the ``kind`` limit of ``config`` with
    these solver ``options``: equal configs, up to width and seed unless ``kind`` depends on
    them (``DEPENDS_ON_WIDTH_AND_SEED``)."""
    from meanfield.schema import kind_of

    return (kind_of(ds) == f"limit:{kind}" and "limit_of" in ds.attrs
            and _stored_options_json(ds, kind) == _options_json(kind, options or {})
            and _as_limit_of(ds.attrs["limit_of"], kind) == _as_limit_of(config.to_json(), kind))


def limit_differences(ds: xr.Dataset, config, kind: str, options: dict | None = None) -> str:
    """What keeps ``ds`` from being the ``kind`` limit of ``config`` with ``options``
    (``is_limit_of``), for a message: its kind, its options or the config fields that
    differ, stored and given; "" if nothing."""
    from meanfield.schema import kind_of
    from meanfield.store import config_changes

    if kind_of(ds) != f"limit:{kind}" or "limit_of" not in ds.attrs:
        return f"a store of kind {kind_of(ds)!r}, not 'limit:{kind}'"
    stored_options, given = _stored_options_json(ds, kind), _options_json(kind, options or {})
    parts = [] if stored_options == given else [f"options (stored {stored_options}, given "
                                                f"{given})"]
    changed = config_changes(json.dumps(_as_limit_of(ds.attrs["limit_of"], kind)),
                             json.dumps(_as_limit_of(config.to_json(), kind)))
    return "; ".join(parts + ([changed] if changed else []))


def infinite_width(config, *, kind: str = "auto", **options) -> xr.Dataset:
    """The infinite-width limit Dataset of ``config`` (same variable names as a run).

    Args:
        config: a SimulationConfig.
        kind: ``auto`` (the first applicable of ``KINDS``) or one of ``KINDS``.
        options: passed to the limit solver (e.g. ``n_cells`` for the PDE, ``samples`` /
            ``seed`` for the kernel limit's Monte Carlo).
    Returns:
        The limit's Dataset (``meanfield.schema`` kind ``limit:<kind>``); ``attrs["limit_of"]``
        is the JSON of ``config`` (a limit's own ``config`` attr may differ, e.g. the
        reference's finest quadrature width), ``attrs["limit_options"]`` that of the
        ``options`` given values other than their defaults (``options_set``).
    Raises:
        ValueError: naming the applicable limits and why the others do not apply.
    """
    kind = resolve_kind(config, kind)
    check_options(kind, options)
    return _solver(kind)(config, **options).assign_attrs(
        limit_of=config.to_json(), limit_options=_options_json(kind, options))


# each kind's module, its solver and the check of the solver's option values (imported when
# first needed: the command line lists the kinds without loading the solvers)
_SOLVERS = {"wang_ma": ("wang_ma", "wang_ma_limit", "check_wang_ma_options"),
            "mean_field": ("mean_field", "mean_field_limit", "check_mean_field_options"),
            "mean_field_reference": ("reference", "mean_field_reference",
                                     "check_reference_options"),
            "kernel": ("kernel", "kernel_limit", "check_kernel_options")}


def _solver(kind: str, check: bool = False):
    """The function that computes the limit ``kind`` (``check``: that checks its options)."""
    import importlib

    module_name, solve, check_options_of = _SOLVERS[kind]
    module = importlib.import_module(f"meanfield.limits.{module_name}")
    return getattr(module, check_options_of if check else solve)


def option_defaults(kind: str) -> dict:
    """The options the solver of limit ``kind`` takes, with their default values."""
    import inspect

    parameters = list(inspect.signature(_solver(kind)).parameters.values())[1:]  # the config
    return {p.name: p.default for p in parameters}


def check_options(kind: str, options: dict) -> None:
    """Raise a ValueError naming an option the solver of limit ``kind`` does not take, with
    its options and the closest one, or an option value it does not allow (before any compute
    and before a store is looked at)."""
    from meanfield.particles._validate import closest

    allowed = list(option_defaults(kind))
    for name in options:
        if name not in allowed:
            raise ValueError(f"option {name!r} is not one of the {kind} limit's options"
                             f"{closest(name, allowed)}: "
                             f"{', '.join(allowed) if allowed else 'it takes none'}")
    _solver(kind, check=True)(**options)
