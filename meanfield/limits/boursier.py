"""Predictions of Boursier, Pillaud-Vivien & Flammarion for orthogonal inputs (arXiv 2206.00939,
docs/theory/boursier.md).

n orthogonal inputs x_k, labels y_k != 0, squared loss l = (f - y)^2 / 2 averaged over the n
samples, no bias, balanced init at scale lambda (w_j = lambda z_j, a_j = s_j |w_j|), network
f(x) = (1/m) sum_j a_j relu(w_j . x) in the mean-field normalisation (docs/theory/model.md).

* Neurons align with D_+ = (1/n) sum_{y_k > 0} y_k x_k (positive a) and
  D_- = (1/n) sum_{y_k < 0} |y_k| x_k (negative a) (``meanfield.observables.boursier_references``).
* An aligned balanced neuron has d|a|/dt = d|w|/dt = |D| |w|, so its amplitude |a||w| grows like
  lambda^2 exp(2 |D| t); it reaches O(1) (escape) at t ~ ln(1/lambda) / |D| to leading order.
* The loss plateaus at L0 = (1/2n) sum_k y_k^2 (f = 0), then, after the faster class has been
  fitted, at the slower class's share (1/2n) sum_{k in slower class} y_k^2, then goes to 0.
* The limit interpolator is h(x) = relu(<beta_+, x>) - relu(<beta_-, x>) with
  beta_+- = sum over the class of |y_k| x_k / |x_k|^2, of variation norm |beta_+| + |beta_-|.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["boursier_predictions", "interpolator", "variation_norm"]


def _check(x, y):
    x = np.asarray(x, float)
    y = np.asarray(y, float).reshape(-1)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x must be (n, d) and y (n,), got {x.shape} and {y.shape}")
    if np.any(y == 0):
        raise ValueError("labels must be nonzero")
    gram = x @ x.T
    off = gram - np.diag(np.diag(gram))
    if np.max(np.abs(off), initial=0.0) > 1e-9 * max(1.0, np.max(np.abs(gram))):
        raise ValueError("the inputs must be orthogonal (arXiv 2206.00939)")
    return x, y


def boursier_predictions(x, y, lam: float) -> dict:
    """Closed-form predictions of arXiv 2206.00939 for orthogonal inputs.

    Args:
        x: (n, d) orthogonal inputs. y: (n,) nonzero labels. lam: init scale lambda.
    Returns:
        dict with ``D_plus``, ``D_minus`` ((d,) arrays), ``norm_D_plus``, ``norm_D_minus``,
        ``L0``, ``L1`` (plateau after the first escape: the slower class's share),
        ``loss_shares`` ({"+": .., "-": ..}), ``faster`` ("+" or "-"), ``t_escape_plus`` /
        ``t_escape_minus`` = ln(1/lambda)/|D_+-| and ``t_escape`` (sorted pair),
        ``beta_plus``, ``beta_minus`` ((d,) arrays), ``variation_norm`` = |beta_+| + |beta_-|.
    """
    x, y = _check(x, y)
    n = x.shape[0]
    pos, neg = y > 0, y < 0
    d_plus = (np.where(pos, y, 0.0) @ x) / n
    d_minus = (np.where(neg, -y, 0.0) @ x) / n
    sq = np.sum(x * x, axis=1)
    beta_plus = (np.where(pos, np.abs(y), 0.0) / sq) @ x
    beta_minus = (np.where(neg, np.abs(y), 0.0) / sq) @ x
    shares = {"+": float(np.sum(y[pos] ** 2) / (2 * n)), "-": float(np.sum(y[neg] ** 2) / (2 * n))}
    nd = {"+": float(np.linalg.norm(d_plus)), "-": float(np.linalg.norm(d_minus))}
    log = math.log(1.0 / lam)
    t_esc = {s: (log / nd[s] if nd[s] > 0 else math.inf) for s in "+-"}
    faster = "+" if nd["+"] >= nd["-"] else "-"
    slower = "-" if faster == "+" else "+"
    return {
        "D_plus": d_plus, "D_minus": d_minus, "norm_D_plus": nd["+"], "norm_D_minus": nd["-"],
        "L0": float(np.sum(y ** 2) / (2 * n)), "L1": shares[slower], "loss_shares": shares,
        "faster": faster, "t_escape_plus": t_esc["+"], "t_escape_minus": t_esc["-"],
        "t_escape": tuple(sorted(t_esc.values())), "beta_plus": beta_plus,
        "beta_minus": beta_minus,
        "variation_norm": float(np.linalg.norm(beta_plus) + np.linalg.norm(beta_minus)),
        "lam": float(lam), "reference": "arXiv 2206.00939",
    }


def interpolator(x_eval, beta_plus, beta_minus) -> np.ndarray:
    """h(x) = relu(<beta_+, x>) - relu(<beta_-, x>) at the rows of ``x_eval`` (N, d) -> (N,)."""
    x_eval = np.asarray(x_eval, float)
    return np.maximum(x_eval @ beta_plus, 0.0) - np.maximum(x_eval @ beta_minus, 0.0)


def variation_norm(a, w) -> float:
    """(1/m) sum_k |a_k| |w_k| of a particle set (a: (m,), w: (m, D), bias included in w if any).

    With f = (1/m) sum_k a_k relu(w_k . x) (docs/theory/model.md) this is the variation (path) norm of the
    represented measure; for the limit interpolator h it equals |beta_+| + |beta_-| (positively
    homogeneous ReLU: neurons along beta_+ with (1/m) sum |a||w| = |beta_+| represent
    relu(<beta_+, x>)). For balanced particles it is also (1/2m) sum (a_k^2 + |w_k|^2).
    """
    a = np.asarray(a, float).reshape(-1)
    w = np.asarray(w, float).reshape(a.shape[0], -1)
    return float(np.mean(np.abs(a) * np.linalg.norm(w, axis=1)))
