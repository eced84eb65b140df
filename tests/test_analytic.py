"""Analytic alternating least-squares solver (Barbu, arXiv 2304.02972; docs/theory/analytic.md)."""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meanfield.particles import TrainingData, make_problem
from meanfield.particles.analytic import (
    AnalyticConfig,
    analytic_init,
    analytic_step,
    first_layer_solve,
    fit_analytic,
    frozen_objective,
    network,
    output_solve,
    slopes,
    weighted_loss,
)
from meanfield.particles.kernels import Particles


def random_problem(seed, n=30, d=3, m=20, uniform_weights=False):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(size=(n, d)), np.ones((n, 1))], axis=1)
    y = np.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2]
    weights = np.full(n, 1.0 / n) if uniform_weights else rng.dirichlet(np.ones(n))
    return x, y, weights, rng.normal(size=m), rng.normal(size=(m, d + 1)), 0.3


def frozen_grad_norm(x, y, weights, a, w_prev, c, w_new, ridge, leak):
    s = slopes(w_prev, x, leak)
    grad = jax.grad(frozen_objective)(jnp.asarray(w_new), jnp.asarray(w_prev), jnp.asarray(a),
                                      c, jnp.asarray(x), jnp.asarray(y), jnp.asarray(weights),
                                      jnp.asarray(s), ridge)
    return float(jnp.linalg.norm(grad))


@pytest.mark.parametrize("m,path,ridge,leak", [
    (20, "assembled", 1e-6, 0.0),     # dual form (n = 30 < 80 unknowns)
    (5, "assembled", 1e-6, 0.0),      # primal form (n = 30 >= 20 unknowns)
    (20, "assembled", 0.0, 0.0),      # minimum-norm step
    (5, "assembled", 0.0, 0.2),
    (20, "matrix_free", 1e-6, 0.0),
    (20, "assembled", 1e-4, 0.1),
])
def test_first_layer_solve_is_exact_critical_point(m, path, ridge, leak):
    x, y, weights, a, w, c = random_problem(1, m=m)
    config = AnalyticConfig(ridge=ridge, leak=leak, path=path, cg_tol=1e-13)
    new_w, info = first_layer_solve(x, y, weights, a, w, c, config)
    assert info["form"] == {"assembled": "dual" if 30 < 4 * m else "primal",
                            "matrix_free": "cg"}[path]
    assert frozen_grad_norm(x, y, weights, a, w, c, new_w, ridge, leak) < 1e-8
    # proximal: the frozen-pattern loss never exceeds the one of the previous W
    assert info["loss"] <= weighted_loss(network(a, w, c, x, leak), y, weights) + 1e-15
    assert np.isfinite(info["condition"]) and info["condition"] >= 1


@pytest.mark.parametrize("output_bias", [True, False])
def test_output_solve_matches_lstsq(output_bias):
    x, y, weights, a, w, c = random_problem(2)
    config = AnalyticConfig(ridge=0.0, output_bias=output_bias)
    new_a, new_c, info = output_solve(x, y, weights, a, w, c, config)
    design = np.maximum(x @ w.T, 0) / a.shape[0]
    sw = np.sqrt(weights)
    if output_bias:
        mat = np.concatenate([design, np.ones((x.shape[0], 1))], axis=1)
        sol = np.linalg.lstsq(sw[:, None] * mat, sw * y, rcond=None)[0]
        ref_a, ref_c = sol[:-1], sol[-1]
    else:
        ref_a = np.linalg.lstsq(sw[:, None] * design, sw * (y - c), rcond=None)[0]
        ref_c = c
    np.testing.assert_allclose(new_a, ref_a, rtol=1e-8, atol=1e-8 * np.abs(ref_a).max())
    assert new_c == pytest.approx(ref_c, rel=1e-8, abs=1e-10)
    assert info["loss"] == pytest.approx(
        weighted_loss(network(new_a, w, new_c, x, 0.0), y, weights), rel=1e-12)


def test_output_solve_ridge_is_critical_point():
    x, y, weights, a, w, c = random_problem(3)
    ridge = 1e-3
    new_a, new_c, _ = output_solve(x, y, weights, a, w, c, AnalyticConfig(ridge=ridge, leak=0.1))

    def objective(params):
        z = x @ w.T
        f = (jnp.where(z > 0, z, 0.1 * z) @ params[:-1]) / a.shape[0] + params[-1]
        return 0.5 * jnp.sum(weights * (f - y) ** 2) + 0.5 * ridge * jnp.sum((params[:-1] - a) ** 2)

    grad = jax.grad(objective)(jnp.concatenate([jnp.asarray(new_a), jnp.asarray([new_c])]))
    assert float(jnp.linalg.norm(grad)) < 1e-10


def test_matrix_free_agrees_with_assembled():
    x, y, weights, a, w, c = random_problem(4)
    common = dict(ridge=1e-6, cg_tol=1e-13, cg_maxiter=2000)
    w_dense, info_dense = first_layer_solve(x, y, weights, a, w, c,
                                            AnalyticConfig(path="assembled", **common))
    w_cg, info_cg = first_layer_solve(x, y, weights, a, w, c,
                                      AnalyticConfig(path="matrix_free", **common))
    step = np.linalg.norm(w_dense - w)
    assert np.linalg.norm(w_cg - w_dense) <= 1e-6 * step
    assert info_cg["cg_iterations"] > 0 and info_dense["cg_iterations"] == -1
    # Lanczos condition estimate is a lower bound of the exact one, same order of magnitude
    assert 0.1 * info_dense["condition"] <= info_cg["condition"] <= info_dense["condition"] * 1.01
    # whole runs agree too
    runs = [fit_analytic(x, y, weights, a, w, AnalyticConfig(iterations=4, path=p, **common))
            for p in ("assembled", "matrix_free")]
    for key in ("loss_refresh", "loss_output"):
        np.testing.assert_allclose(runs[0][1][key], runs[1][1][key], rtol=1e-6)
    np.testing.assert_array_equal(runs[0][1]["flips"], runs[1][1]["flips"])


def test_leaky_relu_fit():
    x, y, weights, a, w, _ = random_problem(5)
    config = AnalyticConfig(iterations=8, ridge=1e-6, leak=0.1)
    best, hist = fit_analytic(x, y, weights, a, w, config)
    f = network(best["a"], best["w"], best["c"], x, 0.1)
    z = x @ best["w"].T
    manual = (np.where(z > 0, z, 0.1 * z) @ best["a"]) / a.shape[0] + best["c"]
    np.testing.assert_allclose(f, manual)
    assert best["loss"] == pytest.approx(weighted_loss(f, y, weights), rel=1e-12)
    assert best["loss"] < 1e-2 * hist["loss_initial"]


@pytest.mark.parametrize("seed", [6, 7])
def test_best_iterate_is_minimum_of_recorded_losses(seed):
    x, y, weights, a, w, _ = random_problem(seed)
    best, hist = fit_analytic(x, y, weights, a, w, AnalyticConfig(iterations=10, ridge=1e-6))
    recorded = np.concatenate([[hist["loss_initial"]], hist["loss_refresh"], hist["loss_output"]])
    assert best["loss"] == pytest.approx(recorded.min(), rel=1e-12)
    assert hist["best_loss"] == best["loss"]
    assert best["loss"] == pytest.approx(
        weighted_loss(network(best["a"], best["w"], best["c"], x, 0.0), y, weights), rel=1e-10)
    for key in ("loss_first_layer", "loss_refresh", "loss_output", "flips", "cond_first_layer",
                "cond_output", "cg_iterations", "time"):
        assert hist[key].shape == (10,)
    assert np.all(hist["flips"] >= 0) and np.all(hist["time"] > 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_luo_1d_reaches_tiny_loss(seed):
    data = TrainingData(x=np.array([-0.5, -1 / 6, 1 / 6, 0.5])[:, None],
                        y=np.array([-0.5, -1 / 6, 1 / 6, 0.5]) ** 2)
    x_aug = data.augmented(data.x, True)
    rng = np.random.default_rng(seed)
    best, hist = fit_analytic(x_aug, data.y, data.weights, rng.normal(size=50),
                              rng.normal(size=(50, 2)), AnalyticConfig(iterations=20))
    assert best["loss"] < 1e-8 * hist["loss_initial"]


def test_init_from_problem_matches_arrays():
    rng = np.random.default_rng(8)
    x = rng.choice([-1.0, 0.0, 0.5, 1.0], size=(12, 1))   # repeated inputs
    data = TrainingData(x=x, y=x[:, 0] ** 2 + 0.1 * rng.normal(size=12))
    xu, inverse = data.unique_inputs(True)
    problem = make_problem(x_unique=xu, inverse=inverse, y=data.y, weights=data.weights,
                           width=6, loss="squared", trainable=True, n_chunks=1,
                           dtype=jnp.float64)
    a = np.concatenate([rng.normal(size=6), np.zeros(2)])      # padded to 8
    w = np.concatenate([rng.normal(size=(6, 2)), np.zeros((2, 2))])
    config = AnalyticConfig(ridge=1e-6)
    s1 = analytic_init(Particles(a=a, w=w), problem, config=config)
    s2 = analytic_init(Particles(a=a[:6], w=w[:6]),
                       (data.augmented(data.x, True), data.y, data.weights), config=config)
    assert s1.a.shape == (6,) and float(s1.loss) == pytest.approx(float(s2.loss), rel=1e-12)
    s1, r1 = analytic_step(s1, config)
    s2, r2 = analytic_step(s2, config)
    assert r1["loss_output"] == pytest.approx(r2["loss_output"], rel=1e-9)
    assert jax.tree_util.tree_leaves(s1)  # a pytree
    with pytest.raises(ValueError, match="squared"):
        analytic_init(Particles(a=a, w=w), dataclasses.replace(problem, loss="logistic"))


def test_ill_conditioning_warns_and_falls_back():
    x, y, weights, a, w, c = random_problem(9, n=10, m=20)
    x = np.concatenate([x, x])          # duplicated samples: the dual Gram is singular
    y, weights = np.concatenate([y, y]), np.concatenate([weights, weights]) / 2
    with pytest.warns(RuntimeWarning, match=r"iteration 3: first-layer normal matrix .*"
                                            r"condition estimate"):
        _, info = first_layer_solve(x, y, weights, a, w, c,
                                    AnalyticConfig(ridge=1e-30, path="assembled"), iteration=3)
    assert info["ridge"] > 1e-30 and info["condition"] <= 1e12
    with pytest.warns(RuntimeWarning, match=r"iteration 2: first-layer CG did not converge.*"
                                            r"condition estimate"):
        _, info = first_layer_solve(x, y, weights, a, w, c,
                                    AnalyticConfig(ridge=1e-12, path="matrix_free",
                                                   cg_maxiter=3), iteration=2)
    assert info["ridge"] > 1e-12
    with warnings.catch_warnings():   # ridge = 0 is the minimum-norm solve: no warning
        warnings.simplefilter("error")
        first_layer_solve(x, y, weights, a, w, c, AnalyticConfig(ridge=0.0, path="assembled"))


@pytest.mark.parametrize("field,value", [
    ("iterations", 0), ("iterations", 2.5), ("ridge", -1.0), ("ridge", float("nan")),
    ("leak", -0.1), ("leak", 1.0), ("path", "dense"), ("cg_tol", 0.0), ("cg_tol", 2.0),
    ("cg_maxiter", 0), ("output_bias", "yes"),
])
def test_bad_config_raises(field, value):
    with pytest.raises(ValueError, match=field):
        AnalyticConfig(**{field: value})


# ----------------------------------------------------------------------------- Barbu study notes

def _study_results(tests_by_name, adam_choice=2, gd_choice=1):
    """Synthetic per-data-set results (as ``study_dataset`` returns them) for the report notes."""
    import meanfield as mf
    from meanfield.validation.studies import barbu

    results = {}
    for name, (n, d, best, tests) in tests_by_name.items():
        x = np.zeros((n, d))
        x[:, 0] = np.arange(n)
        config = mf.SimulationConfig(model=mf.ModelSpec(width=100, bias=True),
                                     data=mf.TrainingData(x=x, y=np.zeros(n)))
        results[name] = dict(
            config=config, width=100, n_train=n,
            curves={k: {"test": v, "best": best} for k, v in zip(barbu.METHODS, tests)},
            pilots={"adam": (barbu.ADAM_LR_GRID, None), "gd": ((0.1, 0.3, 1.0, 3.0), None)},
            chosen={"adam": adam_choice, "gd": gd_choice})
    return results


def test_barbu_notes_name_interpolation_overfitting_and_grid_edges():
    from meanfield.validation.studies import barbu

    # the committed full report's numbers (m = 100): sin, sdf, diabetes, luo
    results = _study_results({
        "sin": (200, 5, 1.92e-30, (0.066, 0.0605, 0.0289, 0.0535)),
        "sdf": (576, 2, 3.16e-6, (7.08e-6, 1.81e-5, 5.52e-5, 2.99e-5)),
        "diabetes": (221, 10, 2e-30, (1.05, 0.487, 0.514, 0.393)),
        "luo": (4, 1, 4.81e-35, (0.00816, 0.0107, 0.0115, 0.012)),
    })
    note = barbu.interpolation_note(results)
    assert ("interpolates the training data on sin (n_train = 200 < 600, training loss "
            "1.92e-30), diabetes (n_train = 221 < 1100") in note and "sdf (n_train" not in note
    assert "above Adam's on sin (0.066 vs 0.0605); diabetes (1.05 vs 0.487)" in note
    assert "On sin, diabetes it interpolates and generalises worse than Adam" in note
    table = barbu.generalisation_table(results)
    assert "| diabetes | 221 | 1100 | 2e-30 | 1.05 | 0.487 | 0.514 | 0.393 | flow |" in table
    assert barbu.grid_edge_note(results) is None  # interior choices
    edge = barbu.grid_edge_note(_study_results({"sin": (200, 5, 1.0, (1, 1, 1, 1))},
                                               adam_choice=len(barbu.ADAM_LR_GRID) - 1,
                                               gd_choice=0))
    assert "Adam's learning rate on sin (1, the largest); GD's step on sin (0.1, the smallest)" \
        in edge
    fitted = _study_results({"sdf": (576, 2, 3e-6, (1e-5, 2e-5, 3e-5, 4e-5))})
    assert "interpolated on no data set" in barbu.interpolation_note(fitted)
    assert "not above Adam's" in barbu.interpolation_note(fitted)
