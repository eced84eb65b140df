"""The Barbu validation study (analytic ALS vs Adam / GD / gradient flow) in quick mode, via the CLI."""

import os

from meanfield.cli import main


def test_validate_list_names_barbu(capsys):
    assert main(["validate", "--list"]) == 0
    assert "barbu" in capsys.readouterr().out


def test_validate_barbu_quick_writes_report(tmp_path, capsys):
    out = tmp_path / "barbu"
    assert main(["validate", "barbu", "--quick", "--out", str(out)]) == 0
    assert "PASS" in capsys.readouterr().out
    report = (out / "report.md").read_text()
    assert "| quantity | paper / theory | measured | tolerance | verdict |" in report
    assert "meanfield validate barbu --quick" in report
    assert "**FAIL**" not in report
    for name in ("sin", "sdf", "luo"):
        assert os.path.getsize(out / f"barbu_{name}.png") > 1000
        assert f"](barbu_{name}.png)" in report
    # diabetes runs when scikit-learn is installed, else it is skipped with a note
    assert (out / "barbu_diabetes.png").exists() or "SKIPPED - scikit-learn" in report
    for method in ("analytic", "adam", "gd", "flow"):
        assert f"| {method} |" in report


def test_validate_unknown_study_is_an_error(capsys):
    assert main(["validate", "no_such_study"]) == 2
    assert "unknown study" in capsys.readouterr().err
    assert main(["validate", "wang_ma"]) == 2  # the preset's spelling
    assert "did you mean 'wang-ma'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- pilot tuning rule

import math

import numpy as np
import pytest

from meanfield.validation.studies import barbu

RATES = barbu.ADAM_LR_GRID  # (1e-3 .. 1), ascending


def _choice(windows, rates=RATES):
    """The study's choice for a table of pilot window losses (one row per rate)."""
    return barbu.choose_rate(rates, [barbu.pilot_score(w) for w in windows])


def _table(levels, saves=50):
    """Flat pilot windows at the given loss levels (one per rate)."""
    return np.array([np.full(saves, v, float) for v in levels])


def test_pilot_score_is_the_mean_log10_loss_floored_and_inf_when_diverged():
    assert barbu.pilot_score([1e-2, 1e-4]) == pytest.approx(-3.0, abs=1e-12)
    # geometric mean, computed independently
    w = np.random.default_rng(0).uniform(1e-6, 1e-1, 40)
    assert barbu.pilot_score(w) == pytest.approx(math.log10(np.exp(np.log(w).mean())), rel=1e-12)
    assert barbu.pilot_score([0.0, 0.0]) == pytest.approx(math.log10(barbu.FLOOR))  # round-off ties
    for bad in ([1e-3, np.nan], [np.inf, 1e-3], [1e-30, -np.inf], []):
        assert barbu.pilot_score(bad) == math.inf


def test_pilot_choice_does_not_flip_on_rounding_level_near_ties():
    """Two best rates tied to 1e-6 relative, every loss perturbed at 1e-6 relative (float32
    last bits, 200 draws): the choice never changes. The former rule (lowest last-step loss)
    flips on the same tables, so this test can fail."""
    rng = np.random.default_rng(0)
    levels = np.array([3e-2, 5e-3, 4e-4, 2e-5, 2e-5 * (1 + 1e-6), 3e-4, 2e-2])
    base = _table(levels)
    choices, former = set(), set()
    for _ in range(200):
        table = base * (1 + 1e-6 * rng.uniform(-1, 1, base.shape))
        choices.add(_choice(table))
        former.add(int(np.argmin(table[:, -1])))
    assert choices == {4}  # the larger of the two tied rates
    assert former == {3, 4}


def test_pilot_choice_averages_out_an_oscillating_optimiser():
    """An optimiser at the edge of stability: its loss oscillates over 3 decades around the same
    level as a steady smaller rate; the oscillation's phase (what a last-bit change moves) decides
    the last-step loss but not the choice."""
    rng = np.random.default_rng(1)
    j = np.arange(50)
    choices, former = set(), set()
    for _ in range(100):
        table = _table([1e-2, 1e-3, 1e-4, 1e-4, 1e-3, 1e-2, 1e-1])
        table[3] = 1e-4 * 10 ** (1.5 * np.sin(rng.uniform(0, 2 * np.pi) + 0.9 * j))
        table[4] = 1e-3 * 10 ** (2.0 * np.sin(rng.uniform(0, 2 * np.pi) + 1.3 * j))
        choices.add(_choice(table))
        former.add(int(np.argmin(table[:, -1])))
    assert choices == {3}
    assert len(former) > 1


def test_pilot_choice_clear_winner_wins_at_any_position():
    for k in range(len(RATES)):
        levels = np.full(len(RATES), 1e-3)
        levels[k] = 1e-5  # two decades better than every other rate
        assert _choice(_table(levels)) == k
    # rates in any order: the index of the winner, ties to the largest rate
    assert _choice(_table([1e-3, 1e-5, 1e-3]), rates=(0.1, 0.01, 1.0)) == 1
    assert _choice(_table([1e-5, 1e-5, 1e-3]), rates=(0.1, 0.01, 1.0)) == 0


def test_pilot_choice_ties_within_the_band_go_to_the_largest_rate():
    tie = barbu.PILOT_TIE_DECADES
    inside, outside = 10 ** (0.9 * tie), 10 ** (1.1 * tie)
    assert _choice(_table([1e-3, 1e-5, 1e-5 * inside, 1e-2]), rates=RATES[:4]) == 2
    assert _choice(_table([1e-3, 1e-5, 1e-5 * outside, 1e-2]), rates=RATES[:4]) == 1
    # losses at float32 round-off (exact zeros among them) are all ties
    assert _choice(_table([1e-3, 0.0, 1e-14, 0.0, 3e-13, 1e-4, 1e-2])) == 4


def test_pilot_choice_never_picks_a_diverged_rate():
    table = _table([1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8])
    table[6, 30] = np.nan  # the best-looking rate diverged once in its window
    table[5, -1] = np.inf
    assert _choice(table) == 4
    assert barbu.choose_rate(RATES[:3], [math.nan, math.inf, -2.0]) == 2
    with pytest.raises(ValueError, match="diverged"):
        barbu.choose_rate(RATES[:3], [math.nan, math.inf, math.inf])


@pytest.mark.parametrize("rates, scores, tie, match", [
    ((0.1, 0.3), (-1.0,), None, "rates and scores"),
    ((), (), None, "rates and scores"),
    ((0.1, 0.3), (-1.0, -2.0), -0.1, "tie_decades"),
    ((0.1, 0.3), (-1.0, -2.0), math.nan, "tie_decades"),
])
def test_pilot_choice_bad_input(rates, scores, tie, match):
    with pytest.raises(ValueError, match=match):
        barbu.choose_rate(rates, scores, tie)


def test_pilot_runs_score_the_window_and_skip_a_diverged_run(monkeypatch):
    """The study's pilot on a small Luo problem, three GD steps, the largest stopped by a
    DivergenceError (as simulate raises on nan/inf; with ReLU a too-large step here kills every
    neuron instead, so the divergence is injected): it scores inf and is not chosen; a finite
    score is the mean log10 loss over steps 51..100 of an independent run saving every step."""
    import meanfield as mf
    from meanfield.particles.integrators import kernel_scale
    from meanfield.setup import prepare

    config = mf.presets.luo_1d(width=20, seed=0).replace(loss_tol=None, precision="float32")
    ks = float(kernel_scale(*prepare(config)[:2]))
    solvers = [mf.Solver(kind="euler", dt=c / ks) for c in (0.3, 1.0, 3.0)]
    simulate = mf.simulate

    def diverging(cfg, **kwargs):
        if cfg.solver.dt == solvers[2].dt:
            raise mf.DivergenceError("loss is nan", simulate(cfg, **kwargs))
        return simulate(cfg, **kwargs)

    monkeypatch.setattr(mf, "simulate", diverging)
    steps = 2 * barbu.PILOT_SAVES  # the window's saves fall on steps 51..100
    chosen, scores, cost = barbu._pilot(config, solvers, steps)
    assert scores[2] == math.inf and np.all(np.isfinite(scores[:2])) and cost > 0
    assert chosen is solvers[barbu.choose_rate([s.dt for s in solvers], scores)]
    assert chosen is not solvers[2]
    monkeypatch.setattr(mf, "simulate", simulate)
    dt = solvers[0].dt
    every_step = mf.SaveAt(t=tuple(dt * k for k in range(1, steps + 1)), snapshots=0)
    ds = mf.simulate(config.replace(solver=solvers[0], t_max=dt * steps, save=every_step),
                     progress=False)
    window = ds.loss.values[-round(barbu.PILOT_WINDOW * steps):]
    assert scores[0] == pytest.approx(barbu.pilot_score(window), abs=1e-6)


def test_choice_margin_bounds_the_score_change_that_flips_the_choice():
    """Every perturbation of the scores below margin / 2 keeps the choice; the worst-case one
    just above margin / 2 (against the deciding comparison) changes it."""
    rng = np.random.default_rng(2)
    tie = barbu.PILOT_TIE_DECADES
    flipped = 0
    for _ in range(300):
        scores = rng.uniform(-5, -3, len(RATES))
        if rng.uniform() < 0.3:
            scores[rng.integers(len(RATES))] = math.inf
        k = barbu.choose_rate(RATES, scores)
        margin = barbu.choice_margin(RATES, scores)
        assert margin > 0
        for _ in range(20):
            moved = scores + 0.499 * margin * rng.uniform(-1, 1, len(RATES))
            assert barbu.choose_rate(RATES, moved) == k
        finite = np.isfinite(scores)
        step = 0.51 * margin
        leave = [(tie - (scores[k] - scores[i]), i) for i in np.flatnonzero(finite) if i != k]
        enter = [(scores[j] - scores[finite].min() - tie, j) for j in np.flatnonzero(finite)
                 if RATES[j] > RATES[k]]
        value, j = min(leave + enter)
        assert value == pytest.approx(margin)
        moved = scores.copy()
        if (value, j) in leave:  # c up, the closest rate below it down: c leaves the band
            moved[k] += step
            moved[j] -= step
        else:  # j down, every other rate up: j enters the band
            moved += step
            moved[j] -= 2 * step
        assert barbu.choose_rate(RATES, moved) != k
        flipped += 1
    assert flipped == 300
