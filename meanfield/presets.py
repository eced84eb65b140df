"""Named experiments from the papers, as functions returning a ``SimulationConfig``.

* ``wang_ma``: the four-phase setting of Wang & Ma (arXiv 2305.12467, docs/theory/wang-ma.md).
* ``luo_1d``: the 1-D phase-diagram data of Luo et al. (arXiv 2007.07497, docs/theory/phase-diagram.md).
"""

from __future__ import annotations

import functools
import inspect
import math

import numpy as np

from meanfield.config import (MAX_SAVES, Observe, SaveAt, SimulationConfig, Solver,
                              check_precision_name)
from meanfield.particles._validate import (SEED_MAX, check_choice, check_finite, check_int,
                                           check_positive, check_tolerance, closest)
from meanfield.particles.integrators import DEFAULT_RTOL
from meanfield.particles.model import InitialLaw, ModelSpec, Parametrisation, TrainingData

# Checks of the preset arguments, run before the config is built so that an error names the
# argument as the user typed it (kappa, not init.scale; mse_tol, not loss_tol).
ARGUMENT_CHECKS = {
    "width": lambda v: check_int("width", v, minimum=1),
    "seed": lambda v: check_int("seed", v, minimum=0, maximum=SEED_MAX),
    "t_max": lambda v: check_positive("t_max", v),
    "rtol": lambda v: check_tolerance("rtol", v),
    "precision": lambda v: v is None or check_precision_name(v),
    "n_saves": lambda v: check_int("n_saves", v, minimum=1, maximum=MAX_SAVES),
    "kappa": lambda v: check_positive("kappa", v),
    "p": lambda v: check_int("p", v, minimum=1),
    "d": lambda v: check_int("d", v, minimum=2),
    "noisy": lambda v: check_choice("noisy", v, (True, False)),
    "gamma": lambda v: check_finite("gamma", v),
    "gamma_prime": lambda v: check_finite("gamma_prime", v),
    "mse_tol": lambda v: check_positive("mse_tol", v),
}


def _checked(preset):
    """Check a preset's arguments by the names of its signature (``ARGUMENT_CHECKS``); an
    unknown argument is an error suggesting the closest valid name."""
    signature = inspect.signature(preset)

    @functools.wraps(preset)
    def wrapper(**kwargs):
        names = list(signature.parameters)
        for key in kwargs:
            if key not in names:
                raise ValueError(f"unknown argument {key!r} of preset {preset.__name__!r}"
                                 f"{closest(key, names)}; arguments: {', '.join(names)}")
        bound = signature.bind(**kwargs)
        bound.apply_defaults()
        for name, value in bound.arguments.items():
            if name in ARGUMENT_CHECKS:
                ARGUMENT_CHECKS[name](value)
        return preset(**kwargs)

    return wrapper


# Precision each preset runs at by default, per JAX platform ("*": every other one), chosen
# from float32-against-float64 runs from the same initial particles
# (benchmarks/bench_precision.py, docs/precision.md): wang_ma in float32 keeps the float64
# survivor set exactly, the escape time to 3.3e-7, the final loss to 1.1e-7 and the step count
# (kappa = 0.1 and 0.01), so accelerators run it in float32 (TPUs have no float64, most GPUs
# run it at a fraction of float32 speed); CPUs keep float64, where it costs little at
# wang_ma's widths. luo_1d runs in float32 everywhere (the Luo slope moves by at most 5e-5).
PRECISION = {"wang_ma": {"*": "float32", "cpu": "float64"}, "luo_1d": {"*": "float32"}}


def default_precision(preset: str, platform: str | None = None) -> str:
    """The default precision of ``preset`` on ``platform`` (default: JAX's default backend,
    looked up only when the preset's entry depends on the platform; in a multi-process run
    call ``jax.distributed.initialize()`` before building configs, as JAX requires it before
    any backend is used)."""
    table = PRECISION[preset]
    if set(table) == {"*"}:
        return table["*"]
    if platform is None:
        import jax

        platform = jax.default_backend()
    return table.get(platform, table["*"])


def wang_ma_directions(*, d: int = 20, delta: float = math.pi / 15) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors x_+ = e_1 and x_- at angle delta from it in the (e_1, e_2) plane."""
    x_plus = np.zeros(d)
    x_plus[0] = 1.0
    x_minus = np.zeros(d)
    x_minus[:2] = math.cos(delta), math.sin(delta)
    return x_plus, x_minus


def wang_ma_observe(*, p: int, delta: float, d: int) -> Observe:
    """Angles in the data plane (angle 0 = x_+) and Wang & Ma's reference directions:
    mu ~ p x_+ - x_-, x_+, x_-, x_+perp = (x_- - cos D x_+)/sin D, x_-perp = (x_+ - cos D x_-)/sin D."""
    x_plus, x_minus = wang_ma_directions(d=d, delta=delta)
    refs = {
        "mu": p * x_plus - x_minus,
        "x_plus": x_plus,
        "x_minus": x_minus,
        "x_plus_perp": (x_minus - math.cos(delta) * x_plus) / math.sin(delta),
        "x_minus_perp": (x_plus - math.cos(delta) * x_minus) / math.sin(delta),
    }
    return Observe(plane=(tuple(x_plus), tuple(x_minus)),
                   references=tuple((k, tuple(v)) for k, v in refs.items()))


def _cone(center: np.ndarray, count: int, half_angle: float, rng) -> np.ndarray:
    """``count`` unit vectors within ``half_angle`` of ``center`` (deterministic for an rng)."""
    out = []
    for _ in range(count):
        v = rng.standard_normal(center.shape)
        v -= (v @ center) * center
        v /= np.linalg.norm(v)
        angle = half_angle * rng.uniform()
        out.append(math.cos(angle) * center + math.sin(angle) * v)
    return np.array(out)


def wang_ma_data(*, p: int = 4, delta: float = math.pi / 15, d: int = 20,
                 noisy: bool = False) -> TrainingData:
    """p copies of x_+ (label +1) and one x_- (label -1); noisy: 3p + 3 points in 3-degree cones."""
    if not isinstance(p, int) or p < 1:
        raise ValueError(f"p={p!r} must be an integer >= 1")
    if not 0 < delta < math.pi:
        raise ValueError(f"delta={delta!r} must be an angle in (0, pi) radians")
    if not isinstance(d, int) or d < 2:
        raise ValueError(f"d={d!r} must be an integer >= 2")
    x_plus, x_minus = wang_ma_directions(d=d, delta=delta)
    if noisy:
        rng = np.random.default_rng(0)
        xp = _cone(x_plus, 3 * p, math.radians(3), rng)
        xm = _cone(x_minus, 3, math.radians(3), rng)
    else:
        xp, xm = np.repeat(x_plus[None], p, axis=0), x_minus[None]
    x = np.concatenate([xp, xm])
    y = np.concatenate([np.ones(len(xp)), -np.ones(len(xm))])
    angles = np.linspace(-math.pi, math.pi, 73)[:-1]
    x_eval = np.zeros((len(angles), d))
    x_eval[:, 0], x_eval[:, 1] = np.cos(angles), np.sin(angles)
    return TrainingData(x=x, y=y, x_eval=x_eval, name=f"wang_ma(p={p}, delta={delta:.6g}, d={d}"
                        f"{', noisy' if noisy else ''})")


@_checked
def wang_ma(*, width: int = 100, seed: int = 0, kappa: float = 0.1, p: int = 4,
            delta: float = math.pi / 15, d: int = 20, t_max: float = 1500.0,
            noisy: bool = False, rtol: float = DEFAULT_RTOL, precision: str | None = None,
            n_saves: int = 400) -> SimulationConfig:
    """Wang & Ma's four-phase experiment (arXiv 2305.12467, docs/theory/wang-ma.md).

    f(x) = (1/m) sum_k s_k relu(w_k . x), s_k = +-1 frozen (alternating), w_k(0) = kappa u_k
    with u_k uniform on the unit sphere of R^d, exponential loss, no bias. Saves are
    log-spaced from kappa/1000 to t_max. Precision: ``default_precision("wang_ma")`` (float64
    on CPU, float32 on accelerators; see ``PRECISION``).
    """
    if kappa / 1000 >= t_max:
        raise ValueError(f"kappa={kappa} is not allowed with t_max={t_max}: the first save, at "
                         "kappa/1000, must come before t_max")
    model = ModelSpec(width=width, bias=False, output="frozen", loss="exponential",
                      init=InitialLaw(kind="sphere", scale=kappa, output_scale=1.0))
    return SimulationConfig(
        model=model, data=wang_ma_data(p=p, delta=delta, d=d, noisy=noisy),
        solver=Solver(kind="adaptive", rtol=rtol),
        save=SaveAt(t_min=kappa / 1000, n=n_saves),
        observe=wang_ma_observe(p=p, delta=delta, d=d), t_max=t_max, seed=seed,
        precision=precision or default_precision("wang_ma"), name="wang_ma")


def luo_1d_data() -> TrainingData:
    """x in {-1/2, -1/6, 1/6, 1/2}, y = x^2; f recorded on 201 points of [-1, 1] (2007.07497)."""
    x = np.array([-0.5, -1 / 6, 1 / 6, 0.5])
    return TrainingData(x=x[:, None], y=x ** 2, x_eval=np.linspace(-1, 1, 201)[:, None],
                        name="luo_1d")


@_checked
def luo_1d(*, gamma: float = 1.0, gamma_prime: float = 0.0, width: int = 1000, seed: int = 0,
           t_max: float = 1e6, mse_tol: float = 1e-6, rtol: float = DEFAULT_RTOL,
           precision: str | None = None, n_saves: int = 300) -> SimulationConfig:
    """Luo et al.'s 1-D experiment at exponents (gamma, gamma') (arXiv 2007.07497, docs/theory/phase-diagram.md).

    Squared loss, bias, ASI, Gaussian init with sigma_a = m^((1-gamma-gamma')/2),
    sigma_w = m^((1-gamma+gamma')/2). Stops when the mean squared error falls below
    ``mse_tol`` (the loss is MSE/2) or at t_max.
    """
    if width % 2:
        raise ValueError(f"width={width} is not allowed; luo_1d pairs its neurons "
                         "(antisymmetric initialisation): it must be even")
    model = ModelSpec(width=width, bias=True, output="trainable", loss="squared",
                      parametrisation=Parametrisation(kind="luo", gamma=gamma,
                                                      gamma_prime=gamma_prime),
                      init=InitialLaw(kind="gaussian", asi=True))
    return SimulationConfig(model=model, data=luo_1d_data(), solver=Solver(rtol=rtol),
                            save=SaveAt(n=n_saves), t_max=t_max, loss_tol=mse_tol / 2,
                            seed=seed, precision=precision or default_precision("luo_1d"),
                            name="luo_1d")


PRESETS = {"wang_ma": wang_ma, "luo_1d": luo_1d}


def get(name: str, **kwargs) -> SimulationConfig:
    """The preset ``name`` with keyword overrides (see ``PRESETS``)."""
    return PRESETS[_known(name)](**kwargs)


def arguments(name: str) -> list[str]:
    """Keyword arguments a preset accepts."""
    return list(defaults(name))


def defaults(name: str) -> dict:
    """Each keyword argument of a preset with its default value, in the preset's order."""
    return {key: parameter.default
            for key, parameter in inspect.signature(PRESETS[_known(name)]).parameters.items()}


def _known(name: str) -> str:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}{closest(name, PRESETS)}; choose one of "
                         f"{sorted(PRESETS)}")
    return name
