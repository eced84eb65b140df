"""Honest stop rules: detect runs that can no longer change, in the precision they run in.

Pure functions of a config or of recorded values, so that a driver can check them up front
(``check_initial_scales``) or between chunks (``all_neurons_dead``, ``loss_stalled``,
``step_collapsed``) and end the run with its own stop reason instead of integrating a frozen
state up to ``t_max``.
"""

from __future__ import annotations

import math

import numpy as np

from meanfield.config import SimulationConfig

COMPLETED_REASONS = ("t_max", "loss_tol", "iterations")  # a run that ran its course

STOP_REASONS = {  # a run ended early, by one of the rules below
    "all_dead": "every neuron is inactive on every training input: the flow cannot move them",
    "loss_stalled": "the loss has not changed to working precision over the last records",
    "step_collapsed": "the step size fell below the time resolution of the precision",
}


def initial_scales(config: SimulationConfig) -> dict[str, float]:
    """Typical magnitudes of the initial particles and of one neuron's output.

    Returns:
        ``{"a": |a|, "w": |w|, "output": |a| |w| max_i |x_i|}`` (typical values: the standard
        deviations of a Gaussian law, the radius and mark of the sphere law); ``inf`` where the
        parametrisation overflows a float64.
    """
    spec, data = config.model, config.data
    try:
        if spec.init.kind == "gaussian":
            sa, sw = spec.gaussian_scales(data.input_dim)
        elif spec.init.kind == "sphere":
            sa, sw = spec.init.output_scale, spec.init.scale
        else:  # balanced: |a| = |w|
            sa = sw = spec.init.scale
    except OverflowError:
        return {"a": math.inf, "w": math.inf, "output": math.inf}
    x_max = float(np.max(np.abs(data.augmented(data.x, spec.bias))))
    return {"a": float(sa), "w": float(sw), "output": float(sa) * float(sw) * x_max}


def init_underflows(config: SimulationConfig) -> str | None:
    """Why the initial particles of ``config`` cannot move in its precision, or None.

    The particles (or a neuron's output a relu(w.x) and with it the gradient) underflow when a
    typical magnitude is below the smallest normal number of the precision, and overflow
    above the largest; the loss then stays exactly constant up to ``t_max``.
    """
    info = np.finfo(np.dtype(config.precision))
    scales = initial_scales(config)
    trainable = config.model.trainable_output
    checked = {"w": scales["w"], "output": scales["output"]}
    if trainable:
        checked["a"] = scales["a"]
    for name, value in checked.items():
        if value == 0 or value < info.tiny or value > info.max:
            what = {"a": "output weights |a|", "w": "input weights |w|",
                    "output": "neuron outputs |a| |w| |x|"}[name]
            verdict = "underflow" if value < 1 else "overflow"
            fits = np.finfo(np.float64).tiny <= value <= np.finfo(np.float64).max
            advice = ("use precision='float64'" if config.precision == "float32" and fits
                      else "choose a larger initial scale" if verdict == "underflow"
                      else "choose a smaller initial scale")
            return (f"the initial {what} ~ {value:.3g} {verdict} {config.precision} (normal "
                    f"range {info.tiny:.3g} to {info.max:.3g}): the particles could not move; "
                    f"{advice}")
    return None


def check_initial_scales(config: SimulationConfig) -> None:
    """Raise ``ValueError`` (before any compute) if ``init_underflows(config)``."""
    reason = init_underflows(config)
    if reason is not None:
        raise ValueError(reason)


def all_neurons_dead(w, x_unique) -> bool:
    """Whether no neuron is active on any training input: relu(w_k . x_i) = 0 for all k, i.

    Args:
        w: input weights, shape (m, D) (padding neurons are zero, hence inactive).
        x_unique: distinct augmented training inputs, shape (n_u, D).
    """
    pre = np.asarray(x_unique, dtype=float) @ np.asarray(w, dtype=float).T
    return not bool(np.any(pre > 0))


def loss_stalled(loss, precision: str, *, window: int = 20) -> bool:
    """Whether the last ``window`` recorded losses are equal to working precision
    (|max - min| <= a few ulps of the loss), with at least ``window`` records."""
    loss = np.asarray(loss, dtype=float)[-window:]
    if loss.size < window or not np.all(np.isfinite(loss)):
        return False
    eps = float(np.finfo(np.dtype(precision)).eps)
    return float(np.ptp(loss)) <= 4 * eps * float(np.max(np.abs(loss)))


def step_collapsed(step_size: float, t: float, precision: str) -> bool:
    """Whether ``t + step_size == t`` in ``precision``: time no longer advances."""
    dtype = np.dtype(precision).type
    return bool(dtype(t) + dtype(step_size) == dtype(t))
