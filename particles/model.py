"""Model specifications: parametrisations, initial laws, losses and training data.

Every network is written in the mean-field normalisation (arXiv 2007.07497, docs/theory/model.md)::

    f(x) = (1/m) * sum_k a_k * relu(w_k . x~),     x~ = (x, 1) with bias, x without.

Other parametrisations (NTK, standard, the general Luo form) are mapped exactly onto it by
rescaling both layers by sqrt(m / alpha); only the time axis changes (t = t_paper / alpha).
All configs are frozen, keyword-only dataclasses validated on construction.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np

from meanfield.particles._validate import (check_choice, check_finite, check_int, check_positive,
                                            named_arguments, normalise_int)

LOSSES = ("squared", "exponential", "logistic")
PARAMETRISATIONS = ("mean_field", "ntk", "standard", "luo")
INIT_LAWS = ("gaussian", "sphere", "balanced")
OUTPUT_LAYERS = ("trainable", "frozen")
SIGN_RULES = ("alternating", "random")
REGIMES = ("linear", "critical", "condensed")


@named_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class Parametrisation:
    """How the paper's network maps onto the mean-field normalisation (arXiv 2007.07497, docs/theory/phase-diagram.md).

    The Luo form is ``f = (1/alpha) sum_k a_k relu(w_k . x~)`` with ``a ~ N(0, beta1^2)`` and
    ``w ~ N(0, beta2^2 I)``. Scaling both layers by ``sqrt(m / alpha)`` gives the mean-field
    network with ``sigma_a = beta1 sqrt(m/alpha)``, ``sigma_w = beta2 sqrt(m/alpha)``; in
    exponent form ``sigma_a = m^((1-gamma-gamma')/2)``, ``sigma_w = m^((1-gamma+gamma')/2)``.

    Attributes:
        kind: ``mean_field`` (alpha = m, beta = 1), ``ntk`` (alpha = sqrt m, beta = 1),
            ``standard`` (LeCun: alpha = 1, beta1 = 1/sqrt m, beta2 = 1/sqrt fan_in) or ``luo``
            (give either ``alpha, beta1, beta2`` or ``gamma, gamma_prime``).
        alpha, beta1, beta2: Luo's constants (``kind="luo"`` only).
        gamma, gamma_prime: Luo's exponents (``kind="luo"`` only).
    """

    kind: Literal["mean_field", "ntk", "standard", "luo"] = "mean_field"
    alpha: float | None = None
    beta1: float | None = None
    beta2: float | None = None
    gamma: float | None = None
    gamma_prime: float | None = None

    def __post_init__(self):
        check_choice("model.parametrisation.kind", self.kind, PARAMETRISATIONS)
        constants = (self.alpha, self.beta1, self.beta2)
        exponents = (self.gamma, self.gamma_prime)
        if self.kind != "luo":
            if any(v is not None for v in constants + exponents):
                raise ValueError(
                    f"model.parametrisation.kind={self.kind!r} takes no alpha/beta1/beta2/gamma/"
                    "gamma_prime; use kind='luo' to set them"
                )
            return
        has_constants = all(v is not None for v in constants)
        has_exponents = all(v is not None for v in exponents)
        if has_constants == has_exponents or (
            not has_constants and any(v is not None for v in constants)
        ):
            raise ValueError(
                "model.parametrisation.kind='luo' needs exactly one of (alpha, beta1, beta2) or "
                "(gamma, gamma_prime), each complete"
            )
        if has_constants:
            for name in ("alpha", "beta1", "beta2"):
                check_positive(f"model.parametrisation.{name}", getattr(self, name))
        else:
            check_finite("model.parametrisation.gamma", self.gamma)
            check_finite("model.parametrisation.gamma_prime", self.gamma_prime)

    def scales(self, width: int, fan_in: int) -> tuple[float, float]:
        """Initial standard deviations (sigma_a, sigma_w) in the mean-field normalisation.

        Args:
            width: number of neurons m.
            fan_in: input dimension seen by a neuron (d, plus 1 with bias).
        """
        m = float(width)
        if self.kind == "luo" and self.gamma is not None:
            return (m ** ((1 - self.gamma - self.gamma_prime) / 2),
                    m ** ((1 - self.gamma + self.gamma_prime) / 2))
        alpha, beta1, beta2 = self.constants(width, fan_in)
        c = math.sqrt(m / alpha)
        return beta1 * c, beta2 * c

    def constants(self, width: int, fan_in: int) -> tuple[float, float, float]:
        """Luo's (alpha, beta1, beta2); exponent form uses alpha = 1 (a choice of time unit)."""
        m = float(width)
        if self.kind == "mean_field":
            return m, 1.0, 1.0
        if self.kind == "ntk":
            return math.sqrt(m), 1.0, 1.0
        if self.kind == "standard":
            return 1.0, 1.0 / math.sqrt(m), 1.0 / math.sqrt(fan_in)
        if self.alpha is not None:
            return self.alpha, self.beta1, self.beta2
        kappa, kappa_prime = m ** -self.gamma, m ** -self.gamma_prime
        return 1.0, math.sqrt(kappa * kappa_prime), math.sqrt(kappa / kappa_prime)

    def exponents(self, width: int, fan_in: int) -> tuple[float, float]:
        """(gamma, gamma_prime) = (-log kappa / log m, -log kappa' / log m) at this width."""
        if self.kind == "luo" and self.gamma is not None:
            return self.gamma, self.gamma_prime
        if width < 2:
            raise ValueError("width must be >= 2 to define the exponents gamma, gamma_prime")
        alpha, beta1, beta2 = self.constants(width, fan_in)
        log_m = math.log(width)
        return -math.log(beta1 * beta2 / alpha) / log_m, -math.log(beta1 / beta2) / log_m

    def regime(self, width: int, fan_in: int) -> str:
        """Luo's regime at these exponents: linear, critical or condensed (arXiv 2007.07497)."""
        check_int("width", width, minimum=1, maximum=2**63 - 1)
        check_int("fan_in", fan_in, minimum=1, maximum=2**63 - 1)
        gamma, gamma_prime = self.exponents(width, fan_in)
        return regime_of(gamma, gamma_prime)


def regime_of(gamma: float, gamma_prime: float, *, atol: float = 1e-9) -> str:
    """Phase-diagram regime of (gamma, gamma'): linear, critical or condensed (2007.07497)."""
    boundary = 1.0 if gamma_prime <= 0 else 1.0 + gamma_prime
    if abs(gamma - boundary) <= atol:
        return "critical"
    return "condensed" if gamma > boundary else "linear"


@named_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class InitialLaw:
    """Law of the initial particles (docs/theory/model.md).

    Attributes:
        kind: ``gaussian``: a ~ N(0, sigma_a^2), w ~ N(0, sigma_w^2 I) (sigmas default to the
            parametrisation's); ``sphere``: w uniform on the sphere of radius ``scale``,
            a = +-``output_scale``; ``balanced``: w ~ N(0, scale^2 I), a = +-|w|.
        scale: sphere radius (kappa) or balanced scale (lambda); unused for gaussian.
        sigma_a, sigma_w: explicit Gaussian standard deviations (override the parametrisation).
        output_scale: |a| for the sphere law.
        signs: sign rule of a for sphere/balanced laws: ``alternating`` (+ on even neurons: exact
            half split, prefix-coupled across widths) or ``random``.
        asi: antisymmetric initialisation: neurons come in pairs (a, w), (-a, w) so f_0 = 0.
    """

    kind: Literal["gaussian", "sphere", "balanced"] = "gaussian"
    scale: float | None = None
    sigma_a: float | None = None
    sigma_w: float | None = None
    output_scale: float = 1.0
    signs: Literal["alternating", "random"] = "alternating"
    asi: bool = False

    def __post_init__(self):
        check_choice("model.init.kind", self.kind, INIT_LAWS)
        check_choice("model.init.signs", self.signs, SIGN_RULES)
        check_choice("model.init.asi", self.asi, (True, False))
        check_positive("model.init.output_scale", self.output_scale)
        check_positive("model.init.sigma_a", self.sigma_a, allow_zero=True, allow_none=True)
        check_positive("model.init.sigma_w", self.sigma_w, allow_zero=True, allow_none=True)
        if self.kind in ("sphere", "balanced"):
            if self.scale is None:
                raise ValueError(f"model.init.scale is required for model.init.kind={self.kind!r} "
                                 "(a number > 0)")
            check_positive("model.init.scale", self.scale)
        elif self.scale is not None:
            raise ValueError("model.init.scale is only used by model.init.kind='sphere' or "
                             "'balanced'; set model.init.sigma_a/sigma_w for 'gaussian'")


@named_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A two-layer ReLU particle system in the mean-field normalisation (docs/theory/model.md).

    Attributes:
        width: number of neurons m (>= 1; even with ASI).
        bias: append a constant 1 to every input (the bias is the last weight).
        output: ``trainable`` (a and w are particles) or ``frozen`` (a is a fixed mark).
        loss: ``squared`` (f-y)^2/2, ``exponential`` exp(-y f), ``logistic`` log(1+exp(-y f)).
        parametrisation: source of the Gaussian init scales and of the regime.
        init: the initial law.
    """

    width: int
    bias: bool = True
    output: Literal["trainable", "frozen"] = "trainable"
    loss: Literal["squared", "exponential", "logistic"] = "squared"
    parametrisation: Parametrisation = dataclasses.field(default_factory=Parametrisation)
    init: InitialLaw = dataclasses.field(default_factory=InitialLaw)

    def __post_init__(self):
        normalise_int(self, "width", "model.width", minimum=1)
        check_choice("model.bias", self.bias, (True, False))
        check_choice("model.output", self.output, OUTPUT_LAYERS)
        check_choice("model.loss", self.loss, LOSSES)
        if not isinstance(self.parametrisation, Parametrisation):
            raise ValueError("model.parametrisation must be a meanfield.Parametrisation, got "
                             f"{type(self.parametrisation).__name__}")
        if not isinstance(self.init, InitialLaw):
            raise ValueError("model.init must be a meanfield.InitialLaw, got "
                             f"{type(self.init).__name__}")
        if self.init.asi and self.width % 2:
            raise ValueError(f"model.width={self.width} must be even with model.init.asi=True")

    @property
    def trainable_output(self) -> bool:
        return self.output == "trainable"

    def fan_in(self, input_dim: int) -> int:
        return input_dim + int(self.bias)

    def gaussian_scales(self, input_dim: int) -> tuple[float, float]:
        """(sigma_a, sigma_w) of the Gaussian law: explicit values win over the parametrisation."""
        sa, sw = self.parametrisation.scales(self.width, self.fan_in(input_dim))
        return (sa if self.init.sigma_a is None else self.init.sigma_a,
                sw if self.init.sigma_w is None else self.init.sigma_w)


def _as_float_array(name: str, value, ndim: int) -> np.ndarray:
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):  # text, None or ragged rows
        raise ValueError(f"{name} must be a rectangular array of numbers (one row per sample, "
                         f"all rows of equal length); got {type(value).__name__} "
                         f"{str(value)[:60]}") from None
    if arr.ndim == ndim - 1 and ndim == 2:
        arr = arr[:, None]
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf; all values must be finite")
    arr.setflags(write=False)
    return arr


def value_key(value):
    """A hashable key equal for equal values: arrays by dtype, shape and content, dicts by
    their sorted items, dataclasses by type and fields (for ``__eq__`` / ``__hash__`` of
    configs that hold arrays or dicts)."""
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, dict):
        return ("dict", tuple(sorted((k, value_key(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(value_key(v) for v in value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__qualname__,
                tuple((f.name, value_key(getattr(value, f.name))) for f in dataclasses.fields(value)))
    return value


@named_arguments
@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class TrainingData:
    """Training inputs, labels, sample weights and an evaluation grid.

    The risk is ``R = sum_i weights_i * l(f(x_i), y_i)`` (weights default to 1/n: the mean).

    Attributes:
        x: inputs, shape (n, d) (a 1-D array is read as d = 1).
        y: labels, shape (n,).
        weights: nonnegative sample weights, shape (n,), summing to 1 (default 1/n).
        x_eval: points where f is recorded, shape (n_eval, d) (default: x).
        name: a label recorded in the dataset.
    """

    x: np.ndarray
    y: np.ndarray
    weights: np.ndarray | None = None
    x_eval: np.ndarray | None = None
    name: str = "data"

    def __eq__(self, other):
        if not isinstance(other, TrainingData):
            return NotImplemented
        return value_key(self) == value_key(other)

    def __hash__(self):
        return hash(value_key(self))

    def __post_init__(self):
        if not isinstance(self.name, str):
            raise ValueError(f"data.name={self.name!r} is not allowed; it must be a string")
        x = _as_float_array("data.x", self.x, 2)
        y = _as_float_array("data.y", self.y, 1)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"data.y has {y.shape[0]} labels but data.x has {x.shape[0]} rows")
        if self.weights is None:
            weights = np.full(x.shape[0], 1.0 / x.shape[0])
        else:
            weights = _as_float_array("data.weights", self.weights, 1)
            if weights.shape != y.shape:
                raise ValueError(f"data.weights has shape {weights.shape}, expected {y.shape}")
            if np.any(weights < 0) or not math.isclose(weights.sum(), 1.0, rel_tol=1e-9):
                raise ValueError("data.weights must be nonnegative and sum to 1")
        weights.setflags(write=False)
        x_eval = x if self.x_eval is None else _as_float_array("data.x_eval", self.x_eval, 2)
        if x_eval.shape[1] != x.shape[1]:
            raise ValueError(f"data.x_eval has {x_eval.shape[1]} columns, data.x has {x.shape[1]}")
        for name, value in (("x", x), ("y", y), ("weights", weights), ("x_eval", x_eval)):
            object.__setattr__(self, name, value)

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def input_dim(self) -> int:
        return self.x.shape[1]

    def augmented(self, points: np.ndarray, bias: bool) -> np.ndarray:
        """Inputs x~ = (x, 1) with bias, x without; shape (k, d + bias)."""
        if not bias:
            return np.asarray(points)
        return np.concatenate([points, np.ones((points.shape[0], 1))], axis=1)

    def unique_inputs(self, bias: bool) -> tuple[np.ndarray, np.ndarray]:
        """Distinct augmented inputs and the index of each sample among them.

        Repeated inputs share one activation face, so the engine evaluates f once per distinct
        input and sums the residuals of the samples that share it.

        Returns:
            (x_unique (n_u, D), inverse (n,)) with x_unique[inverse] == augmented(x).
        """
        xu, inverse = np.unique(self.augmented(self.x, bias), axis=0, return_inverse=True)
        return xu, inverse.reshape(-1)

    def to_dict(self) -> dict:
        return {"name": self.name, "x": self.x.tolist(), "y": self.y.tolist(),
                "weights": self.weights.tolist(), "x_eval": self.x_eval.tolist()}
