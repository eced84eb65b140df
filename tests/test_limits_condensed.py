"""Condensed regime (docs/theory/limits.md): neurons condense on the extremal vectors, and the time to leave
the saddle grows like log m with slope (gamma - 1) / (2 g0*)."""


import numpy as np
import pytest

import meanfield as mf
from meanfield.limits.condensed import (amplitude_near_extremal, predicted_escape_slope,
                                        small_scale_condensation)

X = np.array([-0.5, -1 / 6, 1 / 6, 0.5])
X_AUG = np.c_[X, np.ones(4)]
Y = X ** 2


def initial_condensation(gamma, width):
    """(time at which the loss is 5% below its start, amplitude fraction within 0.1 rad of the
    extremal vectors at that time), measured on the full nonlinear run: the 5% time is
    interpolated on the loss record, then the run is repeated to that time for the particles."""
    config = mf.presets.luo_1d(gamma=gamma, width=width, n_saves=400)
    ds = mf.simulate(config, progress=False)
    loss, t = ds.loss.values, ds.t.values
    k = int(np.argmax(loss <= 0.95 * loss[0]))
    t5 = float(np.exp(np.interp(-0.95 * loss[0], [-loss[k - 1], -loss[k]], np.log(t[k - 1:k + 1]))))
    run = mf.simulate(config.replace(t_max=t5, loss_tol=None, **{"save.snapshots": (t5,)}),
                      progress=False)
    fraction = amplitude_near_extremal(run.snapshot_a.values[-1], run.snapshot_w.values[-1],
                                       X_AUG, Y)
    return t5, fraction, config


@pytest.mark.parametrize("gamma", (1.75, 2.5))
def test_initial_condensation_matches_the_small_scale_theory(gamma):
    """At the 5% point the amplitude near the extremal vector is what the frozen-field
    (small-initialisation) motion of the same initial particles predicts.

    The issue asked for >= 90% within 0.1 rad at gamma = 1.75, m = 4000; the theory itself
    predicts 26% there (the bias direction u* = (0, 1) is a smooth maximum of g0 and the
    particles have grown only e^{g0* t} ~ 4x when the loss has fallen 5%, so their angles have
    shrunk only ~4x); measured 0.257 vs predicted 0.257. The prediction at gamma = 1.75 grows
    with m: 0.10, 0.26, 0.47, 0.69, 0.86, 0.95 at m = 1e3 * 4^k, k = 0..5 (90% near m = 5e5).
    At gamma = 2.5 (sigma = m^-0.75) both are 0.995 >= 0.9."""
    t5, fraction, config = initial_condensation(gamma, 4000)
    pred = small_scale_condensation(config)
    assert abs(fraction - pred["fraction"]) < 0.02, (fraction, pred)
    assert abs(t5 / pred["t_level"] - 1) < 0.03, (t5, pred)
    if gamma == 2.5:
        assert fraction >= 0.9


def test_amplitude_near_extremal_counts_by_sign():
    """Positive neurons count near maximisers of g0, negative ones near maximisers of -g0
    (none for y = x^2 >= 0): an explicit 4-neuron set with known angles."""
    angles = np.array([np.pi / 2, np.pi / 2 + 0.05, np.pi / 2 + 0.2, np.pi / 2])
    w = np.stack([np.cos(angles), np.sin(angles)], 1) * np.array([1.0, 2.0, 1.0, 1.0])[:, None]
    a = np.array([1.0, 1.0, 1.0, -3.0])
    # amplitudes 1, 2, 1, 3; near and positive: the first two
    assert amplitude_near_extremal(a, w, X_AUG, Y) == pytest.approx(3 / 7)
    assert amplitude_near_extremal(a, w, X_AUG, Y, angle_tol=0.3) == pytest.approx(4 / 7)


@pytest.mark.slow
@pytest.mark.parametrize("gamma", (1.75, 2.5))
def test_escape_time_grows_like_log_m_with_the_predicted_slope(gamma):
    widths = (1000, 4000, 16000)
    times = [initial_condensation(gamma, m)[0] for m in widths]
    slope = np.polyfit(np.log(widths), times, 1)[0]
    predicted = predicted_escape_slope(X_AUG, Y, np.full(4, 0.25), gamma=gamma)
    assert abs(slope / predicted["slope"] - 1) < 0.2, (slope, predicted["slope"])
