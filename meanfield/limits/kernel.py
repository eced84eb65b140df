"""Kernel (linear-regime) limit of the particle system (docs/theory/limits.md).

Derivation of the tangent kernel in the mean-field normalisation
------------------------------------------------------------------
The network is ``f(x) = (1/m) sum_k a_k relu(w_k . x~)`` and the flow is
``d theta_k/dt = -m grad_{theta_k} R`` with ``R = sum_i weight_i l(f(x_i), y_i)`` (docs/theory/model.md).
Since ``grad_{a_k} f(x) = relu(w_k . x~)/m`` and ``grad_{w_k} f(x) = a_k 1[w_k . x~ > 0] x~/m``,

    df(x)/dt = sum_k grad_{theta_k} f(x) . d theta_k/dt
             = -sum_i weight_i l'_i K_m(x, x_i),
    K_m(x, x') = (1/m) sum_k [relu(w_k.x~) relu(w_k.x~') + a_k^2 1[w_k.x~>0] 1[w_k.x~'>0] x~.x~'].

(the factor m of the time scale cancels one 1/m of the two gradients; the other 1/m makes K_m an
average over neurons). As m grows at fixed init law, K_m -> its expectation over the initial law:

    K(x, x') = E[relu(w.x~) relu(w.x~')] + E[a^2] E[1[w.x~>0] 1[w.x~'>0]] x~.x~'
             = sigma_w^2 k1(x, x') + sigma_a^2 k0(x, x') (x~.x~')

for ``a ~ N(0, sigma_a^2)``, ``w ~ N(0, sigma_w^2 I)`` independent, with the arc-cosine kernels

    k0 = (pi - theta) / (2 pi),   k1 = |x~||x~'| (sin theta + (pi - theta) cos theta) / (2 pi)

(theta the angle between x~ and x~'). So the constant c of docs/theory/limits.md is 1 in this normalisation. Checked
numerically in ``tests/test_limits_kernel.py``: Monte Carlo over 10^6 features, and the empirical
``m J J^T`` of ``jax.jacobian`` at m = 20000. With a frozen output layer only the w part moves:
K = E[a^2] k0 x~.x~'. For the other rotation-invariant laws the same formulas hold with
sigma_w^2 -> E|w|^2 / D and sigma_a^2 -> E[a^2] (``sphere``: kappa^2/D and output_scale^2;
``balanced``: lambda^2 and D lambda^2, |w| being independent of the direction of w).

Initial function without ASI: f_0 is a mean of m i.i.d. terms, asymptotically Gaussian with mean
0 and covariance Sigma(x, x') = E[a^2 relu(w.x~) relu(w.x~')] / m = sigma_a^2 sigma_w^2 k1 / m
(Gaussian law; ``sphere``: output_scale^2 kappa^2 k1/(D m); ``balanced``: lambda^4 (D+2) k1 / m).

Which part dominates as m grows (docs/theory/limits.md): with Luo's exponents sigma_a^2 = m^(1-gamma-gamma'),
sigma_w^2 = m^(1-gamma+gamma'), so gamma' > 0 keeps the k1 (random-feature) part and gamma' < 0
the k0-dot part at leading order; ``part`` selects them. At a fixed width both terms are used.

The limit statement (which time to fix)
---------------------------------------
In the linear regime (gamma < 1) the kernel itself scales like m^(1-gamma): at a fixed
mean-field time t the width-m dynamics get faster with m and f_m(t) simply converges to the
interpolant. The meaningful comparison is at fixed *kernel time* tau = t * rate_m, with rate_m =
lambda_max(W^1/2 K_m,XX W^1/2) the fastest relaxation rate of the width-m limit kernel K_m
(``kernel_rate``), against the kernel flow of that same width (K_m built from sigma_a(m),
sigma_w(m); this is what ``kernel_limit(config)`` returns). The difference
sup_x |f_m(t) - f_kernel,m(t)| at fixed tau decays like m^-1/2 (fluctuation of the empirical
kernel at init plus its O(m^-1/2) relative drift during lazy training); measured slope in the
``slow`` test of ``tests/test_limits_kernel.py``.

Kernel gradient flow in function space
--------------------------------------
With c(t) = int_0^t W l'(f_X(s), y) ds (W = diag(weights)), every f is affine in c:
f_t(x) = f_0(x) - K(x, X) c(t), and dc/dt = W l'(f_0,X - K_XX c, y). For the squared loss,
with S = W^1/2 K_XX W^1/2 = U diag(lambda) U^T and phi(lambda, t) = (1 - exp(-lambda t))/lambda,
c(t) = W^1/2 U phi U^T W^1/2 (f_0,X - y); on the training set e(t) = exp(-K_XX W t) e(0)
(K_XX/n for uniform weights, as in docs/theory/limits.md). t = inf gives the (pseudo-inverse) kernel
interpolant. Margin losses integrate the n-dimensional ODE for c with scipy's Radau
(rtol 1e-10), and f on the evaluation grid is carried along through c.

Random initial function (no ASI). f_0 is the Gaussian process of ``initial_covariance``. For the
squared loss f_t = f_t[f_0 = 0] + (I - A_t) f_0 is affine in f_0: its mean is the ASI solution and
its variance a closed form. For margin losses dc/dt depends on f_0 nonlinearly (through l'), so
``monte_carlo_flow`` estimates the mean and variance of f_t (and the expected loss) from S joint
draws of f_0 on the training and evaluation points, each integrated exactly as above (one
batched ODE with a block-diagonal Jacobian): a Monte-Carlo estimate, whose standard error
sqrt(Var / S) is reported (``kernel_limit`` attrs ``mc_standard_error_*``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from meanfield.particles._validate import check_choice, check_times
from meanfield.particles.losses import loss_derivative, loss_value
from meanfield.schema import build

PARTS = ("both", "k1", "k0")
# Largest margin exponent -y f of the margin-loss ODE (exp(300) ~ 1e130 keeps products finite).
MAX_MARGIN_EXPONENT = 300.0

__all__ = ["k0", "k1", "ntk", "angle", "gram", "kernel_moments", "kernel_part_of", "kernel_rate",
           "squared_loss_flow", "kernel_ode_flow", "gp_samples", "monte_carlo_flow",
           "initial_covariance", "kernel_limit"]


# ----------------------------------------------------------------------------- arc-cosine kernels

def _safe_norm(v, xp):
    """Euclidean norm over the last axis with a zero (not NaN) gradient at v = 0."""
    s = xp.sum(v * v, axis=-1)
    ok = s > 0
    return xp.where(ok, xp.sqrt(xp.where(ok, s, 1.0)), 0.0)


def _angle_parts(x, x2, xp):
    """(|x|, |x2|, theta) with theta = 2 atan2(|u - v|, |u + v|) (u, v unit vectors): accurate
    and differentiable (finite gradient) at theta = 0 and pi, unlike arccos of the cosine."""
    n1, n2 = _safe_norm(x, xp), _safe_norm(x2, xp)
    u = x / xp.where(n1 > 0, n1, 1.0)[..., None]
    v = x2 / xp.where(n2 > 0, n2, 1.0)[..., None]
    theta = 2.0 * xp.arctan2(_safe_norm(u - v, xp), _safe_norm(u + v, xp))
    return n1, n2, theta


def angle(x, x2):
    """Angle between the (augmented) vectors x and x2 (last axis), broadcasting; in [0, pi]."""
    return _angle_parts(jnp.asarray(x), jnp.asarray(x2), jnp)[2]


def _k0(x, x2, xp):
    return (math.pi - _angle_parts(x, x2, xp)[2]) / (2 * math.pi)


def _k1(x, x2, xp):
    n1, n2, th = _angle_parts(x, x2, xp)
    return n1 * n2 * (xp.sin(th) + (math.pi - th) * xp.cos(th)) / (2 * math.pi)


def k0(x, x2):
    """Arc-cosine kernel of order 0: E[1[g.x>0] 1[g.x2>0]] = (pi - theta)/(2 pi), g ~ N(0, I).

    x, x2: augmented inputs x~ (last axis = component), broadcasting over leading axes.
    """
    return _k0(jnp.asarray(x), jnp.asarray(x2), jnp)


def k1(x, x2):
    """Arc-cosine kernel of order 1: E[relu(g.x) relu(g.x2)], g ~ N(0, I),
    = |x||x2| (sin theta + (pi - theta) cos theta) / (2 pi)."""
    return _k1(jnp.asarray(x), jnp.asarray(x2), jnp)


def _ntk(x, x2, sigma_a, sigma_w, part, xp):
    if part not in PARTS:
        raise ValueError(f"part={part!r}; choose one of {PARTS}")
    out = 0.0
    if part in ("both", "k1"):
        out = out + sigma_w ** 2 * _k1(x, x2, xp)
    if part in ("both", "k0"):
        out = out + sigma_a ** 2 * _k0(x, x2, xp) * xp.sum(x * x2, axis=-1)
    return out


def ntk(x, x2, sigma_a, sigma_w, part: str = "both"):
    """Infinite-width tangent kernel in the mean-field normalisation (module docstring):
    K = sigma_w^2 k1(x, x2) + sigma_a^2 k0(x, x2) x.x2 on augmented inputs.

    part: ``both``; ``k1`` (random-feature part, the output layer's gradient: leading for
    gamma' > 0); ``k0`` (the input layer's gradient: leading for gamma' < 0; the whole kernel
    of a frozen output layer with E[a^2] = sigma_a^2).
    """
    return _ntk(jnp.asarray(x), jnp.asarray(x2), sigma_a, sigma_w, part, jnp)


def gram(x, x2, sigma_a, sigma_w, part: str = "both") -> np.ndarray:
    """Kernel matrix K(x_i, x2_j), (len(x), len(x2)), in numpy float64 (augmented inputs)."""
    x = np.asarray(x, dtype=np.float64)
    x2 = np.asarray(x2, dtype=np.float64)
    return _ntk(x[:, None, :], x2[None, :, :], sigma_a, sigma_w, part, np)


# ----------------------------------------------------------------------------- config -> kernel

def kernel_moments(config) -> tuple[float, float]:
    """(s_a, s_w) with s_a^2 = E[a^2] and s_w^2 = E|w|^2 / D of the config's initial law,
    i.e. (sigma_a, sigma_w) for the Gaussian law (width-dependent through the parametrisation)."""
    spec, data = config.model, config.data
    law = spec.init
    D = spec.fan_in(data.input_dim)
    if law.kind == "gaussian":
        return spec.gaussian_scales(data.input_dim)
    if law.kind == "sphere":
        return law.output_scale, law.scale / math.sqrt(D)
    return law.scale * math.sqrt(D), law.scale  # balanced: a = +-|w|, w ~ N(0, scale^2 I)


def kernel_part_of(config) -> str:
    """Default kernel part: ``k0`` for a frozen output layer (only w moves), else ``both``."""
    return "both" if config.model.trainable_output else "k0"


def initial_covariance(config, x, x2) -> np.ndarray:
    """Covariance E[f_0(x) f_0(x2)] of the initial function without ASI (0 with ASI)."""
    spec, data = config.model, config.data
    if spec.init.asi:
        return np.zeros((len(x), len(x2)))
    law, m, D = spec.init, spec.width, spec.fan_in(data.input_dim)
    k = np.asarray(_k1(np.asarray(x, float)[:, None], np.asarray(x2, float)[None], np), float)
    if law.kind == "gaussian":
        sa, sw = spec.gaussian_scales(data.input_dim)
        factor = sa ** 2 * sw ** 2
    elif law.kind == "sphere":
        factor = law.output_scale ** 2 * law.scale ** 2 / D
    else:
        factor = law.scale ** 4 * (D + 2)
    return factor * k / m


def _config_kernels(config, part):
    data, spec = config.data, config.model
    s_a, s_w = kernel_moments(config)
    xt = data.augmented(data.x, spec.bias)
    xe = data.augmented(data.x_eval, spec.bias)
    return xt, xe, gram(xt, xt, s_a, s_w, part), gram(xe, xt, s_a, s_w, part)


def kernel_rate(config, part: str | None = None) -> float:
    """lambda_max(W^1/2 K_XX W^1/2): the fastest relaxation rate of the kernel flow; the kernel
    time is tau = t * kernel_rate (module docstring)."""
    part = kernel_part_of(config) if part is None else part
    _, _, kxx, _ = _config_kernels(config, part)
    sw = np.sqrt(config.data.weights)
    return float(np.linalg.eigvalsh(sw[:, None] * kxx * sw[None, :])[-1])


# ----------------------------------------------------------------------------- flows

def _phi(lam, t):
    """(1 - exp(-lam t)) / lam, -> t as lam -> 0; t = inf gives the pseudo-inverse 1/lam."""
    lam = np.asarray(lam, float)
    t = np.asarray(t, float)[:, None]
    if np.isinf(t).any():
        tol = lam.max(initial=0.0) * len(lam) * 1e-13
        inv = np.where(lam > tol, 1.0 / np.where(lam > tol, lam, 1.0), 0.0)
    small = lam * np.where(np.isinf(t), 1.0, t) < 1e-12
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        out = np.where(small, t - lam * t * t / 2, -np.expm1(-lam * t) / np.where(lam > 0, lam, 1.0))
    if np.isinf(t).any():
        out = np.where(np.isinf(t), inv[None, :], out)
    return out


def squared_loss_flow(kxx, kex, weights, y, t, *, f0_train=None, f0_eval=None):
    """Closed-form kernel gradient flow of the squared loss (module docstring).

    Args:
        kxx: (n, n) kernel on the training inputs; kex: (n_e, n) evaluation x training.
        weights: (n,) sample weights (the risk is sum_i weight_i l).
        y: (n,) labels. t: (T,) times (np.inf allowed: the interpolant).
        f0_train, f0_eval: initial function (default 0: ASI).
    Returns:
        (f_train (T, n), f_eval (T, n_e), A_train (T, n, n), A_eval (T, n_e, n)) where
        f_t = f_0 + A_t (y - f_0,X) (A is the linear response used for the variances).
    """
    kxx, kex = np.asarray(kxx, float), np.asarray(kex, float)
    weights, y, t = np.asarray(weights, float), np.asarray(y, float), np.atleast_1d(t).astype(float)
    f0_train = np.zeros_like(y) if f0_train is None else np.asarray(f0_train, float)
    f0_eval = np.zeros(kex.shape[0]) if f0_eval is None else np.asarray(f0_eval, float)
    sw = np.sqrt(weights)
    s = sw[:, None] * kxx * sw[None, :]
    lam, u = np.linalg.eigh((s + s.T) / 2)
    lam = np.clip(lam, 0.0, None)
    phi = _phi(lam, t)                                          # (T, n)
    # M_t = W^1/2 U phi U^T W^1/2 (c(t) = M_t (f0_X - y)); A = K M.
    m_t = np.einsum("i,ik,tk,jk,j->tij", sw, u, phi, u, sw)
    a_train = np.einsum("ij,tjk->tik", kxx, m_t)
    a_eval = np.einsum("ej,tjk->tek", kex, m_t)
    r = y - f0_train
    return (f0_train + a_train @ r, f0_eval + a_eval @ r, a_train, a_eval)


def kernel_ode_flow(kxx, kex, weights, y, t, loss: str, *, f0_train=None, f0_eval=None,
                    rtol: float = 1e-10, atol: float = 1e-12):
    """Kernel gradient flow for any loss by integrating dc/dt = W l'(f_0,X - K_XX c, y)
    (scipy Radau with the analytic Jacobian); f = f_0 - K c on both point sets.

    Args:
        kxx: (n, n) kernel on the training inputs; kex: (n_e, n) evaluation x training.
        weights, y: (n,). t: (T,) times >= 0. loss: squared | exponential | logistic.
        f0_train, f0_eval: initial function, (n,) and (n_e,) (default 0: ASI), or a batch of
            S initial functions, (S, n) and (S, n_e): the S independent flows are integrated as
            one system with a sparse block-diagonal Jacobian.
    Returns:
        (f_train (T, n), f_eval (T, n_e)), or (S, T, n), (S, T, n_e) for a batch.
    """
    import scipy.sparse
    from scipy.integrate import solve_ivp

    kxx, kex = np.asarray(kxx, float), np.asarray(kex, float)
    weights, y, t = np.asarray(weights, float), np.asarray(y, float), np.atleast_1d(t).astype(float)
    f0_train = np.zeros_like(y) if f0_train is None else np.asarray(f0_train, float)
    f0_eval = np.zeros(f0_train.shape[:-1] + (kex.shape[0],)) if f0_eval is None else \
        np.asarray(f0_eval, float)
    batched = f0_train.ndim == 2
    f0_train, f0_eval = np.atleast_2d(f0_train), np.atleast_2d(f0_eval)
    if f0_train.shape[1:] != y.shape or f0_eval.shape != (f0_train.shape[0], kex.shape[0]):
        raise ValueError(f"f0_train must be (n,) or (S, n) and f0_eval (n_e,) or (S, n_e) with "
                         f"n = {len(y)}, n_e = {kex.shape[0]}; got {f0_train.shape}, "
                         f"{f0_eval.shape}")
    n_batch, n = f0_train.shape
    if loss != "squared" and np.max(-y * f0_train, initial=0.0) > MAX_MARGIN_EXPONENT:
        raise ValueError(f"an initial margin -y f_0 exceeds {MAX_MARGIN_EXPONENT} "
                         f"(max {np.max(-y * f0_train):.3g}): exp(-y f) would overflow")

    def guarded(f):
        # the solution keeps -y f <= max(-y f_0) + log(n / min weight) (the loss decreases);
        # the bound only keeps the solver's trial states finite
        return f if loss == "squared" else y * np.maximum(y * f, -MAX_MARGIN_EXPONENT)

    def lprime(f):
        with jax.enable_x64(True):  # l' in float64 whatever the process-wide JAX precision
            return np.asarray(loss_derivative(loss, guarded(f), y), float)

    def lsecond(f):
        f = guarded(f)
        if loss == "squared":
            return np.ones_like(f)
        if loss == "exponential":
            return np.exp(-y * f)
        s = 1.0 / (1.0 + np.exp(y * f))
        return s * (1 - s)

    def f_train_of(c):
        return f0_train - c.reshape(n_batch, n) @ kxx.T

    def rhs(_, c):
        return (weights * lprime(f_train_of(c))).ravel()

    def jac(_, c):
        blocks = -(weights * lsecond(f_train_of(c)))[:, :, None] * kxx[None]
        if n_batch == 1:
            return blocks[0]
        return scipy.sparse.block_diag(list(blocks), format="csc")

    t_pos = t[t > 0]
    cs = np.zeros((len(t), n_batch * n))
    if len(t_pos):
        sol = solve_ivp(rhs, (0.0, float(t_pos[-1])), np.zeros(n_batch * n), method="Radau",
                        t_eval=t_pos, jac=jac, rtol=rtol, atol=atol)
        if not sol.success:
            raise RuntimeError(f"kernel ODE failed: {sol.message}")
        cs[t > 0] = sol.y.T
    cs = cs.reshape(len(t), n_batch, n).transpose(1, 0, 2)              # (S, T, n)
    f_train = f0_train[:, None] - cs @ kxx.T
    f_eval = f0_eval[:, None] - cs @ kex.T
    return (f_train, f_eval) if batched else (f_train[0], f_eval[0])


def gp_samples(cov, samples: int, seed: int) -> np.ndarray:
    """``samples`` draws of a centred Gaussian vector with covariance ``cov`` (N, N), shape
    (samples, N): g U diag(sqrt(lambda)) U^T with g ~ N(0, I) from ``numpy.random.default_rng(seed)``
    (eigendecomposition, so a singular covariance - e.g. a dense 1-D evaluation grid - is fine)."""
    cov = np.asarray(cov, float)
    lam, u = np.linalg.eigh((cov + cov.T) / 2)
    root = u * np.sqrt(np.clip(lam, 0.0, None))[None, :]
    g = np.random.default_rng(seed).standard_normal((samples, cov.shape[0]))
    return g @ root.T


def monte_carlo_flow(kxx, kex, weights, y, t, loss: str, cov, *, samples: int = 256,
                     seed: int = 0) -> dict:
    """Kernel flow from a Gaussian-process initial function, by Monte Carlo over f_0.

    Draws ``samples`` joint samples of f_0 on the training and evaluation points from ``cov``
    (``gp_samples``), integrates the kernel flow of each (``kernel_ode_flow``, one batched
    system) and returns sample statistics: a Monte-Carlo estimate with its standard error.

    Args:
        kxx (n, n), kex (n_e, n): kernels; weights, y: (n,); t: (T,) times; loss: loss kind.
        cov: (n + n_e, n + n_e) covariance of f_0 on the training points then the
            evaluation points (``initial_covariance``).
        samples: number of samples S >= 2. seed: seed of the draws (deterministic).
    Returns:
        dict of arrays: ``f_train`` / ``f_eval`` (T, n) / (T, n_e) sample means,
        ``f_train_var`` / ``f_eval_var`` sample variances (ddof 1), ``f_train_se`` /
        ``f_eval_se`` standard errors of the means sqrt(var / S), ``loss_expected`` (T,) the
        sample mean of the loss sum_i weight_i l(f_i, y_i) and ``loss_expected_se`` its
        standard error.
    """
    n = len(np.asarray(y))
    f0 = gp_samples(cov, samples, seed)
    ft, fe = kernel_ode_flow(kxx, kex, weights, y, t, loss, f0_train=f0[:, :n],
                             f0_eval=f0[:, n:])                          # (S, T, n), (S, T, n_e)
    losses = np.sum(np.asarray(weights, float) * _loss64(loss, ft, np.asarray(y, float)), axis=-1)
    out = {}
    for name, value in (("f_train", ft), ("f_eval", fe), ("loss_expected", losses)):
        var = value.var(axis=0, ddof=1)
        out[name] = value.mean(axis=0)
        out[name + "_se"] = np.sqrt(var / samples)
        if name != "loss_expected":
            out[name + "_var"] = var
    return out


def _loss64(loss: str, f, y) -> np.ndarray:
    """l(f, y) in float64 (``meanfield.particles.losses.loss_value``, whatever the JAX precision)."""
    with jax.enable_x64(True):
        return np.asarray(loss_value(loss, f, y), float)


# ----------------------------------------------------------------------------- Dataset

def check_kernel_options(*, t=None, part: str | None = None, samples: int = 256,
                         seed: int = 0) -> None:
    """Raise a ValueError naming a ``kernel_limit`` option whose value is not allowed."""
    if part is not None:
        check_choice("part", part, PARTS)
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 2:
        raise ValueError(f"samples={samples!r} is not allowed; it must be an integer >= 2")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed={seed!r} is not allowed; it must be an integer >= 0")
    check_times("t", t, allow_inf=True)


def _times(config, t):
    if t is not None:
        t = check_times("t", t, allow_inf=True)
        return t if t[0] == 0 else np.concatenate([[0.0], t])
    from meanfield.setup import particle_time_scale, prepare

    problem, particles, _, _ = prepare(config)
    return config.save.schedule(config.t_max, particle_time_scale(problem, particles))[0]


def kernel_limit(config, *, t=None, part: str | None = None, samples: int = 256,
                 seed: int = 0) -> xr.Dataset:
    """The kernel (linear-regime) limit of ``config`` at its own width, as a run Dataset.

    The kernel is K_m = s_w^2 k1 + s_a^2 k0 x~.x~' with (s_a, s_w) from the config's initial law
    at the config's width (``kernel_moments``; the Gaussian law's sigma_a, sigma_w). See the
    module docstring for the derivation and for the limit statement (fixed kernel time).

    With ASI f_0 = 0 and the flow is deterministic. Without ASI f_0 is the Gaussian process of
    ``initial_covariance`` and f_t is random: the Dataset holds its mean and variance.
    Squared loss: f_t is affine in f_0, so both are closed forms (the mean is the ASI solution).
    Margin losses: the flow is nonlinear in f_0, so both are Monte-Carlo estimates
    (``monte_carlo_flow``: ``samples`` joint draws of f_0 on the training and evaluation points,
    seed ``seed``), reported with their standard errors.

    Args:
        config: a ``SimulationConfig`` (any loss, with or without ASI).
        t: save times (0 is prepended); default: the config's save schedule (the time scale of
            the config's initial particles, so the times equal the finite run's). With
            ``config.loss_tol``, times after the first save with loss <= loss_tol are dropped.
        part: ``both`` / ``k1`` / ``k0`` (default: ``both``; ``k0`` for a frozen output layer).
        samples: Monte-Carlo samples of f_0 (margin losses without ASI), an integer >= 2.
        seed: seed of those samples (the estimate is deterministic for a seed).
    Returns:
        Dataset with ``loss`` (t; the loss of the mean function), ``f_train`` (t, sample),
        ``f_eval`` (t, eval_point), ``accuracy`` (of the mean function) for margin losses;
        without ASI also ``f_train_var`` / ``f_eval_var`` (variances over the Gaussian-process
        initial function) and ``loss_expected`` (t; the expected loss over it). attrs
        ``limit="kernel"``, ``config``, ``kernel_part``, ``initial_function`` (``zero (ASI)``,
        ``gaussian process: closed form`` or ``gaussian process: Monte Carlo``); Monte Carlo
        adds ``mc_samples``, ``mc_seed`` and the largest standard errors over t and points,
        ``mc_standard_error_f_train``, ``mc_standard_error_f_eval``,
        ``mc_standard_error_loss_expected`` (the variances' relative standard error is about
        sqrt(2 / (samples - 1))).
    """
    check_kernel_options(t=t, part=part, samples=samples, seed=seed)
    spec, data = config.model, config.data
    part = kernel_part_of(config) if part is None else part
    times = _times(config, t)
    xt, xe, kxx, kex = _config_kernels(config, part)
    weights, y = np.asarray(data.weights, float), np.asarray(data.y, float)
    variances = loss_expected = None
    mc_attrs = {}
    if spec.init.asi:
        initial_function = "zero (ASI)"
    elif spec.loss == "squared":
        initial_function = "gaussian process: closed form"
    else:
        initial_function = "gaussian process: Monte Carlo"
    if spec.loss == "squared":
        f_train, f_eval, a_train, a_eval = squared_loss_flow(kxx, kex, weights, y, times)
        if not spec.init.asi:
            # f_t = mean + (I - A_t) f_0 (on X; f_0(x) - A_t(x) f_0,X on the grid)
            s_xx = initial_covariance(config, xt, xt)
            s_ex = initial_covariance(config, xe, xt)
            s_ee = np.diag(initial_covariance(config, xe, xe)) if len(xe) else np.zeros(0)
            b = np.eye(len(y))[None] - a_train
            var_train = np.einsum("tij,jk,tik->ti", b, s_xx, b)
            var_eval = (s_ee[None] - 2 * np.einsum("tej,ej->te", a_eval, s_ex)
                        + np.einsum("tej,jk,tek->te", a_eval, s_xx, a_eval))
            variances = (np.clip(var_train, 0, None), np.clip(var_eval, 0, None))
            # E[(f - y)^2 / 2] = ((E f - y)^2 + Var f) / 2
            loss_expected = np.sum(weights * (0.5 * (f_train - y) ** 2 + 0.5 * variances[0]),
                                   axis=1)
    elif spec.init.asi:
        f_train, f_eval = kernel_ode_flow(kxx, kex, weights, y, times, spec.loss)
    else:
        points = np.concatenate([xt, xe])
        mc = monte_carlo_flow(kxx, kex, weights, y, times, spec.loss,
                              initial_covariance(config, points, points), samples=samples,
                              seed=seed)
        f_train, f_eval = mc["f_train"], mc["f_eval"]
        variances = (mc["f_train_var"], mc["f_eval_var"])
        loss_expected = mc["loss_expected"]
        mc_attrs = {"mc_samples": samples, "mc_seed": seed}
        for name in ("f_train", "f_eval", "loss_expected"):
            se = mc[name + "_se"]
            mc_attrs[f"mc_standard_error_{name}"] = float(np.max(se)) if se.size else 0.0
    loss = np.sum(weights * _loss64(spec.loss, f_train, y[None]), axis=1)
    if config.loss_tol is not None:
        below = np.flatnonzero(loss <= config.loss_tol)
        if len(below):
            keep = below[0] + 1
            times, loss, f_train, f_eval = times[:keep], loss[:keep], f_train[:keep], f_eval[:keep]
            if variances is not None:
                variances = (variances[0][:keep], variances[1][:keep])
                loss_expected = loss_expected[:keep]
    stop = "t_max" if config.loss_tol is None or loss[-1] > config.loss_tol else "loss_tol"
    mean_of = "mean over the Gaussian-process initial function of the " if variances is not \
        None else ""
    variables = {"loss": loss, "f_train": f_train, "f_eval": f_eval, "x_train": data.x,
                 "y_train": data.y, "x_eval": data.x_eval}
    long_names = {"loss": f"training loss ({spec.loss})" + (
                      " of the mean function" if variances is not None else ""),
                  "f_train": mean_of + "kernel-limit output at training inputs",
                  "f_eval": mean_of + "kernel-limit output on the evaluation grid"}
    if spec.loss in ("exponential", "logistic"):
        variables["accuracy"] = np.sum(weights * (y * f_train > 0), axis=1)
    if variances is not None:
        variables.update(f_train_var=variances[0], f_eval_var=variances[1],
                         loss_expected=loss_expected)
    s_a, s_w = kernel_moments(config)
    try:
        regime = spec.parametrisation.regime(spec.width, spec.fan_in(data.input_dim))
    except ValueError:
        regime = "unknown"
    attrs = {
        "title": f"meanfield kernel limit: {config.name}",
        "limit": "kernel",
        "kernel_part": part,
        "initial_function": initial_function,
        **mc_attrs,
        "kernel_sigma_a": float(s_a),
        "kernel_sigma_w": float(s_w),
        "kernel_rate": float(np.linalg.eigvalsh(
            np.sqrt(weights)[:, None] * kxx * np.sqrt(weights)[None])[-1]),
        "regime": regime,
        "width": spec.width,
        "stop_reason": stop,
    }
    return build("limit:kernel", config, variables, coords={"t": times},
                 long_names=long_names, attrs=attrs)
