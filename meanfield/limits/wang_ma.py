"""Wang & Ma's reduced (infinite-width, kappa -> 0) model and closed forms (arXiv 2305.12467,
docs/theory/wang-ma.md).

Setting: f(x) = (1/m) sum_k s_k relu(w_k . x), frozen marks s_k = +-1, exponential loss averaged
over p copies of x_+ (label +1) and one x_- (label -1) at angle Delta, init w_k = kappa u_k.
With pi_+ = p/(1+p), pi_- = 1/(1+p), g_+ = pi_+ exp(-f_+), g_- = pi_- exp(f_-) every particle moves
with  dw/dt = s (g_+ 1[w.x_+ > 0] x_+ - g_- 1[w.x_- > 0] x_-).

After Phase I (t ~ kappa) the alive positives (fraction rho_+ of ALL neurons) are active on both
points and all carry the same velocity v = g_+ x_+ - g_- x_-, so their contribution to f(x_+)
grows at rho_+ (g_+ - g_- cos D) and to f(x_-) at rho_+ (g_+ cos D - g_-). The alive negatives
(fraction rho_-) are active on x_- and sit on the face w.x_+ = 0: off the face (inactive on x_+)
their velocity g_- x_- has x_+-component g_- cos D > 0, on the other side (active on x_+) it is
-g_+ x_+ + g_- x_- with x_+-component g_- cos D - g_+ < 0 while g_+ > g_- cos D, so they slide
(Filippov) with the projected velocity g_- (x_- - cos D x_+) and their (negative) contribution to
f(x_-) changes at -rho_- g_- sin^2 D. Hence, with P = the positives' part of f(x_-) and
N = minus the negatives' part (f_- = P - N):

    df_+/dt = rho_+ (g_+ - g_- cos D)
    dP/dt   = rho_+ (g_+ cos D - g_-)
    dN/dt   = rho_- g_- sin^2 D,                     f_+(0) = P(0) = N(0) = 0

which is the 2-D system of docs/theory/wang-ma.md for (f_+, f_-). It holds until the first activation-pattern change
of Phase IV, one of

* ``positives_off_x_minus``: P reaches 0 from above (the common positive direction crosses
  w.x_- = 0: positives switch off on x_-);
* ``negatives_on_x_plus``: g_+ - g_- cos D reaches 0 from above (the sliding condition fails:
  negatives switch back on on x_+).

The ODE is stopped at the first of these events and the event time is reported.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from meanfield.particles._validate import check_finite, check_times
from meanfield.schema import build

__all__ = [
    "alignment_time", "closed_forms", "loss_law", "measured_rhos", "plateau_loss", "reduced_model",
    "rho_minus", "rho_plus", "t_escape", "v0_norm", "wang_ma_limit",
]


def _pis(p: float) -> tuple[float, float]:
    return p / (1 + p), 1 / (1 + p)


def rho_plus() -> float:
    """Alive positives as a fraction of ALL neurons: half the marks, half the sphere (u.x_+ > 0)."""
    return 0.25


def rho_minus(p: float, delta: float) -> float:
    """Surviving negatives as a fraction of ALL neurons (arXiv 2305.12467, docs/theory/wang-ma.md).

    Survivors have u.x_- > 0 and u.n2 > 0, n2 = (p - cos D) x_- - (p cos D - 1) x_+; for u
    uniform on the sphere this wedge has probability [pi - arccos(x_- . n2 / |n2|)] / (2 pi),
    with x_- . n2 = p sin^2 D; half the neurons are negative, hence the 4 pi.
    """
    c, s = math.cos(delta), math.sin(delta)
    n2 = math.hypot(s * s, (p - c) * s)  # n2 = (s^2, (p - c) s) in the (x_+, x_+perp) frame
    return (math.pi - math.acos(p * s * s / n2)) / (4 * math.pi)


def v0_norm(p: float, delta: float) -> float:
    """|v0| = |pi_+ x_+ - pi_- x_-|, the Phase I velocity of the alive positives."""
    a, b = _pis(p)
    return math.sqrt(a * a + b * b - 2 * a * b * math.cos(delta))


def alignment_time(p: float, delta: float, kappa: float, cosine: float = 0.99) -> float:
    """Time when the worst-aligned alive positive reaches ``cosine`` with mu:
    kappa / (|v0| tan theta), theta = arccos(cosine) (11.58 kappa at p = 4, D = pi/15, 0.99)."""
    theta = math.acos(cosine)
    return kappa / (v0_norm(p, delta) * math.tan(theta))


def plateau_loss(p: float) -> float:
    """Phase II/III plateau of the loss, 2 sqrt(p) / (1 + p) (f_+ = f_- = log(p)/2)."""
    return 2 * math.sqrt(p) / (1 + p)


def t_escape(p: float, delta: float, rho: float) -> float:
    """Leading-order escape time (f(x_-) crosses 0): 2 (1+p)(1 - p^-1/2) / (rho Delta^2),
    rho = rho_+ + rho_-."""
    return 2 * (1 + p) * (1 - p ** -0.5) / (rho * delta ** 2)


def loss_law(p: float, delta: float, rho: float, t):
    """Phase III/IV loss law 2 / ((1+p)/sqrt(p) + rho Delta^2 t / 2), rho = rho_+ + rho_-."""
    return 2 / ((1 + p) / math.sqrt(p) + rho * delta ** 2 * np.asarray(t, float) / 2)


def closed_forms(p: float, delta: float, rho_p: float | None = None,
                 rho_m: float | None = None, kappa: float | None = None) -> dict:
    """All closed forms as a flat dict (rho's default to the formulas)."""
    rho_p = rho_plus() if rho_p is None else float(rho_p)
    rho_m = rho_minus(p, delta) if rho_m is None else float(rho_m)
    out = {"p": float(p), "delta": float(delta), "rho_plus": rho_p, "rho_minus": rho_m,
           "rho_plus_formula": rho_plus(), "rho_minus_formula": rho_minus(p, delta),
           "v0_norm": v0_norm(p, delta), "alignment_time_over_kappa": alignment_time(p, delta, 1.0),
           "plateau_loss": plateau_loss(p), "t_escape": t_escape(p, delta, rho_p + rho_m)}
    if kappa is not None:
        out["alignment_time"] = alignment_time(p, delta, kappa)
    return out


def _solve(p, delta, rho_p, rho_m, t_end, rtol=1e-10, atol=1e-12):
    from scipy.integrate import solve_ivp  # here: the closed forms (figures) need no scipy

    pi_p, pi_m = _pis(p)
    c, s2 = math.cos(delta), math.sin(delta) ** 2

    def gs(y):
        return pi_p * math.exp(-y[0]), pi_m * math.exp(y[1] - y[2])

    def rhs(_, y):
        gp, gm = gs(y)
        return [rho_p * (gp - gm * c), rho_p * (gp * c - gm), rho_m * gm * s2]

    def positives_off_x_minus(_, y):
        return y[1]

    def negatives_on_x_plus(_, y):
        gp, gm = gs(y)
        return gp - gm * c

    events = [positives_off_x_minus, negatives_on_x_plus]
    for e in events:
        e.terminal, e.direction = True, -1
    # P starts at 0 and rises (g_+ cos D > g_- at t = 0 iff p cos D > 1): start the event
    # search just after 0 so that the initial zero is not an event.
    if p * c <= 1:
        raise ValueError(f"p cos(delta) = {p * c:.4g} <= 1: no multi-phase picture (docs/theory/wang-ma.md)")
    sol = solve_ivp(rhs, (0.0, t_end), [0.0, 0.0, 0.0], method="DOP853", rtol=rtol, atol=atol,
                    dense_output=True, events=events)
    event_time, event = None, None
    for name, te in zip(("positives_off_x_minus", "negatives_on_x_plus"), sol.t_events):
        te = te[te > 0]
        if len(te) and (event_time is None or te[0] < event_time):
            event_time, event = float(te[0]), name
    return sol, event_time, event


def reduced_model(p: int, delta: float, rho_plus: float, rho_minus: float, t,
                  *, rtol: float = 1e-10, config=None) -> xr.Dataset:
    """The reduced ODE on the time grid ``t`` as a run-like Dataset.

    Args:
        p: number of copies of x_+. delta: angle between x_+ and x_- (radians).
        rho_plus, rho_minus: alive fractions (of ALL neurons) of positives / negatives.
        t: (T,) nondecreasing times >= 0.
        rtol: relative tolerance of the ODE solver.
        config: the SimulationConfig whose data are (p, delta) (``wang_ma_limit``): recorded in
            the attrs with its training data; None for the bare model.
    Returns:
        Dataset on ``t`` with ``loss`` (t), ``f_train`` (t, sample) in the preset's layout (p copies
        of x_+ then x_-), ``accuracy`` (t), ``f_plus``, ``f_minus``, ``f_minus_positive_part``
        (P), ``y_train`` (sample) (``meanfield.schema`` kind ``limit:wang_ma``). Times after the first Phase IV pattern change are NaN; attrs
        hold ``limit = "wang_ma_reduced"``, the closed forms, ``event`` / ``event_time`` (None /
        NaN if none before max t) and ``t_zero_crossing`` (f_- crosses 0, NaN if not reached).
    """
    t = np.asarray(t, float).reshape(-1)
    if np.any(t < 0) or np.any(np.diff(t) < 0):
        raise ValueError("t must be nondecreasing times >= 0")
    t_end = float(t.max()) if len(t) else 0.0
    sol, event_time, event = _solve(p, delta, float(rho_plus), float(rho_minus),
                                    max(t_end, 1e-12), rtol=rtol)
    valid = t <= (event_time if event_time is not None else np.inf)
    y = np.full((3, len(t)), np.nan)
    if valid.any():
        y[:, valid] = sol.sol(t[valid])
    f_plus, f_minus = y[0], y[1] - y[2]
    pi_p, pi_m = _pis(p)
    loss = pi_p * np.exp(-f_plus) + pi_m * np.exp(f_minus)
    accuracy = np.where(valid, pi_p * (f_plus > 0) + pi_m * (f_minus < 0), np.nan)
    f_train = np.concatenate([np.repeat(f_plus[:, None], p, axis=1), f_minus[:, None]], axis=1)
    # zero crossing of f_- (downwards, after its rise), by root finding on the dense output
    t_zero = math.nan
    t_dense = np.linspace(0.0, event_time if event_time is not None else t_end, 20001)[1:]
    fm = sol.sol(t_dense)[1] - sol.sol(t_dense)[2]
    k = np.flatnonzero((fm[:-1] > 0) & (fm[1:] <= 0))
    if len(k):
        from scipy.optimize import brentq
        k = int(k[0])
        t_zero = brentq(lambda s: float(sol.sol(s)[1] - sol.sol(s)[2]), t_dense[k], t_dense[k + 1],
                        xtol=1e-12, rtol=1e-14)
    attrs = closed_forms(p, delta, rho_plus, rho_minus)
    attrs.update({"limit": "wang_ma_reduced", "event": event or "none",
                  "event_time": event_time if event_time is not None else math.nan,
                  "t_zero_crossing": t_zero, "rtol": rtol, "loss_kind": "exponential",
                  "reference": "arXiv 2305.12467"})
    data = {"loss": loss, "f_train": f_train, "accuracy": accuracy, "f_plus": f_plus,
            "f_minus": f_minus, "f_minus_positive_part": y[1], "y_train": np.r_[np.ones(p), -1.0]}
    if config is not None:
        data.update(x_train=config.data.x, y_train=config.data.y)
    return build("limit:wang_ma", config, data, coords={"t": t, "sample": np.arange(p + 1)},
                 long_names={"loss": "training loss (reduced model)"}, attrs=attrs)


def data_geometry(config) -> tuple[int, float]:
    """(p, delta) of a (noise-free) wang_ma preset config."""
    return input_geometry(config.data.x, config.data.y)


def input_geometry(x, y) -> tuple[int, float]:
    """(p, delta) of noise-free wang_ma training data: p copies of x_+ (label > 0), one x_-
    (label < 0), delta the angle between them."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    xp, xm = x[y > 0], x[y < 0]
    if len(xm) != 1 or not np.allclose(xp, xp[:1]):
        raise ValueError("the reduced model needs the noise-free wang_ma data (p copies of x_+, one x_-)")
    c = float(xp[0] @ xm[0] / (np.linalg.norm(xp[0]) * np.linalg.norm(xm[0])))
    return len(xp), math.acos(max(-1.0, min(1.0, c)))


def _save_grid(config) -> np.ndarray:
    save = config.save
    if save.t is not None:  # the run's own times (t = 0 and t_max added)
        return save.schedule(config.t_max, math.nan)[0]
    t_min = save.t_min if save.t_min is not None else config.t_max * 1e-6
    return np.r_[0.0, save.log_times(t_min, config.t_max)]


def check_wang_ma_options(t=None, *, rho_plus: float | None = None,
                          rho_minus: float | None = None) -> None:
    """Raise a ValueError naming a ``wang_ma_limit`` option whose value is not allowed."""
    check_times("t", t)
    for name, value in (("rho_plus", rho_plus), ("rho_minus", rho_minus)):
        if value is not None:
            check_finite(name, value)
            if not 0 <= value <= 1:
                raise ValueError(f"{name}={value!r} is not allowed; it must be a fraction of "
                                 "the neurons in [0, 1]")


def wang_ma_limit(config, t=None, *, rho_plus: float | None = None,
                  rho_minus: float | None = None) -> xr.Dataset:
    """The reduced model for a wang_ma preset config: p and delta from its data, rho_+ = 1/4 and
    the wedge rho_- unless given (e.g. from ``measured_rhos``); ``t`` defaults to a log grid
    like the run's save times."""
    check_wang_ma_options(t, rho_plus=rho_plus, rho_minus=rho_minus)
    p, delta = data_geometry(config)
    rp = globals()["rho_plus"]() if rho_plus is None else rho_plus
    rm = globals()["rho_minus"](p, delta) if rho_minus is None else rho_minus
    ds = reduced_model(p, delta, rp, rm, _save_grid(config) if t is None else t, config=config)
    kappa = config.model.init.scale
    if kappa is not None:
        ds.attrs["alignment_time"] = alignment_time(p, delta, float(kappa))
    return ds


def measured_rhos(run_ds: xr.Dataset, t: float | None = None) -> tuple[float, float]:
    """(rho_+, rho_-) of a run from its ``alive_fraction`` at time ``t`` (nearest save), by
    default a tenth of the formula escape time (well inside Phase II/III, after Phase I)."""
    if t is None:
        p = int(np.sum(run_ds.y_train.values > 0))
        x = run_ds.x_train.values
        yv = run_ds.y_train.values
        xp, xm = x[yv > 0][0], x[yv < 0][0]
        delta = math.acos(float(np.clip(xp @ xm / np.linalg.norm(xp) / np.linalg.norm(xm), -1, 1)))
        t = 0.1 * t_escape(p, delta, rho_plus() + globals()["rho_minus"](p, delta))
    af = run_ds.alive_fraction.sel(t=t, method="nearest")
    return float(af.sel(sign="+")), float(af.sel(sign="-"))
