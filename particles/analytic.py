"""Analytic alternating least-squares training: a reference optimiser (Barbu, arXiv 2304.02972;
docs/theory/analytic.md).

Model (this solver only; the output bias c is an extra parameter)::

    f(x) = (1/m) sum_k a_k phi(w_k . x~) + c,      phi(z) = z if z > 0 else leak * z,

with x~ = (x, 1) with bias (bias last in w), ``leak = 0`` for ReLU, and the weighted squared
loss ``R = sum_i weight_i (f_i - y_i)^2 / 2``. One iteration:

1. **First-layer solve.** With the activation pattern frozen, ``s_ik = 1`` if
   ``w_k . x~_i > 0`` else ``leak``, f is linear in W::

       f_i = sum_{k,j} A[i, (k, j)] W[k, j] + c,     A[i, (k, j)] = (1/m) a_k s_ik x~_ij.

   All of W ((d+1) m unknowns) is solved at once by the proximal ridge least squares

       min_W  sum_i weight_i (f_i - y_i)^2 / 2 + (ridge / 2) |W - W_prev|^2.

   The ridge pulls towards the *previous* W rather than towards 0: the step Delta = W - W_prev
   solves ``(A~^T A~ + ridge I) Delta = A~^T b~`` with ``A~ = sqrt(weight) A`` and the weighted
   residual ``b~ = sqrt(weight) (y - f_prev)``; it is well posed for any ridge > 0 even when
   (d+1) m >> n, it never increases the frozen-pattern loss (Delta = 0 is feasible), and
   ``ridge = 0`` gives the minimum-norm step (pseudo-inverse), its ridge -> 0 limit.

   * ``assembled``: the Gram matrix is accumulated in blocks (bounded memory: A~ is never held
     whole). If n >= (d+1) m, the primal ``A~^T A~`` ((d+1)m square) is accumulated over
     blocks of samples. If n < (d+1) m, the dual form is used instead: the identity
     ``(A~^T A~ + ridge I)^-1 A~^T = A~^T (A~ A~^T + ridge I)^-1`` needs only the n x n Gram
     ``A~ A~^T`` (accumulated over blocks of neurons) and ``Delta = A~^T z``. Written with
     sqrt-weights (not ``(A A^T + ridge Wt^-1)^-1``) it stays valid for zero sample weights.
     The symmetric Gram is diagonalised (eigh), which gives the solve and the condition number.
   * ``matrix_free``: conjugate gradient on the normal equations; ``A v`` and ``A^T u`` are
     ``jax.jvp`` / ``jax.vjp`` of the frozen-pattern linear model, A is never formed. The
     condition estimate is the ratio of extreme Ritz values of the Lanczos matrix built from
     the CG coefficients.

   On ill-conditioning (CG not converging, or a normal matrix whose condition number exceeds
   ``condition_limit`` - a tiny pivot) a ``RuntimeWarning`` names the iteration and the
   condition estimate, and the solve is repeated with a larger ridge.
2. **Pattern refresh** from the new W; the number of flipped entries of ``1[w_k . x~_i > 0]``
   is counted.
3. **Output solve.** With W fixed f is linear in (a, c): the same proximal ridge least squares
   on a (ridge on a - a_prev; c unpenalised), solved exactly by ``numpy.linalg.lstsq`` on the
   stacked weighted system ``[sqrt(weight) B, sqrt(weight); sqrt(ridge) I, 0]``,
   ``B[i, k] = phi(w_k . x~_i) / m``.

The loss is not monotone across pattern refreshes, so the best iterate (over the initial
network, the networks after each refresh and after each output solve) is kept.

The linear algebra runs on the host (numpy, float64) with the CG in JAX, so ``analytic_step``
is a plain Python function (not jittable), unlike ``meanfield.particles.integrators``; its state is a
frozen pytree all the same.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from functools import partial
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
import numpy as np

from meanfield.particles._pytree import pytree_dataclass
from meanfield.particles._validate import (check_choice, check_positive, named_arguments,
                                            normalise_int)
from meanfield.particles.kernels import Particles, Problem

PATHS = ("auto", "assembled", "matrix_free")
# Largest min(n, (d+1) m) that path="auto" solves by assembling the Gram matrix (an eigh of this
# size takes about a second); larger problems go matrix-free.
AUTO_ASSEMBLED_MAX = 2048
# Elements of one assembly block of A~ (bounded memory: 4M float64 = 32 MB).
BLOCK_ELEMENTS = 1 << 22
# A normal matrix with a condition number above this is treated as singular (tiny pivot).
CONDITION_LIMIT = 1e12
# Relative eigenvalue cutoff of the pseudo-inverse used when ridge = 0.
PINV_RCOND = 1e-13
# Retries with a larger ridge after an ill-conditioned solve.
MAX_FALLBACKS = 4


@named_arguments
@dataclasses.dataclass(frozen=True, kw_only=True)
class AnalyticConfig:
    """Settings of the analytic alternating least-squares solver (arXiv 2304.02972).

    Attributes:
        iterations: number of (first-layer, refresh, output) iterations, >= 1.
        ridge: proximal ridge (>= 0) of each solve: (ridge/2)|W - W_prev|^2 and
            (ridge/2)|a - a_prev|^2; 0 gives minimum-norm steps.
        leak: negative-side slope of the activation, 0 <= leak < 1 (0 = ReLU).
        path: first-layer solver, ``auto`` (assembled if min(n, (d+1)m) <= 2048),
            ``assembled`` or ``matrix_free`` (CG).
        cg_tol: CG stopping rule |residual| <= cg_tol |rhs| of the normal equations, in (0, 1).
        cg_maxiter: CG iteration cap, >= 1.
        output_bias: fit the output bias c (otherwise c stays at its initial value).
    """

    iterations: int = 20
    ridge: float = 1e-8
    leak: float = 0.0
    path: Literal["auto", "assembled", "matrix_free"] = "auto"
    cg_tol: float = 1e-10
    cg_maxiter: int = 1000
    output_bias: bool = True

    def __post_init__(self):
        normalise_int(self, "iterations", "analytic.iterations", minimum=1)
        check_positive("analytic.ridge", self.ridge, allow_zero=True)
        check_positive("analytic.leak", self.leak, allow_zero=True)
        if self.leak >= 1:
            raise ValueError(f"analytic.leak={self.leak!r} is not allowed; it must be in [0, 1)")
        check_choice("analytic.path", self.path, PATHS)
        check_positive("analytic.cg_tol", self.cg_tol)
        if self.cg_tol >= 1:
            raise ValueError(f"analytic.cg_tol={self.cg_tol!r} is not allowed; it must be in (0, 1)")
        normalise_int(self, "cg_maxiter", "analytic.cg_maxiter", minimum=1)
        check_choice("analytic.output_bias", self.output_bias, (True, False))


@pytree_dataclass
class AnalyticState:
    """State of the analytic solver (host numpy arrays; all leaves).

    Attributes:
        x: augmented inputs per sample, (n, D). y: labels (n,). weights: sample weights (n,).
        a: output weights (m,). w: input weights, bias last (m, D). c: output bias ().
        loss: loss of the current network (). iteration: completed iterations ().
        best_a, best_w, best_c, best_loss, best_iteration: best network seen so far.
    """

    x: np.ndarray
    y: np.ndarray
    weights: np.ndarray
    a: np.ndarray
    w: np.ndarray
    c: np.ndarray
    loss: np.ndarray
    iteration: np.ndarray
    best_a: np.ndarray
    best_w: np.ndarray
    best_c: np.ndarray
    best_loss: np.ndarray
    best_iteration: np.ndarray


# ----------------------------------------------------------------------------- model pieces

def slopes(w, x, leak: float):
    """Frozen activation slopes s_ik = 1 if w_k . x~_i > 0 else leak, shape (n, m)."""
    return np.where(x @ w.T > 0, 1.0, leak)


def network(a, w, c, x, leak: float):
    """f(x_i) = (1/m) sum_k a_k phi(w_k . x~_i) + c, shape (n,). a (m,), w (m, D), x (n, D)."""
    z = x @ w.T
    return (np.where(z > 0, z, leak * z) @ a) / a.shape[0] + c


def weighted_loss(f, y, weights):
    """R = sum_i weight_i (f_i - y_i)^2 / 2."""
    return float(0.5 * np.sum(weights * (f - y) ** 2))


def frozen_output(w, a, c, x, s):
    """Frozen-pattern linear model f_i = (1/m) sum_k a_k s_ik (w_k . x~_i) + c (JAX, linear in w)."""
    return ((s * (x @ w.T)) @ a) / a.shape[0] + c


def frozen_objective(w, w_prev, a, c, x, y, weights, s, ridge):
    """Frozen-pattern proximal ridge objective of the first-layer solve (JAX, differentiable)."""
    f = frozen_output(w, a, c, x, s)
    return 0.5 * jnp.sum(weights * (f - y) ** 2) + 0.5 * ridge * jnp.sum((w - w_prev) ** 2)


# ----------------------------------------------------------------------------- linear algebra

def _spectral_solve(gram, rhs, ridge):
    """(gram + ridge I)^+ rhs by eigh; returns (solution, normal-matrix condition, min eig, max eig).

    ridge = 0 drops eigenvalues below PINV_RCOND * max (pseudo-inverse: minimum-norm solution)
    and reports the condition of the retained spectrum.
    """
    evals, evecs = np.linalg.eigh(gram)
    evals = np.maximum(evals, 0.0)
    e_max = float(evals[-1]) if evals.size else 0.0
    shifted = evals + ridge
    if ridge > 0:
        inv = 1.0 / shifted
        cond = float(shifted[-1] / shifted[0])
    else:
        keep = evals > PINV_RCOND * max(e_max, np.finfo(float).tiny)
        inv = np.where(keep, 1.0 / np.where(keep, evals, 1.0), 0.0)
        cond = float(e_max / evals[keep].min()) if keep.any() else 1.0
    return evecs @ (inv * (evecs.T @ rhs)), cond, float(evals[0]), e_max


def _blocks(total: int, per_item: int):
    step = max(1, BLOCK_ELEMENTS // max(1, per_item))
    return [slice(i, min(total, i + step)) for i in range(0, total, step)]


def _design_block(sw, a, s, x, rows, cols):
    """Block A~[rows, (cols, :)] of the weighted first-layer design, shape (|rows|, |cols| D)."""
    m = a.shape[0]
    blk = (sw[rows, None, None] * (a[cols] / m)[None, :, None] * s[rows, cols, None]
           * x[rows, None, :])
    return blk.reshape(blk.shape[0], -1)


def _assembled_first_layer(x, y, weights, a, w, c, s, ridge):
    """Proximal ridge step Delta of the first layer by an assembled Gram (primal or dual form).

    Returns (Delta (m, D), info dict with form, condition, min/max eigenvalue).
    """
    n, dim = x.shape
    m = a.shape[0]
    unknowns = m * dim
    sw = np.sqrt(weights)
    f_prev = ((s * (x @ w.T)) @ a) / m + c
    bt = sw * (y - f_prev)
    everything = slice(None)
    if n >= unknowns:  # primal: (d+1)m x (d+1)m, accumulated over sample blocks
        gram = np.zeros((unknowns, unknowns))
        rhs = np.zeros(unknowns)
        for rows in _blocks(n, unknowns):
            blk = _design_block(sw, a, s, x, rows, everything)
            gram += blk.T @ blk
            rhs += blk.T @ bt[rows]
        delta, cond, e_min, e_max = _spectral_solve(gram, rhs, ridge)
        return delta.reshape(m, dim), dict(form="primal", condition=cond, e_min=e_min, e_max=e_max)
    # dual: n x n, accumulated over neuron blocks; Delta = A~^T z
    col_blocks = _blocks(m, n * dim)
    gram = np.zeros((n, n))
    for cols in col_blocks:
        blk = _design_block(sw, a, s, x, everything, cols)
        gram += blk @ blk.T
    z, cond, e_min, e_max = _spectral_solve(gram, bt, ridge)
    delta = np.concatenate([_design_block(sw, a, s, x, everything, cols).T @ z
                            for cols in col_blocks]).reshape(m, dim)
    return delta, dict(form="dual", condition=cond, e_min=e_min, e_max=e_max)


@partial(jax.jit, static_argnames=("maxiter",))
def _cg_first_layer(x, y, weights, a, w, c, s, ridge, tol, *, maxiter: int):
    """CG on (A~^T A~ + ridge I) Delta = A~^T b~ with A v, A^T u from jvp / vjp (A never formed).

    Returns (Delta (m, D), iterations, relative residual, alphas (maxiter,), betas (maxiter,)).
    """
    model = lambda v: frozen_output(v, a, jnp.zeros((), x.dtype), x, s)
    f_prev, vjp = jax.vjp(model, w)
    matvec_a = lambda v: jax.jvp(model, (w,), (v,))[1]
    normal = lambda v: vjp(weights * matvec_a(v))[0] + ridge * v
    rhs = vjp(weights * (y - f_prev - c))[0]
    rhs_norm = jnp.sqrt(jnp.sum(rhs * rhs))
    bound = (tol * rhs_norm) ** 2

    def cond(carry):
        k, _, _, _, rr, _, _ = carry
        return (k < maxiter) & (rr > bound)

    def body(carry):
        k, xk, r, p, rr, alphas, betas = carry
        ap = normal(p)
        alpha = rr / jnp.sum(p * ap)
        xk = xk + alpha * p
        r = r - alpha * ap
        rr_new = jnp.sum(r * r)
        beta = rr_new / rr
        return (k + 1, xk, r, r + beta * p, rr_new, alphas.at[k].set(alpha),
                betas.at[k].set(beta))

    zeros = jnp.zeros(maxiter, x.dtype)
    init = (jnp.asarray(0, jnp.int32), jnp.zeros_like(w), rhs, rhs, rhs_norm ** 2, zeros, zeros)
    k, delta, _, _, rr, alphas, betas = jax.lax.while_loop(cond, body, init)
    rel = jnp.sqrt(rr) / jnp.where(rhs_norm > 0, rhs_norm, 1.0)
    return delta, k, rel, alphas, betas


def _lanczos_extremes(alphas, betas, k: int) -> tuple[float, float]:
    """Extreme Ritz values of the normal operator from k CG steps (Lanczos tridiagonal)."""
    if k == 0:
        return 1.0, 1.0
    al, be = alphas[:k], betas[:k]
    diag = 1.0 / al
    diag[1:] += be[:-1] / al[:-1]
    off = np.sqrt(be[:-1]) / al[:-1]
    tri = np.diag(diag) + np.diag(off, 1) + np.diag(off, -1)
    ritz = np.linalg.eigvalsh(tri)
    return float(ritz[0]), float(ritz[-1])


def _matrix_free_first_layer(x, y, weights, a, w, c, s, ridge, tol, maxiter):
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    args = [jnp.asarray(v, dtype) for v in (x, y, weights, a, w, c, s, ridge, tol)]
    delta, k, rel, alphas, betas = _cg_first_layer(*args, maxiter=maxiter)
    k = int(k)
    lo, hi = _lanczos_extremes(np.asarray(alphas, float), np.asarray(betas, float), k)
    cond = hi / lo if lo > 0 else math.inf
    return np.asarray(delta, float), dict(form="cg", condition=cond, e_min=lo - ridge,
                                          e_max=hi - ridge, cg_iterations=k,
                                          converged=bool(rel <= tol), residual=float(rel))


# ----------------------------------------------------------------------------- the three stages

def _use_assembled(config: AnalyticConfig, n: int, unknowns: int) -> bool:
    if config.path == "auto":
        return min(n, unknowns) <= AUTO_ASSEMBLED_MAX
    return config.path == "assembled"


def first_layer_solve(x, y, weights, a, w, c, config: AnalyticConfig, *, iteration: int = 0):
    """Exact proximal ridge least-squares solve of W with the pattern of ``w`` frozen.

    Args:
        x: (n, D) augmented inputs; y, weights: (n,); a: (m,); w: (m, D) previous W; c: scalar.
    Returns:
        (new W (m, D), info dict: form, condition (normal matrix), ridge used, cg_iterations
        (-1 for assembled), frozen-pattern loss after the solve).
    """
    s = slopes(w, x, config.leak)
    ridge = float(config.ridge)
    assembled = _use_assembled(config, x.shape[0], w.size)
    for attempt in range(MAX_FALLBACKS + 1):
        if assembled:
            delta, info = _assembled_first_layer(x, y, weights, a, w, c, s, ridge)
            bad = ridge > 0 and info["condition"] > CONDITION_LIMIT
            if bad and attempt < MAX_FALLBACKS:
                new_ridge = max(10 * ridge, info["e_max"] / CONDITION_LIMIT * 10)
                warnings.warn(
                    f"analytic iteration {iteration}: first-layer normal matrix is nearly singular"
                    f" (condition estimate {info['condition']:.3g} > {CONDITION_LIMIT:.0e}, "
                    f"smallest pivot {info['e_min'] + ridge:.3g}); falling back to ridge "
                    f"{new_ridge:.3g} (was {ridge:.3g})", RuntimeWarning, stacklevel=3)
                ridge = new_ridge
                continue
            info["cg_iterations"] = -1
        else:
            delta, info = _matrix_free_first_layer(x, y, weights, a, w, c, s, ridge,
                                                   config.cg_tol, config.cg_maxiter)
            if not info["converged"]:
                hi = info["e_max"] + ridge
                need = (math.log(2.0 / config.cg_tol) / config.cg_maxiter) ** 2
                new_ridge = max(100 * ridge, hi * need)
                action = (f"falling back to ridge {new_ridge:.3g} (was {ridge:.3g})"
                          if attempt < MAX_FALLBACKS else "keeping the last CG iterate")
                warnings.warn(
                    f"analytic iteration {iteration}: first-layer CG did not converge in "
                    f"{info['cg_iterations']} iterations (relative residual "
                    f"{info['residual']:.3g} > cg_tol {config.cg_tol:.3g}, condition estimate "
                    f"{info['condition']:.3g}); {action}", RuntimeWarning, stacklevel=3)
                if attempt < MAX_FALLBACKS:
                    ridge = new_ridge
                    continue
        break
    new_w = w + delta
    f_frozen = ((s * (x @ new_w.T)) @ a) / a.shape[0] + c
    info.update(ridge=ridge, loss=weighted_loss(f_frozen, y, weights))
    return new_w, info


def output_solve(x, y, weights, a, w, c, config: AnalyticConfig, *, iteration: int = 0):
    """Exact proximal ridge least-squares solve of (a, c) with W fixed (``numpy.linalg.lstsq``).

    Minimises sum_i weight_i (f_i - y_i)^2 / 2 + (ridge/2)|a - a_prev|^2 (c unpenalised; c
    fixed when ``output_bias=False``). Returns (a (m,), c, info dict: condition, ridge, loss).
    """
    n = x.shape[0]
    m = a.shape[0]
    z = x @ w.T
    design = np.where(z > 0, z, config.leak * z) / m
    sw = np.sqrt(weights)
    cols = [design] + ([np.ones((n, 1))] if config.output_bias else [])
    weighted = sw[:, None] * np.concatenate(cols, axis=1)
    target = sw * (y - design @ a - (0.0 if config.output_bias else c))
    unknowns = weighted.shape[1]
    ridge = float(config.ridge)
    for attempt in range(MAX_FALLBACKS + 1):
        if ridge > 0:
            pen = np.zeros((m, unknowns))
            pen[:, :m] = math.sqrt(ridge) * np.eye(m)
            mat, rhs = np.concatenate([weighted, pen]), np.concatenate([target, np.zeros(m)])
        else:
            mat, rhs = weighted, target
        sol, _, rank, sv = np.linalg.lstsq(mat, rhs, rcond=None)
        full = rank == unknowns and sv.size and sv[-1] > 0
        cond = float((sv[0] / sv[-1]) ** 2) if full else (
            float((sv[0] / sv[rank - 1]) ** 2) if rank else 1.0)
        if ridge > 0 and (not full or cond > CONDITION_LIMIT) and attempt < MAX_FALLBACKS:
            new_ridge = max(10 * ridge, float(sv[0]) ** 2 / CONDITION_LIMIT * 10)
            warnings.warn(
                f"analytic iteration {iteration}: output-layer system is nearly singular "
                f"(condition estimate {cond:.3g} > {CONDITION_LIMIT:.0e}); falling back to ridge "
                f"{new_ridge:.3g} (was {ridge:.3g})", RuntimeWarning, stacklevel=3)
            ridge = new_ridge
            continue
        break
    new_a = a + sol[:m]
    new_c = float(sol[m]) if config.output_bias else float(c)
    f = design @ new_a + new_c
    return new_a, new_c, dict(condition=cond, ridge=ridge, loss=weighted_loss(f, y, weights))


# ----------------------------------------------------------------------------- (init, step)

def _host(v):
    return np.array(v, dtype=np.float64)


def analytic_init(particles: Particles, data, *, c: float = 0.0, width: int | None = None,
                  config: AnalyticConfig | None = None) -> AnalyticState:
    """Initial state of the analytic solver.

    Args:
        particles: initial (a (m_pad,), w (m_pad, D)); padding neurons beyond the width are
            dropped.
        data: a ``particles.Problem`` with squared loss (its distinct inputs are expanded back
            to samples; the width is 1 / inv_width), or a tuple ``(x_aug (n, D), y (n,),
            weights (n,))``.
        c: initial output bias.
        width: number of real neurons m (arrays only; default: all of particles.a).
        config: used for the activation leak of the initial loss (default AnalyticConfig()).
    """
    config = AnalyticConfig() if config is None else config
    if isinstance(data, Problem):
        if data.loss != "squared":
            raise ValueError(f"the analytic solver needs loss='squared', got {data.loss!r}")
        x = _host(np.asarray(data.x)[np.asarray(data.inverse)])
        y, weights = _host(data.y), _host(data.weights)
        width = int(round(1.0 / float(data.inv_width)))
    else:
        x, y, weights = (_host(v) for v in data)
    a, w = _host(particles.a), _host(particles.w)
    width = a.shape[0] if width is None else int(width)
    a, w = a[:width], w[:width]
    if x.ndim != 2 or w.ndim != 2 or w.shape[1] != x.shape[1]:
        raise ValueError(f"x_aug must be (n, D) and w (m, D) with equal D; got {x.shape}, {w.shape}")
    if y.shape != (x.shape[0],) or weights.shape != y.shape or a.shape != (w.shape[0],):
        raise ValueError(f"shapes disagree: x {x.shape}, y {y.shape}, weights {weights.shape}, "
                         f"a {a.shape}, w {w.shape}")
    if np.any(weights < 0):
        raise ValueError("weights must be nonnegative")
    c = np.asarray(float(c))
    loss = np.asarray(weighted_loss(network(a, w, c, x, config.leak), y, weights))
    zero = np.asarray(0)
    return AnalyticState(x=x, y=y, weights=weights, a=a, w=w, c=c, loss=loss, iteration=zero,
                         best_a=a, best_w=w, best_c=c, best_loss=loss, best_iteration=zero)


def _keep_best(state_fields: dict, a, w, c, loss, iteration):
    if loss < state_fields["best_loss"]:
        state_fields.update(best_a=a, best_w=w, best_c=np.asarray(c),
                            best_loss=np.asarray(loss), best_iteration=np.asarray(iteration))


def analytic_step(state: AnalyticState, config: AnalyticConfig):
    """One iteration: first-layer solve, pattern refresh, output solve (arXiv 2304.02972).

    Returns:
        (new state, record dict: loss_first_layer (frozen-pattern loss after the W solve),
        loss_refresh (true loss with the new W and old a, c), loss_output (after the (a, c)
        solve), flips (pattern entries changed), cond_first_layer, cond_output (condition
        numbers of the normal matrices; Lanczos estimate for CG), cg_iterations (-1 when
        assembled), ridge_first_layer, ridge_output (after fallbacks), first_layer_form
        (primal/dual/cg), time (s)).
    """
    start = time.perf_counter()
    it = int(state.iteration) + 1
    x, y, weights = state.x, state.y, state.weights
    new_w, info_w = first_layer_solve(x, y, weights, state.a, state.w, float(state.c), config,
                                      iteration=it)
    flips = int(np.count_nonzero((x @ state.w.T > 0) != (x @ new_w.T > 0)))
    loss_refresh = weighted_loss(network(state.a, new_w, state.c, x, config.leak), y, weights)
    fields = {k.name: getattr(state, k.name) for k in dataclasses.fields(state)}
    _keep_best(fields, state.a, new_w, state.c, loss_refresh, it)
    new_a, new_c, info_a = output_solve(x, y, weights, state.a, new_w, float(state.c), config,
                                        iteration=it)
    _keep_best(fields, new_a, new_w, new_c, info_a["loss"], it)
    fields.update(a=new_a, w=new_w, c=np.asarray(new_c), loss=np.asarray(info_a["loss"]),
                  iteration=np.asarray(it))
    record = dict(loss_first_layer=info_w["loss"], loss_refresh=loss_refresh,
                  loss_output=info_a["loss"], flips=flips, cond_first_layer=info_w["condition"],
                  cond_output=info_a["condition"], cg_iterations=info_w["cg_iterations"],
                  ridge_first_layer=info_w["ridge"], ridge_output=info_a["ridge"],
                  first_layer_form=info_w["form"], time=time.perf_counter() - start)
    return AnalyticState(**fields), record


@dataclasses.dataclass(frozen=True, kw_only=True)
class AnalyticSolver(AnalyticConfig):
    """The analytic solver as a solver object: the iteration-clock sibling of
    ``meanfield.particles.integrators.TimeIntegrator``.

    ``clock = "iteration"``: ``meanfield.simulate`` drives it on the host, one iteration per
    record (``meanfield.analytic_run``), instead of the compiled loop in gradient-flow time.
    ``init(particles, data)`` / ``step(state)`` are ``analytic_init`` / ``analytic_step`` with
    these settings.
    """

    clock: ClassVar[str] = "iteration"

    def init(self, particles: Particles, data) -> AnalyticState:
        return analytic_init(particles, data, config=self)

    def step(self, state: AnalyticState):
        return analytic_step(state, self)


def fit_analytic(x_aug, y, weights, a0, w0, config: AnalyticConfig, *, c0: float = 0.0):
    """Run ``config.iterations`` analytic iterations from (a0, w0, c0); keep the best iterate.

    Args:
        x_aug: (n, D) augmented inputs (bias column last); y, weights: (n,); a0: (m,);
            w0: (m, D); config: AnalyticConfig.
    Returns:
        (best_params dict: a (m,), w (m, D), c, loss, iteration (0 = initial network);
         history dict of numpy arrays, one entry per iteration (see ``analytic_step``) plus
         loss_initial (scalar array) and best_loss.)
    """
    if not isinstance(config, AnalyticConfig):
        raise ValueError("config must be a meanfield.particles.analytic.AnalyticConfig")
    state = analytic_init(Particles(a=a0, w=w0), (x_aug, y, weights), c=c0, config=config)
    loss0 = float(state.loss)
    records = []
    for _ in range(config.iterations):
        state, record = analytic_step(state, config)
        records.append(record)
    history = {k: np.array([r[k] for r in records]) for k in records[0]}
    history["loss_initial"] = np.asarray(loss0)
    history["best_loss"] = np.asarray(float(state.best_loss))
    best = dict(a=state.best_a, w=state.best_w, c=float(state.best_c),
                loss=float(state.best_loss), iteration=int(state.best_iteration))
    return best, history
